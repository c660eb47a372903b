"""Calibration of the monitor's limits (calibrate.py), on small synthetic data: the statistics
of the rule, the folds, and a calibrated monitor that stays quiet on new normal windows and
alarms on a fault."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from benchmarks.monitor_windows import synthetic_table
from threadpoolctl import threadpool_limits

from gitml.config import PROJ_ROOT
from gitml.monitoring import calibrate, checks
from gitml.pipeline.train import build_pipeline

FEATURES = ["hr", "weekday", "weather", "workingday", "temp", "hum"]
PARAMS = {"categorical": ["hr", "weekday", "weather"], "numeric": ["workingday", "temp", "hum"]}
LIGHT = {"model": "hist_gradient_boosting", "seed": 0,
         "hyperparams": {"hist_gradient_boosting": {"max_iter": 40, "loss": "poisson"}}}  # fmt: skip
SETTINGS = {"window_days": 7, "min_rows": 100, "false_alarm_rate": 0.05,
            "calibration_folds": 3, "alarm_on": ["data_drift", "quality"]}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The parts of the calibration called alone run as calibrate.backtest runs them."""
    with threadpool_limits(calibrate.threads()):
        yield


def light_refit(rows: pd.DataFrame) -> Any:
    return build_pipeline(PARAMS, LIGHT, "cpu").fit(rows[FEATURES], rows["demand"])


DATA = calibrate.Dataset(FEATURES, PARAMS["categorical"], "demand", "time", light_refit)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    # 22 weeks without a yearly season (new weeks are like old ones): 16 to train on, 2 to
    # test, 4 to judge
    return synthetic_table(days=154, season=0.0)


@pytest.fixture(scope="module")
def calibrated(table: pd.DataFrame) -> dict[str, Any]:
    train, test = table[table["time"] < "2022-04-23"], table[table["time"] < "2022-05-07"]
    test = test[test["time"] >= "2022-04-23"]
    model = light_refit(train)
    record, errors = calibrate.calibrate(train, test, model, DATA, SETTINGS, ["hr", "workingday"])
    return {"record": record, "errors": errors, "model": model, "train": train}


def test_the_spread_is_the_mean_distance_past_the_median_on_the_side_that_alarms() -> None:
    values = np.array([1.0, 2.0, 3.0, 5.0, 9.0])
    assert calibrate.spread(values, 0.0) == (3.0, 4.0, 2)  # (2 + 6) / 2
    assert calibrate.spread(np.array([0.5, 0.5, 0.5]), 0.01) == (0.5, 0.01, 0)


def test_a_share_s_spread_is_at_least_one_row_and_others_are_never_zero() -> None:
    assert calibrate.floor_of(checks.statistic("temp", checks.MODE_SHARE), 200) == 1 / 200
    assert 0 < calibrate.floor_of(checks.statistic("temp", checks.DISTANCE), 200) < 1e-6
    assert 0 < calibrate.floor_of(checks.ERROR_RATIO, 200) < 1e-6


@pytest.mark.parametrize(("statistics", "rate", "windows", "measured"),
                         [(1, 0.05, 20, 9), (18, 0.025, 19, 8), (4, 0.05, 30, 15)])  # fmt: skip
def test_the_level_is_the_prediction_bound_for_the_next_window(
    statistics: int, rate: float, windows: int, measured: int
) -> None:
    c = calibrate.level(statistics, rate, windows, measured)
    past_median = (measured + 1) / (windows + 1)
    beyond = (1 + c / measured) ** -measured  # the excess past c spreads, F(2, 2m)
    assert c > 0 and past_median * beyond == pytest.approx(rate / statistics)


def test_with_no_window_past_the_median_the_level_counts_one() -> None:
    c = calibrate.level(1, 0.05, 10, 0)
    assert (2 / 11) / (1 + c) == pytest.approx(0.05)


def test_a_check_s_limits_come_from_the_statistics_measured_in_half_the_windows_or_more() -> None:
    nan = float("nan")
    table = pd.DataFrame({
        "always": [1.0, 2, 3, 5, 9, 1, 2, 3, 4, 2],
        "half": [1.0, 2, 3, 5, 9, nan, nan, nan, nan, nan],
        "seldom": [1.0, 2, 3, 5, nan, nan, nan, nan, nan, nan],
    })  # fmt: skip
    found = calibrate.calibrate_check(table, 0.05, rows=100)
    assert found["rate"] == 0.05 and found["windows"] == 10
    assert set(found["limits"]) == {"always", "half"}
    center, scale, measured = calibrate.spread(np.array([1.0, 2, 3, 5, 9]), 1e-9)
    high = center + calibrate.level(2, 0.05, 10, measured) * scale
    assert found["limits"]["half"] == pytest.approx({"center": center, "scale": scale,
                                                     "high": high})  # fmt: skip
    # three windows: one value is half of them, rounded down
    assert set(calibrate.calibrate_check(table.head(3)[["seldom"]].assign(seldom=[1.0, nan, nan]),
                                         0.05, rows=100)["limits"]) == {"seldom"}  # fmt: skip


def false_alarms(draw: Any, rate: float, statistics: int = 4, windows: int = 30) -> float:
    """Calibrate on `windows` draws of `statistics` statistics, judge 50 fresh ones; the share
    alarmed, averaged over 300 calibrations."""
    names, fired = [f"s{i}" for i in range(statistics)], []
    for _ in range(300):
        limits = calibrate.calibrate_check(pd.DataFrame(draw(windows), columns=names), rate,
                                           rows=1000)["limits"]  # fmt: skip
        high = np.array([limits[name]["high"] for name in names])
        fired.append(float((draw(50) > high).any(axis=1).mean()))
    return float(np.mean(fired))


def test_limits_hold_the_rate_on_new_windows_whose_tails_are_exponential_or_lighter() -> None:
    rng, rate = np.random.default_rng(0), 0.05

    def laplace(n: int) -> np.ndarray:  # exponential past the median, as the rule assumes
        return rng.choice([-1.0, 1.0], size=(n, 4)) * rng.exponential(1.0, (n, 4))

    # the prediction bound takes the median as known past it: its noise costs about a tenth
    # of the rate with 30 windows (a limit set as if the spread were known too: 8 % for 5 %)
    assert 0.5 * rate < false_alarms(laplace, rate) < 1.15 * rate
    assert false_alarms(lambda n: rng.normal(size=(n, 4)), rate) < rate  # lighter tails


def test_the_rate_is_split_between_the_checks_that_alarm() -> None:
    rates = calibrate.rates(SETTINGS)
    assert rates == {"data_drift": 0.025, "prediction_drift": 0.05, "quality": 0.025}
    assert calibrate.rates({**SETTINGS, "alarm_on": ["quality"]})["quality"] == 0.05
    with pytest.raises(ValueError, match=r"monitor.alarm_on: unknown \['weather'\]"):
        calibrate.rates({**SETTINGS, "alarm_on": ["weather"]})
    for outside in (5, 1, 0):
        with pytest.raises(ValueError, match=r"monitor\.false_alarm_rate must be between 0 and 1"):
            calibrate.rates({**SETTINGS, "false_alarm_rate": outside})


def test_each_fold_is_judged_by_a_model_that_never_saw_it_or_the_day_beside_it(
    table: pd.DataFrame,
) -> None:
    seen: list[pd.DataFrame] = []

    def recording(rows: pd.DataFrame) -> Any:
        seen.append(rows)
        return light_refit(rows)

    train = table[table["time"] < "2022-03-05"]  # 9 weeks
    test = table[(table["time"] >= "2022-03-05") & (table["time"] < "2022-03-19")]
    model = light_refit(train)
    data = calibrate.Dataset(FEATURES, PARAMS["categorical"], "demand", "time", recording)
    held = calibrate.held_out_windows(train, test, model, data, days=7, folds=3)
    in_time = sorted(held, key=lambda w: w.rows["time"].min())
    assert [w.group for w in in_time] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3]  # interleaved
    assert [w.split for w in held].count("test") == 2 and held[-1].model is model
    for window in held[:-2]:
        fitted = seen[window.group]["time"]
        first, last = window.rows["time"].min(), window.rows["time"].max()
        gap = np.minimum((fitted - first).abs(), (fitted - last).abs())
        assert fitted.between(first, last).sum() == 0 and gap.min() > pd.Timedelta(days=1)
        assert len(window.reference) == len(seen[window.group])


def test_each_window_is_logged_and_expected_by_the_models_of_its_group(
    table: pd.DataFrame,
) -> None:
    train = table[table["time"] < "2022-03-05"]  # 9 weeks, 3 folds, and 2 test weeks
    test = table[(table["time"] >= "2022-03-05") & (table["time"] < "2022-03-19")]
    model = light_refit(train)
    settings = {**SETTINGS, "min_rows": 24 * 7}  # every window has exactly that many rows
    held, found, errors = calibrate.backtest(train, test, model, DATA, settings)
    assert [w.statistics for w in held] == found and len(held) == 9 + 2
    for window in held:
        alone = checks.as_logged(window.model, window.rows, FEATURES, "demand", "time")
        pd.testing.assert_frame_equal(window.logged, alone)
        others = pd.concat([w.logged for w in held if w.group != window.group])
        refitted = checks.error_model(others, FEATURES, PARAMS["categorical"])
        expected = checks.expected_error(refitted, window.logged)
        np.testing.assert_allclose(window.expected, expected)
        assert window.statistics == checks.measure(window.reference, window.logged, expected,
                                                   FEATURES, PARAMS["categorical"], 24 * 7)  # fmt: skip
        assert checks.QUALITY in window.statistics
    everything = checks.error_model(pd.concat([w.logged for w in held]), FEATURES,
                                    PARAMS["categorical"])  # fmt: skip
    np.testing.assert_allclose(checks.expected_error(errors, held[0].logged),
                               checks.expected_error(everything, held[0].logged))  # fmt: skip


def test_the_calibration_runs_on_one_thread_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert calibrate.threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert calibrate.threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert calibrate.threads() == 3


def test_settings_calibration_cannot_work_with_are_named(table: pd.DataFrame) -> None:
    train, test = table.head(24 * 28), table.iloc[24 * 28 : 24 * 35]
    with pytest.raises(ValueError, match=r"monitor\.window_days=7 .* calibration needs 8"):
        calibrate.backtest(train, test, None, DATA, SETTINGS)  # said before any refit
    with pytest.raises(ValueError, match=r"monitor\.calibration_folds=1: at least 2"):
        calibrate.backtest(train, test, None, DATA, {**SETTINGS, "calibration_folds": 1})


class Reached(Exception):
    """The calibration got past its checks of the settings to its first refit."""


def test_two_folds_and_eight_windows_of_min_rows_are_enough(table: pd.DataFrame) -> None:
    def first_refit(rows: pd.DataFrame) -> Any:
        raise Reached

    data = calibrate.Dataset(FEATURES, PARAMS["categorical"], "demand", "time", first_refit)
    week = 24 * 7
    train, test = table.head(6 * week), table.iloc[6 * week : 8 * week]
    settings = {**SETTINGS, "calibration_folds": 2, "min_rows": week}
    assert calibrate.MIN_WINDOWS == 8
    with pytest.raises(Reached):
        calibrate.backtest(train, test, None, data, settings)
    with pytest.raises(ValueError, match="calibration needs 8"):  # a row short in one window
        calibrate.backtest(train.iloc[1:], test, None, data, settings)


def test_the_record_says_what_was_calibrated_and_how_it_did(calibrated: dict[str, Any]) -> None:
    record = calibrated["record"]
    assert [w["split"] for w in record["windows"]].count("train") == 16
    assert [w["split"] for w in record["windows"]].count("test") == 2
    assert record["folds"] == SETTINGS["calibration_folds"]
    assert record["window_days"] == 7 and record["alarm_on"] == SETTINGS["alarm_on"]
    assert record["false_alarm_rate"] == SETTINGS["false_alarm_rate"]
    first = min(record["windows"], key=lambda w: w["from"])
    assert first == {**first, "split": "train", "fold": 0, "from": "2022-01-01", "rows": 24 * 7}
    rates = calibrate.rates(SETTINGS)
    for name, check in record["checks"].items():
        assert check["rate"] == rates[name] and check["windows"] == 18
    drift = record["checks"]["data_drift"]["limits"]
    assert set(drift) == {checks.statistic(f, k) for f in FEATURES
                          for k in (checks.DISTANCE, checks.MODE_SHARE)}  # fmt: skip
    error = record["checks"]["quality"]["limits"][checks.ERROR_RATIO]
    assert error["center"] < error["high"]
    assert set(record["test"]) == {"relative_error", "skill"}


def judge(calibrated: dict[str, Any], rows: pd.DataFrame) -> dict[str, bool]:
    model, train = calibrated["model"], calibrated["train"]
    reference = checks.as_logged(model, train, FEATURES, "demand", "time")
    window = checks.as_logged(model, rows, FEATURES, "demand", "time")
    expected = checks.expected_error(calibrated["errors"], window)
    found = checks.measure(reference, window, expected, FEATURES, PARAMS["categorical"],
                           SETTINGS["min_rows"])  # fmt: skip
    return calibrate.alarms(found, calibrated["record"]["checks"])


def test_new_normal_weeks_stay_quiet_and_faults_alarm(
    table: pd.DataFrame, calibrated: dict[str, Any]
) -> None:
    later = [w for w in checks.time_windows(table[table["time"] >= "2022-05-07"], 7, "time")]
    quiet = [judge(calibrated, rows) for rows in later]
    assert not any(v for found in quiet for name, v in found.items()
                   if name in SETTINGS["alarm_on"])  # fmt: skip
    week = later[0]
    busier = judge(calibrated, week.assign(demand=week["demand"] * 1.5))
    assert busier["quality"] and not busier["data_drift"]  # the features did not move
    stuck = judge(calibrated, week.assign(temp=calibrated["train"]["temp"].median()))
    assert stuck["data_drift"]
    swapped = judge(calibrated, week.assign(hr=week["hr"].replace({8: 17})))
    assert swapped["data_drift"]


def test_the_left_out_rate_counts_windows_judged_by_limits_calibrated_without_them() -> None:
    quiet = [{"quality": {"error_ratio": 1.0 + 0.01 * i}} for i in range(10)]
    odd = {"quality": {"error_ratio": 100.0}}
    settings = {**SETTINGS, "alarm_on": ["quality"]}
    rates = calibrate.left_out_rates([*quiet, odd], settings, rows=100)
    assert rates == {"quality": round(1 / 11, 4), "alarm": round(1 / 11, 4)}
    # a check in alarm_on that no window measured raises nothing
    assert calibrate.left_out_rates([*quiet, odd], SETTINGS, rows=100) == rates


def test_a_window_is_judged_on_the_checks_both_it_and_the_calibration_have() -> None:
    calibrated = calibrate.thresholds(
        [{"data_drift": {"a": 1.0 + i}, "quality": {"error_ratio": 1.0}} for i in range(10)],
        SETTINGS, rows=100,
    )  # fmt: skip
    assert set(calibrated) == {"data_drift", "quality"}  # prediction drift was never measured
    unlabelled = {"data_drift": {"a": 100.0}, "prediction_drift": {"prediction distance": 9.0}}
    assert calibrate.alarms(unlabelled, calibrated) == {"data_drift": True}


def test_the_test_split_s_figures_are_its_relative_error_and_skill(
    calibrated: dict[str, Any], table: pd.DataFrame
) -> None:
    from gitml.pipeline.evaluate import seasonal_baseline

    train, model = calibrated["train"], calibrated["model"]
    test = table[(table["time"] >= "2022-04-23") & (table["time"] < "2022-05-07")]
    error = np.abs(model.predict(test[FEATURES]) - test["demand"]).sum()
    baseline = seasonal_baseline(train, test, ["hr", "workingday"], "demand")
    assert calibrate.test_references(train, test, model, DATA, ["hr", "workingday"]) == {
        "relative_error": round(error / test["demand"].sum(), 4),
        "skill": round(error / np.abs(baseline - test["demand"]).sum(), 4),
    }
    assert calibrated["record"]["test"] == calibrate.test_references(
        train, test, model, DATA, ["hr", "workingday"]
    )


def test_the_record_keeps_six_significant_digits() -> None:
    found = calibrate._significant({"a": [1.23456789, 2, "x"], "b": {"c": 0.000123456789}})
    assert found == {"a": [1.23457, 2, "x"], "b": {"c": 0.000123457}}


def test_the_categories_are_params_and_the_spec_s() -> None:
    from gitml.schema import FEATURES as SPEC

    kinds = {name: column.kind for name, column in SPEC.items()}
    by_spec = [name for name in SPEC if kinds[name] in ("category", "text", "bool")]
    assert calibrate.categorical_features({"categorical": []}) == by_spec
    numeric = [name for name in SPEC if name not in by_spec]
    chosen = calibrate.categorical_features({"categorical": numeric[:1]})
    assert chosen == [name for name in SPEC if name in {*by_spec, *numeric[:1]}]


def test_text_and_bool_features_are_judged_as_categories(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset spec of its own may hold text and bool features (the input schema takes them):
    their values are labels, not numbers."""
    from gitml.columns import Column

    spec = {"note": Column("text"), "temp": Column("float"), "flag": Column("bool")}
    monkeypatch.setattr(calibrate, "FEATURES", spec)
    assert calibrate.categorical_features({"categorical": []}) == ["note", "flag"]


def test_the_project_s_dataset_is_the_spec_refitted_as_train_fits(
    splits: dict[str, pd.DataFrame],
) -> None:
    from gitml.config import load_params
    from gitml.dataset import TARGET, TIME
    from gitml.pipeline.train import fit
    from gitml.schema import FEATURES as SPEC

    data = calibrate.project_dataset()
    assert (data.features, data.target, data.time) == (list(SPEC), TARGET, TIME)
    assert data.categorical == calibrate.categorical_features(load_params("features"))
    rows = splits["train"].head(500)
    expected = fit(rows, load_params("features"), load_params("train"))[0].predict(rows)
    np.testing.assert_allclose(data.refit(rows).predict(rows), expected)


def test_the_calibration_is_saved_with_the_hashes_of_its_model_and_error_model(
    tmp_path: Path,
) -> None:
    import hashlib
    import json

    model = tmp_path / "model.joblib"
    model.write_bytes(b"a model")
    calibrate.save({"checks": {}}, {"an": "error model"}, model, tmp_path / "out")
    record = json.loads((tmp_path / "out" / calibrate.CALIBRATION_FILE).read_text())
    errors = tmp_path / "out" / calibrate.ERRORS_FILE
    assert joblib.load(errors) == {"an": "error model"}
    assert record == {"checks": {}, "model_md5": hashlib.md5(b"a model").hexdigest(),
                      "errors_md5": hashlib.md5(errors.read_bytes()).hexdigest()}  # fmt: skip


def test_the_command_says_why_it_cannot_calibrate_and_writes_nothing(tmp_path: Path) -> None:
    # the project's spec and params, on splits too short for their windows
    from gitml.dataset import TIME

    days = pd.date_range("2011-01-01", periods=24 * 20, freq="h")
    raw = {"train": days[: 24 * 15], "test": days[24 * 15 :]}
    for name, when in raw.items():
        pd.DataFrame({TIME: when}).to_parquet(tmp_path / f"{name}.parquet")
    joblib.dump("a model", tmp_path / "model.joblib")
    result = subprocess.run(
        [sys.executable, "-m", "gitml", "calibrate", "--splits-dir", str(tmp_path), "--model",
         str(tmp_path / "model.joblib"), "--out", str(tmp_path / "out")],
        cwd=PROJ_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "monitor.window_days=" in result.stderr and "calibration needs" in result.stderr
    assert not (tmp_path / "out").exists()
