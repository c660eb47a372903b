"""Deploy to Kubernetes: render an overlay of deploy/k8s, pin the released image digest and
model version, apply it, and wait for the rolling update; a rollout that does not become ready
is rolled back to the revision that served before (read before applying, so a rollback is
never an undo of an undo), and maxUnavailable 0 never drops capacity meanwhile.

`kubectl` must reach the cluster (KUBECONFIG); no kustomize binary is needed: kubectl's own
renders the overlay and the pins are applied to the rendered objects, so nothing is committed.
"""

import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from gitml.config import PROJ_ROOT
from gitml.github import step_outputs

OVERLAYS = PROJ_ROOT / "deploy" / "k8s" / "overlays"
DEPLOYMENT = "gitml-serving"
CONTAINER = "server"
VERSION_ANNOTATION = "gitml/model-version"
REVISION_PATH = r"jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}"


def kubectl(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True,
                            check=False)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result.stdout


def render(env: str, overlays: Path = OVERLAYS) -> list[dict[str, Any]]:
    """The objects of one environment, as kustomize renders them."""
    if not (overlays / env).is_dir():
        raise ValueError(f"no overlay for environment {env!r} in {overlays}")
    return [doc for doc in yaml.safe_load_all(kubectl("kustomize", str(overlays / env))) if doc]


def pin(docs: list[dict[str, Any]], image: str, version: str) -> list[dict[str, Any]]:
    """Set the serving container's image (by digest) and the model version on the pod template."""
    if "@sha256:" not in image:
        raise ValueError(f"deploy an image by digest (name@sha256:...), not {image!r}")
    deployments = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == DEPLOYMENT
    ]
    if len(deployments) != 1:
        raise ValueError(f"expected one Deployment {DEPLOYMENT}, found {len(deployments)}")
    template = deployments[0]["spec"]["template"]
    template["metadata"].setdefault("annotations", {})[VERSION_ANNOTATION] = version
    containers = [c for c in template["spec"]["containers"] if c["name"] == CONTAINER]
    if len(containers) != 1:
        raise ValueError(f"expected one container {CONTAINER!r} in {DEPLOYMENT}")
    containers[0]["image"] = image
    return docs


def namespace_of(docs: list[dict[str, Any]]) -> str:
    return str(next(d["metadata"]["namespace"] for d in docs if d["kind"] == "Deployment"))


def current_revision(namespace: str) -> int | None:
    """The Deployment's revision now serving, or None before its first deploy."""
    try:
        out = kubectl("get", "deployment", DEPLOYMENT, "-n", namespace, "-o", REVISION_PATH)
    except RuntimeError as err:
        if "NotFound" in str(err):
            return None
        raise
    return int(out) if out.strip() else None


def rollback(namespace: str, revision: int) -> None:
    """Back to one known revision (never a blind `undo`, which a second call would undo)."""
    kubectl("rollout", "undo", f"deployment/{DEPLOYMENT}", "-n", namespace,
            f"--to-revision={revision}")  # fmt: skip


def apply(docs: list[dict[str, Any]], timeout: str) -> int | None:
    """Apply, wait for the rollout; roll back to the revision that served before when it does
    not become ready in time. Returns that revision (None on a first deploy)."""
    namespace = namespace_of(docs)
    previous = current_revision(namespace)
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    try:
        kubectl(
            "rollout",
            "status",
            f"deployment/{DEPLOYMENT}",
            "-n",
            namespace,
            f"--timeout={timeout}",
        )
    except RuntimeError as err:
        if previous is None:
            raise RuntimeError(f"{err}; first deploy, no revision to roll back to") from None
        rollback(namespace, previous)
        raise RuntimeError(f"{err}; rolled back to revision {previous}") from None
    return previous


app = typer.Typer(add_completion=False, help=__doc__)


@app.command("render")
def render_command(
    env: Annotated[str, typer.Option(help="staging or production.")],
    image: Annotated[str, typer.Option(help="image@sha256:digest")] = "",
    version: Annotated[str, typer.Option(help="Model version.")] = "",
) -> None:
    """Print the manifests of ENV (pinned when --image and --version are given)."""
    docs = render(env)
    typer.echo(yaml.safe_dump_all(pin(docs, image, version) if image else docs), nl=False)


@app.command("apply")
def apply_command(
    env: Annotated[str, typer.Option(help="staging or production.")],
    image: Annotated[str, typer.Option(envvar="IMAGE_REF", help="image@sha256:digest")],
    version: Annotated[str, typer.Option(envvar="VERSION", help="Model version.")],
    timeout: Annotated[str, typer.Option(help="Rollout deadline.")] = "10m",
) -> None:
    """Deploy IMAGE to ENV and wait for it; a failed rollout is rolled back. Prints the
    revision that served before as `previous-revision` (a GitHub step output)."""
    try:
        previous = apply(pin(render(env), image, version), timeout)
    except (RuntimeError, ValueError) as err:
        typer.echo(f"k8s: {err}", err=True)
        raise typer.Exit(1) from None
    revision = str(previous or "")
    step_outputs({"previous-revision": revision})
    typer.echo(f"k8s: {env} runs {image} ({version}); previous-revision={revision}")


@app.command("rollback")
def rollback_command(
    env: Annotated[str, typer.Option(help="staging or production.")],
    to_revision: Annotated[str, typer.Option(help="The revision to return to.")] = "",
) -> None:
    """Return ENV to a known revision (k8s apply's previous-revision)."""
    if not to_revision.strip().isdigit():
        typer.echo(f"k8s: no revision to return {env} to (a first deploy has none); "
                   "the Deployment stays as it is", err=True)  # fmt: skip
        raise typer.Exit(1)
    try:
        rollback(namespace_of(render(env)), int(to_revision))
    except (RuntimeError, ValueError) as err:
        typer.echo(f"k8s: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"k8s: {env} rolled back to revision {to_revision}")


if __name__ == "__main__":
    app()
