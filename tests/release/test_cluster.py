"""The local cluster (gitml.release.cluster) without running a pod: the pod spec it turns into
`podman run` arguments (read from the rendered manifests, so the lockdown tested is the one
deployed), what its API refuses as the Kubernetes API server and kubectl would, and revisions
numbered as Kubernetes numbers them. Pods, registries and Services run in test_k8s.py."""

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitml.release import k8s
from gitml.release.cluster.api import ApiServer, duration, execute, kubeconfig
from gitml.release.cluster.runtime import Pod, Podman, PodSpecError, quantity, run_args
from gitml.release.cluster.workloads import REVISION, ApiError, Cluster

ROOT = Path(__file__).resolve().parents[2]
FRONT = ROOT / "tests" / "workflows" / "bin" / "kubectl"
IMAGE = "127.0.0.1:5000/acme/app@sha256:" + "a" * 64
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return k8s.pin(k8s.render("staging"), IMAGE, "v1.2.3")


def deployment_of(docs: list[Doc]) -> Doc:
    return copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))


def pod_of(docs: list[Doc], claims: dict[str, Path], secrets: dict[str, Any] | None = None) -> Pod:
    template = deployment_of(docs)["spec"]["template"]
    meta = template["metadata"]
    return Pod("gitml-serving-abc-12345", "gitml-staging", meta["labels"], meta["annotations"],
               template["spec"], claims, secrets or {})  # fmt: skip


def pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == flag]


def test_the_pod_runs_with_the_deployments_lockdown(rendered: list[Doc]) -> None:
    pod = pod_of(rendered, {})
    container = pod.spec["containers"][0]
    context = {**pod.spec["securityContext"], **container["securityContext"]}
    args = run_args(pod, container, image_user="10001:10001")
    assert pairs(args, "--user") == [f"{context['runAsUser']}:{context['runAsGroup']}"]
    assert pairs(args, "--group-add") == [str(context["fsGroup"])]
    assert "--read-only" in args and "--read-only-tmpfs=false" in args  # no tmpfs of podman's
    assert pairs(args, "--cap-drop") == context["capabilities"]["drop"] == ["ALL"]
    assert "--cap-add" not in args and "--privileged" not in args
    assert pairs(args, "--security-opt") == ["no-new-privileges"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    sizes = {v["name"]: int(quantity(v["emptyDir"]["sizeLimit"])) for v in pod.spec["volumes"]}
    assert pairs(args, "--tmpfs") == [
        f"{mounts[name]}:rw,exec,nosuid,nodev,mode=1777,size={sizes[name]}"
        for name in ("tmp", "predictions")
    ]
    assert pairs(args, "--volume") == []
    limits = container["resources"]["limits"]
    assert pairs(args, "--memory") == [str(int(quantity(limits["memory"])))]
    assert pairs(args, "--cpus") == [f"{quantity(limits['cpu']):g}"]
    assert pairs(args, "--publish") == [f"127.0.0.1::{p['containerPort']}" for p in
                                        container["ports"]]  # fmt: skip


def test_env_takes_values_the_downward_api_and_optional_secrets(rendered: list[Doc]) -> None:
    claims: dict[str, Path] = {}
    env = dict(e.split("=", 1) for e in pairs(run_args(pod_of(rendered, claims),
               pod_of(rendered, claims).spec["containers"][0], "10001"), "--env"))  # fmt: skip
    assert env["GITML_MODEL_VERSION"] == "v1.2.3"  # the annotation k8s.pin set
    assert env["GITML_INSTANCE"] == "gitml-serving-abc-12345"  # metadata.name
    assert env["HOME"] == "/tmp" and env["GITML_WORKERS"] == "2"
    assert "GITML_SYNTHETIC_TOKEN" not in env  # its Secret is optional and absent
    secret = {"gitml-synthetic": {"token": "s3cret"}}
    pod = pod_of(rendered, claims, secret)
    assert "GITML_SYNTHETIC_TOKEN=s3cret" in pairs(run_args(pod, pod.spec["containers"][0],
                                                            "10001"), "--env")  # fmt: skip


def with_container(docs: list[Doc], **changes: Any) -> tuple[Pod, Doc]:
    pod = pod_of(docs, {})
    container = {**pod.spec["containers"][0], **changes}
    return pod, container


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"securityContext": {"runAsNonRoot": True}}, "image will run as root"),
        ({"ports": [{"containerPort": 8080, "hostPort": 80}]}, "hostPort"),
        ({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
         'secret "s"'),
        ({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]},
         "configMapKeyRef"),
        ({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, "names no volume"),
        ({"stdin": True}, "not supported"),
    ],
    ids=["root", "host-port", "missing-secret", "config-map", "no-volume", "unknown-field"],
)  # fmt: skip
def test_what_it_cannot_run_as_written_is_refused_by_name(
    rendered: list[Doc], changes: Doc, message: str
) -> None:
    pod, container = with_container(rendered, **changes)
    if "securityContext" in changes:  # the pod's own context names no user either
        pod = Pod(pod.name, pod.namespace, pod.labels, pod.annotations,
                  {**pod.spec, "securityContext": {}}, pod.claims, pod.secrets)  # fmt: skip
    with pytest.raises(PodSpecError, match=message):
        run_args(pod, container, image_user="root")


def test_a_claim_that_was_never_applied_leaves_the_pod_unrunnable(rendered: list[Doc]) -> None:
    pod, container = with_container(rendered, volumeMounts=[{"name": "data", "mountPath": "/d"}])
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "gitml-data"}}]
    pod = Pod(pod.name, pod.namespace, pod.labels, pod.annotations,
              {**pod.spec, "volumes": volumes}, {}, pod.secrets)  # fmt: skip
    with pytest.raises(PodSpecError, match='persistentvolumeclaim "gitml-data" not found'):
        run_args(pod, container, "10001")
    pod = Pod(pod.name, pod.namespace, pod.labels, pod.annotations, pod.spec,
              {"gitml-data": Path("/srv/data")}, pod.secrets)  # fmt: skip
    assert pairs(run_args(pod, container, "10001"), "--volume") == ["/srv/data:/d:rw"]


# --- the API: what it refuses, and revisions ---------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster that starts no pod (at most 0 replicas): the API's own logic."""
    podman = Podman(tmp_path / "podman", "unit", "127.0.0.1:9", {})
    up = Cluster(podman, tmp_path, ["gitml-staging"], max_replicas=0)
    yield up
    up.close()


def call(cluster: Cluster, *argv: str, stdin: str = "") -> tuple[int, str]:
    answer = execute(cluster, list(argv), stdin)
    return answer.code, answer.stdout + answer.stderr


def yaml_of(docs: list[Doc]) -> str:
    import yaml

    return yaml.safe_dump_all(docs)


@pytest.mark.parametrize(
    "argv",
    [["delete", "deployment/gitml-serving-blue"], ["exec", "pod/x", "--", "sh"],
     ["get", "pods", "-o", "yaml"], ["apply", "-f", "manifests.yaml"],
     ["rollout", "restart", "deployment/x"], ["get", "pods", "--watch"]],
    ids=["delete", "exec", "yaml-output", "apply-a-file", "restart", "unknown-option"],
)  # fmt: skip
def test_calls_the_release_does_not_make_are_refused_naming_those_it_does(
    cluster: Cluster, argv: list[str]
) -> None:
    code, said = call(cluster, *argv, "-n", "gitml-staging")
    assert code == 1
    assert "the local cluster does not take" in said and "apply -f -" in said


def test_apply_refuses_what_the_api_server_refuses(cluster: Cluster, rendered: list[Doc]) -> None:
    production = k8s.pin(k8s.render("production"), IMAGE, "v1")
    code, said = call(cluster, "apply", "-f", "-", stdin=yaml_of(production))
    assert code == 1 and 'namespaces "gitml-production" not found' in said
    broken = copy.deepcopy(rendered)
    deployment_of_docs = next(d for d in broken if d["kind"] == "Deployment")
    deployment_of_docs["spec"]["replicas"] = "two"
    code, said = call(cluster, "apply", "-f", "-", stdin=yaml_of(broken))
    assert code == 1 and "ValidationError(Deployment.spec.replicas)" in said
    mismatched = copy.deepcopy(rendered)
    next(d for d in mismatched if d["kind"] == "Deployment")["spec"]["selector"]["matchLabels"][
        "app.kubernetes.io/name"] = "other"  # fmt: skip
    code, said = call(cluster, "apply", "-f", "-", stdin=yaml_of(mismatched))
    assert code == 1 and "`selector` does not match template `labels`" in said
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "web", "namespace": "gitml-staging"}, "spec": {}}  # fmt: skip
    code, said = call(cluster, "apply", "-f", "-", stdin=yaml_of([*rendered, ingress]))
    assert code == 1 and "does not run kind 'Ingress'" in said
    code, said = call(cluster, "get", "deployments", "-n", "gitml-staging", "-o", "json")
    assert json.loads(said)["items"] == []  # a refused apply stores nothing


def test_a_secret_applied_in_the_namespace_reaches_the_pods_it_names(
    cluster: Cluster, rendered: list[Doc]
) -> None:
    import base64

    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "gitml-prediction-log", "namespace": "gitml-staging"},
              "data": {"url": base64.b64encode(b"s3://b/old").decode(),
                       "AWS_ACCESS_KEY_ID": base64.b64encode(b"AKIA-key").decode()},
              "stringData": {"url": "s3://b/predictions"}}  # fmt: skip
    code, said = call(cluster, "apply", "-f", "-", stdin=yaml_of([secret]))
    assert code == 0 and said == "secret/gitml-prediction-log created\n"
    assert call(cluster, "apply", "-f", "-", stdin=yaml_of([secret]))[1].endswith("unchanged\n")
    elsewhere = copy.deepcopy(secret)
    elsewhere["metadata"]["namespace"] = "default"
    elsewhere["stringData"] = {"url": "s3://other/namespace"}
    assert call(cluster, "apply", "-f", "-", stdin=yaml_of([elsewhere]))[0] == 0
    assert call(cluster, "apply", "-f", "-", stdin=yaml_of(rendered))[0] == 0
    with cluster.lock:  # the pod the Deployment asks for (none runs: at most 0 replicas)
        deployment = next(d for (k, _, _), d in cluster.objects.items() if k == "Deployment")
        cluster.max_replicas = None
        state = cluster._start_pod(deployment, "abc")
        cluster._delete(state)
        cluster.max_replicas = 0
    env = dict(e.split("=", 1) for e in pairs(
        run_args(state.pod, state.pod.spec["containers"][0], "10001"), "--env"))  # fmt: skip
    assert env["GITML_PREDICTION_LOG_URL"] == "s3://b/predictions"  # stringData wins
    assert env["AWS_ACCESS_KEY_ID"] == "AKIA-key"
    assert "AWS_SECRET_ACCESS_KEY" not in env  # optional, and not in the Secret


def test_deleting_a_pod_that_does_not_run_is_not_found(cluster: Cluster) -> None:
    code, said = call(cluster, "delete", "pod", "gitml-serving-x", "-n", "gitml-staging")
    assert code == 1 and 'pods "gitml-serving-x" not found' in said


def test_a_deployments_selector_never_changes(cluster: Cluster, rendered: list[Doc]) -> None:
    assert call(cluster, "apply", "-f", "-", stdin=yaml_of(rendered))[0] == 0
    changed = copy.deepcopy(rendered)
    deployment = next(d for d in changed if d["kind"] == "Deployment")
    deployment["spec"]["selector"]["matchLabels"]["track"] = "new"
    deployment["spec"]["template"]["metadata"]["labels"]["track"] = "new"
    code, said = call(cluster, "apply", "-f", "-", stdin=yaml_of(changed))
    assert code == 1 and "spec.selector: Invalid value: field is immutable" in said


def revisions(cluster: Cluster) -> dict[str, str]:
    """version -> revision, as `kubectl get replicasets` shows them."""
    code, said = call(cluster, "get", "rs", "-n", "gitml-staging", "-o", "json")
    assert code == 0, said
    return {rs["spec"]["template"]["metadata"]["annotations"]["gitml/model-version"]:
            rs["metadata"]["annotations"][REVISION] for rs in json.loads(said)["items"]}  # fmt: skip


def current(cluster: Cluster) -> tuple[str, str]:
    """(revision, version) of the Deployment now."""
    code, said = call(cluster, "get", "deployment", "gitml-serving", "-n", "gitml-staging",
                      "-o", "json")  # fmt: skip
    assert code == 0, said
    found = json.loads(said)
    version = found["spec"]["template"]["metadata"]["annotations"]["gitml/model-version"]
    return found["metadata"]["annotations"][REVISION], version


def test_revisions_are_numbered_as_kubernetes_numbers_them(cluster: Cluster) -> None:
    def apply(version: str) -> str:
        docs = k8s.pin(k8s.render("staging"), IMAGE, version)
        code, said = call(cluster, "apply", "-f", "-", stdin=yaml_of(docs))
        assert code == 0, said
        return next(line for line in said.splitlines() if line.startswith("deployment.apps/"))

    assert apply("v1") == "deployment.apps/gitml-serving created"
    assert apply("v2") == "deployment.apps/gitml-serving configured"
    assert apply("v2") == "deployment.apps/gitml-serving unchanged"
    assert current(cluster) == ("2", "v2")
    assert apply("v1") == "deployment.apps/gitml-serving configured"  # seen before: renumbered
    assert revisions(cluster) == {"v1": "3", "v2": "2"}
    assert call(cluster, "rollout", "undo", "deployment/gitml-serving", "-n",
                "gitml-staging")[0] == 0  # fmt: skip
    assert current(cluster) == ("4", "v2")  # an undo is a new revision
    assert revisions(cluster) == {"v1": "3", "v2": "4"}
    code, said = call(cluster, "rollout", "undo", "deployment/gitml-serving", "-n",
                      "gitml-staging", "--to-revision=2")  # fmt: skip
    assert code == 1 and "unable to find specified revision 2 in history" in said
    assert call(cluster, "rollout", "undo", "deployment/gitml-serving", "-n", "gitml-staging",
                "--to-revision=3")[0] == 0  # fmt: skip
    assert current(cluster) == ("5", "v1")


def test_a_missing_object_is_not_found(cluster: Cluster) -> None:
    code, said = call(cluster, "get", "service", "gitml-serving", "-n", "gitml-staging", "-o",
                      "json")  # fmt: skip
    assert code == 1 and 'Error from server (NotFound): services "gitml-serving" not found' in said
    with pytest.raises(ApiError, match="NotFound"):
        cluster.scale("gitml-staging", "gitml-serving", 1)


def test_durations_read_as_kubectl_reads_them() -> None:
    assert duration("90s") == 90 and duration("10m") == 600 and duration("1h30m") == 5400
    for wrong in ("10", "ten", "5m5"):
        with pytest.raises(ValueError, match="duration"):
            duration(wrong)


# --- the kubectl front, through the API server -------------------------------------------------


def front(env: dict[str, str], *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(FRONT), *argv], input=stdin, text=True,
                          capture_output=True, env={**os.environ, **env}, timeout=60)  # fmt: skip


def test_the_front_reaches_the_cluster_with_the_kubeconfigs_token_only(
    cluster: Cluster, rendered: list[Doc], tmp_path: Path
) -> None:
    api = ApiServer(cluster, "the-token")
    try:
        config = tmp_path / "kubeconfig"
        config.write_text(json.dumps(kubeconfig(api.url, "the-token")))
        done = front({"KUBECONFIG": str(config)}, "apply", "-f", "-", stdin=yaml_of(rendered))
        assert done.returncode == 0, done.stderr
        assert "deployment.apps/gitml-serving created" in done.stdout
        config.write_text(json.dumps(kubeconfig(api.url, "a-guess")))
        done = front({"KUBECONFIG": str(config)}, "get", "pods", "-n", "gitml-staging", "-o",
                     "json")  # fmt: skip
        assert done.returncode == 1 and "(Unauthorized)" in done.stderr
        config.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")  # another cluster's
        done = front({"KUBECONFIG": str(config)}, "get", "pods", "-o", "json")
        assert done.returncode == 1 and "no local cluster in the kubeconfig" in done.stderr
    finally:
        api.close()


def test_the_front_renders_with_the_real_kubectl() -> None:
    done = front({"KUBECONFIG": "/nonexistent"}, "kustomize",
                 str(ROOT / "deploy" / "k8s" / "overlays" / "staging"))  # fmt: skip
    assert done.returncode == 0 and "kind: Deployment" in done.stdout
