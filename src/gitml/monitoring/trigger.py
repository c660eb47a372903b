"""Start the retrain workflow when the monitor finds the model's error grown on labelled rows.

A quality alarm (the window's error over the error expected on its rows beyond the limit `make
calibrate` learned) means production has labelled rows the model predicts badly: exactly what
retraining needs.
Drift alone does not start it: without actuals there is nothing new to train on, and the issue
`make monitor-issue` keeps open says so. The workflow is started through GitHub's API
(`workflow_dispatch`, permissions: actions: write): the one event a job's GITHUB_TOKEN may start
a workflow with.

Standard library only, like notify.py: it runs in the notify job, with the runner's python3.
"""

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gitml import github
from gitml.monitoring.notify import NotifyError, load_summary

RETRAIN_WORKFLOW = "retrain.yml"


class TriggerError(RuntimeError):
    """The retrain workflow cannot be started; the message says why."""


class Workflows(github.GitHub):
    error = TriggerError
    permission = "actions: write"


def wants_retraining(summary: dict[str, Any]) -> bool:
    return "quality" in summary.get("alarms", [])


def trigger(reports: Path, env_name: str, environ: Mapping[str, str]) -> bool:
    """Start the retrain workflow for `env_name` when its summary has a quality alarm."""
    summary, _ = load_summary(reports)
    if not wants_retraining(summary):
        return False
    ref = environ.get("GITHUB_REF_NAME") or "main"
    Workflows(environ).call("POST", f"/actions/workflows/{RETRAIN_WORKFLOW}/dispatches",
                            {"ref": ref, "inputs": {"env": env_name}})  # fmt: skip
    return True


def main(argv: list[str] | None = None) -> None:  # pragma: no mutate block
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True, help="The environment watched (production).")
    parser.add_argument("--reports", type=Path, default=Path("reports/monitor"),
                        help="gitml.monitoring.monitor's output.")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        started = trigger(args.reports, args.env, os.environ)
    except (TriggerError, NotifyError, OSError) as err:
        print(f"trigger: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"trigger: {RETRAIN_WORKFLOW} started for {args.env}" if started else
          f"trigger: no quality alarm in {args.env}: no retraining")  # fmt: skip


if __name__ == "__main__":
    main()
