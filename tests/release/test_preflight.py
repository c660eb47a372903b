"""gitml.release.preflight: a deploy job names each missing or unsound setting as the user sets
it on GitHub, and says when production deploys with nobody asked (GitHub's API, on loopback)."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitml.config import PROJ_ROOT
from gitml.release.preflight import problems, protection, same_service, url_of
from tests.workflows.github import FakeGitHub

CLUSTER = {"KUBECONFIG_DATA": "apiVersion: v1"}


def test_nothing_missing_when_both_are_set() -> None:
    assert problems("staging", {**CLUSTER, "SMOKE_URL": "https://s"}) == []


@pytest.mark.parametrize("env", ["staging", "production"])
def test_each_missing_setting_is_named_as_on_github(env: str) -> None:
    found = problems(env, {"KUBECONFIG_DATA": " ", "SMOKE_URL": ""})
    assert found[0].startswith("secret KUBECONFIG is not set")
    assert found[1].startswith(f"variable {env.upper()}_URL is not set")
    assert len(found) == 2


@pytest.mark.parametrize("env", ["staging", "production"])
def test_without_smoke_url_the_environments_own_variable_is_its_url(env: str) -> None:
    urls = {"STAGING_URL": "https://staging.example", "PRODUCTION_URL": "https://prod.example"}
    assert url_of(env, urls) == urls[f"{env.upper()}_URL"]
    assert url_of(env, {**urls, "SMOKE_URL": "https://elsewhere"}) == "https://elsewhere"
    assert problems(env, {**CLUSTER, **urls}) == []


def test_production_without_its_url_never_falls_back_to_staging() -> None:
    found = problems("production", {**CLUSTER, "STAGING_URL": "https://staging.example"})
    assert found == ["variable PRODUCTION_URL is not set (where the smoke checks reach the "
                     "production service)"]  # fmt: skip


@pytest.mark.parametrize(
    "production",
    [
        "https://svc.example",
        "https://svc.example/",
        "HTTPS://SVC.example:443",
        "https://svc.example:443/",
    ],
)
def test_production_at_stagings_url_is_refused(production: str) -> None:
    env = {**CLUSTER, "PRODUCTION_URL": production, "STAGING_URL": "https://svc.example"}
    (found,) = problems("production", env)
    assert found == (f"variable PRODUCTION_URL is staging's URL ({production}): production's "
                     "smoke checks would reach staging and pass whatever production serves")  # fmt: skip


@pytest.mark.parametrize(
    "other",
    [
        "https://svc.example:8443",
        "http://svc.example",
        "https://prod.svc.example",
        "https://svc.example/prod",
    ],
)
def test_another_address_is_another_service(other: str) -> None:
    assert not same_service(other, "https://svc.example")
    assert problems("production", {**CLUSTER, "PRODUCTION_URL": other,
                                   "STAGING_URL": "https://svc.example"}) == []  # fmt: skip


def test_staging_is_never_compared_with_itself() -> None:
    env = {**CLUSTER, "STAGING_URL": "https://svc.example", "SMOKE_URL": "https://svc.example"}
    assert problems("staging", env) == []


# --- the production environment's protection, as GitHub's API answers --------------------------

REPOSITORY = "acme/bikes"


@pytest.fixture
def github(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    with FakeGitHub(tmp_path, REPOSITORY) as server:
        server.add_token("reader", {"actions": "read"})
        server.add_token("blind", {"contents": "read"})
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
        yield server


def job(github: FakeGitHub, token: str = "reader") -> dict[str, str]:
    return {"GITHUB_TOKEN": token, "GITHUB_REPOSITORY": REPOSITORY,
            "GITHUB_API_URL": f"https://{github.host}/api/v3"}  # fmt: skip


def test_required_reviewers_protect_production(github: FakeGitHub) -> None:
    github.add_environment("production", reviewers=1)
    assert protection("production", job(github)) == ("", "")


def test_a_wait_timer_protects_production_too(github: FakeGitHub) -> None:
    github.add_environment("production", wait_minutes=30)
    assert protection("production", job(github)) == ("", "")


def test_an_environment_without_rules_is_a_warning(github: FakeGitHub) -> None:
    github.add_environment("production")
    level, message = protection("production", job(github))
    assert level == "warning"
    assert message.startswith("the production environment exists with no protection rule")
    assert "Settings > Environments > production" in message


def test_a_missing_environment_is_created_unprotected_by_the_deploy(github: FakeGitHub) -> None:
    level, message = protection("production", job(github))
    assert level == "warning"
    assert message.startswith("the production environment does not exist, so GitHub creates it")


def test_rules_that_cannot_be_read_are_said_to_be_unconfirmed(github: FakeGitHub) -> None:
    level, message = protection("production", job(github, "blind"))  # no actions: read
    assert level == "notice" and "could not be read" in message and "403" in message
    level, message = protection("production", {})
    assert level == "notice" and "passes no GITHUB_TOKEN" in message


def test_make_deploy_preflight_fails_before_deploying(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    env = {k: v for k, v in os.environ.items()
           if k not in ("KUBECONFIG_DATA", "SMOKE_URL", "PRODUCTION_URL", "GITHUB_TOKEN")}  # fmt: skip
    result = subprocess.run(
        ["make", "-s", "deploy-preflight", "ENV=production", f"STDLIB_PYTHON={sys.executable}"],
        cwd=PROJ_ROOT, capture_output=True, text=True, check=False,
        env={**env, "STAGING_URL": "https://staging.example", "GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    assert result.returncode != 0
    assert "::error title=Deploy to production not configured::secret KUBECONFIG" in result.stderr
    assert "variable PRODUCTION_URL is not set" in result.stderr
    assert "::notice title=Production is not protected::" in result.stdout
    assert summary.read_text().startswith("### Production is not protected")
