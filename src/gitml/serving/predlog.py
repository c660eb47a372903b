"""The prediction log: every served row, its prediction, the model version and the time.

Append-only JSON lines, a file per UTC day and server process, or more where the files roll:
`<dir>/<YYYY-MM-DD>/<instance>.<opened>.jsonl` (instance: the pod or host name). A file being
written is named `….open.jsonl` and renamed when closed (at the day's end, every `rotate_s`,
at shutdown): gitml.serving.shipping ships the closed ones. Each request is written with one
`write(2)` on a file opened with O_APPEND before its response leaves, so a crash or restart
loses nothing that was answered, and a restarted server starts a new file. A final line without
its newline is a write cut short by a crash, whose request was never answered: it is skipped.
Actuals (the true outcome, known later) are JSON lines too, keyed by the same `request_id` and
`row`; `read_predictions` joins them in.

monitoring/monitor.py reads both back; a malformed line is an error naming file and line.
"""

import contextlib
import errno
import json
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
OPEN = ".open"  # before ".jsonl": a file still being written
SPOOL_SCAN_S = 1.0  # how stale the spool's size may be when a write checks it against its bound


class LogError(ValueError):
    """A prediction or actuals log cannot be used; the message names the file and line."""


def default_instance() -> str:
    """The host name: in Kubernetes, the pod's name."""
    return socket.gethostname()


class SpoolFull(OSError):
    """The unshipped log has reached its bound: the row is not logged (counted and alerted)."""


def day_files(directory: Path) -> list[Path]:
    """The log files in `directory`'s day folders, open or closed (none: no directory yet)."""
    return list(directory.glob("*/*.jsonl"))


def spool_bytes(directory: Path) -> int:
    """Bytes of log files in `directory` (its day folders): what is not shipped yet. A file
    renamed or shipped while it is counted is left out (a moment's undercount, never an error)."""
    total = 0
    for path in day_files(directory):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


@dataclass(frozen=True)
class _OpenFile:
    fd: int
    path: Path
    day: str
    since: float  # time.monotonic() at the open


class PredictionLog:
    """Appends one JSON line per predicted row; thread-safe within one process.

    `rotate_s`: a file is closed after this long, traffic or not (`close_expired`), so that it
    can be shipped; 0: a file per day. `spool_max_bytes`: past this many bytes in the directory
    (written, not shipped yet), appends fail with SpoolFull; 0: no bound.
    """

    def __init__(
        self,
        directory: Path,
        model_version: str,
        instance: str = "",
        rotate_s: float = 0,
        spool_max_bytes: int = 0,
    ) -> None:
        self.directory, self.model_version = directory, model_version
        self.instance = instance or default_instance()
        self.rotate_s, self.spool_max_bytes = rotate_s, spool_max_bytes
        self._lock = threading.Lock()
        self._open: _OpenFile | None = None
        # the spool's size as last measured, and when (time.monotonic()); counted up as rows
        # are written, measured again every SPOOL_SCAN_S (the shipper removes files meanwhile)
        self._spool: tuple[int, float] | None = None

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
            measured, when = self._measured_spool()
            if self.spool_max_bytes and measured + len(payload) > self.spool_max_bytes:
                raise SpoolFull(errno.ENOSPC, f"{self.directory}: {measured} bytes not shipped "
                                f"yet, the bound is GITML_PREDICTION_LOG_SPOOL_MAX_BYTES="
                                f"{self.spool_max_bytes}: rows are not logged until the "
                                "shipper catches up")  # fmt: skip
            fd = self._file(now.strftime("%Y-%m-%d"))
            # O_APPEND on a regular file: the whole payload in one write, or an error
            if os.write(fd, payload) != len(payload):
                raise OSError(errno.EIO, f"{self.directory}: a short write to the log")
            self._spool = (measured + len(payload), when)

    def _measured_spool(self) -> tuple[int, float]:
        if not self.spool_max_bytes:
            return 0, 0.0
        if self._spool is None or time.monotonic() - self._spool[1] >= SPOOL_SCAN_S:
            self._spool = (spool_bytes(self.directory), time.monotonic())
        return self._spool

    def _file(self, day: str) -> int:
        if self._open is not None and (self._open.day != day or self._expired(self._open)):
            self._close()
        if self._open is None:
            folder = self.directory / day
            folder.mkdir(parents=True, exist_ok=True)
            fd, path = self._create(folder)
            self._open = _OpenFile(fd, path, day, time.monotonic())
        return self._open.fd

    def _create(self, folder: Path) -> tuple[int, Path]:
        """A new file named by this instance and the UTC time it is opened (the clock's, not
        the rows'), or the next free microsecond: never one that exists, open or closed, so no
        file is appended to twice."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        opened = datetime.now(UTC)
        while True:
            path = folder / f"{self.instance}.{opened:%Y%m%dT%H%M%S%f}{OPEN}.jsonl"
            if not closed_name(path).exists():
                try:
                    return os.open(path, flags, 0o644), path
                except FileExistsError:
                    pass
            opened += timedelta(microseconds=1)

    def _expired(self, open_file: _OpenFile) -> bool:
        return bool(self.rotate_s) and time.monotonic() - open_file.since >= self.rotate_s

    def _close(self) -> None:
        if self._open is not None:
            os.close(self._open.fd)
            self._open.path.rename(closed_name(self._open.path))
            self._open = None

    def close_expired(self) -> None:
        """Close the open file if it is older than `rotate_s` (the rotation thread's call)."""
        with self._lock:
            if self._open is not None and self._expired(self._open):
                self._close()

    def close(self) -> None:
        """Close the open file (renamed: closed), if any; the next append opens a new one."""
        with self._lock:
            self._close()

    def rotate_in_background(self) -> threading.Thread:
        """Close files every `rotate_s` even when no request comes to do it."""
        if not self.rotate_s:
            raise ValueError("rotate_in_background needs rotate_s > 0")

        def run() -> None:
            while True:
                time.sleep(min(self.rotate_s, 1.0))
                self.close_expired()

        thread = threading.Thread(target=run, name="prediction-log-rotation", daemon=True)
        thread.start()
        return thread


def closed_name(path: Path) -> Path:
    """`x.open.jsonl` -> `x.jsonl` (the name a file has once closed, here and where shipped)."""
    if not is_open(path):
        return path
    return path.with_name(path.name.removesuffix(f"{OPEN}.jsonl") + ".jsonl")


def is_open(path: Path) -> bool:
    return path.name.endswith(f"{OPEN}.jsonl")


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
