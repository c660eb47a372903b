"""Post the pull-request report as one CML comment that each push updates in place.

Runs in the privileged `pr-comment` workflow (`workflow_run`), which never checks out or runs
the pull request's code: the report artifact is untrusted data. So this module uses only the
standard library, verifies the claimed PR number against the run's head commit through the
GitHub API, and lets CML publish images to its asset host only for same-repository pull
requests and only while the repository variable CML_PUBLISH is not "false".
"""

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

WATERMARK = "gitml model report"


class CommentError(RuntimeError):
    """The report cannot be posted; the message says why."""


def verify_pr(claimed: str, pr: dict[str, Any], head_sha: str, head_repo: str) -> int:
    """The PR number, if the pull request really has the run's head commit and repository."""
    if not re.fullmatch(r"[0-9]{1,10}", claimed.strip()):
        raise CommentError(f"the artifact's PR number {claimed[:20]!r} is not a number")
    if pr.get("head", {}).get("sha") != head_sha:
        raise CommentError(f"PR #{claimed.strip()} is not at the run's head commit {head_sha}")
    if (pr.get("head", {}).get("repo") or {}).get("full_name") != head_repo:
        raise CommentError(f"PR #{claimed.strip()} does not come from {head_repo}")
    return int(claimed)


def cml_command(report: Path, pr_number: int, publish: bool) -> list[str]:
    """`cml comment update`: edits the comment carrying the watermark, or creates it."""
    return [
        "cml", "comment", "update", str(report),
        f"--target=pr/{pr_number}",
        f"--watermark-title={WATERMARK}",
        "--publish" if publish else "--no-publish",
    ]  # fmt: skip


def fetch_pr(repository: str, number: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"https://api.github.com/repos/{repository}/pulls/{int(number)}",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return dict(json.load(response))


def main() -> None:
    """Verify and post REPORT_DIR/report.md; configuration comes from the environment."""
    env = os.environ
    report_dir = Path(env.get("REPORT_DIR", "reports/pr"))
    try:
        if shutil.which("cml") is None:
            raise CommentError("the cml CLI is not installed (make install-cml)")
        meta = json.loads((report_dir / "meta.json").read_text())
        for name in ("GITHUB_REPOSITORY", "RUN_HEAD_SHA", "RUN_HEAD_REPO", "REPO_TOKEN"):
            if not env.get(name):
                raise CommentError(f"environment variable {name} is not set")
        claimed = str(meta["pr_number"])
        pr = fetch_pr(env["GITHUB_REPOSITORY"], claimed, env["REPO_TOKEN"])
        number = verify_pr(claimed, pr, env["RUN_HEAD_SHA"], env["RUN_HEAD_REPO"])
        same_repo = env["RUN_HEAD_REPO"] == env["GITHUB_REPOSITORY"]
        publish = same_repo and env.get("CML_PUBLISH", "true") != "false"
    except (CommentError, OSError, KeyError, ValueError) as err:
        print(f"comment: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    subprocess.run(cml_command(Path("report.md"), number, publish), cwd=report_dir, check=True)


if __name__ == "__main__":
    main()
