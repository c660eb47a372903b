from typing import Any

import numpy as np
import pandas as pd
import pytest

from gitml.dataset import TARGET
from gitml.pipeline.features import split_xy
from gitml.pipeline.train import build_regressor, fit, resolve_device


@pytest.mark.parametrize(
    ("family", "requested", "gpu", "expected"),
    [
        ("hist_gradient_boosting", "auto", "H100", "cpu"),
        ("xgboost", "auto", None, "cpu"),
        ("xgboost", "auto", "H100", "cuda"),
        ("xgboost", "cuda", "H100", "cuda"),
        ("xgboost", "cpu", "H100", "cpu"),
    ],
)
def test_resolve_device(family: str, requested: str, gpu: str | None, expected: str) -> None:
    assert resolve_device(family, requested, gpu) == expected


def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no NVIDIA GPU"):
        resolve_device("xgboost", "cuda", None)


def test_unknown_device_and_family_are_errors() -> None:
    with pytest.raises(ValueError, match=r"train\.device"):
        resolve_device("xgboost", "tpu", None)
    with pytest.raises(ValueError, match="unknown"):
        build_regressor("svm", {}, 0, "cpu")


@pytest.mark.parametrize("family", ["hist_gradient_boosting", "random_forest", "ridge", "xgboost"])
def test_every_family_trains_and_predicts(
    splits: dict[str, pd.DataFrame], params: dict[str, Any], family: str
) -> None:
    small = {**params["train"], "model": family, "device": "cpu"}
    if family in ("random_forest", "xgboost"):
        small["hyperparams"] = {family: {"n_estimators": 20}}
    pipeline, record = fit(splits["train"], params["features"], small)
    inputs, _ = split_xy(splits["test"], params["features"])
    predictions = pipeline.predict(inputs)
    assert predictions.shape == (len(inputs),) and np.isfinite(predictions).all()
    assert record["model"] == family and record["device"] == "cpu"
    assert record["train_rows"] == len(splits["train"])


def test_training_is_seeded(splits: dict[str, pd.DataFrame], params: dict[str, Any]) -> None:
    inputs, _ = split_xy(splits["test"], params["features"])
    first, _ = fit(splits["train"], params["features"], params["train"])
    second, _ = fit(splits["train"], params["features"], params["train"])
    np.testing.assert_array_equal(first.predict(inputs), second.predict(inputs))


def test_a_model_trained_for_cuda_is_saved_to_predict_on_cpu(
    splits: dict[str, pd.DataFrame], params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # nvidia-smi answers as on a GPU runner; XGBoost is given device="cuda" for real (a build or
    # machine without CUDA trains on the CPU and says so). The saved model must not ask for CUDA.
    monkeypatch.setattr("gitml.pipeline.train.gpu_name", lambda: "Stand-in GPU")
    cuda = {**params["train"], "model": "xgboost", "device": "cuda",
            "hyperparams": {"xgboost": {"n_estimators": 5}}}  # fmt: skip
    pipeline, record = fit(splits["train"], params["features"], cuda)
    assert record["device"] == "cuda" and record["gpu"] == "Stand-in GPU"
    assert pipeline[-1].get_params()["device"] == "cpu"


@pytest.mark.parametrize(
    ("family", "key", "loss"),
    [("hist_gradient_boosting", "loss", "poisson"), ("xgboost", "objective", "count:poisson")],
)
def test_a_poisson_loss_for_a_target_below_zero_names_the_setting(
    splits: dict[str, pd.DataFrame], params: dict[str, Any], family: str, key: str, loss: str
) -> None:
    below = splits["train"].head(50).copy()
    below[TARGET] = below[TARGET].astype(float) - 1e6  # every value below zero
    train = {**params["train"], "model": family, "hyperparams": {family: {key: loss}}}
    with pytest.raises(ValueError) as err:
        fit(below, params["features"], train)
    assert str(err.value).startswith(f"train.hyperparams.{family}.{key} is '{loss}', which needs")
    assert f"{TARGET} >= 0" in str(err.value)
    fit(below, params["features"], {**train, "hyperparams": {}})  # the default loss: trains
