import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitml.comment import WATERMARK, CommentError, cml_command, verify_pr

PR = {"head": {"sha": "abc123", "repo": {"full_name": "team/project"}}}


def test_verified_pr_number() -> None:
    assert verify_pr("42\n", PR, "abc123", "team/project") == 42


@pytest.mark.parametrize(
    ("claimed", "sha", "repo", "message"),
    [
        ("42; rm -rf /", "abc123", "team/project", "not a number"),
        ("42", "other", "team/project", "head commit"),
        ("42", "abc123", "fork/project", "does not come from"),
    ],
)
def test_forged_or_stale_claims_are_refused(
    claimed: str, sha: str, repo: str, message: str
) -> None:
    with pytest.raises(CommentError, match=message):
        verify_pr(claimed, PR, sha, repo)


def test_deleted_fork_repo_is_refused() -> None:
    with pytest.raises(CommentError, match="does not come from"):
        verify_pr("42", {"head": {"sha": "abc123", "repo": None}}, "abc123", "fork/project")


@pytest.mark.parametrize(("publish", "flag"), [(True, "--publish"), (False, "--no-publish")])
def test_cml_updates_one_watermarked_comment(publish: bool, flag: str) -> None:
    command = cml_command(Path("report.md"), 7, publish)
    assert command[:4] == ["cml", "comment", "update", "report.md"]
    assert "--target=pr/7" in command and f"--watermark-title={WATERMARK}" in command
    assert command[-1] == flag


def test_cli_without_cml_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text(json.dumps({"pr_number": "1", "head_sha": "x"}))
    env = {"PATH": "/usr/bin:/bin", "REPORT_DIR": str(tmp_path), "PYTHONPATH": "src"}
    result = subprocess.run(
        [sys.executable, "-m", "gitml.comment"], env=env, capture_output=True, text=True,
        cwd=Path(__file__).parents[1], check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "make install-cml" in result.stderr
    assert os.environ.get("PATH")  # the test's own environment is untouched
