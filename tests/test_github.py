"""The one GitHub REST client and step-output writer the workflows' commands share."""

from pathlib import Path

import pytest

from gitml.github import GitHub, GitHubError, step_outputs


def test_step_outputs_append_key_value_lines_on_github(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = tmp_path / "github_output"
    outputs.write_text("earlier=1\n")
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    step_outputs({"branch": "retrain/production-20261127-0104", "pr": "7"})
    assert outputs.read_text() == ("earlier=1\nbranch=retrain/production-20261127-0104\npr=7\n")


def test_step_outputs_write_nothing_off_github(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    monkeypatch.chdir(tmp_path)
    step_outputs({"pr": "7"})
    assert list(tmp_path.iterdir()) == []


def test_a_missing_token_names_the_variable_and_the_permission() -> None:
    class Pulls(GitHub):
        permission = "pull-requests: write"

    with pytest.raises(GitHubError) as missing:
        Pulls({"GITHUB_REPOSITORY": "a/b"})
    assert str(missing.value) == (
        "environment variable GITHUB_TOKEN is not set: the workflow passes "
        "`GITHUB_TOKEN: ${{ github.token }}` (permissions: pull-requests: write)"
    )
    client = Pulls({"GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": "a/b"})
    assert (client.api, client.repository, client.token) == ("https://api.github.com", "a/b", "t")
