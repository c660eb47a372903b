"""`make loop-demo` end to end. It runs beside the rest of the suite (marker `beside`): six
minutes of training, serving and monitoring on a scratch clone of its own."""

import json
import sys
from pathlib import Path

import pytest

from gitml.config import PROJ_ROOT, load_params
from tests.e2e.clone import clean_env, run
from tests.example_data import example_only

pytestmark = [pytest.mark.slow, pytest.mark.beside]


@example_only
def test_the_loop_demo_retrains_on_production_and_gates_both_ways(tmp_path: Path) -> None:
    """`make loop-demo` (after `make data`, which the suite has done: run here, it would take
    DVC's lock beside the suite's own DVC runs). On the example, six more weeks of labelled
    production data make a better model on the newest days, beyond noise: the gate releases it,
    refuses the crippled one, and v2 serves afterwards. Each verdict also matches its exit code
    and the gate's rule on the interval it printed."""
    clone = PROJ_ROOT  # the demo works on a scratch clone of this working tree
    demo = [sys.executable, "-m", "benchmarks.loop_demo"]
    output = run(*demo, cwd=clone, env={**clean_env(), "LOOP_DIR": str(tmp_path / "loop")})
    figures = json.loads((tmp_path / "loop" / "figures.json").read_text())
    settings = load_params("gate", clone / "params.yaml")
    before, gate, negative = figures["before"], figures["gate"], figures["negative"]
    # v1 served the first half and the monitor judged it on its labelled rows
    assert before["model_versions"] == ["v1.0.0"] and before["error_ratio"] is not None
    # the calibrated limit decides
    assert ("quality" in before["alarms"]) == (before["error_ratio"] > before["error_ratio_limit"])
    # the retrained model is better on the newest labelled days, beyond noise: released
    assert gate["candidate_mae"] < gate["champion_mae"] and gate["interval"][1] < 0, gate
    assert gate["passed"] is True and gate["exit_code"] == 0, gate
    # the crippled params change is worse beyond the tolerance: refused
    allowed = settings["tolerance"] * negative["champion_mae"]
    assert negative["interval"][0] > allowed, negative
    assert negative["passed"] is False and negative["exit_code"] == 1, negative
    for verdict in (gate, negative):
        assert verdict["champion"] == "bike-demand@v1.0.0"
    # the window is the retrained model's test split: the newest labelled days
    days = figures["test_days"]
    assert gate["window"]["days"] == days
    assert figures["gate_window"]["candidate_mae"] == gate["candidate_mae"]
    # v2 was promoted and served the second half
    assert figures["promoted"] is True and figures["after"]["model_versions"] == ["v2.0.0"]
    for line in ("before    monitor", "gate      ", "negative  ", "after     monitor", "unseen  "):
        assert line in output, output
