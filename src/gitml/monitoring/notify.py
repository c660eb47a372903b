"""Keep one GitHub issue per environment open while the monitor raises an alarm.

Reads the monitor's `summary.json` and `summary.md` (monitor.py) and, through GitHub's REST
API (the job token in GITHUB_TOKEN, `permissions: issues: write`), acts on the open issue
labelled `monitoring` whose title names the environment:

    alarm,   no issue open  -> create it (the label too): the summary and a link to the run
    alarm,   issue open     -> comment the new summary on it; it stays open
    healthy, issue open     -> comment "healthy again" with the summary, and close it
    healthy, no issue open  -> nothing

`plan` decides, from the summary and the open issues, which actions to take; it is pure, and
tested case by case. `notify` is the thin part: it reads the files, lists the open issues and
carries out the plan. The API is reached at GITHUB_API_URL, which GitHub Actions sets (also on
GitHub Enterprise hosts); the tests serve it on loopback.

Standard library only: the notify job runs it with the runner's python3 and no environment
installed (`make monitor-issue`).
"""

import argparse
import json
import os
import sys
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitml import github

LABEL = "monitoring"
LABEL_COLOR = "D93F0B"
LABEL_DESCRIPTION = "Drift or degradation found by the monitor workflow"
PAGE = 100  # the most GitHub returns per page


class NotifyError(RuntimeError):
    """The issue cannot be updated; the message says why."""


@dataclass(frozen=True)
class Action:
    kind: str  # label | create | comment | close
    number: int = 0  # the issue, for comment and close


def title(env: str) -> str:
    """The one fixed title per environment: how the open issue is found again."""
    return f"Production monitoring: drift or degradation ({env})"


def load_summary(directory: Path) -> tuple[dict[str, Any], str]:  # pragma: no mutate block
    """summary.json and summary.md as gitml.monitoring.monitor wrote them."""
    path = directory / "summary.json"
    if not path.is_file():
        raise NotifyError(
            f"{path} not found: the monitor did not complete (no logs fetched, or input it "
            "could not use: it exits 2 and writes no summary); read the monitor job's log"
        )
    try:
        summary = json.loads(path.read_text())
    except ValueError as err:
        raise NotifyError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("alarm"), bool):
        raise NotifyError(
            f"{path} has no true/false 'alarm': not a gitml.monitoring.monitor summary"
        )
    markdown_path = directory / "summary.md"
    if not markdown_path.is_file():
        raise NotifyError(f"{markdown_path} not found next to {path.name}")
    return summary, markdown_path.read_text()


def run_url(env: Mapping[str, str]) -> str:
    """The workflow run's page, when running in GitHub Actions; else ""."""
    parts = [env.get(name, "") for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY")]
    run_id = env.get("GITHUB_RUN_ID", "")
    return f"{parts[0]}/{parts[1]}/actions/runs/{run_id}" if all([*parts, run_id]) else ""


def body(summary: dict[str, Any], markdown: str, url: str) -> str:
    """What the issue or the comment says: the summary, and where the reports are."""
    text = markdown.rstrip("\n") + "\n"
    if not summary["alarm"]:
        text = "**Healthy again**: no alarm in this run, closing.\n\n" + text
    if url:
        text += f"\nWorkflow run, with the HTML reports as its artifact: {url}\n"
    return text


def matching(open_issues: list[dict[str, Any]], env: str) -> list[int]:
    """Numbers of the open issues with exactly this environment's title, oldest first."""
    return sorted(int(issue["number"]) for issue in open_issues if issue["title"] == title(env))


def plan(summary: dict[str, Any], open_issues: list[dict[str, Any]], env: str) -> list[Action]:
    """The actions to take, in order."""
    numbers = matching(open_issues, env)
    if summary["alarm"]:
        if numbers:  # one issue per environment: the oldest carries the story
            return [Action("comment", numbers[0])]
        return [Action("label"), Action("create")]
    actions: list[Action] = []
    for number in numbers:  # healthy: close every copy (a race could have opened two)
        actions += [Action("comment", number), Action("close", number)]
    return actions


# The I/O (load_summary above, the API, notify, main) is `no mutate`: tests/monitoring/
# test_notify.py runs it against the GitHub stand-in. `make mutation` mutates the decision.
class GitHub(github.GitHub):  # pragma: no mutate block
    """The few REST calls the plan needs, for one repository."""

    error = NotifyError
    permission = "issues: write"

    def explain(self, method: str, path: str, err: urllib.error.HTTPError) -> str:
        if err.code == 410:
            return (
                f"issues are disabled in {self.repository}, so the monitor cannot report: "
                "enable them (Settings > General > Features > Issues)"
            )
        return super().explain(method, path, err)

    def open_issues(self) -> list[dict[str, Any]]:
        issues: list[dict[str, Any]] = []
        for page in range(1, 100):
            batch = self.call(
                "GET", f"/issues?labels={LABEL}&state=open&per_page={PAGE}&page={page}"
            )
            issues += [{"number": int(i["number"]), "title": str(i["title"])} for i in batch
                       if "pull_request" not in i]  # fmt: skip
            if len(batch) < PAGE:
                return issues
        return issues

    def carry_out(self, action: Action, env_name: str, text: str) -> str:
        if action.kind == "label":
            try:
                self.call("POST", "/labels", {"name": LABEL, "color": LABEL_COLOR,
                                              "description": LABEL_DESCRIPTION})  # fmt: skip
            except NotifyError as err:
                if "already_exists" not in str(err):
                    raise
            return f"label {LABEL}"
        if action.kind == "create":
            new = {"title": title(env_name), "body": text, "labels": [LABEL]}
            issue = self.call("POST", "/issues", new)
            return f"opened issue #{issue['number']}"
        if action.kind == "comment":
            self.call("POST", f"/issues/{action.number}/comments", {"body": text})
            return f"commented on issue #{action.number}"
        self.call("PATCH", f"/issues/{action.number}", {"state": "closed"})
        return f"closed issue #{action.number}"


def notify(
    reports: Path, env_name: str, env: Mapping[str, str]
) -> list[Action]:  # pragma: no mutate block
    """Read, decide and act; returns the actions taken."""
    summary, markdown = load_summary(reports)
    github = GitHub(env)
    actions = plan(summary, github.open_issues(), env_name)
    text = body(summary, markdown, run_url(env))
    for action in actions:
        print(f"notify: {github.carry_out(action, env_name, text)}")
    return actions


def main(argv: list[str] | None = None) -> None:  # pragma: no mutate block
    parser = argparse.ArgumentParser(
        description="Open, update or close the monitoring issue of an environment."
    )
    parser.add_argument("--env", required=True, help="The environment watched (production).")
    parser.add_argument(
        "--reports",
        type=Path,
        default=Path("reports/monitor"),
        help="gitml.monitoring.monitor's output.",
    )
    args = parser.parse_args(argv)
    try:
        actions = notify(args.reports, args.env, os.environ)
    except (NotifyError, OSError) as err:
        print(f"notify: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    if not actions:
        print(f"notify: {args.env} is healthy and no monitoring issue is open; nothing to do")


if __name__ == "__main__":
    main()
