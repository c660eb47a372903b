"""`python -m gitml <command> [options]`: every command of the project, by lifecycle part.

Each command is a module's own CLI (`python -m gitml deploy --help` is `python -m
gitml.release.deploy --help`). Only the chosen module is imported, so the stdlib-only
commands (runner, data-access, suites, comment, preflight, notify) still run on a bare Python
with `PYTHONPATH=src`.
"""

import runpy
import sys

# part -> command -> (module, what it does); the README's "Layout" lists the same
COMMANDS: dict[str, dict[str, tuple[str, str]]] = {
    "pipeline": {
        "data": ("gitml.pipeline.data", "dvc pull the raw data (seeds the example's remote)"),
        "validate": ("gitml.pipeline.validate", "stage validate: raw data -> clean table"),
        "prepare": ("gitml.pipeline.prepare", "stage prepare: train/test/production by date"),
        "train": ("gitml.pipeline.train", "stage train: fit the scikit-learn pipeline"),
        "evaluate": ("gitml.pipeline.evaluate", "stage evaluate: metrics and plot data"),
        "package": ("gitml.serving.packaging", "stage package: save the model with MLEM"),
    },
    "pull requests": {
        "runner": ("gitml.pull_requests.runner", "which runner trains this pull request"),
        "data-access": ("gitml.pull_requests.access", "can this run read the DVC remote?"),
        "suites": ("gitml.pull_requests.suites", "which tests a change needs: fast or all"),
        "report": ("gitml.pull_requests.report", "the pull-request report, as CML posts it"),
        "comment": ("gitml.pull_requests.comment", "post the report as one CML comment"),
    },
    "serving": {
        "serve": ("gitml.serving.workers", "the HTTP prediction server"),
        "predict": ("gitml.serving.predict", "batch predictions from a CSV file"),
    },
    "release": {
        "image": ("gitml.release.image", "build or push the serving image"),
        "audit": ("gitml.release.audit", "pip-audit of the serving dependencies"),
        "registry": ("gitml.release.registry", "GTO versions and stages (Git tags)"),
        "deploy": ("gitml.release.deploy", "local staging/production: deploy, promote, rollback"),
        "gate": ("gitml.release.gate", "the candidate against production's model"),
        "smoke": ("gitml.release.smoke", "smoke checks of a running server"),
        "k8s": ("gitml.release.k8s", "deploy to Kubernetes blue/green, or roll back"),
        "cluster": ("gitml.release.cluster.cli", "a local registry and cluster (podman)"),
        "preflight": ("gitml.release.preflight", "the settings a deploy job lacks"),
        "promotion": ("gitml.release.promotion", "production takes what passed staging"),
        "canary": ("gitml.release.canary", "Argo Rollouts canary: render, check, compare"),
    },
    "monitoring": {
        "replay": ("gitml.monitoring.replay", "send held-out rows to a server as traffic"),
        "calibrate": ("gitml.monitoring.calibrate", "stage calibrate: the monitor's limits"),
        "monitor": ("gitml.monitoring.monitor", "drift and quality of production's log"),
        "fetch-logs": ("gitml.monitoring.fetch_logs", "copy an environment's log and actuals"),
        "notify": ("gitml.monitoring.notify", "one GitHub issue per alarming environment"),
        "feedback": ("gitml.monitoring.feedback", "labelled production rows -> new data version"),
        "retrain": ("gitml.monitoring.retrain", "a branch retrained on new rows, and its PR"),
        "trigger": ("gitml.monitoring.trigger", "start the retrain workflow on a quality alarm"),
    },
}
MODULES = {command: module for part in COMMANDS.values() for command, (module, _) in part.items()}


def usage() -> str:
    lines = ["usage: python -m gitml <command> [options]   (<command> --help for its options)"]
    for part, commands in COMMANDS.items():
        lines.append(f"\n{part}:")
        lines += [f"  {command:<11} {summary}" for command, (_, summary) in commands.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    command, *options = argv
    if command not in MODULES:
        print(f"gitml: no command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv = [command, *options]
    runpy.run_module(MODULES[command], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
