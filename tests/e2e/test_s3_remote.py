"""dvc push/pull against a real S3-protocol server (moto's) on loopback: how a team's cloud
remote behaves, end to end, without a cloud account."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitml.config import PROJ_ROOT
from gitml.pipeline.validate import RAW_DATA
from tests.e2e.clone import run
from tests.e2e.moto import moto_s3

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


def test_push_then_pull_through_s3(s3_endpoint: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    project = tmp_path / "project"
    shutil.copytree(PROJ_ROOT / "data", project / "data")
    shutil.copy(PROJ_ROOT / "data.dvc", project / "data.dvc")
    run("dvc", "init", "--no-scm", "-q", cwd=project, env=env)
    # the README's switch to S3, verbatim but for the loopback endpoint
    run("dvc", "remote", "add", "-d", "storage", "s3://team-bucket/dvc", cwd=project, env=env)
    run("dvc", "remote", "modify", "storage", "endpointurl", s3_endpoint, cwd=project, env=env)
    import boto3  # moto's dependency; creates the bucket a team would already have

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing",
                 ).create_bucket(Bucket="team-bucket")  # fmt: skip
    run("dvc", "commit", "-q", "-f", "data.dvc", cwd=project, env=env)
    assert "pushed" in run("dvc", "push", "data.dvc", cwd=project, env=env)

    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    run("dvc", "pull", "data.dvc", cwd=project, env=env)
    assert (project / "data" / RAW_DATA.name).read_bytes() == (RAW_DATA).read_bytes()


def test_pull_without_credentials_names_the_problem(s3_endpoint: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    shutil.copy(PROJ_ROOT / "data.dvc", project / "data.dvc")
    run("dvc", "init", "--no-scm", "-q", cwd=project, env=env)
    run("dvc", "remote", "add", "-d", "storage", "s3://team-bucket/dvc", cwd=project, env=env)
    run("dvc", "remote", "modify", "storage", "endpointurl", s3_endpoint, cwd=project, env=env)
    result = subprocess.run(
        ["dvc", "pull", "data.dvc"], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "credentials" in (result.stdout + result.stderr).lower()
