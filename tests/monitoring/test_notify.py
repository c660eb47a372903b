"""gitml.monitoring.notify: one monitoring issue per environment, opened on alarm, closed when healthy.

The decision (`plan`) is pure and tested for every case; `main` is tested end to end against
the GitHub stand-in of the workflow harness (tests/workflows/github.py): GitHub's REST API over
HTTPS on loopback, as the job reaches it through GITHUB_API_URL.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitml.config import PROJ_ROOT
from gitml.monitoring.notify import (
    LABEL,
    Action,
    NotifyError,
    body,
    load_summary,
    plan,
    run_url,
    title,
)
from tests.workflows.github import FakeGitHub

ALARM = {"alarm": True, "alarms": ["data_drift"]}
HEALTHY = {"alarm": False, "alarms": []}
MARKDOWN = "## Production monitoring: **Action needed**: data_drift\n\n| check | result |\n"
TITLE = "Production monitoring: drift or degradation (production)"
REPOSITORY = "team/project"
RUN = {
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": REPOSITORY,
    "GITHUB_RUN_ID": "123",
}
RUN_URL = "https://github.com/team/project/actions/runs/123"


def issue(number: int, env: str = "production") -> dict[str, Any]:
    return {"number": number, "title": title(env)}


# --- the decision ---------------------------------------------------------------------------


def test_title_is_fixed_per_environment() -> None:
    assert title("production") == TITLE
    assert title("staging") != TITLE and "staging" in title("staging")


def test_alarm_and_no_open_issue_creates_the_label_then_the_issue() -> None:
    assert plan(ALARM, [], "production") == [Action("label"), Action("create")]


def test_alarm_and_an_open_issue_comments_and_keeps_it_open() -> None:
    assert plan(ALARM, [issue(5)], "production") == [Action("comment", 5)]


def test_healthy_and_an_open_issue_comments_then_closes_it() -> None:
    assert plan(HEALTHY, [issue(5)], "production") == [Action("comment", 5), Action("close", 5)]


def test_healthy_and_no_open_issue_does_nothing() -> None:
    assert plan(HEALTHY, [], "production") == []


@pytest.mark.parametrize("summary", [ALARM, HEALTHY], ids=["alarm", "healthy"])
def test_other_environments_and_near_titles_are_not_ours(summary: dict[str, Any]) -> None:
    others = [issue(3, "staging"), {"number": 4, "title": TITLE + " (old)"}]
    actions = plan(summary, others, "production")
    assert all(action.number not in (3, 4) for action in actions)
    assert bool(actions) == summary["alarm"]


def test_two_open_copies_the_oldest_gets_the_alarm_and_healthy_closes_both() -> None:
    assert plan(ALARM, [issue(9), issue(4)], "production") == [Action("comment", 4)]
    closed = [
        a.number for a in plan(HEALTHY, [issue(9), issue(4)], "production") if a.kind == "close"
    ]
    assert closed == [4, 9]


def test_body_is_the_summary_with_a_link_to_the_run() -> None:
    text = body(ALARM, MARKDOWN, RUN_URL)
    assert text.startswith(MARKDOWN) and RUN_URL in text
    assert "Healthy again" not in text
    healthy = body(HEALTHY, "## Production monitoring: Healthy\n", RUN_URL)
    assert healthy.startswith("**Healthy again**") and RUN_URL in healthy
    assert body(ALARM, MARKDOWN, "") == MARKDOWN  # outside GitHub Actions: no link


def test_body_keeps_the_summarys_last_line_as_written_but_one_newline() -> None:
    for last in ("| drift | 0.7 |  ", "| quality | X"):  # trailing spaces, a last letter X
        assert body(ALARM, f"## Alarm\n{last}\n\n\n", "") == f"## Alarm\n{last}\n"


def test_run_url_needs_all_three_variables() -> None:
    assert run_url(RUN) == RUN_URL
    for missing in RUN:
        assert run_url({k: v for k, v in RUN.items() if k != missing}) == ""


# --- inputs and settings ----------------------------------------------------------------------


def write_reports(directory: Path, summary: dict[str, Any], markdown: str = MARKDOWN) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps(summary))
    (directory / "summary.md").write_text(markdown)
    return directory


def test_load_summary_reads_both_files(tmp_path: Path) -> None:
    assert load_summary(write_reports(tmp_path, ALARM)) == (ALARM, MARKDOWN)


def test_missing_summary_says_the_monitor_did_not_complete(tmp_path: Path) -> None:
    with pytest.raises(NotifyError, match="did not complete") as err:
        load_summary(tmp_path)
    assert str(tmp_path / "summary.json") in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ('{"rows": 3}', "'alarm'"), ('{"alarm": "yes"}', "'alarm'")],
)
def test_a_summary_that_is_not_the_monitors_is_refused(
    tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / "summary.json").write_text(content)
    (tmp_path / "summary.md").write_text(MARKDOWN)
    with pytest.raises(NotifyError, match=message):
        load_summary(tmp_path)


def test_missing_markdown_is_named(tmp_path: Path) -> None:
    (write_reports(tmp_path, ALARM) / "summary.md").unlink()
    with pytest.raises(NotifyError, match=r"summary\.md"):
        load_summary(tmp_path)


def test_stdlib_only_so_the_runners_python_can_run_it() -> None:
    # -S: no site-packages, as with the runner's bare python3 (make monitor-issue).
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import gitml.monitoring.notify"],
        env={"PYTHONPATH": str(PROJ_ROOT / "src"), "PATH": os.environ["PATH"]},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- main, end to end against GitHub's REST API on loopback --------------------------------


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path, REPOSITORY) as server:
        # the notify job's token: `permissions:` contents: read, issues: write, actions: write
        server.add_token("token", {"contents": "read", "issues": "write", "actions": "write"})
        yield server


def open_issue(github: FakeGitHub, number: int, env: str = "production") -> None:
    github.state.issues[number] = {"number": number, "title": title(env), "body": "",
                                   "labels": [{"name": LABEL}], "state": "open"}  # fmt: skip


def run_notify(
    reports: Path, github: FakeGitHub, *command: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(PROJ_ROOT / "src"),
        "SSL_CERT_FILE": str(github.ca_file),
        "GITHUB_API_URL": f"https://{github.host}/api/v3",
        "GITHUB_TOKEN": "token",
        **RUN,
        **extra,
    }
    command = command or (sys.executable, "-m", "gitml", "notify", "--env", "production",
                          "--reports", str(reports))  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                          cwd=PROJ_ROOT)  # fmt: skip


def calls(github: FakeGitHub) -> list[tuple[str, str]]:
    return [
        (c.method, c.path.removeprefix(f"/api/v3/repos/{REPOSITORY}")) for c in github.state.calls
    ]


def test_main_opens_an_issue_on_alarm(tmp_path: Path, github: FakeGitHub) -> None:
    result = run_notify(write_reports(tmp_path / "r", ALARM), github)
    assert result.returncode == 0, result.stderr
    assert calls(github) == [("GET", "/issues"), ("POST", "/labels"), ("POST", "/issues")]
    (opened,) = github.open_issues()
    assert opened["title"] == TITLE and opened["labels"] == [{"name": LABEL}]
    assert opened["body"].startswith(MARKDOWN) and RUN_URL in opened["body"]
    assert f"opened issue #{opened['number']}" in result.stdout
    assert all(c.authorization == "Bearer token" for c in github.state.calls)


def test_an_existing_label_is_not_an_error(tmp_path: Path, github: FakeGitHub) -> None:
    github.state.labels[LABEL] = {"name": LABEL}
    result = run_notify(write_reports(tmp_path / "r", ALARM), github)
    assert result.returncode == 0, result.stderr
    assert len(github.open_issues()) == 1


def test_main_comments_on_the_open_issue(tmp_path: Path, github: FakeGitHub) -> None:
    open_issue(github, 5)
    result = run_notify(write_reports(tmp_path / "r", ALARM), github)
    assert result.returncode == 0, result.stderr
    assert calls(github) == [("GET", "/issues"), ("POST", "/issues/5/comments")]
    assert github.comments_on(5)[0]["body"].startswith(MARKDOWN)


def test_main_closes_the_issue_once_healthy(tmp_path: Path, github: FakeGitHub) -> None:
    open_issue(github, 5)
    open_issue(github, 6, "staging")
    reports = write_reports(tmp_path / "r", HEALTHY, "## Production monitoring: Healthy\n")
    result = run_notify(reports, github)
    assert result.returncode == 0, result.stderr
    assert github.state.issues[5]["state"] == "closed"
    assert github.state.issues[6]["state"] == "open"  # staging's is not ours
    assert github.comments_on(5)[0]["body"].startswith("**Healthy again**")


def test_main_does_nothing_when_healthy_and_no_issue(tmp_path: Path, github: FakeGitHub) -> None:
    result = run_notify(write_reports(tmp_path / "r", HEALTHY), github)
    assert result.returncode == 0, result.stderr
    assert calls(github) == [("GET", "/issues")]
    assert "nothing to do" in result.stdout


def test_open_issues_are_read_past_the_first_page(tmp_path: Path, github: FakeGitHub) -> None:
    for number in range(1, 131):  # the environment's issue is the oldest, on page 2
        open_issue(github, number, "production" if number == 1 else f"env{number}")
    result = run_notify(write_reports(tmp_path / "r", ALARM), github)
    assert result.returncode == 0, result.stderr
    assert len(github.comments_on(1)) == 1 and len(github.open_issues()) == 130


def test_main_without_summary_fails_before_calling_github(
    tmp_path: Path, github: FakeGitHub
) -> None:
    result = run_notify(tmp_path / "empty", github)
    assert result.returncode == 1
    assert "summary.json not found" in result.stderr and "did not complete" in result.stderr
    assert github.state.calls == []


def test_main_without_token_names_it(tmp_path: Path, github: FakeGitHub) -> None:
    result = run_notify(write_reports(tmp_path / "r", ALARM), github, GITHUB_TOKEN="")
    assert result.returncode == 1
    assert "GITHUB_TOKEN" in result.stderr and github.state.calls == []


def test_issues_disabled_says_where_to_enable_them(tmp_path: Path, github: FakeGitHub) -> None:
    github.state.issues_enabled = False
    result = run_notify(write_reports(tmp_path / "r", ALARM), github)
    assert result.returncode == 1
    assert "issues are disabled in team/project" in result.stderr
    assert "Settings > General > Features > Issues" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_token_without_issues_write_names_the_permission(
    tmp_path: Path, github: FakeGitHub
) -> None:
    github.add_token("token", {"contents": "read", "issues": "read", "actions": "read"})
    result = run_notify(write_reports(tmp_path / "r", ALARM), github)
    assert result.returncode == 1
    assert "(403)" in result.stderr and "permissions: issues: write" in result.stderr
    assert "Traceback" not in result.stderr


def test_make_monitor_issue_runs_it_for_env(tmp_path: Path, github: FakeGitHub) -> None:
    open_issue(github, 8, "staging")
    reports = write_reports(tmp_path / "r", ALARM)
    env_path = f"{PROJ_ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"
    result = run_notify(reports, github, "make", "-s", "monitor-issue", "ENV=staging",
                        f"MONITOR_DIR={reports}", PATH=env_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert calls(github) == [("GET", "/issues"), ("POST", "/issues/8/comments")]
