"""A team that follows README "Use your own remote": the DVC remote is S3 (moto's S3 server on
loopback), which nobody reads without credentials. A pull request from the repository gets the
read-only secrets and goes green, checks and training; a pull request from a fork gets no
secret (GitHub's rule, which the harness applies) and goes green too, saying what did not run
and why, instead of failing on a `dvc pull` it could never do."""

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from gitml.config import PROJ_ROOT
from tests.e2e.clone import run
from tests.e2e.moto import moto_s3
from tests.workflows import events
from tests.workflows.conftest import REPOSITORY, Fork
from tests.workflows.harness import Result
from tests.workflows.test_pull_request import push_experiment

pytestmark = [pytest.mark.slow, pytest.mark.workflows, pytest.mark.beside]

BUCKET = "team-bucket"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# the repository's secrets: read-only credentials for the pull request jobs (docs/adopt.md)
READ_SECRETS = {"DVC_READ_AWS_ACCESS_KEY_ID": "testing",
                "DVC_READ_AWS_SECRET_ACCESS_KEY": "testing"}  # fmt: skip
# the checks job's own `make test` runs one small module: the suite runs it everywhere else
NESTED = {"PYTEST_ARGS": "tests/test_schema.py", "WORKFLOW_TESTS": ""}
PR, FORK_PR, FORK_REPO = 11, 12, "someone/Bike-Demand"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_s3() as endpoint:
        import boto3  # moto's dependency: the bucket a team would already have

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     **{k.lower(): v for k, v in KEYS.items()}).create_bucket(Bucket=BUCKET)  # fmt: skip
        yield endpoint


@pytest.fixture(scope="module")
def team(fork: Fork, s3: str) -> Fork:
    """The README's switch to S3, committed, and the data pushed to the bucket."""
    dvc = str(PROJ_ROOT / ".venv" / "bin" / "dvc")
    clone = fork.clone
    venv = {**os.environ, "PATH": f"{PROJ_ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    run(str(PROJ_ROOT / ".venv" / "bin" / "python"), "-m", "gitml", "data", "--project",
        str(clone), cwd=clone, env=venv)  # the data, from the bundled remote  # fmt: skip
    for args in (["remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc"],
                 ["remote", "modify", "storage", "endpointurl", s3],
                 ["remote", "modify", "storage", "region", "us-east-1"]):  # fmt: skip
        run(dvc, *args, cwd=clone)
    run(dvc, "push", "-q", "data.dvc", cwd=clone, env={**venv, **KEYS})
    fork.runner.give_to_runner(clone)
    fork.git("commit", "-qam", "Use the team's S3 remote")
    fork.git("push", "-q", "origin", "main")
    return fork


def pull_request(
    team: Fork, number: int, head_repo: str, run_id: int, job: str | None = None,
    label: str | None = None,
) -> Result:  # fmt: skip
    """pr.yml for the PR at the clone's HEAD, as GitHub starts it (verbose: act says what it
    skipped)."""
    head, base = team.git("rev-parse", "HEAD"), team.git("rev-parse", "origin/main")
    team.github.add_pull(number, head, head_repo)
    payload = events.pull_request("labeled" if label else "opened", number, REPOSITORY,
                                  head_repo, head, base, [label] if label else [], label)  # fmt: skip
    return team.runner.act(team.clone, "pull_request", payload, "pr.yml", job=job,
                           env={"GITHUB_RUN_ID": str(run_id), **NESTED},
                           secrets=READ_SECRETS, verbose=True)  # fmt: skip


@dataclass
class Runs:
    same_repo: Result
    fork: Result
    fork_labelled: Result


@pytest.fixture(scope="module")
def runs(team: Fork) -> Runs:
    push_experiment(team, r"\1 5", "Try seed 5 on the team's data")
    same_repo = pull_request(team, PR, REPOSITORY, 1101)
    # the same head, proposed from a fork: GitHub passes it no secret (the harness drops them)
    fork = pull_request(team, FORK_PR, FORK_REPO, 1102)
    labelled = pull_request(team, FORK_PR, FORK_REPO, 1103, job="train", label="safe-to-train")
    team.git("checkout", "-q", "main")
    return Runs(same_repo, fork, labelled)


def test_a_same_repository_pull_request_checks_and_trains_with_the_read_secrets(
    team: Fork, runs: Runs
) -> None:
    result = runs.same_repo
    assert result.succeeded("checks"), result.job_output("checks")[-6000:]
    assert "data: data pulled" in result.job_output("checks")
    assert result.succeeded("train"), result.job_output("train")[-6000:]
    report = team.runner.artifacts / "1101" / "pr-report" / "report.md"
    assert report.read_text().startswith("## Model report")


def test_a_fork_pull_request_is_green_and_says_what_did_not_run(runs: Runs) -> None:
    result = runs.fork
    assert result.returncode == 0, result.output[-6000:]
    assert result.succeeded("checks"), result.job_output("checks")[-6000:]
    said = result.job_output("checks")
    assert (
        "::notice title=Data not pulled::this pull request comes from a fork, and GitHub " in said
    )
    assert f"the team's DVC remote (s3://{BUCKET}/dvc) cannot be read" in said
    assert "the tests (they need the data), training and the model report did not run" in said
    assert "pre-commit run --all-files" in said  # lint ran
    assert result.skipped("pick-runner") and result.skipped("train")


def test_a_labelled_fork_that_cannot_read_the_data_is_not_trained_and_says_so(
    runs: Runs,
) -> None:
    result = runs.fork_labelled
    assert result.returncode == 0, result.output[-6000:]
    assert result.succeeded("pick-runner"), result.job_output("pick-runner")[-4000:]
    said = result.job_output("pick-runner")
    assert "train=false" in said
    assert "::notice title=Not trained::this pull request comes from a fork" in said
    assert result.skipped("train")
