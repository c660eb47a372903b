import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from gitml.config import load_params
from gitml.smoke import app, passed, run_checks
from tests.conftest import Served


def golden_of(served: Served) -> dict[str, Any]:
    from gitml.packaging import GOLDEN_FILE

    return dict(json.loads((served.golden_dir / GOLDEN_FILE).read_text()))


def test_a_healthy_server_passes_every_check(process_server: Served) -> None:
    checks = run_checks(process_server.url, golden_of(process_server), process_server.version,
                        load_params("smoke"))  # fmt: skip
    assert [c.name for c in checks] == ["health", "version", "golden", "latency"]
    assert passed(checks), checks


def test_wrong_version_and_predictions_fail(process_server: Served) -> None:
    golden = golden_of(process_server)
    golden["predictions"] = [p + 1.0 for p in golden["predictions"]]
    checks = {
        c.name: c for c in run_checks(process_server.url, golden, "v9.9.9", load_params("smoke"))
    }
    assert not checks["version"].ok and "expected 'v9.9.9'" in checks["version"].detail
    assert not checks["golden"].ok and "max gap 1.00e+00" in checks["golden"].detail
    assert checks["health"].ok


def test_an_unreachable_server_fails_health_only() -> None:
    checks = run_checks(
        "http://127.0.0.1:9", {"rows": [], "predictions": []}, "", load_params("smoke")
    )
    assert [(c.name, c.ok) for c in checks] == [("health", False)]


def test_the_command_refuses_an_empty_url_naming_the_variable(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--url", "", "--golden", str(tmp_path / "g.json")])
    assert result.exit_code == 1
    assert "SMOKE_URL" in result.output and "STAGING_URL or PRODUCTION_URL" in result.output


def test_the_command_says_where_golden_cases_come_from(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--url", "http://127.0.0.1:9", "--golden",
                                      str(tmp_path / "missing.json")])  # fmt: skip
    assert result.exit_code == 1 and "make golden" in result.output
