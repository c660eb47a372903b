from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.inspection import permutation_importance

from gitml.dataset import ERRORS_BY, TARGET, TIME
from gitml.pipeline.evaluate import evaluate, regression_metrics, seasonal_baseline
from gitml.pipeline.features import split_xy
from gitml.pipeline.train import fit
from tests.example_data import example_only


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


def test_r2_is_rounded_to_4_decimals_not_5() -> None:
    metrics = regression_metrics(pd.Series([0.0, 1.0, 3.0, 5.0]), np.array([0.5, 1.0, 2.0, 5.3]))
    assert metrics["r2"] == 0.9092  # 1 - 1.34 / 14.75 = 0.909152...


def test_regression_metrics_on_a_known_case() -> None:
    metrics = regression_metrics(pd.Series([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 3.0, 2.0]))
    assert metrics == {"mae": 0.75, "rmse": round(np.sqrt(5 / 4), 4), "r2": 0.0}


@pytest.fixture(scope="module")
def evaluated(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> tuple[Any, dict[str, Any], dict[str, pd.DataFrame]]:
    """A quickly trained model (30 boosting rounds), evaluated with 2 permutation repeats."""
    family = params["train"]["model"]
    quick_params = {**params["train"]["hyperparams"].get(family, {})}
    if family == "hist_gradient_boosting":
        quick_params["max_iter"] = 30
    quick = {**params["train"], "hyperparams": {family: quick_params}}
    model, _ = fit(splits["train"], params["features"], quick)
    eval_params = {**params["evaluate"], "importance_repeats": 2}
    metrics, plots = evaluate(
        model, splits["train"], splits["test"], params["features"], eval_params
    )
    return model, metrics, plots


def test_evaluate_scores_both_and_builds_plot_tables(
    splits: dict[str, pd.DataFrame], params: dict[str, Any],
    evaluated: tuple[Any, dict[str, Any], dict[str, pd.DataFrame]],
) -> None:  # fmt: skip
    model, metrics, plots = evaluated
    eval_params = {**params["evaluate"], "importance_repeats": 2}
    assert set(metrics) == {"model", "baseline", "test_rows"}
    assert metrics["test_rows"] == len(splits["test"])
    assert len(plots["predictions"]) == len(splits["test"])
    assert sorted(plots["error_by_group"]["group"]) == sorted(splits["test"][ERRORS_BY].unique())
    features = [*params["features"]["categorical"], *params["features"]["numeric"]]
    assert sorted(plots["importance"]["feature"]) == sorted(features)
    assert plots["importance"]["mae_increase"].is_monotonic_decreasing
    # a trained model beats the naive seasonal baseline
    assert metrics["model"]["mae"] < metrics["baseline"]["mae"]
    # rounded as documented: predictions to 2 decimals, errors and importances to 3
    predicted = plots["predictions"]["predicted"].to_numpy()
    assert (
        np.abs(predicted - model.predict(split_xy(splits["test"], params["features"])[0])).max()
        <= 0.005
    )
    assert np.allclose(predicted * 100, np.round(predicted * 100))
    for values in (plots["error_by_group"]["model"], plots["importance"]["mae_increase"]):
        assert np.allclose(values * 1000, np.round(values * 1000))
        assert not np.allclose(values * 100, np.round(values * 100))
    # the importance is the MAE increase over the params' repeats (in the target's units)
    inputs, actual = split_xy(splits["test"], params["features"])
    expected = permutation_importance(
        model, inputs, actual, scoring="neg_mean_absolute_error",
        n_repeats=eval_params["importance_repeats"], random_state=eval_params["seed"],
    )  # fmt: skip
    by_feature = plots["importance"].set_index("feature")["mae_increase"]
    np.testing.assert_allclose(
        by_feature[list(inputs.columns)], expected.importances_mean.round(3), atol=1e-9
    )
    # the permutations are seeded: the same inputs give the same importances
    _, again = evaluate(model, splits["train"], splits["test"], params["features"], eval_params)
    assert again["importance"].equals(plots["importance"])


@example_only
def test_the_hour_matters_most_in_the_example(
    evaluated: tuple[Any, dict[str, Any], dict[str, pd.DataFrame]],
) -> None:
    # shuffling the hour costs tens of bikes of MAE (the importance is in bikes, not R² units)
    _, _, plots = evaluated
    assert plots["importance"]["feature"].iloc[0] == "hr"
    assert plots["importance"]["mae_increase"].iloc[0] > 10


def test_evaluate_values_for_a_constant_model(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    """A model that always predicts 100: every number is computed here by hand."""
    features, keys = params["features"], list(params["evaluate"]["baseline_keys"])
    train, test = splits["train"], splits["test"].head(72)
    model = DummyRegressor(strategy="constant", constant=100.0).fit(*split_xy(train, features))
    eval_params = {**params["evaluate"], "importance_repeats": 2}
    metrics, plots = evaluate(model, train, test, features, eval_params)

    actual = test[TARGET].to_numpy(dtype=float)

    def training_mean(row: pd.Series) -> float:
        same = np.logical_and.reduce([train[key] == row[key] for key in keys])
        return float(train.loc[same, TARGET].mean() if same.any() else train[TARGET].mean())

    baseline = np.array([training_mean(row) for _, row in test.iterrows()])
    model_error, baseline_error = np.abs(actual - 100.0), np.abs(actual - baseline)
    assert metrics["test_rows"] == 72
    assert metrics["model"]["mae"] == pytest.approx(model_error.mean(), abs=1e-4)
    assert metrics["baseline"]["mae"] == pytest.approx(baseline_error.mean(), abs=1e-4)
    assert metrics["baseline"]["rmse"] == pytest.approx(
        np.sqrt(np.mean(baseline_error**2)), abs=1e-4
    )

    by_group = plots["error_by_group"].set_index("group")
    groups = test[ERRORS_BY].to_numpy()
    for group in test[ERRORS_BY].unique()[:3]:
        assert by_group.loc[group, "model"] == pytest.approx(
            model_error[groups == group].mean(), abs=1e-3
        )
        assert by_group.loc[group, "baseline"] == pytest.approx(
            baseline_error[groups == group].mean(), abs=1e-3
        )

    predictions = plots["predictions"]
    assert predictions["timestamp"].iloc[0] == test[TIME].iloc[0].strftime("%Y-%m-%d %H:%M")
    assert predictions["actual"].tolist() == actual.tolist()
    assert set(predictions["predicted"]) == {100.0}
    # predictions that ignore every feature: shuffling one changes nothing
    assert set(plots["importance"]["mae_increase"]) == {0.0}
