"""report: the pull-request report, written exactly as CML would post it.

`make report BASE=<ref>` compares the workspace (after `dvc repro`) with a base revision.
Nothing of the base is retrained: its metrics and predictions are small DVC outputs kept in git
(`cache: false`), read with `git show`. Writes `reports/pr/report.md` and PNG figures beside it.
"""

import json
import os
import subprocess
from io import StringIO
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
import yaml

from gitml.config import PROJ_ROOT, REPORTS_DIR, TRAINING_FILE, load_params
from gitml.files import write_atomic
from gitml.pull_requests.bootstrap import METRICS, paired_difference_ci
from gitml.pull_requests.figures import FIGURES, render_comparison
from gitml.release.gate import GATE_FILE

REPORT_DIR = REPORTS_DIR / "pr"
HIGHER_IS_BETTER = {"mae": False, "rmse": False, "r2": True}


def git_show(rev: str, path: str, cwd: Path = PROJ_ROOT) -> str | None:
    """A file's content at a revision, or None when it does not exist there."""
    result = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=cwd, capture_output=True, text=True, check=False
    )
    return result.stdout if result.returncode == 0 else None


def plot_file(name: str) -> str:
    """Repository path of one evaluate plot table."""
    return f"reports/plots/{name}.csv"


def read_csv_text(text: str | None) -> pd.DataFrame | None:
    return None if text is None else pd.read_csv(StringIO(text))


def command_output(*cmd: str, cwd: Path = PROJ_ROOT) -> str:
    """stdout of a command that must succeed (its stderr becomes the error)."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()}")
    return result.stdout.strip()


def rows_or_nothing(table: str) -> str:
    """A markdown table from `dvc ... diff --md`, or "" when it has a header but no rows."""
    return table if len([line for line in table.splitlines() if line.strip()]) > 2 else ""


def verdict(low: float, high: float, higher_is_better: bool) -> str:
    """Better, worse, or within noise, from a confidence interval of new - old."""
    if low <= 0 <= high:
        return "within noise"
    improved = (low > 0) == higher_is_better
    return "better" if improved else "worse"


def compare_predictions(
    base: pd.DataFrame, new: pd.DataFrame, n_resamples: int, seed: int
) -> pd.DataFrame | None:
    """Per metric: base, new, change and its 95 % day-block bootstrap interval, and a verdict.

    Both frames have `timestamp`, `actual`, `predicted`. They are paired on timestamp; when the
    test rows differ (e.g. the split changed) there is no paired comparison and None is returned.
    """
    paired = base.merge(new, on="timestamp", suffixes=("_base", "_new"))
    if len(paired) == 0 or len(paired) != len(base) or len(paired) != len(new):
        return None
    actual = paired["actual_new"].to_numpy()
    days = pd.to_datetime(paired["timestamp"]).dt.date.to_numpy()
    rows = []
    for name, metric in METRICS.items():
        diff, low, high = paired_difference_ci(
            actual, paired["predicted_new"].to_numpy(), paired["predicted_base"].to_numpy(),
            days, metric, n_resamples=n_resamples, seed=seed,
        )  # fmt: skip
        rows.append(
            {
                "metric": name,
                "base": metric(actual, paired["predicted_base"].to_numpy()),
                "new": metric(actual, paired["predicted_new"].to_numpy()),
                "change": diff,
                "ci_low": low,
                "ci_high": high,
                "verdict": verdict(low, high, HIGHER_IS_BETTER[name]),
            }
        )
    return pd.DataFrame(rows)


def metrics_table(comparison: pd.DataFrame | None, base_ref: str) -> str:
    """Markdown table of the paired comparison, or why there is none."""
    if comparison is None:
        return (
            f"_No paired comparison: the test rows of `{base_ref}` and this change differ "
            "(or the base has no predictions), so a difference could mix model and data._"
        )
    lines = [
        f"| metric | {base_ref} | this change | change | 95% interval | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in comparison.itertuples():
        lines.append(
            f"| {row.metric} | {row.base:.3f} | {row.new:.3f} | {row.change:+.3f} "
            f"| [{row.ci_low:+.3f}, {row.ci_high:+.3f}] | **{row.verdict}** |"
        )
    return "\n".join(lines)


def runner_section(training: dict[str, Any] | None, env: dict[str, str]) -> str:
    """Where and how long the model trained, in words a reviewer reads at a glance."""
    kind = env.get("RUNNER_KIND", "local")
    reason = env.get("RUNNER_REASON", "")
    where = {
        "self-hosted": "self-hosted GPU runner",
        "cloud": "cloud GPU runner launched by `cml runner launch`",
        "github-hosted": "GitHub-hosted CPU runner",
    }.get(kind, "a local machine")
    name = env.get("RUNNER_NAME", os.uname().nodename)
    lines = [f"- **Runner:** {where} (`{name}`){f' — {reason}' if reason else ''}"]
    if training is None:
        lines.append(
            "- **Training:** not rerun: code, data and params of `train` are unchanged, "
            "so DVC restored the model from its run-cache."
        )
    else:
        device = training["device"] + (f" ({training['gpu']})" if training.get("gpu") else "")
        lines.append(
            f"- **Training:** {training['model']} on {device}, {training['train_rows']} rows, "
            f"**{training['train_seconds']:.1f} s** (CPU: {training['cpu']})"
        )
    return "\n".join(lines)


def data_line(base_ref: str, base_dvc: str | None, head_dvc: str) -> str:
    """The data version (data.dvc hash), and whether it differs from the base."""
    head_md5 = yaml.safe_load(head_dvc)["outs"][0]["md5"]
    base_md5 = yaml.safe_load(base_dvc)["outs"][0]["md5"] if base_dvc else None
    same = "same as" if head_md5 == base_md5 else "**changed** from"
    return f"- **Data:** `{head_md5[:12]}` ({same} `{base_ref}`: `{(base_md5 or 'none')[:12]}`)"


def stale_warning(lock_status: str) -> str:
    """The warning for a run that changed `dvc.lock` (`git status --porcelain` of it), or ""."""
    if not lock_status:
        return ""
    return (
        "> [!WARNING]\n> The committed `dvc.lock` is stale: this run changed it. Run "
        "`dvc repro` and commit `dvc.lock` (this workflow never pushes to your branch)."
    )


def champion_section(gate: dict[str, Any] | None) -> str:
    """This change against the model in production, from `make gate --advisory`'s verdict."""
    if gate is None:
        return "_Not compared with production: this run made no gate verdict (`make gate`)._"
    if "candidate_mae" not in gate:
        return f"_Not compared: {gate.get('note', 'the verdict holds no comparison')}._"
    window = gate["window"]
    low, high = gate["interval"]
    verdict = "would release it" if gate["passed"] else "**would refuse it**"
    return (
        f"| model | MAE |\n|---|---:|\n| production ({gate['champion']}) | "
        f"{gate['champion_mae']:.3f} |\n| this change | {gate['candidate_mae']:.3f} |\n\n"
        f"On {window['rows']} rows ({window['days']} days, {window['from']} to {window['to']}: "
        f"this change's test split, which production's model never trained on), the MAE "
        f"difference is {gate['difference']:+.3f}, 95 % interval [{low:+.3f}, {high:+.3f}]. "
        f"The release gate (worse by at most {gate['tolerance']:.0%} of production's MAE) "
        f"{verdict}."
    )


def build_report(parts: dict[str, str]) -> str:
    """Assemble the sections in reading order; empty parts (no stale warning) are left out."""
    sections = [
        f"## Model report: this change vs `{parts['base']}`",
        parts["stale"],
        "### Metrics (test months)",
        parts["metrics_diff"] or "_No metric changes._",
        "#### Is the model's change larger than noise?",
        parts["metrics"],
        "Verdict: the change is *better* or *worse* only when the 95 % interval of the "
        "paired day-block bootstrap over the test rows excludes zero.",
        "### Against the model in production",
        parts["champion"],
        "### Params",
        parts["params"] or "_No param changes._",
        "### Plots (left: base, right: this change)",
        parts["figures"],
        "### Run",
        parts["run"],
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


# the stage's file and git plumbing: run end to end by tests/e2e (slow), not by the fast
# tests `make mutation` uses
def main(
    base: Annotated[str, typer.Option(envvar="BASE", help="Git ref to compare with.")] = "main",
    out_dir: Annotated[Path, typer.Option(help="Where report.md and figures go.")] = REPORT_DIR,
) -> None:  # pragma: no mutate block
    """Write the pull-request report comparing the workspace with BASE."""
    if git_show(base, "dvc.yaml") is None:
        typer.echo(
            f"report: base ref {base!r} not found (fetch it: git fetch origin {base})", err=True
        )
        raise typer.Exit(1)
    settings = load_params("report")
    base_predictions = read_csv_text(git_show(base, plot_file("predictions")))
    comparison = None
    if base_predictions is not None and "timestamp" in base_predictions:
        comparison = compare_predictions(
            base_predictions, pd.read_csv(PROJ_ROOT / plot_file("predictions")),
            int(settings["bootstrap_resamples"]), int(settings["seed"]),
        )  # fmt: skip
    figures = render_comparison(
        {name: read_csv_text(git_show(base, plot_file(name))) for name in FIGURES},
        {name: pd.read_csv(PROJ_ROOT / plot_file(name)) for name in FIGURES},
        out_dir / "figures",
    )
    training = json.loads(TRAINING_FILE.read_text()) if TRAINING_FILE.exists() else None
    parts = {
        "base": base,
        "stale": stale_warning(command_output("git", "status", "--porcelain", "--", "dvc.lock")),
        "metrics": metrics_table(comparison, base),
        "champion": champion_section(
            json.loads(GATE_FILE.read_text()) if GATE_FILE.exists() else None
        ),
        "metrics_diff": rows_or_nothing(command_output("dvc", "metrics", "diff", base, "--md")),
        "params": rows_or_nothing(command_output("dvc", "params", "diff", base, "--md")),
        "figures": "\n\n".join(f"![{p.stem}](figures/{p.name})" for p in figures),
        "run": "\n".join(
            [
                runner_section(training, dict(os.environ)),
                data_line(base, git_show(base, "data.dvc"), (PROJ_ROOT / "data.dvc").read_text()),
            ]
        ),
    }
    report = build_report(parts)
    write_atomic(out_dir / "report.md", lambda tmp: tmp.write_text(report))
    # Who the report is for: data for the pr-comment workflow, which verifies it.
    meta = {
        "pr_number": os.environ.get("PR_NUMBER", ""),
        "head_sha": os.environ.get("HEAD_SHA", ""),
    }
    write_atomic(out_dir / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta) + "\n"))
    typer.echo(f"report: {out_dir / 'report.md'} ({len(figures)} figures)")


app = typer.Typer(add_completion=False)
app.command()(main)

if __name__ == "__main__":
    app()
