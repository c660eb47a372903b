import json

import pytest

from gitml.runner import CLOUD_LABELS, GITHUB_HOSTED, choose

GPU = json.dumps(["self-hosted", "gpu"])
SAME_REPO = {"IS_FORK": "false"}


@pytest.mark.parametrize(
    ("env", "online", "kind", "reason"),
    [
        ({"IS_FORK": "true", "GPU_RUNNER_LABELS": GPU}, [{"self-hosted", "gpu"}], "github-hosted", "fork"),
        ({"GPU_RUNNER_LABELS": GPU}, [{"self-hosted", "gpu"}], "github-hosted", "IS_FORK not set"),
        ({**SAME_REPO}, None, "github-hosted", "no GPU runner configured"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": GPU}, [{"self-hosted", "gpu", "linux"}], "self-hosted", "online"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": GPU}, [{"self-hosted", "cpu"}], "github-hosted", "is online"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": GPU}, None, "github-hosted", "RUNNER_CHECK_TOKEN"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": GPU, "GPU_RUNNER_SKIP_CHECK": "true"}, None, "self-hosted", "configured"),
        ({**SAME_REPO, "CML_CLOUD": "aws"}, None, "cloud", "aws"),
        ({**SAME_REPO, "GPU_RUNNER_LABELS": GPU, "CML_CLOUD": "aws"}, [], "cloud", "aws"),
    ],
)  # fmt: skip
def test_choose(
    env: dict[str, str], online: list[set[str]] | None, kind: str, reason: str
) -> None:
    choice = choose(env, online)
    assert choice.kind == kind
    assert reason in choice.reason
    expected = {"github-hosted": GITHUB_HOSTED, "cloud": CLOUD_LABELS}.get(kind, json.loads(GPU))
    assert choice.runs_on == expected


@pytest.mark.parametrize("labels", ["gpu", '{"a": 1}', "[1, 2]"])
def test_malformed_labels_name_the_variable(labels: str) -> None:
    with pytest.raises(ValueError, match="GPU_RUNNER_LABELS"):
        choose({**SAME_REPO, "GPU_RUNNER_LABELS": labels}, [])
