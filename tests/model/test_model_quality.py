"""Behaviour of the model the pipeline trains with the committed params, on the test split.
The bar is params.yaml's `quality` section; the example's domain checks say so and skip on
other data."""

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from gitml.config import load_params
from gitml.dataset import TARGET, TIME
from gitml.pipeline.evaluate import seasonal_baseline
from gitml.pipeline.features import split_xy
from gitml.pipeline.train import fit
from gitml.pull_requests.bootstrap import mae, paired_difference_ci
from tests.example_data import example_only


@pytest.fixture(scope="module")
def model(splits: dict[str, pd.DataFrame], params: dict[str, Any]) -> Pipeline:
    pipeline, _ = fit(splits["train"], params["features"], params["train"])
    return pipeline


def test_model_beats_seasonal_baseline_beyond_noise(
    model: Pipeline, splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    train, test = splits["train"], splits["test"]
    inputs, actual = split_xy(test, params["features"])
    keys = params["evaluate"]["baseline_keys"]
    baseline = seasonal_baseline(train, test, keys, TARGET)
    diff, _, high = paired_difference_ci(
        actual.to_numpy(), model.predict(inputs), baseline,
        test[TIME].dt.date.to_numpy(), mae, n_resamples=1000,
    )  # fmt: skip
    quality = load_params("quality")
    gain = -diff / mae(actual.to_numpy(), baseline)
    print(f"MAE {gain:.1%} under the baseline's, 95 % interval of the difference up to {high:.3g}")
    if quality["beyond_noise"]:  # the gain must be real: the interval lies below zero
        assert high < 0, f"the gain is within noise (95% CI upper bound {high:.3g})"
    bar = quality["min_gain"]
    assert gain >= bar, f"MAE {gain:.0%} under the baseline's; quality.min_gain asks {bar:.0%}"


@example_only
def test_rush_hours_predict_more_than_night(
    model: Pipeline, splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    inputs, _ = split_xy(splits["test"], params["features"])
    working = inputs[inputs["workingday"] == 1]
    by_hour = pd.Series(model.predict(working), index=working["hr"]).groupby(level=0).mean()
    assert by_hour[[8, 17]].min() > 3 * by_hour[[2, 3, 4]].max()


@example_only
def test_rain_lowers_demand(
    model: Pipeline, splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    inputs, _ = split_xy(splits["test"], params["features"])
    clear = inputs.assign(weathersit=pd.Categorical(["clear"] * len(inputs)))
    rainy = inputs.assign(weathersit=pd.Categorical(["light rain/snow"] * len(inputs)))
    assert np.mean(model.predict(rainy)) < 0.9 * np.mean(model.predict(clear))


def test_a_target_never_negative_is_never_predicted_negative(
    model: Pipeline, splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    if (splits["train"][TARGET] < 0).any():
        pytest.skip(f"{TARGET} takes negative values in the data: nothing to hold")
    inputs, _ = split_xy(splits["production"], params["features"])
    assert (model.predict(inputs) >= 0).all()
