"""Where things live, and how a stage reads its own section of params.yaml.

Every path derives from the project root so stages, tests and the CLI agree on one layout.
"""

from pathlib import Path
from typing import Any

import yaml

PROJ_ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = PROJ_ROOT / "params.yaml"
DVC_YAML = PROJ_ROOT / "dvc.yaml"

DATA_DIR = PROJ_ROOT / "data"  # raw inputs, tracked by data.dvc (the file: dataset.RAW_FILE)
ARTIFACTS_DIR = PROJ_ROOT / "artifacts"  # pipeline outputs, tracked by dvc.lock
CLEAN_DATA = ARTIFACTS_DIR / "data" / "clean.parquet"
SPLITS_DIR = ARTIFACTS_DIR / "data"
MODEL_FILE = ARTIFACTS_DIR / "model" / "model.joblib"
MLEM_MODEL = ARTIFACTS_DIR / "mlem" / "model"  # MLEM writes `model` and `model.mlem`
GOLDEN_FILE = "golden.json"  # beside the model: requests and the predictions they must get
REPORTS_DIR = PROJ_ROOT / "reports"
METRICS_FILE = REPORTS_DIR / "metrics.json"
TRAINING_FILE = REPORTS_DIR / "training.json"
PLOTS_DIR = REPORTS_DIR / "plots"

SPLITS = ("train", "test", "production")


def load_params(section: str, params_file: Path = PARAMS_FILE) -> dict[str, Any]:
    """Return one top-level section of params.yaml.

    Args:
        section: the section name, e.g. "train".
        params_file: the params file to read.

    Returns:
        The section as a dict.
    """
    with open(params_file) as handle:
        params = yaml.safe_load(handle) or {}
    if section not in params:
        raise KeyError(f"{params_file} has no '{section}' section")
    return params[section]


def split_path(name: str, splits_dir: Path = SPLITS_DIR) -> Path:
    """Path of one time split (train, test or production)."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
    return splits_dir / f"{name}.parquet"


def model_name(dvc_yaml: Path = DVC_YAML) -> str:
    """The model's name: its entry under `artifacts:` in dvc.yaml, the one place it is
    written. GTO's tags (NAME@vX.Y.Z, NAME#STAGE#N), the Makefile's MODEL_NAME and the release
    workflow's stage-tag check all follow it."""
    with open(dvc_yaml) as handle:
        artifacts = (yaml.safe_load(handle) or {}).get("artifacts") or {}
    models = [name for name, spec in artifacts.items() if (spec or {}).get("type") == "model"]
    if len(models) != 1:
        raise ValueError(f"{dvc_yaml} must declare one artifact of type model, not {models}")
    return str(models[0])
