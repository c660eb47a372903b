"""Supply-chain audit of the serving image's dependencies (`make audit`).

Runs pip-audit on the serving group exported from uv.lock, hash-pinned and without pip's
resolver, in strict mode (a package that cannot be audited fails the audit instead of passing
silently). Known vulnerabilities that do not apply are listed in `.pip-audit-ignore`, each with
its reason; an entry without a reason is refused.
"""

import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from gitml.config import PROJ_ROOT

IGNORE_FILE = PROJ_ROOT / ".pip-audit-ignore"
ENTRY = re.compile(r"^(?P<id>[A-Za-z]+-[\w-]+)\s+#\s*(?P<reason>\S.{10,})$")


def read_ignores(path: Path = IGNORE_FILE) -> dict[str, str]:
    """Vulnerability IDs to ignore, each with its reason; a bare or malformed line is an error."""
    ignores = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = ENTRY.match(line.strip())
        if match is None:
            raise ValueError(
                f"{path.name}:{number}: expected `ID  # reason`, got {line.strip()!r}"
            )
        ignores[match["id"]] = match["reason"]
    return ignores


def audit_command(requirements: Path, ignores: dict[str, str], osv_url: str | None) -> list[str]:
    command = [
        str(Path(sys.executable).parent / "pip-audit"),
        "--requirement", str(requirements), "--disable-pip", "--strict",
        "--progress-spinner", "off",
    ]  # fmt: skip
    if osv_url:
        command += ["--vulnerability-service", "osv", "--osv-url", osv_url]
    for vulnerability in ignores:
        command += ["--ignore-vuln", vulnerability]
    return command


app = typer.Typer(add_completion=False)


@app.command()
def main(
    requirements: Annotated[Path, typer.Option(help="Hash-pinned serving requirements.")],
    osv_url: Annotated[
        Optional[str],  # noqa: UP045 (typer 0.9, pinned by MLEM, cannot read `str | None`)
        typer.Option(envvar="OSV_URL", help="An OSV API mirror instead of osv.dev."),
    ] = None,
) -> None:
    """Audit the serving dependencies; exit non-zero on any vulnerability not justified."""
    try:
        ignores = read_ignores()
    except ValueError as err:
        typer.echo(f"audit: {err}", err=True)
        raise typer.Exit(2) from None
    result = subprocess.run(audit_command(requirements, ignores, osv_url), check=False)
    raise typer.Exit(result.returncode)


if __name__ == "__main__":
    app()
