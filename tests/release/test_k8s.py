"""The Kubernetes deployment targets in deploy/k8s: each overlay renders with `kubectl kustomize`,
every rendered object is valid against the Kubernetes API schemas (kubernetes-validate, offline,
strict), and the serving rules hold: zero-downtime rollouts, /healthz probes, bounded resources,
a locked-down non-root container, an image pinned by digest per environment, and a prediction
log on shared storage, one file per pod."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from gitml.release import k8s
from gitml.release.cluster.api import ApiServer, kubeconfig
from gitml.release.cluster.cli import Running, running
from gitml.release.cluster.runtime import Podman
from gitml.release.cluster.workloads import Cluster
from tests.release.lockdown import LOG_VOLUME

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("staging", "production")
KUBERNETES_VERSION = "1.30.0"  # schemas bundled with kubernetes-validate: no network
KINDS = {
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
}
UID = 10001
PORT = 8080
PINNED_IMAGE = re.compile(r"ghcr\.io/[a-z0-9._-]+/[a-z0-9._/-]+@sha256:[0-9a-f]{64}")
QUANTITY_UNITS = {
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
}

Doc = dict[str, Any]
DIGEST = "ghcr.io/acme/bike-demand@sha256:" + "1" * 64


@dataclass(frozen=True)
class Rendered:
    overlay: str
    kustomization: Doc
    docs: list[Doc]

    def one(self, kind: str) -> Doc:
        found = [doc for doc in self.docs if doc["kind"] == kind]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}, got {len(found)}"
        return found[0]

    @property
    def deployment(self) -> Doc:
        return self.one("Deployment")

    @property
    def pod(self) -> Doc:
        return self.deployment["spec"]["template"]

    @property
    def container(self) -> Doc:
        containers = self.pod["spec"]["containers"]
        assert len(containers) == 1, f"{self.overlay}: expected one container"
        return containers[0]


def kustomize(directory: Path) -> list[Doc]:
    kubectl = os.environ.get("KUBECTL", "kubectl")
    if shutil.which(kubectl) is None:
        pytest.fail(
            f"{kubectl!r} not found: the deploy/k8s tests render the overlays with "
            "`kubectl kustomize`; `make k8s-tools` installs it (Debian package kubernetes-client)."
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
    assert docs, f"kubectl kustomize {directory} rendered nothing"
    return docs


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    overlay = K8S / "overlays" / request.param
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    return Rendered(request.param, kustomization, kustomize(overlay))


@pytest.fixture(scope="module")
def both() -> dict[str, Rendered]:
    return {
        name: Rendered(
            name,
            yaml.safe_load((K8S / "overlays" / name / "kustomization.yaml").read_text()),
            kustomize(K8S / "overlays" / name),
        )
        for name in OVERLAYS
    }


def dockerfile_env(name: str) -> str:
    """The value the Dockerfile's `ENV` gives `name`: what the image the pods run sees."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ENV "):
            for word in shlex.split(line[4:]):
                key, _, value = word.partition("=")
                if key == name:
                    return value
    pytest.fail(f"the Dockerfile sets no ENV {name}")


def quantity(value: Any) -> float:
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", str(value))
    assert match and match.group(2) in QUANTITY_UNITS, f"unparsed quantity {value!r}"
    return float(match.group(1)) * QUANTITY_UNITS[match.group(2)]


def effective(rendered: Rendered, key: str) -> Any:
    """A securityContext setting as the kubelet applies it: the container's, else the pod's."""
    container = rendered.container.get("securityContext", {})
    pod = rendered.pod["spec"].get("securityContext", {})
    return container.get(key, pod.get(key))


def assert_schema_valid(docs: list[Doc]) -> None:
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:  # a jsonschema ValidationError
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
            pytest.fail(
                f"{name} is not a valid Kubernetes {KUBERNETES_VERSION} object: "
                f"{where}: {error.message}",
                pytrace=False,
            )


def test_base_renders_valid_objects() -> None:
    docs = kustomize(K8S / "base")
    assert {doc["kind"] for doc in docs} == KINDS
    assert_schema_valid(docs)


def test_overlay_renders_valid_objects(rendered: Rendered) -> None:
    kinds = [doc["kind"] for doc in rendered.docs]
    assert sorted(kinds) == sorted(KINDS), kinds
    assert_schema_valid(rendered.docs)
    for doc in rendered.docs:
        assert doc["metadata"]["name"] == "gitml-serving", doc["kind"]


def test_rollout_never_drops_capacity(rendered: Rendered) -> None:
    spec = rendered.deployment["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    rolling = spec["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] in (0, "0%")
    assert isinstance(rolling["maxSurge"], int) and rolling["maxSurge"] >= 1
    assert spec["minReadySeconds"] > 0
    assert 0 < spec["revisionHistoryLimit"] <= 10


def test_probes_hit_healthz_on_the_named_port(rendered: Rendered) -> None:
    container = rendered.container
    assert {"name": "http", "containerPort": PORT, "protocol": "TCP"} in container["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in container, f"{rendered.overlay}: no {probe}"
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
        assert container[probe]["failureThreshold"] >= 1
    startup = container["startupProbe"]
    # Model import + warm-up takes ~5-20 s; the startup budget must cover it with room to spare.
    budget = (
        startup.get("initialDelaySeconds", 0)
        + startup["periodSeconds"] * startup["failureThreshold"]
    )
    assert budget >= 60, f"startupProbe allows only {budget} s"
    # A pod is taken out of rotation before the kubelet gives up on it and restarts it.
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert (
        readiness["periodSeconds"] * readiness["failureThreshold"]
        <= liveness["periodSeconds"] * liveness["failureThreshold"]
    )


def test_resources_have_requests_and_limits(rendered: Rendered) -> None:
    resources = rendered.container["resources"]
    for resource in ("cpu", "memory"):
        request = quantity(resources["requests"][resource])
        limit = quantity(resources["limits"][resource])
        assert 0 < request <= limit, f"{resource}: request {request} > limit {limit}"


def test_each_worker_process_has_a_core(rendered: Rendered) -> None:
    """GITML_WORKERS processes each use one core at most: the cpu request is what they use."""
    env = {var["name"]: var for var in rendered.container["env"]}
    workers = int(env["GITML_WORKERS"]["value"])
    assert quantity(rendered.container["resources"]["requests"]["cpu"]) == workers


def test_container_runs_locked_down(rendered: Rendered) -> None:
    assert effective(rendered, "runAsNonRoot") is True
    assert effective(rendered, "runAsUser") == UID  # the image's USER 10001:10001
    security = rendered.container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert effective(rendered, "seccompProfile") == {"type": "RuntimeDefault"}
    # The read-only root needs somewhere writable: /tmp, from an emptyDir.
    mounts = {mount["mountPath"]: mount["name"] for mount in rendered.container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in rendered.pod["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_service_and_selectors_reach_the_pods(rendered: Rendered) -> None:
    pod_labels = rendered.pod["metadata"]["labels"]
    service = rendered.one("Service")["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    assert service["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    port_names = {port["name"] for port in rendered.container["ports"]}
    assert service["ports"][0]["targetPort"] in port_names
    selectors = {
        "Service": service["selector"],
        "Deployment": rendered.deployment["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget": rendered.one("PodDisruptionBudget")["spec"]["selector"][
            "matchLabels"
        ],
    }
    for kind, selector in selectors.items():
        assert selector, f"{kind} selects everything"
        assert selector.items() <= pod_labels.items(), f"{kind} selector misses the pods"


def test_hpa_scales_the_deployment(rendered: Rendered) -> None:
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": rendered.deployment["metadata"]["name"],
    }
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    assert spec["minReplicas"] <= rendered.deployment["spec"]["replicas"] <= spec["maxReplicas"]
    assert [metric["resource"]["name"] for metric in spec["metrics"]] == ["cpu"]
    assert spec["metrics"][0]["resource"]["target"]["type"] == "Utilization"
    # Utilization is relative to the request, so there must be one (checked above too).
    assert "cpu" in rendered.container["resources"]["requests"]


def test_pdb_lets_nodes_drain(rendered: Rendered) -> None:
    pdb = rendered.one("PodDisruptionBudget")["spec"]
    minimum = rendered.one("HorizontalPodAutoscaler")["spec"]["minReplicas"]
    assert ("minAvailable" in pdb) != ("maxUnavailable" in pdb)
    if "minAvailable" in pdb:
        # At the HPA floor, a budget equal to the replica count would block every eviction.
        assert 1 <= pdb["minAvailable"] < minimum
    else:
        assert pdb["maxUnavailable"] >= 1


def test_overlay_pins_namespace_and_image_by_digest(rendered: Rendered) -> None:
    namespace = f"gitml-{rendered.overlay}"
    assert rendered.kustomization["namespace"] == namespace
    assert {doc["metadata"].get("namespace") for doc in rendered.docs} == {namespace}
    [image] = rendered.kustomization["images"]
    assert image["name"] == "gitml-serving"
    assert image["newName"].startswith("ghcr.io/")
    assert "newTag" not in image
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image["digest"]), image["digest"]
    deployed = rendered.container["image"]
    assert deployed == f"{image['newName']}@{image['digest']}"
    assert PINNED_IMAGE.fullmatch(deployed), deployed


def test_everything_is_marked_with_its_environment(rendered: Rendered) -> None:
    for meta in [doc["metadata"] for doc in rendered.docs] + [rendered.pod["metadata"]]:
        assert meta["labels"]["environment"] == rendered.overlay, meta.get("name")
        assert meta["annotations"]["environment"] == rendered.overlay, meta.get("name")


def test_model_version_and_scrape_annotations(rendered: Rendered) -> None:
    annotations = rendered.pod["metadata"]["annotations"]
    env = {var["name"]: var for var in rendered.container["env"]}
    version = env["GITML_MODEL_VERSION"]
    if "value" in version:
        assert version["value"]
    else:  # downward API: the pod annotation the release workflow sets
        path = version["valueFrom"]["fieldRef"]["fieldPath"]
        match = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", path)
        assert match, path
        assert annotations.get(match.group(1)), f"{match.group(1)} is not set on the pod"
    assert env["GITML_PORT"]["value"] == str(PORT)
    assert annotations["prometheus.io/scrape"] == "true"
    # The scrape target is the server's metrics port, declared as a container port, apart from
    # the API's port, and never the Service's target: metrics are for Prometheus only.
    container_ports = {port["containerPort"]: port["name"] for port in rendered.container["ports"]}
    assert int(annotations["prometheus.io/port"]) in container_ports
    assert annotations["prometheus.io/port"] == env["GITML_METRICS_PORT"]["value"]
    assert annotations["prometheus.io/port"] != env["GITML_PORT"]["value"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert container_ports[int(annotations["prometheus.io/port"])] == "metrics"
    service = rendered.one("Service")
    assert {port["targetPort"] for port in service["spec"]["ports"]} == {"http"}
    # the image's own default is the same port (a plain `docker run` serves metrics there too)
    assert dockerfile_env("GITML_METRICS_PORT") == env["GITML_METRICS_PORT"]["value"]


def test_prediction_log_is_spooled_in_the_pod_and_shipped_from_there(rendered: Rendered) -> None:
    """No shared storage: each pod's log waits on a volume of its own, bounded below the
    volume's size (past which the kubelet would evict the pod), and is shipped where the
    namespace's Secret says; the flush at SIGTERM fits in the grace period."""
    log_dir = dockerfile_env("GITML_PREDICTION_LOG_DIR")
    assert log_dir.startswith("/"), log_dir
    env = {var["name"]: var for var in rendered.container["env"]}
    if "GITML_PREDICTION_LOG_DIR" in env:  # an override must still point at the mount
        assert env["GITML_PREDICTION_LOG_DIR"].get("value") == log_dir
    [mount] = [m for m in rendered.container["volumeMounts"] if m["mountPath"] == log_dir]
    assert not mount.get("readOnly", False)
    assert mount["name"] == LOG_VOLUME  # where the image tests mount their log directory
    [volume] = [v for v in rendered.pod["spec"]["volumes"] if v["name"] == mount["name"]]
    size = quantity(volume["emptyDir"]["sizeLimit"])
    assert 0 < int(env["GITML_PREDICTION_LOG_SPOOL_MAX_BYTES"]["value"]) < size
    assert env["GITML_PREDICTION_LOG_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "gitml-prediction-log",
        "key": "url",
        "optional": True,
    }
    pod = rendered.pod["spec"]
    pre_stop = rendered.container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    flush = float(env["GITML_PREDICTION_LOG_FLUSH_TIMEOUT_S"]["value"])
    assert float(pre_stop[1]) + flush < pod["terminationGracePeriodSeconds"]


def test_each_pod_writes_its_own_log_file(rendered: Rendered) -> None:
    env = {var["name"]: var for var in rendered.container["env"]}
    assert env["GITML_INSTANCE"] == {
        "name": "GITML_INSTANCE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }


def test_staging_and_production_differ(both: dict[str, Rendered]) -> None:
    staging, production = both["staging"], both["production"]
    assert staging.kustomization["namespace"] != production.kustomization["namespace"]
    staging_hpa = staging.one("HorizontalPodAutoscaler")["spec"]
    production_hpa = production.one("HorizontalPodAutoscaler")["spec"]
    base_hpa = next(
        doc for doc in kustomize(K8S / "base") if doc["kind"] == "HorizontalPodAutoscaler"
    )["spec"]
    assert (staging_hpa["minReplicas"], staging_hpa["maxReplicas"]) == (1, 2)
    assert staging.deployment["spec"]["replicas"] == 1
    assert production_hpa["minReplicas"] >= base_hpa["minReplicas"] >= 2
    assert production_hpa["maxReplicas"] >= base_hpa["maxReplicas"]
    assert production.deployment["spec"]["replicas"] >= 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_release_pins_digest_and_version_and_stays_valid(overlay: str) -> None:
    from gitml.release.k8s import pin, render

    image = "ghcr.io/team/gitml-serving@sha256:" + "ab" * 32
    docs = pin(render(overlay), image, "v1.4.2")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"]["gitml/model-version"] == "v1.4.2"
    assert template["spec"]["containers"][0]["image"] == image
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_release_refuses_a_tag_instead_of_a_digest() -> None:
    from gitml.release.k8s import pin, render

    with pytest.raises(ValueError, match="by digest"):
        pin(render("staging"), "ghcr.io/team/gitml-serving:latest", "v1")


def test_pods_can_pull_a_private_ghcr_image(rendered: Rendered) -> None:
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "ghcr-pull"}]


# --- blue/green: which objects each step applies ----------------------------------------------


def by_kind(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_a_candidate_starts_in_the_idle_slot_beside_the_live_one() -> None:
    docs = k8s.pin(k8s.render("production"), DIGEST, "v2")
    applied = by_kind(k8s.in_slot(docs, "green", live="blue"))
    candidate = applied[("Deployment", "gitml-serving-green")]
    assert candidate["spec"]["selector"]["matchLabels"][k8s.SLOT_LABEL] == "green"
    assert candidate["spec"]["template"]["metadata"]["labels"][k8s.SLOT_LABEL] == "green"
    assert applied[("Service", "gitml-serving-preview")]["spec"]["selector"][k8s.SLOT_LABEL] == (
        "green")  # fmt: skip
    assert applied[("Service", "gitml-serving")]["spec"]["selector"][k8s.SLOT_LABEL] == "blue"
    hpa = applied[("HorizontalPodAutoscaler", "gitml-serving")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gitml-serving-blue"
    assert ("Deployment", "gitml-serving-blue") not in applied  # the live slot is left alone
    for doc in applied.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_nothing_is_live_before_the_first_candidate_passed() -> None:
    docs = k8s.pin(k8s.render("staging"), DIGEST, "v1")
    applied = by_kind(k8s.in_slot(docs, "blue", live=None))
    assert ("Service", "gitml-serving") not in applied
    assert ("Service", "gitml-serving-preview") in applied
    switch = by_kind(k8s.switched(docs, "blue"))
    assert set(switch) == {("Service", "gitml-serving"),
                           ("HorizontalPodAutoscaler", "gitml-serving")}  # fmt: skip
    assert switch[("Service", "gitml-serving")]["spec"]["selector"][k8s.SLOT_LABEL] == "blue"


def test_rollback_without_a_previous_release_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECTL", str(tmp_path / "no-kubectl-called"))
    result = CliRunner().invoke(k8s.app, ["rollback", "--env", "production", "--image", "",
                                          "--version", ""])  # fmt: skip
    assert result.exit_code == 1 and "no release to return production to" in result.output


def test_the_single_deployment_of_earlier_versions_is_never_deployed_past(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its live Service selects by app labels only, so it would send traffic to a candidate
    before its checks: refused, naming the one-time move (the local cluster, no pod run)."""
    podman = Podman(tmp_path / "podman", "unit", "127.0.0.1:9", {})
    cluster = Cluster(podman, tmp_path, ["gitml-production"], max_replicas=0)
    api = ApiServer(cluster, "token")
    try:
        config = tmp_path / "kubeconfig"
        config.write_text(json.dumps(kubeconfig(api.url, "token")))
        monkeypatch.setenv("KUBECONFIG", str(config))
        monkeypatch.setenv("KUBECTL", f"{sys.executable} -m gitml.release.cluster.kubectl")
        k8s.apply(k8s.pin(k8s.render("production"), DIGEST, "v1"))  # as earlier versions did
        with pytest.raises(k8s.DeployError, match="selects pods by their app labels only"):
            k8s.deploy(k8s.pin(k8s.render("production"), DIGEST, "v2"), "5s", None)
        assert k8s.get("deployment", "gitml-serving-blue", "gitml-production") is None
        docs = k8s.in_slot(k8s.pin(k8s.render("production"), DIGEST, "v2"), "blue", k8s.LEGACY)
        hpa = by_kind(docs)[("HorizontalPodAutoscaler", "gitml-serving")]
        assert hpa["spec"]["scaleTargetRef"]["name"] == "gitml-serving"  # until the switch
    finally:
        api.close()
        cluster.close()


# --- blue/green on the local cluster: the real image from a real registry ---------------------

GOLDEN = ROOT / "artifacts" / "mlem" / "golden.json"
NAMESPACE = "gitml-production"


@dataclass
class Watched:
    """Every answer of production's live Service while the scenario runs."""

    url: str
    answers: list[str]
    errors: list[str]
    stop: threading.Event


@pytest.fixture(scope="module")
def local(registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The local cluster, production's live Service on a loopback port; kubectl (KUBECTL) is
    its front, as in a workflow."""
    directory = tmp_path_factory.mktemp("cluster")
    ports = {f"{NAMESPACE}/gitml-serving": 0}
    saved = {name: os.environ.get(name) for name in ("KUBECONFIG", "KUBECTL")}
    with running(directory, [NAMESPACE], ports, max_replicas=1, registry_address=registry) as up:
        os.environ["KUBECONFIG"] = str(up.kubeconfig)
        os.environ["KUBECTL"] = f"{sys.executable} -m gitml.release.cluster.kubectl"
        try:
            yield up
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def deploy(image: str, version: str, timeout: str = "180s", golden: Path | None = GOLDEN) -> Any:
    return k8s.deploy(k8s.pin(k8s.render("production"), image, version), timeout, golden)


def running_images(up: Running) -> set[str]:
    """The images (by the reference podman ran them from) of the containers that production's
    live Service sends requests to."""
    ports = {port for _, port in up.cluster.endpoints(NAMESPACE, "gitml-serving")}
    listed = up.cluster.podman("ps", "--format", "json", "--filter",
                               f"label=gitml.cluster={up.cluster.podman.cluster_id}")  # fmt: skip
    return {c["Image"] for c in json.loads(listed) if any(
        p.get("host_port") in ports for p in c.get("Ports") or [])}  # fmt: skip


def slot_pods(slot: str) -> list[Doc]:
    found = k8s.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"{k8s.SLOT_LABEL}={slot}",
                        "-o", "json")  # fmt: skip
    return [p for p in json.loads(found)["items"]
            if p["status"]["containerStatuses"][0]["state"].get("waiting", {}).get("reason")
            != "Terminating"]  # fmt: skip


def answer(url: str) -> str:
    return str(httpx.get(f"{url}/healthz", timeout=10).json()["model_version"])


@pytest.fixture(scope="module")
def first(local: Running, released: dict[str, str]) -> Any:
    return deploy(released["v1"], "v1")


@pytest.fixture(scope="module")
def watched(local: Running, first: Any) -> Iterator[Watched]:
    """Poll the live Service, a new connection each time, from the first deploy to the end."""
    watch = Watched(local.service_url(NAMESPACE), [], [], threading.Event())

    def poll() -> None:
        while not watch.stop.wait(0.1):
            try:
                with httpx.Client(timeout=10) as client:  # no keep-alive: what answers now
                    watch.answers.append(
                        client.get(f"{watch.url}/healthz").json()["model_version"]
                    )
            except (httpx.HTTPError, ValueError) as err:
                watch.errors.append(f"{type(err).__name__}: {err}")

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    yield watch
    watch.stop.set()
    thread.join(timeout=30)


@pytest.mark.slow
def test_a_first_deploy_serves_once_it_passed_its_checks(
    local: Running, first: Any, released: dict[str, str]
) -> None:
    assert first is None  # nothing served before
    assert answer(local.service_url(NAMESPACE)) == "v1"
    assert running_images(local) == {released["v1"]}


@pytest.fixture(scope="module")
def unknown_digest(watched: Watched, released: dict[str, str]) -> str:
    missing = released["v1"].split("@")[0] + "@sha256:" + "0" * 64
    with pytest.raises(k8s.DeployError) as refused:
        deploy(missing, "v-missing", timeout="5s")
    return str(refused.value)


@pytest.mark.slow
def test_an_image_the_registry_lacks_never_serves(
    local: Running, unknown_digest: str, released: dict[str, str]
) -> None:
    assert "ImagePullBackOff" in unknown_digest and "manifest unknown" in unknown_digest
    assert "the candidate was removed without serving" in unknown_digest
    assert "gitml-production still serves v1" in unknown_digest
    assert slot_pods("green") == []
    assert answer(local.service_url(NAMESPACE)) == "v1"
    assert running_images(local) == {released["v1"]}


@pytest.fixture(scope="module")
def wrong_predictions(
    unknown_digest: str, released: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A candidate that answers /healthz but not its golden cases: the cases another model
    gives (every prediction one bike more)."""
    golden = json.loads(GOLDEN.read_text())
    golden["predictions"] = [p + 1.0 for p in golden["predictions"]]
    other = tmp_path_factory.mktemp("golden") / "golden.json"
    other.write_text(json.dumps(golden))
    with pytest.raises(k8s.DeployError) as refused:
        deploy(released["v2"], "v-wrong", golden=other)
    return str(refused.value)


@pytest.mark.slow
def test_a_candidate_failing_its_golden_cases_is_removed_unserved(
    local: Running, wrong_predictions: str, released: dict[str, str]
) -> None:
    assert "v-wrong failed its checks on gitml-serving-preview" in wrong_predictions
    assert "golden: 20 predictions, max gap 1.00e+00" in wrong_predictions
    assert slot_pods("green") == []
    assert running_images(local) == {released["v1"]}


@pytest.fixture(scope="module")
def second(wrong_predictions: str, released: dict[str, str]) -> Any:
    return deploy(released["v2"], "v2")


@pytest.mark.slow
def test_a_good_candidate_takes_over_and_the_old_slot_is_emptied(
    local: Running, second: Any, released: dict[str, str]
) -> None:
    assert second == k8s.Release(released["v1"], "v1")  # what the workflow's rollback gets
    assert answer(local.service_url(NAMESPACE)) == "v2"
    assert running_images(local) == {released["v2"]}
    assert slot_pods("blue") == []


@pytest.fixture(scope="module")
def rolled_back(second: Any) -> Any:
    return CliRunner().invoke(k8s.app, ["rollback", "--env", "production", "--image",
                                        second.image, "--version", second.version])  # fmt: skip


@pytest.mark.slow
def test_rollback_returns_the_previous_digest(
    local: Running, rolled_back: Any, released: dict[str, str]
) -> None:
    assert rolled_back.exit_code == 0, rolled_back.output
    assert answer(local.service_url(NAMESPACE)) == "v1"
    assert running_images(local) == {released["v1"]}


@pytest.mark.slow
def test_production_answered_throughout_and_only_from_checked_releases(
    watched: Watched, rolled_back: Any
) -> None:
    watched.stop.set()
    changes = [v for i, v in enumerate(watched.answers) if i == 0 or v != watched.answers[i - 1]]
    assert changes == ["v1", "v2", "v1"]  # never v-missing or v-wrong, never back and forth
    assert watched.errors == []
