"""The example's tests keep running on the example grown by its own feedback, and the skip
policy refuses any skip on the example (tests/example_data.py, tests/conftest.py)."""

import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from gitml import dataset
from gitml.config import PROJ_ROOT
from gitml.monitoring.feedback import add_version, collect
from gitml.pipeline.data import FILE_NAME, is_example
from tests.conftest import DATA_SKIPS, unexpected_skips
from tests.example_data import EXAMPLE_ONLY, example_missing, example_only
from tests.monitoring.test_feedback import label, serve

EXAMPLE_TESTS = sorted(
    path.relative_to(PROJ_ROOT).as_posix()
    for path in (PROJ_ROOT / "tests").rglob("test_*.py")
    if "\n@example_only\n" in path.read_text()
)


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project whose data is the example plus a feedback version, as `make
    feedback` (or a retraining pull request) makes it: production rows served again a year on
    (52 weeks: the same weekdays), labelled, collected and `dvc add`ed."""
    work = tmp_path_factory.mktemp("grown")
    project = work / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("src", "tests"):
        shutil.copytree(PROJ_ROOT / part, project / part, ignore=ignore)
    for name in ("pyproject.toml", "params.yaml"):
        shutil.copy2(PROJ_ROOT / name, project / name)
    raw = PROJ_ROOT / "data" / dataset.RAW_FILE
    (project / "data").mkdir()
    shutil.copy2(raw, project / "data" / dataset.RAW_FILE)
    python = [sys.executable, "-m", "dvc"]
    run("git", "init", "-q", cwd=project)
    run(*python, "init", "-q", cwd=project)
    run(*python, "add", "-q", "data", cwd=project)
    assert is_example(project)  # data.dvc as a fresh clone of the example has it

    table = dataset.clean(pd.read_csv(raw), {"year": 2011})
    stream = table.sort_values(dataset.TIME).tail(48).reset_index(drop=True)
    stream[dataset.TIME] += timedelta(weeks=52)
    ids = serve(work, stream)
    label(work, ids, stream)
    rows, new = collect(work / "predictions", work / "actuals", None, None, project / "data")
    assert len(new) == len(rows) == 48
    add_version(new, project / "data", push=False)
    return project


@example_only
def test_the_example_grown_by_feedback_is_still_the_example(grown: Path) -> None:
    assert list((grown / "data" / "feedback").glob("*.parquet"))
    assert not is_example(grown)  # data.dvc changed: keyed on it, the example's tests skipped
    assert example_missing(grown) is None
    assert example_missing(PROJ_ROOT) is None  # and this checkout holds the example


@example_only
@pytest.mark.slow  # pytest in a subprocess collects every example-only module (20 s)
def test_the_example_only_tests_do_not_skip_on_the_grown_example(grown: Path) -> None:
    """pytest plans each example-only test in the grown copy (its own gitml, PROJ_ROOT there):
    skip marks are decided at set-up, which --setup-plan goes through without running them."""
    assert len(EXAMPLE_TESTS) >= 8, EXAMPLE_TESTS
    env = {**os.environ, "PYTHONPATH": str(grown / "src")}
    where = run(sys.executable, "-c", "import gitml.config as c; print(c.PROJ_ROOT)", cwd=grown,
                env=env)  # fmt: skip
    assert Path(where.strip()) == grown
    planned = run(sys.executable, "-m", "pytest", "--setup-plan", "-q", "-rs", "-p",
                  "no:cacheprovider", "-p", "no:randomly", *EXAMPLE_TESTS, cwd=grown, env=env)  # fmt: skip
    assert "SKIPPED" not in planned and "skipped" not in planned.splitlines()[-1], planned[-3000:]
    for path in EXAMPLE_TESTS:
        assert re.search(rf"^\s+{re.escape(path)}::", planned, re.M), f"{path} not planned"


def test_a_fork_with_other_data_skips_them_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset, "RAW_FILE", FILE_NAME)  # the example's name, other data in it
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / FILE_NAME).write_text("a,b\n1,2\n")
    assert example_missing(tmp_path) == f"data/{FILE_NAME} is not the example's file"
    assert example_missing(tmp_path / "not-pulled-yet") is None  # then `make data` is asked for
    monkeypatch.setattr(dataset, "RAW_FILE", "sales.csv")  # a spec for other data
    assert example_missing(tmp_path) == (
        f"the dataset spec reads data/sales.csv, not the example's {FILE_NAME}"
    )


def test_on_the_example_every_skip_fails_the_run_elsewhere_only_the_datas() -> None:
    data_skip = ("tests/x.py::test_a", f"{EXAMPLE_ONLY}data/x.csv is not the example's file")
    spec_skip = ("tests/x.py::test_b", DATA_SKIPS[1])
    other = ("tests/x.py::test_c", "promtool is not installed")
    skipped = [data_skip, spec_skip, other]
    assert unexpected_skips(skipped, example=True) == skipped
    assert unexpected_skips(skipped, example=False) == [other]
    assert unexpected_skips([], example=True) == []
