"""The Prometheus alert rules in deploy/prometheus: valid, documented, and unit-tested by promtool."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        # a skip would read as green in CI while the rules go unchecked
        pytest.fail("promtool is missing: run `make monitor-tools` (Debian package prometheus)")
    return subprocess.run(
        [exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


ALERTS = alerts()


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_promtool_fails_not_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.fail.Exception, match="make monitor-tools"):
        promtool("--version")


def test_there_are_alerts() -> None:
    assert {a["alert"] for a in ALERTS} >= {
        "GitmlHighErrorRate",
        "GitmlHighLatencyP99",
        "GitmlPredictionLogFailing",
        "GitmlPredictionLogBacklog",
        "GitmlDriftDetected",
        "GitmlMonitorStale",
    }


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a["alert"])
def test_alert_has_severity_and_runbook(alert: dict[str, Any]) -> None:
    assert alert.get("labels", {}).get("severity") in {"critical", "warning", "info"}
    annotations = alert.get("annotations", {})
    assert annotations.get("summary"), "a summary says what is wrong"
    assert "`make " in annotations.get("description", ""), "the description names a make target"


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a["alert"])
def test_alert_is_unit_tested_firing(alert: dict[str, Any]) -> None:
    cases = [
        case
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case["alertname"] == alert["alert"]
    ]
    # a rule only ever expected to stay quiet would pass with any threshold
    assert any(case.get("exp_alerts") for case in cases), f"{alert['alert']} never fires in a test"
