"""The window statistics the monitor judges (checks.py), on small synthetic data."""

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from benchmarks.monitor_windows import synthetic_table
from threadpoolctl import threadpool_limits

from gitml.monitoring import calibrate, checks
from gitml.serving.predlog import ACTUAL, PREDICTION

FEATURES = ["hr", "weekday", "weather", "workingday", "temp", "hum"]
CATEGORICAL = ["hr", "weekday", "weather"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The parts of the calibration called alone run as calibrate.backtest runs them."""
    with threadpool_limits(calibrate.threads()):
        yield


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


def test_the_distances_are_the_textbook_ones() -> None:
    # Wasserstein: every value moved by 1, over the reference's (population) deviation
    shifted = checks.distance(pd.Series([0.0, 1, 2, 3]), pd.Series([1.0, 2, 3, 4]), False)
    assert shifted == pytest.approx(1 / np.std([0, 1, 2, 3]))
    # a constant reference: the deviation's floor, not a division by zero
    assert checks.distance(pd.Series([2.0] * 3), pd.Series([3.0] * 2), False) == pytest.approx(
        1 / checks.NORM_FLOOR
    )
    # Jensen-Shannon (natural log) of (1/2, 1/2) and (1, 0): against their mean (3/4, 1/4)
    half = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    whole = math.log(1 / 0.75)
    found = checks.distance(pd.Series(["a", "a", "b", "b"]), pd.Series(["a", "a"]), True)
    assert found == pytest.approx(math.sqrt((half + whole) / 2))
    # missing values are left out on both sides
    assert checks.distance(pd.Series([0.0, 1, 2, 3, math.nan]), pd.Series([1.0, 2, math.nan, 3, 4]),
                           False) == pytest.approx(shifted)  # fmt: skip


def test_the_distances_are_evidently_s_own(table: pd.DataFrame) -> None:
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    def evidently_s(reference: pd.Series, current: pd.Series, categorical: bool) -> float:
        kind = ColumnType.Categorical if categorical else ColumnType.Numerical
        ref, cur = reference.dropna(), current.dropna()
        if categorical:
            ref, cur = ref.astype(str), cur.astype(str)
        test = get_stattest(ref, cur, kind, checks.METHODS[categorical])
        return float(test(ref, cur, kind, None).drift_score)

    reference, current = table.head(24 * 56), table.tail(24 * 14).copy()
    current.loc[current.index[:40], "hum"] = math.nan
    current["weather"] = current["weather"].cat.add_categories("snow")
    current.loc[current.index[:5], "weather"] = "snow"  # a value the reference never had
    for name in FEATURES:
        categorical = name in CATEGORICAL
        ours = checks.distance(reference[name], current[name], categorical)
        assert ours == pytest.approx(evidently_s(reference[name], current[name], categorical))


def test_values_count_as_text_whatever_their_type() -> None:
    shares = checks.value_shares(pd.Series([8, "8", 9, 8], dtype=object))
    assert shares.to_dict() == {"8": 0.75, "9": 0.25}


def test_a_logged_window_looks_as_the_prediction_log_holds_it(
    table: pd.DataFrame, model: object
) -> None:
    rows = table.head(48)
    frame = logged(model, rows)
    assert list(frame) == [*FEATURES, PREDICTION, ACTUAL, "time"]
    assert frame["weather"].map(type).eq(str).all()  # as requests send categories
    assert str(frame["time"].dt.tz) == "UTC"
    assert frame[ACTUAL].dtype == float  # as the log holds actuals, missing ones included
    assert frame[ACTUAL].tolist() == rows["demand"].tolist()


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


def test_the_error_model_takes_categories_as_categories_and_rows_with_gaps(
    table: pd.DataFrame, model: object
) -> None:
    window = logged(model, table.head(24 * 21))
    errors = checks.error_model(window, FEATURES, CATEGORICAL)
    numeric = len(FEATURES) - len(CATEGORICAL) + 1  # the prediction is a number too
    assert errors[-1].is_categorical_.tolist() == [True] * len(CATEGORICAL) + [False] * numeric
    # a category it never saw counts as a missing one
    rows = window.head(3)
    unseen = checks.expected_error(errors, rows.assign(weather="hail"))
    missing = checks.expected_error(errors, rows.assign(weather=None))
    assert np.isfinite(unseen).all() and unseen.tolist() == missing.tolist()
    # labelled rows with a feature missing still teach it: here every row misses one
    even = np.arange(len(window)) % 2 == 0
    gappy = window.assign(hum=window["hum"].mask(even), temp=window["temp"].where(even))
    gaps = checks.error_model(gappy, FEATURES, CATEGORICAL)
    assert np.isfinite(checks.expected_error(gaps, gappy)).all()


def test_quality_is_measured_only_from_min_rows_labelled_rows(
    table: pd.DataFrame, model: object
) -> None:
    window = logged(model, table.head(200))
    expected = checks.expected_error(checks.error_model(window, FEATURES, CATEGORICAL), window)
    window.loc[window.index[:150], ACTUAL] = math.nan
    found = checks.measure(window, window, expected, FEATURES, CATEGORICAL, min_rows=50)
    assert set(found) == {checks.DATA_DRIFT, checks.PREDICTION_DRIFT, checks.QUALITY}
    assert len(found[checks.DATA_DRIFT]) == 2 * len(FEATURES)
    # the ratio of the labelled rows only, each against its own expected error
    labelled = window.iloc[150:]
    assert found[checks.QUALITY] == checks.quality_statistics(labelled, expected[150:])
    shift = window.assign(**{PREDICTION: window[PREDICTION] + 5})  # the predictions' distance
    moved = checks.distance(window[PREDICTION], shift[PREDICTION], categorical=False)
    assert moved > 0 and checks.measure(window, shift, expected, FEATURES, CATEGORICAL, 50)[
        checks.PREDICTION_DRIFT] == {checks.statistic(PREDICTION, checks.DISTANCE): moved}  # fmt: skip
    assert checks.QUALITY not in checks.measure(
        window, window, expected, FEATURES, CATEGORICAL, 51
    )


def test_one_call_for_many_windows_gives_each_window_its_own_answer(
    table: pd.DataFrame, model: object
) -> None:
    windows = [table.iloc[100:130], table.iloc[0:7], table.iloc[500:600]]
    together = checks.in_one_call(lambda rows: logged(model, rows), windows)
    for alone, part in zip((logged(model, rows) for rows in windows), together, strict=True):
        pd.testing.assert_frame_equal(part, alone)  # index from 0 again, as a window's own
    arrays = checks.in_one_call(lambda rows: rows["temp"].to_numpy(), windows)
    assert [a.tolist() for a in arrays] == [w["temp"].tolist() for w in windows]
    # asked as one frame numbered from 0, whatever the windows' own index
    numbers = checks.in_one_call(lambda rows: rows.index.to_numpy(), windows)
    assert [n.tolist() for n in numbers] == [list(range(30)), list(range(30, 37)),
                                             list(range(37, 137))]  # fmt: skip
    assert checks.in_one_call(lambda rows: 1 / 0, []) == []


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
    # whole: at most a twentieth of the window, or an hour, past the last row
    daily = pd.DataFrame({"time": pd.date_range("2024-01-01", "2024-01-20", freq="D")})
    assert [len(w) for w in checks.time_windows(daily, 20, "time")] == [20]
    assert checks.time_windows(daily.head(19), 20, "time") == []
    hourly = pd.DataFrame({"time": pd.date_range("2024-01-01", periods=12, freq="h")})
    assert [len(w) for w in checks.time_windows(hourly, 0.5, "time")] == [12]
    assert checks.time_windows(hourly.head(11), 0.5, "time") == []  # its last hour missing
