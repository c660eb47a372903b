"""Monitoring on real data: the example's model calibrated as `make calibrate` does, judged on
windows of its own splits and on real prediction logs; clear errors for logs and calibrations
that cannot be used."""

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import joblib
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gitml.config import PROJ_ROOT, load_params
from gitml.dataset import TARGET, TIME
from gitml.monitoring import calibrate, checks
from gitml.monitoring.monitor import (
    drift_report,
    event_window,
    judge,
    push_verdict,
    run,
    verdict,
)
from gitml.ports import free_port
from gitml.schema import EVENT_TIME, FEATURES, as_model_input
from gitml.serving.predlog import LogError, PredictionLog, write_actuals
from tests.example_data import example_only


@pytest.fixture(scope="module")
def settings() -> dict[str, Any]:
    # three refitted folds, not params' five: the same calibration in half the time
    return {**load_params("monitor"), "calibration_folds": 3}


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, trained_model: Any, splits: dict[str, pd.DataFrame],
    params: dict[str, Any], settings: dict[str, Any],
) -> Path:  # fmt: skip
    """The splits, the model and its calibration, where `make` would put them."""
    home = tmp_path_factory.mktemp("monitored")
    for name, frame in splits.items():
        frame.to_parquet(home / f"{name}.parquet")
    joblib.dump(trained_model, home / "model.joblib")
    record, errors = calibrate.calibrate(splits["train"], splits["test"], trained_model,
                                         calibrate.project_dataset(), settings,
                                         params["evaluate"]["baseline_keys"])  # fmt: skip
    calibrate.save(record, errors, home / "model.joblib", home / "calibration")
    return home


@pytest.fixture(scope="module")
def context(trained_model: Any, splits: dict[str, pd.DataFrame], home: Path) -> dict[str, Any]:
    data = calibrate.project_dataset()
    return {
        "data": data,
        "reference": checks.as_logged(trained_model, splits["train"], data.features, TARGET,
                                      TIME),
        "calibration": json.loads((home / "calibration" / calibrate.CALIBRATION_FILE).read_text()),
        "errors": joblib.load(home / "calibration" / calibrate.ERRORS_FILE),
    }  # fmt: skip


def judged(model: Any, rows: pd.DataFrame, context: dict[str, Any], settings: Any) -> Any:
    """A window of a split as `run` judges it: (findings, alarms)."""
    data = context["data"]
    window = checks.as_logged(model, rows, data.features, TARGET, TIME)
    found = checks.measure(context["reference"], window, context["errors"], data.features,
                           data.categorical, settings["min_rows"])  # fmt: skip
    return judge(found, window, context["calibration"], None, settings)


def windows(split: pd.DataFrame, settings: Any) -> list[pd.DataFrame]:
    return checks.time_windows(split, settings["window_days"], TIME)


def test_the_test_split_windows_stay_quiet_and_a_demand_rise_in_them_does_not(
    trained_model: Any, splits: dict[str, pd.DataFrame], context: dict[str, Any], settings: Any
) -> None:
    for rows in windows(splits["test"], settings):
        assert judged(trained_model, rows, context, settings)[1] == []
        busier = rows.assign(**{TARGET: rows[TARGET] * 1.5})
        findings, alarms = judged(trained_model, busier, context, settings)
        assert alarms == ["quality"], findings["quality"]
        assert findings["quality"]["bias"] < 0  # the model now predicts too little


@example_only
def test_the_unseen_season_raises_a_quality_alarm(
    trained_model: Any, splits: dict[str, pd.DataFrame], context: dict[str, Any], settings: Any
) -> None:
    # the last weeks of the year are far colder and quieter than any month the model knew
    last = windows(splits["production"], settings)[-1]
    assert judged(trained_model, last, context, settings)[1] == ["quality"]
    whole = judged(trained_model, splits["production"], context, settings)  # what replay sends
    assert whole[1] == ["quality"]


@example_only
def test_a_feed_without_nights_and_weekends_is_data_drift_even_without_actuals(
    trained_model: Any, splits: dict[str, pd.DataFrame], context: dict[str, Any], settings: Any
) -> None:
    june = splits["train"][splits["train"][TIME].dt.month == 6]
    office_hours = june[june["hr"].between(7, 19) & (june["workingday"] == 1)]
    unlabelled = office_hours.assign(**{TARGET: float("nan")})  # only drift can speak
    findings, alarms = judged(trained_model, unlabelled, context, settings)
    assert alarms == ["data_drift"]
    assert {"hr", "weekday", "workingday"} <= set(findings["data_drift"]["drifted_features"])
    assert "monitor.min_rows" in findings["quality"]["note"]


def test_quality_is_judged_only_from_min_rows_labelled_rows(
    trained_model: Any, splits: dict[str, pd.DataFrame], context: dict[str, Any], settings: Any
) -> None:
    rows = splits["test"].head(settings["min_rows"] + 20)
    enough = rows.assign(**{TARGET: rows[TARGET].astype(float)})
    enough.iloc[:20, enough.columns.get_loc(TARGET)] = float("nan")
    assert "error_ratio" in judged(trained_model, enough, context, settings)[0]["quality"]
    enough.iloc[20, enough.columns.get_loc(TARGET)] = float("nan")  # one short of min_rows
    too_few = judged(trained_model, enough, context, settings)[0]["quality"]
    assert too_few == {"detected": False, "labelled_rows": settings["min_rows"] - 1,
                       "note": too_few["note"]}  # fmt: skip
    assert "monitor.min_rows" in too_few["note"]


def test_evidently_s_drift_report_tests_the_calibrated_limits(
    trained_model: Any, splits: dict[str, pd.DataFrame], context: dict[str, Any], settings: Any
) -> None:
    data, calibration = context["data"], context["calibration"]
    window = checks.as_logged(trained_model, windows(splits["test"], settings)[0], data.features,
                              TARGET, TIME)  # fmt: skip
    snapshot = drift_report(context["reference"], window, data.categorical,
                            calibration["checks"]).dict()  # fmt: skip
    limits = calibration["checks"][checks.DATA_DRIFT]["limits"]
    shown = {m["config"]["column"]: m for m in snapshot["metrics"]
             if m["config"]["type"].endswith(":ValueDrift")}  # fmt: skip
    for name in FEATURES:
        statistic = checks.statistic(name, checks.DISTANCE)
        assert shown[name]["config"]["threshold"] == pytest.approx(limits[statistic]["high"])
        ours = checks.distance(context["reference"][name], window[name], name in data.categorical)
        assert float(shown[name]["value"]) == pytest.approx(ours)


def test_an_unknown_finding_in_alarm_on_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"monitor.alarm_on: unknown \['weather'\]"):
        verdict({}, ["quality", "weather"])


def write_log(
    directory: Path, frame: pd.DataFrame, model: Any, when: datetime, events: bool = False
) -> list[str]:
    """The rows as a server would have logged them, one request per row (with the row's time
    as its event time when `events`)."""
    log = PredictionLog(directory / "predictions", "v9.9.9", instance="pod")
    rows = json.loads(frame[list(FEATURES)].to_json(orient="records"))
    if events:
        times = frame[TIME].dt.tz_localize(UTC)
        rows = [{**row, EVENT_TIME: t.isoformat()} for row, t in zip(rows, times, strict=True)]
    ids = [f"req-{i}" for i in range(len(rows))]
    for request_id, row, prediction in zip(
        ids, rows, model.predict(frame[list(FEATURES)]), strict=True
    ):
        log.append(request_id, [row], [prediction], now=when)
    log.close()
    return ids


def logged_with_actuals(directory: Path, rows: pd.DataFrame, model: Any, **how: Any) -> Path:
    """A log of the rows and their actuals under `directory`; returns the log's directory."""
    ids = write_log(directory, rows, model, datetime.now(UTC), **how)
    write_actuals(directory / "actuals" / "a.jsonl",
                  [(i, 0, float(y)) for i, y in zip(ids, rows[TARGET], strict=True)])  # fmt: skip
    return directory / "predictions"


def monitored(home: Path, logs: Path, out: Path, settings: Any, params: Any) -> dict[str, Any]:
    return run(logs, logs.parent / "actuals", settings["window_days"], None, out, settings,
               params["features"], model_path=home / "model.joblib", splits_dir=home,
               calibration_dir=home / "calibration",
               baseline_keys=params["evaluate"]["baseline_keys"])  # fmt: skip


def test_run_writes_reports_summary_and_metrics_from_a_real_log(
    tmp_path: Path, home: Path, trained_model: Any, splits: dict[str, pd.DataFrame],
    params: dict[str, Any], settings: dict[str, Any],
) -> None:  # fmt: skip
    # a test-split fortnight whose demand rose by half: the quality check must say so
    window = windows(splits["test"], settings)[-1]
    busier = window.assign(**{TARGET: window[TARGET] * 1.5})
    out = tmp_path / "reports"
    summary = monitored(home, logged_with_actuals(tmp_path, busier, trained_model), out,
                        settings, params)  # fmt: skip
    assert summary["alarm"] is True and summary["alarms"] == ["quality"]
    assert summary["rows"] == len(window) and summary["model_versions"] == ["v9.9.9"]
    assert summary["quality"]["labelled_rows"] == len(window)
    assert summary["calibration"]["windows"] == len(
        json.loads((home / "calibration" / calibrate.CALIBRATION_FILE).read_text())["windows"]
    )
    assert json.loads((out / "summary.json").read_text()) == summary
    drift_html, quality_html = ((out / n).read_text() for n in ("drift.html", "quality.html"))
    assert all(name in drift_html for name in FEATURES)  # evidently's per-feature drift tables
    assert "MAE" in quality_html
    body = (out / "summary.md").read_text()
    assert "**Action needed**: quality" in body
    assert (
        f"| error ratio: absolute error / expected | {summary['quality']['error_ratio']:.2f}"
        in body
    )
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make monitor-tools` (Debian package prometheus)"
    metrics = (out / "monitor.prom").read_text()
    check = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True,
                           text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "gitml_monitor_alarm 1.0" in metrics


def test_a_replayed_stream_is_judged_by_its_event_days_with_its_bias(
    tmp_path: Path, home: Path, trained_model: Any, splits: dict[str, pd.DataFrame],
    params: dict[str, Any], settings: dict[str, Any],
) -> None:  # fmt: skip
    # the whole production stream served within a minute, as `make replay` does
    stream = splits["production"].sort_values(TIME)
    logs = logged_with_actuals(tmp_path, stream, trained_model, events=True)
    summary = monitored(home, logs, tmp_path / "out", settings, params)
    last = stream[TIME].max()
    judged_rows = stream[stream[TIME] > last - timedelta(days=settings["window_days"])]
    assert summary["rows"] == len(judged_rows)
    assert summary["window"] == {"from": judged_rows[TIME].min().tz_localize(UTC).isoformat(),
                                 "to": last.tz_localize(UTC).isoformat()}  # fmt: skip
    days = sorted(judged_rows[TIME].dt.strftime("%Y-%m-%d").unique())
    assert list(summary["quality"]["daily_relative_error"]) == days
    predicted = trained_model.predict(as_model_input(judged_rows))
    bias = (predicted - judged_rows[TARGET]).sum() / judged_rows[TARGET].sum()
    assert summary["quality"]["bias"] == pytest.approx(bias, abs=1e-4)
    shown = f"| bias: (predicted - actual) / actual | {summary['quality']['bias']:+.1%} |"
    assert shown in (tmp_path / "out" / "summary.md").read_text()


def test_an_explicit_window_end_without_an_offset_is_utc() -> None:
    end = datetime(2024, 5, 1, 8)
    assert event_window(pd.DataFrame(), 14, end) == (
        datetime(2024, 4, 17, 8, tzinfo=UTC),
        datetime(2024, 5, 1, 8, tzinfo=UTC),
    )


def test_a_window_under_min_rows_is_not_judged(
    tmp_path: Path, home: Path, trained_model: Any, splits: dict[str, pd.DataFrame],
    params: dict[str, Any], settings: dict[str, Any],
) -> None:  # fmt: skip
    settings = {**settings, "min_rows": 5}
    out = tmp_path / "out"
    out.mkdir()
    hours = splits["production"].head(settings["min_rows"])

    def judge_window(rows: int) -> dict[str, Any]:
        logs = tmp_path / f"logs-{rows}"
        write_log(logs, hours.head(rows), trained_model, datetime.now(UTC))
        return run(logs / "predictions", None, 1, None, out, settings, params["features"],
                   model_path=home / "model.joblib", splits_dir=home,
                   calibration_dir=home / "calibration")  # fmt: skip

    assert judge_window(settings["min_rows"])["rows"] == settings["min_rows"]
    with pytest.raises(LogError, match=r"4 predictions in the window, .*monitor\.min_rows=5"):
        judge_window(settings["min_rows"] - 1)
    assert not (out / "summary.json").exists()  # the earlier verdict is not left standing


def test_a_calibration_made_for_another_model_or_settings_is_refused(
    tmp_path: Path, home: Path, trained_model: Any, splits: dict[str, pd.DataFrame],
    params: dict[str, Any], settings: dict[str, Any],
) -> None:  # fmt: skip
    logs = logged_with_actuals(tmp_path, windows(splits["test"], settings)[0], trained_model)
    other = tmp_path / "other.joblib"
    joblib.dump({"not": "the calibrated model"}, other)
    with pytest.raises(
        ValueError, match=r"calibrated for another other\.joblib: run `make calibrate`"
    ):
        run(logs, None, 14, None, tmp_path / "out", settings, params["features"],
            model_path=other, splits_dir=home, calibration_dir=home / "calibration")  # fmt: skip
    other_rate = {**settings, "false_alarm_rate": settings["false_alarm_rate"] / 2}
    with pytest.raises(ValueError, match=r"for monitor\.false_alarm_rate=.*run `make calibrate`"):
        run(logs, None, 14, None, tmp_path / "out", other_rate, params["features"],
            model_path=home / "model.joblib", splits_dir=home,
            calibration_dir=home / "calibration")  # fmt: skip
    with pytest.raises(
        FileNotFoundError, match=r"calibration\.json is missing: run `make calibrate`"
    ):
        run(logs, None, 14, None, tmp_path / "out", settings, params["features"],
            model_path=home / "model.joblib", splits_dir=home,
            calibration_dir=tmp_path / "none")  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no prediction records"),
        ("{oops\n", r"pod\.jsonl:1: not a JSON line"),
    ],
)
def test_the_command_rejects_empty_or_malformed_logs(
    tmp_path: Path, content: str, message: str
) -> None:
    day = tmp_path / "logs" / "2026-11-23"
    day.mkdir(parents=True)
    (day / "pod.jsonl").write_text(content)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")  # an earlier run's: must not pass for this one
    result = subprocess.run(
        [sys.executable, "-m", "gitml", "monitor", "--logs", str(tmp_path / "logs"),
         "--out", str(out)],
        cwd=PROJ_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert pd.Series([result.stderr]).str.contains(message).all(), result.stderr
    assert not (out / "summary.json").exists()


@pytest.fixture
def pushgateway() -> Iterator[str]:
    """A real Prometheus Pushgateway on a free loopback port."""
    binary = shutil.which("prometheus-pushgateway")
    assert binary, "the Pushgateway is missing: run `make monitor-tools`"
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen([binary, f"--web.listen-address={address}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://{address}/-/ready", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_verdict_reaches_a_pushgateway_per_environment(pushgateway: str) -> None:
    summary = {"alarm": True, "data_drift": {"share": 0.25},
               "generated_at": "2026-11-23T05:17:00+00:00"}  # fmt: skip
    push_verdict(summary, pushgateway, "staging")
    push_verdict({**summary, "alarm": False}, pushgateway, "production")
    scraped = {
        (s.name, s.labels.get("environment")): s.value
        for family in text_string_to_metric_families(
            httpx.get(f"http://{pushgateway}/metrics").text
        )
        for s in family.samples
        if s.labels.get("job") == "gitml-monitor"
    }
    assert scraped[("gitml_monitor_alarm", "staging")] == 1
    assert scraped[("gitml_monitor_alarm", "production")] == 0
    assert scraped[("gitml_monitor_drift_share", "staging")] == 0.25
    assert (
        scraped[("gitml_monitor_last_run_timestamp_seconds", "staging")]
        == datetime.fromisoformat(summary["generated_at"]).timestamp()
    )


def test_an_unreachable_pushgateway_is_an_error() -> None:
    summary = {
        "alarm": False,
        "data_drift": {"share": 0.0},
        "generated_at": "2026-11-23T05:17:00+00:00",
    }
    with pytest.raises(OSError):
        push_verdict(summary, f"127.0.0.1:{free_port()}", "production")
