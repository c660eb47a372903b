"""The autoscaled GPU runner shipped as configuration (deploy/arc): actions-runner-controller's
runner scale set values, checked as far as this machine allows. No cluster or Helm here: the
values are checked against the chart's keys (values.schema.json: Helm ignores a misspelt key
silently), and the runner pod they describe against Kubernetes' own Pod schema."""

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gitml.config import PROJ_ROOT

ARC = PROJ_ROOT / "deploy" / "arc"
KUBERNETES_VERSION = "1.30.0"  # schemas bundled with kubernetes-validate: no network
NODE24_RUNNER = (2, 327, 1)  # the oldest runner that runs Node 24 actions


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return dict(yaml.safe_load((ARC / "values-gpu.yaml").read_text()))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded = json.loads((ARC / "values.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(loaded)
    return dict(loaded)


def test_the_values_are_the_charts(values: dict[str, Any], schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema).validate(values)


@pytest.mark.parametrize(
    "mistake",
    [{"maxRunner": 2}, {"minRunners": -1}, {"runnerScaleSetName": "GPU runners"},
     {"githubConfigSecret": ""}, {"containerMode": {"type": "docker"}}],
)  # fmt: skip
def test_a_misspelt_or_wrong_value_is_refused(
    values: dict[str, Any], schema: dict[str, Any], mistake: dict[str, Any]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({**values, **mistake})


def runner_pod(values: dict[str, Any]) -> dict[str, Any]:
    """The pod the scale set starts per job, as the chart builds it from `template`."""
    template = values["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "gitml-gpu-runner", **template.get("metadata", {})},
            "spec": template["spec"]}  # fmt: skip


def test_the_runner_pod_is_a_valid_pod(values: dict[str, Any]) -> None:
    kubernetes_validate.validate(runner_pod(values), KUBERNETES_VERSION, strict=True)


def test_each_job_gets_one_gpu_on_a_gpu_node(values: dict[str, Any]) -> None:
    spec = values["template"]["spec"]
    (runner,) = [c for c in spec["containers"] if c["name"] == "runner"]
    assert runner["command"] == ["/home/runner/run.sh"]  # the chart's runner entry point
    assert runner["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert values["minRunners"] == 0 and values["maxRunners"] >= 1


def test_the_runner_image_runs_node_24_actions_and_has_make(values: dict[str, Any]) -> None:
    dockerfile = (ARC / "runner" / "Dockerfile").read_text()
    version = re.search(r"^ARG RUNNER_VERSION=(\d+)\.(\d+)\.(\d+)$", dockerfile, re.M)
    assert version and tuple(map(int, version.groups())) >= NODE24_RUNNER
    assert "FROM ghcr.io/actions/actions-runner:${RUNNER_VERSION}" in dockerfile
    assert re.search(r"apt-get install .*\bmake\b", dockerfile)
    (runner,) = values["template"]["spec"]["containers"]
    assert runner["image"].endswith(":" + ".".join(version.groups()))


def test_the_scale_set_is_what_the_docs_tell_pr_yml_to_run_on(values: dict[str, Any]) -> None:
    name = values["runnerScaleSetName"]
    docs = (PROJ_ROOT / "docs" / "github.md").read_text()
    assert f"GPU_RUNNER_LABELS='[\"{name}\"]'" in docs
    assert "GPU_RUNNER_SKIP_CHECK=true" in docs
    config = yaml.safe_load((PROJ_ROOT / ".github" / "actionlint.yaml").read_text())
    assert name in config["self-hosted-runner"]["labels"]


def test_no_personal_token_registers_the_runners(values: dict[str, Any]) -> None:
    # a named secret holding a GitHub App's credentials, never a PAT in the values file
    assert isinstance(values["githubConfigSecret"], str)
    assert "ghp_" not in Path(ARC / "values-gpu.yaml").read_text()
