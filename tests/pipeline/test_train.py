import json
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gitml.dataset import TARGET
from gitml.pipeline.features import split_xy
from gitml.pipeline.train import build_regressor, fit, gpu_name, resolve_device


@pytest.mark.parametrize(
    ("family", "requested", "gpu", "cuda_build", "expected"),
    [
        ("hist_gradient_boosting", "auto", "H100", True, "cpu"),
        ("xgboost", "auto", None, True, "cpu"),
        ("xgboost", "auto", "H100", True, "cuda"),
        ("xgboost", "cuda", "H100", True, "cuda"),
        ("xgboost", "cpu", "H100", True, "cpu"),
        ("xgboost", "auto", "H100", False, "cpu"),  # xgboost-cpu beside a GPU
        ("xgboost", "cpu", None, False, "cpu"),
    ],
)
def test_resolve_device(
    family: str, requested: str, gpu: str | None, cuda_build: bool, expected: str
) -> None:
    assert resolve_device(family, requested, gpu, cuda_build) == expected


def test_cuda_that_cannot_be_had_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"^train.device is 'cuda' but no NVIDIA GPU is visible"):
        resolve_device("xgboost", "cuda", None, True)
    with pytest.raises(ValueError) as err:
        resolve_device("xgboost", "cuda", "H100", False)
    assert str(err.value) == (
        "train.device is 'cuda' but this XGBoost was built without CUDA, so it would train on "
        "the CPU beside the H100: install the gpu extra's (uv sync --extra gpu --no-dev)"
    )


def test_unknown_device_and_family_are_errors() -> None:
    with pytest.raises(ValueError, match=r"train\.device must be one of .* got 'tpu'"):
        resolve_device("xgboost", "tpu", None, True)
    with pytest.raises(ValueError) as err:
        build_regressor("svm", {}, 0, "cpu")
    assert str(err.value) == (
        "train.model 'svm' is unknown; use hist_gradient_boosting, random_forest, ridge or xgboost"
    )


def test_xgboost_without_its_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xgboost", None)  # `import xgboost` fails, as uninstalled
    with pytest.raises(ValueError) as err:
        build_regressor("xgboost", {}, 0, "cpu")
    assert str(err.value) == "train.model 'xgboost' needs the gpu extra: uv sync --extra gpu"


def test_a_poisson_loss_takes_a_target_with_zeros() -> None:
    from gitml.pipeline.train import check_loss

    counts = pd.Series([0, 0, 3], name="rentals")  # counts are often zero, never below
    for family, key in (("hist_gradient_boosting", "loss"), ("xgboost", "objective")):
        check_loss(family, {key: "poisson"}, counts)
    with pytest.raises(ValueError) as err:
        check_loss("xgboost", {"objective": "count:poisson"}, counts - 1)
    assert str(err.value) == (
        "train.hyperparams.xgboost.objective is 'count:poisson', which needs rentals >= 0, but "
        "it goes down to -1: use a loss for any real number (squared_error; XGBoost: "
        "reg:squarederror)"
    )


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


def test_the_record_names_the_device_xgboost_trained_on(
    splits: dict[str, pd.DataFrame], params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvidia-smi answers as on a GPU runner. The installed XGBoost decides what that is worth:
    the dev group's xgboost-cpu trains on the CPU, and the record must say so (with `auto`), or
    `cuda` must be refused, never recorded as done; the saved model predicts on the CPU."""
    import xgboost

    monkeypatch.setattr("gitml.pipeline.train.gpu_name", lambda: "Stand-in GPU")
    cuda_build = bool(xgboost.build_info().get("USE_CUDA"))
    small = {
        **params["train"],
        "model": "xgboost",
        "hyperparams": {"xgboost": {"n_estimators": 5}},
    }
    # a CUDA build would only train on a GPU this machine really has
    expected = "cuda" if cuda_build and gpu_name() is not None else "cpu"
    if expected == "cpu" and not cuda_build:
        with pytest.raises(ValueError, match="built without CUDA"):
            fit(splits["train"], params["features"], {**small, "device": "cuda"})
    pipeline, record = fit(splits["train"], params["features"], {**small, "device": "auto"})
    booster = json.loads(pipeline[-1].get_booster().save_config())
    assert record["device"] == expected == booster["learner"]["generic_param"]["device"][:4]
    assert record["gpu"] == ("Stand-in GPU" if expected == "cuda" else None)
    assert pipeline[-1].get_params()["device"] == "cpu"


def test_each_family_is_built_from_its_hyperparams_and_the_seed() -> None:
    built = {
        family: build_regressor(family, hyperparams, 7, "cpu")
        for family, hyperparams in {
            "hist_gradient_boosting": {"max_iter": 3, "loss": "poisson"},
            "random_forest": {"n_estimators": 4},
            "ridge": {"alpha": 2.5},
            "xgboost": {"n_estimators": 5},
        }.items()
    }
    assert type(built["hist_gradient_boosting"]).__name__ == "HistGradientBoostingRegressor"
    assert type(built["random_forest"]).__name__ == "RandomForestRegressor"
    assert type(built["ridge"]).__name__ == "Ridge"
    assert type(built["xgboost"]).__name__ == "XGBRegressor"
    params = {family: model.get_params() for family, model in built.items()}
    assert params["hist_gradient_boosting"]["max_iter"] == 3
    assert params["hist_gradient_boosting"]["loss"] == "poisson"
    assert params["random_forest"]["n_estimators"] == 4 and params["ridge"]["alpha"] == 2.5
    assert params["xgboost"]["n_estimators"] == 5 and params["xgboost"]["device"] == "cpu"
    for family in ("hist_gradient_boosting", "random_forest", "xgboost"):
        assert params[family]["random_state"] == 7, family
    assert build_regressor("xgboost", {}, 0, "cuda").get_params()["device"] == "cuda"


def test_the_pipeline_is_the_features_then_the_chosen_family(params: dict[str, Any]) -> None:
    from gitml.pipeline.train import build_pipeline

    train = {**params["train"], "model": "ridge", "seed": 3,
             "hyperparams": {"ridge": {"alpha": 4.0}, "random_forest": {"n_estimators": 9}}}  # fmt: skip
    pipeline = build_pipeline(params["features"], train, "cpu")
    assert [name for name, _ in pipeline.steps] == ["features", "model"]
    assert type(pipeline["model"]).__name__ == "Ridge" and pipeline["model"].alpha == 4.0
    default = build_pipeline(params["features"], {"model": "random_forest", "seed": 5}, "cpu")
    assert default["model"].get_params()["n_estimators"] == 100  # scikit-learn's own default
    assert default["model"].get_params()["random_state"] == 5


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
