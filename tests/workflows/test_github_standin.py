"""The GitHub stand-in refuses what GitHub refuses: a stand-in proves only what it can refuse.
Fast (no act): the callers are processes of their own, as a job's steps are, so that the
stand-in finds the calling job as it does under act (its GITHUB_JOB)."""

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workflows.github import CANNOT_CREATE_PULLS, FakeGitHub

REPOSITORY = "acme/bikes"
HERE = Path(__file__).resolve().parent
CALL = """
import json, os, sys, urllib.error, urllib.request
method, path, body = sys.argv[1], sys.argv[2], sys.argv[3]
request = urllib.request.Request(os.environ["API"] + path, method=method,
    data=body.encode() if body else None, headers={"Authorization": "Bearer " + os.environ["TOKEN"]})
try:
    with urllib.request.urlopen(request) as answer:
        print(answer.status, answer.read().decode())
except urllib.error.HTTPError as err:
    print(err.code, err.read().decode(), err.headers.get("X-Accepted-GitHub-Permissions", ""))
"""
WORKFLOW = """
name: w
on: push
permissions: {}
jobs:
  writer: {runs-on: ubuntu-latest, permissions: {issues: write, contents: write}, steps: [{run: x}]}
  reader: {runs-on: ubuntu-latest, permissions: {issues: read, pull-requests: write}, steps: [{run: x}]}
"""


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path, REPOSITORY) as server:
        yield server


def call(github: FakeGitHub, token: str, method: str, path: str, body: object = None,
         job: str = "") -> tuple[int, str]:  # fmt: skip
    env = {"PATH": os.environ["PATH"], "SSL_CERT_FILE": str(github.ca_file), "TOKEN": token,
           "API": f"https://{github.host}/api/v3/repos/{REPOSITORY}", **({"GITHUB_JOB": job} if job else {})}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", CALL, method, path, json.dumps(body) if body else ""],
                         env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
    status, _, rest = out.partition(" ")
    return int(status), rest.strip()


def run_token(github: FakeGitHub, tmp_path: Path, fork: bool = False, text: str = WORKFLOW) -> str:
    workflow = tmp_path / "w.yml"
    workflow.write_text(text)
    return github.register_run(workflow, "push", fork=fork)


ISSUE = {"title": "t", "body": "b"}


def test_a_runs_token_does_what_the_calling_jobs_permissions_allow(
    github: FakeGitHub, tmp_path: Path
) -> None:
    token = run_token(github, tmp_path)
    assert call(github, token, "POST", "/issues", ISSUE, job="writer")[0] == 201
    status, said = call(github, token, "POST", "/issues", ISSUE, job="reader")
    assert status == 403 and "Resource not accessible by integration" in said
    assert said.endswith("issues=write")  # X-Accepted-GitHub-Permissions, as GitHub sends it
    assert call(github, token, "GET", "/issues", job="reader")[0] == 200
    assert call(github, token, "GET", "/issues", job="nobody")[0] == 403  # `permissions: {}`


def test_a_job_token_outside_its_job_is_nobodys(github: FakeGitHub, tmp_path: Path) -> None:
    token = run_token(github, tmp_path)
    assert call(github, token, "GET", "/issues")[0] == 401  # no GITHUB_JOB: not a job's process
    assert call(github, "made-up", "GET", "/issues", job="writer")[0] == 401


def test_a_forks_run_reads_only(github: FakeGitHub, tmp_path: Path) -> None:
    token = run_token(github, tmp_path, fork=True)
    assert call(github, token, "POST", "/issues", ISSUE, job="writer")[0] == 403
    assert call(github, token, "GET", "/issues", job="writer")[0] == 200


def test_without_permissions_the_repositorys_default_applies(
    github: FakeGitHub, tmp_path: Path
) -> None:
    token = run_token(
        github, tmp_path, text="on: push\njobs:\n  j: {runs-on: x, steps: [{run: x}]}\n"
    )
    assert call(github, token, "POST", "/issues", ISSUE, job="j")[0] == 403  # restricted: read
    github.state.default_workflow_permissions = "write"
    assert call(github, token, "POST", "/issues", ISSUE, job="j")[0] == 201  # permissive


def test_actions_may_not_open_pull_requests_until_the_setting_says_so(
    github: FakeGitHub, tmp_path: Path
) -> None:
    token = run_token(github, tmp_path)
    pull = {"title": "t", "head": "main", "base": "main"}
    status, said = call(github, token, "POST", "/pulls", pull, job="reader")
    assert status == 403 and CANNOT_CREATE_PULLS in said
    github.state.actions_can_create_pulls = True
    assert call(github, token, "POST", "/pulls", pull, job="reader")[0] == 422  # head == base
    github.add_token("pat", {"pull-requests": "write"})  # a person's token: never governed
    github.state.actions_can_create_pulls = False
    assert call(github, "pat", "POST", "/pulls", pull)[0] == 422


def test_an_expired_or_underpowered_token_is_refused(github: FakeGitHub) -> None:
    github.add_token("old", {"issues": "write"}, expires_in=-1)
    github.add_token("weak", {"issues": "read"})
    assert call(github, "old", "GET", "/issues") == (401, '{"message": "Bad credentials"}')
    status, said = call(github, "weak", "POST", "/issues", ISSUE)
    assert status == 403 and "Resource not accessible by personal access token" in said


def mint(
    github: FakeGitHub, client_id: str, key: str, wanted: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    outputs = tmp_path / "outputs"
    outputs.unlink(missing_ok=True)
    env = {"PATH": os.environ["PATH"], "CLIENT_ID": client_id, "PRIVATE_KEY": key,
           "API_URL": f"https://{github.host}/api/v3", "PERMISSIONS": json.dumps(wanted),
           "GITHUB_REPOSITORY": REPOSITORY, "GITHUB_OUTPUT": str(outputs),
           "SSL_CERT_FILE": str(github.ca_file)}  # fmt: skip
    return subprocess.run([sys.executable, str(HERE / "actions" / "app_token.py")], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_an_app_token_is_minted_with_a_signed_jwt_and_only_what_the_app_has(
    github: FakeGitHub, tmp_path: Path
) -> None:
    key = github.add_app("Iv23liApp", "team-app", {"contents": "write", "pull-requests": "write"})
    minted = mint(github, "Iv23liApp", key, {"contents": "write"}, tmp_path)
    assert minted.returncode == 0, minted.stderr
    outputs = dict(line.split("=", 1) for line in (tmp_path / "outputs").read_text().splitlines())
    assert outputs["app-slug"] == "team-app" and outputs["installation-id"] == "4200"
    token = outputs["token"]
    assert call(github, token, "POST", "/issues", ISSUE)[0] == 403  # asked for contents only
    assert github.state.tokens[token].name == "team-app[bot]"
    more = mint(github, "Iv23liApp", key, {"contents": "write", "issues": "write"}, tmp_path)
    assert more.returncode == 1 and "not granted to this installation: issues=write" in more.stderr
    other = github.add_app("Iv23liOther", "other", {"contents": "read"})
    forged = mint(github, "Iv23liApp", other, {}, tmp_path)  # signed with another App's key
    assert forged.returncode == 1 and "could not be decoded" in forged.stderr


def git(
    *args: str, cwd: Path, github: FakeGitHub, token: str = ""
) -> subprocess.CompletedProcess[str]:
    header = []
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        header = ["-c", f"http.extraheader=AUTHORIZATION: basic {basic}"]
    env = {**os.environ, "GIT_SSL_CAINFO": str(github.ca_file), "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *header, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip


def test_git_reads_and_pushes_only_with_the_permission(github: FakeGitHub, tmp_path: Path) -> None:
    origin = github.git_root / f"{REPOSITORY}.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    subprocess.run(["git", "-C", str(origin), "config", "http.receivepack", "true"], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=d", "-c", "user.email=d@e", "commit",
                    "-q", "--allow-empty", "-m", "one"], check=True)  # fmt: skip
    url = f"https://{github.host}/{REPOSITORY}.git"
    github.add_token("reader", {"contents": "read"})
    github.add_token("writer", {"contents": "write"})
    assert git("ls-remote", url, cwd=work, github=github).returncode != 0  # private: no anonymous
    assert git("ls-remote", url, cwd=work, github=github, token="reader").returncode == 0
    refused = git("push", url, "main", cwd=work, github=github, token="reader")
    assert (
        refused.returncode != 0
        and f"Permission to {REPOSITORY}.git denied to dana" in refused.stderr
    )
    assert git("push", url, "main", cwd=work, github=github, token="writer").returncode == 0
    (push,) = github.state.events
    assert push == {"event": "push", "ref": "refs/heads/main", "sha": push["sha"], "by": "dana",
                    "starts_workflows": True}  # fmt: skip
