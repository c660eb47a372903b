"""`python -m gitml cluster`: a registry and a cluster on this machine, for a person to release
to (`make local-cluster`, `make local-release`) and for the tests.

`serve` starts `docker-registry` on loopback and the local cluster (podman), writes a kubeconfig
for them, and runs until stopped. `rehearse` does that, pushes the serving image (`make image`)
and runs the release's own make targets against it: staging, its checks, production.
"""

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from gitml.config import PROJ_ROOT
from gitml.release.cluster import registry
from gitml.release.cluster.api import ApiServer, kubeconfig
from gitml.release.cluster.runtime import Podman
from gitml.release.cluster.workloads import Cluster

STATE_DIR = PROJ_ROOT / "build" / "local-cluster"
OVERLAYS = PROJ_ROOT / "deploy" / "k8s" / "overlays"
SERVICE = "gitml-serving"  # the live Service of each environment (gitml.release.k8s)


@dataclass
class Running:
    cluster: Cluster
    api: ApiServer
    registry: str  # 127.0.0.1:PORT
    kubeconfig: Path

    def service_url(self, namespace: str, name: str = SERVICE) -> str:
        """Where a Service answers on loopback (known once it is applied, or configured)."""
        return f"http://127.0.0.1:{self.cluster.proxies[(namespace, name)].port}"


def overlay_namespaces(overlays: Path = OVERLAYS) -> dict[str, str]:
    """environment -> the namespace its overlay deploys to (a cluster admin creates these)."""
    return {
        path.parent.name: yaml.safe_load(path.read_text())["namespace"]
        for path in sorted(overlays.glob("*/kustomization.yaml"))
    }


@contextmanager
def running(
    directory: Path,
    namespaces: list[str],
    service_ports: dict[str, int] | None = None,
    max_replicas: int | None = None,
    registry_address: str = "",
    stands_in_for: str = "",
) -> Iterator[Running]:
    """A cluster (and a registry, unless `registry_address` names one) until the block ends.
    `stands_in_for`: a registry (ghcr.io) whose images the cluster pulls from this one."""
    directory.mkdir(parents=True, exist_ok=True)
    started = None
    if not registry_address:
        started = registry.start(directory / "registry")
        registry_address = started.address
    cluster_id = secrets.token_hex(4)
    mirrors = {stands_in_for: registry_address} if stands_in_for else {}
    podman = Podman(directory / "podman", cluster_id, registry_address, mirrors)
    cluster = Cluster(podman, directory, namespaces, service_ports, max_replicas)
    token = secrets.token_urlsafe(24)
    api = ApiServer(cluster, token)
    path = directory / "kubeconfig"
    path.touch(mode=0o600)
    path.write_text(json.dumps(kubeconfig(api.url, token), indent=2))
    try:
        yield Running(cluster, api, registry_address, path)
    finally:
        api.close()
        cluster.close()
        if started is not None:
            started.stop()


def ports_of(pairs: list[str]) -> dict[str, int]:
    """NAMESPACE/SERVICE=PORT options."""
    try:
        return {key: int(value) for key, value in (pair.split("=", 1) for pair in pairs)}
    except ValueError:
        raise typer.BadParameter(f"expected NAMESPACE/SERVICE=PORT, got {pairs}") from None


app = typer.Typer(add_completion=False, help=__doc__)

ServicePorts = Annotated[
    Optional[list[str]],  # noqa: UP045 (typer 0.9 cannot read `X | None`)
    typer.Option("--service-port", help="NAMESPACE/SERVICE=PORT: a Service's loopback port "
                 "(default: a spare one, kept while the Service exists)."),
]  # fmt: skip
MaxReplicas = Annotated[
    int, typer.Option(help="Run at most this many pods per Deployment (0: as many as asked).")
]


def wait_for_signal() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with suppress(KeyboardInterrupt):
        signal.pause()


@app.command("serve")
def serve_command(
    directory: Annotated[Path, typer.Option(help="State: registry, volumes, kubeconfig.")] = (
        STATE_DIR
    ),
    service_port: ServicePorts = None,
    max_replicas: MaxReplicas = 0,
) -> None:
    """Run a registry and a cluster with this project's namespaces until stopped (Ctrl-C)."""
    namespaces = list(overlay_namespaces().values())
    with running(directory, namespaces, ports_of(service_port or []),
                 max_replicas or None) as up:  # fmt: skip
        typer.echo(f"cluster: API {up.api.url}; registry {up.registry}; namespaces "
                   f"{', '.join(namespaces)}\n  export KUBECONFIG={up.kubeconfig} "
                   f"KUBECTL='{sys.executable} -m gitml.release.cluster.kubectl'\n"
                   "Ctrl-C stops it and every pod it runs.")  # fmt: skip
        wait_for_signal()


@app.command("rehearse")
def rehearse_command(
    image: Annotated[str, typer.Option(help="The built serving image.")] = (
        "localhost/gitml-serving:latest"
    ),
    version: Annotated[str, typer.Option(help="The model version to release.")] = "rehearsal",
    directory: Annotated[Path, typer.Option(help="State: registry, volumes, kubeconfig.")] = (
        STATE_DIR
    ),
    service_port: ServicePorts = None,
    max_replicas: MaxReplicas = 1,
    keep: Annotated[bool, typer.Option(help="Keep serving until Ctrl-C.")] = True,
) -> None:
    """Push IMAGE to a local registry and release it as release.yml does: `make k8s-deploy`
    (candidate beside the live version, checked on its preview Service, then switched) and
    `make smoke` on the live Service, in staging, then production."""
    environments = overlay_namespaces()
    with running(directory, list(environments.values()), ports_of(service_port or []),
                 max_replicas or None) as up:  # fmt: skip
        from gitml.release.image import push

        digest = push(image, f"{up.registry}/gitml-serving:{version}")
        front = f"{shlex.quote(sys.executable)} -m gitml.release.cluster.kubectl"
        env = {**os.environ, "KUBECONFIG": str(up.kubeconfig), "KUBECTL": front}
        for stage in ("staging", "production"):
            reference = f"{up.registry}/gitml-serving@{digest}"
            for target in ("k8s-deploy", "smoke"):
                url = up.service_url(environments[stage]) if target == "smoke" else ""
                done = subprocess.run(["make", target, f"ENV={stage}", f"IMAGE_REF={reference}",
                                       f"VERSION={version}", f"SMOKE_URL={url}"], env=env,
                                      cwd=PROJ_ROOT, check=False)  # fmt: skip
                if done.returncode != 0:
                    typer.echo(f"cluster: `make {target} ENV={stage}` failed", err=True)
                    raise typer.Exit(1)
        for stage in ("staging", "production"):
            typer.echo(f"cluster: {stage} serves {version} ({digest}) at "
                       f"{up.service_url(environments[stage])}")  # fmt: skip
        if keep:
            typer.echo(f"  export KUBECONFIG={up.kubeconfig}\nCtrl-C stops it.")
            wait_for_signal()


if __name__ == "__main__":
    app()
