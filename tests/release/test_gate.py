"""The champion/challenger gate: a candidate worse than production's model beyond noise and
tolerance is refused; an override lets it through and is recorded."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from gitml.config import PROJ_ROOT, load_params
from gitml.dataset import TARGET, TIME
from gitml.pull_requests.bootstrap import mae
from gitml.release.gate import judge
from gitml.schema import as_model_input
from tests.example_data import example_only
from tests.faulty_model import Shifted


@pytest.fixture(scope="module")
def settings() -> dict[str, Any]:
    return load_params("gate")


@pytest.fixture(scope="module")
def worse_model(trained_model: Any, splits: dict[str, pd.DataFrame]) -> Any:
    """The trained model, every prediction off by the target's standard deviation."""
    return Shifted(trained_model, float(splits["train"][TARGET].std()))


@pytest.fixture(scope="module")
def fewer_rounds(splits: dict[str, pd.DataFrame], params: dict[str, Any]) -> Any:
    """A params change that makes the example's model worse: boosting stopped after 3 rounds."""
    from gitml.pipeline.train import fit

    train = copy.deepcopy(params["train"])
    train["hyperparams"]["hist_gradient_boosting"]["max_iter"] = 3
    pipeline, _ = fit(splits["train"], params["features"], train)
    return pipeline


def predictions(model: Any, window: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict(as_model_input(window)), dtype=float)


@example_only
def test_a_params_change_that_cuts_boosting_rounds_is_refused(
    trained_model: Any, fewer_rounds: Any, splits: dict[str, pd.DataFrame],
    settings: dict[str, Any],
) -> None:  # fmt: skip
    window = splits["test"]
    result = judge(window, predictions(trained_model, window), predictions(fewer_rounds, window),
                   settings)  # fmt: skip
    assert not result["passed"] and result["candidate_mae"] > result["champion_mae"]


def test_the_same_model_passes_with_no_difference(
    trained_model: Any, splits: dict[str, pd.DataFrame], settings: dict[str, Any]
) -> None:
    window = splits["test"]
    same = predictions(trained_model, window)
    result = judge(window, same, same, settings)
    assert result["passed"] and result["difference"] == 0 and result["interval"] == [0, 0]
    assert result["champion_mae"] == pytest.approx(mae(window[TARGET].to_numpy(float), same), 1e-3)
    assert result["window"]["rows"] == len(window)


def test_a_worse_candidate_is_refused_and_the_better_one_passes(
    trained_model: Any, worse_model: Any, splits: dict[str, pd.DataFrame],
    settings: dict[str, Any],
) -> None:  # fmt: skip
    window = splits["test"]
    good, bad = predictions(trained_model, window), predictions(worse_model, window)
    refused = judge(window, good, bad, settings)
    assert not refused["passed"]
    assert refused["interval"][0] > settings["tolerance"] * refused["champion_mae"]
    assert refused["candidate_mae"] > refused["champion_mae"]
    assert judge(window, bad, good, settings)["passed"]  # the other way round


def test_worse_within_the_tolerance_passes(
    trained_model: Any, splits: dict[str, pd.DataFrame], settings: dict[str, Any]
) -> None:
    window = splits["test"]
    good = predictions(trained_model, window)
    actual = window[TARGET].to_numpy(float)
    # every error a little larger: the MAE grows by half the tolerance
    slightly = good + np.sign(good - actual) * settings["tolerance"] / 2 * mae(actual, good)
    result = judge(window, good, slightly, settings)
    assert 0 < result["difference"] <= settings["tolerance"] * result["champion_mae"]
    assert result["passed"]
    # and by twice the tolerance: refused
    beyond = good + np.sign(good - actual) * settings["tolerance"] * 2 * mae(actual, good)
    assert not judge(window, good, beyond, settings)["passed"]


def save(tmp_path: Path, champion: Any, candidate: Any, window: pd.DataFrame) -> None:
    joblib.dump(champion, tmp_path / "champion.joblib")
    joblib.dump(candidate, tmp_path / "candidate.joblib")
    window.to_parquet(tmp_path / "window.parquet")


def models(tmp_path: Path) -> tuple[str, ...]:
    return ("--champion", str(tmp_path / "champion.joblib"),
            "--candidate", str(tmp_path / "candidate.joblib"),
            "--window", str(tmp_path / "window.parquet"))  # fmt: skip


def gate(
    tmp_path: Path, *args: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gitml", "gate", *args, "--out",
                           str(tmp_path / "gate.json")], capture_output=True, text=True,
                          check=False, cwd=cwd, env={**os.environ, **env} if env else None)  # fmt: skip


def test_the_command_refuses_a_worse_candidate_unless_overridden(
    tmp_path: Path, trained_model: Any, worse_model: Any, splits: dict[str, pd.DataFrame]
) -> None:
    save(tmp_path, trained_model, worse_model, splits["test"])
    refused = gate(tmp_path, *models(tmp_path))
    assert refused.returncode == 1
    assert "The candidate is refused" in refused.stdout
    assert 'GATE_OVERRIDE="why"' in refused.stderr
    recorded = json.loads((tmp_path / "gate.json").read_text())
    assert recorded["passed"] is False and "override" not in recorded

    overridden = gate(
        tmp_path, *models(tmp_path), "--override", "the old model leaks a retired column"
    )
    assert overridden.returncode == 0, overridden.stderr
    recorded = json.loads((tmp_path / "gate.json").read_text())
    assert recorded["passed"] is False
    assert recorded["override"] == "the old model leaks a retired column"


def test_advisory_reports_a_refusal_without_failing_and_tells_the_workflow(
    tmp_path: Path, trained_model: Any, worse_model: Any, splits: dict[str, pd.DataFrame]
) -> None:
    save(tmp_path, trained_model, worse_model, splits["test"])
    outputs = tmp_path / "github_output"
    advised = gate(tmp_path, *models(tmp_path), "--advisory", GITHUB_OUTPUT=str(outputs))
    assert advised.returncode == 0, advised.stderr
    assert "The candidate is refused" in advised.stdout and "advisory" in advised.stdout
    assert json.loads((tmp_path / "gate.json").read_text())["passed"] is False
    assert outputs.read_text() == "passed=false\nmessage=\n"


def test_a_gate_override_trailer_in_the_commit_releases_and_names_the_reason(
    tmp_path: Path, trained_model: Any, worse_model: Any, splits: dict[str, pd.DataFrame]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    save(tmp_path, trained_model, worse_model, splits["test"])
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    sh("git", "init", "-q", cwd=repo)
    message = "Merge retrain\n\nThe old model reads a sensor that was retired.\n\n" \
        "Gate-Override: production reads a retired sensor\n"  # fmt: skip
    sh("git", *identity, "commit", "-q", "--allow-empty", "-m", message, cwd=repo)
    outputs = tmp_path / "github_output"
    released = gate(
        tmp_path,
        *models(tmp_path),
        cwd=repo,
        GITHUB_OUTPUT=str(outputs),
        GATE_OVERRIDE="",
        PYTHONPATH=str(PROJ_ROOT),
    )  # fmt: skip (the worse model's module)
    assert released.returncode == 0, released.stderr
    recorded = json.loads((tmp_path / "gate.json").read_text())
    assert recorded["passed"] is False
    assert recorded["override"] == "production reads a retired sensor"
    assert outputs.read_text() == (
        "passed=false\nmessage=gate overridden: production reads a retired sensor\n"
    )


def repository(path: Path, commits: int = 1) -> Path:
    """A git repository with `commits` empty commits and no tags."""
    path.mkdir()
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    sh("git", "init", "-q", cwd=path)
    for n in range(commits):
        sh("git", *identity, "commit", "-q", "--allow-empty", "-m", f"commit {n}", cwd=path)
    return path


def gate_in(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, dict[str, Any] | None]:
    """`gate --name demand ARGS` in `repo`, in process: (exit code, output, gate.json)."""
    from typer.testing import CliRunner

    from gitml.release import gate as command

    monkeypatch.chdir(repo)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    monkeypatch.setenv("GATE_OVERRIDE", "")
    out = tmp_path / "gate.json"
    out.unlink(missing_ok=True)
    result = CliRunner().invoke(command.app, ["--name", "demand", *args, "--out", str(out)])
    return result.exit_code, result.output, json.loads(out.read_text()) if out.exists() else None


def test_a_first_release_passes_and_says_nothing_is_in_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = repository(tmp_path / "repo")
    sh("git", "tag", "demand@v0.1.0", cwd=repo)  # registered, never promoted
    sh("git", "tag", "other#production#1", cwd=repo)  # another artifact's
    code, output, verdict = gate_in(repo, tmp_path, monkeypatch)
    assert code == 0, output
    assert "gate: no model in production yet: nothing to beat, the candidate passes" in output
    assert verdict is not None and verdict["passed"] is True


def test_a_lookup_that_cannot_tell_refuses_the_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shallow checkout (actions/checkout's default) may lack production's tag: not knowing
    whether a model is in production is no first release."""
    origin = repository(tmp_path / "origin", commits=2)
    sh("git", "tag", "demand#production#1", "HEAD~1", cwd=origin)
    sh("git", "clone", "-q", "--depth", "1", f"file://{origin}", "shallow", cwd=tmp_path)
    code, output, verdict = gate_in(tmp_path / "shallow", tmp_path, monkeypatch)
    assert code == 1 and verdict is None
    assert "gate: the checkout is shallow, so its tags may be incomplete" in output
    assert "fetch-depth: 0" in output
    code, output, verdict = gate_in(tmp_path / "shallow", tmp_path, monkeypatch, "--advisory")
    assert code == 0 and verdict is not None and verdict["passed"] is False
    assert verdict["note"].startswith("production's model could not be fetched: the checkout is")
    # outside a repository, git itself fails: refused as well
    outside = tmp_path / "not-a-repository"
    outside.mkdir()
    code, output, _ = gate_in(outside, tmp_path, monkeypatch)
    assert code == 1 and "gate: git rev-parse --is-shallow-repository failed" in output


def test_without_a_champion_or_an_artifact_there_is_nothing_to_judge(tmp_path: Path) -> None:
    refused = gate(tmp_path)
    assert refused.returncode == 2
    assert "give the model to beat (--champion) or the GTO artifact" in refused.stderr
    assert not (tmp_path / "gate.json").exists()


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], None),
        (["demand@v1.0.0", "demand#staging#2", "demand-eu#production#3", "x#production#4"], None),
        (["demand#production#2"], "demand#production#2"),
        (["demand#production#9", "demand#production#10", "demand#production#3"], "demand#production#10"),
        (["demand#production#2", "demand#production!#5"], None),  # taken out of production
        (["demand#production#2", "demand#production!#5", "demand#production#7"], "demand#production#7"),
        (["demand#production!#5", "demand#production#2"], None),  # the count orders, not the list
        (["demand@v1.0.0", "other#production#1", "demand#production#2"], "demand#production#2"),
    ],
)  # fmt: skip
def test_production_is_the_latest_production_event_by_gtos_count(
    tags: list[str], expected: str | None
) -> None:
    from gitml.release.gate import production_tag

    assert production_tag("demand", tags, shallow=False) == expected


def test_a_tag_the_gate_cannot_order_or_a_shallow_checkout_is_an_error() -> None:
    from gitml.release.gate import GateError, production_tag

    with pytest.raises(GateError, match=r"^demand#production: a stage tag without its count"):
        production_tag("demand", ["demand#production#1", "demand#production"], shallow=False)
    with pytest.raises(GateError) as err:
        production_tag("demand", [], shallow=True)
    assert str(err.value) == (
        "the checkout is shallow, so its tags may be incomplete and whether demand is in "
        "production cannot be told: fetch the whole history (actions/checkout with "
        "fetch-depth: 0)"
    )
    assert production_tag("demand", ["demand#staging"], shallow=False) is None  # not production


# --- production's model, as GTO names it and DVC stores it --------------------------------


def sh(*args: str, cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


@pytest.mark.slow  # a git repository, DVC remote and GTO tags of its own
def test_production_model_is_the_version_gto_has_in_production(
    tmp_path: Path, trained_model: Any, worse_model: Any, splits: dict[str, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from gitml.release.gate import MODEL_IN_GIT, production_model

    for variable in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{variable}_NAME", "gate test")
        monkeypatch.setenv(f"GIT_{variable}_EMAIL", "gate@example.com")
    repo, python = tmp_path / "repo", sys.executable
    model = repo / MODEL_IN_GIT
    model.parent.mkdir(parents=True)
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh(python, "-m", "dvc", "init", "-q", cwd=repo)
    sh(python, "-m", "dvc", "remote", "add", "-d", "storage", str(tmp_path / "remote"), cwd=repo)
    monkeypatch.chdir(repo)
    assert production_model("demand", tmp_path / "none.joblib") is None  # nothing released

    for version, fitted in (("v1.0.0", worse_model), ("v1.1.0", trained_model)):
        joblib.dump(fitted, model)
        sh(python, "-m", "dvc", "add", MODEL_IN_GIT, cwd=repo)
        sh("git", "add", "-A", cwd=repo)
        sh("git", "commit", "-q", "-m", version, cwd=repo)
        sh(python, "-m", "dvc", "push", "-q", cwd=repo)
        sh("gto", "register", "demand", "--version", version, cwd=repo)
    # production runs v1.0.0 (the newer v1.1.0 is registered but not promoted)
    sh("gto", "assign", "demand", "--version", "v1.0.0", "--stage", "production", cwd=repo)
    found = production_model("demand", tmp_path / "champion.joblib")
    assert found is not None and found[1] == "demand@v1.0.0"
    fetched = found[0]
    rows = splits["test"].head(50)
    np.testing.assert_array_equal(
        predictions(joblib.load(fetched), rows), predictions(worse_model, rows)
    )
    # promoted: production's model is now v1.1.0
    sh("gto", "assign", "demand", "--version", "v1.1.0", "--stage", "production", cwd=repo)
    found = production_model("demand", tmp_path / "champion.joblib")
    assert found is not None and found[1] == "demand@v1.1.0"
    promoted = found[0]
    np.testing.assert_array_equal(
        predictions(joblib.load(promoted), rows), predictions(trained_model, rows)
    )


def test_the_verdict_records_the_window_both_maes_and_the_day_block_interval(
    trained_model: Any, worse_model: Any, splits: dict[str, pd.DataFrame],
    settings: dict[str, Any],
) -> None:  # fmt: skip
    from gitml.pull_requests.bootstrap import paired_difference_ci

    window = splits["test"]
    good, bad = predictions(trained_model, window), predictions(worse_model, window)
    actual = window[TARGET].to_numpy(float)
    dates = window[TIME].dt.date.astype(str).to_numpy()
    difference, low, high = paired_difference_ci(
        actual, bad, good, dates, mae, n_resamples=settings["bootstrap_resamples"],
        seed=settings["seed"],
    )  # fmt: skip
    assert judge(window, good, bad, settings) == {
        "window": {"from": str(window[TIME].min()), "to": str(window[TIME].max()),
                   "rows": len(window), "days": len(set(dates))},
        "champion_mae": round(mae(actual, good), 4),
        "candidate_mae": round(mae(actual, bad), 4),
        "difference": round(difference, 4),
        "interval": [round(low, 4), round(high, 4)],
        "tolerance": settings["tolerance"],
        "passed": False,
    }  # fmt: skip


def test_an_equal_candidate_passes_even_with_no_tolerance(
    trained_model: Any, splits: dict[str, pd.DataFrame], settings: dict[str, Any]
) -> None:
    window = splits["test"]
    same = predictions(trained_model, window)
    assert judge(window, same, same, {**settings, "tolerance": 0.0})["passed"]  # not worse


def test_the_summary_reads_the_verdict() -> None:
    from gitml.release.gate import summary

    result = {"window": {"from": "2024-04-01 00:00:00", "to": "2024-04-14 23:00:00",
                         "rows": 336, "days": 14},
              "champion_mae": 40.0, "candidate_mae": 45.5, "difference": 5.5,
              "interval": [2.25, 8.75], "tolerance": 0.02, "passed": False}  # fmt: skip
    assert summary(result) == (
        "gate: on 336 rows (14 days, 2024-04-01 00:00:00 to 2024-04-14 23:00:00), candidate "
        "MAE 45.500 vs champion 40.000: difference +5.500, 95 % interval [+2.250, +8.750]; "
        "allowed worse: 2% of the champion's MAE. The candidate is refused."
    )
    assert summary({**result, "passed": True}).endswith("The candidate passes.")


def test_blocks_are_days_whatever_the_minutes(
    trained_model: Any, splits: dict[str, pd.DataFrame], settings: dict[str, Any]
) -> None:
    window = splits["test"].head(96).copy()  # four days, every other row half past the hour
    window.loc[window.index[::2], TIME] += pd.Timedelta(minutes=30)
    same = predictions(trained_model, window)
    assert judge(window, same, same, settings)["window"]["days"] == window[TIME].dt.date.nunique()


@pytest.mark.parametrize(
    ("result", "outputs"),
    [
        ({"passed": True}, {"passed": "true", "message": ""}),
        ({"passed": False}, {"passed": "false", "message": ""}),
        ({"passed": False, "override": "  a retired\nsensor "},
         {"passed": "false", "message": "gate overridden: a retired sensor"}),
    ],
)  # fmt: skip
def test_the_verdict_as_step_outputs_is_one_line_each(
    result: dict[str, Any], outputs: dict[str, str]
) -> None:
    from gitml.release.gate import verdict_outputs

    assert verdict_outputs(result) == outputs
