"""train stage: fit a seeded scikit-learn Pipeline whose model family comes from params.yaml.

Families run on CPU everywhere. `xgboost` trains on CUDA when `train.device` is `cuda`, or
`auto` and a GPU is present, and the installed XGBoost can use it: the `gpu` extra's wheel can,
the dev group's `xgboost-cpu` cannot. The training record says the device it trained on.
"""

import json
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Annotated, Any

import joblib
import pandas as pd
import typer
from sklearn.base import RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline

from gitml.config import MODEL_FILE, SPLITS_DIR, TRAINING_FILE, load_params, split_path
from gitml.files import read_parquet, write_atomic, write_json
from gitml.pipeline.features import build_preprocessor, split_xy

DEVICES = ("cpu", "cuda", "auto")


def gpu_name() -> str | None:  # pragma: no mutate block (asks the machine: nvidia-smi)
    """The first NVIDIA GPU's name, or None when there is none (or no driver)."""
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    names = result.stdout.strip().splitlines()
    return names[0] if result.returncode == 0 and names else None


def xgboost_has_cuda() -> bool:  # pragma: no mutate block (asks the installed package)
    """Whether the installed XGBoost was built with CUDA (`xgboost-cpu` was not)."""
    try:
        import xgboost
    except ImportError:  # pragma: no cover, depends on the installed extra
        return False
    return bool(xgboost.build_info().get("USE_CUDA"))


def resolve_device(family: str, requested: str, gpu: str | None, cuda_build: bool) -> str:
    """Pick "cpu" or "cuda": only XGBoost uses a GPU, and only a build with CUDA (`cuda_build`)
    on a machine with one (`gpu`: its name); `cuda` that cannot be had is an error."""
    if requested not in DEVICES:
        raise ValueError(f"train.device must be one of {DEVICES}, got {requested!r}")
    if family != "xgboost" or requested == "cpu":
        return "cpu"
    if gpu is None:
        missing = "no NVIDIA GPU is visible (nvidia-smi)"
    elif not cuda_build:
        missing = (
            f"this XGBoost was built without CUDA, so it would train on the CPU beside the {gpu}: "
            "install the gpu extra's (uv sync --extra gpu --no-dev)"
        )
    else:
        return "cuda"
    if requested == "cuda":
        raise ValueError(f"train.device is 'cuda' but {missing}")
    return "cpu"


def build_regressor(family: str, hyperparams: dict[str, Any], seed: int, device: str) -> Any:
    """Instantiate one model family with its hyper-parameters."""
    if family == "hist_gradient_boosting":
        return HistGradientBoostingRegressor(random_state=seed, **hyperparams)
    if family == "random_forest":
        return RandomForestRegressor(random_state=seed, **hyperparams)
    if family == "ridge":
        return Ridge(**hyperparams)
    if family == "xgboost":
        try:
            from xgboost import XGBRegressor
        except ImportError:  # pragma: no cover, depends on the installed extra
            raise ValueError(
                "train.model 'xgboost' needs the gpu extra: uv sync --extra gpu"
            ) from None
        return XGBRegressor(random_state=seed, device=device, **hyperparams)
    raise ValueError(
        f"train.model {family!r} is unknown; use hist_gradient_boosting, random_forest, "
        "ridge or xgboost"
    )


def build_pipeline(features: dict[str, Any], train: dict[str, Any], device: str) -> Pipeline:
    """Preprocessing plus the configured regressor, as one scikit-learn Pipeline."""
    family = train["model"]
    hyperparams = train.get("hyperparams", {}).get(family, {})
    regressor: RegressorMixin = build_regressor(family, hyperparams, int(train["seed"]), device)
    return Pipeline([("features", build_preprocessor(features)), ("model", regressor)])


def check_loss(family: str, hyperparams: dict[str, Any], target: pd.Series) -> None:
    """A Poisson loss models counts: refuse it, naming the setting, for a target below zero."""
    for key in ("loss", "objective"):
        if "poisson" in str(hyperparams.get(key, "")) and (target < 0).any():
            raise ValueError(
                f"train.hyperparams.{family}.{key} is {hyperparams[key]!r}, which needs "
                f"{target.name} >= 0, but it goes down to {target.min():g}: use a loss for any "
                "real number (squared_error; XGBoost: reg:squarederror)"
            )


def fit(
    frame: pd.DataFrame, features: dict[str, Any], train: dict[str, Any]
) -> tuple[Pipeline, dict[str, Any]]:  # pragma: no mutate block (trains: tests/pipeline, e2e)
    """Fit the pipeline on a training split.

    Returns:
        The fitted pipeline and a record of how it was trained (device, seconds, rows).
    """
    gpu = gpu_name()
    cuda_build = train["model"] == "xgboost" and gpu is not None and xgboost_has_cuda()
    device = resolve_device(train["model"], train.get("device", "cpu"), gpu, cuda_build)
    pipeline = build_pipeline(features, train, device)
    inputs, target = split_xy(frame, features)
    check_loss(train["model"], train.get("hyperparams", {}).get(train["model"], {}), target)
    started = time.perf_counter()
    pipeline.fit(inputs, target)
    if device == "cuda":
        # Serve anywhere: the image and the batch CLI predict on CPU, without a GPU warning.
        pipeline[-1].set_params(device="cpu")
    record = {
        "model": train["model"],
        "device": device,
        "gpu": gpu if device == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "train_rows": len(frame),
        "train_seconds": round(time.perf_counter() - started, 3),
    }
    return pipeline, record


app = typer.Typer(add_completion=False)


@app.command()
def main(
    splits_dir: Annotated[Path, typer.Option(help="Where the splits are.")] = SPLITS_DIR,
    model_path: Annotated[Path, typer.Option("--model", help="Model to write.")] = MODEL_FILE,
    record_path: Annotated[
        Path, typer.Option("--record", help="Training record.")
    ] = TRAINING_FILE,
) -> None:
    """Train on the train split and save the fitted pipeline."""
    try:
        pipeline, record = fit(
            read_parquet(split_path("train", splits_dir)),
            load_params("features"),
            load_params("train"),
        )
    except (ValueError, KeyError) as err:
        typer.echo(f"train: {err}", err=True)
        raise typer.Exit(1) from None
    write_atomic(model_path, lambda tmp: joblib.dump(pipeline, tmp))
    write_json(record_path, record)
    typer.echo(f"train: {json.dumps(record)}")


if __name__ == "__main__":
    app()
