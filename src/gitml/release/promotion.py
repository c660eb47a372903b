"""Which versions may reach production: those that passed staging's checks, as Git records it.

A deploy job records a pass as the GTO stage tag it pushes once the environment serves the
version and its checks passed (`make stage-passed`), its message `checks passed in staging:
VERSION (IMAGE)`. A production stage tag moved by a person is deployed only if staging has such a
tag for its version, or if the tag's own message gives a reason, a line `Staging-Override: why`
(`gto assign ... --message "Staging-Override: why"`): the reason stays in Git, in the tag that
made the deploy. A person's staging tag is a request, not a pass: its pass comes after its checks.
"""

import os
import re
import subprocess
from typing import Annotated

import typer

from gitml.release.registry import RegistryError, checked_stage_tag, record

PASSED = "checks passed in {stage}: "
OVERRIDE = "Staging-Override"


def passed_message(stage: str, version: str, image: str) -> str:
    return f"{PASSED.format(stage=stage)}{version} ({image})"


def tag_message(tag: str) -> str:
    """An annotated tag's message (GTO's tags are annotated)."""
    done = subprocess.run(["git", "tag", "--list", "--format=%(contents)", tag],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.stdout


def passed_versions(messages: list[str], stage: str = "staging") -> set[str]:
    """The versions that the messages of a stage's tags record as passed."""
    marker = PASSED.format(stage=stage)
    return {m[len(marker) :].split()[0] for m in messages if m.startswith(marker)}


def override(message: str) -> str:
    """The reason of a `Staging-Override: why` line, or ""."""
    found = re.search(rf"^{OVERRIDE}:[ \t]*(\S.*)$", message, re.MULTILINE)
    return found[1].strip() if found else ""


def verdict(stage: str, version: str, passed: set[str], message: str) -> tuple[bool, str]:
    """May `version` be deployed to `stage`, given staging's passes and the tag's message?"""
    if stage != "production":
        return True, f"{stage} takes any registered version; its checks decide"
    if version in passed:
        return True, f"{version} passed staging's checks"
    if reason := override(message):
        return True, f"{version} never passed staging; deployed anyway, as the tag says: {reason}"
    return False, (
        f"{version} never passed staging's checks (no staging tag records it): deploy it to "
        "staging first, or give a reason in the production tag's message, which Git keeps: "
        f"gto assign NAME --stage production --version {version} --force --message "
        f'"{OVERRIDE}: why", then push the tag'
    )


app = typer.Typer(add_completion=False, help=__doc__)


@app.command("check")
def check_command(
    name: Annotated[str, typer.Option(help="Artifact name.")],
    tag: Annotated[str, typer.Option(help="A GTO stage tag of NAME that was pushed.")],
) -> None:
    """Refuse (exit 1) a production tag whose version never passed staging, unless its message
    gives a reason."""
    try:
        stage, version = checked_stage_tag(tag)
    except ValueError as err:
        typer.echo(f"promotion: {err}", err=True)
        raise typer.Exit(1) from None
    listed = subprocess.run(["git", "tag", "--list", f"{name}#staging#*"], capture_output=True,
                            text=True, check=False)  # fmt: skip
    stage_tags = listed.stdout.split()
    passed = passed_versions([tag_message(t) for t in stage_tags])
    allowed, why = verdict(stage, version, passed, tag_message(tag))
    if not allowed:
        typer.echo(f"::error title=Production refused {version}::{why}", err=True)
        raise typer.Exit(1)
    if override(tag_message(tag)) and version not in passed:
        typer.echo(f"::warning title=Staging skipped for {version}::{why}")
    typer.echo(f"promotion: {why}")


@app.command("record")
def record_command(
    name: Annotated[str, typer.Option(help="Artifact name.")],
    stage: Annotated[str, typer.Option(help="The environment whose checks passed.")],
    version: Annotated[str, typer.Option(help="The version that serves there now.")],
    image: Annotated[str, typer.Option(envvar="IMAGE_REF", help="Its image, by digest.")],
    push: Annotated[bool, typer.Option(help="Push the tag to origin.")] = False,
) -> None:
    """Record that VERSION passed STAGE's checks and serves there: a GTO stage tag saying so."""
    # --force: a rollback assigns a stage to a version it held before, which GTO refuses without
    args = ["assign", name, "--stage", stage, "--version", version, "--force",
            "--message", passed_message(stage, version, image)]  # fmt: skip
    try:
        tag = record(args, name, push, os.environ)
    except RegistryError as err:
        typer.echo(f"promotion: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"promotion: {tag} records {version} in {stage}" + (" (pushed)" if push else ""))


if __name__ == "__main__":
    app()
