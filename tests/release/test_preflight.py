"""gitml.release.preflight: a deploy job names each missing setting as the user sets it on GitHub."""

import os
import subprocess
import sys

import pytest

from gitml.config import PROJ_ROOT
from gitml.release.preflight import missing


def test_nothing_missing_when_both_are_set() -> None:
    assert (
        missing("staging", {"KUBECONFIG_DATA": "apiVersion: v1", "SMOKE_URL": "https://s"}) == []
    )


@pytest.mark.parametrize("env", ["staging", "production"])
def test_each_missing_setting_is_named_as_on_github(env: str) -> None:
    problems = missing(env, {"KUBECONFIG_DATA": " ", "SMOKE_URL": ""})
    assert problems[0].startswith("secret KUBECONFIG is not set")
    assert problems[1].startswith(f"variable {env.upper()}_URL is not set")


def test_make_deploy_preflight_fails_before_deploying() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG_DATA", "SMOKE_URL")}
    result = subprocess.run(
        ["make", "-s", "deploy-preflight", "ENV=production", f"STDLIB_PYTHON={sys.executable}"],
        cwd=PROJ_ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "::error title=Deploy to production not configured::secret KUBECONFIG" in result.stderr
    assert "variable PRODUCTION_URL is not set" in result.stderr
