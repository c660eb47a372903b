import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gitml.registry import app, image_digest, stage_assignment


@pytest.mark.parametrize("stage", ["staging", "production"])
def test_a_stage_tag_names_stage_and_version(stage: str) -> None:
    ref = {"tag": f"bike-demand#{stage}#4", "event": "assignment", "stage": stage,
           "version": "v0.0.2"}  # fmt: skip
    assert stage_assignment(ref) == (stage, "v0.0.2")


@pytest.mark.parametrize(
    "ref",
    [
        {"tag": "bike-demand@v1.0.0", "event": "registration", "version": "v1.0.0"},
        {"tag": "bike-demand#qa#1", "event": "assignment", "stage": "qa", "version": "v1"},
        # a stage tag that takes the stage away, or retires the model, must not deploy it
        {
            "tag": "bike-demand#production!#5",
            "event": "unassignment",
            "stage": "production",
            "version": "v0.0.2",
        },
        {
            "tag": "bike-demand@deprecated",
            "event": "deprecation",
            "stage": "production",
            "version": "v0.0.2",
        },
        {},
    ],
)
def test_other_refs_are_refused(ref: dict[str, str]) -> None:
    with pytest.raises(
        ValueError, match=r"does not assign one of \('staging', 'production'\)"
    ) as err:
        stage_assignment(ref)
    assert repr(ref.get("tag")) in str(err.value)


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-in `gto` and `docker` first on PATH (the real ones need the repository's tags and
    a registry); each records its arguments and prints what the real one would."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    answers = {
        "gto": json.dumps({"tag": "bike-demand#production#4", "event": "assignment",
                           "stage": "production", "version": "v0.0.2"}),
        "docker": json.dumps({"digest": "sha256:" + "ab" * 32, "mediaType": "x"}),
    }  # fmt: skip
    for name, answer in answers.items():
        script = bin_dir / name
        script.write_text(
            f"#!/bin/sh\necho \"{name} $*\" >> {calls}\ncat <<'JSON'\n{answer}\nJSON\n"
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_from_tag_prints_stage_version_and_the_pushed_digest(
    stand_ins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    result = CliRunner().invoke(
        app, ["--tag", "bike-demand#production#4", "--image", "ghcr.io/team/gitml"]
    )
    assert result.exit_code == 0, result.output
    expected = ["stage=production", "version=v0.0.2", "digest=sha256:" + "ab" * 32]
    assert result.output.splitlines() == expected
    assert outputs.read_text().splitlines() == expected
    assert stand_ins.read_text().splitlines() == [
        "gto check-ref bike-demand#production#4 --json",
        "docker buildx imagetools inspect ghcr.io/team/gitml:v0.0.2 --format {{json .Manifest}}",
    ]


def test_from_tag_refuses_a_tag_that_is_not_a_stage_assignment(
    stand_ins: Path, tmp_path: Path
) -> None:
    (tmp_path / "bin" / "gto").write_text('#!/bin/sh\necho "gto: not a tag" >&2\n')
    result = CliRunner(mix_stderr=False).invoke(app, ["--tag", "v1", "--image", "x"])
    assert result.exit_code == 1
    assert "does not assign one of" in result.stderr and "gto: not a tag" in result.stderr
    assert not stand_ins.exists()  # no digest asked (the stand-in gto records nothing)


def test_a_failing_registry_lookup_is_an_error(stand_ins: Path, tmp_path: Path) -> None:
    (tmp_path / "bin" / "docker").write_text("#!/bin/sh\necho 'manifest unknown' >&2\nexit 1\n")
    with pytest.raises(subprocess.CalledProcessError) as failure:
        image_digest("ghcr.io/team/gitml", "v9.9.9")
    assert "manifest unknown" in failure.value.stderr
