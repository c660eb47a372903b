"""Each scenario module gets its own fork: a fresh clone pushed to a bare origin, its own
GitHub stand-in and runner HOME, all under a folder the runner user may read."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.release.test_audit import ADVISORIES, osv_serving
from tests.workflows.github import FakeGitHub
from tests.workflows.harness import Runner, fresh_fork, person_git_options

# Capitals on purpose: GitHub keeps them in github.repository; image names must be lowercase.
REPOSITORY = "Acme/Bike-Demand"


@dataclass
class Fork:
    clone: Path  # the working copy events run in (act copies it for each job)
    origin: Path  # the bare repository standing in for github.com/Acme/Bike-Demand
    github: FakeGitHub
    runner: Runner

    def git(self, *args: str) -> str:
        """git in the clone as the runner user; a person's commits carry their identity, and
        their pushes and fetches their token."""
        identity = ["-c", "user.name=Dana Scientist", "-c", "user.email=dana@example.com"]
        token = person_git_options(self.github)
        return self.runner.as_runner("git", *identity, *token, *args, cwd=self.clone).strip()

    def origin_tags(self) -> list[str]:
        from tests.e2e.clone import run

        return run("git", "tag", "--list", cwd=self.origin).split()


@pytest.fixture(scope="session")
def osv_dev() -> Iterator[str]:
    """osv.dev's query API, which `make audit` asks on GitHub, with the published advisories."""
    with osv_serving(ADVISORIES) as url:
        yield url


@pytest.fixture(scope="module")
def fork(osv_dev: str) -> Iterator[Fork]:
    base = Path(tempfile.mkdtemp(prefix="gitml-act-"))
    base.chmod(0o755)
    try:
        with FakeGitHub(base, REPOSITORY) as github:
            (base / "runner").mkdir()
            (base / "fork").mkdir()
            runner = Runner(base / "runner", github, osv_dev)
            clone, origin = fresh_fork(base / "fork", runner, REPOSITORY)
            yield Fork(clone, origin, github, runner)
    finally:
        if not os.environ.get("GITML_KEEP_ACT"):  # set it to read the act logs afterwards
            shutil.rmtree(base, ignore_errors=True)
