import numpy as np
import pandas as pd
import pytest

from gitml.report import (
    build_report,
    compare_predictions,
    data_line,
    metrics_table,
    runner_section,
    verdict,
)

HOURS = pd.date_range("2011-09-01", periods=24 * 20, freq="h").strftime("%Y-%m-%d %H:%M")
RNG = np.random.default_rng(3)
ACTUAL = RNG.poisson(150, len(HOURS)).astype(float)


def predictions(noise: float) -> pd.DataFrame:
    predicted = ACTUAL + RNG.normal(0, noise, len(HOURS))
    return pd.DataFrame({"timestamp": HOURS, "actual": ACTUAL, "predicted": predicted})


@pytest.mark.parametrize(
    ("low", "high", "higher_is_better", "expected"),
    [(-2, -1, False, "better"), (1, 2, False, "worse"), (1, 2, True, "better"), (-1, 1, True, "within noise")],
)  # fmt: skip
def test_verdict(low: float, high: float, higher_is_better: bool, expected: str) -> None:
    assert verdict(low, high, higher_is_better) == expected


def test_a_much_better_model_is_better_on_every_metric() -> None:
    comparison = compare_predictions(predictions(40), predictions(10), 300, 0)
    assert comparison is not None
    assert list(comparison["verdict"]) == ["better", "better", "better"]
    mae = comparison.set_index("metric").loc["mae"]
    assert mae["ci_low"] <= mae["change"] <= mae["ci_high"] < 0


def test_the_same_model_is_within_noise() -> None:
    base = predictions(30)
    same = base.assign(predicted=base["predicted"] + RNG.normal(0, 0.5, len(base)))
    comparison = compare_predictions(base, same, 300, 0)
    assert comparison is not None and set(comparison["verdict"]) == {"within noise"}


def test_different_test_hours_are_not_paired() -> None:
    assert compare_predictions(predictions(10), predictions(10).iloc[24:], 100, 0) is None
    assert "No paired comparison" in metrics_table(None, "main")


def test_metrics_table_shows_change_interval_and_verdict() -> None:
    table = metrics_table(compare_predictions(predictions(40), predictions(10), 200, 0), "main")
    header, _, *rows = table.splitlines()
    assert "95% interval" in header and len(rows) == 3
    assert rows[0].startswith("| mae |") and "**better**" in rows[0]


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


def test_report_orders_sections_and_drops_empty_warning() -> None:
    parts = {k: k.upper() for k in ("metrics", "metrics_diff", "params", "figures", "run")}
    report = build_report({**parts, "base": "main", "stale": ""})
    order = ["METRICS_DIFF", "METRICS", "PARAMS", "FIGURES", "RUN"]
    positions = [report.index(f"\n{word}\n") for word in order]
    assert positions == sorted(positions)
    assert "WARNING" not in report


def test_a_diff_table_without_rows_is_no_table() -> None:
    from gitml.report import rows_or_nothing

    header = "| Path   | Metric   | main   | workspace   | Change   |\n|--------|----------|"
    assert rows_or_nothing(header + "\n") == ""
    assert rows_or_nothing("") == ""
    table = header + "\n| reports/metrics.json | mae | 36.2 | 35.9 | -0.3 |"
    assert rows_or_nothing(table) == table
