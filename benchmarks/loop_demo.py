"""The whole loop on the project's own data, end to end: serve, watch, learn from production,
retrain through a branch, gate, promote, watch again. It prints figures; it asserts nothing
(tests/e2e/test_loop.py asserts on the figures it writes).

In a scratch clone of the working tree (LOOP_DIR, default build/loop-demo; this checkout is
never touched), the data
is cut where `split.production_from` begins, as if the project started then, and the splits
roll (`test_from: -Nd` with N the test window's days, `production_from: null`):

 1. v1 is trained on the data before the test window, registered (GTO), deployed to staging
    and promoted to production (the local target, on spare ports).
 2. The first half of the held-out production stream is replayed to production as HTTP
    traffic with its event times; its actuals are delivered. `monitor` judges the last
    `monitor.window_days`: the error ratio before.
 3. `retrain --no-push --no-pull-request` (what `make retrain-pr` runs in the workflow) takes
    the labelled rows as a new data version on a branch and retrains: the test window moves to
    the newest labelled days, which v1 never trained on.
 4. `gate` compares the branch's model with production's (GTO's production version, fetched
    with `dvc get`) on that window: both MAEs with their 95 % day-block intervals, and the
    interval of their difference. The negative case: a params change that cripples the model
    (one boosting round or tree) on top of the branch must be refused.
 5. The branch is merged, registered as v2, deployed to staging and promoted; the second half
    of the stream is replayed and `monitor` judges again: the error ratio after. Both models
    also predict the whole second half, which neither trained on.

Run with `make loop-demo`; figures also go to LOOP_DIR/figures.json.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import yaml
from tests.e2e.clone import make_clone

from gitml import dataset
from gitml.config import PROJ_ROOT, load_params, model_name
from gitml.files import read_parquet
from gitml.ports import free_port
from gitml.pull_requests.bootstrap import mae, paired_difference_ci
from gitml.release.gate import judge
from gitml.schema import as_model_input

MODEL_NAME = model_name()  # dvc.yaml's model artifact, as the Makefile reads it
ROUNDS = {"hist_gradient_boosting": "max_iter", "random_forest": "n_estimators",
          "xgboost": "n_estimators"}  # fmt: skip


class DemoFailed(RuntimeError):
    """A step of the loop failed; the message holds its output."""


def sh(*cmd: str, cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode not in ok:
        raise DemoFailed(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def gitml(*args: str, cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> str:
    return sh(sys.executable, "-m", "gitml", *args, cwd=cwd, env=env, ok=ok)


def dvc(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd, env=env)


def edit_params(repo: Path, change: Any) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def mae_interval(window: pd.DataFrame, predicted: np.ndarray, settings: dict[str, Any]) -> list:
    """A model's MAE on the window with its 95 % day-block interval (its difference from a
    perfect model, whose MAE is 0, by the same paired bootstrap the gate uses)."""
    actual = window[dataset.TARGET].to_numpy(dtype=float)
    days = window[dataset.TIME].dt.strftime("%Y-%m-%d").to_numpy()
    value, low, high = paired_difference_ci(
        actual, predicted, actual, days, mae,
        n_resamples=int(settings["bootstrap_resamples"]), seed=int(settings["seed"]),
    )  # fmt: skip
    return [round(value, 3), round(low, 3), round(high, 3)]


def both_models(window: pd.DataFrame, old: Path, new: Path, settings: dict[str, Any]) -> dict:
    """Both models on one window: their MAEs with intervals, and the gate's verdict."""
    inputs = as_model_input(window)
    champion, candidate = (joblib.load(path).predict(inputs) for path in (old, new))
    return {
        **judge(window, champion, candidate, settings),
        "champion_mae_interval": mae_interval(window, champion, settings),
        "candidate_mae_interval": mae_interval(window, candidate, settings),
    }


def monitor(repo: Path, env: dict[str, str], out: str) -> dict[str, Any]:
    """Production's last monitor.window_days of event time (exit 1, an alarm, is a result)."""
    dvc("repro", "calibrate", cwd=repo, env=env)  # the limits for the model that serves
    gitml("monitor", "--logs", ".deploy/predictions/production", "--actuals",
          ".deploy/actuals/production", "--out", out, "--env", "production",
          cwd=repo, env=env, ok=(0, 1))  # fmt: skip
    summary = json.loads((repo / out / "summary.json").read_text())
    quality = summary["quality"]
    return {"window": summary["window"], "alarm": summary["alarm"], "alarms": summary["alarms"],
            "model_versions": summary["model_versions"],
            **{key: quality.get(key) for key in ("error_ratio", "error_ratio_limit", "bias",
                                                 "mae")}}  # fmt: skip


def release(repo: Path, env: dict[str, str], version: str) -> None:
    """Register HEAD as `version`, deploy it to staging, promote it to production (local)."""
    gitml("registry", "register", "--name", MODEL_NAME, "--version", version, cwd=repo, env=env)
    dvc("repro", "package", cwd=repo, env=env)
    gitml("deploy", "deploy", "--env", "staging", "--version", version, cwd=repo, env=env)
    gitml("deploy", "promote", cwd=repo, env=env)
    gitml("registry", "assign", "--name", MODEL_NAME, "--stage", "production", "--version",
          version, cwd=repo, env=env)  # fmt: skip


def replay(repo: Path, env: dict[str, str], stream_dir: Path, half: str) -> None:
    port = env["GITML_PRODUCTION_PORT"]
    gitml("replay", "--url", f"http://127.0.0.1:{port}", "--actuals",
          ".deploy/actuals/production", "--splits-dir", str(stream_dir / half),
          cwd=repo, env=env)  # fmt: skip


def prepare(work: Path) -> tuple[Path, dict[str, str], Path, int]:
    """The scratch clone with the data cut at production's start, and the stream's halves."""
    split = load_params("split")
    if not split.get("production_from") or not split.get("test_from"):
        raise DemoFailed("loop-demo needs dates in params.yaml: split.test_from and "
                         "split.production_from (the stream it replays starts there)")  # fmt: skip
    start = pd.Timestamp(split["production_from"])
    test_days = (start - pd.Timestamp(split["test_from"])).days
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    repo = work / "repo"
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # gto, dvc
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(repo / "src"), "DVC_NO_ANALYTICS": "1",
           "GITML_STAGING_PORT": str(free_port()), "GITML_PRODUCTION_PORT": str(free_port()),
           **{f"GIT_{role}_{key}": value for role in ("AUTHOR", "COMMITTER")
              for key, value in (("NAME", "demo"), ("EMAIL", "demo@example.com"))}}  # fmt: skip
    env.pop("GITML_DEPLOY_DIR", None)
    make_clone(repo)  # the working tree as git would track it, committed or not
    raw = pd.read_csv(PROJ_ROOT / "data" / dataset.RAW_FILE)
    table = dataset.clean(raw, load_params("data"))
    times = table[dataset.TIME]
    stream = table[times >= start].sort_values(dataset.TIME)
    if stream.empty:
        raise DemoFailed(f"the data has no rows from split.production_from={start.date()}")
    middle = (stream[dataset.TIME].min() + (stream[dataset.TIME].max() - start) / 2).normalize()
    stream_dir = work / "stream"  # each half as a `production` split that replay reads
    for half, rows in (("first", stream[stream[dataset.TIME] < middle]),
                       ("second", stream[stream[dataset.TIME] >= middle])):  # fmt: skip
        (stream_dir / half).mkdir(parents=True)
        rows.to_parquet(stream_dir / half / "production.parquet")
    (repo / "data").mkdir()  # DVC's, not git's: the clone has none
    raw.loc[times[times < start].index].to_csv(repo / "data" / dataset.RAW_FILE, index=False)
    dvc("remote", "modify", "local", "url", str(work / "remote"), cwd=repo, env=env)
    edit_params(repo, lambda p: p["split"].update(test_from=f"-{test_days}d",
                                                  production_from=None))  # fmt: skip
    dvc("add", "data", cwd=repo, env=env)
    dvc("repro", cwd=repo, env=env)
    dvc("push", "--run-cache", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "--quiet", "--no-verify", "--message",
       f"Data up to {start.date()}, rolling splits", cwd=repo, env=env)  # fmt: skip
    return repo, env, stream_dir, test_days


def crippled(params: dict[str, Any]) -> None:
    """The negative case's params change: the chosen family at one round or tree (ridge:
    regularised to nothing)."""
    family = params["train"]["model"]
    settings = params["train"]["hyperparams"][family]
    if family in ROUNDS:
        settings[ROUNDS[family]] = 1
    else:
        settings["alpha"] = 1e9


def run(work: Path) -> dict[str, Any]:
    repo, env, stream_dir, test_days = prepare(work)
    figures: dict[str, Any] = {"test_days": test_days}
    try:
        release(repo, env, "v1.0.0")
        champion = work / "v1.joblib"
        shutil.copy2(repo / "artifacts" / "model" / "model.joblib", champion)
        replay(repo, env, stream_dir, "first")
        figures["before"] = monitor(repo, env, "build/monitor-before")

        retrained = gitml("retrain", "--env", "production", "--logs",
                          ".deploy/predictions/production", "--actuals",
                          ".deploy/actuals/production", "--no-push", "--no-pull-request",
                          cwd=repo, env=env)  # fmt: skip
        figures["retrain"] = retrained.strip().splitlines()[-1]
        challenger = work / "v2.joblib"
        shutil.copy2(repo / "artifacts" / "model" / "model.joblib", challenger)
        gated = gitml("gate", "--name", MODEL_NAME, cwd=repo, env=env, ok=(0, 1))
        figures["gate"] = json.loads((repo / "reports" / "gate.json").read_text())
        figures["gate"]["exit_code"] = 0 if "passes" in gated else 1
        window = read_parquet(repo / "artifacts" / "data" / "test.parquet")
        figures["gate_window"] = both_models(window, champion, challenger, load_params("gate"))

        branch = sh("git", "branch", "--show-current", cwd=repo, env=env).strip()
        sh("git", "switch", "--quiet", "--create", "worse-params", cwd=repo, env=env)
        edit_params(repo, crippled)
        dvc("repro", "evaluate", cwd=repo, env=env)
        refused = gitml("gate", "--name", MODEL_NAME, "--out", "reports/gate-worse.json",
                        cwd=repo, env=env, ok=(0, 1))  # fmt: skip
        figures["negative"] = json.loads((repo / "reports" / "gate-worse.json").read_text())
        figures["negative"]["exit_code"] = 1 if "is refused" in refused else 0
        sh("git", "checkout", "--quiet", "--force", branch, cwd=repo, env=env)
        dvc("checkout", cwd=repo, env=env)

        if figures["gate"]["passed"]:
            sh("git", "switch", "--quiet", "main", cwd=repo, env=env)
            sh("git", "merge", "--quiet", "--ff-only", branch, cwd=repo, env=env)
            release(repo, env, "v2.0.0")
        figures["promoted"] = bool(figures["gate"]["passed"])
        replay(repo, env, stream_dir, "second")
        figures["after"] = monitor(repo, env, "build/monitor-after")
        second = read_parquet(stream_dir / "second" / "production.parquet")
        figures["second_half"] = both_models(second, champion, challenger, load_params("gate"))
    finally:
        for environment in ("staging", "production"):
            gitml("deploy", "stop", "--env", environment, cwd=repo, env=env, ok=(0, 1))
    (work / "figures.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return figures


def describe(models: dict[str, Any]) -> str:
    old, new = models["champion_mae_interval"], models["candidate_mae_interval"]
    low, high = models["interval"]
    window = models["window"]
    return (
        f"{window['rows']} rows, {window['from'][:10]} to {window['to'][:10]}: "
        f"v1 MAE {old[0]:.1f} [{old[1]:.1f}, {old[2]:.1f}], "
        f"v2 MAE {new[0]:.1f} [{new[1]:.1f}, {new[2]:.1f}]; "
        f"difference {models['difference']:+.1f} [{low:+.1f}, {high:+.1f}]"
    )


def report(figures: dict[str, Any]) -> str:
    before, after = figures["before"], figures["after"]

    def watched(summary: dict[str, Any]) -> str:
        window = summary["window"]
        return (
            f"{window['from'][:10]} to {window['to'][:10]} ({', '.join(summary['model_versions'])}"
            f"): error ratio {summary['error_ratio']}, bias {summary['bias']:+.1%}, "
            f"alarm: {', '.join(summary['alarms']) or 'none'}"
        )

    negative, gate = figures["negative"], figures["gate"]
    return "\n".join([
        "loop-demo",
        f"  before    monitor {watched(before)}",
        f"  retrain   {figures['retrain']}",
        f"  gate      {describe(figures['gate_window'])} -> "
        f"{'passes' if gate['passed'] else 'refused'} (exit {gate['exit_code']})",
        f"  negative  one-round params: MAE {negative.get('candidate_mae', 0):.1f} vs production "
        f"{negative.get('champion_mae', 0):.1f} -> "
        f"{'passes' if negative['passed'] else 'refused'} "
        f"(exit {negative['exit_code']})",
        f"  promoted  {'v2.0.0 to production' if figures['promoted'] else 'nothing (refused)'}",
        f"  after     monitor {watched(after)}",
        f"  unseen    second half, both models: {describe(figures['second_half'])}",
    ])  # fmt: skip


def main() -> None:
    work = Path(os.environ.get("LOOP_DIR", PROJ_ROOT / "build" / "loop-demo")).resolve()
    try:
        figures = run(work)
    except DemoFailed as err:
        print(f"loop-demo: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(report(figures))
    print(f"(figures: {work / 'figures.json'}; the clone: {work / 'repo'})")


if __name__ == "__main__":
    main()
