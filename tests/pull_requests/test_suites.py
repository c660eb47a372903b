"""Which suites a change needs: the fast one for an experiment, all for what the heavy ones run."""

import subprocess
from pathlib import Path

import pytest

from gitml.pull_requests.suites import choose, heavy, main

ROOT = Path(__file__).resolve().parents[2]


def test_what_the_heavy_suites_build_and_run_is_heavy() -> None:
    """Workflows, Makefile, Dockerfile, manifests, release and serving code (the issue's list),
    every file of the repository under them."""
    roots = (".github/", "deploy/", "src/gitml/release/", "src/gitml/serving/", "tests/workflows/",
             "tests/e2e/")  # fmt: skip
    # the files on disk (mutation testing runs in a copy that is not a git checkout)
    under = [path.relative_to(ROOT).as_posix() for root in roots for path in (ROOT / root).rglob("*")
             if path.is_file() and "__pycache__" not in path.parts]  # fmt: skip
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


def test_no_change_at_all_is_fast_and_says_so() -> None:
    assert choose([]) == ("fast", "no file changed")


def test_many_heavy_inputs_are_named_five_then_counted() -> None:
    heavy_files = [f"src/gitml/serving/m{i}.py" for i in range(7)]
    assert choose(heavy_files) == ("all", "the heavy suites' inputs changed: " + ", ".join(
        heavy_files[:5]) + " and 2 more")  # fmt: skip
    assert choose(heavy_files[:5])[1].endswith(heavy_files[4])  # five: all named, no count
    assert choose(heavy_files[:6])[1].endswith(f"{heavy_files[4]} and 1 more")


def test_an_ignored_file_is_no_change(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / ".gitignore").write_text(".github/\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignore")
    (repo / ".github").mkdir()
    (repo / ".github" / "scratch.yml").write_text("on: push\n")
    main(["--base", "main"])
    out, err = capsys.readouterr()
    assert out == "fast\n" and "1 changed files" in err  # .gitignore itself, not the scratch


def test_gits_own_refusal_is_quoted(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--base", "nope"])
    err = capsys.readouterr().err
    assert "(git merge-base nope HEAD: fatal: Not a valid object name nope)" in err


def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2 and "--base" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out
    assert usage.startswith("usage: python -m gitml suites [-h] --base BASE\n")
    # the module's first paragraph, as written (its line breaks kept)
    assert "Which tests does a change need? Standard library only: `make test-pr` asks before " \
        "it runs\npytest." in usage  # fmt: skip
    assert "the commit the change is judged against (pr.yml: the merge commit's first" in " ".join(
        usage.split())  # fmt: skip
