"""XGBoost on CPU vs CUDA through the pipeline's own `fit` (a benchmark: it prints figures).

Needs the `gpu` extra and an NVIDIA GPU. Trains the `xgboost` family of params.yaml on the train
split as is, and on it repeated 50 times (the size where a GPU starts to pay), with `device`
cpu then cuda, and prints the fit times, the device each run used, and the test MAE of each.
Run with `python -m benchmarks.gpu_train` after `make run`.
"""

import time
from typing import Any

import numpy as np
import pandas as pd

from gitml.config import load_params, split_path
from gitml.files import read_parquet
from gitml.pipeline.features import split_xy
from gitml.pipeline.train import fit, gpu_name


def main() -> None:
    features, train = load_params("features"), load_params("train")
    train_split, test = read_parquet(split_path("train")), read_parquet(split_path("test"))
    inputs, actual = split_xy(test, features)
    print(f"GPU: {gpu_name()}")
    for copies in (1, 50):
        data = pd.concat([train_split] * copies, ignore_index=True)
        predictions: dict[str, Any] = {}
        for device in ("cpu", "cuda"):
            started = time.perf_counter()
            pipeline, record = fit(data, features, {**train, "model": "xgboost", "device": device})
            seconds = time.perf_counter() - started
            predictions[device] = pipeline.predict(inputs)
            mae = float(np.mean(np.abs(predictions[device] - actual.to_numpy())))
            fit_seconds = record["train_seconds"]
            print(f"{len(data):>8d} rows  {record['device']:4s}  fit {fit_seconds:7.2f} s"
                  f"  (with setup {seconds:6.2f} s)  test MAE {mae:6.2f}")  # fmt: skip
        gap = float(np.max(np.abs(predictions["cpu"] - predictions["cuda"])))
        print(f"{'':8s}       max |cpu - cuda| prediction gap: {gap:.3f} rentals/hour")


if __name__ == "__main__":
    main()
