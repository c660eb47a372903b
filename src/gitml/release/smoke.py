"""Smoke checks of a running server: health, model version, golden predictions, latency.

`python -m gitml smoke --url URL --golden artifacts/mlem/golden.json --version V` exits
non-zero when any check fails. Golden cases are written by the package stage: requests and the
predictions the packaged model gives them, so a served model that differs is caught.
"""

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer

from gitml.config import GOLDEN_FILE, MLEM_MODEL, load_params
from gitml.serving.guards import REQUEST_ID_HEADER, SYNTHETIC_HEADER

SYNTHETIC_TOKEN_ENV = "GITML_SYNTHETIC_TOKEN"  # the server's setting of the same name


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_checks(
    url: str,
    golden: dict[str, Any],
    version: str | None,
    settings: dict[str, Any],
    synthetic_token: str = "",
) -> list[Check]:
    """Every check, in order; a failed health check skips the rest (they would only repeat it).
    With the server's `synthetic_token`, the requests are marked synthetic, and the monitor
    leaves them out of the traffic it judges; without it they are traffic like any other."""
    # One client for every request: building one loads the CA bundle (~100 ms), which the
    # latency check would otherwise count against the server.
    headers = {SYNTHETIC_HEADER: synthetic_token} if synthetic_token else {}
    with httpx.Client(timeout=30, headers=headers) as client:
        return _checks(client, url, golden, version, settings)


def request_id() -> dict[str, str]:
    """A new id for each request: a repeated id would read as a retry of the same request."""
    return {REQUEST_ID_HEADER: f"smoke-{uuid.uuid4().hex}"}


def _checks(
    client: httpx.Client,
    url: str,
    golden: dict[str, Any],
    version: str | None,
    settings: dict[str, Any],
) -> list[Check]:
    try:
        health = client.get(f"{url}/healthz", timeout=10)
        healthy = health.status_code == 200 and health.json().get("status") == "ok"
        checks = [Check("health", healthy, f"{health.status_code} {health.text[:200]}")]
    except httpx.HTTPError as err:
        return [Check("health", False, f"no answer: {err}")]
    if not healthy:
        return checks
    served_version = health.json().get("model_version", "")
    if version:
        checks.append(Check("version", served_version == version,
                            f"serves {served_version!r}, expected {version!r}"))  # fmt: skip
    response = client.post(
        f"{url}/predict", json={"data": {"values": golden["rows"]}}, headers=request_id()
    )
    if response.status_code != 200:
        checks.append(Check("golden", False, f"{response.status_code} {response.text[:200]}"))
    else:
        got, expected = np.array(response.json()), np.array(golden["predictions"])
        same = got.shape == expected.shape and np.allclose(got, expected, rtol=settings["rtol"])
        gap = (
            float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
        )
        checks.append(Check("golden", same, f"{len(expected)} predictions, max gap {gap:.2e}"))
    latencies = []
    for row in golden["rows"][:1] * int(settings["latency_requests"]):
        started = time.perf_counter()
        client.post(f"{url}/predict", json={"data": {"values": [row]}}, headers=request_id())
        latencies.append((time.perf_counter() - started) * 1000)
    p95 = float(np.percentile(latencies, 95))
    limit = float(settings["max_p95_latency_ms"])
    checks.append(Check("latency", p95 <= limit, f"p95 {p95:.0f} ms (limit {limit:.0f} ms)"))
    return checks


def passed(checks: list[Check]) -> bool:
    return all(check.ok for check in checks)


app = typer.Typer(add_completion=False)


@app.command()
def main(
    url: Annotated[str, typer.Option(help="Base URL of the server.")],
    golden_path: Annotated[Path, typer.Option("--golden", help="Golden cases.")] = (
        MLEM_MODEL.parent / GOLDEN_FILE
    ),
    version: Annotated[str, typer.Option(help="Model version it must serve ('' = any).")] = "",
    synthetic_token: Annotated[
        str,
        typer.Option(
            envvar=SYNTHETIC_TOKEN_ENV,
            show_default=False,
            help="The server's shared secret that marks these requests synthetic (unset: "
            "they count as traffic).",
        ),
    ] = "",
) -> None:
    """Run the smoke checks against URL; exit 1 if any fails."""
    if not url.strip():
        typer.echo("smoke: no URL to check: set SMOKE_URL (in the release workflow, the "
                   "variable STAGING_URL or PRODUCTION_URL)", err=True)  # fmt: skip
        raise typer.Exit(1)
    if not golden_path.is_file():
        typer.echo(f"smoke: no golden cases at {golden_path}: `make golden` pulls or rebuilds "
                   "the packaged model's", err=True)  # fmt: skip
        raise typer.Exit(1)
    golden = json.loads(golden_path.read_text())
    checks = run_checks(url, golden, version, load_params("smoke"), synthetic_token)
    for check in checks:
        typer.echo(f"smoke: {'ok ' if check.ok else 'FAIL'} {check.name:8s} {check.detail}")
    if not passed(checks):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
