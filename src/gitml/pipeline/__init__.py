"""The pipeline: dvc.yaml's stages (data, validate, prepare, train, evaluate).

The `package` stage lives in serving/packaging.py, beside the code that loads what it saves.
"""
