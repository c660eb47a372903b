"""The retraining pull request's words and token: what GitHub will and will not run for it, and
the check, before anything is pushed, that GitHub will take the branch and the pull request
(against the GitHub stand-in: real git over HTTPS, the REST API's refusals).
(Its git and DVC steps run end to end in tests/e2e/test_loop.py and the workflow harness.)"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from gitml import dataset
from gitml.config import PROJ_ROOT
from gitml.monitoring.retrain import (
    ACTIONS_PR_SETTING,
    APP_TOKEN,
    NOT_PERMITTED,
    TOKEN_SECRET,
    PullToken,
    RetrainError,
    body,
    branch_name,
    push_advice,
    refusal_advice,
    title,
    token_for_pull,
    with_token,
)
from tests.workflows.github import FakeGitHub
from tests.workflows.harness import PERSON_TOKEN, person_git_options


@pytest.fixture
def new(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return splits["test"].sort_values(dataset.TIME).head(30)


def test_the_branch_is_named_after_the_environment_and_the_utc_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time
    from datetime import UTC, datetime, timedelta, timezone

    monkeypatch.setenv("TZ", "Asia/Tokyo")  # the machine's zone must not matter
    time.tzset()
    moment = datetime(2026, 11, 27, 3, 4, 59, tzinfo=timezone(timedelta(hours=2)))
    assert branch_name("production", moment) == "retrain/production-20261127-010459"
    assert branch_name("staging", moment.astimezone(UTC)) == "retrain/staging-20261127-010459"
    monkeypatch.undo()
    time.tzset()


def test_the_title_counts_the_rows_and_gives_their_period(new: pd.DataFrame) -> None:
    first, last = new[dataset.TIME].min(), new[dataset.TIME].max()
    assert title("production", new) == (
        f"Retrain on 30 labelled rows of production "
        f"({first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M})"
    )


def test_an_app_token_or_pat_opens_a_pull_request_whose_checks_run() -> None:
    app = token_for_pull({APP_TOKEN: "ghs_app", TOKEN_SECRET: "pat", "GITHUB_TOKEN": "job"})
    assert (app.value, app.starts_checks) == ("ghs_app", True)
    assert app.source.startswith("the GitHub App's token")
    pat = token_for_pull({APP_TOKEN: "", TOKEN_SECRET: "pat", "GITHUB_TOKEN": "job"})
    assert pat == PullToken("pat", "the RETRAIN_TOKEN secret", True)
    job = token_for_pull({"GITHUB_TOKEN": "job", TOKEN_SECRET: "", APP_TOKEN: ""})
    assert job == PullToken("job", "the job's GITHUB_TOKEN", False)


def test_no_token_at_all_says_which_to_set_and_how_to_work_locally() -> None:
    with pytest.raises(RetrainError) as refused:
        token_for_pull({})
    assert str(refused.value) == (
        "no token to open the pull request with: set the variable RETRAIN_APP_CLIENT_ID and "
        "the secret RETRAIN_APP_PRIVATE_KEY (a GitHub App with Contents and Pull requests, "
        "read and write), or the RETRAIN_TOKEN secret (a fine-grained PAT with the same), or "
        "pass the job's GITHUB_TOKEN (permissions: contents: write, pull-requests: write); "
        "locally, `make retrain-pr RETRAIN_PR=false` makes the branch without pushing it"
    )


@pytest.mark.parametrize("starts_checks", [True, False])
def test_the_body_says_what_changed_and_warns_when_no_check_will_run(
    new: pd.DataFrame, starts_checks: bool
) -> None:
    text = body("staging", new, 12, starts_checks, "https://github.com/a/b/actions/runs/7")
    assert text.startswith("Production (staging) has 30 labelled rows the dataset did not hold")
    assert "12 more were already in it" in text
    assert "production, on the newest labelled days" in text and "`make gate`" in text
    assert ("close and reopen this pull request" in text) is not starts_checks
    assert (f"`{TOKEN_SECRET}` secret" in text) is not starts_checks
    assert text.endswith("Opened by https://github.com/a/b/actions/runs/7\n")
    assert "Opened by" not in body("staging", new, 0, starts_checks, "")


def test_the_body_in_full(new: pd.DataFrame) -> None:
    period = (f"{new[dataset.TIME].min():%Y-%m-%d %H:%M} to "
              f"{new[dataset.TIME].max():%Y-%m-%d %H:%M}")  # fmt: skip
    assert body("production", new, 3, False, "") == (
        f"Production (production) has 30 labelled rows the dataset did not hold ({period}; 3 "
        "more were already in it). This branch adds them as a new data version (`data.dvc`) "
        "and retrains on it (`dvc.lock`, `reports/metrics.json`).\n"
        "\n"
        "The model report compares this model with the base branch's and with the model in "
        "production, on the newest labelled days, which neither trained on. Merge only if it "
        "beats production: the release refuses a worse model (`make gate`).\n"
        "\n"
        "> [!WARNING]\n> Opened with the workflow's `GITHUB_TOKEN`, so GitHub started no checks "
        "for it: close and reopen this pull request to run them, or give the retrain workflow "
        "a GitHub App (`RETRAIN_APP_CLIENT_ID`, `RETRAIN_APP_PRIVATE_KEY`) or the "
        "`RETRAIN_TOKEN` secret so that the next one runs them itself.\n"
    )
    with_run = body("production", new, 3, True, "https://github.com/a/b/actions/runs/7")
    assert with_run.endswith("`make gate`).\n\nOpened by https://github.com/a/b/actions/runs/7\n")


# --- what a refusal advises, for each token (the checks below meet each refusal for real) ------

APP = token_for_pull({APP_TOKEN: "app"})
PAT = token_for_pull({TOKEN_SECRET: "pat"})
JOB = token_for_pull({"GITHUB_TOKEN": "job"})
APP_SOURCE = (
    "the GitHub App's token (the variable RETRAIN_APP_CLIENT_ID and the secret "
    "RETRAIN_APP_PRIVATE_KEY)"
)


def test_a_refused_pull_request_names_what_to_change_for_its_token() -> None:
    actions_off = f"... {NOT_PERMITTED} ..."  # GitHub's words while the setting is off
    assert refusal_advice(JOB, 403, actions_off) == (
        "GitHub refuses pull requests opened with the job's GITHUB_TOKEN while the repository "
        f"setting {ACTIONS_PR_SETTING} is off: turn it on, or give the workflow a token of its "
        "own (the variable RETRAIN_APP_CLIENT_ID and the secret RETRAIN_APP_PRIVATE_KEY, or the "
        "RETRAIN_TOKEN secret), which that setting does not govern"
    )
    # that setting governs only the job's token: a token of its own lacks a permission
    assert refusal_advice(PAT, 403, actions_off) == (
        "the RETRAIN_TOKEN secret may not open pull requests here: give it Pull requests: read "
        "and write"
    )
    assert refusal_advice(JOB, 403, "Resource not accessible by integration") == (
        "the job's GITHUB_TOKEN may not open pull requests: the job needs `permissions: "
        "pull-requests: write`"
    )


@pytest.mark.parametrize("token", [APP, JOB])
def test_an_invalid_token_is_named_with_how_to_renew_it(token: PullToken) -> None:
    assert refusal_advice(token, 401, "Bad credentials") == (
        f"{token.source} was refused as invalid (401): expired or revoked? A GitHub App token "
        "expires within the hour, so set the variable RETRAIN_APP_CLIENT_ID and the secret "
        "RETRAIN_APP_PRIVATE_KEY and the workflow mints one per run; a PAT must be renewed "
        "before it expires"
    )


def test_a_refused_push_names_the_permission_for_its_token() -> None:
    assert push_advice(APP) == (
        f"{APP_SOURCE} may not push to origin: give it Contents: read and write"
    )
    assert push_advice(JOB) == (
        "the job's GITHUB_TOKEN may not push: the job needs `permissions: contents: write`"
    )


def test_git_and_the_api_see_the_chosen_token_as_github_token() -> None:
    environ = {"GITHUB_TOKEN": "job", APP_TOKEN: "app", "HOME": "/home/runner"}
    assert with_token(environ, APP) == {**environ, "GITHUB_TOKEN": "app"}
    assert environ["GITHUB_TOKEN"] == "job"  # the caller's environment is left as it was


# --- before anything is pushed: will GitHub take the branch and the pull request? -------------

REPOSITORY = "acme/bikes"
CHECK = """
import sys
from gitml.monitoring.retrain import RetrainError, check_access, token_for_pull
import os
try:
    check_access(os.environ, token_for_pull(os.environ), "retrain/production-1", "main")
except RetrainError as err:
    sys.exit(f"refused: {err}")
print("allowed")
"""


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path, REPOSITORY) as server:
        yield server


@pytest.fixture
def checkout(github: FakeGitHub, tmp_path: Path) -> Path:
    """A job's checkout of origin, served over HTTPS by the stand-in."""
    github.add_token(PERSON_TOKEN, {"contents": "write"})
    origin = github.git_root / f"{REPOSITORY}.git"
    seed = tmp_path / "seed"
    for command in (["git", "init", "-q", "--bare", "-b", "main", str(origin)],
                    ["git", "-C", str(origin), "config", "http.receivepack", "true"],
                    ["git", "init", "-q", "-b", "main", str(seed)],
                    ["git", "-C", str(seed), "-c", "user.name=D", "-c", "user.email=d@e",
                     "commit", "-q", "--allow-empty", "-m", "one"],
                    ["git", "-C", str(seed), "push", "-q", str(origin), "main"]):  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
    work = tmp_path / "job"
    subprocess.run(["git", *person_git_options(github), "clone", "-q",
                    f"https://{github.host}/{REPOSITORY}.git", str(work)],
                   env={**os.environ, "GIT_SSL_CAINFO": str(github.ca_file)},
                   check=True, capture_output=True)  # fmt: skip
    return work


def check(github: FakeGitHub, checkout: Path, **tokens: str) -> subprocess.CompletedProcess[str]:
    """check_access in a process of its own, as the retrain job's step runs it."""
    home = checkout.parent / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(PROJ_ROOT / "src"),
           "GITHUB_REPOSITORY": REPOSITORY, "GITHUB_SERVER_URL": f"https://{github.host}",
           "GITHUB_API_URL": f"https://{github.host}/api/v3", "GIT_TERMINAL_PROMPT": "0",
           "SSL_CERT_FILE": str(github.ca_file), "GIT_SSL_CAINFO": str(github.ca_file),
           **tokens}  # fmt: skip
    return subprocess.run([sys.executable, "-c", CHECK], cwd=checkout, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip


def nothing_changed(github: FakeGitHub) -> bool:
    branches = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/heads"],
                              cwd=github.git_root / f"{REPOSITORY}.git", capture_output=True,
                              text=True, check=True).stdout.split()  # fmt: skip
    return branches == ["refs/heads/main"] and github.state.pulls == {} and not github.state.events


def test_a_token_that_may_push_and_open_passes_and_changes_nothing(
    github: FakeGitHub, checkout: Path
) -> None:
    github.add_token("pat", {"contents": "write", "pull-requests": "write"})
    done = check(github, checkout, RETRAIN_TOKEN="pat")
    assert done.stdout.strip() == "allowed", done.stderr
    assert nothing_changed(github)


@pytest.mark.parametrize(
    ("permissions", "advice"),
    [({"contents": "read", "pull-requests": "write"},
      "the RETRAIN_TOKEN secret may not push to origin: give it Contents: read and write"),
     ({"contents": "write", "pull-requests": "read"},
      "the RETRAIN_TOKEN secret may not open pull requests here: give it Pull requests: read "
      "and write; nothing was pushed")],
)  # fmt: skip
def test_a_token_short_of_a_permission_is_named_before_anything_is_pushed(
    github: FakeGitHub, checkout: Path, permissions: dict[str, str], advice: str
) -> None:
    github.add_token("pat", permissions)
    done = check(github, checkout, RETRAIN_TOKEN="pat")
    assert done.returncode == 1
    assert done.stderr.startswith(f"refused: {advice}")
    assert nothing_changed(github)


def test_an_expired_token_says_how_to_mint_one_per_run(github: FakeGitHub, checkout: Path) -> None:
    github.add_token("app", {"contents": "write", "pull-requests": "write"}, expires_in=-1)
    done = check(github, checkout, RETRAIN_APP_TOKEN="app")
    assert done.returncode == 1
    assert done.stderr.startswith(
        "refused: the GitHub App's token (the variable RETRAIN_APP_CLIENT_ID and the secret "
        "RETRAIN_APP_PRIVATE_KEY) was refused as invalid (401): expired or revoked? A GitHub "
        "App token expires within the hour, so set the variable RETRAIN_APP_CLIENT_ID"
    )
    assert nothing_changed(github)


def test_the_actions_setting_off_is_named_for_the_job_token(
    github: FakeGitHub, checkout: Path
) -> None:
    """The job's own GITHUB_TOKEN, with retrain.yml's permissions, while the repository setting
    that lets Actions open pull requests is off (GitHub's default)."""
    token = github.register_run(PROJ_ROOT / ".github" / "workflows" / "retrain.yml",
                                "workflow_dispatch")  # fmt: skip
    done = check(github, checkout, GITHUB_TOKEN=token, GITHUB_JOB="retrain")
    assert done.returncode == 1
    assert done.stderr.startswith(
        "refused: GitHub refuses pull requests opened with the job's GITHUB_TOKEN while the "
        f"repository setting {ACTIONS_PR_SETTING} is off: turn it on, or give the workflow a "
        "token of its own"
    )
    assert "nothing was pushed" in done.stderr
    assert nothing_changed(github)
    github.state.actions_can_create_pulls = True
    allowed = check(github, checkout, GITHUB_TOKEN=token, GITHUB_JOB="retrain")
    assert allowed.stdout.strip() == "allowed", allowed.stderr
    # another job of the same run, without contents: write, may not push
    refused = check(github, checkout, GITHUB_TOKEN=token, GITHUB_JOB="nonexistent")
    assert "the job's GITHUB_TOKEN may not push" in refused.stderr
