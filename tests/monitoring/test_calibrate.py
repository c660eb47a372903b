"""Calibration of the monitor's limits (calibrate.py), on small synthetic data: the statistics
of the rule, the folds, and a calibrated monitor that stays quiet on new normal windows and
alarms on a fault."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from benchmarks.monitor_windows import synthetic_table

from gitml.config import PROJ_ROOT
from gitml.monitoring import calibrate, checks
from gitml.pipeline.train import build_pipeline

FEATURES = ["hr", "weekday", "weather", "workingday", "temp", "hum"]
PARAMS = {"categorical": ["hr", "weekday", "weather"], "numeric": ["workingday", "temp", "hum"]}
LIGHT = {"model": "hist_gradient_boosting", "seed": 0,
         "hyperparams": {"hist_gradient_boosting": {"max_iter": 40, "loss": "poisson"}}}  # fmt: skip
SETTINGS = {"window_days": 7, "min_rows": 100, "false_alarm_rate": 0.05,
            "calibration_folds": 3, "alarm_on": ["data_drift", "quality"]}  # fmt: skip


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
    with pytest.raises(ValueError, match=r"monitor\.false_alarm_rate must be between 0 and 1"):
        calibrate.rates({**SETTINGS, "false_alarm_rate": 5})


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


def test_settings_calibration_cannot_work_with_are_named(table: pd.DataFrame) -> None:
    train, test = table.head(24 * 28), table.iloc[24 * 28 : 24 * 35]
    with pytest.raises(ValueError, match=r"monitor\.window_days=7 .* calibration needs 8"):
        calibrate.backtest(train, test, None, DATA, SETTINGS)  # said before any refit
    with pytest.raises(ValueError, match=r"monitor\.calibration_folds=1: at least 2"):
        calibrate.backtest(train, test, None, DATA, {**SETTINGS, "calibration_folds": 1})


def test_the_record_says_what_was_calibrated_and_how_it_did(calibrated: dict[str, Any]) -> None:
    record = calibrated["record"]
    assert [w["split"] for w in record["windows"]].count("train") == 16
    assert [w["split"] for w in record["windows"]].count("test") == 2
    assert record["folds"] == SETTINGS["calibration_folds"]
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
    found = checks.measure(reference, window, calibrated["errors"], FEATURES,
                           PARAMS["categorical"], SETTINGS["min_rows"])  # fmt: skip
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
