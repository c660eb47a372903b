"""Keep one GitHub issue per environment open while the monitor raises an alarm.

Reads the monitor's `summary.json` and `summary.md` (gitml.monitor) and, through the `gh` CLI
(preinstalled on GitHub-hosted runners; token in GH_TOKEN), acts on the open issue labelled
`monitoring` whose title names the environment:

    alarm,   no issue open  -> create it (the label too): the summary and a link to the run
    alarm,   issue open     -> comment the new summary on it; it stays open
    healthy, issue open     -> comment "healthy again" with the summary, and close it
    healthy, no issue open  -> nothing

`plan` decides, from the summary and the open issues, which `gh` commands to run; it is pure,
and tested case by case. `main` is the thin part: it reads the files, asks `gh` for the open
issues, writes the body to a file and runs the plan. GitHub cannot be reached from the tests,
so the `gh` executable is the boundary: the tests put a stand-in `gh` on PATH that records its
arguments and answers `issue list` with canned JSON.

Standard library only: the notify job runs it with the runner's python3 and no environment
installed (`make monitor-issue`).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LABEL = "monitoring"
LABEL_COLOR = "D93F0B"
LABEL_DESCRIPTION = "Drift or degradation found by the monitor workflow"
BODY_FILE = "body.md"  # inside a temporary directory that main() creates

Command = list[str]


class NotifyError(RuntimeError):
    """The issue cannot be updated; the message says why."""


def title(env: str) -> str:
    """The one fixed title per environment: how the open issue is found again."""
    return f"Production monitoring: drift or degradation ({env})"


def load_summary(directory: Path) -> tuple[dict[str, Any], str]:
    """summary.json and summary.md as gitml.monitor wrote them."""
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
        raise NotifyError(f"{path} has no true/false 'alarm': not a gitml.monitor summary")
    markdown_path = directory / "summary.md"
    if not markdown_path.is_file():
        raise NotifyError(f"{markdown_path} not found next to {path.name}")
    return summary, markdown_path.read_text()


def run_url(env: Mapping[str, str]) -> str:
    """The workflow run's page, when running in GitHub Actions; else ""."""
    parts = [env.get(name, "") for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY")]
    run_id = env.get("GITHUB_RUN_ID", "")
    return f"{parts[0]}/{parts[1]}/actions/runs/{run_id}" if all([*parts, run_id]) else ""


def body(summary: dict[str, Any], markdown: str, url: str = "") -> str:
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


def plan(
    summary: dict[str, Any],
    open_issues: list[dict[str, Any]],
    env: str,
    body_file: str = BODY_FILE,
) -> list[Command]:
    """The `gh` commands to run, in order; `body_file` holds `body(...)` when they run."""
    numbers = matching(open_issues, env)
    if summary["alarm"]:
        if numbers:  # one issue per environment: the oldest carries the story
            return [["gh", "issue", "comment", str(numbers[0]), "--body-file", body_file]]
        return [
            ["gh", "label", "create", LABEL, "--force",
             "--color", LABEL_COLOR, "--description", LABEL_DESCRIPTION],
            ["gh", "issue", "create", "--title", title(env), "--label", LABEL,
             "--body-file", body_file],
        ]  # fmt: skip
    commands: list[Command] = []
    for number in numbers:  # healthy: close every copy (a race could have opened two)
        commands.append(["gh", "issue", "comment", str(number), "--body-file", body_file])
        commands.append(["gh", "issue", "close", str(number)])
    return commands


def list_command(env: str) -> Command:
    """`gh issue list` of the open monitoring issues titled for `env`."""
    return [
        "gh", "issue", "list", "--label", LABEL, "--state", "open",
        "--search", f'in:title "{title(env)}"', "--json", "number,title",
    ]  # fmt: skip


def gh(command: Command, env: Mapping[str, str]) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, env=dict(env), check=False, timeout=120
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise NotifyError(f"{' '.join(command[:3])} failed (exit {result.returncode}): {detail}")
    return result.stdout


def open_issues(env_name: str, env: Mapping[str, str]) -> list[dict[str, Any]]:
    output = gh(list_command(env_name), env)
    try:
        issues = json.loads(output or "[]")
        return [{"number": int(i["number"]), "title": str(i["title"])} for i in issues]
    except (ValueError, TypeError, KeyError) as err:
        raise NotifyError(f"gh issue list answered something unexpected: {err}") from None


def gh_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment `gh` runs with; the checks name each missing setting."""
    if shutil.which("gh", path=env.get("PATH")) is None:
        raise NotifyError(
            "the gh CLI is not on PATH (GitHub-hosted runners have it; "
            "elsewhere install it from https://cli.github.com)"
        )
    if not env.get("GH_TOKEN"):
        raise NotifyError(
            "environment variable GH_TOKEN is not set: the workflow passes "
            "`GH_TOKEN: ${{ github.token }}` (permissions: issues: write)"
        )
    out = dict(env)
    if env.get("GITHUB_REPOSITORY") and not env.get("GH_REPO"):
        out["GH_REPO"] = env["GITHUB_REPOSITORY"]  # no need for a git remote
    return out


def notify(reports: Path, env_name: str, env: Mapping[str, str]) -> list[Command]:
    """Read, decide and act; returns the commands that ran."""
    summary, markdown = load_summary(reports)
    gh_env = gh_environment(env)
    issues = open_issues(env_name, gh_env)
    with tempfile.TemporaryDirectory(prefix="gitml-notify-") as tmp:
        body_file = Path(tmp) / BODY_FILE
        body_file.write_text(body(summary, markdown, run_url(env)))
        commands = plan(summary, issues, env_name, str(body_file))
        for command in commands:
            output = gh(command, gh_env).strip()
            print(f"notify: {' '.join(command[1:4])}" + (f": {output}" if output else ""))
    return commands


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Open, update or close the monitoring issue of an environment."
    )
    parser.add_argument("--env", required=True, help="The environment watched (production).")
    parser.add_argument(
        "--reports", type=Path, default=Path("reports/monitor"), help="gitml.monitor's output."
    )
    args = parser.parse_args(argv)
    try:
        commands = notify(args.reports, args.env, os.environ)
    except (NotifyError, OSError, subprocess.TimeoutExpired) as err:
        print(f"notify: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    if not commands:
        print(f"notify: {args.env} is healthy and no monitoring issue is open; nothing to do")


if __name__ == "__main__":
    main()
