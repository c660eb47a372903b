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
    DVC's lock beside the suite's own DVC runs): the gate releases the retrained model or
    refuses it by its own rule, refuses the crippled one, and what serves afterwards follows."""
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
    # the gate's verdict is its rule applied to the interval it printed, exit code to match
    for verdict in (gate, negative):
        allowed = settings["tolerance"] * verdict["champion_mae"]
        assert verdict["passed"] == (verdict["interval"][0] <= allowed)
        assert verdict["exit_code"] == (0 if verdict["passed"] else 1)
        assert verdict["champion"] == "bike-demand@v1.0.0"
    # the window is the retrained model's test split: the newest labelled days
    days = figures["test_days"]
    assert gate["window"]["days"] == days
    assert figures["gate_window"]["candidate_mae"] == gate["candidate_mae"]
    # the crippled params change is refused
    assert negative["passed"] is False and negative["exit_code"] == 1
    # what serves the second half follows the gate
    served = ["v2.0.0"] if gate["passed"] else ["v1.0.0"]
    assert figures["promoted"] == gate["passed"] and figures["after"]["model_versions"] == served
    for line in ("before    monitor", "gate      ", "negative  ", "after     monitor", "unseen  "):
        assert line in output, output
