"""Retraining as a pull request: production's labelled rows become a branch that retrains.

`make retrain-pr` collects the labelled rows that `make feedback` would add. When there are
new ones, it makes the branch `retrain/<env>-<UTC time>` from HEAD, adds them as a new data
version (dvc add, dvc push), reproduces the pipeline on it (rolling splits move with the data,
so the test split is the newest labelled days), pushes the outputs, commits data.dvc, dvc.lock
and the metrics, pushes the branch and opens a pull request against BASE. Its report compares
the retrained model (the challenger) with the base branch and with the model in production
(the champion, reports/gate.json). Nothing new: no branch, exit 0.

GitHub starts no workflow for a pull request that a job's GITHUB_TOKEN opens. With a token of
the team's, the branch is pushed and the pull request opened with it, so the pr workflow runs
its checks and report as for a person's: a GitHub App's installation token, minted for this
run by the workflow (RETRAIN_APP_TOKEN, from the variable RETRAIN_APP_CLIENT_ID and the secret
RETRAIN_APP_PRIVATE_KEY: an App token expires within the hour, so it is never stored), else
the RETRAIN_TOKEN secret (a fine-grained PAT: Contents and Pull requests, read and write).
Without either, GITHUB_TOKEN pushes and opens it, which GitHub allows only while the
repository setting "Allow GitHub Actions to create and approve pull requests" is on (it
governs GITHUB_TOKEN only); the retrain workflow then posts the report itself, and the pull
request says that its checks have not run and how to start them.

Before it changes anything (no data version pushed, no branch), it checks with that token that
origin takes the branch (`git push --dry-run`) and that GitHub lets it open pull requests (a
pull request from the base branch onto itself, which GitHub refuses as invalid once it has let
the token through), and names the setting, secret or permission at fault.
"""

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from gitml import dataset
from gitml.config import DATA_DIR
from gitml.github import GitHub, GitHubError, step_outputs
from gitml.monitoring.feedback import (
    Actuals,
    DataDir,
    FeedbackError,
    Logs,
    Since,
    Until,
    add_version,
    collect,
    dvc,
)
from gitml.monitoring.notify import run_url
from gitml.pipeline.validate import DataValidationError
from gitml.release.registry import checkout_git_environment
from gitml.serving.predlog import LogError

TOKEN_SECRET = "RETRAIN_TOKEN"
APP_TOKEN = "RETRAIN_APP_TOKEN"  # minted per run by actions/create-github-app-token
APP_SETTINGS = "the variable RETRAIN_APP_CLIENT_ID and the secret RETRAIN_APP_PRIVATE_KEY"
ACTIONS_PR_SETTING = (
    'Settings > Actions > General > Workflow permissions > "Allow GitHub Actions to create and '
    'approve pull requests"'
)
# GitHub's answer to a job token while that setting is off
NOT_PERMITTED = "not permitted to create or approve pull requests"
# what git says when origin answers 401 to the token (invalid, expired or revoked)
UNAUTHENTICATED = ("could not read Username", "Authentication failed", "Invalid username")
PR_STAGES = ("evaluate",)  # what the report and the gate read; packaging is the release's


class RetrainError(RuntimeError):
    """The retraining branch or pull request cannot be made; the message says which step."""


class PullRequests(GitHub):
    error = RetrainError
    permission = "contents: write, pull-requests: write"


def branch_name(env: str, now: datetime) -> str:
    return f"retrain/{env}-{now.astimezone(UTC):%Y%m%d-%H%M}"


def period(rows: pd.DataFrame) -> str:
    first, last = rows[dataset.TIME].min(), rows[dataset.TIME].max()
    return f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M}"


def title(env: str, new: pd.DataFrame) -> str:
    return f"Retrain on {len(new)} labelled rows of {env} ({period(new)})"


@dataclass(frozen=True)
class PullToken:
    value: str
    source: str  # how the user set it, for messages
    starts_checks: bool  # GitHub starts workflows for what it pushes and opens


def token_for_pull(environ: Mapping[str, str]) -> PullToken:
    """The token to push the branch and open the pull request with: the run's App token, else
    RETRAIN_TOKEN, else the job's GITHUB_TOKEN (whose pull request starts no checks)."""
    if environ.get(APP_TOKEN):
        return PullToken(environ[APP_TOKEN], f"the GitHub App's token ({APP_SETTINGS})", True)
    if environ.get(TOKEN_SECRET):
        return PullToken(environ[TOKEN_SECRET], f"the {TOKEN_SECRET} secret", True)
    if environ.get("GITHUB_TOKEN"):
        return PullToken(environ["GITHUB_TOKEN"], "the job's GITHUB_TOKEN", False)
    raise RetrainError(
        f"no token to open the pull request with: set {APP_SETTINGS} (a GitHub App with "
        f"Contents and Pull requests, read and write), or the {TOKEN_SECRET} secret (a "
        "fine-grained PAT with the same), or pass the job's GITHUB_TOKEN (permissions: "
        "contents: write, pull-requests: write); locally, `make retrain-pr RETRAIN_PR=false` "
        "makes the branch without pushing it"
    )


def refusal_advice(token: PullToken, status: int, message: str) -> str:
    """What to change when GitHub refuses `token` a pull request (HTTP `status`)."""
    if not token.starts_checks and NOT_PERMITTED in message:
        return (f"GitHub refuses pull requests opened with the job's GITHUB_TOKEN while the "
                f"repository setting {ACTIONS_PR_SETTING} is off: turn it on, or give the "
                f"workflow a token of its own ({APP_SETTINGS}, or the {TOKEN_SECRET} secret), "
                "which that setting does not govern")  # fmt: skip
    if status == 401:
        return (f"{token.source} was refused as invalid (401): expired or revoked? A GitHub "
                f"App token expires within the hour, so set {APP_SETTINGS} and the workflow "
                "mints one per run; a PAT must be renewed before it expires")  # fmt: skip
    if token.starts_checks:
        return (f"{token.source} may not open pull requests here: give it Pull requests: read "
                "and write")  # fmt: skip
    return ("the job's GITHUB_TOKEN may not open pull requests: the job needs `permissions: "
            "pull-requests: write`")  # fmt: skip


def push_advice(token: PullToken) -> str:
    if token.starts_checks:
        return f"{token.source} may not push to origin: give it Contents: read and write"
    return "the job's GITHUB_TOKEN may not push: the job needs `permissions: contents: write`"


def body(env: str, new: pd.DataFrame, held: int, starts_checks: bool, run_url: str) -> str:
    """The pull request's description: what changed, and what to read before merging."""
    lines = [
        f"Production ({env}) has {len(new)} labelled rows the dataset did not hold "
        f"({period(new)}; {held} more were already in it). This branch adds them as a new "
        "data version (`data.dvc`) and retrains on it (`dvc.lock`, `reports/metrics.json`).",
        "",
        "The model report compares this model with the base branch's and with the model in "
        "production, on the newest labelled days, which neither trained on. Merge only if it "
        "beats production: the release refuses a worse model (`make gate`).",
    ]
    if not starts_checks:
        lines += [
            "",
            f"> [!WARNING]\n> Opened with the workflow's `GITHUB_TOKEN`, so GitHub started no "
            "checks for it: close and reopen this pull request to run them, or give the retrain "
            f"workflow a GitHub App (`RETRAIN_APP_CLIENT_ID`, `RETRAIN_APP_PRIVATE_KEY`) or the "
            f"`{TOKEN_SECRET}` secret so that the next one runs them itself.",
        ]
    if run_url:
        lines += ["", f"Opened by {run_url}"]
    return "\n".join(lines) + "\n"


# git and DVC plumbing: tests/monitoring/test_retrain.py runs it in a real repository with a
# real remote (marker `slow`), which `make mutation` leaves out
def git(*args: str, env: Mapping[str, str]) -> str:  # pragma: no mutate block
    done = subprocess.run(["git", *args], capture_output=True, text=True, env=dict(env),
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise RetrainError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def retrain_branch(
    new: pd.DataFrame, held: int, env_name: str, data_dir: Path, push: bool,
    environ: Mapping[str, str], branch: str = "",
) -> tuple[str, str]:  # fmt: skip  # pragma: no mutate block
    """Branch, new data version, reproduced pipeline, commit (and push); (branch, commit)."""
    root = data_dir.parent
    git_env = checkout_git_environment(environ)
    if git("status", "--porcelain", "--untracked-files=no", env=git_env):
        raise RetrainError("the checkout has uncommitted changes: commit or stash them first")
    branch = branch or branch_name(env_name, datetime.now(UTC))
    git("switch", "--quiet", "--create", branch, env=git_env)
    try:
        add_version(new, data_dir, push)
        dvc("repro", *PR_STAGES, cwd=root)
        if push:
            dvc("push", "--run-cache", cwd=root)
        git("add", "--update", env=git_env)
        message = (
            f"{title(env_name, new)}\n\n{held} labelled rows of the period were already held."
        )
        git("commit", "--quiet", "--no-verify", "--message", message, env=git_env)
        if push:  # --no-verify: the data and outputs were pushed above
            git("push", "--quiet", "--no-verify", "origin", f"HEAD:refs/heads/{branch}",
                env=git_env)  # fmt: skip
    except (RetrainError, FeedbackError) as err:
        raise RetrainError(
            f"{err}\nNothing was pushed to origin's branches; the local branch {branch} holds "
            f"what was done (`git switch - && git branch -D {branch}` drops it)"
        ) from None
    return branch, git("rev-parse", "HEAD", env=git_env)


def with_token(environ: Mapping[str, str], token: PullToken) -> dict[str, str]:
    """The environment for git and the API, with `token` as the one GitHub sees."""
    return {**environ, "GITHUB_TOKEN": token.value}


def check_access(
    environ: Mapping[str, str], token: PullToken, branch: str, base: str
) -> None:  # pragma: no mutate block
    """Before anything is pushed: will origin take the branch, and GitHub the pull request?"""
    git_env = checkout_git_environment(with_token(environ, token))
    pushed = subprocess.run(["git", "push", "--dry-run", "--quiet", "--no-verify", "origin",
                             f"HEAD:refs/heads/{branch}"], capture_output=True, text=True,
                            env=git_env, check=False)  # fmt: skip
    if pushed.returncode != 0:
        said = pushed.stderr.strip()[-300:]
        invalid = any(sign in said for sign in UNAUTHENTICATED)
        advice = refusal_advice(token, 401, "") if invalid else push_advice(token)
        raise RetrainError(f"{advice} (git push --dry-run: {said}); nothing was pushed")
    github = PullRequests(with_token(environ, token))
    try:  # head == base: GitHub lets an allowed token through, then finds it invalid (422)
        probe = github.call("POST", "/pulls", {"title": "gitml: may this token open pull "
                            "requests?", "head": base, "base": base, "body": ""})  # fmt: skip
    except RetrainError as err:
        status = getattr(err, "status", 0)
        if status == 422:
            return
        if status in (401, 403):
            raise RetrainError(f"{refusal_advice(token, status, str(err))}; nothing was pushed "
                               f"(GitHub: {err})") from None  # fmt: skip
        raise
    github.call("PATCH", f"/pulls/{probe['number']}", {"state": "closed"})  # never expected


def open_pull(
    environ: Mapping[str, str], branch: str, base: str, text: tuple[str, str]
) -> int:  # pragma: no mutate block
    token = token_for_pull(environ)
    github = PullRequests(with_token(environ, token))
    try:
        pull = github.call("POST", "/pulls", {"title": text[0], "body": text[1],
                                              "head": branch, "base": base})  # fmt: skip
    except RetrainError as err:
        status = getattr(err, "status", 0)
        if status in (401, 403):
            raise RetrainError(f"{refusal_advice(token, status, str(err))} (GitHub: {err}); "
                               f"the branch {branch} is pushed: open its pull request by "
                               "hand") from None  # fmt: skip
        raise
    return int(pull["number"])


app = typer.Typer(add_completion=False)


@app.command()
def main(
    logs: Logs,
    actuals: Actuals,
    env_name: Annotated[str, typer.Option("--env", help="The environment logged.")],
    since: Since = None,
    until: Until = None,
    base: Annotated[str, typer.Option(help="The branch the pull request goes to.")] = "main",
    data_dir: DataDir = DATA_DIR,
    push: Annotated[bool, typer.Option(help="Push data, outputs and the branch.")] = True,
    pull_request: Annotated[bool, typer.Option(help="Open the pull request (needs push).")] = True,
) -> None:  # pragma: no mutate block
    """Make a branch that retrains on production's new labelled rows, and open its pull request."""
    environ: Mapping[str, str] = os.environ
    try:
        token = None
        if pull_request:
            if not push:
                raise RetrainError("--pull-request needs --push: GitHub must have the branch")
            token = token_for_pull(environ)  # fail before changing anything
            environ = with_token(environ, token)  # the branch is pushed with it too
        rows, new = collect(logs, actuals, since, until, data_dir)
        if new.empty:
            typer.echo(f"retrain: nothing new: the dataset holds all {len(rows)} labelled rows")
            return
        branch = branch_name(env_name, datetime.now(UTC))
        if token is not None:
            check_access(environ, token, branch, base)
            typer.echo(f"retrain: {token.source} may push {branch} and open its pull request")
        branch, commit = retrain_branch(new, len(rows) - len(new), env_name, data_dir, push,
                                        environ, branch)  # fmt: skip
        typer.echo(f"retrain: {len(new)} new rows -> branch {branch} ({commit[:12]})")
        values = {"branch": branch, "sha": commit}
        if token is not None:
            held = len(rows) - len(new)
            starts_checks = token.starts_checks
            text = title(env_name, new), body(env_name, new, held, starts_checks,
                                              run_url(environ))  # fmt: skip
            number = open_pull(environ, branch, base, text)
            values["pr"] = str(number)
            typer.echo(f"retrain: opened pull request #{number} with {token.source}")
            if not starts_checks:
                typer.echo(
                    f"::warning::pull request #{number} was opened with GITHUB_TOKEN, so GitHub "
                    f"starts no checks for it: set {APP_SETTINGS}, or the {TOKEN_SECRET} "
                    "secret (docs/github.md)"
                )
        step_outputs(values)  # the report and comment steps read them
    except (RetrainError, GitHubError, FeedbackError, LogError, DataValidationError) as err:
        typer.echo(f"retrain: {err}", err=True)
        raise typer.Exit(1) from None


if __name__ == "__main__":
    app()
