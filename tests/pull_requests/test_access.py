"""gitml.pull_requests.access: a fork's run cannot read a remote that needs credentials, and
says so; everyone else tries."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitml.config import PROJ_ROOT
from gitml.pull_requests.access import decide, default_remote, dvc_config, missing_credentials


def project(tmp_path: Path, config: str, local: str = "") -> Path:
    (tmp_path / ".dvc").mkdir(parents=True)
    (tmp_path / ".dvc" / "config").write_text(config)
    if local:
        (tmp_path / ".dvc" / "config.local").write_text(local)
    return tmp_path


def test_the_projects_own_config_names_the_bundled_remote() -> None:
    assert default_remote(PROJ_ROOT) == "../.dvc-storage"


def test_the_config_as_dvc_remote_add_writes_it(tmp_path: Path) -> None:
    # written by `dvc remote add -d storage s3://team/dvc` and `dvc remote modify`
    text = ("[core]\n    remote = storage\n    analytics = false\n"
            "['remote \"storage\"']\n    url = s3://team/dvc\n    endpointurl = http://x:9000\n")  # fmt: skip
    assert dvc_config(text)['remote "storage"'] == {"url": "s3://team/dvc",
                                                      "endpointurl": "http://x:9000"}  # fmt: skip
    assert default_remote(project(tmp_path, text)) == "s3://team/dvc"


def test_the_local_config_overrides_and_no_default_is_empty(tmp_path: Path) -> None:
    text = "[core]\n    remote = a\n['remote \"a\"']\n    url = gs://one\n['remote \"b\"']\n    url = azure://two\n"
    assert (
        default_remote(project(tmp_path / "p", text, "[core]\n    remote = b\n")) == "azure://two"
    )
    assert default_remote(project(tmp_path / "q", "[core]\n    analytics = false\n")) == ""


@pytest.mark.parametrize(
    ("url", "is_fork", "readable"),
    [
        ("s3://team/dvc", "true", False),
        ("gs://team/dvc", "true", False),
        ("azure://container/dvc", "true", False),
        ("ssh://host/dvc", "true", False),
        ("S3://team/dvc", "true", False),
        ("https://data.example/dvc", "true", True),  # anyone may read it
        ("../.dvc-storage", "true", True),  # the bundled remote, in the checkout
        ("s3://team/dvc", "false", True),  # the repository's own run: its secrets
        ("s3://team/dvc", "", True),
    ],
)
def test_only_a_fork_is_kept_from_a_remote_that_needs_credentials(
    url: str, is_fork: str, readable: bool
) -> None:
    access = decide(url, {"IS_FORK": is_fork})
    assert access.readable is readable and access.remote == url
    if not readable:
        assert access.reason == (
            "this pull request comes from a fork, and GitHub gives a fork's run no secrets, so "
            f"the team's DVC remote ({url}) cannot be read: the data cannot be pulled"
        )


@pytest.mark.parametrize(
    ("url", "env", "secret"),
    [
        ("s3://b/p", {}, "DVC_READ_AWS_ACCESS_KEY_ID and DVC_READ_AWS_SECRET_ACCESS_KEY"),
        ("gs://b/p", {"AWS_ACCESS_KEY_ID": "x"}, "DVC_READ_GCP_CREDENTIALS"),
        ("azure://c/p", {"AWS_ACCESS_KEY_ID": "x"}, "DVC_READ_AZURE_CONNECTION_STRING"),
    ],
)
def test_a_missing_credential_names_the_secret(url: str, env: dict[str, str], secret: str) -> None:
    assert missing_credentials(url, env).endswith(f"set the repository secrets {secret}")


@pytest.mark.parametrize(
    ("url", "env"),
    [("s3://b/p", {"AWS_ACCESS_KEY_ID": "x"}), ("gs://b/p", {"GOOGLE_APPLICATION_CREDENTIALS_DATA": "{}"}),
     ("azure://c/p", {"AZURE_STORAGE_CONNECTION_STRING": "x"}), ("../.dvc-storage", {}),
     ("https://d/p", {})],
)  # fmt: skip
def test_credentials_present_or_needless_warn_nothing(url: str, env: dict[str, str]) -> None:
    assert missing_credentials(url, env) == ""


def run_access(tmp_path: Path, cwd: Path, **env: str) -> tuple[dict[str, str], str, str]:
    outputs, summary = tmp_path / "outputs", tmp_path / "summary.md"
    done = subprocess.run(
        ["make", "-s", "-C", str(PROJ_ROOT), "data-access", f"STDLIB_PYTHON={sys.executable}"],
        cwd=cwd, capture_output=True, text=True, check=False,
        env={"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(outputs),
             "GITHUB_STEP_SUMMARY": str(summary), **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    return values, done.stdout, summary.read_text() if summary.exists() else ""


def test_make_data_access_on_this_checkout_says_readable(tmp_path: Path) -> None:
    values, log, summary = run_access(tmp_path, PROJ_ROOT, IS_FORK="true")
    assert values == {"readable": "true", "remote": "../.dvc-storage", "reason": ""}
    assert "can be read from this run" in log and summary == ""


def test_a_forks_check_says_what_did_not_run_and_why(tmp_path: Path) -> None:
    fork = project(
        tmp_path / "fork", "[core]\n    remote = s\n['remote \"s\"']\n    url = s3://t/d\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "gitml", "data-access"], cwd=fork, capture_output=True,
        text=True, check=False,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(PROJ_ROOT / "src"), "IS_FORK": "true",
             "GITHUB_OUTPUT": str(tmp_path / "o"), "GITHUB_STEP_SUMMARY": str(tmp_path / "s")},
    )  # fmt: skip
    assert done.returncode == 0
    assert "readable=false" in (tmp_path / "o").read_text()
    assert "::notice title=Data not pulled::this pull request comes from a fork" in done.stdout
    assert (
        "training and the model report did not run; lint and the dependency audit did"
        in done.stdout
    )
    assert (tmp_path / "s").read_text().startswith("### Not run: tests, training, model report")
    same_repo = subprocess.run(
        [sys.executable, "-m", "gitml", "data-access"], cwd=fork, capture_output=True,
        text=True, check=False,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(PROJ_ROOT / "src"), "IS_FORK": "false"},
    )  # fmt: skip
    assert (
        "::warning title=DVC remote credentials::no credentials for the DVC remote s3://t/d"
        in same_repo.stdout
    )
