import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gitml.pull_requests.report import (
    build_report,
    command_output,
    compare_predictions,
    data_line,
    git_show,
    metrics_table,
    read_csv_text,
    runner_section,
    stale_warning,
    verdict,
)

HOURS = pd.date_range("2011-09-01", periods=24 * 20, freq="h").strftime("%Y-%m-%d %H:%M")
# every test draws from its own seeded generator: the result never depends on which tests ran
ACTUAL = np.random.default_rng(3).poisson(150, len(HOURS)).astype(float)


def predictions(noise: float, seed: int) -> pd.DataFrame:
    predicted = ACTUAL + np.random.default_rng(seed).normal(0, noise, len(HOURS))
    return pd.DataFrame({"timestamp": HOURS, "actual": ACTUAL, "predicted": predicted})


@pytest.mark.parametrize(
    ("low", "high", "higher_is_better", "expected"),
    [(-2, -1, False, "better"), (1, 2, False, "worse"), (1, 2, True, "better"), (-1, 1, True, "within noise"),
     (-2, -1, True, "worse"),
     # identical models: the interval is [0, 0], which is no change in either direction
     (0, 0, True, "within noise"), (0, 0, False, "within noise"),
     # an interval touching zero does not exclude it
     (0, 1, True, "within noise"), (-1, 0, False, "within noise")],
)  # fmt: skip
def test_verdict(low: float, high: float, higher_is_better: bool, expected: str) -> None:
    assert verdict(low, high, higher_is_better) == expected


def test_a_much_better_model_is_better_on_every_metric() -> None:
    comparison = compare_predictions(predictions(40, 1), predictions(10, 2), 300, 0)
    assert comparison is not None
    assert list(comparison["verdict"]) == ["better", "better", "better"]
    mae = comparison.set_index("metric").loc["mae"]
    assert mae["ci_low"] <= mae["change"] <= mae["ci_high"] < 0


def test_the_same_model_is_within_noise_with_no_change() -> None:
    base = predictions(30, 1)
    comparison = compare_predictions(base, base.copy(), 300, 0)
    assert comparison is not None and set(comparison["verdict"]) == {"within noise"}
    assert comparison[["change", "ci_low", "ci_high"]].to_numpy().tolist() == [[0.0] * 3] * 3


def test_each_row_has_base_and_new_metric_values() -> None:
    base, new = predictions(40, 1), predictions(10, 2)
    comparison = compare_predictions(base, new, 100, 0)
    assert comparison is not None
    mae = comparison.set_index("metric").loc["mae"]
    assert mae["base"] == pytest.approx(np.mean(np.abs(ACTUAL - base["predicted"])))
    assert mae["new"] == pytest.approx(np.mean(np.abs(ACTUAL - new["predicted"])))
    assert mae["change"] == pytest.approx(mae["new"] - mae["base"])


@pytest.mark.parametrize(
    ("base", "new"),
    [
        (predictions(10, 1), predictions(10, 2).iloc[24:]),  # new lacks a day
        (predictions(10, 1).iloc[24:], predictions(10, 2)),  # base lacks a day
        (predictions(10, 1).iloc[:24], predictions(10, 2).iloc[24:48]),  # no hour in common
    ],
)
def test_different_test_hours_are_not_paired(base: pd.DataFrame, new: pd.DataFrame) -> None:
    assert compare_predictions(base, new, 100, 0) is None
    assert "No paired comparison" in metrics_table(None, "main")


def test_metrics_table_shows_change_interval_and_verdict() -> None:
    comparison = compare_predictions(predictions(40, 1), predictions(10, 2), 200, 0)
    table = metrics_table(comparison, "main")
    header, _, *rows = table.splitlines()
    assert header == "| metric | main | this change | change | 95% interval | verdict |"
    assert len(rows) == 3
    assert comparison is not None
    mae = comparison.iloc[0]
    assert rows[0] == (
        f"| mae | {mae['base']:.3f} | {mae['new']:.3f} | {mae['change']:+.3f} "
        f"| [{mae['ci_low']:+.3f}, {mae['ci_high']:+.3f}] | **better** |"
    )


def test_runner_section_says_where_and_how_long() -> None:
    training = {"model": "xgboost", "device": "cuda", "gpu": "NVIDIA L4", "cpu": "x86_64",
                "train_rows": 10, "train_seconds": 3.21}  # fmt: skip
    env = {
        "RUNNER_KIND": "self-hosted",
        "RUNNER_REASON": "GPU runner online",
        "RUNNER_NAME": "box",
    }
    text = runner_section(training, env)
    assert "self-hosted GPU runner (`box`) — GPU runner online" in text
    assert "cuda (NVIDIA L4)" in text and "3.2 s" in text
    assert "run-cache" in runner_section(None, {"RUNNER_KIND": "github-hosted"})


def test_data_line_flags_a_data_change() -> None:
    old, new = "outs:\n- md5: aaaaaaaaaaaaaaaa.dir\n", "outs:\n- md5: bbbbbbbbbbbbbbbb.dir\n"
    assert "same as" in data_line("main", old, old)
    assert "**changed** from `main`: `aaaaaaaaaaaa`" in data_line("main", old, new)


PARTS = {
    k: k.upper()
    for k in ("stale", "metrics", "metrics_diff", "champion", "params", "figures", "run")
}


def test_report_orders_sections() -> None:
    report = build_report({**PARTS, "base": "main"})
    assert report.startswith("## Model report: this change vs `main`\n\nSTALE\n\n")
    order = ["STALE", "METRICS_DIFF", "METRICS", "CHAMPION", "PARAMS", "FIGURES", "RUN"]
    positions = [report.index(f"\n{word}\n") for word in order]
    assert positions == sorted(positions)
    assert report.endswith("\n\nRUN\n")


VERDICT = {
    "champion": "bike-demand@v1.2.0",
    "window": {"from": "2011-11-01 00:00:00", "to": "2011-11-14 23:00:00", "rows": 333,
               "days": 14},
    "champion_mae": 61.25, "candidate_mae": 48.5, "difference": -12.75,
    "interval": [-15.5, -9.25], "tolerance": 0.02, "passed": True,
}  # fmt: skip


@pytest.mark.parametrize("passed", [True, False])
def test_the_champion_section_gives_both_maes_the_interval_and_the_gates_verdict(
    passed: bool,
) -> None:
    from gitml.pull_requests.report import champion_section

    section = champion_section({**VERDICT, "passed": passed})
    assert "| production (bike-demand@v1.2.0) | 61.250 |" in section
    assert "| this change | 48.500 |" in section
    assert "On 333 rows (14 days, 2011-11-01 00:00:00 to 2011-11-14 23:00:00" in section
    assert "difference is -12.750, 95 % interval [-15.500, -9.250]" in section
    assert "at most 2% of production's MAE" in section
    assert section.endswith("would release it." if passed else "**would refuse it**.")


def test_the_champion_section_says_when_there_is_nothing_to_compare() -> None:
    from gitml.pull_requests.report import champion_section

    assert champion_section(None) == (
        "_Not compared with production: this run made no gate verdict (`make gate`)._"
    )
    first = champion_section({"passed": True, "note": "no model in production yet"})
    assert first == "_Not compared: no model in production yet._"
    assert champion_section({"passed": False}) == (
        "_Not compared: the verdict holds no comparison._"
    )


def test_a_diff_table_without_rows_is_no_table() -> None:
    from gitml.pull_requests.report import rows_or_nothing

    header = "| Path   | Metric   | main   | workspace   | Change   |\n|--------|----------|"
    assert rows_or_nothing(header + "\n") == ""
    assert rows_or_nothing("") == ""
    table = header + "\n| reports/metrics.json | mae | 36.2 | 35.9 | -0.3 |"
    assert rows_or_nothing(table) == table


def test_report_leaves_out_empty_parts_and_says_when_nothing_changed() -> None:
    report = build_report({**PARTS, "base": "main", "stale": "", "metrics_diff": "", "params": ""})
    assert "\n\n\n" not in report  # an empty part leaves no gap
    assert "_No metric changes._" in report and "_No param changes._" in report


@pytest.mark.parametrize(
    ("porcelain", "warned"), [("", False), (" M dvc.lock", True), ("?? dvc.lock", True)]
)
def test_the_stale_lock_warning_shows_only_when_the_run_changed_dvc_lock(
    porcelain: str, warned: bool
) -> None:
    warning = stale_warning(porcelain)
    assert (warning != "") is warned
    if warned:
        assert warning.startswith("> [!WARNING]") and "commit `dvc.lock`" in warning


def test_git_show_reads_a_file_at_a_revision_or_says_it_is_not_there(tmp_path: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "a.txt").write_text("first\n")
    subprocess.run([*git, "add", "a.txt"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=tmp_path, check=True)
    (tmp_path / "a.txt").write_text("second\n")  # the workspace differs from HEAD
    assert git_show("HEAD", "a.txt", cwd=tmp_path) == "first\n"
    assert git_show("HEAD", "missing.txt", cwd=tmp_path) is None
    assert git_show("no-such-ref", "a.txt", cwd=tmp_path) is None


def test_command_output_is_stripped_stdout_or_an_error_with_stderr(tmp_path: Path) -> None:
    assert command_output("printf", "  out\n\n", cwd=tmp_path) == "out"
    assert command_output("pwd", cwd=tmp_path) == str(tmp_path)
    with pytest.raises(RuntimeError, match=r"`ls /no/such/dir` failed: .*No such file"):
        command_output("ls", "/no/such/dir", cwd=tmp_path)


def test_read_csv_text() -> None:
    assert read_csv_text(None) is None
    frame = read_csv_text("a,b\n1,2\n")
    assert frame is not None and frame.to_dict("list") == {"a": [1], "b": [2]}


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"RUNNER_KIND": "cloud", "RUNNER_NAME": "c1"},
         "- **Runner:** cloud GPU runner launched by `cml runner launch` (`c1`)"),
        ({"RUNNER_KIND": "github-hosted", "RUNNER_NAME": "gh", "RUNNER_REASON": "fork"},
         "- **Runner:** GitHub-hosted CPU runner (`gh`) — fork"),
        ({"RUNNER_KIND": "self-hosted", "RUNNER_NAME": "box"}, "- **Runner:** self-hosted GPU runner (`box`)"),
        ({"RUNNER_NAME": "laptop"}, "- **Runner:** a local machine (`laptop`)"),
        ({"RUNNER_KIND": "other", "RUNNER_NAME": "x"}, "- **Runner:** a local machine (`x`)"),
    ],
)  # fmt: skip
def test_runner_section_names_each_kind_of_runner(env: dict[str, str], line: str) -> None:
    assert runner_section(None, env).splitlines()[0] == line


def test_runner_section_without_a_name_uses_the_host_name() -> None:
    assert f"(`{os.uname().nodename}`)" in runner_section(None, {})


def test_runner_section_training_lines() -> None:
    training = {"model": "ridge", "device": "cpu", "cpu": "x86_64", "train_rows": 6000,
                "train_seconds": 0.04}  # fmt: skip
    assert runner_section(training, {"RUNNER_NAME": "n"}).splitlines()[1] == (
        "- **Training:** ridge on cpu, 6000 rows, **0.0 s** (CPU: x86_64)"
    )
    assert runner_section(None, {"RUNNER_NAME": "n"}).splitlines()[1] == (
        "- **Training:** not rerun: code, data and params of `train` are unchanged, "
        "so DVC restored the model from its run-cache."
    )


def test_the_report_text_in_full() -> None:
    report = build_report(
        {"base": "main", "stale": "", "metrics": "M", "metrics_diff": "", "champion": "C",
         "params": "", "figures": "F", "run": "R"}
    )  # fmt: skip
    assert report == (
        "## Model report: this change vs `main`\n\n"
        "### Metrics (test months)\n\n"
        "_No metric changes._\n\n"
        "#### Is the model's change larger than noise?\n\n"
        "M\n\n"
        "Verdict: the change is *better* or *worse* only when the 95 % interval of the "
        "paired day-block bootstrap over the test rows excludes zero.\n\n"
        "### Against the model in production\n\n"
        "C\n\n"
        "### Params\n\n"
        "_No param changes._\n\n"
        "### Plots (left: base, right: this change)\n\n"
        "F\n\n"
        "### Run\n\n"
        "R\n"
    )


def test_the_stale_lock_warning_in_full() -> None:
    assert stale_warning(" M dvc.lock") == (
        "> [!WARNING]\n> The committed `dvc.lock` is stale: this run changed it. Run "
        "`dvc repro` and commit `dvc.lock` (this workflow never pushes to your branch)."
    )


def test_no_paired_comparison_in_full() -> None:
    assert metrics_table(None, "main") == (
        "_No paired comparison: the test rows of `main` and this change differ "
        "(or the base has no predictions), so a difference could mix model and data._"
    )
    comparison = compare_predictions(predictions(40, 1), predictions(10, 2), 50, 0)
    assert metrics_table(comparison, "main").splitlines()[1] == "|---|---:|---:|---:|---:|---|"


def test_data_line_in_full() -> None:
    head = "outs:\n- md5: 0123456789abcdef.dir\n"
    assert data_line("main", None, head) == (
        "- **Data:** `0123456789ab` (**changed** from `main`: `none`)"
    )
    assert data_line("main", head, head) == (
        "- **Data:** `0123456789ab` (same as `main`: `0123456789ab`)"
    )


def test_no_predictions_on_either_side_is_no_comparison() -> None:
    empty = predictions(10, 1).iloc[:0]
    assert compare_predictions(empty, empty, 10, 0) is None


def test_the_comparison_is_reproducible_and_uses_the_resamples_asked_for() -> None:
    base, new = predictions(30, 1), predictions(28, 2)
    first = compare_predictions(base, new, 200, 5)
    assert first is not None and first.equals(compare_predictions(base, new, 200, 5))
    other = compare_predictions(base, new, 20, 5)
    assert other is not None and not other[["ci_low", "ci_high"]].equals(
        first[["ci_low", "ci_high"]]
    )
