"""The prediction log leaves the pod on a cluster: the real image, run by the local cluster as
the Deployment says (two replicas, each spooling on a volume of its own), ships to a real S3 API
(moto's server) named by the namespace's Secret. A pod deleted in the middle of traffic ships
what it logged before it exits, and so do the rest when scaled down: every answered row is in
the store, read back as `make fetch-logs` reads it.

Files roll only after an hour here, so nothing leaves a pod before it is told to stop: what the
store holds, the SIGTERM flush shipped."""

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gitml.release import k8s
from gitml.release.cluster.api import execute
from gitml.release.cluster.cli import Running, running
from gitml.schema import EXAMPLE_ROW
from gitml.serving.predlog import read_predictions
from tests.e2e.moto import moto_s3

pytestmark = pytest.mark.slow

ENV, NAMESPACE, NAME = "staging", "gitml-staging", "gitml-serving"
BUCKET = "predictions"
PREFIX = f"s3://{BUCKET}/{ENV}"


@pytest.fixture(scope="module")
def local(registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running(tmp_path_factory.mktemp("cluster"), [NAMESPACE], {}, max_replicas=2,
                 registry_address=registry) as up:  # fmt: skip
        yield up


def bridge_gateway(up: Running) -> str:
    """The host's address on the pods' network: where a pod reaches a server on this host."""
    [network] = json.loads(up.cluster.podman("network", "inspect", "podman"))
    return str(network["subnets"][0]["gateway"])


def wait_for_address(address: str, timeout: float = 120) -> None:
    """The bridge is made when the first container joins it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket() as probe:
                probe.bind((address, 0))
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{address} never came up on this host")
            time.sleep(1)


def pods(up: Running) -> list[str]:
    answer = execute(up.cluster, ["get", "pods", "-n", NAMESPACE, "-o", "json"])
    return [p["metadata"]["name"] for p in json.loads(answer.stdout)["items"]
            if p["status"]["containerStatuses"][0]["state"].get("waiting", {}).get("reason")
            != "Terminating"]  # fmt: skip


def rolled_out(up: Running) -> None:
    answer = execute(up.cluster, ["rollout", "status", f"deployment/{NAME}", "-n", NAMESPACE,
                                  "--timeout=300s"])  # fmt: skip
    assert answer.code == 0, answer.stdout + answer.stderr


def manifests(image: str, endpoint: str) -> list[dict]:
    docs = k8s.pin(k8s.render(ENV), image, "v1")
    deployment = k8s.the(docs, "Deployment")
    deployment["spec"]["replicas"] = 2  # one to delete, one that serves on meanwhile
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    quick = {
        "GITML_PREDICTION_LOG_ROTATE_S": "3600",
        "GITML_PREDICTION_LOG_SHIP_INTERVAL_S": "0.5",
    }
    container["env"] = [e for e in container["env"] if e["name"] not in quick]
    container["env"] += [{"name": name, "value": value} for name, value in quick.items()]
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "gitml-prediction-log", "namespace": NAMESPACE},
              "stringData": {"url": PREFIX, "AWS_ENDPOINT_URL": endpoint,
                             "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                             "AWS_DEFAULT_REGION": "us-east-1"}}  # fmt: skip
    return [secret, *docs]


class Traffic:
    """Requests with ids of their own through the Service, one connection each, until stopped;
    `answered`: the ids that got a 200 (their rows must be logged)."""

    def __init__(self, url: str) -> None:
        self.url, self.answered, self.failed = url, list[str](), list[str]()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            request_id = uuid.uuid4().hex
            try:
                answer = httpx.post(f"{self.url}/predict", timeout=10,
                                    json={"data": {"values": [EXAMPLE_ROW, EXAMPLE_ROW]}},
                                    headers={"X-Request-ID": request_id})  # fmt: skip
                (self.answered if answer.status_code == 200 else self.failed).append(request_id)
            except httpx.HTTPError as err:
                self.failed.append(f"{type(err).__name__}: {err}")
            time.sleep(0.02)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_a_pod_killed_under_traffic_ships_every_row_it_answered(
    local: Running, released: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gitml.monitoring.fetch_logs import fetch

    gateway = bridge_gateway(local)
    with moto_s3(host=gateway) as endpoint:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)  # fmt: skip
        local.cluster.apply(manifests(released["v1"], endpoint))
        rolled_out(local)
        wait_for_address(gateway)
        first = pods(local)
        assert len(first) == 2
        traffic = Traffic(local.service_url(NAMESPACE, NAME))
        time.sleep(5)
        killed = first[0]
        answer = execute(local.cluster, ["delete", "pod", killed, "-n", NAMESPACE])
        assert answer.code == 0, answer.stderr
        while killed in pods(local) or len(pods(local)) < 2:  # gone, and replaced
            time.sleep(1)
        rolled_out(local)
        time.sleep(5)
        traffic.finish()
        answer = execute(local.cluster, ["scale", f"deployment/{NAME}", "--replicas=0",
                                         "-n", NAMESPACE])  # fmt: skip
        assert answer.code == 0, answer.stderr
        deadline = time.monotonic() + 120
        while pods(local) or any(s.reason != "Terminated" for s in local.cluster.pods.values()):
            assert time.monotonic() < deadline, "the pods did not stop"
            time.sleep(1)
        for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing"}.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        fetch(PREFIX, tmp_path / "fetched")
    stored = read_predictions(tmp_path / "fetched")
    assert len(traffic.answered) >= 50, traffic.failed[-5:]
    assert set(stored["request_id"]) == set(traffic.answered)
    assert len(stored) == 2 * len(traffic.answered)
    shipped_by = {p.name.split(".")[0].rsplit("-w", 1)[0]
                  for p in (tmp_path / "fetched").rglob("*.jsonl")}  # fmt: skip
    assert killed in shipped_by  # the deleted pod's rows came from that pod's own flush
    assert len(shipped_by) == 3  # and the replacement's, and the other first pod's
