"""Retraining as a pull request: production's labelled rows become a branch that retrains.

`make retrain-pr` collects the labelled rows that `make feedback` would add. When there are
new ones, it makes the branch `retrain/<env>-<UTC time>` from HEAD, adds them as a new data
version (dvc add, dvc push), reproduces the pipeline on it (rolling splits move with the data,
so the test split is the newest labelled days), pushes the outputs, commits data.dvc, dvc.lock
and the metrics, pushes the branch and opens a pull request against BASE. Its report compares
the retrained model (the challenger) with the base branch and with the model in production
(the champion, reports/gate.json). Nothing new: no branch, exit 0.

GitHub starts no workflow for a pull request that a job's GITHUB_TOKEN opens. With the
RETRAIN_TOKEN secret set (a GitHub App installation token or a fine-grained PAT: Contents and
Pull requests, read and write), the branch is pushed and the pull request opened with it, so
the pr workflow runs its checks and report as for a person's. Without it, GITHUB_TOKEN opens
it, the retrain workflow posts the report itself, and the pull request says that its checks
have not run and how to start them.
"""

import os
import subprocess
from collections.abc import Mapping
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


def token_for_pull(environ: Mapping[str, str]) -> tuple[str, bool]:
    """(the token to push and open the pull request with, whether GitHub starts its workflows)."""
    if environ.get(TOKEN_SECRET):
        return environ[TOKEN_SECRET], True
    if environ.get("GITHUB_TOKEN"):
        return environ["GITHUB_TOKEN"], False
    raise RetrainError(
        f"no token to open the pull request with: set the {TOKEN_SECRET} secret (a GitHub App "
        "token or fine-grained PAT: Contents and Pull requests, read and write), or pass the "
        "job's GITHUB_TOKEN (permissions: contents: write, pull-requests: write); locally, "
        "`make retrain-pr RETRAIN_PR=false` makes the branch without pushing it"
    )


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
            "checks for it: close and reopen this pull request to run them, or set the "
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
    environ: Mapping[str, str],
) -> tuple[str, str]:  # fmt: skip  # pragma: no mutate block
    """Branch, new data version, reproduced pipeline, commit (and push); (branch, commit)."""
    root = data_dir.parent
    git_env = checkout_git_environment(environ)
    if git("status", "--porcelain", "--untracked-files=no", env=git_env):
        raise RetrainError("the checkout has uncommitted changes: commit or stash them first")
    branch = branch_name(env_name, datetime.now(UTC))
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


def open_pull(
    environ: Mapping[str, str], branch: str, base: str, text: tuple[str, str]
) -> int:  # pragma: no mutate block
    token, _ = token_for_pull(environ)
    github = PullRequests({**environ, "GITHUB_TOKEN": token})
    pull = github.call("POST", "/pulls", {"title": text[0], "body": text[1], "head": branch,
                                          "base": base})  # fmt: skip
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
    environ = os.environ
    try:
        if pull_request:
            if not push:
                raise RetrainError("--pull-request needs --push: GitHub must have the branch")
            _, starts_checks = token_for_pull(environ)  # fail before changing anything
        rows, new = collect(logs, actuals, since, until, data_dir)
        if new.empty:
            typer.echo(f"retrain: nothing new: the dataset holds all {len(rows)} labelled rows")
            return
        branch, commit = retrain_branch(new, len(rows) - len(new), env_name, data_dir, push,
                                        environ)  # fmt: skip
        typer.echo(f"retrain: {len(new)} new rows -> branch {branch} ({commit[:12]})")
        values = {"branch": branch, "sha": commit}
        if pull_request:
            held = len(rows) - len(new)
            text = title(env_name, new), body(env_name, new, held, starts_checks,
                                              run_url(environ))  # fmt: skip
            number = open_pull(environ, branch, base, text)
            values["pr"] = str(number)
            typer.echo(f"retrain: opened pull request #{number}")
            if not starts_checks:
                typer.echo(
                    f"::warning::pull request #{number} was opened with GITHUB_TOKEN, so GitHub "
                    f"starts no checks for it: set the {TOKEN_SECRET} secret (README: retraining)"
                )
        step_outputs(values)  # the report and comment steps read them
    except (RetrainError, GitHubError, FeedbackError, LogError, DataValidationError) as err:
        typer.echo(f"retrain: {err}", err=True)
        raise typer.Exit(1) from None


if __name__ == "__main__":
    app()
