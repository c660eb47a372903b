"""The local deployment target: staging and production on two loopback ports, from the same
server process the image runs, so the whole release path (deploy, smoke, promote, rollback)
runs and is tested on one machine. Kubernetes (deploy/k8s) is the production-grade target.

A release is an immutable directory `.deploy/releases/<version>/` holding the MLEM model and its
golden cases; promoting copies nothing (production gets staging's exact release). A deploy
starts the release on a spare port and smoke-checks it before it touches the environment; if
the environment then fails its smoke check, the previous release is restored automatically.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from gitml.config import GOLDEN_FILE, MLEM_MODEL, PROJ_ROOT, load_params
from gitml.files import write_json
from gitml.ports import reserve_port
from gitml.release.smoke import SYNTHETIC_TOKEN_ENV, passed, run_checks

PORTS = {
    "staging": int(os.environ.get("GITML_STAGING_PORT", "8081")),
    "production": int(os.environ.get("GITML_PRODUCTION_PORT", "8082")),
}
STATE_DIR = Path(os.environ.get("GITML_DEPLOY_DIR", PROJ_ROOT / ".deploy"))
START_TIMEOUT = float(os.environ.get("GITML_START_TIMEOUT", "120"))


class DeployError(RuntimeError):
    """A deployment step failed; the message says what still serves."""


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def state_file(env: str, state_dir: Path) -> Path:
    if env not in PORTS:
        raise DeployError(f"unknown environment {env!r}; use one of {sorted(PORTS)}")
    return state_dir / f"{env}.json"


def read_state(env: str, state_dir: Path = STATE_DIR) -> dict[str, Any] | None:
    path = state_file(env, state_dir)
    return json.loads(path.read_text()) if path.exists() else None


def stage_release(model_dir: Path, version: str, state_dir: Path = STATE_DIR) -> Path:
    """Copy a packaged model (model, model.mlem, golden.json) into an immutable release dir."""
    release = state_dir / "releases" / version
    if not release.exists():
        missing = [n for n in ("model", "model.mlem", GOLDEN_FILE) if not (model_dir / n).exists()]
        if missing:
            raise DeployError(f"{model_dir} lacks {missing}: run `make package` first")
        scratch = release.with_name(f".{version}.tmp")
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(model_dir, scratch)
        scratch.rename(release)
    return release


def healthy(port: int) -> bool:
    """The server on `port` answers /healthz with 200."""
    try:
        return httpx.get(f"{url(port)}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def foreign_server(env: str, state_dir: Path = STATE_DIR) -> str | None:
    """Why the environment's port is not ours to use, when something else listens on it: a
    server of another checkout (or anything else) is never reused, stopped or replaced."""
    port = PORTS[env]
    try:
        health = httpx.get(f"{url(port)}/healthz", timeout=2)
    except httpx.ConnectError:
        return None  # nothing listens: free
    except httpx.HTTPError as err:
        health = None
        answer = f"does not answer /healthz ({type(err).__name__})"
    state = read_state(env, state_dir)
    if health is not None:
        try:
            version = health.json().get("model_version")
        except ValueError:
            version = None
        if state and alive(state["pid"]) and version == state["version"]:
            return None  # this checkout's server
        answer = f"serves {version}" if version else f"answers HTTP {health.status_code}"
    return (
        f"port {port} is taken by a server that is not this checkout's {env} ({answer}): "
        f"stop it, or give this checkout other ports (GITML_STAGING_PORT, "
        "GITML_PRODUCTION_PORT)"
    )


def synthetic_token(state_dir: Path = STATE_DIR) -> str:
    """The shared secret with which the local environments' smoke checks mark their requests
    synthetic: GITML_SYNTHETIC_TOKEN when set, else one made once and kept in the state
    directory, readable by this user only (`make smoke` reads it from there too)."""
    if token := os.environ.get(SYNTHETIC_TOKEN_ENV):
        return token
    path = state_dir / "synthetic-token"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".synthetic-token.{os.getpid()}")
        descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
        scratch.replace(path)
    return path.read_text().strip()


def prediction_log_dir(env: str, state_dir: Path = STATE_DIR) -> Path:
    """Where an environment's server appends its prediction log (what `make monitor` reads)."""
    return state_dir / "predictions" / env


def start_server(
    release: Path,
    version: str,
    port: int,
    log: Path,
    predictions: Path | None = None,
    listener: socket.socket | None = None,
    token: str = "",
) -> int:
    """Start `python -m gitml serve` for a release, detached; return its process id.
    `predictions`: the prediction log directory (None: a candidate, whose only traffic is
    the smoke check, logs nothing). `listener`: a socket already listening on `port`, which
    the server inherits and serves (see reserve_port). `token`: the synthetic_token its smoke
    checks send.
    """  # fmt: skip
    env = {
        **os.environ, "GITML_MODEL_PATH": str(release / "model"), "GITML_MODEL_VERSION": version,
        "GITML_PORT": str(port), "MLEM_NO_ANALYTICS": "true",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),  # as the image sets it
    }  # fmt: skip
    env.pop("GITML_PREDICTION_LOG_DIR", None)
    env.pop("GITML_FD", None)
    env.pop("GITML_METRICS_FD", None)
    # Nothing scrapes the local environments, and one metrics port cannot serve three servers
    env["GITML_METRICS_PORT"] = "0"
    env[SYNTHETIC_TOKEN_ENV] = token
    if predictions is not None:
        env["GITML_PREDICTION_LOG_DIR"] = str(predictions)
    inherited: tuple[int, ...] = ()
    if listener is not None:
        env["GITML_FD"], inherited = str(listener.fileno()), (listener.fileno(),)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as output:
        command = [sys.executable, "-m", "gitml", "serve"]
        process = subprocess.Popen(command, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   pass_fds=inherited)  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DeployError(f"release {version} exited with {process.returncode} (log: {log})")
        if healthy(port):
            return process.pid
        time.sleep(0.5)
    stop_server(process.pid)
    raise DeployError(
        f"release {version} was not healthy within {START_TIMEOUT:.0f} s (log: {log})"
    )


def stop_server(pid: int | None) -> None:
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it is our child, so it does not linger as a zombie
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)


def smoke(port: int, release: Path, version: str, token: str = "") -> list[str]:
    """Failed checks of the server on `port` (empty when it passes)."""
    golden = json.loads((release / GOLDEN_FILE).read_text())
    checks = run_checks(url(port), golden, version, load_params("smoke"), token)
    return [] if passed(checks) else [f"{c.name}: {c.detail}" for c in checks if not c.ok]


def deploy(env: str, release: Path, version: str, state_dir: Path = STATE_DIR) -> dict[str, Any]:
    """Put `release` into `env`: candidate first, then the environment's port, or roll back."""
    if reason := foreign_server(env, state_dir):
        raise DeployError(reason)
    current = read_state(env, state_dir)
    log = state_dir / "logs" / f"{env}.log"
    token = synthetic_token(state_dir)
    serving = f"{env} still serves {current['version']}" if current else f"{env} is not deployed"
    with reserve_port() as listener:
        candidate_port = int(listener.getsockname()[1])
        try:
            candidate = start_server(
                release, version, candidate_port, log, listener=listener, token=token
            )
        except DeployError as err:
            raise DeployError(f"{err}; {serving}") from None
        failures = smoke(candidate_port, release, version, token)
        stop_server(candidate)
    if failures:
        raise DeployError(f"{version} failed its smoke checks; {serving}: {failures}")
    if current:
        stop_server(current["pid"])
    try:
        logs = prediction_log_dir(env, state_dir)
        pid = start_server(release, version, PORTS[env], log, logs, token=token)
        failures = smoke(PORTS[env], release, version, token)
        if failures:
            stop_server(pid)
            raise DeployError(f"{version} failed its smoke checks in {env}: {failures}")
    except DeployError as err:
        if current:  # automatic rollback to what served before
            pid = start_server(
                Path(current["release"]), current["version"], PORTS[env], log,
                prediction_log_dir(env, state_dir), token=token,
            )  # fmt: skip
            write_json(state_file(env, state_dir), {**current, "pid": pid})
            raise DeployError(f"{err}; rolled back {env} to {current['version']}") from None
        raise
    state = {
        "version": version, "release": str(release), "pid": pid, "port": PORTS[env],
        "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "previous": current["version"] if current else None,
        "previous_release": current["release"] if current else None,
    }  # fmt: skip
    write_json(state_file(env, state_dir), state)
    return state


def promote(state_dir: Path = STATE_DIR) -> dict[str, Any]:
    """Deploy staging's exact release to production."""
    staging = read_state("staging", state_dir)
    if staging is None:
        raise DeployError("staging is not deployed: nothing to promote")
    return deploy("production", Path(staging["release"]), staging["version"], state_dir)


def rollback(env: str, state_dir: Path = STATE_DIR) -> dict[str, Any]:
    """Deploy the release that served `env` before the current one."""
    current = read_state(env, state_dir)
    if current is None or not current.get("previous"):
        raise DeployError(f"{env} has no previous release to roll back to")
    return deploy(env, Path(current["previous_release"]), current["previous"], state_dir)


app = typer.Typer(add_completion=False, help=__doc__)


def _report(action: Any) -> None:
    try:
        state = action()
    except DeployError as err:
        typer.echo(f"deploy: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"deploy: {state['version']} serves on {url(state['port'])}")


@app.command("deploy")
def deploy_command(
    env: Annotated[str, typer.Option(help="staging or production.")],
    version: Annotated[str, typer.Option(help="Version the release is known by.")],
    model_dir: Annotated[Path, typer.Option(help="Packaged model directory.")] = MLEM_MODEL.parent,
    if_down: Annotated[
        bool, typer.Option(help="Only if the environment does not answer.")
    ] = False,
) -> None:
    """Deploy a packaged model to an environment."""
    if env in PORTS and (reason := foreign_server(env)):  # before staging anything
        typer.echo(f"deploy: {reason}", err=True)
        raise typer.Exit(1)
    if if_down and env in PORTS and healthy(PORTS[env]):
        typer.echo(f"deploy: {env} already serves on {url(PORTS[env])}; left as it is")
        return
    _report(lambda: deploy(env, stage_release(model_dir, version), version))


@app.command("promote")
def promote_command() -> None:
    """Deploy staging's release to production."""
    _report(promote)


@app.command("rollback")
def rollback_command(
    env: Annotated[str, typer.Option(help="Environment.")] = "production",
) -> None:
    """Return an environment to its previous release."""
    _report(lambda: rollback(env))


@app.command("status")
def status_command() -> None:
    """What each environment serves, and whether it answers."""
    for env, port in PORTS.items():
        state = read_state(env)
        try:
            health = httpx.get(f"{url(port)}/healthz", timeout=2).json()
        except httpx.HTTPError:
            health = {"status": "down"}
        deployed = state["version"] if state else "-"
        typer.echo(f"{env:10s} {url(port)}  deployed {deployed}  answering: {health}")


@app.command("stop")
def stop_command(env: Annotated[str, typer.Option(help="Environment.")]) -> None:
    """Stop an environment's server (its state stays, so it can be redeployed)."""
    state = read_state(env)
    stop_server(state["pid"] if state else None)


if __name__ == "__main__":
    app()
