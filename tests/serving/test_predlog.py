"""The prediction log: append-only, files per day and instance that roll and close for shipping,
bounded while unshipped, nothing lost on restart, read back with clear errors for malformed or
empty logs."""

import json
import os
import re
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gitml.schema import EVENT_TIME, EXAMPLE_ROW, FEATURES
from gitml.serving import predlog
from gitml.serving.predlog import (
    EVENT_SENT,
    SYNTHETIC,
    LogError,
    PredictionLog,
    SpoolFull,
    read_actuals,
    read_predictions,
    write_actuals,
)
from tests.example_data import example_only

NOON = datetime(2026, 11, 23, 12, tzinfo=UTC)


def row(**changes: object) -> dict[str, object]:
    return {**EXAMPLE_ROW, **changes}


def test_rows_come_back_as_sent_with_prediction_version_and_time(tmp_path: Path) -> None:
    nullable = next((n for n, spec in FEATURES.items() if spec.nullable), None)
    missing = {nullable: None} if nullable else {}
    log = PredictionLog(tmp_path, "v1.2.3", instance="pod-a")
    log.append("req-1", [row(), row(**missing)], [10.5, 20.25], now=NOON)
    frame = read_predictions(tmp_path)
    assert [p.name.split(".")[0] for p in (tmp_path / "2026-11-23").iterdir()] == ["pod-a"]
    assert frame[list(FEATURES)].iloc[0].to_dict() == EXAMPLE_ROW
    assert frame["prediction"].tolist() == [10.5, 20.25]
    assert frame["row"].tolist() == [0, 1]
    assert set(frame["request_id"]) == {"req-1"} and set(frame["model_version"]) == {"v1.2.3"}
    if nullable:
        assert frame[nullable].isna().tolist() == [False, True]
    assert frame["ts"].tolist() == [pd.Timestamp(NOON)] * 2
    assert frame["actual"].isna().all()  # no actuals given: none arrived, the monitor reads


def test_a_restarted_server_starts_its_own_file_and_loses_nothing(tmp_path: Path) -> None:
    first = PredictionLog(tmp_path, "v1", instance="pod-1")
    first.append("a", [row()], [1.0], now=NOON)
    first.close()  # the process ends; the pod (and its name) stays
    PredictionLog(tmp_path, "v1", instance="pod-1").append("b", [row()], [2.0], now=NOON)
    PredictionLog(tmp_path, "v2", instance="pod-2").append("c", [row()], [3.0], now=NOON)
    assert len(list(tmp_path.rglob("*.jsonl"))) == 3
    assert sorted(read_predictions(tmp_path)["request_id"]) == ["a", "b", "c"]


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "v1", instance="pod")
    log.append("answered", [row()], [1.0], now=NOON)
    (path,) = tmp_path.rglob("*.jsonl")
    with open(path, "a") as handle:
        handle.write('{"ts": "2026-11-23T12:00:01+00:00", "request_id": "never-answ')
    assert read_predictions(tmp_path)["request_id"].tolist() == ["answered"]


def test_a_new_day_starts_a_new_file(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "v1", instance="pod")
    log.append("today", [row()], [1.0], now=NOON)
    log.append("tomorrow", [row()], [1.0], now=NOON + timedelta(days=1))
    assert sorted(p.parent.name for p in tmp_path.rglob("*.jsonl")) == [
        "2026-11-23",
        "2026-11-24",
    ]


def test_concurrent_requests_never_interleave_lines(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "v1", instance="pod")
    batch = [row(hr=h % 24) for h in range(50)]

    def client(n: int) -> None:
        for i in range(20):
            log.append(f"{n}-{i}", batch, [float(i)] * len(batch), now=NOON)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    frame = read_predictions(tmp_path)  # would raise on a torn line
    assert len(frame) == 8 * 20 * 50
    assert frame.groupby("request_id")["row"].nunique().eq(50).all()


def test_the_window_selects_by_time_and_synthetic_requests_are_not_traffic(
    tmp_path: Path,
) -> None:
    log = PredictionLog(tmp_path, "v1", instance="pod")
    log.append("old", [row()], [1.0], now=NOON - timedelta(days=30))
    log.append("new", [row()], [1.0], now=NOON)
    log.append("golden", [row()], [1.0], now=NOON, synthetic=True)  # a smoke check's
    log.append("smoke-golden", [row()], [1.0], now=NOON)  # an id anyone may send: traffic
    frame = read_predictions(tmp_path, since=NOON - timedelta(days=14), until=NOON + timedelta(1))
    assert frame["request_id"].tolist() == ["new", "smoke-golden"]
    assert SYNTHETIC not in frame  # a reader's marker, not a column of the traffic
    with pytest.raises(LogError, match="no prediction records with event times from"):
        read_predictions(tmp_path, since=NOON + timedelta(days=1))


def test_the_window_includes_its_start_and_excludes_its_end(tmp_path: Path) -> None:
    # [since, until): consecutive windows share no record and miss none
    log = PredictionLog(tmp_path, "v1", instance="pod")
    for hour in range(3):
        log.append(f"h{hour}", [row()], [1.0], now=NOON + timedelta(hours=hour))
    first = read_predictions(tmp_path, since=NOON, until=NOON + timedelta(hours=1))
    second = read_predictions(tmp_path, since=NOON + timedelta(hours=1))
    assert first["request_id"].tolist() == ["h0"]
    assert second["request_id"].tolist() == ["h1", "h2"]
    before = read_predictions(tmp_path, until=NOON + timedelta(hours=2))
    assert before["request_id"].tolist() == ["h0", "h1"]


def test_actuals_are_joined_by_request_and_row_the_latest_winning(tmp_path: Path) -> None:
    PredictionLog(tmp_path / "log", "v1", instance="pod").append(
        "r", [row(), row()], [1.0, 2.0], now=NOON
    )
    write_actuals(tmp_path / "actuals" / "a.jsonl", [("r", 0, 5.0), ("r", 0, 6.0)])
    frame = read_predictions(tmp_path / "log", tmp_path / "actuals")
    assert frame["actual"].iloc[0] == 6.0 and pd.isna(frame["actual"].iloc[1])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"\.jsonl:2: not a JSON line"),
        ("[1, 2]", r"\.jsonl:2: expected a JSON object"),
        ('{"ts": "2026-11-23T12:00:00+00:00"}', r"\.jsonl:2: missing field\(s\) \['request_id'"),
    ],
)
def test_a_malformed_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    PredictionLog(tmp_path, "v1", instance="2").append("ok", [row()], [1.0], now=NOON)
    (path,) = tmp_path.rglob("*.jsonl")
    with open(path, "a") as handle:
        handle.write(line + "\n")
    with pytest.raises(LogError, match=message):
        read_predictions(tmp_path)


def test_features_outside_the_input_contract_name_the_column(tmp_path: Path) -> None:
    name, spec = next((n, s) for n, s in FEATURES.items() if s.high is not None or s.categories)
    outside = spec.high + 10 if spec.high is not None else "zzz-unknown"
    PredictionLog(tmp_path, "v1", instance="pod").append("x", [row(**{name: outside})], [1.0],
                                                         now=NOON)  # fmt: skip
    check = "in_range" if spec.high is not None and spec.low is not None else "isin"
    with pytest.raises(LogError, match=f"input contract: {name}: {check}"):
        read_predictions(tmp_path)


def test_a_non_numeric_prediction_or_time_is_an_error(tmp_path: Path) -> None:
    record = {"ts": "yesterday", "request_id": "x", "row": 0, "model_version": "v1",
              **EXAMPLE_ROW, "prediction": 1.0}  # fmt: skip
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(LogError, match="'ts' is not an ISO 8601 time"):
        read_predictions(tmp_path)
    record.update(ts=NOON.isoformat(), prediction="many")
    (tmp_path / "d" / "a.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(LogError, match="'prediction' is not a number"):
        read_predictions(tmp_path)


def test_an_empty_or_missing_log_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LogError, match="no such log directory"):
        read_predictions(tmp_path / "nowhere")
    (tmp_path / "2026-11-23").mkdir()
    (tmp_path / "2026-11-23" / "pod.jsonl").write_text("\n")
    with pytest.raises(LogError, match=r"no prediction records \(1 log files\)"):
        read_predictions(tmp_path)


def test_a_non_numeric_actual_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"request_id": "r", "row": 0, "actual": "lots"}\n')
    with pytest.raises(LogError, match="'actual' is not a number"):
        read_actuals(tmp_path)


def test_returning_to_an_earlier_day_appends_to_its_file(tmp_path: Path) -> None:
    # a clock stepping back over midnight reopens yesterday's file: it must append, not
    # overwrite from the start
    log = PredictionLog(tmp_path, "v1", instance="pod")
    log.append("first", [row()], [1.0], now=NOON)
    log.append("next-day", [row()], [1.0], now=NOON + timedelta(days=1))
    log.append("back", [row()], [1.0], now=NOON + timedelta(hours=1))
    assert sorted(read_predictions(tmp_path)["request_id"]) == ["back", "first", "next-day"]


def test_a_closed_log_reopens_on_the_next_append(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "v1", instance="pod")
    log.append("a", [row()], [1.0], now=NOON)
    log.close()
    log.append("b", [row()], [1.0], now=NOON)
    assert read_predictions(tmp_path)["request_id"].tolist() == ["a", "b"]


def test_log_files_are_named_by_instance_and_start_time_and_readable_by_all(
    tmp_path: Path,
) -> None:
    old_umask = os.umask(0o022)
    try:
        log = PredictionLog(tmp_path, "v1", instance="pod-7")
        log.append("a", [row()], [1.0], now=NOON)
    finally:
        os.umask(old_umask)
    (path,) = tmp_path.rglob("*.jsonl")
    assert re.fullmatch(r"pod-7\.\d{8}T\d{12}\.open\.jsonl", path.name), path.name
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    log.close()  # closed: the name loses `.open`, the bytes stay
    (closed,) = tmp_path.rglob("*.jsonl")
    assert closed.name == path.name.replace(".open.jsonl", ".jsonl")
    assert read_predictions(tmp_path)["request_id"].tolist() == ["a"]


def test_files_roll_after_rotate_s_with_or_without_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(predlog.time, "monotonic", lambda: clock[0])
    log = PredictionLog(tmp_path, "v1", instance="pod", rotate_s=60)
    log.append("a", [row()], [1.0], now=NOON)
    clock[0] += 59
    log.close_expired()  # not yet
    log.append("b", [row()], [1.0], now=NOON)
    assert [p.name.endswith(".open.jsonl") for p in tmp_path.rglob("*.jsonl")] == [True]
    clock[0] += 1
    log.append("c", [row()], [1.0], now=NOON)  # a write past rotate_s goes to a new file
    clock[0] += 60
    log.close_expired()  # and with no traffic at all, the thread's call closes it
    files = sorted(tmp_path.rglob("*.jsonl"))
    assert [p.name.endswith(".open.jsonl") for p in files] == [False, False]
    assert [len(p.read_text().splitlines()) for p in files] == [2, 1]
    assert sorted(read_predictions(tmp_path)["request_id"]) == ["a", "b", "c"]


def test_two_files_opened_at_the_same_instant_never_share_a_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = datetime(2026, 11, 23, 12, tzinfo=UTC)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return frozen

    monkeypatch.setattr(predlog, "datetime", Frozen)
    log = PredictionLog(tmp_path, "v1", instance="pod")
    for request_id in ("a", "b", "c"):
        log.append(request_id, [row()], [1.0], now=NOON)
        log.close()
    # the clock's time, then the next free microsecond
    assert sorted(p.name for p in tmp_path.rglob("*.jsonl")) == [
        f"pod.20261123T12000000000{n}.jsonl" for n in range(3)
    ]
    assert sorted(read_predictions(tmp_path)["request_id"]) == ["a", "b", "c"]


def test_past_the_spool_bound_rows_are_refused_until_shipping_frees_room(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "v1", instance="pod", spool_max_bytes=10_000)
    sent = 0
    with pytest.raises(SpoolFull, match="GITML_PREDICTION_LOG_SPOOL_MAX_BYTES=10000"):
        while sent < 1000:
            log.append(f"r{sent}", [row()], [1.0], now=NOON)
            sent += 1
    written = sum(p.stat().st_size for p in tmp_path.rglob("*.jsonl"))
    assert 0 < sent < 1000 and 10_000 - written < written / sent  # full: no row fits any more
    log.close()
    for path in tmp_path.rglob("*.jsonl"):
        path.unlink()  # what the shipper does once the store holds a file
    time.sleep(predlog.SPOOL_SCAN_S)  # the log measures the spool again, now empty
    log.append("after", [row()], [1.0], now=NOON)
    assert read_predictions(tmp_path)["request_id"].tolist() == ["after"]


def test_a_prediction_that_is_not_a_number_or_a_missing_one_is_refused(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "v1", instance="pod")
    with pytest.raises(ValueError, match="not JSON compliant"):
        log.append("nan", [row()], [float("nan")], now=NOON)
    with pytest.raises(ValueError, match="zip"):
        log.append("short", [row(), row()], [1.0], now=NOON)
    assert not list(tmp_path.rglob("*.jsonl")) or all(
        p.read_text() == "" for p in tmp_path.rglob("*.jsonl")
    )


def test_blank_lines_and_extra_fields_are_skipped(tmp_path: Path) -> None:
    record = {"ts": NOON.isoformat(), "request_id": "a", "row": 0, "model_version": "v1",
              **EXAMPLE_ROW, "prediction": 1.0, "extra": "ignored"}  # fmt: skip
    (tmp_path / "d").mkdir()
    later = {**record, "request_id": "b"}
    (tmp_path / "d" / "x.jsonl").write_text(f"{json.dumps(record)}\n\n{json.dumps(later)}\n")
    frame = read_predictions(tmp_path)
    assert frame["request_id"].tolist() == ["a", "b"]  # the line after the blank one too
    assert set(frame.columns) == {"ts", "request_id", "row", "model_version", *EXAMPLE_ROW,
                                  EVENT_TIME, EVENT_SENT, "prediction", "actual"}  # fmt: skip


def test_times_with_offsets_or_milliseconds_are_read_as_utc(tmp_path: Path) -> None:
    base = {"request_id": "a", "row": 0, "model_version": "v1", **EXAMPLE_ROW, "prediction": 1.0}
    lines = [
        {**base, "ts": "2026-11-23T12:00:00+00:00"},
        {**base, "request_id": "b", "ts": "2026-11-23T13:30:00.250+01:00"},
    ]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    frame = read_predictions(tmp_path)
    assert frame["ts"].tolist() == [
        pd.Timestamp("2026-11-23 12:00:00", tz="UTC"),
        pd.Timestamp("2026-11-23 12:30:00.250", tz="UTC"),
    ]
    assert str(frame["ts"].dt.tz) == str(frame[EVENT_TIME].dt.tz) == "UTC"


@example_only
def test_contract_errors_name_at_most_five_column_checks(tmp_path: Path) -> None:
    bad = row(hr=30, weekday=9, workingday=5, holiday=5, temp=3.0, atemp=3.0)
    PredictionLog(tmp_path, "v1", instance="pod").append("x", [bad], [1.0], now=NOON)
    with pytest.raises(LogError) as failure:
        read_predictions(tmp_path)
    found = str(failure.value).split("input contract: ")[1]
    assert len(found.split("; ")) == 5 and found.startswith("hr: in_range(0, 23); weekday: ")


def test_actuals_files_are_created_with_their_folders_and_appended(tmp_path: Path) -> None:
    path = tmp_path / "actuals" / "2026" / "a.jsonl"
    write_actuals(path, [("r", 0, 5.0)])
    write_actuals(path, [("r", 1, 6.0)])
    assert read_actuals(tmp_path / "actuals").to_dict("list") == {
        "request_id": ["r", "r"], "row": [0, 1], "actual": [5.0, 6.0]
    }  # fmt: skip


def test_no_actuals_yet_is_an_empty_table_that_still_joins(tmp_path: Path) -> None:
    (tmp_path / "actuals").mkdir()
    empty = read_actuals(tmp_path / "actuals")
    assert list(empty.columns) == ["request_id", "row", "actual"] and empty.empty
    assert empty["row"].dtype == int
    PredictionLog(tmp_path / "log", "v1", instance="pod").append("r", [row()], [1.0], now=NOON)
    frame = read_predictions(tmp_path / "log", tmp_path / "actuals")
    assert frame["actual"].isna().all() and len(frame) == 1


# --- event time: the hour a prediction is about --------------------------------------------


def test_the_event_time_a_row_carries_is_read_back_else_the_time_it_was_served(
    tmp_path: Path,
) -> None:
    log = PredictionLog(tmp_path, "v1", instance="pod")
    last_year = NOON - timedelta(days=365)
    log.append("req-1", [row(**{EVENT_TIME: last_year.isoformat()}), row()], [1.0, 2.0], now=NOON)
    log.close()
    frame = read_predictions(tmp_path).sort_values("row")
    assert frame[EVENT_TIME].tolist() == [pd.Timestamp(last_year), pd.Timestamp(NOON)]
    assert frame[EVENT_SENT].tolist() == [True, False]
    assert frame["ts"].tolist() == [pd.Timestamp(NOON)] * 2


def test_windows_select_by_event_time_not_by_when_rows_were_served(tmp_path: Path) -> None:
    # a year replayed in one minute: its windows are the year's days, not that minute
    log = PredictionLog(tmp_path, "v1", instance="pod")
    days = [NOON - timedelta(days=400 - d) for d in range(30)]
    for number, day in enumerate(days):
        log.append(f"r{number}", [row(**{EVENT_TIME: day.isoformat()})], [1.0], now=NOON)
    log.close()
    window = read_predictions(tmp_path, since=days[10], until=days[20])
    assert window[EVENT_TIME].tolist() == [pd.Timestamp(day) for day in days[10:20]]
    with pytest.raises(LogError, match="no prediction records with event times from"):
        read_predictions(tmp_path, since=NOON - timedelta(days=14))


def test_a_retried_request_counts_once_with_its_last_answer(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "v1", instance="pod")
    log.append("same-id", [row()], [1.0], now=NOON)
    log.append("same-id", [row()], [3.0], now=NOON + timedelta(seconds=1))  # the retry
    log.append(
        "other-id", [row()], [2.0], now=NOON + timedelta(seconds=2)
    )  # same event, asked again
    log.close()
    frame = read_predictions(tmp_path)
    assert sorted(zip(frame["request_id"], frame["prediction"], strict=True)) == [
        ("other-id", 2.0), ("same-id", 3.0),
    ]  # fmt: skip


@pytest.mark.parametrize("bad", ["yesterday", 20111001, "2011-13-01T00:00"])
def test_a_malformed_event_time_in_the_log_is_named(tmp_path: Path, bad: object) -> None:
    record = {"ts": NOON.isoformat(), "request_id": "x", "row": 0, "model_version": "v1",
              **EXAMPLE_ROW, EVENT_TIME: bad, "prediction": 1.0}  # fmt: skip
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(LogError, match=f"field '{EVENT_TIME}' is not an ISO 8601 time"):
        read_predictions(tmp_path)


def test_a_missing_served_time_is_named(tmp_path: Path) -> None:
    record = {"ts": None, "request_id": "x", "row": 0, "model_version": "v1",
              **EXAMPLE_ROW, "prediction": 1.0}  # fmt: skip
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(LogError, match="field 'ts' is not an ISO 8601 time"):
        read_predictions(tmp_path)


def test_an_empty_window_names_its_open_ends(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, "v1", instance="pod")
    log.append("a", [row()], [1.0], now=NOON)
    log.close()
    with pytest.raises(LogError, match=r"from 2027-01-01 00:00:00\+00:00 to the last$"):
        read_predictions(tmp_path, since=datetime(2027, 1, 1, tzinfo=UTC))
    with pytest.raises(LogError, match=r"from the first to 2020-01-01 00:00:00\+00:00$"):
        read_predictions(tmp_path, until=datetime(2020, 1, 1, tzinfo=UTC))


def test_the_served_time_is_utc_whatever_the_machines_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # UTC+9, no daylight saving
    time.tzset()
    try:
        before = datetime.now(UTC)
        log = PredictionLog(tmp_path, "v1", instance="pod")
        log.append("a", [row()], [1.0])  # no `now`: the clock
        log.close()
        served = read_predictions(tmp_path)["ts"].iloc[0]
        assert before - timedelta(seconds=1) <= served <= datetime.now(UTC) + timedelta(seconds=1)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_the_spool_is_every_log_file_in_the_day_folders_and_a_vanished_one_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for day, name, size in [("2026-11-23", "a.jsonl", 10), ("2026-11-23", "b.open.jsonl", 7),
                            ("2026-11-24", "c.jsonl", 5)]:  # fmt: skip
        (tmp_path / day).mkdir(exist_ok=True)
        (tmp_path / day / name).write_bytes(b"x" * size)
    (tmp_path / "2026-11-24" / "notes.txt").write_bytes(b"x" * 100)  # not a log file
    (tmp_path / "stray.jsonl").write_bytes(b"x" * 100)  # not in a day folder
    assert predlog.spool_bytes(tmp_path) == 22
    listed = list(tmp_path.glob("*/*.jsonl"))
    vanished = tmp_path / "2026-11-24" / "shipped-meanwhile.jsonl"
    monkeypatch.setattr(Path, "glob", lambda self, pattern: iter([vanished, *listed]))
    assert predlog.spool_bytes(tmp_path) == 22


def test_by_default_a_log_is_named_by_the_host_and_never_rolls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    clock = [1000.0]
    monkeypatch.setattr(predlog.time, "monotonic", lambda: clock[0])
    log = PredictionLog(tmp_path, "v1")
    log.append("a", [row()], [1.0], now=NOON)
    clock[0] += 10**6
    log.close_expired()
    log.append("b", [row()], [1.0], now=NOON)
    (path,) = tmp_path.rglob("*.jsonl")
    assert path.name.startswith(f"{socket.gethostname()}.") and predlog.is_open(path)


def one_row_bytes(tmp_path: Path) -> int:
    PredictionLog(tmp_path / "measure", "v1", instance="pod").append("r0", [row()], [1.0],
                                                                     now=NOON)  # fmt: skip
    return sum(p.stat().st_size for p in (tmp_path / "measure").rglob("*.jsonl"))


def test_the_spool_bound_admits_rows_up_to_it_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    size = one_row_bytes(tmp_path)
    clock = [1000.0]
    monkeypatch.setattr(predlog.time, "monotonic", lambda: clock[0])
    log = PredictionLog(tmp_path / "pod", "v1", instance="pod", spool_max_bytes=2 * size)
    log.append("r1", [row()], [1.0], now=NOON)
    log.append("r2", [row()], [1.0], now=NOON)  # exactly at the bound: still logged
    with pytest.raises(SpoolFull) as refused:
        log.append("r3", [row()], [1.0], now=NOON)
    assert refused.value.errno == errno.ENOSPC
    assert str(refused.value).endswith(
        f"{tmp_path / 'pod'}: {2 * size} bytes not shipped yet, the bound is "
        f"GITML_PREDICTION_LOG_SPOOL_MAX_BYTES={2 * size}: rows are not logged until the "
        "shipper catches up"
    )
    log.close()
    for path in (tmp_path / "pod").rglob("*.jsonl"):
        path.unlink()  # shipped
    clock[0] += predlog.SPOOL_SCAN_S / 2  # the size measured last still holds...
    with pytest.raises(SpoolFull):
        log.append("r4", [row()], [1.0], now=NOON)
    clock[0] += predlog.SPOOL_SCAN_S / 2  # ...until SPOOL_SCAN_S have passed: measured again
    log.append("r5", [row()], [1.0], now=NOON)
    assert read_predictions(tmp_path / "pod")["request_id"].tolist() == ["r5"]


def test_a_log_file_is_appended_to_and_not_inherited_by_child_processes(tmp_path: Path) -> None:
    import fcntl

    log = PredictionLog(tmp_path, "v1", instance="pod")
    log.append("a", [row()], [1.0], now=NOON)
    assert log._open is not None
    assert fcntl.fcntl(log._open.fd, fcntl.F_GETFL) & os.O_APPEND
    assert not os.get_inheritable(log._open.fd)


def test_a_short_write_is_an_error_not_a_silent_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = PredictionLog(tmp_path, "v1", instance="pod")
    import errno

    monkeypatch.setattr(predlog.os, "write", lambda fd, data: len(data) - 1)
    with pytest.raises(OSError, match="a short write to the log") as failed:
        log.append("a", [row()], [1.0], now=NOON)
    assert failed.value.errno == errno.EIO


def test_files_are_named_by_the_utc_time_whatever_the_local_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        before = datetime.now(UTC)
        PredictionLog(tmp_path, "v1", instance="pod").append("a", [row()], [1.0], now=NOON)
        after = datetime.now(UTC)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    (path,) = tmp_path.rglob("*.jsonl")
    opened = datetime.strptime(path.name.split(".")[1], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= opened <= after


def test_rotation_in_background_closes_an_idle_file_and_needs_a_period(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^rotate_in_background needs rotate_s > 0$"):
        PredictionLog(tmp_path, "v1", instance="pod").rotate_in_background()
    log = PredictionLog(tmp_path, "v1", instance="pod", rotate_s=0.2)
    log.append("a", [row()], [1.0], now=NOON)
    thread = log.rotate_in_background()
    deadline = time.monotonic() + 10
    while any(predlog.is_open(p) for p in tmp_path.rglob("*.jsonl")):
        assert time.monotonic() < deadline, "the idle file was never closed"
        time.sleep(0.05)
    assert thread.is_alive() and thread.daemon
    assert thread.name == "prediction-log-rotation"  # what a thread dump shows
