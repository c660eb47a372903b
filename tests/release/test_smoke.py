import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gitml.config import load_params
from gitml.release.smoke import app, passed, run_checks
from tests.conftest import Served
from tests.fake_github import reply_json


def golden_of(served: Served) -> dict[str, Any]:
    from gitml.config import GOLDEN_FILE

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


class StandIn:
    """A server on loopback answering /healthz and /predict as told, to show each check fails
    on the answer it must refuse (the real server always answers well)."""

    def __init__(self) -> None:
        self.health: tuple[int, object] = (200, {"status": "ok", "model_version": "v1"})
        self.predictions: tuple[int, object] = (200, [1.0, 2.0])
        self.delay = 0.0
        self.posts = 0
        # each /predict request: (request id header, synthetic header, JSON body)
        self.bodies: list[tuple[str | None, str | None, object]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            wbufsize = 1 << 16  # one write per answer: no Nagle delay between header and body

            def answer(self, status: int, body: object) -> None:
                reply_json(self, status, body)

            def do_GET(self) -> None:
                self.answer(*stand_in.health)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                marks = (self.headers.get("X-Request-ID"), self.headers.get("X-Gitml-Synthetic"))
                stand_in.bodies.append((*marks, body))
                stand_in.posts += 1
                time.sleep(stand_in.delay)
                self.answer(*stand_in.predictions)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.server.shutdown()
    server.server.server_close()


GOLDEN = {"rows": [{"hr": 1}, {"hr": 2}], "predictions": [1.0, 2.0]}
QUICK = {"rtol": 1e-6, "latency_requests": 3, "max_p95_latency_ms": 1000}


def test_the_stand_in_passes_when_it_answers_well(stand_in: StandIn) -> None:
    checks = run_checks(stand_in.url, GOLDEN, "v1", QUICK)
    assert [(c.name, c.ok) for c in checks] == [
        ("health", True), ("version", True), ("golden", True), ("latency", True)
    ]  # fmt: skip
    assert stand_in.posts == 1 + 3  # the golden batch, then one row per latency request


@pytest.mark.parametrize(
    "health",
    [
        (503, {"status": "ok", "model_version": "v1"}),
        (200, {"status": "starting", "model_version": "v1"}),
        (200, {"model_version": "v1"}),
    ],
)
def test_health_needs_200_and_status_ok_and_stops_the_rest(
    stand_in: StandIn, health: tuple[int, object]
) -> None:
    stand_in.health = health
    checks = run_checks(stand_in.url, GOLDEN, "v1", QUICK)
    assert [(c.name, c.ok) for c in checks] == [("health", False)]
    assert str(health[0]) in checks[0].detail
    assert stand_in.posts == 0


def test_a_slow_server_fails_latency(stand_in: StandIn) -> None:
    stand_in.delay = 0.05
    checks = {
        c.name: c
        for c in run_checks(stand_in.url, GOLDEN, "v1", {**QUICK, "max_p95_latency_ms": 20})
    }
    assert checks["golden"].ok and not checks["latency"].ok
    assert "(limit 20 ms)" in checks["latency"].detail


@pytest.mark.parametrize(
    ("predictions", "words"),
    [
        ((500, {"error": "boom"}), "500"),
        ((200, [1.0]), "max gap inf"),  # a missing prediction is a failure, not a smaller gap
        ((200, [1.0, 2.1]), "max gap 1.00e-01"),
    ],
)
def test_golden_fails_on_an_error_a_short_answer_or_a_gap(
    stand_in: StandIn, predictions: tuple[int, object], words: str
) -> None:
    stand_in.predictions = predictions
    checks = {c.name: c for c in run_checks(stand_in.url, GOLDEN, "v1", QUICK)}
    assert not checks["golden"].ok and words in checks["golden"].detail


def test_predictions_within_rtol_pass_golden(stand_in: StandIn) -> None:
    stand_in.predictions = (200, [1.0, 2.0 * (1 + 1e-7)])
    checks = {c.name: c for c in run_checks(stand_in.url, GOLDEN, "", QUICK)}
    assert checks["golden"].ok and "version" not in checks  # '' checks no version


def test_cli_exits_1_and_prints_each_check(stand_in: StandIn, tmp_path: Path) -> None:
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(GOLDEN))
    result = CliRunner().invoke(
        app, ["--url", stand_in.url, "--golden", str(golden), "--version", "v2"]
    )
    assert result.exit_code == 1
    assert "smoke: FAIL version  serves 'v1', expected 'v2'" in result.output
    assert "smoke: ok  golden" in result.output
    passing = CliRunner().invoke(
        app, ["--url", stand_in.url, "--golden", str(golden), "--version", "v1"]
    )
    assert passing.exit_code == 0, passing.output


def test_requests_carry_the_rows_the_shared_secret_and_an_id_each(stand_in: StandIn) -> None:
    run_checks(stand_in.url, GOLDEN, "v1", QUICK, synthetic_token="s3cret")
    (golden_id, *marks), *latency = stand_in.bodies
    # the secret marks them synthetic, so monitoring leaves them out
    assert marks == ["s3cret", {"data": {"values": GOLDEN["rows"]}}]
    assert [body[1:] for body in latency] == [
        ("s3cret", {"data": {"values": GOLDEN["rows"][:1]}})
    ] * 3
    # an id repeated would read as a retry of one request (the log keeps its last answer)
    ids = [golden_id] + [body[0] for body in latency]
    assert len(set(ids)) == 4 and all(str(i).startswith("smoke-") for i in ids), ids


def test_without_the_secret_smoke_requests_are_not_marked(stand_in: StandIn) -> None:
    run_checks(stand_in.url, GOLDEN, "v1", QUICK)
    assert {body[1] for body in stand_in.bodies} == {None}


def test_check_details_say_what_was_wrong(stand_in: StandIn) -> None:
    stand_in.health = (200, {"status": "ok"})  # no model_version
    checks = {c.name: c for c in run_checks(stand_in.url, GOLDEN, "v1", QUICK)}
    assert checks["version"].detail == "serves '', expected 'v1'"
    stand_in.health = (503, {"status": "x" * 300})
    (health,) = run_checks(stand_in.url, GOLDEN, "v1", QUICK)
    assert health.detail == "503 " + json.dumps({"status": "x" * 300})[:200]
    (down,) = run_checks("http://127.0.0.1:9", GOLDEN, "v1", QUICK)
    assert down.detail.startswith("no answer: ") and len(down.detail) > len("no answer: ")


def test_the_release_commands_leave_mlem_unloaded() -> None:
    """A workflow job runs smoke, k8s and deploy many times per release; loading MLEM (through
    gitml.serving.packaging) cost each of them 1.2 CPU-s, and they need none of it."""
    probe = (
        "import sys, gitml.release.smoke, gitml.release.k8s, gitml.release.deploy; "
        "print(sorted(m for m in sys.modules if m == 'mlem' or m.startswith('mlem.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.strip()  # fmt: skip
    assert loaded == "[]"
