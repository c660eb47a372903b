import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gitml.pipeline.data import (
    EXAMPLE_DVC,
    FILE_NAME,
    SeedError,
    pull_data,
    seed_remote,
    tracked_md5,
)

# Each test drives real DVC commands against a real local remote: seconds each.
pytestmark = pytest.mark.slow


def dvc(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["dvc", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A DVC project tracking the example data (data.dvc as the template ships it) with a
    default local remote, but no data."""
    root = tmp_path / "project"
    root.mkdir()
    dvc("init", "--no-scm", "-q", cwd=root)
    dvc("remote", "add", "-d", "store", str(tmp_path / "remote"), cwd=root)
    (root / "data.dvc").write_text(yaml.safe_dump(EXAMPLE_DVC))
    return root


def test_seeded_remote_serves_a_real_pull(project: Path, tmp_path: Path) -> None:
    assert seed_remote(project) == str(tmp_path / "remote")
    dvc("pull", "-q", "data.dvc", cwd=project)
    pulled = project / "data" / FILE_NAME
    assert pulled.read_text().splitlines()[0].startswith('"season","mnth","day","hr"')
    assert len(pulled.read_text().splitlines()) == 8646
    # the pulled directory hashes to what data.dvc records
    dvc("status", "data.dvc", cwd=project)  # raises if the output is corrupt
    assert "up to date" in dvc("status", "data.dvc", cwd=project)


def test_seed_refuses_data_that_does_not_match_data_dvc(project: Path, tmp_path: Path) -> None:
    spec = yaml.safe_load((project / "data.dvc").read_text())
    spec["outs"][0]["md5"] = "0" * 32 + ".dir"
    (project / "data.dvc").write_text(yaml.safe_dump(spec))
    with pytest.raises(SeedError, match=r"data\.dvc expects"):
        seed_remote(project)
    assert not (tmp_path / "remote").exists()
    assert tracked_md5(project / "data.dvc").startswith("0000")


def test_seed_needs_a_default_remote(project: Path) -> None:
    dvc("remote", "default", "--unset", cwd=project)
    with pytest.raises(SeedError, match="no default DVC remote"):
        seed_remote(project)


def test_pull_data_seeds_an_empty_local_remote_once(project: Path) -> None:
    assert pull_data(project).startswith("seeded the local remote")
    assert (project / "data" / FILE_NAME).exists()
    assert pull_data(project) == "data pulled"


def test_pull_data_never_seeds_a_forks_own_data(project: Path, tmp_path: Path) -> None:
    (project / "data").mkdir()
    (project / "data" / "mine.csv").write_text("when,y\n2020-01-01,1\n")
    dvc("add", "-q", "data", cwd=project)  # data.dvc now tracks the fork's data, never pushed
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")  # as in a fresh clone: only data.dvc
    with pytest.raises(SeedError) as err:
        pull_data(project)
    assert "push your data to a remote the clone can reach" in str(err.value)
    assert f"default remote {tmp_path / 'remote'}" in str(err.value)
    assert not (tmp_path / "remote").exists()  # nothing seeded


def test_pull_data_never_seeds_a_cloud_remote(project: Path) -> None:
    dvc("remote", "add", "-d", "-f", "cloud", "s3://no-such-bucket/store", cwd=project)
    dvc("remote", "modify", "cloud", "endpointurl", "http://127.0.0.1:9", cwd=project)
    with pytest.raises(SeedError, match="dvc pull"):
        pull_data(project)
