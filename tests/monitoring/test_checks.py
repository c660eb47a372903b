"""The window statistics the monitor judges (checks.py), on small synthetic data."""

import math

import numpy as np
import pandas as pd
import pytest
from benchmarks.monitor_windows import synthetic_table

from gitml.monitoring import checks
from gitml.serving.predlog import ACTUAL, PREDICTION

FEATURES = ["hr", "weekday", "weather", "workingday", "temp", "hum"]
CATEGORICAL = ["hr", "weekday", "weather"]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic_table(days=84)


@pytest.fixture(scope="module")
def model(table: pd.DataFrame) -> object:
    from gitml.pipeline.train import build_pipeline

    features = {"categorical": CATEGORICAL, "numeric": ["workingday", "temp", "hum"]}
    train = {"model": "hist_gradient_boosting", "seed": 0,
             "hyperparams": {"hist_gradient_boosting": {"max_iter": 40, "loss": "poisson"}}}  # fmt: skip
    first = table[table["time"] < "2022-02-15"]
    return build_pipeline(features, train, "cpu").fit(first[FEATURES], first["demand"])


def logged(model: object, rows: pd.DataFrame) -> pd.DataFrame:
    return checks.as_logged(model, rows, FEATURES, "demand", "time")


def test_the_mode_share_sees_a_stuck_feature_and_counts_missing_values() -> None:
    assert checks.mode_share(pd.Series([0.1, 0.2, 0.3, 0.4])) == 0.25
    assert checks.mode_share(pd.Series([0.5] * 4)) == 1.0
    assert checks.mode_share(pd.Series([math.nan, math.nan, math.nan, 0.1])) == 0.75


def test_a_feature_stuck_at_its_median_is_closer_than_a_season_but_its_share_is_not(
    table: pd.DataFrame,
) -> None:
    # why the mode share is a statistic of its own: a distance can miss a constant
    reference, spring = table["temp"], table["temp"].tail(336)  # the warmest fortnight
    stuck = pd.Series(np.full(336, reference.median()))
    assert checks.distance(reference, stuck, False) < checks.distance(reference, spring, False)
    assert checks.mode_share(stuck) == 1.0 > 10 * checks.mode_share(spring)


def test_the_distance_is_evidently_s_test_and_none_without_values(table: pd.DataFrame) -> None:
    same = checks.distance(table["weather"], table["weather"], True)
    assert same == pytest.approx(0.0, abs=1e-9)
    rainy = table["weather"].where(table["weather"] != "clear", "rain")
    assert checks.distance(table["weather"], rainy, True) > 0.3
    assert math.isnan(checks.distance(table["temp"], pd.Series([math.nan] * 3), False))


def test_a_logged_window_looks_as_the_prediction_log_holds_it(
    table: pd.DataFrame, model: object
) -> None:
    rows = table.head(48)
    frame = logged(model, rows)
    assert list(frame) == [*FEATURES, PREDICTION, ACTUAL, "time"]
    assert frame["weather"].map(type).eq(str).all()  # as requests send categories
    assert str(frame["time"].dt.tz) == "UTC"
    assert frame[ACTUAL].tolist() == rows["demand"].astype(float).tolist()


def test_the_error_ratio_is_near_one_on_new_rows_and_grows_with_demand(
    table: pd.DataFrame, model: object
) -> None:
    later = logged(model, table[table["time"] >= "2022-02-15"])
    fit_on, judge_on = later.iloc[: len(later) // 2], later.iloc[len(later) // 2 :]
    errors = checks.error_model(fit_on, FEATURES, CATEGORICAL)
    as_is = checks.quality_statistics(judge_on, checks.expected_error(errors, judge_on))
    assert 0.8 < as_is[checks.ERROR_RATIO] < 1.25
    busier = judge_on.assign(**{ACTUAL: judge_on[ACTUAL] * 1.5})
    raised = checks.quality_statistics(busier, checks.expected_error(errors, busier))
    assert raised[checks.ERROR_RATIO] > 1.5 * as_is[checks.ERROR_RATIO]
    quieter = judge_on.assign(**{ACTUAL: judge_on[ACTUAL] * 0.5})  # either way
    lowered = checks.quality_statistics(quieter, checks.expected_error(errors, quieter))
    assert lowered[checks.ERROR_RATIO] > 1.5 * as_is[checks.ERROR_RATIO]


def test_quality_is_measured_only_from_min_rows_labelled_rows(
    table: pd.DataFrame, model: object
) -> None:
    window = logged(model, table.head(200))
    errors = checks.error_model(window, FEATURES, CATEGORICAL)
    window.loc[window.index[:150], ACTUAL] = math.nan
    found = checks.measure(window, window, errors, FEATURES, CATEGORICAL, min_rows=50)
    assert set(found) == {checks.DATA_DRIFT, checks.PREDICTION_DRIFT, checks.QUALITY}
    assert len(found[checks.DATA_DRIFT]) == 2 * len(FEATURES)
    assert checks.QUALITY not in checks.measure(window, window, errors, FEATURES, CATEGORICAL, 51)


def test_a_statistic_exceeds_only_past_its_limits() -> None:
    limits = {"a": {"high": 1.0}, "b": {"high": 2.0}, "d": {"high": 0.0}}
    found = {"a": 1.0, "b": 2.5, "c": 99.0, "d": math.nan}
    assert checks.exceeded(found, limits) == ["b"]  # c has no limit, d was not measured
    assert checks.exceeded({"a": 1.01, "b": 0.0}, limits) == ["a"]


def test_windows_are_whole_from_the_first_midnight() -> None:
    hours = pd.DataFrame({"time": pd.date_range("2024-01-01 05:00", periods=24 * 30, freq="h")})
    windows = checks.time_windows(hours, 7, "time")
    assert [len(w) for w in windows] == [7 * 24 - 5, 7 * 24, 7 * 24, 7 * 24]
    # a year of trading days that starts on the 2nd of January fills a 365-day window
    days = pd.DataFrame({"time": pd.bdate_range("1985-01-02", "1985-12-31")})
    assert [len(w) for w in checks.time_windows(days, 365, "time")] == [len(days)]
    assert checks.time_windows(days.head(200), 365, "time") == []
