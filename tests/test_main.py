"""`python -m gitml <command>`: the one entry point the Makefile, dvc.yaml and the image use."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gitml.__main__ import COMMANDS, MODULES, main, usage
from gitml.config import PROJ_ROOT


@pytest.mark.slow  # a process per command, most importing pandas or MLEM: ~45 s of CPU
def test_every_command_answers_help_with_its_own_usage(tmp_path: Path) -> None:
    children = {
        command: subprocess.Popen(
            [sys.executable, "-m", "gitml", command, "--help"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in MODULES
    }
    for command, child in children.items():
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, (command, err)
        assert re.match(r"\s*usage:", out, re.IGNORECASE), (command, out)
        assert "--help" in out, command


def test_each_command_lives_in_the_part_the_readme_names() -> None:
    # the layout promise: a command's module sits in its part's subpackage (package is the
    # pipeline's stage that serving/packaging.py implements, beside the loader of what it saves)
    folders = {
        "pipeline": "pipeline",
        "pull requests": "pull_requests",
        "serving": "serving",
        "release": "release",
        "monitoring": "monitoring",
    }
    misplaced = {
        command: module
        for part, commands in COMMANDS.items()
        for command, (module, _) in commands.items()
        if module.split(".")[1] != folders[part] and command != "package"
    }
    assert misplaced == {}
    assert MODULES["package"] == "gitml.serving.packaging"


def test_the_docs_list_the_commands_as_help_prints_them() -> None:
    contributing = (PROJ_ROOT / "docs" / "contributing" / "index.md").read_text()
    assert usage() in contributing


def test_an_unknown_command_is_named_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploi"]) == 2
    err = capsys.readouterr().err
    assert "no command 'deploi'" in err
    assert "deploy" in err


def test_no_command_prints_the_list_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("usage: python -m gitml <command>")
    assert captured.out == ""
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: python -m gitml <command>")


def bare_python(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # -S: no site-packages, as with a runner's bare python3 (the Makefile's STDLIB_PYTHON)
    return subprocess.run(
        [sys.executable, "-S", "-m", "gitml", *args],
        env={"PYTHONPATH": str(PROJ_ROOT / "src"), "PATH": os.environ["PATH"], **env},
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", ["preflight", "notify", "trigger"])
def test_stdlib_commands_run_through_the_entry_point_on_a_bare_python(
    tmp_path: Path, command: str
) -> None:
    result = bare_python(tmp_path, command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_the_runner_choice_runs_on_a_bare_python(tmp_path: Path) -> None:
    result = bare_python(tmp_path, "runner", GITHUB_REPOSITORY="octo/gitml")
    assert result.returncode == 0, result.stderr
    assert "kind=github-hosted" in result.stdout


def test_the_comment_runs_on_a_bare_python_and_names_what_it_lacks(tmp_path: Path) -> None:
    result = bare_python(tmp_path, "comment")
    assert result.returncode == 1
    assert result.stderr.startswith("comment: ")
    assert "Traceback" not in result.stderr
