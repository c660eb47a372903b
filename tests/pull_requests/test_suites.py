"""Which suites a change needs: the fast one for an experiment, all for what the heavy ones run."""

import subprocess
from pathlib import Path

import pytest

from gitml.pull_requests.suites import choose, heavy, main

ROOT = Path(__file__).resolve().parents[2]
TRACKED = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip


def test_what_the_heavy_suites_build_and_run_is_heavy() -> None:
    """Workflows, Makefile, Dockerfile, manifests, release and serving code (the issue's list),
    every file of the repository under them."""
    roots = (".github/", "deploy/", "src/gitml/release/", "src/gitml/serving/", "tests/workflows/",
             "tests/e2e/")  # fmt: skip
    under = [path for path in TRACKED if path.startswith(roots)]
    assert len(under) > 50
    assert [path for path in under if not heavy(path)] == []
    for path in ("Makefile", "Dockerfile", "dvc.yaml", "uv.lock", "pyproject.toml", ".ci/run"):
        assert heavy(path), path


def test_an_experiment_needs_only_the_fast_suite() -> None:
    experiment = ["params.yaml", "data.dvc", "dvc.lock", "reports/metrics.json", "README.md",
                  "docs/guide/pipeline.md", "src/gitml/pipeline/features.py",
                  "tests/pipeline/test_features.py"]  # fmt: skip
    suites, why = choose(experiment)
    assert suites == "fast", why
    assert "8 changed files" in why


@pytest.mark.parametrize("touched", ["src/gitml/serving/app.py", ".github/workflows/pr.yml",
                                     "deploy/k8s/base/deployment.yaml", "src/gitml/dataset.py",
                                     "tests/conftest.py"])  # fmt: skip
def test_one_heavy_input_among_experiment_files_runs_everything(touched: str) -> None:
    suites, why = choose(["params.yaml", touched, "dvc.lock"])
    assert suites == "all"
    assert touched in why and "params.yaml" not in why


def test_a_name_that_only_starts_like_a_heavy_file_is_not_one() -> None:
    assert not heavy("Makefile.local.md")
    assert not heavy("docs/Dockerfile.md")
    assert heavy("src/gitml/release/k8s.py")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True)  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    for path in ("params.yaml", "src/gitml/pipeline/train.py", "src/gitml/serving/app.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("a\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "base")
    git(tmp_path, "switch", "-qc", "change")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_committed_changes_since_the_fork_point_decide(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "params.yaml").write_text("b\n")
    git(repo, "commit", "-qam", "experiment")
    git(repo, "switch", "-q", "main")  # main moves on meanwhile: not this change's
    (repo / "src/gitml/serving/app.py").write_text("b\n")
    git(repo, "commit", "-qam", "serving on main")
    git(repo, "switch", "-q", "change")
    assert main(["--base", "main"]) == 0
    out, err = capsys.readouterr()
    assert out == "fast\n", err


def test_a_rename_out_of_serving_and_an_untracked_file_count(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git(repo, "mv", "src/gitml/serving/app.py", "src/gitml/pipeline/app.py")
    git(repo, "commit", "-qm", "move")
    main(["--base", "main"])
    assert capsys.readouterr().out == "all\n"  # the old name is serving's
    git(repo, "reset", "-q", "--hard", "main")
    (repo / ".github").mkdir()
    (repo / ".github" / "new.yml").write_text("on: push\n")
    main(["--base", "main"])
    out, err = capsys.readouterr()
    assert out == "all\n" and ".github/new.yml" in err


def test_no_diff_to_be_had_runs_everything(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--base", "HEAD~5"])  # a shallow checkout without the base
    out, err = capsys.readouterr()
    assert out == "all\n"
    assert "cannot be listed" in err and "HEAD~5" in err
