"""Merges to main and stage tags moved by a person, run by main.yml and release.yml on this
machine's real runtime: the build job builds the image from the Dockerfile (buildah) and pushes
it to a registry on loopback that stands in for ghcr.io; the deploy jobs' kubectl reaches the
local cluster (gitml.release.cluster), which pulls the image by digest and runs it locked down
as the manifests say; STAGING_URL and PRODUCTION_URL are its live Services' loopback ports.

From its first answer to the end, production's Service is polled (a new connection each time)
and the version of every answer is kept: a release that never passed its checks must never
appear there. The fork uses a team DVC remote (a shared folder, as README "Use your own remote"
sets one up), so main's published outputs reach every later job as they do on GitHub."""

import json
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gitml.config import PROJ_ROOT
from gitml.release.cluster import registry
from gitml.release.cluster.cli import Running, running
from tests.e2e.clone import clean_env, run
from tests.workflows import events
from tests.workflows.conftest import REPOSITORY, Fork
from tests.workflows.harness import Result

pytestmark = [pytest.mark.slow, pytest.mark.workflows, pytest.mark.beside]

TOKEN = "ghs_job_token_stand_in"
IMAGE = "ghcr.io/acme/bike-demand"  # the repository's name, lowercased
ENVIRONMENTS = ("staging", "production")
OVERRIDE = "Staging-Override: the fix must reach production tonight (Dana)"


@dataclass
class Watch:
    """Every answer of production's live Service, in order ("error: ..." when none came)."""

    url: str
    answers: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def poll(self) -> None:
        while not self.stop.wait(0.2):
            try:
                with httpx.Client(timeout=10) as client:  # no keep-alive: what answers now
                    self.answers.append(client.get(f"{self.url}/healthz").json()["model_version"])
            except (httpx.HTTPError, ValueError) as err:
                self.answers.append(f"error: {type(err).__name__}: {err}")


@dataclass
class Team:
    fork: Fork
    cluster: Running
    main: Result  # main.yml's pipeline job, publishing main's outputs

    def url(self, env: str) -> str:
        return self.cluster.service_url(f"gitml-{env}")

    def act(self, event: str, payload: dict, run_id: int) -> Result:  # type: ignore[type-arg]
        return self.fork.runner.act(
            self.fork.clone, event, payload, "release.yml",
            env={"GITHUB_RUN_ID": str(run_id), "GITML_REGISTRY": self.cluster.registry},
            secrets={"GITHUB_TOKEN": TOKEN, "KUBECONFIG": self.cluster.kubeconfig.read_text()},
            variables={"STAGING_URL": self.url("staging"),
                       "PRODUCTION_URL": self.url("production")},
        )  # fmt: skip

    def release(self, run_id: int) -> Result:
        """main's checks passed for the pushed HEAD: release.yml's workflow_run."""
        head = self.fork.git("rev-parse", "HEAD")
        payload = {"action": "completed", "repository": events.repository(REPOSITORY),
                   "workflow_run": {"id": run_id - 1, "name": "main", "event": "push",
                                    "conclusion": "success", "head_sha": head,
                                    "head_branch": "main",
                                    "head_repository": events.repository(REPOSITORY)}}  # fmt: skip
        return self.act("workflow_run", payload, run_id)

    def merge(self, message: str) -> None:
        self.fork.git("add", "-A")
        self.fork.git("commit", "-qm", message)
        self.fork.git("push", "-q", "origin", "main")

    def move_stage_tag(self, stage: str, version: str, run_id: int, message: str = "") -> Result:
        """A person assigns a stage with GTO on their machine and pushes the tag."""
        person = self.fork.runner.base.parent / f"person-{run_id}"
        run("git", "clone", "-q", str(self.fork.origin), str(person), cwd=person.parent)
        env = {**clean_env(), "GIT_AUTHOR_NAME": "Dana", "GIT_AUTHOR_EMAIL": "dana@example.com",
               "GIT_COMMITTER_NAME": "Dana", "GIT_COMMITTER_EMAIL": "dana@example.com"}  # fmt: skip
        gto = str(Path(sys.executable).with_name("gto"))
        before = set(run("git", "tag", cwd=person).split())
        run(gto, "assign", "bike-demand", "--stage", stage, "--version", version, "--force",
            *(["--message", message] if message else []), cwd=person, env=env)  # fmt: skip
        (tag,) = set(run("git", "tag", cwd=person).split()) - before
        run("git", "push", "-q", "origin", f"refs/tags/{tag}", cwd=person)
        self.fork.git("fetch", "-q", "origin", "--tags")
        payload = events.push(f"refs/tags/{tag}", "0" * 40, self.fork.git("rev-parse", "HEAD"),
                              REPOSITORY)  # fmt: skip
        return self.act("push", payload, run_id)

    def answers(self, env: str) -> str:
        return str(httpx.get(f"{self.url(env)}/healthz", timeout=10).json()["model_version"])

    def pushed(self, tag: str) -> str:
        """IMAGE@digest of IMAGE:tag, as the registry holds it."""
        found = registry.manifest(self.cluster.registry, f"{IMAGE.split('/', 1)[1]}:{tag}")
        assert found, f"{IMAGE}:{tag} is not in the registry"
        return f"{IMAGE}@{found[0]}"

    def serving_images(self, env: str) -> set[str]:
        """The images (the reference podman ran each from) of the containers that the live
        Service of `env` sends requests to."""
        ports = {port for _, port in self.cluster.cluster.endpoints(f"gitml-{env}",
                                                                    "gitml-serving")}  # fmt: skip
        podman = self.cluster.cluster.podman
        listed = podman("ps", "--format", "json", "--filter",
                        f"label=gitml.cluster={podman.cluster_id}")  # fmt: skip
        return {c["Image"] for c in json.loads(listed)
                if any(p.get("host_port") in ports for p in c.get("Ports") or [])}  # fmt: skip

    def stage_tags(self) -> dict[str, str]:
        """origin's stage tags -> their messages."""
        listed = run("git", "tag", "--list", "--format=%(refname:short)\t%(contents:subject)",
                     "bike-demand#*", cwd=self.fork.origin)  # fmt: skip
        return dict(line.split("\t", 1) for line in listed.splitlines() if "\t" in line)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The registry (standing in for ghcr.io) and the cluster, the environments' live Services
    on loopback ports chosen now; one pod per Deployment (two cores shared with the suite)."""
    ports = {f"gitml-{env}/gitml-serving": 0 for env in ENVIRONMENTS}
    namespaces = [f"gitml-{env}" for env in ENVIRONMENTS]
    with running(tmp_path_factory.mktemp("cluster"), namespaces, ports, max_replicas=1,
                 stands_in_for="ghcr.io") as up:  # fmt: skip
        yield up


@pytest.fixture(scope="module")
def team(fork: Fork, cluster: Running) -> Team:
    remote = fork.runner.base.parent / "team-dvc-remote"
    remote.mkdir()
    fork.runner.give_to_runner(remote)
    config = fork.clone / ".dvc" / "config"
    config.write_text(config.read_text().replace("url = ../.dvc-storage", f"url = {remote}"))
    # This team's clusters share two busy cores with the test suite: a looser latency budget.
    params = fork.clone / "params.yaml"
    params.write_text(re.sub(r"max_p95_latency_ms: \d+", "max_p95_latency_ms: 5000",
                             params.read_text()))  # fmt: skip
    fork.git("commit", "-qam", "Use the team's DVC remote; a looser latency budget")
    fork.git("push", "-q", "origin", "main")
    head = fork.git("rev-parse", "HEAD")
    main = fork.runner.act(fork.clone, "push", events.push("refs/heads/main", "0" * 40, head,
                           REPOSITORY), "main.yml", job="pipeline",
                           env={"GITHUB_RUN_ID": "300"})  # fmt: skip
    assert main.succeeded("pipeline"), main.job_output("pipeline")[-6000:]
    return Team(fork, cluster, main)


@pytest.fixture(scope="module")
def first_release(team: Team) -> Result:
    return team.release(run_id=302)


@pytest.fixture(scope="module")
def watch(team: Team, first_release: Result) -> Iterator[Watch]:
    watching = Watch(team.url("production"))
    thread = threading.Thread(target=watching.poll, daemon=True)
    thread.start()
    yield watching
    watching.stop.set()
    thread.join(timeout=30)


def test_a_merge_registers_the_next_version_and_pushes_its_image(
    team: Team, first_release: Result
) -> None:
    assert first_release.succeeded("build"), first_release.job_output("build")[-6000:]
    assert "bike-demand@v0.0.1" in team.fork.origin_tags()
    team.fork.git("fetch", "-q", "origin", "--tags")
    commit = team.fork.git("rev-list", "-n", "1", "bike-demand@v0.0.1")
    assert team.pushed("v0.0.1") == team.pushed(f"sha-{commit}")  # one image, both tags


def test_staging_then_production_serve_the_pushed_digest_after_their_checks(
    team: Team, first_release: Result
) -> None:
    for job in ENVIRONMENTS:
        assert first_release.succeeded(job), first_release.job_output(job)[-6000:]
        assert "k8s: smoke ok  golden" in first_release.job_output(job)  # on the preview
        assert team.answers(job) == "v0.0.1"
        assert team.serving_images(job) == {team.pushed("v0.0.1")}
    tags = team.stage_tags()
    assert sorted(t.split("#")[1] for t in tags) == ["production", "staging"]
    assert any(m.startswith("checks passed in staging: v0.0.1 (") for m in tags.values())


@pytest.fixture(scope="module")
def faulty_release(team: Team, watch: Watch) -> Result:
    """A merge whose model is right where it is packaged and wrong where it serves (it adds one
    bike whenever a prediction log is kept, as the image keeps one): /healthz passes, its
    golden cases do not."""
    clone = team.fork.clone
    (clone / "src" / "gitml" / "pipeline" / "faulty_model.py").write_text(
        (PROJ_ROOT / "tests" / "faulty_model.py").read_text())  # fmt: skip
    train = clone / "src" / "gitml" / "pipeline" / "train.py"
    text = train.read_text()
    assert "joblib.dump(pipeline, tmp)" in text, "train.py no longer saves as this test assumes"
    train.write_text(text.replace("import joblib\n", "import joblib\n\nfrom gitml.pipeline."
                                  "faulty_model import WrongInEnvironments\n", 1)
                     .replace("joblib.dump(pipeline, tmp)",
                              "joblib.dump(WrongInEnvironments(pipeline), tmp)"))  # fmt: skip
    team.merge("Wrap the model (a bug: it shifts predictions where a log is kept)")
    return team.release(run_id=304)


def test_a_candidate_failing_its_golden_cases_never_serves_and_stops_the_release(
    team: Team, faulty_release: Result
) -> None:
    assert faulty_release.succeeded("build"), faulty_release.job_output("build")[-6000:]
    assert "bike-demand@v0.0.2" in team.fork.origin_tags()
    assert faulty_release.jobs.get("staging") == "failed"
    said = faulty_release.job_output("staging")
    assert "v0.0.2 failed its checks on gitml-serving-preview" in said
    assert "the candidate was removed without serving; gitml-staging still serves v0.0.1" in said
    assert not faulty_release.ran("production")
    assert team.answers("staging") == "v0.0.1"  # the policy: staging keeps what it served
    assert team.serving_images("staging") == {team.pushed("v0.0.1")}
    assert not [t for t, m in team.stage_tags().items() if "v0.0.2" in m]


@pytest.fixture(scope="module")
def fixed_release(team: Team, faulty_release: Result) -> Result:
    team.fork.git("revert", "--no-edit", "HEAD")
    team.fork.git("push", "-q", "origin", "main")
    return team.release(run_id=306)


def test_a_good_release_takes_over_staging_then_production(
    team: Team, fixed_release: Result
) -> None:
    for job in ENVIRONMENTS:
        assert fixed_release.succeeded(job), fixed_release.job_output(job)[-6000:]
        assert team.answers(job) == "v0.0.3"
        assert team.serving_images(job) == {team.pushed("v0.0.3")}


@pytest.fixture(scope="module")
def production_without_staging(team: Team, fixed_release: Result) -> Result:
    return team.move_stage_tag("production", "v0.0.2", run_id=308)


def test_production_refuses_a_version_staging_never_passed(
    team: Team, production_without_staging: Result
) -> None:
    result = production_without_staging
    assert result.jobs.get("from-tag") == "failed"
    assert "v0.0.2 never passed staging's checks" in result.job_output("from-tag")
    assert not result.ran("tag-deploy")
    assert team.answers("production") == "v0.0.3"


@pytest.fixture(scope="module")
def production_forced(team: Team, production_without_staging: Result) -> Result:
    return team.move_stage_tag("production", "v0.0.2", run_id=310, message=OVERRIDE)


def test_an_override_is_recorded_in_its_tag_and_the_candidate_is_still_checked(
    team: Team, production_forced: Result
) -> None:
    result = production_forced
    assert result.succeeded("from-tag"), result.job_output("from-tag")[-6000:]
    assert "deployed anyway, as the tag says: the fix must reach" in result.job_output("from-tag")
    assert OVERRIDE in team.stage_tags().values()  # in origin, beside the deploy it allowed
    assert result.jobs.get("tag-deploy") == "failed"
    assert "v0.0.2 failed its checks on gitml-serving-preview" in result.job_output("tag-deploy")
    assert team.answers("production") == "v0.0.3"
    assert team.serving_images("production") == {team.pushed("v0.0.3")}


@pytest.fixture(scope="module")
def production_moved_back(team: Team, production_forced: Result) -> Result:
    return team.move_stage_tag("production", "v0.0.1", run_id=312)


def test_moving_production_back_serves_the_previous_digest(
    team: Team, production_moved_back: Result
) -> None:
    result = production_moved_back
    assert result.succeeded("tag-deploy"), result.job_output("tag-deploy")[-6000:]
    assert team.answers("production") == "v0.0.1"
    assert team.serving_images("production") == {team.pushed("v0.0.1")}


def test_production_answered_every_poll_and_only_from_checked_releases(
    watch: Watch, production_moved_back: Result
) -> None:
    watch.stop.set()
    assert watch.answers, "production was never polled"
    assert [a for a in watch.answers if a not in ("v0.0.1", "v0.0.3")] == []
    changes = [a for i, a in enumerate(watch.answers) if i == 0 or a != watch.answers[i - 1]]
    assert changes == ["v0.0.1", "v0.0.3", "v0.0.1"]
