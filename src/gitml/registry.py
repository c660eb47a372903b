"""The model registry is Git: GTO tags name versions (`bike-demand@v1.2.0`) and stages
(`bike-demand#production#7`). This turns a moved stage tag into what to deploy."""

import json
import os
import subprocess
from typing import Annotated, Any

import typer

STAGES = ("staging", "production")


def stage_assignment(check_ref: dict[str, Any]) -> tuple[str, str]:
    """(stage, version) of a GTO stage assignment, as `gto check-ref --json` describes it."""
    if check_ref.get("event") != "assignment" or check_ref.get("stage") not in STAGES:
        raise ValueError(f"{check_ref.get('tag')!r} does not assign one of {STAGES}")
    return str(check_ref["stage"]), str(check_ref["version"])


def image_digest(image: str, version: str) -> str:
    """The digest the registry holds for IMAGE:VERSION (the image the release pushed)."""
    output = subprocess.run(
        ["docker", "buildx", "imagetools", "inspect", f"{image}:{version}",
         "--format", "{{json .Manifest}}"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return str(json.loads(output)["digest"])


app = typer.Typer(add_completion=False)


@app.command("from-tag")
def from_tag(
    tag: Annotated[str, typer.Option(help="A GTO stage tag.")],
    image: Annotated[str, typer.Option(help="Registry image name.")],
) -> None:
    """Print stage, version and digest as GitHub step outputs."""
    check = subprocess.run(["gto", "check-ref", tag, "--json"], capture_output=True, text=True,
                           check=False)  # fmt: skip
    try:
        stage, version = stage_assignment(json.loads(check.stdout or "{}"))
    except (ValueError, json.JSONDecodeError) as err:
        typer.echo(f"registry: {err} {check.stderr.strip()}", err=True)
        raise typer.Exit(1) from None
    lines = [f"stage={stage}", f"version={version}", f"digest={image_digest(image, version)}"]
    typer.echo("\n".join(lines))
    if "GITHUB_OUTPUT" in os.environ:
        with open(os.environ["GITHUB_OUTPUT"], "a") as outputs:
            outputs.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    app()
