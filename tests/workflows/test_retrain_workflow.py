"""retrain.yml on a fork with a team DVC remote, started as the monitor starts it
(workflow_dispatch): production's labelled rows that the dataset lacks become a pushed branch, a
pull request, and its report. With GitHub's default settings (Actions may not open pull
requests) and no token of the team's, nothing is pushed and the setting is named; with the
setting on, GITHUB_TOKEN opens it (its checks do not run); with a GitHub App, a token minted for
the run pushes and opens it, and GitHub starts the pull request's checks."""

import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gitml import dataset
from gitml.schema import EVENT_TIME, as_model_input
from gitml.serving.predlog import PredictionLog, write_actuals
from tests.e2e.clone import run
from tests.workflows import events
from tests.workflows.conftest import REPOSITORY, Fork
from tests.workflows.harness import Result

pytestmark = [pytest.mark.slow, pytest.mark.workflows, pytest.mark.beside]

TOKEN = "ghs_job_token_stand_in"
NEW_ROWS = 72


def ship_new_hours(bucket: Path, rows: pd.DataFrame) -> None:
    """Production served hours after the dataset's last (its rows moved a year on) and their
    actuals arrived: labelled rows the dataset does not hold."""
    shutil.rmtree(bucket, ignore_errors=True)
    log = PredictionLog(bucket / "production" / "predictions", "v0.0.1", instance="pod-a")
    sent = json.loads(as_model_input(rows).to_json(orient="records"))
    ids = [f"req-{i}" for i in range(len(sent))]
    for request_id, row, hour in zip(ids, sent, rows[dataset.TIME], strict=True):
        log.append(request_id, [{**row, EVENT_TIME: hour.isoformat()}], [1.0],
                   now=datetime.now(UTC))  # fmt: skip
    log.close()
    truth = rows[dataset.TARGET].astype(float)
    write_actuals(bucket / "production" / "actuals" / "labels.jsonl",
                  zip(ids, [0] * len(ids), truth, strict=True))  # fmt: skip


def dispatch(fork: Fork, bucket: Path, run_id: int, **extra: dict[str, str]) -> Result:
    """retrain.yml for production, as the monitor's trigger or a person starts it."""
    return fork.runner.act(
        fork.clone, "workflow_dispatch", events.workflow_dispatch(REPOSITORY, {"env": "production"}),
        "retrain.yml", env={"GITHUB_RUN_ID": str(run_id)},
        variables={"PREDICTION_LOGS_URL": f"{bucket}/{{env}}/predictions",
                   "ACTUALS_URL": f"{bucket}/{{env}}/actuals", **extra.get("variables", {})},
        secrets={"GITHUB_TOKEN": TOKEN, **extra.get("secrets", {})},
    )  # fmt: skip


def branches(fork: Fork) -> set[str]:
    return set(run("git", "for-each-ref", "--format=%(refname:short)", "refs/heads",
                   cwd=fork.origin).split())  # fmt: skip


def stored(remote: Path) -> set[str]:
    """What the team's DVC remote holds."""
    return {str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def team_remote(fork: Fork) -> Path:
    """The team's DVC remote (a shared folder, as README "Use your own remote" sets one up),
    holding the data, so what a run pushes to it shows."""
    remote = fork.runner.base.parent / "team-dvc-remote"
    remote.mkdir()
    config = fork.clone / ".dvc" / "config"
    config.write_text(config.read_text().replace("url = ../.dvc-storage", f"url = {remote}"))
    fork.git("commit", "-qam", "Use the team's DVC remote")
    fork.git("push", "-q", "origin", "main")
    venv = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run(sys.executable, "-m", "gitml", "data", "--project", str(fork.clone), cwd=fork.clone,
        env=venv)  # fmt: skip
    fork.runner.give_to_runner(remote)
    fork.runner.give_to_runner(fork.clone)
    return remote


@pytest.fixture(scope="module")
def bucket(fork: Fork, team_remote: Path, splits: dict[str, pd.DataFrame]) -> Path:
    """Production's log and actuals: hours a year after the test split's last, labelled."""
    bucket = fork.runner.base.parent / "log-bucket"
    last = splits["test"].sort_values(dataset.TIME).tail(NEW_ROWS).copy()
    year_on = pd.DateOffset(years=1)
    last[dataset.TIME] = last[dataset.TIME] + year_on  # hours the dataset does not hold
    ship_new_hours(bucket, last)
    fork.runner.give_to_runner(bucket)
    return bucket


@pytest.fixture(scope="module")
def refused(fork: Fork, team_remote: Path, bucket: Path) -> tuple[Result, set[str], set[str]]:
    """GitHub's defaults: Actions may not open pull requests, and no token of the team's."""
    assert fork.github.state.actions_can_create_pulls is False
    before, held = branches(fork), stored(team_remote)
    result = dispatch(fork, bucket, 500)
    return result, branches(fork) - before, stored(team_remote) - held


@pytest.fixture(scope="module")
def retrained(fork: Fork, bucket: Path, refused: object) -> tuple[Result, list[str]]:
    """The setting on: GITHUB_TOKEN pushes the branch and opens the pull request."""
    fork.github.state.actions_can_create_pulls = True
    before = branches(fork)
    result = dispatch(fork, bucket, 501)
    return result, sorted(branches(fork) - before)


def test_with_actions_kept_from_opening_pull_requests_nothing_is_pushed_and_the_setting_named(
    fork: Fork, refused: tuple[Result, set[str], set[str]]
) -> None:
    result, new_branches, pushed = refused
    assert result.jobs.get("retrain") == "failed", result.job_output("retrain")[-6000:]
    said = result.job_output("retrain")
    assert "GitHub refuses pull requests opened with the job's GITHUB_TOKEN while the " in said
    assert '"Allow GitHub Actions to create and approve pull requests" is off' in said
    assert "RETRAIN_APP_CLIENT_ID" in said and "nothing was pushed" in said
    assert new_branches == set(), "a branch was pushed before GitHub was asked"
    assert pushed == set(), "a data version was pushed before GitHub was asked"
    assert fork.github.state.pulls == {}


def test_the_new_rows_become_a_pushed_branch_with_a_new_data_version(
    fork: Fork, retrained: tuple[Result, list[str]]
) -> None:
    result, made = retrained
    assert result.succeeded("retrain"), result.job_output("retrain")[-6000:]
    (branch,) = made
    assert branch.startswith("retrain/production-")
    changed = run("git", "diff", "--name-only", "main", branch, cwd=fork.origin).split()
    assert {"data.dvc", "dvc.lock"} <= set(changed)
    message = run("git", "log", "-1", "--format=%s%n%an", branch, cwd=fork.origin)
    assert message.startswith(f"Retrain on {NEW_ROWS} labelled rows of production")
    assert message.splitlines()[1] == "github-actions[bot]"  # the runner has no git identity


def test_the_pull_request_says_its_checks_did_not_run_and_gets_the_report(
    fork: Fork, retrained: tuple[Result, list[str]]
) -> None:
    result, made = retrained
    (pull,) = [p for p in fork.github.state.pulls.values() if p["head"].get("ref") == made[0]]
    assert pull["base"] == {"ref": "main"}
    assert pull["title"].startswith(f"Retrain on {NEW_ROWS} labelled rows of production")
    assert "close and reopen this pull request" in pull["body"]
    assert "set the variable RETRAIN_APP_CLIENT_ID" in result.job_output("retrain")
    # opened and pushed with the job's token: GitHub starts no workflow for either
    assert [e for e in fork.github.state.events if e.get("number") == pull["number"]] == [
        {"event": "pull_request", "number": pull["number"],
         "by": "github-actions[bot] (job retrain)", "starts_workflows": False}
    ]  # fmt: skip
    (push,) = [e for e in fork.github.state.events if e.get("ref") == f"refs/heads/{made[0]}"]
    assert push["by"] == "github-actions[bot] (job retrain)" and not push["starts_workflows"]
    (comment,) = fork.github.comments_on(pull["number"])
    assert comment["body"].startswith("## Model report: this change vs `origin/main`")
    assert "### Against the model in production" in comment["body"]
    assert "no model in production yet" in comment["body"]


APP = {"client_id": "Iv23liGitmlRetrain", "slug": "gitml-retrain"}


@pytest.fixture(scope="module")
def app_retrained(
    fork: Fork, bucket: Path, retrained: object
) -> tuple[Result, list[str]]:  # fmt: skip
    """A GitHub App installed on the repository, with the setting off again: the token the
    workflow mints for the run is not GITHUB_TOKEN, so the setting does not govern it."""
    fork.github.state.actions_can_create_pulls = False
    key = fork.github.add_app(APP["client_id"], APP["slug"],
                              {"contents": "write", "pull-requests": "write"})  # fmt: skip
    before = branches(fork)
    result = dispatch(fork, bucket, 502,
                      variables={"RETRAIN_APP_CLIENT_ID": APP["client_id"]},
                      secrets={"RETRAIN_APP_PRIVATE_KEY": key})  # fmt: skip
    return result, sorted(branches(fork) - before)


def test_a_github_app_token_minted_for_the_run_opens_a_pull_request_whose_checks_run(
    fork: Fork, app_retrained: tuple[Result, list[str]]
) -> None:
    result, new_branches = app_retrained
    assert result.succeeded("retrain"), result.job_output("retrain")[-6000:]
    (branch,) = new_branches
    (pull,) = [p for p in fork.github.state.pulls.values() if p["head"].get("ref") == branch]
    assert "close and reopen" not in pull["body"]
    bot = f"{APP['slug']}[bot]"
    assert {"event": "pull_request", "number": pull["number"], "by": bot,
            "starts_workflows": True} in fork.github.state.events  # fmt: skip
    (push,) = [e for e in fork.github.state.events if e.get("ref") == f"refs/heads/{branch}"]
    assert push["by"] == bot and push["starts_workflows"], "pushed with the App's token"
    assert f"opened pull request #{pull['number']} with the GitHub App's token" in (
        result.job_output("retrain")
    )


def test_nothing_new_makes_no_branch(
    fork: Fork, app_retrained: object, bucket: Path, splits: dict[str, Any]
) -> None:
    """Rows the dataset holds already (its own test hours): no branch, green."""
    ship_new_hours(bucket, splits["test"].sort_values(dataset.TIME).tail(NEW_ROWS))
    fork.runner.give_to_runner(bucket)
    pulls = len(fork.github.state.pulls)
    again = dispatch(fork, bucket, 503)
    assert again.succeeded("retrain"), again.job_output("retrain")[-6000:]
    assert "retrain: nothing new" in again.job_output("retrain")
    assert len(fork.github.state.pulls) == pulls
