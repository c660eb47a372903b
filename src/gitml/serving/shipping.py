"""The prediction log leaves the pod: the log's closed files (gitml.serving.predlog) are copied to
the object store that GITML_PREDICTION_LOG_URL names, under the same `<day>/<file>.jsonl` paths,
and removed here once the store holds them whole. `make fetch-logs` (PREDICTION_LOGS_URL) reads
that folder back.

fsspec picks the store by the URL's scheme: s3:// (s3fs, in the image; credentials and an
endpoint from the usual AWS_* variables), gs:// or az:// once gcsfs or adlfs is added to the
project's dependencies, or a plain folder. Runs in the server's supervisor process
(gitml.serving.workers): a thread ships every `interval` seconds, retrying a store that is down
with a growing pause, and on shutdown, once the workers have exited, ships what is left,
the files they had open included.

A file still open is never shipped while its writer lives; one left open by a process that
died before this one started (a crashed container, restarted in the same pod) is closed as far
as anyone will ever write it, and is shipped. An object is written whole or not at all (object
stores; a folder gets a temporary name, then a rename), and a file shipped twice (the pod died
between the copy and the removal) lands on the same name with the same bytes.
"""

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitml.serving.jsonlog import say
from gitml.serving.predlog import closed_name, day_files, is_open, spool_bytes

MAX_PAUSE_S = 300.0  # the longest wait between tries while the store is down


class StoreError(ValueError):
    """GITML_PREDICTION_LOG_URL names no store this image can write to."""


def store(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, root path) for `url`; a scheme with no backend installed is named."""
    import fsspec  # here: the supervisor imports fsspec only where it ships

    try:
        # a filesystem of its own: fsspec's shared instances are keyed by their arguments, not
        # by the environment (AWS_*) that configures them
        fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except ImportError as err:
        raise StoreError(f"GITML_PREDICTION_LOG_URL={url}: {err} (add that package to the "
                         "project's dependencies: the image installs them)") from None  # fmt: skip
    except ValueError as err:
        raise StoreError(f"GITML_PREDICTION_LOG_URL={url}: {err}") from None
    return fs, root  # fsspec strips a trailing slash: objects land at <root>/<day>/<file>


def ready_files(directory: Path, started: float) -> list[Path]:
    """The log files to ship now, oldest first: every closed one, and every open one whose
    writer died before `started` (its last write is older than this process)."""
    found = []
    for path in day_files(directory):
        try:  # a writer may rename its file meanwhile: it is found under the new name next time
            modified = path.stat().st_mtime
        except FileNotFoundError:
            continue
        if not is_open(path) or modified < started:
            found.append((modified, path.name, path))
    return [path for *_, path in sorted(found)]


def ship_file(fs: Any, root: str, directory: Path, path: Path) -> int:
    """Copy one file to `root/<day>/<closed name>`, check the copy's size, remove the file;
    the bytes shipped (an empty file is only removed)."""
    size = path.stat().st_size
    if size:
        target = f"{root}/{path.parent.name}/{closed_name(path).name}"
        if "file" in fs.protocol:  # a folder: written under a temporary name, then renamed
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(path), f"{target}.part")
            fs.mv(f"{target}.part", target)
        else:
            fs.put_file(str(path), target)
        stored = fs.size(target)
        if stored != size:
            raise OSError(f"{target}: the store holds {stored} bytes of {size}")
    path.unlink()
    return size


@dataclass
class Spool:
    """What waits to be shipped: bytes, files, and the age of the oldest closed file."""

    bytes: int = 0
    files: int = 0
    oldest_s: float = 0.0


def spool(directory: Path, started: float, now: float) -> Spool:
    """Bytes of every file here (open ones too: the bound of predlog counts them), and the
    ready files with the age of the oldest."""
    files = ready_files(directory, started)
    oldest = 0.0
    with contextlib.suppress(FileNotFoundError, IndexError):
        oldest = max(now - files[0].stat().st_mtime, 0.0)
    total = spool_bytes(directory)
    return Spool(total, len(files), oldest)


class ShipperMetrics:
    """prometheus-client values; in the supervisor, PROMETHEUS_MULTIPROC_DIR is set first, so the
    workers' GET /metrics reports them with their own."""

    def __init__(self, limit_bytes: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()

        def gauge(name: str, doc: str) -> Gauge:  # one series, whichever worker is scraped
            return Gauge(name, doc, registry=self.registry, multiprocess_mode="max")

        self.spool_bytes = gauge("gitml_prediction_log_spool_bytes",
                                 "Prediction-log bytes in the pod not shipped yet.")  # fmt: skip
        self.spool_files = gauge("gitml_prediction_log_spool_files",
                                 "Closed prediction-log files waiting to be shipped.")  # fmt: skip
        self.oldest = gauge(
            "gitml_prediction_log_spool_oldest_seconds",
            "Age of the oldest prediction-log file waiting to be shipped.",
        )
        limit = gauge(
            "gitml_prediction_log_spool_limit_bytes",
            "GITML_PREDICTION_LOG_SPOOL_MAX_BYTES: past it, rows are not logged.",
        )
        limit.set(limit_bytes)
        self.shipped = Counter("gitml_prediction_log_shipped_bytes",
                               "Prediction-log bytes shipped to the store.",
                               registry=self.registry)  # fmt: skip
        self.failures = Counter("gitml_prediction_log_ship_failures",
                                "Tries to ship a prediction-log file that failed.",
                                registry=self.registry)  # fmt: skip

    def observe(self, now: Spool) -> None:
        self.spool_bytes.set(now.bytes)
        self.spool_files.set(now.files)
        self.oldest.set(now.oldest_s)


@dataclass
class Shipper:
    """Ships `directory`'s ready files to `url` every `interval` seconds in a thread."""

    directory: Path
    url: str
    interval: float
    metrics: ShipperMetrics
    started: float = field(default_factory=time.time)
    clock: Callable[[], float] = time.time
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.fs, self.root = store(self.url)

    def ship_once(self, files: list[Path] | None = None) -> bool:
        """Ship the ready files (or `files`); True if every one is shipped."""
        with self._lock:  # the thread and the final flush never ship the same file at once
            failed = False
            for path in ready_files(self.directory, self.started) if files is None else files:
                try:
                    self.metrics.shipped.inc(ship_file(self.fs, self.root, self.directory, path))
                except FileNotFoundError:
                    continue  # shipped by an earlier try that ended in between
                except Exception as err:  # a store's errors: OSError, botocore's, fsspec's
                    self.metrics.failures.inc()
                    say(f"prediction log: shipping {path.name} to {self.url} failed, kept "
                        f"here and tried again: {type(err).__name__}: {err}", "error")  # fmt: skip
                    failed = True
                    break  # the store is down or refuses: the next try comes after a pause
            self.metrics.observe(spool(self.directory, self.started, self.clock()))
            return not failed

    def run(self) -> None:
        pause = self.interval
        while not self._stop.wait(pause):
            try:
                shipped = self.ship_once()
            except Exception as err:  # the thread must outlive any one try
                say(f"prediction log: shipping failed: {type(err).__name__}: {err}", "error")
                shipped = False
            pause = self.interval if shipped else min(pause * 2, MAX_PAUSE_S)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="prediction-log-shipper",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Stop the thread, then ship every file left, open ones included (their writers have
        exited), trying again until `timeout`; True if nothing is left."""
        deadline = time.monotonic() + timeout  # a try in progress counts against it too
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        while True:
            left = sorted(day_files(self.directory))
            if self.ship_once(left):
                return True
            if time.monotonic() + self.interval > deadline:
                say(
                    f"prediction log: {len(left)} file(s) not shipped to {self.url} before "
                    f"the flush timeout ({timeout:g} s): they are lost with the pod",
                    "error",
                )
                return False
            time.sleep(self.interval)


def start(directory: Path, url: str, interval: float, limit_bytes: int) -> Shipper:
    """A running shipper (StoreError: the URL names no store this image can reach)."""
    shipper = Shipper(directory, url, interval, ShipperMetrics(limit_bytes))
    with contextlib.suppress(OSError):
        shipper.metrics.observe(spool(directory, shipper.started, shipper.clock()))
    shipper.start()
    return shipper
