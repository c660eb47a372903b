"""Post the pull-request report as one CML comment that each push updates in place.

Runs in the privileged `pr-comment` workflow (`workflow_run`), which never checks out or runs
the pull request's code: the report artifact is untrusted data. So this module uses only the
standard library, verifies the claimed PR number against the run's head commit through the
GitHub API, and lets CML publish images to its asset host only for same-repository pull
requests and only while the repository variable CML_PUBLISH is not "false".

With `--publish`, CML uploads every local file a link, image or link definition of the report
points to, resolved from the report's folder, to its public asset host; the report's content
comes from the pull request's code. So before CML sees it, every link that is not a web URL or
an anchor, and does not name a file inside the report folder (by a plain relative path, no
`..`, no symlink out), is replaced by `#link-removed`, and the log says which.

CML looks for the comment to update among the first page (30) of the PR's comments only; on a
longer discussion it would add a second report at each push. So before CML runs, every report
comment it would not update is deleted: all but the last, and the last too when it lies beyond
that first page (CML then posts a fresh one at the end). There is always exactly one.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WATERMARK = "gitml model report"
# CML's watermark: an image whose title is "CML watermark <title>" (src/watermark.js).
WATERMARK_PATTERN = re.compile(
    r'!\[\]\(https://cml\.dev/watermark\.png#[0-9a-fA-F]+ "CML watermark '
    + re.escape(WATERMARK)
    + r'"\)'
)
FAILED_RUN_NOTE = (
    "> [!CAUTION]\n> Lint or tests **failed** in this run ({url}): the report below is from the "
    "training job, but the change is not ready to merge.\n\n"
)
PAGE = 100
CML_PAGE = 30  # what CML's listComments returns: GitHub's default page size


# Where remark (CML's markdown parser) finds a destination: after `](` (links, images) or `]:`
# (definitions), after blanks and at most one line break (in a quote or list, after its `>`
# markers and indent), possibly in <angle brackets>. Matched generously: anything CML could
# read as a destination is judged.
DESTINATION = re.compile(r"(\]\(|\]:)([ \t]*(?:\r?\n[ \t>]*)?)(<[^>\n]*>|[^\s)]*)")
WEB = re.compile(r"(https?://|mailto:)[^\s<>()\\]*", re.IGNORECASE)
PLAIN_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")
REMOVED = "#link-removed"


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


def inside(folder: Path, target: str) -> bool:
    """`target` is a plain relative path to a regular file inside `folder`, symlinks resolved."""
    if not PLAIN_PATH.fullmatch(target) or ".." in target.split("/"):
        return False
    root = folder.resolve()
    path = (root / target).resolve()
    return path.is_relative_to(root) and path.is_file()


def confine_links(markdown: str, folder: Path) -> tuple[str, list[str]]:
    """The report with every destination CML could upload from outside `folder` replaced;
    and the destinations removed."""
    removed: list[str] = []

    def judge(match: re.Match[str]) -> str:
        target = match[3]
        bare = target[1:-1].strip() if target.startswith("<") else target
        if not bare or (bare.startswith("#") and "/" not in bare) or WEB.fullmatch(bare):
            return match[0]
        if inside(folder, bare):
            return match[0]
        removed.append(bare)
        return f"{match[1]}{match[2]}{REMOVED}"

    return DESTINATION.sub(judge, markdown), removed


def cml_command(report: Path, pr_number: int, publish: bool, repo_url: str) -> list[str]:
    """`cml comment update`: edits the comment carrying the watermark, or creates it.

    `--repo` is explicit: CML otherwise reads `remote.origin.url` in its working directory."""
    return [
        "cml", "comment", "update", str(report),
        f"--repo={repo_url}",
        f"--target=pr/{pr_number}",
        f"--watermark-title={WATERMARK}",
        "--publish" if publish else "--no-publish",
    ]  # fmt: skip


def with_run_status(report: str, conclusion: str, run_url: str) -> str:
    """The report, headed by a warning when the run's lint or tests failed."""
    if conclusion == "success":
        return report
    return FAILED_RUN_NOTE.format(url=run_url or "see the pr workflow run") + report


def stale_reports(comments: list[dict[str, Any]]) -> list[int]:
    """Ids of the report comments CML would not update, given all comments oldest first."""
    reports = [i for i, c in enumerate(comments) if WATERMARK_PATTERN.search(c.get("body") or "")]
    keep = reports[-1:] if reports and reports[-1] < CML_PAGE else []
    return [int(comments[i]["id"]) for i in reports if i not in keep]


def api(env: Mapping[str, str], method: str, path: str) -> Any:
    """One REST call to the repository (GITHUB_API_URL: github.com or an Enterprise host)."""
    base = env.get("GITHUB_API_URL") or "https://api.github.com"
    request = urllib.request.Request(
        f"{base}/repos/{env['GITHUB_REPOSITORY']}{path}", method=method,
        headers={"Authorization": f"Bearer {env['REPO_TOKEN']}",
                 "Accept": "application/vnd.github+json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=20) as response:
        data = response.read()
    return json.loads(data) if data else None


def all_comments(env: Mapping[str, str], number: int) -> list[dict[str, Any]]:
    comments: list[dict[str, Any]] = []
    for page in range(1, 100):
        batch = api(env, "GET", f"/issues/{number}/comments?per_page={PAGE}&page={page}")
        comments += batch
        if len(batch) < PAGE:
            break
    return comments


def main() -> None:
    """Verify and post REPORT_DIR/report.md; configuration comes from the environment."""
    env = os.environ
    report_dir = Path(env.get("REPORT_DIR", "reports/pr")).resolve()
    try:
        if shutil.which("cml") is None:
            raise CommentError("the cml CLI is not installed (make install-cml)")
        meta = json.loads((report_dir / "meta.json").read_text())
        for name in ("GITHUB_REPOSITORY", "RUN_HEAD_SHA", "RUN_HEAD_REPO", "REPO_TOKEN"):
            if not env.get(name):
                raise CommentError(f"environment variable {name} is not set")
        claimed = str(meta["pr_number"])
        pr = api(env, "GET", f"/pulls/{int(claimed)}") if claimed.strip().isdigit() else {}
        number = verify_pr(claimed, pr, env["RUN_HEAD_SHA"], env["RUN_HEAD_REPO"])
        same_repo = env["RUN_HEAD_REPO"] == env["GITHUB_REPOSITORY"]
        publish = same_repo and env.get("CML_PUBLISH", "true") != "false"
        # Written beside report.md, so its relative figure links resolve for CML.
        comment = report_dir / "comment.md"
        report, removed = confine_links((report_dir / "report.md").read_text(), report_dir)
        for target in removed:
            print(f"comment: removed a link to {target[:200]!r}: not a file in the report folder")
        comment.write_text(
            with_run_status(report, env.get("RUN_CONCLUSION", "success"), env.get("RUN_URL", ""))
        )
        server = env.get("GITHUB_SERVER_URL") or "https://github.com"
        repo_url = f"{server}/{env['GITHUB_REPOSITORY']}"
        for stale in stale_reports(all_comments(env, number)):
            api(env, "DELETE", f"/issues/comments/{stale}")
            print(f"comment: removed report comment {stale}, beyond what CML reads; it posts anew")
    except (CommentError, OSError, KeyError, ValueError) as err:  # HTTPError is an OSError
        print(f"comment: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    posted = subprocess.run(cml_command(comment, number, publish, repo_url), check=False)
    if posted.returncode != 0:
        print(f"comment: cml comment update failed (exit {posted.returncode})", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    # --help prints this module's docstring; its settings come from the environment
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
