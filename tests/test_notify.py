"""gitml.notify: one monitoring issue per environment, opened on alarm, closed when healthy.

GitHub cannot be reached from here. The decision (`plan`) is pure and tested for every case;
`main` is tested end to end with a stand-in `gh` on PATH that records its arguments (and the
body file's text) and answers `issue list` with canned JSON: the `gh` CLI is the boundary.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gitml.config import PROJ_ROOT
from gitml.notify import (
    LABEL,
    NotifyError,
    body,
    gh_environment,
    list_command,
    load_summary,
    plan,
    run_url,
    title,
)

ALARM = {"alarm": True, "alarms": ["data_drift"]}
HEALTHY = {"alarm": False, "alarms": []}
MARKDOWN = "## Production monitoring: **Action needed**: data_drift\n\n| check | result |\n"
TITLE = "Production monitoring: drift or degradation (production)"
RUN = {
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "team/project",
    "GITHUB_RUN_ID": "123",
}
RUN_URL = "https://github.com/team/project/actions/runs/123"

FAKE_GH = """#!{python}
import json, os, sys
args = sys.argv[1:]
entry = {{"argv": args}}
if "--body-file" in args:
    with open(args[args.index("--body-file") + 1]) as f:
        entry["body"] = f.read()
with open(os.environ["FAKE_GH_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\\n")
if args[:2] == os.environ.get("FAKE_GH_FAIL", "").split():
    print("HTTP 403: Resource not accessible by integration", file=sys.stderr)
    sys.exit(1)
if args[:2] == ["issue", "list"]:
    print(os.environ.get("FAKE_GH_ISSUES", "[]"))
elif args[:2] == ["issue", "create"]:
    print("https://github.com/team/project/issues/7")
"""


def issue(number: int, env: str = "production") -> dict[str, Any]:
    return {"number": number, "title": title(env)}


# --- the decision ---------------------------------------------------------------------------


def test_title_is_fixed_per_environment() -> None:
    assert title("production") == TITLE
    assert title("staging") != TITLE and "staging" in title("staging")


def test_alarm_and_no_open_issue_creates_the_label_then_the_issue() -> None:
    commands = plan(ALARM, [], "production", "body.md")
    assert commands[0][:4] == ["gh", "label", "create", LABEL]
    assert "--force" in commands[0]  # idempotent: updates the label when it exists
    assert commands[1] == [
        "gh", "issue", "create", "--title", TITLE, "--label", LABEL, "--body-file", "body.md",
    ]  # fmt: skip
    assert len(commands) == 2


def test_alarm_and_an_open_issue_comments_and_keeps_it_open() -> None:
    commands = plan(ALARM, [issue(5)], "production", "body.md")
    assert commands == [["gh", "issue", "comment", "5", "--body-file", "body.md"]]


def test_healthy_and_an_open_issue_comments_then_closes_it() -> None:
    commands = plan(HEALTHY, [issue(5)], "production", "body.md")
    assert commands == [
        ["gh", "issue", "comment", "5", "--body-file", "body.md"],
        ["gh", "issue", "close", "5"],
    ]


def test_healthy_and_no_open_issue_does_nothing() -> None:
    assert plan(HEALTHY, [], "production", "body.md") == []


@pytest.mark.parametrize("summary", [ALARM, HEALTHY], ids=["alarm", "healthy"])
def test_other_environments_and_near_titles_are_not_ours(summary: dict[str, Any]) -> None:
    # `gh issue list --search` matches loosely: only the exact title counts.
    others = [issue(3, "staging"), {"number": 4, "title": TITLE + " (old)"}]
    commands = plan(summary, others, "production", "body.md")
    assert all(str(n) not in command for command in commands for n in (3, 4))
    assert bool(commands) == summary["alarm"]


def test_two_open_copies_the_oldest_gets_the_alarm_and_healthy_closes_both() -> None:
    assert plan(ALARM, [issue(9), issue(4)], "production", "b") == [
        ["gh", "issue", "comment", "4", "--body-file", "b"]
    ]
    closed = [c[3] for c in plan(HEALTHY, [issue(9), issue(4)], "production", "b") if "close" in c]
    assert closed == ["4", "9"]


def test_issue_list_searches_the_open_labelled_issues_by_title() -> None:
    command = list_command("staging")
    assert command[:3] == ["gh", "issue", "list"]
    assert command[command.index("--label") + 1] == LABEL
    assert command[command.index("--state") + 1] == "open"
    assert command[command.index("--search") + 1] == f'in:title "{title("staging")}"'
    assert command[command.index("--json") + 1] == "number,title"


def test_body_is_the_summary_with_a_link_to_the_run() -> None:
    text = body(ALARM, MARKDOWN, RUN_URL)
    assert text.startswith(MARKDOWN) and RUN_URL in text
    assert "Healthy again" not in text
    healthy = body(HEALTHY, "## Production monitoring: Healthy\n", RUN_URL)
    assert healthy.startswith("**Healthy again**") and RUN_URL in healthy
    assert body(ALARM, MARKDOWN, "") == MARKDOWN  # outside GitHub Actions: no link


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


@pytest.fixture
def fake_gh(tmp_path: Path) -> Path:
    """A directory holding the stand-in `gh`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "gh"
    script.write_text(FAKE_GH.format(python=sys.executable))
    script.chmod(0o755)
    return bin_dir


def test_missing_gh_is_named(tmp_path: Path) -> None:
    with pytest.raises(NotifyError, match="gh CLI"):
        gh_environment({"PATH": str(tmp_path), "GH_TOKEN": "t"})


def test_missing_token_is_named(fake_gh: Path) -> None:
    with pytest.raises(NotifyError, match="GH_TOKEN"):
        gh_environment({"PATH": str(fake_gh)})


def test_gh_is_pointed_at_the_workflows_repository(fake_gh: Path) -> None:
    env = gh_environment({"PATH": str(fake_gh), "GH_TOKEN": "t", **RUN})
    assert env["GH_REPO"] == "team/project"


def test_stdlib_only_so_the_runners_python_can_run_it() -> None:
    # -S: no site-packages, as with the runner's bare python3 (make monitor-issue).
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import gitml.notify"],
        env={"PYTHONPATH": str(PROJ_ROOT / "src"), "PATH": os.environ["PATH"]},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- main, end to end against the stand-in gh ------------------------------------------------


def run_notify(
    reports: Path, fake_gh: Path, issues: list[dict[str, Any]], **extra: str
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    log = fake_gh.parent / "gh.log"
    log.unlink(missing_ok=True)
    env = {
        "PATH": f"{fake_gh}:/usr/bin:/bin",
        "PYTHONPATH": str(PROJ_ROOT / "src"),
        "GH_TOKEN": "token",
        "FAKE_GH_LOG": str(log),
        "FAKE_GH_ISSUES": json.dumps(issues),
        **RUN,
        **extra,
    }
    result = subprocess.run(
        [sys.executable, "-m", "gitml.notify", "--env", "production", "--reports", str(reports)],
        env=env, capture_output=True, text=True, check=False, cwd=PROJ_ROOT,
    )  # fmt: skip
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_main_opens_an_issue_on_alarm(tmp_path: Path, fake_gh: Path) -> None:
    result, calls = run_notify(write_reports(tmp_path / "r", ALARM), fake_gh, [])
    assert result.returncode == 0, result.stderr
    assert [c["argv"][:2] for c in calls] == [
        ["issue", "list"],
        ["label", "create"],
        ["issue", "create"],
    ]
    assert calls[0]["argv"] == list_command("production")[1:]
    create = calls[2]
    assert create["argv"][create["argv"].index("--title") + 1] == TITLE
    assert create["body"].startswith(MARKDOWN) and RUN_URL in create["body"]
    assert "issues/7" in result.stdout


def test_main_comments_on_the_open_issue(tmp_path: Path, fake_gh: Path) -> None:
    result, calls = run_notify(write_reports(tmp_path / "r", ALARM), fake_gh, [issue(5)])
    assert result.returncode == 0, result.stderr
    assert [c["argv"][:3] for c in calls] == [
        ["issue", "list", "--label"],
        ["issue", "comment", "5"],
    ]
    assert calls[1]["body"].startswith(MARKDOWN)


def test_main_closes_the_issue_once_healthy(tmp_path: Path, fake_gh: Path) -> None:
    reports = write_reports(tmp_path / "r", HEALTHY, "## Production monitoring: Healthy\n")
    result, calls = run_notify(reports, fake_gh, [issue(5), issue(6, "staging")])
    assert result.returncode == 0, result.stderr
    assert [c["argv"][:3] for c in calls[1:]] == [
        ["issue", "comment", "5"],
        ["issue", "close", "5"],
    ]
    assert calls[1]["body"].startswith("**Healthy again**")


def test_main_does_nothing_when_healthy_and_no_issue(tmp_path: Path, fake_gh: Path) -> None:
    result, calls = run_notify(write_reports(tmp_path / "r", HEALTHY), fake_gh, [])
    assert result.returncode == 0, result.stderr
    assert [c["argv"][:2] for c in calls] == [["issue", "list"]]
    assert "nothing to do" in result.stdout


def test_main_without_summary_fails_before_calling_github(tmp_path: Path, fake_gh: Path) -> None:
    result, calls = run_notify(tmp_path / "empty", fake_gh, [])
    assert result.returncode == 1
    assert "summary.json not found" in result.stderr and "did not complete" in result.stderr
    assert calls == []


def test_main_without_token_names_it(tmp_path: Path, fake_gh: Path) -> None:
    result, calls = run_notify(write_reports(tmp_path / "r", ALARM), fake_gh, [], GH_TOKEN="")
    assert result.returncode == 1
    assert "GH_TOKEN" in result.stderr and calls == []


def test_main_reports_a_refused_gh_command(tmp_path: Path, fake_gh: Path) -> None:
    reports = write_reports(tmp_path / "r", ALARM)
    result, calls = run_notify(reports, fake_gh, [], FAKE_GH_FAIL="issue create")
    assert result.returncode == 1
    assert "gh issue create failed" in result.stderr and "HTTP 403" in result.stderr
    assert calls[-1]["argv"][:2] == ["issue", "create"]
    assert "Traceback" not in result.stderr


def test_make_monitor_issue_runs_it_for_env(tmp_path: Path, fake_gh: Path) -> None:
    reports = write_reports(tmp_path / "r", ALARM)
    log = fake_gh.parent / "gh.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GH_"))},
        "PATH": f"{PROJ_ROOT / '.venv' / 'bin'}:{fake_gh}:{os.environ['PATH']}",
        "GH_TOKEN": "token",
        "FAKE_GH_LOG": str(log),
        "FAKE_GH_ISSUES": json.dumps([issue(8, "staging")]),
    }
    result = subprocess.run(
        ["make", "-s", "monitor-issue", "ENV=staging", f"MONITOR_DIR={reports}"],
        cwd=PROJ_ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
    assert calls[0] == list_command("staging")[1:]
    assert calls[1:] == [["issue", "comment", "8", "--body-file", calls[1][-1]]]
