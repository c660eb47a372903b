"""Feedback: labelled production rows become a new, pushed version of the DVC-tracked data,
once, checked like raw data, and nothing is left half-added when DVC fails."""

import json
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from gitml import dataset
from gitml.config import load_params
from gitml.monitoring import feedback as feedback_command
from gitml.monitoring import monitor, retrain
from gitml.monitoring.feedback import FeedbackError, labelled_rows, unseen
from gitml.pipeline.validate import RAW_COLUMNS, RAW_DATA, DataValidationError, validate_feedback
from gitml.schema import EVENT_TIME, EVENT_TIME_FORMAT, FEATURES, as_model_input
from gitml.serving.predlog import PredictionLog, read_predictions, write_actuals

SERVED = datetime(2026, 11, 23, 12, tzinfo=UTC)


def serve(
    directory: Path, rows: pd.DataFrame, prefix: str = "req", events: bool = True,
    predictions: list[float] | None = None, when: datetime = SERVED,
) -> list[str]:  # fmt: skip
    """Log `rows` as a server would (one request per row, with the row's event time)."""
    log = PredictionLog(directory / "predictions", "v1", instance="pod")
    sent = json.loads(as_model_input(rows).to_json(orient="records"))
    ids = [f"{prefix}-{i}" for i in range(len(sent))]
    for i, (request_id, row, time) in enumerate(zip(ids, sent, rows[dataset.TIME], strict=True)):
        event = {EVENT_TIME: time.isoformat()} if events else {}
        log.append(request_id, [{**row, **event}], [predictions[i] if predictions else 1.0],
                   now=when + timedelta(seconds=i))  # fmt: skip
    log.close()
    return ids


def label(directory: Path, ids: list[str], rows: pd.DataFrame, name: str = "a.jsonl") -> None:
    truth = rows[dataset.TARGET].astype(float)
    write_actuals(directory / "actuals" / name, zip(ids, [0] * len(ids), truth, strict=True))


@pytest.fixture
def stream(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return splits["production"].sort_values(dataset.TIME).head(48).reset_index(drop=True)


def logged(tmp_path: Path) -> pd.DataFrame:
    return read_predictions(tmp_path / "predictions", tmp_path / "actuals")


def test_the_labelled_rows_are_the_rows_that_were_served(
    tmp_path: Path, stream: pd.DataFrame
) -> None:
    ids = serve(tmp_path, stream)
    label(tmp_path, ids[:40], stream.head(40))  # the last 8 hours have no actual yet
    rows = labelled_rows(logged(tmp_path))
    expected = stream.head(40)
    assert list(rows.columns) == [dataset.TIME, *FEATURES, dataset.TARGET]
    assert rows[dataset.TIME].tolist() == expected[dataset.TIME].tolist()
    assert rows[dataset.TARGET].tolist() == expected[dataset.TARGET].tolist()
    pd.testing.assert_frame_equal(
        as_model_input(rows), as_model_input(expected), check_dtype=False
    )
    validate_feedback(rows, "rows")  # they pass the raw data's column specs


def test_two_predictions_about_one_event_give_one_row_the_last_served(
    tmp_path: Path, stream: pd.DataFrame
) -> None:
    hour = stream.head(1)
    first = serve(tmp_path, hour, prefix="early", predictions=[1.0])
    again = serve(tmp_path, hour, prefix="late", predictions=[2.0], when=SERVED + timedelta(1))
    label(tmp_path, first + again, pd.concat([hour, hour]))
    rows = labelled_rows(logged(tmp_path))
    assert len(rows) == 1 and rows[dataset.TIME].iloc[0] == hour[dataset.TIME].iloc[0]


def test_no_actuals_yet_is_an_error_saying_so(tmp_path: Path, stream: pd.DataFrame) -> None:
    serve(tmp_path, stream)
    label(tmp_path, [], stream.head(0))
    with pytest.raises(FeedbackError, match="no logged row has an actual yet"):
        labelled_rows(logged(tmp_path))


def test_rows_logged_without_an_event_time_cannot_be_data(
    tmp_path: Path, stream: pd.DataFrame
) -> None:
    ids = serve(tmp_path, stream, events=False)
    label(tmp_path, ids, stream)
    with pytest.raises(
        FeedbackError, match=f"48 labelled rows .* without an event time .*{EVENT_TIME}"
    ):
        labelled_rows(logged(tmp_path))


def test_an_actual_that_breaks_the_targets_spec_is_named(
    tmp_path: Path, stream: pd.DataFrame
) -> None:
    spec = RAW_COLUMNS[dataset.TARGET]
    ids = serve(tmp_path, stream.head(2))
    if spec.kind == "int":  # a fraction of a count
        write_actuals(tmp_path / "actuals" / "a.jsonl", [(ids[0], 0, 1.5), (ids[1], 0, 2.0)])
        with pytest.raises(
            FeedbackError, match=f"whole numbers for the target '{dataset.TARGET}'"
        ):
            labelled_rows(logged(tmp_path))
        return
    if spec.low is None:
        pytest.skip(f"the target {dataset.TARGET!r} has no bound an actual could break")
    below = spec.low - 1.0  # under its lower bound
    write_actuals(tmp_path / "actuals" / "a.jsonl", [(ids[0], 0, below), (ids[1], 0, below)])
    with pytest.raises(DataValidationError, match=f"column '{dataset.TARGET}'"):
        validate_feedback(labelled_rows(logged(tmp_path)), "rows")


def test_rows_the_dataset_already_holds_are_left_out(tmp_path: Path, stream: pd.DataFrame) -> None:
    ids = serve(tmp_path, stream)
    label(tmp_path, ids, stream)
    rows = labelled_rows(logged(tmp_path))
    held = pd.concat([stream.head(30), stream.tail(5)])
    new = unseen(rows, held)
    assert new[dataset.TIME].tolist() == stream[dataset.TIME].iloc[30:43].tolist()
    assert unseen(rows, stream).empty


# --- the command, against a real DVC repository and remote ------------------------------


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)


def dvc(*args: str, cwd: Path) -> str:
    done = run(sys.executable, "-m", "dvc", *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def repository(tmp_path: Path, splits: dict[str, pd.DataFrame]) -> Path:
    """A DVC project whose data ends where the production stream begins, pushed to a remote."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    raw = pd.read_csv(RAW_DATA)
    times = dataset.clean(raw, load_params("data"))[dataset.TIME]
    start = splits["production"][dataset.TIME].min()
    raw[times < start].to_csv(repo / "data" / RAW_DATA.name, index=False)
    for command in (("git", "init", "-q"), (sys.executable, "-m", "dvc", "init", "-q")):
        assert run(*command, cwd=repo).returncode == 0
    dvc("remote", "add", "-d", "storage", str(tmp_path / "remote"), cwd=repo)
    dvc("add", "data", cwd=repo)
    dvc("push", cwd=repo)
    return repo


def feedback(repo: Path, logs: Path) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "gitml", "feedback", "--logs", str(logs / "predictions"),
               "--actuals", str(logs / "actuals"), "--data-dir", str(repo / "data"), cwd=repo)  # fmt: skip


@pytest.mark.slow  # real dvc add and push, several times
def test_feedback_adds_a_pushed_data_version_once_and_validate_reads_it(
    tmp_path: Path, repository: Path, splits: dict[str, pd.DataFrame]
) -> None:
    stream = splits["production"].sort_values(dataset.TIME).head(48)
    ids = serve(tmp_path, stream)
    label(tmp_path, ids, stream)
    before = (repository / "data.dvc").read_text()

    added = feedback(repository, tmp_path)
    assert added.returncode == 0, added.stderr
    assert "48 new rows (0 already held)" in added.stdout
    files = list((repository / "data" / "feedback").glob("*.parquet"))
    assert len(files) == 1 and len(pd.read_parquet(files[0])) == 48
    version = (repository / "data.dvc").read_text()
    assert version != before
    assert "in sync" in dvc("status", "--cloud", cwd=repository)  # the new version is pushed

    again = feedback(repository, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "nothing new: the dataset holds all 48 labelled rows" in again.stdout
    assert (repository / "data.dvc").read_text() == version

    clean = tmp_path / "clean.parquet"
    validated = run(sys.executable, "-m", "gitml", "validate", "--raw",
                    str(repository / "data" / RAW_DATA.name), "--feedback",
                    str(repository / "data" / "feedback"), "--out", str(clean), cwd=repository)  # fmt: skip
    assert validated.returncode == 0, validated.stderr
    table = pd.read_parquet(clean)
    assert table[dataset.TIME].max() == stream[dataset.TIME].max()
    assert table[dataset.TIME].is_unique


@pytest.mark.slow
def test_a_failed_push_leaves_the_data_and_its_version_as_they_were(
    tmp_path: Path, repository: Path, splits: dict[str, pd.DataFrame]
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    dvc("remote", "modify", "storage", "url", str(blocker / "remote"), cwd=repository)
    stream = splits["production"].sort_values(dataset.TIME).head(24)
    ids = serve(tmp_path, stream)
    label(tmp_path, ids, stream)
    before = (repository / "data.dvc").read_text()
    failed = feedback(repository, tmp_path)
    assert failed.returncode == 1
    assert "feedback: dvc push data.dvc failed" in failed.stderr
    assert (repository / "data.dvc").read_text() == before
    assert not list((repository / "data" / "feedback").glob("*.parquet"))


def test_a_missing_actuals_directory_is_named(tmp_path: Path, stream: pd.DataFrame) -> None:
    serve(tmp_path, stream)
    result = feedback(tmp_path, tmp_path)
    assert result.returncode == 1
    assert f"feedback: {tmp_path / 'actuals'}: no actuals directory" in result.stderr


def test_of_two_answers_about_one_event_the_last_served_is_kept(
    tmp_path: Path, stream: pd.DataFrame
) -> None:
    hour = stream.head(1)
    # the later answer's file sorts first: the time served decides, not the file order
    late = PredictionLog(tmp_path / "predictions", "v1", instance="a-pod")
    early = PredictionLog(tmp_path / "predictions", "v1", instance="b-pod")
    row = {**json.loads(as_model_input(hour).to_json(orient="records"))[0],
           EVENT_TIME: hour[dataset.TIME].iloc[0].isoformat()}  # fmt: skip
    early.append("early", [row], [1.0], now=SERVED)
    late.append("late", [row], [2.0], now=SERVED + timedelta(hours=1))
    late.close()
    early.close()
    write_actuals(tmp_path / "actuals" / "a.jsonl", [("early", 0, 10.0), ("late", 0, 12.0)])
    rows = labelled_rows(logged(tmp_path))
    assert rows[dataset.TARGET].tolist() == [12]


def test_a_missing_optional_feature_keeps_the_row(tmp_path: Path, stream: pd.DataFrame) -> None:
    nullable = next((n for n, s in FEATURES.items() if s.nullable), None)
    if nullable is None:
        pytest.skip("no feature of the dataset spec may be missing")
    rows = stream.head(3).copy()
    rows.loc[rows.index[1], nullable] = float("nan")
    ids = serve(tmp_path, rows)
    label(tmp_path, ids, rows)
    kept = labelled_rows(logged(tmp_path))
    assert len(kept) == 3 and kept[nullable].isna().tolist() == [False, True, False]


def test_no_actual_is_said_exactly(tmp_path: Path, stream: pd.DataFrame) -> None:
    serve(tmp_path, stream.head(2))
    label(tmp_path, [], stream.head(0))
    with pytest.raises(
        FeedbackError, match=r"^no logged row has an actual yet: deliver actuals first$"
    ):
        labelled_rows(logged(tmp_path))


def test_a_key_the_log_cannot_hold_is_named(
    tmp_path: Path, stream: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = serve(tmp_path, stream.head(2))
    label(tmp_path, ids, stream.head(2))
    monkeypatch.setattr(dataset, "KEY", (dataset.TIME, "station_xyz"))
    with pytest.raises(FeedbackError, match=r"^dataset.KEY column\(s\) \['station_xyz'\] are not"):
        labelled_rows(logged(tmp_path))


def test_unseen_rows_come_back_with_a_fresh_index(tmp_path: Path, stream: pd.DataFrame) -> None:
    rows = stream[[dataset.TIME, *FEATURES, dataset.TARGET]].reset_index(drop=True)
    new = unseen(rows, stream.head(10))
    assert new.index.tolist() == list(range(len(stream) - 10))
    assert list(new.columns) == list(rows.columns)


def test_a_feedback_file_is_named_after_its_first_and_last_event(stream: pd.DataFrame) -> None:
    from gitml.monitoring.feedback import file_name

    first, last = stream[dataset.TIME].min(), stream[dataset.TIME].max()
    assert file_name(stream) == f"{first:%Y%m%dT%H%M}-{last:%Y%m%dT%H%M}.parquet"


def test_collect_takes_the_period_in_utc_and_leaves_out_what_the_data_holds(
    tmp_path: Path, stream: pd.DataFrame
) -> None:
    from gitml.config import DATA_DIR
    from gitml.monitoring.feedback import collect

    ids = serve(tmp_path, stream)
    label(tmp_path, ids, stream)
    naive = stream[dataset.TIME].iloc[10].to_pydatetime()  # no offset: read as UTC
    until = stream[dataset.TIME].iloc[40].to_pydatetime()  # before this: 30 rows
    rows, new = collect(tmp_path / "predictions", tmp_path / "actuals", naive, until, DATA_DIR)
    assert len(rows) == 30
    assert rows[dataset.TIME].min() == stream[dataset.TIME].iloc[10]
    held = dataset.clean(pd.read_csv(DATA_DIR / dataset.RAW_FILE), load_params("data"))
    key = list(dataset.KEY)
    joined = rows[key].merge(held[key], how="left", indicator=True)
    assert len(new) == int((joined["_merge"] == "left_only").sum())
    with pytest.raises(FeedbackError, match="no actuals directory"):
        collect(tmp_path / "predictions", tmp_path / "none", None, None, DATA_DIR)


def test_collect_names_the_log_whose_rows_fail_validation(
    tmp_path: Path, stream: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gitml.config import DATA_DIR
    from gitml.monitoring.feedback import collect
    from gitml.pipeline import validate
    from gitml.schema import input_schema

    ids = serve(tmp_path, stream.head(2))
    label(tmp_path, ids, stream.head(2))
    # a target spec these actuals break, whatever the dataset's own bounds are
    target = replace(RAW_COLUMNS[dataset.TARGET], low=stream[dataset.TARGET].max() + 1)
    schema = input_schema({**dataset.FEATURES, dataset.TARGET: target})
    monkeypatch.setattr(validate, "FEEDBACK_SCHEMA", schema)
    logs = tmp_path / "predictions"
    with pytest.raises(
        DataValidationError, match=f"^{re.escape(f'labelled rows of {logs}')} failed validation"
    ):
        collect(logs, tmp_path / "actuals", None, None, DATA_DIR)


RETRAIN_ONLY = ["--env", "production", "--no-push", "--no-pull-request"]


@pytest.mark.parametrize(
    ("command", "option", "more"),
    [(feedback_command, "--since", []), (feedback_command, "--until", []),
     (retrain, "--since", RETRAIN_ONLY), (retrain, "--until", RETRAIN_ONLY),
     (monitor, "--until", [])],
)  # fmt: skip
def test_the_commands_read_event_times_as_the_api_does(
    tmp_path: Path, command: typer.Typer, option: str, more: list[str]
) -> None:
    """`Z` and offsets are taken (typer's own datetime refuses both); a bad value exits 2
    naming the option and the format, before anything is read."""
    missing = tmp_path / "none"
    args = ["--logs", str(missing), "--actuals", str(missing), *more]
    runner = CliRunner()
    for accepted in ("2024-05-01T08:00:00Z", "2024-05-01T10:00+02:00", "2024-05-01"):
        result = runner.invoke(command.app, [*args, option, accepted])
        assert f"{missing}: no " in result.output, result.output  # as far as its directories
    result = runner.invoke(command.app, [*args, option, "2024-05-01T08:00Zulu"])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output, result.output
    assert " ".join(EVENT_TIME_FORMAT.split()[:3]) in " ".join(result.output.split())
