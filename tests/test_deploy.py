"""The release path on the local target: deploy, smoke, promote, rollback, and GTO's record
of it, with real server processes on loopback ports and real git tags."""

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gitml import deploy
from gitml.config import PROJ_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty local target on spare ports; every server it starts is stopped afterwards."""
    monkeypatch.setitem(deploy.PORTS, "staging", deploy.free_port())
    monkeypatch.setitem(deploy.PORTS, "production", deploy.free_port())
    state_dir = tmp_path / "deploy"
    yield state_dir
    for env in deploy.PORTS:
        state = deploy.read_state(env, state_dir)
        deploy.stop_server(state["pid"] if state else None)


def serving(env: str) -> str | None:
    """The model version an environment answers with, or None when it is down."""
    try:
        return str(
            httpx.get(f"{deploy.url(deploy.PORTS[env])}/healthz", timeout=5).json()[
                "model_version"
            ]
        )
    except httpx.HTTPError:
        return None


def broken_copy(model_dir: Path, tmp_path: Path) -> Path:
    """The same package with a truncated model file: the server cannot load it."""
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model").write_bytes((broken / "model").read_bytes()[:1000])
    return broken


def gto(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["gto", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def test_release_path_promote_and_rollback(
    packaged_model: Path, target: Path, tmp_path: Path
) -> None:
    # GTO records every step as git tags, in a repository of its own for the test.
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(PROJ_ROOT / "dvc.yaml", repo / "dvc.yaml")
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "m"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)
    gto(repo, "register", "bike-demand", "--version", "v1.0.0")

    good = deploy.stage_release(packaged_model.parent, "v1.0.0", target)
    deploy.deploy("staging", good, "v1.0.0", target)
    assert serving("staging") == "v1.0.0"
    gto(repo, "assign", "bike-demand", "--stage", "staging", "--version", "v1.0.0")
    deploy.promote(target)
    assert serving("production") == "v1.0.0"
    gto(repo, "assign", "bike-demand", "--stage", "production", "--version", "v1.0.0")

    # A second good version goes all the way, then production is rolled back.
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "retrain"], cwd=repo, check=True)
    gto(repo, "register", "bike-demand", "--version", "v1.1.0")
    second = deploy.stage_release(packaged_model.parent, "v1.1.0", target / "second")
    deploy.deploy("staging", second, "v1.1.0", target)
    deploy.promote(target)
    assert serving("production") == "v1.1.0"
    gto(repo, "assign", "bike-demand", "--stage", "production", "--version", "v1.1.0")
    deploy.rollback("production", target)
    assert serving("production") == "v1.0.0"
    assert serving("staging") == "v1.1.0"
    gto(repo, "assign", "bike-demand", "--stage", "production", "--version", "v1.0.0", "--force")
    shown = gto(repo, "show")
    assert "v1.0.0" in shown.splitlines()[3]  # name | latest | #production | #staging
    assert (
        "bike-demand#production#"
        in subprocess.run(["git", "tag"], cwd=repo, capture_output=True, text=True).stdout
    )


def test_a_broken_model_stops_in_staging_and_production_keeps_serving(
    packaged_model: Path, target: Path, tmp_path: Path
) -> None:
    good = deploy.stage_release(packaged_model.parent, "v1.0.0", target)
    deploy.deploy("staging", good, "v1.0.0", target)
    deploy.promote(target)

    broken = deploy.stage_release(broken_copy(packaged_model.parent, tmp_path), "v2.0.0", target)
    with pytest.raises(deploy.DeployError, match=r"staging still serves v1\.0\.0"):
        deploy.deploy("staging", broken, "v2.0.0", target)
    assert serving("staging") == "v1.0.0"
    assert serving("production") == "v1.0.0"  # never both down, production untouched
    with pytest.raises(deploy.DeployError, match="no previous release"):
        deploy.rollback("staging", target)


def test_a_release_missing_its_golden_cases_is_refused(
    packaged_model: Path, tmp_path: Path
) -> None:
    incomplete = tmp_path / "incomplete"
    shutil.copytree(packaged_model.parent, incomplete)
    (incomplete / "golden.json").unlink()
    with pytest.raises(deploy.DeployError, match=r"golden\.json"):
        deploy.stage_release(incomplete, "v0.0.1", tmp_path / "deploy")
