"""The README's promise: on a fresh clone, `make run` installs, pulls and runs the pipeline."""

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gitml.config import load_params
from gitml.dataset import TIME
from gitml.ports import free_port
from tests.e2e.clone import clean_env, run
from tests.example_data import example_only

pytestmark = pytest.mark.slow


def dvc(clone: Path, *args: str) -> str:
    env = clean_env()
    env["PATH"] = f"{clone / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    return run("dvc", *args, cwd=clone, env=env)


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([a-z_]+)'", output)


def test_make_run_produces_metrics_that_beat_the_baseline(ran_clone: tuple[Path, str]) -> None:
    clone, output = ran_clone
    # evaluate's outputs are committed (metrics and plot data); training is deterministic, so
    # the rebuilt model hashes as in dvc.lock and DVC rightly skips evaluate. The monitor's
    # calibration is an artifact of its own (never committed), learnt for the model just trained.
    assert stages_run(output) == ["validate", "prepare", "train", "package", "calibrate"]
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    assert metrics["model"]["mae"] < metrics["baseline"]["mae"]
    for output_file in ("artifacts/model/model.joblib", "reports/plots/importance.csv"):
        assert (clone / output_file).stat().st_size > 0


def test_clone_is_clean_after_the_run(ran_clone: tuple[Path, str]) -> None:
    clone, _ = ran_clone
    # the committed dvc.lock and metrics are reproduced byte for byte: no stray or changed file
    changed = run("git", "status", "--porcelain", cwd=clone)
    assert changed == "", (
        f"the run changed tracked files (stale dvc.lock? run `dvc repro`):\n{changed}"
    )
    assert "up to date" in dvc(clone, "status")


def test_second_repro_is_a_no_op(ran_clone: tuple[Path, str]) -> None:
    clone, _ = ran_clone
    output = dvc(clone, "repro")
    assert stages_run(output) == []
    assert "Data and pipelines are up to date" in output


def test_an_evaluate_param_change_reruns_only_evaluate(ran_clone: tuple[Path, str]) -> None:
    # (a training param change reruns train, evaluate and package: the report test below)
    clone, _ = ran_clone
    params_file = clone / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["evaluate"]["importance_repeats"] = 3
    try:
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        assert stages_run(dvc(clone, "repro")) == ["evaluate"]
    finally:
        params_file.write_text(original)
        dvc(clone, "repro")  # back to the committed state (from the run-cache)


def test_a_train_param_change_reruns_its_dependants_and_the_report_compares_it(
    ran_clone: tuple[Path, str],
) -> None:
    """`make report BASE=<ref>` on a clone with two commits whose training params differ."""
    clone, _ = ran_clone
    params_file = clone / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train"]["hyperparams"]["hist_gradient_boosting"]["max_iter"] = 60
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    assert stages_run(dvc(clone, "repro")) == ["train", "evaluate", "package", "calibrate"]
    run(*git, "commit", "-qam", "fewer boosting rounds", cwd=clone)
    try:
        env = clean_env()
        output = run("make", "report", "BASE=HEAD~1", cwd=clone, env=env)
        assert "Running stage" not in output  # the base is read from git, never retrained
        report = (clone / "reports" / "pr" / "report.md").read_text()
        assert re.search(
            r"\| params\.yaml +\| train\.hyperparams\.hist_gradient_boosting\.max_iter +\| 300 +\| 60 ",
            report,
        )
        assert re.search(
            r"\| mae \| [\d.]+ \| [\d.]+ \| [+-][\d.]+ \| \[[+-][\d.]+, [+-][\d.]+\] \| \*\*(better|worse|within noise)\*\* \|",
            report,
        )
        figures = re.findall(r"!\[[a-z_]+\]\((figures/[a-z_]+\.png)\)", report)
        assert len(figures) >= 3
        for figure in figures:
            assert (clone / "reports" / "pr" / figure).read_bytes()[:4] == b"\x89PNG"
        assert "is stale" not in report
        assert run("git", "status", "--porcelain", cwd=clone) == ""  # the report is ignored
    finally:
        run(*git, "reset", "-q", "--hard", "HEAD~1", cwd=clone)
        dvc(clone, "checkout")


@example_only
def test_replay_then_monitor_flags_the_unseen_season(ran_clone: tuple[Path, str]) -> None:
    """The README's monitoring loop: `make replay` streams Oct-Dec to local staging as HTTP
    traffic, `make monitor` judges the logged window and asks for action."""
    clone, _ = ran_clone
    env = clean_env()
    env["GITML_STAGING_PORT"], env["GITML_PRODUCTION_PORT"] = str(free_port()), str(free_port())
    try:
        replayed = run("make", "replay", cwd=clone, env=env)
        production = len(pd.read_parquet(clone / "artifacts" / "data" / "production.parquet"))
        assert f"replay: {production} rows of production sent" in replayed, replayed
        monitor = subprocess.run(["make", "monitor"], cwd=clone, env=env, capture_output=True,
                                 text=True, check=False)  # fmt: skip
    finally:
        run(str(clone / ".venv" / "bin" / "python"), "-m", "gitml", "deploy", "stop", "--env",
            "staging", cwd=clone, env=env)  # fmt: skip
    assert monitor.returncode != 0, "an alarm must fail `make monitor`"
    assert "Action needed" in monitor.stdout, monitor.stdout + monitor.stderr
    # make reports the failure as its own 2: the monitor's last line says it is an alarm
    assert "monitor: action needed: quality (exit 1)" in monitor.stderr, monitor.stderr
    reports = clone / "reports" / "monitor"
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["alarm"] and summary["alarms"] == ["quality"]
    # the last monitor.window_days of the stream's event time, not the minutes it took to send
    stream = pd.read_parquet(clone / "artifacts" / "data" / "production.parquet")[TIME]
    days = load_params("monitor", clone / "params.yaml")["window_days"]
    judged = int((stream > stream.max() - pd.Timedelta(days=days)).sum())
    assert 0 < judged < production
    assert summary["rows"] == judged == summary["quality"]["labelled_rows"]
    assert summary["window"]["to"] == stream.max().tz_localize("UTC").isoformat()
    # judged by the limits `make monitor` had `make calibrate` learn for this clone's model
    calibration = json.loads((clone / "artifacts" / "monitor" / "calibration.json").read_text())
    assert summary["calibration"]["windows"] == len(calibration["windows"])
    assert summary["quality"]["error_ratio"] > calibration["checks"]["quality"]["limits"][
        "error_ratio"]["high"]  # fmt: skip
    assert (reports / "drift.html").stat().st_size > 100_000
    assert (reports / "quality.html").stat().st_size > 100_000
    assert run("git", "status", "--porcelain", cwd=clone) == ""  # logs and reports: not tracked
