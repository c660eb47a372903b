"""The local cluster's API server: the kubectl calls the release makes, sent by the kubectl front
(gitml.release.cluster.kubectl) over HTTP on loopback with the kubeconfig's bearer token, and
answered as the Kubernetes API server and kubectl would answer them. Any other call is refused,
naming the ones it takes: a release that needs more fails here before it fails on a cluster.
"""

import hmac
import json
import re
import threading
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

from gitml.release.cluster.workloads import ApiError, Cluster

SUPPORTED = [
    "apply -f -",
    "rollout status deployment/NAME [--timeout=DURATION]",
    "rollout undo deployment/NAME [--to-revision=N]",
    "scale deployment/NAME --replicas=N",
    "get KIND [NAME] [-l KEY=VALUE,...] -o json",
    "port-forward service/NAME [LOCAL:]PORT",
    "delete pod NAME",
]
KINDS = {
    "Deployment": ("deployment", "deployments", "deploy", "deployments.apps"),
    "Service": ("service", "services", "svc"),
    "Pod": ("pod", "pods", "po"),
    "ReplicaSet": ("replicaset", "replicasets", "rs"),
    "PersistentVolumeClaim": ("persistentvolumeclaim", "persistentvolumeclaims", "pvc"),
    "HorizontalPodAutoscaler": ("horizontalpodautoscaler", "horizontalpodautoscalers", "hpa"),
    "PodDisruptionBudget": ("poddisruptionbudget", "poddisruptionbudgets", "pdb"),
    "Secret": ("secret", "secrets"),
}
OPTIONS = {"-n": "namespace", "--namespace": "namespace", "-o": "output", "--output": "output",
           "-l": "selector", "--selector": "selector", "-f": "filename", "--filename": "filename",
           "--timeout": "timeout", "--to-revision": "to-revision",
           "--replicas": "replicas"}  # fmt: skip
UNITS = {"s": 1, "m": 60, "h": 3600}


@dataclass
class Answer:
    code: int
    stdout: str = ""
    stderr: str = ""
    forward: dict[str, Any] | None = None  # port-forward: where the front relays to


class Refused(ValueError):
    """A call the local cluster does not take."""


def parse(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """(positional words, options by name) of a kubectl command line."""
    words, options, rest = [], {}, list(argv)
    while rest:
        arg = rest.pop(0)
        flag, eq, value = arg.partition("=")
        if arg.startswith("-") and arg != "-":
            if flag not in OPTIONS:
                raise Refused(f"option {flag}")
            if not eq:
                if not rest:
                    raise Refused(f"option {flag} without a value")
                value = rest.pop(0)
            options[OPTIONS[flag]] = value
        else:
            words.append(arg)
    return words, options


def duration(text: str) -> float:
    """kubectl's --timeout (30s, 10m, 1h30m); 0 waits forever (here: a day)."""
    if text == "0":
        return 86400.0
    parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise Refused(f"--timeout={text} (a duration such as 30s or 10m)")
    return sum(float(number) * UNITS[unit] for number, unit in parts)


def kind_of(word: str) -> str:
    for kind, names in KINDS.items():
        if word.lower() in names:
            return kind
    raise ApiError(f'error: the server doesn\'t have a resource type "{word}"')


def resource(word: str, wanted: str) -> str:
    """NAME of `deployment/NAME` (the form the release uses), checked to be of kind `wanted`."""
    kind, slash, name = word.partition("/")
    if not slash or kind_of(kind) != wanted:
        raise Refused(f"{word} (name it as {wanted.lower()}/NAME)")
    return name


def execute(cluster: Cluster, argv: list[str], stdin: str = "") -> Answer:
    try:
        return _execute(cluster, argv, stdin)
    except Refused as err:
        return Answer(1, stderr=f"error: the local cluster does not take {err}; it takes: kubectl "
                      + "; ".join(SUPPORTED) + " (with -n NAMESPACE)\n")  # fmt: skip
    except ApiError as err:
        return Answer(1, stderr=f"{err}\n")
    except (ValueError, KeyError, TypeError) as err:  # a malformed call or object
        return Answer(1, stderr=f"error: {type(err).__name__}: {err}\n")


def _execute(cluster: Cluster, argv: list[str], stdin: str) -> Answer:
    words, options = parse(argv)
    namespace = options.get("namespace", "default")
    verb = words[:2] if words[:1] == ["rollout"] else words[:1]
    if verb == ["apply"]:
        if options.get("filename") != "-" or len(words) != 1:
            raise Refused("apply other than `apply -f -` (the manifests on stdin)")
        try:
            docs = [doc for doc in yaml.safe_load_all(stdin) if doc]
        except yaml.YAMLError as err:
            raise ApiError(f"error: error parsing STDIN: {err}") from None
        return Answer(0, "".join(f"{line}\n" for line in cluster.apply(docs)))
    if verb == ["rollout", "status"] and len(words) == 3:
        name = resource(words[2], "Deployment")
        timeout = duration(options.get("timeout", "0"))
        done, lines = cluster.rollout_status(namespace, name, timeout)
        said = [line for line in lines if not line.startswith("error")]
        failed = [line for line in lines if line.startswith("error")]
        return Answer(0 if done else 1, "".join(f"{line}\n" for line in said),
                      "".join(f"{line}\n" for line in failed))  # fmt: skip
    if verb == ["rollout", "undo"] and len(words) == 3:
        name = resource(words[2], "Deployment")
        revision = int(options.get("to-revision", "0"))
        return Answer(0, cluster.undo(namespace, name, revision) + "\n")
    if verb == ["scale"] and len(words) == 2 and "replicas" in options:
        name = resource(words[1], "Deployment")
        return Answer(0, cluster.scale(namespace, name, int(options["replicas"])) + "\n")
    if verb == ["get"] and len(words) in (2, 3):
        if options.get("output") != "json":
            raise Refused(f"-o {options.get('output', '(table)')}: it answers -o json")
        kind, name = words[1], (words[2] if len(words) == 3 else "")
        if "/" in kind:
            kind, _, name = kind.partition("/")
        selector = dict(pair.split("=", 1) for pair in options.get("selector", "").split(",")
                        if "=" in pair)  # fmt: skip
        found = cluster.get(kind_of(kind), namespace, name or None, selector)
        return Answer(0, json.dumps(found, indent=4) + "\n")
    if verb == ["delete"] and len(words) == 3 and kind_of(words[1]) == "Pod":
        return Answer(0, cluster.delete_pod(namespace, words[2]) + "\n")
    if verb == ["port-forward"] and len(words) == 3:
        return Answer(0, forward=forward(cluster, namespace, resource(words[1], "Service"),
                                         words[2]))  # fmt: skip
    raise Refused(f"`kubectl {' '.join(argv)}`")


def forward(cluster: Cluster, namespace: str, service: str, ports: str) -> dict[str, Any]:
    """Where `kubectl port-forward service/NAME [LOCAL:]PORT` relays: one ready pod the Service
    selects (as kubectl picks one), at the container port the Service's PORT targets."""
    local, _, remote = ports.rpartition(":")
    found = cluster.get("Service", namespace, service, {})
    ports_by = {key: p for p in found["spec"]["ports"] for key in (str(p["port"]), p.get("name"))}
    port = ports_by.get(remote)
    if port is None:
        raise ApiError(f"error: Service {service} does not have a service port {remote}")
    endpoints = cluster.endpoints(namespace, service)
    if not endpoints:
        raise ApiError(f"error: no ready pod is selected by service/{service} to forward to")
    return {"address": list(endpoints[0]), "local": int(local or 0),
            "remote": port.get("targetPort", port["port"])}  # fmt: skip


def kubeconfig(url: str, token: str) -> dict[str, Any]:
    """A kubeconfig for the local cluster (JSON, which is YAML, and which the front reads with
    the standard library)."""
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "gitml-local",
        "clusters": [{"name": "gitml-local", "cluster": {"server": url}}],
        "users": [{"name": "deployer", "user": {"token": token}}],
        "contexts": [{"name": "gitml-local",
                      "context": {"cluster": "gitml-local", "user": "deployer"}}],
    }  # fmt: skip


class ApiServer:
    """The API on 127.0.0.1:`port` (0: a spare one); calls need `Authorization: Bearer TOKEN`."""

    def __init__(self, cluster: Cluster, token: str, port: int = 0) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                sent = self.headers.get("Authorization", "")
                if self.path != "/kubectl":
                    status, answer = 404, Answer(1, stderr="error: not found\n")
                elif not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                    status, answer = 401, Answer(1, stderr="error: You must be logged in to "
                                                 "the server (Unauthorized)\n")  # fmt: skip
                else:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    status, answer = 200, execute(api.cluster, body["argv"], body.get("stdin", ""))
                data = json.dumps(asdict(answer)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.cluster = cluster
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
