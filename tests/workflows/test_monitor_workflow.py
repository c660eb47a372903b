"""The scheduled monitor (monitor.yml) on a fresh fork: unconfigured, then watching a bucket
(a folder URL) that holds production's shipped prediction log and actuals."""

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gitml.dataset import TARGET, TIME
from gitml.schema import FEATURES
from gitml.serving.predlog import PredictionLog, write_actuals
from tests.workflows import events
from tests.workflows.conftest import REPOSITORY, Fork
from tests.workflows.harness import Result

pytestmark = [pytest.mark.slow, pytest.mark.workflows, pytest.mark.beside]

TOKEN = "ghs_job_token_stand_in"


def ship_log(bucket: Path, frame: pd.DataFrame, model: Any, target: str) -> None:
    """What production's pods ship: one request per row, logged now, and its actuals."""
    shutil.rmtree(bucket, ignore_errors=True)
    log = PredictionLog(bucket / "production" / "predictions", "v0.0.1", instance="pod-a")
    rows = json.loads(frame[list(FEATURES)].to_json(orient="records"))
    now = datetime.now(UTC)
    ids = [f"req-{i}" for i in range(len(rows))]
    for request_id, row, prediction in zip(ids, rows, model.predict(frame[list(FEATURES)]),
                                           strict=True):  # fmt: skip
        log.append(request_id, [row], [prediction], now=now)
    log.close()
    write_actuals(bucket / "production" / "actuals" / "labels.jsonl",
                  [(i, 0, float(y)) for i, y in zip(ids, frame[target], strict=True)])  # fmt: skip


def monitor(fork: Fork, run_id: int, variables: dict[str, str]) -> Result:
    return fork.runner.act(
        fork.clone, "schedule", events.schedule(REPOSITORY), "monitor.yml",
        env={"GITHUB_RUN_ID": str(run_id)}, variables=variables,
        secrets={"GITHUB_TOKEN": TOKEN},
    )  # fmt: skip


@pytest.fixture(scope="module")
def bucket(fork: Fork) -> Path:
    return fork.runner.base.parent / "log-bucket"


@pytest.fixture(scope="module")
def watching(bucket: Path) -> dict[str, str]:
    return {"PREDICTION_LOGS_URL": f"{bucket}/{{env}}/predictions",
            "ACTUALS_URL": f"{bucket}/{{env}}/actuals"}  # fmt: skip


@pytest.fixture(scope="module")
def unconfigured(fork: Fork) -> Result:
    return monitor(fork, 401, {})


@pytest.fixture(scope="module")
def runs(
    fork: Fork, unconfigured: Result, bucket: Path, watching: dict[str, str],
    trained_model: Any, splits: dict[str, pd.DataFrame], params: dict[str, Any],
) -> list[tuple[Result, list[dict[str, Any]]]]:  # fmt: skip
    """Three daily runs: the unseen season twice (alarm), then a month like the training's."""
    target = TARGET
    production = splits["production"]
    unseen = production[production[TIME] >= production[TIME].max() - pd.Timedelta(days=14)]
    results = []
    for run_id, frame in ((402, unseen), (403, unseen), (404, splits["test"])):
        ship_log(bucket, frame, trained_model, target)
        fork.runner.give_to_runner(bucket)
        result = monitor(fork, run_id, watching)
        issues = json.loads(json.dumps(list(fork.github.state.issues.values())))
        for issue in issues:  # as the issue's page shows it after this run
            issue["comments"] = [c["body"] for c in fork.github.comments_on(issue["number"])]
        results.append((result, issues))
    return results


def test_unconfigured_it_ends_green_with_a_notice(fork: Fork, unconfigured: Result) -> None:
    assert unconfigured.returncode == 0, unconfigured.job_output("monitor")[-4000:]
    assert unconfigured.succeeded("monitor")
    assert "Monitoring not configured" in unconfigured.job_output("monitor")
    assert "PREDICTION_LOGS_URL" in unconfigured.job_output("monitor")
    assert not unconfigured.ran("notify")
    assert fork.github.state.issues == {}


def test_an_alarm_opens_one_issue(runs: list[tuple[Result, list[dict[str, Any]]]]) -> None:
    result, issues = runs[0]
    assert result.succeeded("monitor") and result.succeeded("notify"), result.output[-6000:]
    (issue,) = issues
    assert issue["state"] == "open" and issue["title"].endswith("(production)")
    assert [label["name"] for label in issue["labels"]] == ["monitoring"]
    assert "Action needed" in issue["body"]


def test_the_next_alarm_comments_on_it(runs: list[tuple[Result, list[dict[str, Any]]]]) -> None:
    result, issues = runs[1]
    assert result.succeeded("notify"), result.job_output("notify")[-4000:]
    (issue,) = issues  # still the one issue
    assert issue["state"] == "open" and issue["number"] == runs[0][1][0]["number"]
    assert len(issue["comments"]) == 1 and "Action needed" in issue["comments"][0]


def test_a_healthy_run_closes_it(runs: list[tuple[Result, list[dict[str, Any]]]]) -> None:
    result, issues = runs[2]
    assert result.succeeded("notify"), result.job_output("notify")[-4000:]
    (issue,) = issues
    assert issue["state"] == "closed"
    assert len(issue["comments"]) == 2 and issue["comments"][-1].startswith("**Healthy again**")


def test_each_quality_alarm_starts_the_retrain_workflow(
    fork: Fork, runs: list[tuple[Result, list[dict[str, Any]]]]
) -> None:
    """Both alarming runs (their windows are labelled and predicted badly) dispatch
    retrain.yml for production on the default branch; the healthy run does not."""
    for result, _ in runs:
        assert result.succeeded("notify"), result.job_output("notify")[-4000:]
    dispatched = {"workflow": "retrain.yml", "ref": "main", "inputs": {"env": "production"}}
    assert fork.github.state.dispatches == [dispatched, dispatched]
    assert "no quality alarm in production: no retraining" in runs[2][0].job_output("notify")
