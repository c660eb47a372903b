"""retrain.yml on a fresh fork, started as the monitor starts it (workflow_dispatch): production's
labelled rows that the dataset lacks become a pushed branch, a pull request, and its report."""

import json
import shutil
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


def dispatch(fork: Fork, bucket: Path, run_id: int) -> Result:
    """retrain.yml for production, as the monitor's trigger or a person starts it."""
    return fork.runner.act(
        fork.clone, "workflow_dispatch", events.workflow_dispatch(REPOSITORY, {"env": "production"}),
        "retrain.yml", env={"GITHUB_RUN_ID": str(run_id)},
        variables={"PREDICTION_LOGS_URL": f"{bucket}/{{env}}/predictions",
                   "ACTUALS_URL": f"{bucket}/{{env}}/actuals"},
        secrets={"GITHUB_TOKEN": TOKEN},
    )  # fmt: skip


@pytest.fixture(scope="module")
def retrained(fork: Fork, splits: dict[str, pd.DataFrame]) -> tuple[Result, list[str]]:
    bucket = fork.runner.base.parent / "log-bucket"
    last = splits["test"].sort_values(dataset.TIME).tail(NEW_ROWS).copy()
    year_on = pd.DateOffset(years=1)
    last[dataset.TIME] = last[dataset.TIME] + year_on  # hours the dataset does not hold
    ship_new_hours(bucket, last)
    fork.runner.give_to_runner(bucket)
    before = run("git", "branch", "--list", cwd=fork.origin).split()
    result = dispatch(fork, bucket, 501)
    branches = [b for b in run("git", "branch", "--list", cwd=fork.origin).split()
                if b not in before and b != "*"]  # fmt: skip
    return result, branches


def test_the_new_rows_become_a_pushed_branch_with_a_new_data_version(
    fork: Fork, retrained: tuple[Result, list[str]]
) -> None:
    result, branches = retrained
    assert result.succeeded("retrain"), result.job_output("retrain")[-6000:]
    (branch,) = branches
    assert branch.startswith("retrain/production-")
    changed = run("git", "diff", "--name-only", "main", branch, cwd=fork.origin).split()
    assert {"data.dvc", "dvc.lock"} <= set(changed)
    message = run("git", "log", "-1", "--format=%s%n%an", branch, cwd=fork.origin)
    assert message.startswith(f"Retrain on {NEW_ROWS} labelled rows of production")
    assert message.splitlines()[1] == "github-actions[bot]"  # the runner has no git identity


def test_the_pull_request_says_its_checks_did_not_run_and_gets_the_report(
    fork: Fork, retrained: tuple[Result, list[str]]
) -> None:
    result, branches = retrained
    (pull,) = [p for p in fork.github.state.pulls.values() if p["head"].get("ref") == branches[0]]
    assert pull["base"] == {"ref": "main"}
    assert pull["title"].startswith(f"Retrain on {NEW_ROWS} labelled rows of production")
    assert "close and reopen this pull request" in pull["body"]
    assert "set the RETRAIN_TOKEN secret" in result.job_output("retrain")
    opened = next(c for c in fork.github.state.calls if c.path.endswith("/pulls"))
    assert opened.authorization == f"Bearer {TOKEN}"
    (comment,) = fork.github.comments_on(pull["number"])
    assert comment["body"].startswith("## Model report: this change vs `origin/main`")
    assert "### Against the model in production" in comment["body"]
    assert "no model in production yet" in comment["body"]


def test_nothing_new_makes_no_branch(
    fork: Fork, retrained: tuple[Result, list[str]], splits: dict[str, Any]
) -> None:
    """Rows the dataset holds already (its own test hours): no branch, green."""
    bucket = fork.runner.base.parent / "log-bucket"
    ship_new_hours(bucket, splits["test"].sort_values(dataset.TIME).tail(NEW_ROWS))
    fork.runner.give_to_runner(bucket)
    pulls = len(fork.github.state.pulls)
    again = dispatch(fork, bucket, 502)
    assert again.succeeded("retrain"), again.job_output("retrain")[-6000:]
    assert "retrain: nothing new" in again.job_output("retrain")
    assert len(fork.github.state.pulls) == pulls
