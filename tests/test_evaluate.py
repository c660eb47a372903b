from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor

from gitml.evaluate import evaluate, regression_metrics, seasonal_baseline
from gitml.features import split_xy
from gitml.train import fit


def test_seasonal_baseline_is_the_training_mean_per_key() -> None:
    train = pd.DataFrame({"hr": [0, 0, 1, 1], "workingday": [1, 1, 1, 1], "y": [2, 4, 10, 20]})
    test = pd.DataFrame({"hr": [1, 0, 5], "workingday": [1, 1, 1]})
    # hour 5 was never seen: it falls back to the overall training mean (9)
    np.testing.assert_allclose(
        seasonal_baseline(train, test, ["hr", "workingday"], "y"), [15, 3, 9]
    )


def test_regression_metrics_are_rounded_to_4_decimals() -> None:
    metrics = regression_metrics(pd.Series([0.0, 1.0, 3.0]), np.array([1 / 3, 1.0, 2.0]))
    assert metrics["mae"] == 0.4444  # (1/3 + 0 + 1) / 3
    assert metrics["rmse"] == 0.6086  # sqrt((1/9 + 1) / 3)
    assert metrics["r2"] == 0.7619  # 1 - (10/9) / (14/3)


def test_regression_metrics_on_a_known_case() -> None:
    metrics = regression_metrics(pd.Series([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 3.0, 2.0]))
    assert metrics == {"mae": 0.75, "rmse": round(np.sqrt(5 / 4), 4), "r2": 0.0}


def test_evaluate_scores_both_and_builds_plot_tables(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    quick = {**params["train"], "hyperparams": {"hist_gradient_boosting": {"max_iter": 30}}}
    model, _ = fit(splits["train"], params["features"], quick)
    eval_params = {**params["evaluate"], "importance_repeats": 2}
    metrics, plots = evaluate(
        model, splits["train"], splits["test"], params["features"], eval_params
    )
    assert set(metrics) == {"model", "baseline", "test_rows"}
    assert metrics["test_rows"] == len(splits["test"])
    assert len(plots["predictions"]) == len(splits["test"])
    assert sorted(plots["error_by_hour"]["hour"]) == list(range(24))
    features = [*params["features"]["categorical"], *params["features"]["numeric"]]
    assert sorted(plots["importance"]["feature"]) == sorted(features)
    assert plots["importance"]["mae_increase"].is_monotonic_decreasing
    # a trained model beats the naive seasonal baseline, and the hour matters most: shuffling
    # it costs tens of bikes of MAE (the importance is in bikes, not in R² units)
    assert metrics["model"]["mae"] < metrics["baseline"]["mae"]
    assert plots["importance"]["feature"].iloc[0] == "hr"
    assert plots["importance"]["mae_increase"].iloc[0] > 10
    # rounded as documented: predictions to 2 decimals, errors and importances to 3
    predicted = plots["predictions"]["predicted"].to_numpy()
    assert (
        np.abs(predicted - model.predict(split_xy(splits["test"], params["features"])[0])).max()
        <= 0.005
    )
    assert np.allclose(predicted * 100, np.round(predicted * 100))
    for values in (plots["error_by_hour"]["model"], plots["importance"]["mae_increase"]):
        assert np.allclose(values * 1000, np.round(values * 1000))
        assert not np.allclose(values * 100, np.round(values * 100))
    # the permutations are seeded: the same inputs give the same importances
    _, again = evaluate(model, splits["train"], splits["test"], params["features"], eval_params)
    assert again["importance"].equals(plots["importance"])


def test_evaluate_values_for_a_constant_model(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    """A model that always predicts 100: every number is computed here by hand."""
    features = params["features"]
    train, test = splits["train"], splits["test"].head(72)  # three days: 3 rows per hour
    model = DummyRegressor(strategy="constant", constant=100.0).fit(*split_xy(train, features))
    eval_params = {**params["evaluate"], "importance_repeats": 2}
    metrics, plots = evaluate(model, train, test, features, eval_params)

    actual = test["bikers"].to_numpy(dtype=float)
    baseline = np.array(
        [
            train.loc[(train["hr"] == hr) & (train["workingday"] == wd), "bikers"].mean()
            for hr, wd in zip(test["hr"], test["workingday"], strict=True)
        ]
    )
    model_error, baseline_error = np.abs(actual - 100.0), np.abs(actual - baseline)
    assert metrics["test_rows"] == 72
    assert metrics["model"]["mae"] == pytest.approx(model_error.mean(), abs=1e-4)
    assert metrics["baseline"]["mae"] == pytest.approx(baseline_error.mean(), abs=1e-4)
    assert metrics["baseline"]["rmse"] == pytest.approx(
        np.sqrt(np.mean(baseline_error**2)), abs=1e-4
    )

    by_hour = plots["error_by_hour"].set_index("hour")
    hours = test["hr"].to_numpy()
    for hour in (0, 8, 17):
        assert by_hour.loc[hour, "model"] == pytest.approx(
            model_error[hours == hour].mean(), abs=1e-3
        )
        assert by_hour.loc[hour, "baseline"] == pytest.approx(
            baseline_error[hours == hour].mean(), abs=1e-3
        )

    predictions = plots["predictions"]
    assert predictions["timestamp"].iloc[0] == test["timestamp"].iloc[0].strftime("%Y-%m-%d %H:%M")
    assert predictions["actual"].tolist() == actual.tolist()
    assert set(predictions["predicted"]) == {100.0}
    # predictions that ignore every feature: shuffling one changes nothing
    assert set(plots["importance"]["mae_increase"]) == {0.0}
