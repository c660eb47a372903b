import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gitml.config import PROJ_ROOT
from gitml.pull_requests.access import Access
from gitml.pull_requests.runner import CLOUD_LABELS, GITHUB_HOSTED, GPU_SYNC_ARGS, choose, main
from tests.workflows.github import FakeGitHub

GPU = json.dumps(["self-hosted", "gpu"])
SAME_REPO = {"IS_FORK": "false"}


@pytest.mark.parametrize(
    ("env", "online", "kind", "reason"),
    [
        ({"IS_FORK": "true", "GPU_RUNNER_LABELS": GPU}, [{"self-hosted", "gpu"}], "github-hosted", "pull request from a fork"),
        ({"GPU_RUNNER_LABELS": GPU}, [{"self-hosted", "gpu"}], "github-hosted", "IS_FORK not set"),
        ({**SAME_REPO}, None, "github-hosted", "no GPU runner configured"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": GPU}, [{"self-hosted", "gpu", "linux"}], "self-hosted", "GPU runner online"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": GPU}, [{"self-hosted", "cpu"}], "github-hosted", "no runner with labels ['self-hosted', 'gpu'] is online"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": GPU}, None, "github-hosted", "GPU runner configured but RUNNER_CHECK_TOKEN is not set to confirm it is online"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": GPU, "GPU_RUNNER_SKIP_CHECK": "true"}, None, "self-hosted", "runner labels configured"),
        # skipping the online check never hands a fork (or an unknown origin) the GPU runner
        ({"IS_FORK": "true", "GPU_RUNNER_LABELS": GPU, "GPU_RUNNER_SKIP_CHECK": "true"}, None, "github-hosted", "pull request from a fork"),
        ({"GPU_RUNNER_LABELS": GPU, "GPU_RUNNER_SKIP_CHECK": "true"}, None, "github-hosted", "IS_FORK not set"),
        # only the exact string "true" skips the check
        ({**SAME_REPO, "GPU_RUNNER_LABELS": GPU, "GPU_RUNNER_SKIP_CHECK": "yes"}, None, "github-hosted", "GPU runner configured but RUNNER_CHECK_TOKEN is not set to confirm it is online"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": f" {GPU} "}, [{"self-hosted", "gpu"}], "self-hosted", "GPU runner online"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": "  "}, None, "github-hosted", "no GPU runner configured"),
        ({**SAME_REPO, "CML_CLOUD": "aws"}, None, "cloud", "launching a aws GPU runner"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": GPU, "CML_CLOUD": "aws"}, [], "cloud", "launching a aws GPU runner"),
    ],
)  # fmt: skip
def test_choose(
    env: dict[str, str], online: list[set[str]] | None, kind: str, reason: str
) -> None:
    choice = choose(env, online)
    assert choice.kind == kind
    assert choice.reason == reason
    expected = {"github-hosted": GITHUB_HOSTED, "cloud": CLOUD_LABELS}.get(kind, json.loads(GPU))
    assert choice.runs_on == expected
    assert choice.train is True
    # GPU runners install CUDA XGBoost (the `gpu` extra) for every make target of the job
    assert choice.sync_args == ("" if kind == "github-hosted" else GPU_SYNC_ARGS)


def test_a_failed_runner_check_falls_back_to_a_hosted_runner_saying_why() -> None:
    env = {**SAME_REPO, "GPU_RUNNER_LABELS": GPU}
    choice = choose(env, None, check_failed="GitHub answered 401 Unauthorized")
    assert (choice.kind, choice.runs_on) == ("github-hosted", GITHUB_HOSTED)
    assert choice.reason == "the runner check failed: GitHub answered 401 Unauthorized"
    # a cloud runner, when one is configured, is still launched
    assert choose({**env, "CML_CLOUD": "gcp"}, None, check_failed="x").kind == "cloud"


@pytest.mark.parametrize("is_fork", ["true", ""])
def test_a_fork_that_cannot_read_the_data_trains_nowhere(is_fork: str) -> None:
    unreadable = Access(False, "s3://team/dvc", "the remote needs credentials")
    choice = choose({"IS_FORK": is_fork, "GPU_RUNNER_LABELS": GPU}, None, unreadable)
    assert choice.train is False
    assert choice.reason == "not trained: the remote needs credentials"
    assert (choice.runs_on, choice.kind) == (GITHUB_HOSTED, "github-hosted")
    readable = choose({"IS_FORK": is_fork}, None, Access(True, "../.dvc-storage", ""))
    assert readable.train is True and readable.kind == "github-hosted"


def test_a_same_repository_run_trains_whatever_the_access_check_says() -> None:
    # (the check only ever says "unreadable" for a fork; a same-repo run tries with its secrets)
    assert choose(SAME_REPO, None, Access(False, "s3://x", "")).train is True


@pytest.mark.parametrize("labels", ["gpu", '{"a": 1}', "[1, 2]"])
def test_malformed_labels_name_the_variable(labels: str) -> None:
    with pytest.raises(ValueError, match="GPU_RUNNER_LABELS"):
        choose({**SAME_REPO, "GPU_RUNNER_LABELS": labels}, [])


# --- main, against GitHub's API on loopback ---------------------------------------------------

REPOSITORY = "Team/project"


def runner(name: str, status: str, *labels: str) -> dict[str, object]:
    return {"name": name, "status": status, "labels": [{"name": x} for x in labels]}


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path, REPOSITORY) as server:
        server.add_token("t0ken", {"administration": "read"})
        yield server


# the settings the runner step reads; each run below sees only those it is given
RUNNER_SETTINGS = ("IS_FORK", "GPU_RUNNER_LABELS", "GPU_RUNNER_SKIP_CHECK", "CML_CLOUD",
                   "RUNNER_CHECK_TOKEN", "GITHUB_REPOSITORY", "GITHUB_API_URL", "GITHUB_OUTPUT",
                   "GITHUB_STEP_SUMMARY", "SSL_CERT_FILE", "HTTPS_PROXY", "https_proxy")  # fmt: skip


def main_here(
    env: dict[str, str], cwd: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:  # fmt: skip
    """runner.main() in this process, in `cwd`, seeing of RUNNER_SETTINGS only those in `env`:
    its log (stdout and stderr)."""
    with monkeypatch.context() as patch:
        for name in RUNNER_SETTINGS:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(cwd)
        patch.setattr(urllib.request, "_opener", None)  # no opener built for an earlier test
        capsys.readouterr()
        main()
        out, err = capsys.readouterr()
    return out + err


Pick = Callable[..., tuple[dict[str, str], str]]


@pytest.fixture(params=["make", "in-process"])
def pick(
    request: pytest.FixtureRequest, github: FakeGitHub, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> Pick:  # fmt: skip
    """`make pick-runner` as pr.yml runs it, or its main() in this process with the same settings
    (what `make mutation` runs: mutmut's copy of the project has no Makefile): a function of the
    settings that gives the step outputs and the log, which prints them first."""

    def run(**settings: str) -> tuple[dict[str, str], str]:
        outputs = tmp_path / "outputs"
        outputs.unlink(missing_ok=True)
        env = {"GITHUB_OUTPUT": str(outputs), "GITHUB_REPOSITORY": REPOSITORY,
               "GITHUB_API_URL": f"https://{github.host}/api/v3",
               "SSL_CERT_FILE": str(github.ca_file), "IS_FORK": "false", **settings}  # fmt: skip
        if request.param == "in-process":
            log = main_here(env, PROJ_ROOT, monkeypatch, capsys)
        else:
            done = subprocess.run(
                ["make", "-s", "pick-runner", f"STDLIB_PYTHON={sys.executable}"], cwd=PROJ_ROOT,
                env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True,
                check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            log = done.stdout + done.stderr
        printed = outputs.read_text()
        assert log.startswith(printed), log
        return dict(line.split("=", 1) for line in printed.splitlines()), log

    return run


def test_the_repositorys_online_runner_is_chosen(github: FakeGitHub, pick: Pick) -> None:
    github.state.runners = [runner("gpu-box", "online", "self-hosted", "gpu"),
                            runner("old-box", "offline", "self-hosted", "gpu")]  # fmt: skip
    values, _ = pick(GPU_RUNNER_LABELS=GPU, RUNNER_CHECK_TOKEN="t0ken")
    assert values == {"runs-on": GPU, "kind": "self-hosted", "reason": "GPU runner online",
                      "train": "true", "sync-args": GPU_SYNC_ARGS}  # fmt: skip


def test_an_offline_runner_is_not(github: FakeGitHub, pick: Pick) -> None:
    github.state.runners = [runner("gpu-box", "offline", "self-hosted", "gpu")]
    values, _ = pick(GPU_RUNNER_LABELS=GPU, RUNNER_CHECK_TOKEN="t0ken")
    assert values["kind"] == "github-hosted" and values["sync-args"] == ""
    assert values["reason"] == "no runner with labels ['self-hosted', 'gpu'] is online"


def test_the_organisations_runners_count_when_the_token_may_list_them(
    github: FakeGitHub, pick: Pick
) -> None:
    github.state.org_runners = [runner("shared-gpu", "online", "self-hosted", "gpu")]
    values, _ = pick(GPU_RUNNER_LABELS=GPU, RUNNER_CHECK_TOKEN="t0ken")
    assert values["kind"] == "github-hosted"  # this token may not list them: not counted
    github.add_token("org-t0ken", {"administration": "read"},
                     org_permissions={"self_hosted_runners": "read"})  # fmt: skip
    values, _ = pick(GPU_RUNNER_LABELS=GPU, RUNNER_CHECK_TOKEN="org-t0ken")
    assert values["kind"] == "self-hosted" and values["reason"] == "GPU runner online"


@pytest.mark.parametrize(
    ("token", "hint"),
    [("expired", "401 Unauthorized (is RUNNER_CHECK_TOKEN expired or revoked?)"),
     ("weak", "403 Forbidden (RUNNER_CHECK_TOKEN needs Administration: read on this repository)")],
)  # fmt: skip
def test_a_failing_runner_check_trains_on_a_hosted_runner_with_a_warning(
    github: FakeGitHub, pick: Pick, token: str, hint: str
) -> None:
    github.state.runners = [runner("gpu-box", "online", "self-hosted", "gpu")]
    github.add_token("expired", {"administration": "read"}, expires_in=-1)
    github.add_token("weak", {"contents": "read"})
    values, log = pick(GPU_RUNNER_LABELS=GPU, RUNNER_CHECK_TOKEN=token)
    assert values["kind"] == "github-hosted"
    assert values["reason"] == f"the runner check failed: GitHub answered {hint}"
    assert (
        f"::warning title=Runner check failed::GitHub answered {hint}: training on a "
        "GitHub-hosted runner instead"
    ) in log.splitlines()


def test_without_a_token_github_is_not_asked_for_runners(github: FakeGitHub, pick: Pick) -> None:
    values, _ = pick(GPU_RUNNER_LABELS=GPU)
    assert "RUNNER_CHECK_TOKEN is not set" in values["reason"]
    assert [c for c in github.state.calls if "runners" in c.path] == []
    values, _ = pick(GPU_RUNNER_LABELS=GPU, GPU_RUNNER_SKIP_CHECK="true")
    assert values["kind"] == "self-hosted"
    assert [c for c in github.state.calls if "runners" in c.path] == []


@pytest.mark.parametrize(
    "settings",
    [{"RUNNER_CHECK_TOKEN": "t0ken"},  # no GPU runner configured
     {"IS_FORK": "true", "GPU_RUNNER_LABELS": GPU, "RUNNER_CHECK_TOKEN": "t0ken"}],
    ids=["no-gpu-runner", "fork"],
)  # fmt: skip
def test_without_a_self_hosted_runner_to_check_github_is_not_asked(
    github: FakeGitHub, pick: Pick, settings: dict[str, str]
) -> None:
    values, log = pick(**settings)
    reason = "pull request from a fork" if "IS_FORK" in settings else "no GPU runner configured"
    assert values == {"runs-on": json.dumps(GITHUB_HOSTED), "kind": "github-hosted",
                      "reason": reason, "train": "true", "sync-args": ""}  # fmt: skip
    assert github.state.calls == [] and "::" not in log, log


FORK_RISK = (
    "GitHub runs a pull request's own copy of pr.yml, so a fork can edit `runs-on:` and the "
    "`if:` that keeps it off the self-hosted GPU runner"
)
APPROVAL = (
    'Settings > Actions > General > "Approval for running fork pull request workflows from '
    'contributors" = "Require approval for all external contributors"'
)


@pytest.mark.parametrize(
    ("policy", "token", "said"),
    [("all_external_contributors", "t0ken", ""),
     ("first_time_contributors", "t0ken", f"::warning title=Fork pull requests and the self-hosted runner::{FORK_RISK}, and this repository approves only some outside contributors' runs (first_time_contributors): set {APPROVAL}"),
     ("all_external_contributors", "", f"::notice title=Fork pull requests and the self-hosted runner::{FORK_RISK}; whether outside contributors' runs wait for approval could not be confirmed (RUNNER_CHECK_TOKEN is not set): check {APPROVAL}"),
     ("all_external_contributors", "weak", f"::notice title=Fork pull requests and the self-hosted runner::{FORK_RISK}; whether outside contributors' runs wait for approval could not be confirmed (HTTP Error 403: Forbidden): check {APPROVAL}")],
    ids=["safe", "some-contributors", "no-token", "a-token-that-may-not-read-it"],
)  # fmt: skip
def test_the_fork_approval_setting_is_checked_when_a_self_hosted_runner_is_configured(
    github: FakeGitHub, pick: Pick, policy: str, token: str, said: str
) -> None:
    github.state.fork_pr_approval = policy
    github.add_token("weak", {"contents": "read"})
    _, log = pick(GPU_RUNNER_LABELS=GPU, GPU_RUNNER_SKIP_CHECK="true",
                  RUNNER_CHECK_TOKEN=token)  # fmt: skip
    annotations = [line for line in log.splitlines() if line.startswith("::")]
    assert annotations == ([said] if said else []), log


@pytest.mark.parametrize("how", ["process", "in-process"])
def test_a_fork_whose_remote_needs_credentials_is_not_trained(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m gitml runner` in a fork's checkout, as the runner's stdlib python runs it, or
    its main() in this process in the same checkout."""
    project = tmp_path / "fork"
    (project / ".dvc").mkdir(parents=True)
    (project / ".dvc" / "config").write_text(
        "[core]\n    remote = storage\n['remote \"storage\"']\n    url = s3://team-bucket/dvc\n"
    )
    outputs, summary = tmp_path / "outputs", tmp_path / "summary.md"
    env = {"IS_FORK": "true", "GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary)}
    if how == "in-process":
        log = main_here(env, project, monkeypatch, capsys)
    else:
        done = subprocess.run(
            [sys.executable, "-m", "gitml", "runner"], cwd=project, capture_output=True,
            text=True, check=False,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(PROJ_ROOT / "src"), **env},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        log = done.stdout
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert values["train"] == "false"
    assert "the team's DVC remote (s3://team-bucket/dvc) cannot be read" in values["reason"]
    assert "::notice title=Not trained::this pull request comes from a fork" in log
    assert summary.read_text().startswith("### Not trained\n\nThis pull request comes from a fork")
