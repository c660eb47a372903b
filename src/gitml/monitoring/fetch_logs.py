"""`make fetch-logs`: copy an environment's prediction log (and actuals) from where its pods
ship them, with `dvc get-url` (s3://, gs://, azure://, https:// or a folder).

PREDICTION_LOGS_URL and ACTUALS_URL may hold `{env}`, replaced by the environment's name, so
one repository variable serves staging and production. A repository that has not set
PREDICTION_LOGS_URL has nothing to watch yet: that is said as a notice and the step succeeds,
with the step output `configured=false` so the rest of the job stands down.
"""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from gitml.github import step_outputs

NOT_CONFIGURED = (
    "::notice title=Monitoring not configured::Nothing to watch: set the repository variable "
    "PREDICTION_LOGS_URL to where {env}'s prediction log is shipped (s3://, gs://, azure://, "
    "https:// or a folder; `{{env}}` in it becomes the environment), and ACTUALS_URL for the "
    "quality checks. README: Monitoring."
)


def fetch(url: str, target: Path) -> None:
    """Copy `url` to `target`; a failed copy leaves the previous `target` as it was."""
    staging = target.with_name(target.name + ".fetch")
    shutil.rmtree(staging, ignore_errors=True)
    copied = subprocess.run(["dvc", "get-url", url, str(staging)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    if copied.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"dvc get-url {url} failed: {copied.stderr.strip()}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def main(
    env: Annotated[str, typer.Option(help="The environment watched.")],
    logs: Annotated[Path, typer.Option(help="Where the prediction log goes.")],
    actuals: Annotated[Path, typer.Option(help="Where the actuals go.")],
) -> None:
    """Fetch ENV's log and actuals, or say that monitoring is not configured."""
    logs_url = os.environ.get("PREDICTION_LOGS_URL", "").strip()
    actuals_url = os.environ.get("ACTUALS_URL", "").strip()
    if not logs_url:
        typer.echo(NOT_CONFIGURED.format(env=env))
        step_outputs({"configured": "false"})
        return
    try:
        logs.parent.mkdir(parents=True, exist_ok=True)
        fetch(logs_url.replace("{env}", env), logs)
        if actuals_url:
            actuals.parent.mkdir(parents=True, exist_ok=True)
            fetch(actuals_url.replace("{env}", env), actuals)
    except RuntimeError as err:
        typer.echo(f"fetch-logs: {err}", err=True)
        raise typer.Exit(1) from None
    step_outputs({"configured": "true"})
    typer.echo(
        f"fetch-logs: {env}'s log in {logs}" + (f", actuals in {actuals}" if actuals_url else "")
    )


if __name__ == "__main__":
    typer.run(main)
