"""What GitHub enforces, met by the release: a job refused a push it has no permission for; a
production deploy whose URL is missing or is staging's; and a release whose image push GHCR
refused, re-run ("Re-run failed jobs").

The fork uses a team DVC remote (a shared folder), as test_release.py does. STAGING_URL is
unset for the releases themselves, so their deploy jobs are skipped: only versions and images
are made. A first merge is released (v0.0.1: the version the tag scenarios deploy), a second
one has its image push refused, then is re-run."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitml.release.cluster import registry
from tests.e2e.clone import clean_env, run
from tests.workflows import events
from tests.workflows.conftest import REPOSITORY, Fork
from tests.workflows.harness import Result

pytestmark = [pytest.mark.slow, pytest.mark.workflows, pytest.mark.beside]

PROBES = Path(__file__).resolve().parent / "probes"
IMAGE = "ghcr.io/acme/bike-demand"
# what GHCR answers when an organisation's package settings keep a repository's Actions out
POLICY = "installation not allowed to Write organization package"
KUBECONFIG = {"KUBECONFIG": "apiVersion: v1\nkind: Config\n"}
STAGING = "https://staging.bikes.example"


@pytest.fixture(scope="module")
def ghcr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The registry on loopback that the image actions push to, standing in for ghcr.io."""
    served = registry.start(tmp_path_factory.mktemp("ghcr"))
    yield served.address
    served.stop()


@pytest.fixture(scope="module")
def team(fork: Fork) -> Fork:
    remote = fork.runner.base.parent / "team-dvc-remote"
    remote.mkdir()
    fork.runner.give_to_runner(remote)
    config = fork.clone / ".dvc" / "config"
    config.write_text(config.read_text().replace("url = ../.dvc-storage", f"url = {remote}"))
    fork.git("commit", "-qam", "Use the team's DVC remote")
    fork.git("push", "-q", "origin", "main")
    return fork


def release(team: Fork, ghcr: str, run_id: int, attempt: int) -> Result:
    """release.yml's build job for main's head, as `main` succeeding starts it."""
    payload = {"action": "completed", "repository": events.repository(REPOSITORY),
               "workflow_run": {"id": run_id - 1, "name": "main", "event": "push",
                                "conclusion": "success", "head_sha": team.git("rev-parse", "HEAD"),
                                "head_branch": "main",
                                "head_repository": events.repository(REPOSITORY)}}  # fmt: skip
    return team.runner.act(team.clone, "workflow_run", payload, "release.yml", job="build",
                           env={"GITHUB_RUN_ID": str(run_id), "GITHUB_RUN_ATTEMPT": str(attempt),
                                "GITML_REGISTRY": ghcr})  # fmt: skip


def pushed(ghcr: str, version: str) -> bool:
    """The registry holds IMAGE:version (asked over its API)."""
    return registry.manifest(ghcr, f"{IMAGE.split('/', 1)[1]}:{version}") is not None


@pytest.fixture(scope="module")
def released(team: Fork, ghcr: str) -> Result:
    """The first merge, released: v0.0.1 and its image."""
    result = release(team, ghcr, 700, attempt=1)
    assert result.succeeded("build"), result.job_output("build")[-6000:]
    assert pushed(ghcr, "v0.0.1")
    return result


# --- a job without `contents: write` pushing a tag ---------------------------------------------


@pytest.fixture(scope="module")
def unpermitted_push(team: Fork, released: Result) -> Result:
    team.git("fetch", "-q", "origin", "--tags")
    return team.runner.act(team.clone, "workflow_dispatch",
                           events.workflow_dispatch(REPOSITORY, {}), PROBES / "push-tag.yml",
                           env={"GITHUB_RUN_ID": "710"})  # fmt: skip


def test_a_job_without_contents_write_cannot_push_a_tag(
    team: Fork, unpermitted_push: Result
) -> None:
    assert unpermitted_push.jobs.get("tag") == "failed", unpermitted_push.output[-6000:]
    said = unpermitted_push.job_output("tag")
    assert "registry: git push of bike-demand#staging#1 failed" in said
    assert f"Permission to {REPOSITORY}.git denied to github-actions[bot]" in said
    assert not [tag for tag in team.origin_tags() if "#" in tag]


# --- production's URL --------------------------------------------------------------------------


def move_production_tag(team: Fork, ghcr: str, run_id: int, variables: dict[str, str]) -> Result:
    """A person assigns v0.0.1 to production with GTO and pushes the tag (as test_release.py)."""
    person = team.runner.base.parent / f"person-{run_id}"
    run("git", "clone", "-q", str(team.origin), str(person), cwd=person.parent)
    env = {**clean_env(), "GIT_AUTHOR_NAME": "Dana", "GIT_AUTHOR_EMAIL": "dana@example.com",
           "GIT_COMMITTER_NAME": "Dana", "GIT_COMMITTER_EMAIL": "dana@example.com"}  # fmt: skip
    gto = str(Path(sys.executable).with_name("gto"))
    before = set(run("git", "tag", cwd=person).split())
    # staging never ran here (no STAGING_URL for the releases): the person says why, as
    # production's promotion check asks, so the deploy job's own checks are reached
    run(gto, "assign", "bike-demand", "--stage", "production", "--version", "v0.0.1", "--force",
        "--message", "Staging-Override: the URL scenarios have no staging", cwd=person,
        env=env)  # fmt: skip
    (tag,) = set(run("git", "tag", cwd=person).split()) - before
    run("git", "push", "-q", "origin", f"refs/tags/{tag}", cwd=person)
    team.git("fetch", "-q", "origin", "--tags")
    payload = events.push(f"refs/tags/{tag}", "0" * 40, team.git("rev-parse", "HEAD"),
                          REPOSITORY)  # fmt: skip
    return team.runner.act(team.clone, "push", payload, "release.yml",
                           env={"GITHUB_RUN_ID": str(run_id), "GITML_REGISTRY": ghcr},
                           secrets=KUBECONFIG,
                           variables=variables)  # fmt: skip


def cluster_calls(team: Fork) -> list[list[str]]:
    """What reached the cluster (kubectl other than rendering): nothing may, after a refusal."""
    return [args for args in team.runner.recorded("kubectl") if args[:1] != ["kustomize"]]


@pytest.fixture(scope="module")
def without_production_url(
    team: Fork, ghcr: str, released: Result, unpermitted_push: Result
) -> Result:
    return move_production_tag(team, ghcr, 720, {"STAGING_URL": STAGING})


@pytest.fixture(scope="module")
def at_stagings_url(team: Fork, ghcr: str, without_production_url: Result) -> Result:
    team.github.add_environment("production", reviewers=1)
    return move_production_tag(
        team, ghcr, 722, {"STAGING_URL": STAGING, "PRODUCTION_URL": STAGING}
    )


def test_production_without_its_url_is_refused_not_sent_to_staging(
    team: Fork, without_production_url: Result
) -> None:
    result = without_production_url
    assert result.succeeded("from-tag"), result.job_output("from-tag")[-4000:]
    assert result.jobs.get("tag-deploy") == "failed", result.job_output("tag-deploy")[-4000:]
    said = result.job_output("tag-deploy")
    assert "variable PRODUCTION_URL is not set" in said and "nothing was deployed" in said
    assert cluster_calls(team) == []
    # GitHub would create the environment at this deploy, unprotected: the run says so
    assert ("::warning title=Production is not protected::the production environment does "
            "not exist") in said  # fmt: skip


def test_production_at_stagings_url_is_refused(team: Fork, at_stagings_url: Result) -> None:
    result = at_stagings_url
    assert result.jobs.get("tag-deploy") == "failed", result.job_output("tag-deploy")[-4000:]
    said = result.job_output("tag-deploy")
    assert f"variable PRODUCTION_URL is staging's URL ({STAGING})" in said
    assert cluster_calls(team) == []
    assert "Production is not protected" not in said  # a reviewer is required now


# --- a release re-run after GHCR refused its image ---------------------------------------------


@pytest.fixture(scope="module")
def refused_push(team: Fork, ghcr: str, at_stagings_url: Result) -> Result:
    """A second merge, whose image push an organisation's package policy refuses."""
    (team.clone / "NOTES.md").write_text("A second merge: same model, next version.\n")
    team.git("add", "NOTES.md")
    team.git("commit", "-qm", "Notes")
    team.git("push", "-q", "origin", "main")
    team.github.state.package_policy_refusal = POLICY
    try:
        return release(team, ghcr, 702, attempt=1)
    finally:
        team.github.state.package_policy_refusal = ""  # an admin fixes the package's settings


@pytest.fixture(scope="module")
def rerun(team: Fork, ghcr: str, refused_push: Result) -> Result:
    return release(team, ghcr, 702, attempt=2)


def versions(team: Fork) -> list[str]:
    return [tag for tag in team.origin_tags() if "@" in tag]


def test_ghcr_refusing_the_push_fails_the_build_after_the_version_is_registered(
    team: Fork, ghcr: str, refused_push: Result
) -> None:
    assert refused_push.jobs.get("build") == "failed", refused_push.output[-6000:]
    assert f"denied: {POLICY}" in refused_push.job_output("build")
    assert versions(team) == ["bike-demand@v0.0.1", "bike-demand@v0.0.2"]
    assert not pushed(ghcr, "v0.0.2")


def test_the_rerun_reuses_the_version_and_ships_the_image(
    team: Fork, ghcr: str, rerun: Result
) -> None:
    assert rerun.succeeded("build"), rerun.job_output("build")[-6000:]
    assert "HEAD is already bike-demand@v0.0.2" in rerun.job_output("build")
    # no second version of one commit
    assert versions(team) == ["bike-demand@v0.0.1", "bike-demand@v0.0.2"]
    assert pushed(ghcr, "v0.0.2")
