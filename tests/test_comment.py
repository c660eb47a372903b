import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitml.comment import (
    WATERMARK,
    CommentError,
    cml_command,
    stale_reports,
    verify_pr,
    with_run_status,
)

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
    command = cml_command(Path("/r/comment.md"), 7, publish, "https://github.com/team/project")
    assert command[:4] == ["cml", "comment", "update", "/r/comment.md"]
    assert "--target=pr/7" in command and f"--watermark-title={WATERMARK}" in command
    # explicit: CML would otherwise read the repository from `git config` in its directory
    assert "--repo=https://github.com/team/project" in command
    assert command[-1] == flag


def report_comment(comment_id: int) -> dict[str, object]:
    mark = f'![](https://cml.dev/watermark.png#abc123 "CML watermark {WATERMARK}")'
    return {"id": comment_id, "body": f"## Model report\n\n{mark}"}


def test_only_the_report_cml_can_see_is_kept() -> None:
    others = [{"id": i, "body": f"note {i}"} for i in range(1, 6)]
    assert stale_reports([*others, report_comment(10)]) == []
    # two reports (an earlier race): the older goes, CML updates the later one
    assert stale_reports([report_comment(3), *others, report_comment(10)]) == [3]


def test_a_report_beyond_cmls_first_page_is_replaced() -> None:
    discussion = [{"id": i, "body": f"note {i}"} for i in range(1, 31)]  # 30 comments first
    assert stale_reports([*discussion, report_comment(40)]) == [40]
    assert stale_reports([*discussion[:29], report_comment(40)]) == []  # the 30th: seen


def test_other_watermarks_are_not_ours() -> None:
    other = {"id": 5, "body": '![](https://cml.dev/watermark.png#abc "CML watermark other")'}
    assert stale_reports([other, report_comment(6), report_comment(7)]) == [6]


def test_a_failed_run_is_marked_on_the_report() -> None:
    assert with_run_status("## R\n", "success", "u") == "## R\n"
    marked = with_run_status("## R\n", "failure", "https://github.com/t/p/actions/runs/9")
    assert marked.endswith("## R\n") and "**failed**" in marked
    assert "https://github.com/t/p/actions/runs/9" in marked


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
