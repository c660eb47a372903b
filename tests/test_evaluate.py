from typing import Any

import numpy as np
import pandas as pd

from gitml.evaluate import evaluate, regression_metrics, seasonal_baseline
from gitml.train import fit


def test_seasonal_baseline_is_the_training_mean_per_key() -> None:
    train = pd.DataFrame({"hr": [0, 0, 1, 1], "workingday": [1, 1, 1, 1], "y": [2, 4, 10, 20]})
    test = pd.DataFrame({"hr": [1, 0, 5], "workingday": [1, 1, 1]})
    # hour 5 was never seen: it falls back to the overall training mean (9)
    np.testing.assert_allclose(
        seasonal_baseline(train, test, ["hr", "workingday"], "y"), [15, 3, 9]
    )


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
