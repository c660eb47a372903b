import json
from pathlib import Path

import pytest

from gitml.pull_requests.runner import CLOUD_LABELS, GITHUB_HOSTED, choose, main, online_runners
from tests.fake_github import FakeGitHub

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


@pytest.mark.parametrize("labels", ["gpu", '{"a": 1}', "[1, 2]"])
def test_malformed_labels_name_the_variable(labels: str) -> None:
    with pytest.raises(ValueError, match="GPU_RUNNER_LABELS"):
        choose({**SAME_REPO, "GPU_RUNNER_LABELS": labels}, [])


RUNNERS = "/repos/team/project/actions/runners?per_page=100"


def runner(name: str, status: str, *labels: str) -> dict[str, object]:
    return {"name": name, "status": status, "labels": [{"name": x} for x in labels]}


def test_online_runners_lists_only_the_online_ones(github_api: FakeGitHub) -> None:
    github_api.routes[RUNNERS] = (200, {"total_count": 3, "runners": [
        runner("gpu-box", "online", "self-hosted", "gpu"),
        runner("old-box", "offline", "self-hosted", "gpu", "old"),
        runner("cpu-box", "online", "self-hosted", "cpu"),
    ]})  # fmt: skip
    assert online_runners("team/project", "t0ken") == [
        {"self-hosted", "gpu"},
        {"self-hosted", "cpu"},
    ]
    assert github_api.requests == [("GET", RUNNERS, "Bearer t0ken")]
    assert github_api.accepted == ["application/vnd.github+json"]


def test_main_asks_github_and_writes_the_step_outputs(
    github_api: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    github_api.routes[RUNNERS] = (200, {"runners": [runner("b", "offline", "self-hosted", "gpu")]})
    outputs = tmp_path / "outputs"
    for name, value in {"IS_FORK": "false", "GPU_RUNNER_LABELS": GPU, "GITHUB_OUTPUT": str(outputs),
                        "RUNNER_CHECK_TOKEN": "t0ken", "GITHUB_REPOSITORY": "team/project"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GPU_RUNNER_SKIP_CHECK", raising=False)
    monkeypatch.delenv("CML_CLOUD", raising=False)
    main()
    assert capsys.readouterr().out.splitlines() == [
        'runs-on=["ubuntu-latest"]',
        "kind=github-hosted",
        "reason=no runner with labels ['self-hosted', 'gpu'] is online",
    ]
    assert github_api.requests == [("GET", RUNNERS, "Bearer t0ken")]
    assert outputs.read_text().splitlines() == [
        'runs-on=["ubuntu-latest"]',
        "kind=github-hosted",
        "reason=no runner with labels ['self-hosted', 'gpu'] is online",
    ]
    # with the check skipped, GitHub is not asked at all
    monkeypatch.setenv("GPU_RUNNER_SKIP_CHECK", "true")
    main()
    assert outputs.read_text().splitlines()[3] == 'runs-on=["self-hosted", "gpu"]'
    assert len(github_api.requests) == 1


def test_main_without_a_token_does_not_ask_github(
    github_api: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = tmp_path / "outputs"
    for name, value in {"IS_FORK": "false", "GPU_RUNNER_LABELS": GPU, "GITHUB_OUTPUT": str(outputs),
                        "GITHUB_REPOSITORY": "team/project"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("RUNNER_CHECK_TOKEN", "GPU_RUNNER_SKIP_CHECK", "CML_CLOUD"):
        monkeypatch.delenv(name, raising=False)
    main()
    assert "RUNNER_CHECK_TOKEN is not set" in outputs.read_text()
    assert github_api.requests == []


def test_online_runners_asks_the_api_the_workflow_names(
    github_api: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On GitHub Enterprise Server the API is https://HOST/api/v3 (GITHUB_API_URL), not
    api.github.com: the check asks there."""
    monkeypatch.setenv("GITHUB_API_URL", "https://api.github.com/api/v3")
    github_api.routes[f"/api/v3{RUNNERS}"] = (200, {"runners": [
        runner("gpu-box", "online", "self-hosted", "gpu")]})  # fmt: skip
    assert online_runners("team/project", "t0ken") == [{"self-hosted", "gpu"}]
    assert github_api.requests == [("GET", f"/api/v3{RUNNERS}", "Bearer t0ken")]
