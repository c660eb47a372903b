"""A fresh clone of the project as it stands, built and run once per session."""

from pathlib import Path

import pytest

from tests.e2e.clone import clean_env, make_clone, run


@pytest.fixture(scope="session")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clone(tmp_path_factory.mktemp("e2e") / "clone")


@pytest.fixture(scope="session")
def ran_clone(fresh_clone: Path) -> tuple[Path, str]:
    """The clone after the README's first command, `make run`, and what it printed."""
    output = run("make", "run", cwd=fresh_clone, env=clean_env())
    return fresh_clone, output
