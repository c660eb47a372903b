"""Shared fixtures: the real example data (pulled by `make data`) and the params."""

import os

# MLEM's save() would start a detached telemetry process: a child the tests never wait for
# (and mutmut, which forks per mutant, takes for one of its own).
os.environ["MLEM_NO_ANALYTICS"] = "true"
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from gitml import dataset
from gitml.config import PARAMS_FILE, PROJ_ROOT, load_params
from gitml.pipeline.prepare import split_by_time
from gitml.pipeline.validate import RAW_DATA, clean, read_raw
from gitml.ports import reserve_port
from tests import fake_github
from tests.example_data import EXAMPLE_ONLY, example_missing

# --- skip policy ------------------------------------------------------------------------------
# A skipped test protects nothing while the run reads green, so a run with any skip fails,
# except for the skips data other than the example's causes (a fork's own): the example's facts,
# and checks that need something of the spec that the fork's data lacks. The suite needs no
# skip for its environment: what it needs, `make test` installs. The reasons, as the tests say:
DATA_SKIPS = (
    EXAMPLE_ONLY,  # tests/example_data.py
    "the dataset spec has no integer feature",  # tests/serving/test_predict.py
    "the dataset spec needs int and float features",  # tests/test_schema.py
    "no feature of the dataset spec may be missing",  # tests/monitoring/test_{feedback,replay}.py
    f"the target {dataset.TARGET!r} has no bound",  # tests/monitoring/test_feedback.py
    f"{dataset.TARGET} takes negative values",  # tests/model/test_model_quality.py
    "got empty parameter set",  # pytest's: a check per spec column of a kind the spec lacks
)


def unexpected_skips(skipped: list[tuple[str, str]], example: bool) -> list[tuple[str, str]]:
    """The (test, reason) skips the policy refuses: on the example data, every one."""
    return [(test, why) for test, why in skipped if example or not why.startswith(DATA_SKIPS)]


class SkipPolicy:
    """Fails the session (exit 1) on an unexpected skip, naming each after the summary."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            why = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            self.skipped.append((report.nodeid, why.removeprefix("Skipped: ")))

    def refused(self) -> list[tuple[str, str]]:
        return unexpected_skips(self.skipped, example_missing() is None)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.refused() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        refused = self.refused()
        if refused:
            terminalreporter.section("unexpected skips (tests/conftest.py: skip policy)", red=True)
            for test, why in refused:
                terminalreporter.write_line(f"{test}: {why}")
            terminalreporter.write_line(
                "a skipped test protects nothing: make it run here, or fix what skips it"
            )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipPolicy(), "gitml-skip-policy")


@pytest.fixture(scope="session")
def raw_path() -> Path:
    if not RAW_DATA.exists():
        pytest.fail(f"{RAW_DATA} is missing: run `make data` (the suite needs the real data)")
    return RAW_DATA


@pytest.fixture(scope="session")
def params() -> dict[str, Any]:
    return {
        name: load_params(name, PARAMS_FILE)
        for name in ("data", "split", "features", "train", "evaluate")
    }


@pytest.fixture
def raw(raw_path: Path) -> pd.DataFrame:
    """A fresh copy of the raw table for each test, free to mutate."""
    return read_raw(raw_path)


@pytest.fixture(scope="session")
def clean_table(raw_path: Path, params: dict[str, Any]) -> pd.DataFrame:
    return clean(read_raw(raw_path), params["data"])


@pytest.fixture(scope="session")
def splits(clean_table: pd.DataFrame, params: dict[str, Any]) -> dict[str, pd.DataFrame]:
    split = params["split"]
    return split_by_time(clean_table, split["test_from"], split["production_from"])


@pytest.fixture(scope="session")
def trained_model(splits: dict[str, pd.DataFrame], params: dict[str, Any]) -> Any:
    """The pipeline trained with the committed params (seconds), independent of `make run`."""
    from gitml.pipeline.train import fit

    pipeline, _ = fit(splits["train"], params["features"], params["train"])
    return pipeline


@pytest.fixture(scope="session")
def packaged_model(
    trained_model: Any, splits: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """That pipeline saved with MLEM, as the package stage does."""
    from gitml.config import GOLDEN_FILE
    from gitml.files import write_json
    from gitml.schema import as_model_input
    from gitml.serving.golden import golden_cases, golden_rows
    from gitml.serving.packaging import save_model

    path = tmp_path_factory.mktemp("mlem") / "model"
    save_model(trained_model, as_model_input(splits["train"].head(50)), path)
    golden = golden_cases(trained_model, golden_rows(splits["test"]))
    write_json(path.parent / GOLDEN_FILE, golden)
    return path


@dataclass
class Served:
    """A running server and the model it must agree with."""

    url: str
    model: Any
    version: str
    golden_dir: Path
    log_dir: Path  # where the server appends its prediction log
    metrics_url: str  # the metrics port (GET /metrics)
    output: Path  # the server's stdout and stderr: its access log
    synthetic_token: str  # GITML_SYNTHETIC_TOKEN: marks a request synthetic
    pid: int | None = None  # the server process, where it runs on this host's process table
    container: str = ""  # the image's: podman's name for the container it runs in


def drain(process: subprocess.Popen[str], output: Path) -> None:
    """Copy a child's output to a file as it comes: a pipe nobody reads fills up (64 KiB of
    access-log lines) and then blocks the server's next write, and with it its event loop."""
    source = process.stdout
    assert source is not None

    def copy() -> None:
        with open(output, "a") as sink:
            for line in source:
                sink.write(line)
                sink.flush()

    threading.Thread(target=copy, daemon=True).start()


@contextmanager
def running_server(
    packaged_model: Path, trained_model: Any, directory: Path, **settings: str
) -> Iterator[tuple[Served, subprocess.Popen[str]]]:
    """A real server process (`python -m gitml serve`) on spare loopback ports, with extra
    `settings` (e.g. read_timeout_s="2" sets GITML_READ_TIMEOUT_S)."""
    from gitml.serving.packaging import model_hash

    # The server inherits sockets already listening on spare ports: no other process can take
    # a port between choosing it and the server binding it.
    listener, scraped = reserve_port(), reserve_port()
    log_dir, output = directory / "predictions", directory / "server.log"
    token = secrets.token_hex(16)
    env = {**os.environ, "GITML_MODEL_PATH": str(packaged_model),
           "GITML_FD": str(listener.fileno()), "GITML_METRICS_FD": str(scraped.fileno()),
           "GITML_PREDICTION_LOG_DIR": str(log_dir), "GITML_SYNTHETIC_TOKEN": token,
           **{f"GITML_{name.upper()}": value for name, value in settings.items()}}  # fmt: skip
    env["MLEM_NO_ANALYTICS"] = "true"
    process = subprocess.Popen(
        [sys.executable, "-m", "gitml", "serve"], env=env,
        pass_fds=(listener.fileno(), scraped.fileno()),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    drain(process, output)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    metrics_url = f"http://127.0.0.1:{scraped.getsockname()[1]}"
    try:
        wait_until_healthy(url, process, timeout=120, output=output)
        served = Served(url, trained_model, model_hash(packaged_model), packaged_model.parent,
                        log_dir, metrics_url, output, token, process.pid)  # fmt: skip
        yield served, process
    finally:
        process.terminate()
        process.wait(timeout=20)
        listener.close()
        scraped.close()


@pytest.fixture(scope="session")
def process_server(
    packaged_model: Path, trained_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A real server process (`python -m gitml serve`) on a free loopback port."""
    directory = tmp_path_factory.mktemp("server")
    with running_server(packaged_model, trained_model, directory) as (served, _):
        yield served


@pytest.fixture(scope="session")
def built_image() -> str:
    """`make image`: the serving image built from the Dockerfile (the pipeline runs first)."""
    result = subprocess.run(["make", "image"], cwd=PROJ_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"make image failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    from gitml.release.image import IMAGE

    return IMAGE


@pytest.fixture(scope="session")
def image_server(built_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The image's own entrypoint in a container locked down as the Deployment's pod runs it
    (tests/release/lockdown.py: read-only root, /tmp a tmpfs, uid 10001, no capabilities), its
    prediction log on a host directory mounted as the log volume, on spare loopback ports."""
    from gitml.config import MLEM_MODEL
    from gitml.release.image import image_config
    from gitml.serving.packaging import load_model
    from tests.release.lockdown import locked_down

    token = secrets.token_hex(16)
    log_dir = tmp_path_factory.mktemp("image-predictions")
    log_dir.chmod(0o777)  # the image's user (uid 10001) writes there
    output = log_dir.parent / f"{log_dir.name}.log"
    version = image_config(built_image)["Labels"]["org.opencontainers.image.version"]
    with locked_down(built_image, log_dir, {"GITML_SYNTHETIC_TOKEN": token}) as container:
        drain(container.process, output)
        url = f"http://127.0.0.1:{container.ports['http']}"
        wait_until_healthy(url, container.process, timeout=180, output=output)
        yield Served(url, load_model(MLEM_MODEL), version, MLEM_MODEL.parent, log_dir,
                     f"http://127.0.0.1:{container.ports['metrics']}", output, token,
                     container=container.name)  # fmt: skip


@pytest.fixture(scope="session", params=["process", pytest.param("image", marks=pytest.mark.slow)])
def served(request: pytest.FixtureRequest) -> Served:
    """Every API test runs against the server process and against the built image."""
    return request.getfixturevalue(f"{request.param}_server")  # type: ignore[no-any-return]


def wait_until_healthy(
    url: str, process: subprocess.Popen[str], timeout: float, output: Path | None = None
) -> None:
    """Until `url` answers /healthz; `output`: where the server's output is drained to."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            time.sleep(0.5)  # the drain's last lines
            if output is not None:
                said = output.read_text() if output.exists() else ""
            else:
                said = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the server exited with {process.returncode}:\n{said}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:  # refused, or queued on the socket while the model loads
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} was not healthy within {timeout} s")


@pytest.fixture
def github_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[fake_github.FakeGitHub]:
    """The GitHub API stand-in (tests/fake_github.py), reachable from this process and from
    the processes it starts; urllib's process-wide opener is rebuilt so it sees the proxy."""
    import urllib.request

    directory = tmp_path / "fake-github"
    directory.mkdir()
    for github in fake_github.serve(directory):
        for name, value in github.environment().items():
            monkeypatch.setenv(name, value)
        # github.com's API, as the code defaults to (a workflow run on an Enterprise host,
        # such as the harness's nested `make test`, sets these to its own)
        for name in ("GITHUB_API_URL", "GITHUB_SERVER_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(urllib.request, "_opener", None)
        yield github
