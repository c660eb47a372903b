"""Production takes only versions whose staging checks passed (as a staging tag records it), or
one whose production tag says why not: the rule on its own, then on real GTO tags."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gitml.config import PROJ_ROOT
from gitml.release.promotion import (
    OVERRIDE,
    app,
    override,
    passed_message,
    passed_versions,
    verdict,
)


def test_passes_are_read_from_the_messages_the_record_writes() -> None:
    messages = [
        passed_message("staging", "v1.0.0", "ghcr.io/a/b@sha256:" + "1" * 64),
        "Assigning stage staging to artifact bike-demand version v1.1.0",  # a person's request
        passed_message("production", "v1.2.0", "x@sha256:2"),  # another stage's pass
        "",
    ]
    assert passed_versions(messages) == {"v1.0.0"}
    assert passed_versions(messages, "production") == {"v1.2.0"}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (f"{OVERRIDE}: hotfix tonight", "hotfix tonight"),
        (f"Moving production\n\n{OVERRIDE}:   staging is down  \n", "staging is down"),
        (f"{OVERRIDE}:", ""),  # no reason given: no override
        (f"not at the start {OVERRIDE}: x", ""),
        ("Staging-Overrides: x", ""),
    ],
)
def test_an_override_is_a_line_with_a_reason(message: str, reason: str) -> None:
    assert override(message) == reason


def test_production_takes_what_passed_staging_or_what_its_tag_explains() -> None:
    assert verdict("production", "v2", {"v1", "v2"}, "")[0]
    allowed, why = verdict("production", "v3", {"v1"}, "")
    assert not allowed
    assert "v3 never passed staging's checks" in why and f'"{OVERRIDE}: why"' in why
    allowed, why = verdict("production", "v3", {"v1"}, f"{OVERRIDE}: the fix is urgent")
    assert allowed and why.endswith("as the tag says: the fix is urgent")
    assert verdict("staging", "v3", set(), "")[0]  # staging's own checks decide


# --- on real tags --------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with versions v0.0.1 and v0.0.2 registered by GTO; a person's identity."""
    path = tmp_path / "repo"
    path.mkdir()
    shutil.copy(PROJ_ROOT / "dvc.yaml", path / "dvc.yaml")
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Dana")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "dana@example.com")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    git("init", "-q", cwd=path)
    for version in ("v0.0.1", "v0.0.2"):
        git("add", ".", cwd=path)
        git("commit", "-q", "--allow-empty", "-m", version, cwd=path)
        subprocess.run(["gto", "register", "bike-demand", "--version", version], cwd=path,
                       check=True, capture_output=True)  # fmt: skip
    monkeypatch.chdir(path)
    return path


def assign(repo: Path, stage: str, version: str, message: str = "") -> str:
    before = set(git("tag", cwd=repo).split())
    subprocess.run(["gto", "assign", "bike-demand", "--stage", stage, "--version", version,
                    "--force", *(["--message", message] if message else [])], cwd=repo,
                   check=True, capture_output=True)  # fmt: skip
    (tag,) = set(git("tag", cwd=repo).split()) - before
    return tag


@pytest.mark.slow  # GTO is a process per tag: ~1 s each
def test_a_production_tag_is_checked_against_the_recorded_staging_passes(repo: Path) -> None:
    recorded = CliRunner().invoke(app, ["record", "--name", "bike-demand", "--stage", "staging",
                                        "--version", "v0.0.1", "--image", "x@sha256:1"])  # fmt: skip
    assert recorded.exit_code == 0, recorded.output
    assign(repo, "staging", "v0.0.2")  # a person's request; no check passed it
    checks = {version: CliRunner(mix_stderr=False).invoke(app, ["check", "--name", "bike-demand", "--tag", assign(
        repo, "production", version)]) for version in ("v0.0.1", "v0.0.2")}  # fmt: skip
    assert checks["v0.0.1"].exit_code == 0
    assert "v0.0.1 passed staging's checks" in checks["v0.0.1"].stdout
    assert checks["v0.0.2"].exit_code == 1
    assert "::error title=Production refused v0.0.2::" in checks["v0.0.2"].stderr
    forced = assign(repo, "production", "v0.0.2", f"{OVERRIDE}: staging is down")
    result = CliRunner().invoke(app, ["check", "--name", "bike-demand", "--tag", forced])
    assert result.exit_code == 0, result.output
    assert "::warning title=Staging skipped for v0.0.2::" in result.output
    assert "as the tag says: staging is down" in result.output
    # the reason stays in the tag: anyone reads it in the history
    assert git("tag", "--list", "--format=%(contents)", forced, cwd=repo).startswith(OVERRIDE)
