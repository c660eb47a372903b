"""The release path on the local target: deploy, smoke, promote, rollback, and GTO's record
of it, with real server processes on loopback ports and real git tags."""

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from gitml.config import PROJ_ROOT
from gitml.ports import free_port
from gitml.release import deploy
from gitml.serving.predlog import LogError, read_predictions
from tests.faulty_model import WrongInEnvironments

pytestmark = pytest.mark.slow


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty local target on spare ports; every server it starts is stopped afterwards."""
    monkeypatch.setitem(deploy.PORTS, "staging", free_port())
    monkeypatch.setitem(deploy.PORTS, "production", free_port())
    state_dir = tmp_path / "deploy"
    yield state_dir
    for env in deploy.PORTS:
        state = deploy.read_state(env, state_dir)
        deploy.stop_server(state["pid"] if state else None)


def serving(env: str) -> str | None:
    """The model version an environment answers with, or None when it is down."""
    try:
        return str(
            httpx.get(f"{deploy.url(deploy.PORTS[env])}/healthz", timeout=5).json()[
                "model_version"
            ]
        )
    except httpx.HTTPError:
        return None


def broken_copy(model_dir: Path, tmp_path: Path) -> Path:
    """The same package with a truncated model file: the server cannot load it."""
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model").write_bytes((broken / "model").read_bytes()[:1000])
    return broken


def gto(repo: Path, *args: str) -> str:
    # GTO's tags are annotated: a person's identity, not whatever git config this machine has
    person = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
              for what, value in (("NAME", "Dana Engineer"), ("EMAIL", "dana@example.com"))}  # fmt: skip
    return subprocess.run(
        ["gto", *args], cwd=repo, check=True, capture_output=True, text=True,
        env={**os.environ, **person},
    ).stdout  # fmt: skip


def test_release_path_promote_and_rollback(
    packaged_model: Path, target: Path, tmp_path: Path
) -> None:
    # GTO records every step as git tags, in a repository of its own for the test.
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(PROJ_ROOT / "dvc.yaml", repo / "dvc.yaml")
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "m"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)
    gto(repo, "register", "bike-demand", "--version", "v1.0.0")

    good = deploy.stage_release(packaged_model.parent, "v1.0.0", target)
    deploy.deploy("staging", good, "v1.0.0", target)
    assert serving("staging") == "v1.0.0"
    gto(repo, "assign", "bike-demand", "--stage", "staging", "--version", "v1.0.0")
    deploy.promote(target)
    assert serving("production") == "v1.0.0"
    gto(repo, "assign", "bike-demand", "--stage", "production", "--version", "v1.0.0")

    # A second good version goes all the way, then production is rolled back.
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "retrain"], cwd=repo, check=True)
    gto(repo, "register", "bike-demand", "--version", "v1.1.0")
    second = deploy.stage_release(packaged_model.parent, "v1.1.0", target / "second")
    deploy.deploy("staging", second, "v1.1.0", target)
    deploy.promote(target)
    assert serving("production") == "v1.1.0"
    gto(repo, "assign", "bike-demand", "--stage", "production", "--version", "v1.1.0")
    deploy.rollback("production", target)
    assert serving("production") == "v1.0.0"
    assert serving("staging") == "v1.1.0"
    gto(repo, "assign", "bike-demand", "--stage", "production", "--version", "v1.0.0", "--force")
    shown = gto(repo, "show")
    assert "v1.0.0" in shown.splitlines()[3]  # name | latest | #production | #staging
    assert (
        "bike-demand#production#"
        in subprocess.run(["git", "tag"], cwd=repo, capture_output=True, text=True).stdout
    )


def test_a_broken_model_stops_in_staging_and_production_keeps_serving(
    packaged_model: Path, target: Path, tmp_path: Path
) -> None:
    good = deploy.stage_release(packaged_model.parent, "v1.0.0", target)
    deploy.deploy("staging", good, "v1.0.0", target)
    deploy.promote(target)

    broken = deploy.stage_release(broken_copy(packaged_model.parent, tmp_path), "v2.0.0", target)
    with pytest.raises(deploy.DeployError, match=r"staging still serves v1\.0\.0"):
        deploy.deploy("staging", broken, "v2.0.0", target)
    assert serving("staging") == "v1.0.0"
    assert serving("production") == "v1.0.0"  # never both down, production untouched
    with pytest.raises(deploy.DeployError, match="no previous release"):
        deploy.rollback("staging", target)


def test_a_release_missing_its_golden_cases_is_refused(
    packaged_model: Path, tmp_path: Path
) -> None:
    incomplete = tmp_path / "incomplete"
    shutil.copytree(packaged_model.parent, incomplete)
    (incomplete / "golden.json").unlink()
    with pytest.raises(deploy.DeployError, match=r"golden\.json"):
        deploy.stage_release(incomplete, "v0.0.1", tmp_path / "deploy")


class Watch:
    """Asks an environment what it serves, every 0.1 s, with real requests, while a deploy
    runs; `seen` is every answer (None when it did not answer)."""

    def __init__(self, env: str) -> None:
        self.env, self.seen = env, list[str | None]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append(serving(self.env))
            time.sleep(0.1)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def package(model: Any, golden_model: Any, splits: dict[str, pd.DataFrame], path: Path) -> Path:
    """A release directory as the package stage writes it: `model` saved with MLEM, and golden
    cases from `golden_model` (the same model, unless the test wants them to disagree)."""
    from gitml.config import GOLDEN_FILE
    from gitml.files import write_json
    from gitml.schema import as_model_input
    from gitml.serving.golden import golden_cases, golden_rows
    from gitml.serving.packaging import save_model

    save_model(model, as_model_input(splits["train"].head(50)), path / "model")
    golden = golden_rows(splits["test"])  # the rows the package stage picks
    write_json(path / GOLDEN_FILE, golden_cases(golden_model, golden))
    return path


@pytest.fixture
def both_serve_v1(packaged_model: Path, target: Path) -> Path:
    """Staging and production both serve v1.0.0."""
    good = deploy.stage_release(packaged_model.parent, "v1.0.0", target)
    deploy.deploy("staging", good, "v1.0.0", target)
    deploy.promote(target)
    assert serving("staging") == serving("production") == "v1.0.0"
    return target


def test_a_release_that_answers_but_fails_its_smoke_check_is_never_switched(
    both_serve_v1: Path, trained_model: Any, splits: dict[str, pd.DataFrame],
    params: dict[str, Any], tmp_path: Path,
) -> None:  # fmt: skip
    # A model that starts and answers /healthz, but is not the model its golden cases came
    # from (a retrain packaged with the old golden cases, say): only the smoke check can tell.
    from gitml.pipeline.train import fit

    other = {**params["train"], "hyperparams": {"hist_gradient_boosting": {"max_iter": 5}}}
    retrained, _ = fit(splits["train"], params["features"], other)
    mismatched = package(retrained, trained_model, splits, tmp_path / "mismatched")
    release = deploy.stage_release(mismatched, "v2.0.0", both_serve_v1)

    with (
        Watch("staging") as staging,
        Watch("production") as production,
        pytest.raises(deploy.DeployError, match=r"v2\.0\.0 failed its smoke checks; "
                           r"staging still serves v1\.0\.0: \['golden: "),
    ):  # fmt: skip
        deploy.deploy("staging", release, "v2.0.0", both_serve_v1)
    # the candidate ran on a port of its own: neither environment stopped for a moment
    assert len(staging.seen) > 10 and set(staging.seen) == {"v1.0.0"}
    assert len(production.seen) > 10 and set(production.seen) == {"v1.0.0"}
    assert deploy.read_state("staging", both_serve_v1)["version"] == "v1.0.0"  # type: ignore[index]


def test_an_environment_that_fails_its_smoke_check_after_the_switch_is_rolled_back(
    both_serve_v1: Path, trained_model: Any, splits: dict[str, pd.DataFrame], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("GITML_PREDICTION_LOG_DIR", raising=False)  # golden cases as a candidate
    faulty = WrongInEnvironments(trained_model)
    release_dir = package(faulty, faulty, splits, tmp_path / "faulty")
    release = deploy.stage_release(release_dir, "v2.0.0", both_serve_v1)
    before = deploy.read_state("staging", both_serve_v1)

    with (
        Watch("production") as production,
        pytest.raises(deploy.DeployError, match=r"v2\.0\.0 failed its smoke checks in "
                      r"staging: \['golden: .*rolled back staging to v1\.0\.0"),
    ):  # fmt: skip
        deploy.deploy("staging", release, "v2.0.0", both_serve_v1)
    assert serving("staging") == "v1.0.0"  # the previous release, restored automatically
    after = deploy.read_state("staging", both_serve_v1)
    assert after is not None and before is not None
    assert {**after, "pid": None} == {**before, "pid": None} and after["pid"] != before["pid"]
    assert len(production.seen) > 10 and set(production.seen) == {"v1.0.0"}

    # the same release sent straight to production: rolled back there too
    with pytest.raises(deploy.DeployError, match=r"rolled back production to v1\.0\.0"):
        deploy.deploy("production", release, "v2.0.0", both_serve_v1)
    assert serving("production") == "v1.0.0"
    production_state = deploy.read_state("production", both_serve_v1)
    assert production_state is not None and production_state["version"] == "v1.0.0"


@pytest.fixture
def another_checkouts_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A server on staging's port that this checkout did not start (another checkout's)."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok", "model_version": "v9.9.9"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setitem(deploy.PORTS, "staging", server.server_address[1])
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_server_this_checkout_did_not_start_is_refused_not_replaced(
    another_checkouts_server: int, tmp_path: Path
) -> None:
    with pytest.raises(deploy.DeployError) as err:
        deploy.deploy("staging", tmp_path / "release", "v1.0.0", tmp_path / "deploy")
    assert str(err.value) == (
        f"port {another_checkouts_server} is taken by a server that is not this checkout's "
        "staging (serves v9.9.9): stop it, or give this checkout other ports "
        "(GITML_STAGING_PORT, GITML_PRODUCTION_PORT)"
    )
    assert serving("staging") == "v9.9.9"  # left alone


def test_deploy_if_down_does_not_take_another_checkouts_server_for_its_own(
    another_checkouts_server: int, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    result = CliRunner(mix_stderr=False).invoke(
        deploy.app,
        ["deploy", "--env", "staging", "--version", "v1.0.0", "--if-down",
         "--model-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "is not this checkout's staging (serves v9.9.9)" in result.stderr
    assert "left as it is" not in result.stdout


def test_the_deploys_smoke_checks_are_marked_synthetic_and_left_out(
    packaged_model: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITML_SYNTHETIC_TOKEN", raising=False)  # the state directory's own
    release = deploy.stage_release(packaged_model.parent, "v1.0.0", target)
    deploy.deploy("staging", release, "v1.0.0", target)
    logs = deploy.prediction_log_dir("staging", target)
    lines = [json.loads(line) for file in logs.rglob("*.jsonl")
             for line in file.read_text().splitlines()]  # fmt: skip
    assert lines and all(line.get("synthetic") is True for line in lines)
    with pytest.raises(LogError, match="no prediction records"):
        read_predictions(logs)
    assert (target / "synthetic-token").stat().st_mode & 0o077 == 0  # this user's only
