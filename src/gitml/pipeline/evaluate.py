"""evaluate stage: score the model and a naive seasonal baseline on the test split.

Writes reports/metrics.json and the data behind the DVC plots declared in dvc.yaml:
predicted vs actual, the mean error by the spec's ERRORS_BY column (the hour, in the example;
the plot file calls it `group`), and permutation feature importance.
"""

from pathlib import Path
from typing import Annotated, Any

import joblib
import numpy as np
import pandas as pd
import typer
from sklearn.inspection import permutation_importance
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.pipeline import Pipeline

from gitml.config import METRICS_FILE, MODEL_FILE, PLOTS_DIR, SPLITS_DIR, load_params, split_path
from gitml.dataset import ERRORS_BY, TARGET, TIME
from gitml.files import read_parquet, write_json, write_table
from gitml.pipeline.features import split_xy


def regression_metrics(actual: pd.Series, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R², rounded so metrics diffs stay readable."""
    return {
        "mae": round(float(mean_absolute_error(actual, predicted)), 4),
        "rmse": round(float(root_mean_squared_error(actual, predicted)), 4),
        "r2": round(float(r2_score(actual, predicted)), 4),
    }


def seasonal_baseline(
    train: pd.DataFrame, test: pd.DataFrame, keys: list[str], target: str
) -> np.ndarray:
    """Predict the training mean of the target for each combination of `keys`.

    Combinations never seen in training fall back to the overall training mean.
    """
    means = train.groupby(keys, observed=True)[target].mean().rename("baseline")
    merged = test[keys].merge(means, left_on=keys, right_index=True, how="left")
    return merged["baseline"].fillna(train[target].mean()).to_numpy()


def evaluate(
    model: Pipeline,
    train: pd.DataFrame,
    test: pd.DataFrame,
    features: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Score model and baseline on `test`; build the tables behind the plots.

    Returns:
        The metrics dict and the plot tables keyed by file stem.
    """
    inputs, actual = split_xy(test, features)
    predicted = model.predict(inputs)
    baseline = seasonal_baseline(train, test, list(params["baseline_keys"]), TARGET)
    metrics = {
        "model": regression_metrics(actual, predicted),
        "baseline": regression_metrics(actual, baseline),
        "test_rows": len(test),
    }
    errors = pd.DataFrame(
        {
            "group": test[ERRORS_BY].to_numpy(),
            "model": np.abs(actual.to_numpy() - predicted),
            "baseline": np.abs(actual.to_numpy() - baseline),
        }
    )
    importance = permutation_importance(
        model, inputs, actual, scoring="neg_mean_absolute_error",
        n_repeats=int(params["importance_repeats"]), random_state=int(params["seed"]),
    )  # fmt: skip
    plots = {
        "predictions": pd.DataFrame(
            {
                "timestamp": test[TIME].dt.strftime("%Y-%m-%d %H:%M").to_numpy(),
                "actual": actual.to_numpy(),
                "predicted": np.round(predicted, 2),
            }
        ),
        "error_by_group": errors.groupby("group", as_index=False).mean().round(3),
        "importance": pd.DataFrame(
            {"feature": inputs.columns, "mae_increase": importance.importances_mean.round(3)}
        ).sort_values("mae_increase", ascending=False),
    }
    return metrics, plots


app = typer.Typer(add_completion=False)


@app.command()
# the stage's file and git plumbing: run end to end by tests/e2e (slow), not by the fast
# tests `make mutation` uses
def main(
    splits_dir: Annotated[Path, typer.Option(help="Where the splits are.")] = SPLITS_DIR,
    model_path: Annotated[Path, typer.Option("--model", help="Trained model.")] = MODEL_FILE,
    metrics_path: Annotated[Path, typer.Option("--metrics", help="Metrics JSON.")] = METRICS_FILE,
    plots_dir: Annotated[Path, typer.Option(help="Plot data directory.")] = PLOTS_DIR,
) -> None:  # pragma: no mutate block
    """Evaluate the trained model on the test split."""
    metrics, plots = evaluate(
        joblib.load(model_path),
        read_parquet(split_path("train", splits_dir)),
        read_parquet(split_path("test", splits_dir)),
        load_params("features"),
        load_params("evaluate"),
    )
    write_json(metrics_path, metrics)
    for name, table in plots.items():
        write_table(plots_dir / f"{name}.csv", table)
    typer.echo(f"evaluate: model {metrics['model']} | baseline {metrics['baseline']}")


if __name__ == "__main__":
    app()
