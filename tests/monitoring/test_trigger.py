"""The monitor starts the retrain workflow on a quality alarm, and on nothing else, through
GitHub's workflow_dispatch API (served on loopback, as the job reaches it)."""

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitml.monitoring.trigger import RETRAIN_WORKFLOW, wants_retraining
from tests.monitoring.test_notify import REPOSITORY, run_notify, write_reports
from tests.workflows.github import FakeGitHub

QUALITY = {"alarm": True, "alarms": ["data_drift", "quality"]}


@pytest.mark.parametrize(
    ("summary", "wanted"),
    [
        (QUALITY, True),
        ({"alarm": True, "alarms": ["quality"]}, True),
        ({"alarm": True, "alarms": ["data_drift"]}, False),  # no labels: nothing to train on
        ({"alarm": False, "alarms": []}, False),
        ({"alarm": False}, False),  # a summary of an older monitor, without the list
    ],
)
def test_only_a_quality_alarm_asks_for_retraining(summary: dict[str, Any], wanted: bool) -> None:
    assert wants_retraining(summary) is wanted


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path, REPOSITORY) as server:
        # the notify job's token: `permissions:` contents: read, issues: write, actions: write
        server.add_token("token", {"contents": "read", "issues": "write", "actions": "write"})
        yield server


def trigger(reports: Path, github: FakeGitHub, **extra: str) -> Any:
    # on the runner's bare python3: tests/test_main.py (here mutmut needs site-packages)
    command = (sys.executable, "-m", "gitml", "trigger", "--env", "staging",
               "--reports", str(reports))  # fmt: skip
    return run_notify(reports, github, *command, GITHUB_REF_NAME="trunk", **extra)


def test_a_quality_alarm_dispatches_the_retrain_workflow_for_the_environment(
    tmp_path: Path, github: FakeGitHub
) -> None:
    started = trigger(write_reports(tmp_path / "r", QUALITY), github)
    assert started.returncode == 0, started.stderr
    assert f"{RETRAIN_WORKFLOW} started for staging" in started.stdout
    assert github.state.dispatches == [
        {"workflow": RETRAIN_WORKFLOW, "ref": "trunk", "inputs": {"env": "staging"}}
    ]


def test_drift_alone_starts_nothing(tmp_path: Path, github: FakeGitHub) -> None:
    quiet = trigger(write_reports(tmp_path / "r", {"alarm": True, "alarms": ["data_drift"]}),
                    github)  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert "no quality alarm in staging: no retraining" in quiet.stdout
    assert github.state.dispatches == [] and github.state.calls == []


def test_a_token_without_actions_write_is_named(tmp_path: Path, github: FakeGitHub) -> None:
    github.add_token("token", {"contents": "read", "issues": "read", "actions": "read"})
    refused = trigger(write_reports(tmp_path / "r", QUALITY), github)
    assert refused.returncode == 1
    assert "was refused (403): the token needs `permissions: actions: write`" in refused.stderr


def test_a_missing_summary_is_named(tmp_path: Path, github: FakeGitHub) -> None:
    missing = trigger(tmp_path / "nothing", github)
    assert missing.returncode == 1
    assert "trigger: " in missing.stderr and "summary.json not found" in missing.stderr


def test_trigger_in_process_dispatches_on_the_default_branch_named_by_the_run(
    tmp_path: Path, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gitml.monitoring.trigger import trigger as start

    monkeypatch.setenv("SSL_CERT_FILE", str(github.ca_file))
    environ = {"GITHUB_TOKEN": "token", "GITHUB_REPOSITORY": REPOSITORY,
               "GITHUB_API_URL": f"https://{github.host}/api/v3"}  # fmt: skip
    assert start(write_reports(tmp_path / "r", QUALITY), "production", environ) is True
    assert start(write_reports(tmp_path / "s", QUALITY), "staging",
                 {**environ, "GITHUB_REF_NAME": "trunk"}) is True  # fmt: skip
    assert start(write_reports(tmp_path / "q", {"alarm": True, "alarms": ["data_drift"]}),
                 "production", environ) is False  # fmt: skip
    assert github.state.dispatches == [
        {"workflow": RETRAIN_WORKFLOW, "ref": "main", "inputs": {"env": "production"}},
        {"workflow": RETRAIN_WORKFLOW, "ref": "trunk", "inputs": {"env": "staging"}},
    ]
    assert {(call.method, call.path) for call in github.state.calls} == {
        ("POST", f"/api/v3/repos/{REPOSITORY}/actions/workflows/{RETRAIN_WORKFLOW}/dispatches")
    }
