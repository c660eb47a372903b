"""Merges to main and stage tags moved by a person, run by main.yml and release.yml.

The fork uses a team DVC remote (a shared folder, as README "Use your own remote" sets one up),
so main's published outputs reach every later job as they do on GitHub. The staging and
production URLs point at a real server on loopback that serves the packaged model of main as
version v0.0.1: a release of another version fails its smoke check there."""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gitml.ports import free_port
from tests.e2e.clone import clean_env, run
from tests.workflows import events
from tests.workflows.conftest import REPOSITORY, Fork
from tests.workflows.harness import Result

pytestmark = [pytest.mark.slow, pytest.mark.workflows, pytest.mark.beside]

TOKEN = "ghs_job_token_stand_in"
SECRETS = {"GITHUB_TOKEN": TOKEN, "KUBECONFIG": "apiVersion: v1\nkind: Config\n"}
IMAGE = "ghcr.io/acme/bike-demand"  # the repository's name, lowercased


@dataclass
class Team:
    fork: Fork
    url: str  # the environments' URL (STAGING_URL and PRODUCTION_URL)
    main: Result  # main.yml's pipeline job, publishing main's outputs

    @property
    def urls(self) -> dict[str, str]:
        """One server plays both environments here; production's variable names it by another
        address, as preflight refuses a PRODUCTION_URL equal to staging's."""
        return {
            "STAGING_URL": self.url,
            "PRODUCTION_URL": self.url.replace("127.0.0.1", "localhost"),
        }

    def release(self, run_id: int) -> Result:
        head = self.fork.git("rev-parse", "HEAD")
        payload = {"action": "completed", "repository": events.repository(REPOSITORY),
                   "workflow_run": {"id": run_id - 1, "name": "main", "event": "push",
                                    "conclusion": "success", "head_sha": head,
                                    "head_branch": "main",
                                    "head_repository": events.repository(REPOSITORY)}}  # fmt: skip
        return self.fork.runner.act(
            self.fork.clone, "workflow_run", payload, "release.yml",
            env={"GITHUB_RUN_ID": str(run_id)}, secrets=SECRETS,
            variables=self.urls,
        )  # fmt: skip

    def cluster(self) -> dict[str, dict]:
        path = self.fork.runner.recordings / "cluster.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def serving(self, env: str) -> dict[str, str]:
        """What the cluster's Deployment of `env` runs now."""
        state = self.cluster()[f"gitml-{env}"]
        return next(h for h in state["history"] if h["revision"] == state["current"])

    def move_stage_tag(self, stage: str, version: str, run_id: int) -> Result:
        """A person assigns a stage with GTO on their machine and pushes the tag."""
        person = self.fork.runner.base.parent / f"person-{run_id}"
        run("git", "clone", "-q", str(self.fork.origin), str(person), cwd=person.parent)
        env = {**clean_env(), "GIT_AUTHOR_NAME": "Dana", "GIT_AUTHOR_EMAIL": "dana@example.com",
               "GIT_COMMITTER_NAME": "Dana", "GIT_COMMITTER_EMAIL": "dana@example.com"}  # fmt: skip
        gto = str(Path(sys.executable).with_name("gto"))
        before = set(run("git", "tag", cwd=person).split())
        run(gto, "assign", "bike-demand", "--stage", stage, "--version", version, "--force",
            cwd=person, env=env)  # fmt: skip
        (tag,) = set(run("git", "tag", cwd=person).split()) - before
        run("git", "push", "-q", "origin", f"refs/tags/{tag}", cwd=person)
        self.fork.git("fetch", "-q", "origin", "--tags")
        payload = events.push(f"refs/tags/{tag}", "0" * 40, self.fork.git("rev-parse", "HEAD"),
                              REPOSITORY)  # fmt: skip
        return self.fork.runner.act(
            self.fork.clone, "push", payload, "release.yml",
            env={"GITHUB_RUN_ID": str(run_id)}, secrets=SECRETS,
            variables=self.urls,
        )  # fmt: skip


def serve_main_model(fork: Fork, version: str) -> tuple[str, subprocess.Popen[str]]:
    """The model main's pipeline published, pulled from the team remote and served."""
    copy = fork.runner.base.parent / "served"
    run("git", "clone", "-q", str(fork.origin), str(copy), cwd=copy.parent)
    dvc = str(Path(sys.executable).with_name("dvc"))
    run(dvc, "pull", "-q", "package", cwd=copy)
    port = free_port()
    env = {**os.environ, "GITML_MODEL_PATH": str(copy / "artifacts" / "mlem" / "model"),
           "GITML_MODEL_VERSION": version, "GITML_PORT": str(port), "MLEM_NO_ANALYTICS": "true"}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "gitml", "serve"], env=env, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return url, server
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            break
        subprocess.run(["sleep", "0.5"], check=False)
    server.kill()
    raise AssertionError(f"the model of main did not serve at {url}")


@pytest.fixture(scope="module")
def team(fork: Fork) -> Iterator[Team]:
    remote = fork.runner.base.parent / "team-dvc-remote"
    remote.mkdir()
    fork.runner.give_to_runner(remote)
    config = fork.clone / ".dvc" / "config"
    config.write_text(config.read_text().replace("url = ../.dvc-storage", f"url = {remote}"))
    # This team's staging shares two busy cores with the test suite: a looser latency budget.
    params = fork.clone / "params.yaml"
    params.write_text(re.sub(r"max_p95_latency_ms: \d+", "max_p95_latency_ms: 5000",
                             params.read_text()))  # fmt: skip
    fork.git("commit", "-qam", "Use the team's DVC remote; staging latency budget")
    fork.git("push", "-q", "origin", "main")
    head = fork.git("rev-parse", "HEAD")
    main = fork.runner.act(fork.clone, "push", events.push("refs/heads/main", "0" * 40, head,
                           REPOSITORY), "main.yml", job="pipeline",
                           env={"GITHUB_RUN_ID": "300"})  # fmt: skip
    assert main.succeeded("pipeline"), main.job_output("pipeline")[-6000:]
    url, server = serve_main_model(fork, "v0.0.1")
    try:
        yield Team(fork, url, main)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def first_release(team: Team) -> Result:
    return team.release(run_id=302)


@pytest.fixture(scope="module")
def second_release(team: Team, first_release: Result) -> Result:
    (team.fork.clone / "NOTES.md").write_text("A second merge: same model, next version.\n")
    team.fork.git("add", "NOTES.md")
    team.fork.git("commit", "-qm", "Notes")
    team.fork.git("push", "-q", "origin", "main")
    return team.release(run_id=304)


def test_a_merge_registers_the_next_version_in_origin(team: Team, first_release: Result) -> None:
    assert first_release.succeeded("build"), first_release.job_output("build")[-6000:]
    assert "bike-demand@v0.0.1" in team.fork.origin_tags()


def test_the_image_is_pushed_under_a_lowercase_name(team: Team, first_release: Result) -> None:
    pushed = json.loads((team.fork.runner.recordings / "registry.json").read_text())
    assert f"{IMAGE}:v0.0.1" in pushed


def test_staging_then_production_get_the_same_digest_smoke_checked(
    team: Team, first_release: Result
) -> None:
    for job in ("staging", "production"):
        assert first_release.succeeded(job), first_release.job_output(job)[-6000:]
        assert "smoke: ok  golden" in first_release.job_output(job)
    digest = json.loads((team.fork.runner.recordings / "registry.json").read_text())[
        f"{IMAGE}:v0.0.1"
    ]
    for env in ("staging", "production"):
        assert team.serving(env) == {"revision": 1, "image": f"{IMAGE}@{digest}",
                                     "version": "v0.0.1"}  # fmt: skip
    assigned = [t.split("#")[1] for t in team.fork.origin_tags() if "#" in t]
    assert sorted(assigned) == ["production", "staging"]  # GTO numbers them in one series


def test_a_failing_smoke_check_in_staging_stops_production(
    team: Team, second_release: Result
) -> None:
    assert second_release.succeeded("build")
    assert "bike-demand@v0.0.2" in team.fork.origin_tags()
    assert second_release.jobs.get("staging") == "failed"
    assert "smoke: FAIL version" in second_release.job_output("staging")
    assert not second_release.ran("production")
    assert [h["version"] for h in team.cluster()["gitml-production"]["history"]] == ["v0.0.1"]
    # v0.0.2 was assigned to no stage: the only assignments are the first release's
    assert sorted(t.split("#")[1] for t in team.fork.origin_tags() if "#" in t) == [
        "production",
        "staging",
    ]


@pytest.fixture(scope="module")
def staging_moved_back(team: Team, second_release: Result) -> Result:
    return team.move_stage_tag("staging", "v0.0.1", run_id=306)


def test_a_stage_tag_moved_by_a_person_deploys_that_version_once(
    team: Team, staging_moved_back: Result
) -> None:
    assert staging_moved_back.succeeded("tag-deploy"), staging_moved_back.job_output("tag-deploy")[
        -6000:
    ]
    applies = [a for a in team.fork.runner.recorded("kubectl") if a[:2] == ["apply", "-f"]]
    assert team.serving("staging")["version"] == "v0.0.1"
    # three deploys before (staging, production, failed staging) and this one: nothing twice
    assert len(applies) == 4


@pytest.fixture(scope="module")
def production_moved_to_a_bad_version(team: Team, staging_moved_back: Result) -> Result:
    return team.move_stage_tag("production", "v0.0.2", run_id=308)


def test_a_failed_production_smoke_check_rolls_back_once_to_the_known_revision(
    team: Team, production_moved_to_a_bad_version: Result
) -> None:
    result = production_moved_to_a_bad_version
    assert result.jobs.get("tag-deploy") == "failed"
    undos = [a for a in team.fork.runner.recorded("kubectl") if a[:2] == ["rollout", "undo"]]
    assert undos == [["rollout", "undo", "deployment/gitml-serving", "-n", "gitml-production",
                      "--to-revision=1"]]  # fmt: skip
    assert team.serving("production")["version"] == "v0.0.1"
