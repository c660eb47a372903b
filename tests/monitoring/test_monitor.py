"""Monitoring on real data: quiet on windows the model knows, an alarm on the season it never saw,
and clear errors for logs that cannot be judged."""

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
from gitml.monitoring.monitor import (
    as_logged,
    event_window,
    judge,
    labelled_predictions,
    push_verdict,
    quality,
    relative_error,
    run,
    time_windows,
    verdict,
)
from gitml.ports import free_port
from gitml.schema import EVENT_TIME, FEATURES, as_model_input
from gitml.serving.predlog import LogError, PredictionLog, write_actuals
from tests.example_data import example_only


@pytest.fixture(scope="module")
def settings() -> dict[str, Any]:
    return load_params("monitor")


@pytest.fixture(scope="module")
def context(
    trained_model: Any, splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> dict[str, Any]:
    target = TARGET
    return {
        "reference": labelled_predictions(trained_model, splits["train"], target),
        "expected": relative_error(labelled_predictions(trained_model, splits["test"], target)),
        "categorical": params["features"]["categorical"],
        "target": target,
    }


def alarms_per_window(
    windows: list[pd.DataFrame], model: Any, context: dict[str, Any], settings: dict[str, Any]
) -> dict[str, list[str]]:
    found = {}
    for window in windows:
        current = as_logged(model, window, context["target"])
        _, _, alarms = judge(context["reference"], current, context["expected"],
                             context["categorical"], settings)  # fmt: skip
        found[f"{window[TIME].min():%Y-%m-%d}"] = alarms
    return found


@pytest.mark.slow
@example_only
def test_false_alarm_rate_on_windows_from_the_training_months(
    trained_model: Any, splits: dict[str, pd.DataFrame], context: dict[str, Any], settings: Any
) -> None:
    windows = time_windows(splits["train"], settings["window_days"])
    found = alarms_per_window(windows, trained_model, context, settings)
    rate = sum(bool(a) for a in found.values()) / len(found)
    assert len(found) >= 15  # Jan-Aug in two-week windows
    assert rate <= 0.1, f"false-alarm rate {rate:.0%}: {found}"


@example_only
def test_no_alarm_on_the_held_out_test_month(
    trained_model: Any, splits: dict[str, pd.DataFrame], context: dict[str, Any], settings: Any
) -> None:
    windows = time_windows(splits["test"], settings["window_days"])
    found = alarms_per_window(windows, trained_model, context, settings)
    assert found and not any(found.values()), found


@example_only
def test_the_unseen_season_raises_a_quality_alarm(
    trained_model: Any, splits: dict[str, pd.DataFrame], context: dict[str, Any], settings: Any
) -> None:
    production = splits["production"]
    late_autumn = production[production[TIME] >= "2011-10-29"]
    found = alarms_per_window(
        time_windows(late_autumn, settings["window_days"]), trained_model, context, settings
    )
    assert len(found) >= 3 and all("quality" in a for a in found.values()), found
    whole = alarms_per_window([production], trained_model, context, settings)  # what replay sends
    assert list(whole.values()) == [["quality"]]


@example_only
def test_a_feed_without_nights_and_weekends_is_data_drift_even_without_actuals(
    trained_model: Any, splits: dict[str, pd.DataFrame], context: dict[str, Any], settings: Any
) -> None:
    june = splits["train"][splits["train"][TIME].dt.month == 6]
    office_hours = june[june["hr"].between(7, 19) & (june["workingday"] == 1)]
    current = as_logged(trained_model, office_hours, context["target"])
    current["actual"] = float("nan")  # no actuals yet: only drift can speak
    _, findings, alarms = judge(context["reference"], current, context["expected"],
                                context["categorical"], settings)  # fmt: skip
    assert alarms == ["data_drift"]
    assert {"hr", "weekday", "workingday"} <= set(findings["data_drift"]["drifted_features"])
    assert "note" in findings["quality"]


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


def test_run_writes_reports_summary_and_metrics_from_a_real_log(
    tmp_path: Path, trained_model: Any, splits: dict[str, pd.DataFrame], params: dict[str, Any],
    settings: dict[str, Any],
) -> None:  # fmt: skip
    splits_dir = tmp_path / "splits"
    splits_dir.mkdir()
    for name, frame in splits.items():
        frame.to_parquet(splits_dir / f"{name}.parquet")
    joblib.dump(trained_model, tmp_path / "model.joblib")
    window = splits["production"].sort_values(TIME).tail(max(settings["min_rows"], 300))
    now = datetime.now(UTC)
    ids = write_log(tmp_path, window, trained_model, now)
    write_actuals(tmp_path / "actuals" / "a.jsonl",
                  [(i, 0, float(y)) for i, y in zip(ids, window[TARGET], strict=True)])  # fmt: skip
    out = tmp_path / "reports"
    summary = run(
        tmp_path / "predictions", tmp_path / "actuals", now - timedelta(days=1),
        now + timedelta(days=1), out, settings, params["features"],
        model_path=tmp_path / "model.joblib", splits_dir=splits_dir,
    )  # fmt: skip
    assert summary["alarm"] == bool(summary["alarms"])
    assert summary["rows"] == len(window) and summary["model_versions"] == ["v9.9.9"]
    assert summary["quality"]["labelled_rows"] == len(window)
    assert json.loads((out / "summary.json").read_text()) == summary
    drift_html, quality_html = ((out / n).read_text() for n in ("drift.html", "quality.html"))
    assert all(name in drift_html for name in FEATURES)  # evidently's per-feature drift tables
    assert "MAE" in quality_html
    verdict_line = "Action needed" if summary["alarm"] else "Healthy"
    assert verdict_line in (out / "summary.md").read_text()
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make monitor-tools` (Debian package prometheus)"
    metrics = (out / "monitor.prom").read_text()
    check = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True,
                           text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"gitml_monitor_alarm {float(summary['alarm'])}" in metrics


def test_a_replayed_stream_is_judged_by_its_event_days_with_its_bias(
    tmp_path: Path, trained_model: Any, splits: dict[str, pd.DataFrame], params: dict[str, Any],
    settings: dict[str, Any],
) -> None:  # fmt: skip
    # the whole production stream served within a minute, as `make replay` does
    for name, frame in splits.items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
    joblib.dump(trained_model, tmp_path / "model.joblib")
    stream = splits["production"].sort_values(TIME)
    ids = write_log(tmp_path, stream, trained_model, datetime.now(UTC), events=True)
    write_actuals(tmp_path / "actuals" / "a.jsonl",
                  [(i, 0, float(y)) for i, y in zip(ids, stream[TARGET], strict=True)])  # fmt: skip
    since, until = event_window(tmp_path / "predictions", settings["window_days"])
    last = stream[TIME].max().tz_localize(UTC)
    assert (since, until) == (last - timedelta(days=settings["window_days"]) + timedelta(microseconds=1),
                              last + timedelta(microseconds=1))  # fmt: skip
    summary = run(
        tmp_path / "predictions", tmp_path / "actuals", since, until, tmp_path / "out", settings,
        params["features"], model_path=tmp_path / "model.joblib", splits_dir=tmp_path,
    )  # fmt: skip
    judged = stream[stream[TIME].dt.tz_localize(UTC) >= since]
    assert summary["rows"] == len(judged)
    assert summary["window"] == {"from": judged[TIME].min().tz_localize(UTC).isoformat(),
                                 "to": last.isoformat()}  # fmt: skip
    days = sorted(judged[TIME].dt.strftime("%Y-%m-%d").unique())
    assert list(summary["quality"]["daily_relative_error"]) == days
    predicted = trained_model.predict(as_model_input(judged))
    bias = (predicted - judged[TARGET]).sum() / judged[TARGET].sum()
    assert summary["quality"]["bias"] == pytest.approx(bias, abs=1e-4)
    shown = f"| bias: (predicted - actual) / actual | {summary['quality']['bias']:+.1%} |"
    assert shown in (tmp_path / "out" / "summary.md").read_text()


def test_an_explicit_window_end_without_an_offset_is_utc(tmp_path: Path) -> None:
    end = datetime(2024, 5, 1, 8)
    assert event_window(tmp_path / "no-log-needed", 14, end) == (
        datetime(2024, 4, 17, 8, tzinfo=UTC),
        datetime(2024, 5, 1, 8, tzinfo=UTC),
    )


def test_quality_is_judged_only_from_min_rows_labelled_rows(
    trained_model: Any, splits: dict[str, pd.DataFrame], context: dict[str, Any], settings: Any
) -> None:
    logged = as_logged(trained_model, splits["production"], context["target"])
    enough = logged.head(settings["min_rows"]).copy()
    assert "error_ratio" in quality(enough, context["expected"], settings)
    enough.iloc[0, enough.columns.get_loc("actual")] = float("nan")  # one short of min_rows
    too_few = quality(enough, context["expected"], settings)
    assert too_few == {"detected": False, "labelled_rows": settings["min_rows"] - 1,
                       "note": too_few["note"]}  # fmt: skip
    assert "monitor.min_rows" in too_few["note"]


def test_a_window_under_min_rows_is_not_judged(
    tmp_path: Path, trained_model: Any, splits: dict[str, pd.DataFrame], params: dict[str, Any],
    settings: dict[str, Any],
) -> None:  # fmt: skip
    settings = {**settings, "min_rows": 5}
    for name, frame in splits.items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
    joblib.dump(trained_model, tmp_path / "model.joblib")
    now, out = datetime.now(UTC), tmp_path / "out"
    out.mkdir()
    hours = splits["production"].head(settings["min_rows"])

    def judge_window(rows: int) -> dict[str, Any]:
        logs = tmp_path / f"logs-{rows}"
        write_log(logs, hours.head(rows), trained_model, now)
        return run(logs / "predictions", None, now - timedelta(hours=1), now + timedelta(hours=1),
                   out, settings, params["features"], model_path=tmp_path / "model.joblib",
                   splits_dir=tmp_path)  # fmt: skip

    assert judge_window(settings["min_rows"])["rows"] == settings["min_rows"]
    with pytest.raises(LogError, match=r"4 predictions in the window, .*monitor\.min_rows=5"):
        judge_window(settings["min_rows"] - 1)
    assert not (out / "summary.json").exists()  # the earlier verdict is not left standing


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
