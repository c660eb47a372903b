"""The prediction log: every served row, its prediction, the model version and the time.

Append-only JSON lines, one file per UTC day and server process:
`<dir>/<YYYY-MM-DD>/<instance>.<start time>.jsonl` (instance: the pod or host name). Each
request is written with one `write(2)` on a file opened with O_APPEND before its response
leaves, so a crash or restart loses nothing that was answered, and a restarted server starts a
new file. A final line without its newline is a write cut short by a crash, whose request was
never answered: it is skipped. Actuals (the true outcome, known later) are JSON lines too,
keyed by the same `request_id` and `row`; `read_predictions` joins them in.

monitoring/monitor.py reads both back; a malformed line is an error naming file and line.
"""

import json
import os
import socket
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.errors

from gitml.schema import EVENT_TIME, FEATURES, INPUT_SCHEMA

KEY = ["request_id", "row"]
META = ["ts", "request_id", "row", "model_version"]
PREDICTION = "prediction"
# Marks the rows of a synthetic request (a smoke check's, carrying the server's shared secret):
# logged, but not traffic. A request id means nothing here: any client may send `smoke-...`.
SYNTHETIC = "synthetic"
ACTUAL = "actual"
EVENT_SENT = "event_time_sent"  # read back: did the request carry the row's event time?


class LogError(ValueError):
    """A prediction or actuals log cannot be used; the message names the file and line."""


def default_instance() -> str:
    """The host name: in Kubernetes, the pod's name."""
    return socket.gethostname()


class PredictionLog:
    """Appends one JSON line per predicted row; thread-safe within one process."""

    def __init__(self, directory: Path, model_version: str, instance: str = "") -> None:
        self.directory, self.model_version = directory, model_version
        # the start time makes each process's files its own, even after a restart in place
        started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        self.file_name = f"{instance or default_instance()}.{started}.jsonl"
        self._lock = threading.Lock()
        self._day = ""
        self._fd: int | None = None

    def append(
        self,
        request_id: str,
        rows: list[dict[str, Any]],
        predictions: Iterable[float],
        now: datetime | None = None,
        synthetic: bool = False,
    ) -> None:
        now = now or datetime.now(UTC)
        stamp = now.isoformat(timespec="milliseconds")
        base: dict[str, Any] = {
            "ts": stamp, "request_id": request_id, "model_version": self.model_version
        }  # fmt: skip
        if synthetic:  # only then: a traffic line stays as it always was
            base[SYNTHETIC] = True
        payload = "".join(
            json.dumps({**base, "row": i, **row, PREDICTION: float(pred)}, allow_nan=False) + "\n"
            for i, (row, pred) in enumerate(zip(rows, predictions, strict=True))
        ).encode()
        with self._lock:
            fd = self._file(now.strftime("%Y-%m-%d"))
            written = 0
            while written < len(payload):
                written += os.write(fd, payload[written:])

    def _file(self, day: str) -> int:
        if day != self._day or self._fd is None:
            self.close()
            folder = self.directory / day
            folder.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            self._fd, self._day = os.open(folder / self.file_name, flags, 0o644), day
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_jsonl(
    files: list[Path], required: list[str], optional: tuple[str, ...] = ()
) -> pd.DataFrame:
    records = []
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip() or not line.endswith("\n"):  # empty, or cut short by a crash
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise LogError(f"{path}:{number}: not a JSON line ({err.msg})") from None
                if not isinstance(record, dict):
                    raise LogError(f"{path}:{number}: expected a JSON object")
                missing = [field for field in required if field not in record]
                if missing:
                    raise LogError(f"{path}:{number}: missing field(s) {missing}")
                records.append(record)
    columns = [*required, *optional]
    return pd.DataFrame.from_records(records, columns=columns) if records else pd.DataFrame()


def log_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise LogError(f"{directory}: no such log directory")
    return sorted(directory.rglob("*.jsonl"))


def read_predictions(
    directory: Path,
    actuals_dir: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pd.DataFrame:
    """The logged rows whose event time is in [since, until), smoke checks left out, a retried
    request counted once, features checked against the input contract, and an `actual` column
    (missing where no actual has arrived, everywhere when there is no `actuals_dir`).

    A row's event time (EVENT_TIME) is the one its request carried, else the time it was served.
    """
    files = log_files(directory)
    frame = _read_jsonl(files, [*META, *FEATURES, PREDICTION], optional=(EVENT_TIME, SYNTHETIC))
    if frame.empty:
        raise LogError(f"{directory}: no prediction records ({len(files)} log files)")
    times = {}
    for field in ("ts", EVENT_TIME):
        given = frame[field].notna() | (field == "ts")  # ts is required, the event time optional
        text = frame[field].where(frame[field].map(lambda value: isinstance(value, str)))
        times[field] = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
        if (given & times[field].isna()).any():
            raise LogError(f"{directory}: field {field!r} is not an ISO 8601 time in some records")
    frame[EVENT_SENT] = times[EVENT_TIME].notna()
    frame["ts"], frame[EVENT_TIME] = times["ts"], times[EVENT_TIME].fillna(times["ts"])
    frame = frame[frame[SYNTHETIC].ne(True)].drop(columns=SYNTHETIC)
    # A request id names one request: the same id and row again is a retry (the server logs
    # every answer it gives), and the last one counts. A client that reuses an id for another
    # request replaces the first request's rows; one that sends none gets a fresh id.
    frame = frame.drop_duplicates(KEY, keep="last")
    if since is not None:
        frame = frame[frame[EVENT_TIME] >= pd.Timestamp(since)]
    if until is not None:
        frame = frame[frame[EVENT_TIME] < pd.Timestamp(until)]
    if frame.empty:
        raise LogError(
            f"{directory}: no prediction records with event times from "
            f"{since or 'the first'} to {until or 'the last'}"
        )
    frame = frame.reset_index(drop=True)
    try:
        features = INPUT_SCHEMA.validate(frame[list(FEATURES)], lazy=True)
    except pandera.errors.SchemaErrors as err:
        cases = err.failure_cases[["column", "check"]].drop_duplicates().head(5)
        found = "; ".join(f"{c.column}: {c.check}" for c in cases.itertuples())
        raise LogError(f"{directory}: logged features break the input contract: {found}") from None
    frame[list(FEATURES)] = features
    frame[PREDICTION] = pd.to_numeric(frame[PREDICTION], errors="coerce")
    if frame[PREDICTION].isna().any():
        raise LogError(f"{directory}: field '{PREDICTION}' is not a number in some records")
    if actuals_dir is None:
        return frame.assign(**{ACTUAL: float("nan")})
    return frame.merge(read_actuals(actuals_dir), on=KEY, how="left")


def read_actuals(directory: Path) -> pd.DataFrame:
    """Actuals `{"request_id", "row", "actual"}`; the last one wins for a repeated key."""
    actuals = _read_jsonl(log_files(directory), [*KEY, ACTUAL])
    if actuals.empty:
        return pd.DataFrame({"request_id": [], "row": [], ACTUAL: []}).astype({"row": int})
    actuals[ACTUAL] = pd.to_numeric(actuals[ACTUAL], errors="coerce")
    if actuals[ACTUAL].isna().any():
        raise LogError(f"{directory}: field '{ACTUAL}' is not a number in some records")
    return actuals.drop_duplicates(KEY, keep="last")


def write_actuals(path: Path, actuals: Iterable[tuple[str, int, float]]) -> None:
    """Append actuals to a JSON-lines file (what a labelling job delivers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        for request_id, row, actual in actuals:
            handle.write(json.dumps({"request_id": request_id, "row": row, ACTUAL: actual}) + "\n")
