"""The prediction log leaves the pod: closed files reach the store whole and only then leave the
pod, a file still written waits, a store that is down keeps everything here until it is back,
and a server told to stop ships what its workers logged before it exits (real S3 protocol:
moto's server on loopback; real server processes)."""

import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gitml.config import PROJ_ROOT
from gitml.ports import free_port
from gitml.schema import EXAMPLE_ROW
from gitml.serving import shipping
from gitml.serving.predlog import PredictionLog, is_open, read_predictions, spool_bytes
from tests.e2e.moto import moto_s3

NOON = datetime(2026, 11, 23, 12, tzinfo=UTC)
BUCKET = "predictions"


def logged(directory: Path, instance: str, ids: list[str], close: bool = True) -> None:
    log = PredictionLog(directory, "v1", instance=instance)
    for request_id in ids:
        log.append(request_id, [EXAMPLE_ROW, EXAMPLE_ROW], [1.0, 2.0], now=NOON)
    if close:
        log.close()


def shipper(directory: Path, url: str, started: float | None = None) -> shipping.Shipper:
    made = shipping.Shipper(directory, url, 0.2, shipping.ShipperMetrics(1 << 20))
    if started is not None:
        made.started = started
    return made


def test_closed_files_reach_the_store_whole_and_then_leave_the_pod(tmp_path: Path) -> None:
    pod, store = tmp_path / "pod", tmp_path / "store"
    logged(pod, "pod-a", ["r1", "r2"])
    logged(pod, "pod-b", ["r3"])
    before = sorted(p.relative_to(pod) for p in pod.rglob("*.jsonl"))
    ship = shipper(pod, str(store))
    assert ship.ship_once()
    assert sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file()) == before
    assert not list(pod.rglob("*.jsonl"))
    frame = read_predictions(store)
    assert sorted(set(frame["request_id"])) == ["r1", "r2", "r3"] and len(frame) == 6
    assert ship.metrics.shipped._value.get() == sum(
        p.stat().st_size for p in store.rglob("*.jsonl")
    )
    assert ship.metrics.spool_bytes._value.get() == 0


def test_a_file_being_written_waits_and_one_left_by_a_dead_process_is_shipped(
    tmp_path: Path,
) -> None:
    pod, store = tmp_path / "pod", tmp_path / "store"
    logged(pod, "crashed", ["before"], close=False)  # a process that died with its file open
    started = time.time() + 1  # this shipper's process started after that file's last write
    logged(pod, "live", ["now"], close=False)  # a live writer's open file
    (live,) = pod.rglob("live.*.open.jsonl")
    os.utime(live, (started, started))  # written as this process started: its writer may live
    assert shipper(pod, str(store), started).ship_once()
    assert read_predictions(store)["request_id"].tolist() == ["before", "before"]
    assert not list(store.rglob("*.open.jsonl"))  # shipped under the name it has once closed
    assert list(pod.rglob("*.jsonl")) == [live]


def test_a_file_renamed_while_it_is_listed_is_left_for_the_next_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = tmp_path / "pod"
    logged(pod, "pod-a", ["r1"])
    real = list(pod.rglob("*.jsonl"))
    renamed = real[0].with_name("pod-b.20261123T120000000000.open.jsonl")  # listed, then gone
    monkeypatch.setattr(Path, "glob", lambda self, pattern: iter([renamed, *real]))
    assert shipping.ready_files(pod, time.time()) == real
    assert shipping.spool(pod, time.time(), time.time()).files == 1


def test_an_empty_closed_file_is_removed_not_shipped(tmp_path: Path) -> None:
    (pod := tmp_path / "pod" / "2026-11-23").mkdir(parents=True)
    (pod / "idle.20261123T120000000000.jsonl").write_text("")
    assert shipper(tmp_path / "pod", str(tmp_path / "store")).ship_once()
    assert not list(tmp_path.rglob("*.jsonl"))


def test_the_spool_counts_every_byte_and_ages_the_oldest_ready_file(tmp_path: Path) -> None:
    pod = tmp_path / "pod"
    logged(pod, "older", ["r1"])
    logged(pod, "newer", ["r2", "r3"])
    logged(pod, "live", ["r4"], close=False)  # its writer lives: counted in bytes, not ready
    sizes = {p.name.split(".")[0]: p.stat().st_size for p in pod.rglob("*.jsonl")}
    for name, modified in [("older", 1_000.0), ("newer", 1_030.0), ("live", 1_050.0)]:
        (path,) = pod.rglob(f"{name}.*")
        os.utime(path, (modified, modified))
    assert [is_open(p) for p in pod.rglob("live.*")] == [True]
    assert shipping.spool(pod, started=900.0, now=1_060.0) == shipping.Spool(
        bytes=sum(sizes.values()), files=2, oldest_s=60.0
    )
    assert shipping.spool(pod, started=900.0, now=990.0).oldest_s == 0.0  # a clock behind
    assert shipping.spool(tmp_path / "none", 0.0, 5.0) == shipping.Spool(0, 0, 0.0)


def exposed(metrics: shipping.ShipperMetrics) -> dict[str, str]:
    """Metric name: HELP text, as GET /metrics writes them (the multiprocess collector of the
    server writes no `_created` series: this single-process registry's are left out)."""
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return {name: doc for name, doc in re.findall(r"^# HELP (\S+) (.*)$", text, re.MULTILINE)
            if not name.endswith("_created")}  # fmt: skip


def test_the_metrics_are_the_ones_the_docs_and_the_alert_rules_name() -> None:
    """The serving guide's table gives each metric's name and HELP line; the alert rules (and
    their promtool cases) query these names."""
    table = re.findall(r"^\| `(gitml_prediction_log_\w+)` \| (.+?) \|$",
                       (PROJ_ROOT / "docs/guide/serving.md").read_text(), re.MULTILINE)  # fmt: skip
    metrics = shipping.ShipperMetrics(4096)
    assert exposed(metrics) == dict(table) and len(table) == 6
    queried = set(re.findall(r"gitml_prediction_log_sp\w+|gitml_prediction_log_ship\w+",
                             (PROJ_ROOT / "deploy/prometheus/alerts.yml").read_text()))  # fmt: skip
    assert queried and queried <= set(exposed(metrics))
    assert metrics.registry.get_sample_value("gitml_prediction_log_spool_limit_bytes") == 4096


def test_start_reports_the_spool_at_once_and_ships_in_a_background_thread(
    tmp_path: Path,
) -> None:
    pod, store = tmp_path / "pod", tmp_path / "store"
    logged(pod, "pod-a", ["r1", "r2"])
    waiting = spool_bytes(pod)
    slow = shipping.start(pod, str(store), 3_600.0, 1 << 16)  # its first try is an hour away
    sample = slow.metrics.registry.get_sample_value
    assert [sample(f"gitml_prediction_log_spool_{name}") for name in
            ("bytes", "files", "limit_bytes")] == [waiting, 1, 1 << 16]  # fmt: skip
    (thread,) = [t for t in threading.enumerate() if t.name == "prediction-log-shipper"]
    assert thread.is_alive() and thread.daemon  # a server that dies is not held up by it
    assert not store.exists()
    assert slow.flush(timeout=10)
    assert not thread.is_alive()
    assert sorted(read_predictions(store)["request_id"]) == ["r1", "r1", "r2", "r2"]

    logged(pod, "pod-b", ["r3"])
    quick = shipping.start(pod, str(store), 0.05, 1 << 16)
    deadline = time.monotonic() + 30
    while list(pod.rglob("*.jsonl")):  # shipped by the thread, with no flush
        assert time.monotonic() < deadline, "the thread never shipped"
        time.sleep(0.05)
    assert "r3" in set(read_predictions(store)["request_id"])
    assert quick.metrics.registry.get_sample_value(
        "gitml_prediction_log_shipped_bytes_total"
    ) == sum(p.stat().st_size for p in store.rglob("pod-b.*"))
    assert quick.flush(timeout=10)


@pytest.mark.parametrize(
    ("url", "named"),
    [("nosuch://bucket/logs", "nosuch"), ("gs://bucket/logs", "gcsfs")],
)
def test_a_url_no_installed_backend_can_write_is_named(url: str, named: str) -> None:
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        if named == "gcsfs":
            pytest.fail("gcsfs is installed: pick a scheme whose backend is not")
    with pytest.raises(
        shipping.StoreError, match=f"GITML_PREDICTION_LOG_URL={url}.*{named}"
    ) as err:
        shipping.store(url)
    if named == "gcsfs":  # a package that is missing: the message says what to do
        assert str(err.value).endswith(
            "(add that package to the project's dependencies: the image installs them)"
        )


def test_the_stores_root_is_the_urls_path_without_a_trailing_slash(tmp_path: Path) -> None:
    for url in (f"{tmp_path}/store", f"{tmp_path}/store/", f"file://{tmp_path}/store/"):
        fs, root = shipping.store(url)
        assert "file" in fs.protocol and root == f"{tmp_path}/store"
    assert shipping.store("s3://bucket/staging/")[1] == "bucket/staging"


def test_each_store_is_a_filesystem_of_its_own() -> None:
    """fsspec shares instances made with the same arguments, whatever AWS_* said when each was
    made: a shipper must not write with another one's endpoint or keys."""
    assert shipping.store("s3://bucket/a")[0] is not shipping.store("s3://bucket/a")[0]


def test_a_store_that_keeps_less_than_was_sent_keeps_the_file_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pod = tmp_path / "pod"
    logged(pod, "pod-a", ["r1"])
    (path,) = pod.rglob("*.jsonl")
    size = path.stat().st_size
    ship = shipper(pod, str(tmp_path / "store"))
    ship.fs.size = lambda target: size - 1  # a store that dropped the last byte
    assert not ship.ship_once()
    assert list(pod.rglob("*.jsonl")) == [path]
    assert f"the store holds {size - 1} bytes of {size}" in capsys.readouterr().err


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """AWS settings as a pod gets them (the standard variables, no code of ours reading them),
    for a moto server on a port chosen now and started by the test."""
    port = free_port()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                        # one try per ship: botocore's retries would only slow the test down
                        "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    yield port


def make_bucket(endpoint: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)


def s3_rows(endpoint: str, tmp_path: Path) -> Any:
    """What the store holds, read back as `make fetch-logs` does (dvc get-url)."""
    from gitml.monitoring.fetch_logs import fetch

    target = tmp_path / f"fetched-{time.monotonic_ns()}"
    fetch(f"s3://{BUCKET}/staging", target)
    return read_predictions(target)


def test_a_store_that_is_down_keeps_every_file_until_it_is_back(
    tmp_path: Path, s3_env: int
) -> None:
    pod = tmp_path / "pod"
    logged(pod, "pod-a", [f"r{i}" for i in range(5)])
    ship = shipper(pod, f"s3://{BUCKET}/staging")
    assert not ship.ship_once()  # nothing listens on the endpoint
    assert len(list(pod.rglob("*.jsonl"))) == 1
    assert ship.metrics.failures._value.get() == 1
    assert ship.metrics.spool_files._value.get() == 1
    with moto_s3(s3_env) as endpoint:
        make_bucket(endpoint)
        assert ship.ship_once()
        assert not list(pod.rglob("*.jsonl"))
        assert sorted(set(s3_rows(endpoint, tmp_path)["request_id"])) == [
            f"r{i}" for i in range(5)
        ]


def post(url: str, request_id: str) -> int:
    return httpx.post(f"{url}/predict", json={"data": {"values": [EXAMPLE_ROW] * 2}},
                      headers={"X-Request-ID": request_id}, timeout=30).status_code  # fmt: skip


def metric(url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name)  # fmt: skip


def test_sigterm_ships_every_answered_row_even_after_the_store_was_down(
    packaged_model: Path, trained_model: Any, tmp_path: Path, s3_env: int
) -> None:
    """Two workers, the store down at first: rows wait in the pod (the spool metric says so),
    the store comes back, and SIGTERM ships the files the workers still had open."""
    from tests.conftest import running_server

    settings = {"workers": "2", "prediction_log_url": f"s3://{BUCKET}/staging",
                "prediction_log_ship_interval_s": "0.2", "prediction_log_rotate_s": "1"}  # fmt: skip
    with running_server(packaged_model, trained_model, tmp_path, **settings) as (served, proc):
        answered = [f"down-{i}" for i in range(20) if post(served.url, f"down-{i}") == 200]
        # within seconds the files roll and the shipper tries (later on a loaded machine)
        deadline = time.monotonic() + 60
        while metric(served.metrics_url, "gitml_prediction_log_ship_failures_total") < 1:
            assert time.monotonic() < deadline, "the shipper never tried the store"
            time.sleep(0.2)
        assert metric(served.metrics_url, "gitml_prediction_log_spool_bytes") > 0
        with moto_s3(s3_env) as endpoint:
            make_bucket(endpoint)
            answered += [f"up-{i}" for i in range(20) if post(served.url, f"up-{i}") == 200]
            proc.terminate()
            assert proc.wait(timeout=60) == 0
            assert not list(served.log_dir.rglob("*.jsonl"))  # all of it left the pod
            stored = s3_rows(endpoint, tmp_path)
    assert len(answered) == 40
    assert sorted(set(stored["request_id"])) == sorted(answered)
    assert len(stored) == 2 * len(answered)


def test_a_store_still_down_at_sigterm_fails_the_exit_and_leaves_the_files_here(
    packaged_model: Path, trained_model: Any, tmp_path: Path, s3_env: int
) -> None:
    from tests.conftest import running_server

    settings = {"prediction_log_url": f"s3://{BUCKET}/staging",
                "prediction_log_ship_interval_s": "0.2",
                "prediction_log_flush_timeout_s": "2"}  # fmt: skip
    with running_server(packaged_model, trained_model, tmp_path, **settings) as (served, proc):
        answered = [f"r{i}" for i in range(5) if post(served.url, f"r{i}") == 200]
        proc.terminate()
        assert proc.wait(timeout=60) == 1
    left = read_predictions(served.log_dir)
    assert sorted(set(left["request_id"])) == sorted(answered) and len(answered) == 5
    output = (tmp_path / "server.log").read_text()
    assert "not shipped to s3://predictions/staging before the flush timeout" in output


def test_a_url_without_a_log_directory_or_backend_stops_the_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("GITML_")}
    for extra, said in [
        ({"GITML_PREDICTION_LOG_URL": "s3://b/x"}, "GITML_PREDICTION_LOG_DIR is not"),
        ({"GITML_PREDICTION_LOG_URL": "nosuch://b/x",
          "GITML_PREDICTION_LOG_DIR": str(tmp_path)}, "GITML_PREDICTION_LOG_URL=nosuch://b/x"),
    ]:  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "gitml", "serve"], env={**base, **extra},
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 1 and said in done.stderr, done.stderr
