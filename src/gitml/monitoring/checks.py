"""What the monitor measures in a window of predictions, and how a measure is judged.

Three checks, each a few statistics whose normal range `calibrate.py` learns from the data:

- data_drift, per feature: evidently's drift distance from the reference (Wasserstein distance
  normed by the reference's spread for numbers, Jensen-Shannon distance for categories), and the
  share of the window's rows holding its most frequent value. The share sees a feature stuck at
  one value or gone missing, which a distance can miss: a constant at the median is closer to the
  reference than a cold fortnight is.
- prediction_drift: the same distance for the predictions.
- quality, on rows with actuals: the error ratio, the model's absolute error over the error it
  is expected to make on those rows (an error model learned from its out-of-sample errors
  predicts that from the features and the prediction). The expected error follows the rows, so
  a quiet winter week and a busy summer one are judged alike, at any scale (a naive seasonal
  baseline does not do that: see docs/monitoring.md). Demand up or down, a feature whose
  relation to the target changed, a category swapped: all make errors larger than expected.

Everything takes the feature lists as arguments, so the benchmark can judge other datasets.
"""

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OrdinalEncoder

from gitml.serving.predlog import ACTUAL, PREDICTION

DATA_DRIFT, PREDICTION_DRIFT, QUALITY = "data_drift", "prediction_drift", "quality"
CHECKS = (DATA_DRIFT, PREDICTION_DRIFT, QUALITY)
DISTANCE, MODE_SHARE = "distance", "mode share"
ERROR_RATIO = "error_ratio"
# evidently's drift tests by kind of column (its default picks by data size; a fixed choice
# keeps scores comparable between windows, so one calibration fits them all)
METHODS = {True: "jensenshannon", False: "wasserstein"}  # categorical?


def statistic(feature: str, kind: str) -> str:
    """A per-feature statistic's name: `temp distance`, `temp mode share`."""
    return f"{feature} {kind}"


def distance(reference: pd.Series, current: pd.Series, categorical: bool) -> float:
    """evidently's drift score of `current` against `reference` (missing values left out;
    NaN when either side has none left)."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    kind = ColumnType.Categorical if categorical else ColumnType.Numerical
    ref, cur = reference.dropna(), current.dropna()
    if ref.empty or cur.empty:
        return math.nan
    if categorical:
        ref, cur = ref.astype(str), cur.astype(str)
    test = get_stattest(ref, cur, kind, METHODS[categorical])
    return float(test(ref, cur, kind, None).drift_score)


def mode_share(values: pd.Series) -> float:
    """The share of rows holding the most frequent value (missing counts as a value)."""
    return float(values.value_counts(normalize=True, dropna=False).iloc[0])


def drift_statistics(
    reference: pd.DataFrame, current: pd.DataFrame, features: list[str], categorical: list[str]
) -> dict[str, float]:
    """Each feature's distance from the reference and most-frequent-value share."""
    found = {}
    for name in features:
        found[statistic(name, DISTANCE)] = distance(
            reference[name], current[name], name in categorical
        )
        found[statistic(name, MODE_SHARE)] = mode_share(current[name])
    return found


def error_model(logged: pd.DataFrame, features: list[str], categorical: list[str]) -> Pipeline:
    """The expected absolute error of a row, learned from out-of-sample labelled rows
    (features and the prediction in, |prediction - actual| out). A Poisson loss: errors are
    positive and grow in proportion with the demand, as counts do."""
    numeric = [name for name in features if name not in categorical] + [PREDICTION]
    encode = ColumnTransformer(
        [("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                       encoded_missing_value=-1), categorical),
         ("numbers", "passthrough", numeric)],
    )  # fmt: skip
    # a light model: it learns how large errors run, not to fit them (seeded: calibrations
    # of the same model and data are identical, so DVC's hashes are too)
    regressor = HistGradientBoostingRegressor(
        loss="poisson", max_iter=100, max_leaf_nodes=15, min_samples_leaf=50, random_state=0,
        categorical_features=[True] * len(categorical) + [False] * len(numeric),
    )  # fmt: skip
    model = make_pipeline(encode, regressor)
    labelled = logged.dropna(subset=[ACTUAL])
    model.fit(labelled[[*categorical, *numeric]], (labelled[PREDICTION] - labelled[ACTUAL]).abs())
    return model


def expected_error(errors: Pipeline, logged: pd.DataFrame) -> np.ndarray:
    """The error model's expected absolute error of each row."""
    return np.asarray(errors.predict(logged[list(errors.feature_names_in_)]), dtype=float)


def quality_statistics(labelled: pd.DataFrame, expected: np.ndarray) -> dict[str, float]:
    """The error ratio of labelled rows, given each row's expected error."""
    errors = labelled[PREDICTION].to_numpy(float) - labelled[ACTUAL].to_numpy(float)
    return {ERROR_RATIO: float(np.abs(errors).sum() / expected.sum())}


def measure(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    errors: Pipeline,
    features: list[str],
    categorical: list[str],
    min_rows: int,
) -> dict[str, dict[str, float]]:
    """Every check's statistics of `current` (as logged: features, prediction, actual) against
    `reference` (the training rows the same way); quality only from `min_rows` labelled rows."""
    found = {
        DATA_DRIFT: drift_statistics(reference, current, features, categorical),
        PREDICTION_DRIFT: {
            statistic(PREDICTION, DISTANCE): distance(
                reference[PREDICTION], current[PREDICTION], categorical=False
            )
        },
    }
    labelled = current.dropna(subset=[ACTUAL])
    if len(labelled) >= min_rows:
        found[QUALITY] = quality_statistics(labelled, expected_error(errors, labelled))
    return found


def exceeded(statistics: dict[str, float], limits: dict[str, dict[str, float]]) -> list[str]:
    """The statistics above their calibrated limits (every statistic alarms when high)."""
    return [
        name
        for name, value in statistics.items()
        if name in limits and not math.isnan(value) and value > limits[name]["high"]
    ]


def as_logged(
    model: Any, rows: pd.DataFrame, features: list[str], target: str, time: str
) -> pd.DataFrame:
    """Rows of a split as the prediction log holds them: features (categories as strings, as
    requests send them), the model's prediction, the actual and the event time (UTC)."""
    frame = rows[features].reset_index(drop=True)
    for name in features:
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype(str)
    frame[PREDICTION] = model.predict(frame)
    frame[ACTUAL] = rows[target].to_numpy(dtype=float)
    frame[time] = pd.DatetimeIndex(rows[time]).tz_localize("UTC")
    return frame


def time_windows(split: pd.DataFrame, days: float, time: str) -> list[pd.DataFrame]:
    """Consecutive whole windows of `days` days of a split, from its first midnight. A window
    is whole when at most a twentieth of it lies past the split's last row: a year of trading
    days that begins on the 2nd of January still fills a 365-day window."""
    start, step = split[time].min().normalize(), pd.Timedelta(days=days)
    slack = max(step / 20, pd.Timedelta(hours=1))
    windows = []
    while start + step <= split[time].max() + slack:
        windows.append(split[(split[time] >= start) & (split[time] < start + step)])
        start += step
    return [window for window in windows if not window.empty]
