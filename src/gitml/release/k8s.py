"""Deploy to Kubernetes, blue/green: a candidate runs beside the live version and takes traffic
only after it has passed its checks.

An environment has two Deployments, `gitml-serving-blue` and `gitml-serving-green` (the rendered
Deployment with a slot label on its selector and pods), and two Services: `gitml-serving`, the
live one, selecting the live slot, and `gitml-serving-preview`, selecting the other. A deploy
1. applies the candidate (the image by digest, the model version) to the idle slot;
2. waits for its rollout: every pod answers its readinessProbe (a pull that fails, such as a
   digest the registry lacks, never does);
3. smoke-checks it on the preview Service, through `kubectl port-forward`: health, version,
   golden cases, latency (gitml.release.smoke);
4. only then points the live Service at it, checks that the live Service answers the new
   version, and scales the old slot to zero.
A candidate that fails 2 or 3 is scaled to zero: it never served, and the live slot is
untouched. Going back to an earlier release is a deploy of it, through the same checks.

`kubectl` (or the command in KUBECTL) must reach the cluster (KUBECONFIG); its own kustomize
renders the overlay, and the pins and slots are applied to the rendered objects, so nothing is
committed.
"""

import copy
import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml

from gitml.config import GOLDEN_FILE, MLEM_MODEL, PROJ_ROOT, load_params
from gitml.github import step_outputs
from gitml.release.smoke import SYNTHETIC_TOKEN_ENV, Check, passed, run_checks

OVERLAYS = PROJ_ROOT / "deploy" / "k8s" / "overlays"
DEPLOYMENT = "gitml-serving"  # the rendered Deployment, and the live Service
PREVIEW = f"{DEPLOYMENT}-preview"
CONTAINER = "server"
VERSION_ANNOTATION = "gitml/model-version"
SLOT_LABEL = "gitml/slot"
SLOTS = ("blue", "green")
LEGACY = "legacy"  # the single Deployment `gitml-serving` of earlier versions, while it serves
MIGRATE = (
    "the live Service {ns}/{svc} selects pods by their app labels only (the single Deployment "
    "of an earlier version): a candidate would take its traffic unchecked. Move it to "
    "blue/green once: `kubectl -n {ns} label pods -l app.kubernetes.io/name={svc} "
    "{label}={legacy}`, then `kubectl -n {ns} patch service {svc} --type merge -p "
    '\'{{"spec":{{"selector":{{"{label}":"{legacy}"}}}}}}\'`, then deploy again '
    "(docs/guide/releases.md)"
)
Doc = dict[str, Any]


class DeployError(RuntimeError):
    """A deploy step failed; the message says what serves now."""


@dataclass(frozen=True)
class Release:
    image: str  # name@sha256:digest
    version: str


def kubectl(*args: str, stdin: str | None = None) -> str:
    command = [*shlex.split(os.environ.get("KUBECTL", "kubectl")), *args]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result.stdout


def render(env: str, overlays: Path = OVERLAYS) -> list[Doc]:
    """The objects of one environment, as kustomize renders them."""
    if not (overlays / env).is_dir():
        raise ValueError(f"no overlay for environment {env!r} in {overlays}")
    return [doc for doc in yaml.safe_load_all(kubectl("kustomize", str(overlays / env))) if doc]


def the(docs: list[Doc], kind: str, name: str = DEPLOYMENT) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        raise ValueError(f"expected one {kind} {name}, found {len(found)}")
    return found[0]


def pin(docs: list[Doc], image: str, version: str) -> list[Doc]:
    """Set the serving container's image (by digest) and the model version on the pod template."""
    if "@sha256:" not in image:
        raise ValueError(f"deploy an image by digest (name@sha256:...), not {image!r}")
    template = the(docs, "Deployment")["spec"]["template"]
    template["metadata"].setdefault("annotations", {})[VERSION_ANNOTATION] = version
    containers = [c for c in template["spec"]["containers"] if c["name"] == CONTAINER]
    if len(containers) != 1:
        raise ValueError(f"expected one container {CONTAINER!r} in {DEPLOYMENT}")
    containers[0]["image"] = image
    return docs


def release_of(deployment: Doc) -> Release:
    template = deployment["spec"]["template"]
    container = next(c for c in template["spec"]["containers"] if c["name"] == CONTAINER)
    return Release(container["image"], template["metadata"]["annotations"][VERSION_ANNOTATION])


def slot_name(slot: str) -> str:
    return DEPLOYMENT if slot == LEGACY else f"{DEPLOYMENT}-{slot}"


def in_slot(docs: list[Doc], slot: str, live: str | None) -> list[Doc]:
    """The objects that run `docs`' Deployment in `slot` beside the `live` one (None: none yet):
    the slot's Deployment, the preview Service on it, the live Service left on `live` (not made
    before anything passed), the autoscaler on the live slot; the rest as rendered."""
    out = []
    for doc in copy.deepcopy(docs):
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Deployment" and name == DEPLOYMENT:
            doc["metadata"]["name"] = slot_name(slot)
            doc["spec"]["selector"]["matchLabels"][SLOT_LABEL] = slot
            doc["spec"]["template"]["metadata"]["labels"][SLOT_LABEL] = slot
        elif kind == "Service" and name == DEPLOYMENT:
            preview = copy.deepcopy(doc)
            preview["metadata"]["name"] = PREVIEW
            preview["spec"]["selector"][SLOT_LABEL] = slot
            out.append(preview)
            if live is None:
                continue
            doc["spec"]["selector"][SLOT_LABEL] = live
        elif kind == "HorizontalPodAutoscaler":
            doc["spec"]["scaleTargetRef"]["name"] = slot_name(live or slot)
        out.append(doc)
    return out


def switched(docs: list[Doc], slot: str) -> list[Doc]:
    """The live Service and the autoscaler, on `slot`."""
    service, autoscaler = copy.deepcopy(the(docs, "Service")), copy.deepcopy(
        the(docs, "HorizontalPodAutoscaler"))  # fmt: skip
    service["spec"]["selector"][SLOT_LABEL] = slot
    autoscaler["spec"]["scaleTargetRef"]["name"] = slot_name(slot)
    return [service, autoscaler]


def namespace_of(docs: list[Doc]) -> str:
    return str(the(docs, "Deployment")["metadata"]["namespace"])


def get(kind: str, name: str, namespace: str) -> Doc | None:
    """An object as the cluster has it, None when it has none."""
    try:
        return dict(json.loads(kubectl("get", kind, name, "-n", namespace, "-o", "json")))
    except RuntimeError as err:
        if "NotFound" in str(err):
            return None
        raise


def live_slot(namespace: str) -> str | None:
    """The slot the live Service selects; None before the first deploy."""
    service = get("service", DEPLOYMENT, namespace)
    if service is None:
        return None
    if SLOT_LABEL not in service["spec"]["selector"]:
        raise DeployError(MIGRATE.format(ns=namespace, svc=DEPLOYMENT, label=SLOT_LABEL,
                                         legacy=LEGACY))  # fmt: skip
    return str(service["spec"]["selector"][SLOT_LABEL])


def apply(docs: list[Doc]) -> None:
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))


def scale_to_zero(namespace: str, slot: str) -> None:
    kubectl("scale", f"deployment/{slot_name(slot)}", "--replicas=0", "-n", namespace)


def why_unready(namespace: str, slot: str) -> str:
    """What the slot's pods wait for (ImagePullBackOff: ..., CrashLoopBackOff: ...)."""
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"{SLOT_LABEL}={slot}",
                              "-o", "json"))["items"]  # fmt: skip
    reasons = {
        f"{state['waiting'].get('reason')}: {state['waiting'].get('message', '')[:300]}"
        for pod in pods
        for status in pod.get("status", {}).get("containerStatuses") or []
        if "waiting" in (state := status.get("state") or {})
    }
    return "; ".join(sorted(reasons)) or "its pods never became ready"


@contextmanager
def forwarded(namespace: str, service: str) -> Iterator[str]:
    """A loopback URL reaching `service` through `kubectl port-forward` (one of its pods)."""
    command = [*shlex.split(os.environ.get("KUBECTL", "kubectl")), "port-forward",
               f"service/{service}", ":80", "-n", namespace]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        line = process.stdout.readline() if process.stdout else ""  # kubectl says it, or exits
        if not line.startswith("Forwarding from 127.0.0.1:"):
            process.kill()
            said = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"kubectl port-forward service/{service} failed: "
                               f"{(line + said).strip()}")  # fmt: skip
        yield f"http://127.0.0.1:{line.split(':')[1].split()[0]}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def smoke(url: str, version: str, golden: Path | None) -> list[str]:
    """The failed smoke checks of the server at `url` (empty: it passes). Without golden cases
    (a rollback to a release that served until now) health and version only."""
    if golden is None:
        answer = httpx.get(f"{url}/healthz", timeout=10)
        served = answer.json().get("model_version") if answer.status_code == 200 else None
        checks = [Check("health", answer.status_code == 200, str(answer.status_code)),
                  Check("version", served == version, f"serves {served!r}")]  # fmt: skip
    else:
        checks = run_checks(url, json.loads(golden.read_text()), version, load_params("smoke"),
                            os.environ.get(SYNTHETIC_TOKEN_ENV, ""))  # fmt: skip
    for check in checks:
        typer.echo(f"k8s: smoke {'ok ' if check.ok else 'FAIL'} {check.name:8s} {check.detail}")
    return [] if passed(checks) else [f"{c.name}: {c.detail}" for c in checks if not c.ok]


def deploy(docs: list[Doc], timeout: str, golden: Path | None) -> Release | None:
    """Put the pinned `docs` into their environment, blue/green; the release that served before
    (None on a first deploy)."""
    namespace, wanted = namespace_of(docs), release_of(the(docs, "Deployment"))
    live = live_slot(namespace)
    previous = None
    if live is not None and (found := get("deployment", slot_name(live), namespace)):
        previous = release_of(found)
    if previous == wanted:
        typer.echo(f"k8s: {namespace} already serves {wanted.version} ({wanted.image})")
        return previous
    candidate = SLOTS[1] if live == SLOTS[0] else SLOTS[0]
    serving = f"{namespace} still serves {previous.version}" if previous else (
        f"{namespace} serves nothing yet")  # fmt: skip
    apply(in_slot(docs, candidate, live))
    typer.echo(f"k8s: {wanted.version} starts in slot {candidate}, beside "
               f"{previous.version if previous else 'nothing'}")  # fmt: skip
    try:
        try:
            kubectl("rollout", "status", f"deployment/{slot_name(candidate)}", "-n", namespace,
                    f"--timeout={timeout}")  # fmt: skip
        except RuntimeError as err:
            raise DeployError(f"{err} ({why_unready(namespace, candidate)})") from None
        with forwarded(namespace, PREVIEW) as url:
            failures = smoke(url, wanted.version, golden)
        if failures:
            raise DeployError(f"{wanted.version} failed its checks on {PREVIEW}: {failures}")
    except (DeployError, RuntimeError) as err:
        scale_to_zero(namespace, candidate)
        raise DeployError(f"{err}; the candidate was removed without serving; {serving}") from None
    apply(switched(docs, candidate))
    with forwarded(namespace, DEPLOYMENT) as url:
        answers = httpx.get(f"{url}/healthz", timeout=10).json().get("model_version")
    if answers != wanted.version:  # the Service does not reach the checked pods: undo the switch
        if live is not None:
            apply(switched(docs, live))
        scale_to_zero(namespace, candidate)
        raise DeployError(f"after the switch {DEPLOYMENT} answered {answers!r}, not "
                          f"{wanted.version}: switched back; {serving}")  # fmt: skip
    if live is not None:
        scale_to_zero(namespace, live)
    typer.echo(f"k8s: {DEPLOYMENT} now serves {wanted.version} from slot {candidate}")
    return previous


app = typer.Typer(add_completion=False, help=__doc__)
Timeout = Annotated[
    str,
    typer.Option(envvar="ROLLOUT_TIMEOUT", help="How long the candidate may take to be ready."),
]
Golden = Annotated[Path, typer.Option(help="The golden cases.")]


@app.command("render")
def render_command(
    env: Annotated[str, typer.Option(help="staging or production.")],
    image: Annotated[str, typer.Option(help="image@sha256:digest")] = "",
    version: Annotated[str, typer.Option(help="Model version.")] = "",
    slot: Annotated[str, typer.Option(help="Render for this slot (blue, green).")] = "",
) -> None:
    """Print the manifests of ENV (pinned when --image and --version are given)."""
    docs = render(env)
    docs = pin(docs, image, version) if image else docs
    typer.echo(yaml.safe_dump_all(in_slot(docs, slot, slot) if slot else docs), nl=False)


def deploy_and_report(
    env: str, image: str, version: str, timeout: str, golden: Path | None
) -> None:
    if golden is not None and not golden.is_file():
        typer.echo(f"k8s: no golden cases at {golden}: `make golden` pulls or rebuilds the "
                   "packaged model's", err=True)  # fmt: skip
        raise typer.Exit(1)
    try:
        previous = deploy(pin(render(env), image, version), timeout or "10m", golden)
    except (DeployError, RuntimeError, ValueError) as err:
        typer.echo(f"k8s: {err}", err=True)
        raise typer.Exit(1) from None
    step_outputs({"previous-image": previous.image if previous else "",
                  "previous-version": previous.version if previous else ""})  # fmt: skip
    before = f"{previous.version} ({previous.image})" if previous else "nothing"
    typer.echo(f"k8s: {env} serves {image} ({version}); before: {before}")


@app.command("apply")
def apply_command(
    env: Annotated[str, typer.Option(help="staging or production.")],
    image: Annotated[str, typer.Option(envvar="IMAGE_REF", help="image@sha256:digest")],
    version: Annotated[str, typer.Option(envvar="VERSION", help="Model version.")],
    timeout: Timeout = "10m",
    golden: Golden = MLEM_MODEL.parent / GOLDEN_FILE,
) -> None:
    """Deploy IMAGE to ENV blue/green; it serves only once it passed its checks. Prints the
    release that served before as `previous-image` and `previous-version` (step outputs)."""
    deploy_and_report(env, image, version, timeout, golden)


@app.command("rollback")
def rollback_command(
    env: Annotated[str, typer.Option(help="staging or production.")],
    image: Annotated[str, typer.Option(help="What served before (k8s apply's previous-image).")],
    version: Annotated[str, typer.Option(help="Its version (previous-version).")],
    timeout: Timeout = "10m",
) -> None:
    """Return ENV to the release that served before, blue/green: it runs beside the live one
    and takes traffic once it answers its health and version checks (its golden cases are
    another commit's; it passed them when it was deployed and served since)."""
    if not image.strip():
        typer.echo(f"k8s: no release to return {env} to (a first deploy has none); it stays "
                   "as it is", err=True)  # fmt: skip
        raise typer.Exit(1)
    deploy_and_report(env, image, version, timeout, None)


if __name__ == "__main__":
    app()
