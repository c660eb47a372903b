"""`kubectl` for the local cluster: `kustomize` runs the real kubectl (it renders files and
needs no cluster); every other call goes to the cluster named by the kubeconfig (KUBECONFIG, else
~/.kube/config: the file `make kubeconfig` writes from the KUBECONFIG secret), with its token.
`port-forward` relays a local port to the pod the cluster picks, as kubectl does, until stopped.
Standard library only: it runs on whatever python3 the runner has."""

import json
import os
import shutil
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gitml.release.cluster.network import Forwarder


def real_kubectl(front: Path) -> str:
    """The kubectl on PATH that is not this front."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which("kubectl", path=folder)
        if found and Path(found).resolve() != front.resolve():
            return found
    sys.exit("kubectl: the real kubectl is not installed (make k8s-tools)")


def cluster_of(environ: dict[str, str]) -> tuple[str, str]:
    """(server URL, token) of the kubeconfig's current context."""
    path = Path(environ.get("KUBECONFIG") or Path(environ.get("HOME", "~")) / ".kube" / "config")
    try:
        config = json.loads(path.expanduser().read_text())
        context = next(c["context"] for c in config["contexts"]
                       if c["name"] == config["current-context"])  # fmt: skip
        server = next(c["cluster"]["server"] for c in config["clusters"]
                      if c["name"] == context["cluster"])  # fmt: skip
        token = next(u["user"]["token"] for u in config["users"] if u["name"] == context["user"])
    except (OSError, ValueError, KeyError, StopIteration) as err:
        sys.exit(f"error: no local cluster in the kubeconfig {path} ({type(err).__name__}: "
                 f"{err}): the local cluster's kubectl reads the JSON kubeconfig that "
                 "`python -m gitml cluster serve` writes")  # fmt: skip
    return server, token


def call(server: str, token: str, argv: list[str], stdin: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server}/kubectl", data=json.dumps({"argv": argv, "stdin": stdin}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=86400) as answer:
            return dict(json.loads(answer.read()))
    except urllib.error.HTTPError as err:
        return dict(json.loads(err.read()))
    except urllib.error.URLError as err:
        sys.exit(f"The connection to the server {server} was refused ({err.reason}): is the "
                 "local cluster running?")  # fmt: skip


def port_forward(target: dict[str, Any]) -> int:
    address = (target["address"][0], int(target["address"][1]))
    relay = Forwarder(lambda: [address], int(target["local"]))
    print(f"Forwarding from 127.0.0.1:{relay.port} -> {target['remote']}", flush=True)
    threading.Event().wait()  # until the process is stopped, as kubectl's
    return 0


def main(argv: list[str], front: Path) -> int:
    if argv[:1] == ["kustomize"]:
        real = real_kubectl(front)
        os.execv(real, [real, *argv])
    server, token = cluster_of(dict(os.environ))
    reads_stdin = argv[:1] == ["apply"] and "-" in argv
    answer = call(server, token, argv, sys.stdin.read() if reads_stdin else "")
    if answer.get("forward"):
        return port_forward(answer["forward"])
    sys.stdout.write(answer.get("stdout", ""))
    sys.stderr.write(answer.get("stderr", ""))
    return int(answer["code"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Path(sys.argv[0])))
