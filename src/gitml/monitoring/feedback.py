"""Feedback: labelled production rows become the next version of the DVC-tracked dataset.

`make feedback` joins the prediction log with the actuals that have arrived, keeps the rows
with an actual and an event time, checks them as raw rows are checked (validate.py), leaves out
every row whose key the dataset already holds, and writes the rest as one parquet file in
data/feedback/. Then `dvc add data` makes a new data version and `dvc push` stores it in the
project's remote, so the branch that commits data.dvc can be cloned and reproduced. A second
run over the same period adds nothing. If DVC fails, the file and data.dvc are put back as they
were: no half-added version.
"""

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer

from gitml import dataset
from gitml.config import DATA_DIR
from gitml.files import write_table
from gitml.pipeline.validate import (
    FEEDBACK_DIR,
    RAW_COLUMNS,
    RAW_DATA,
    DataValidationError,
    current_dataset,
    validate_feedback,
)
from gitml.schema import EVENT_TIME, FEATURES, as_utc, parse_event_time
from gitml.serving.predlog import ACTUAL, EVENT_SENT, LogError, read_predictions


class FeedbackError(RuntimeError):
    """Feedback cannot be added; the message says what is missing or which command failed."""


def labelled_rows(logged: pd.DataFrame) -> pd.DataFrame:
    """The logged rows that have an actual, as dataset rows: TIME (the event time, UTC),
    the features and the target; one per dataset key, the last logged."""
    unknown = [name for name in dataset.KEY if name not in (dataset.TIME, *FEATURES)]
    if unknown:
        raise FeedbackError(f"dataset.KEY column(s) {unknown} are not in the prediction log")
    labelled = logged.dropna(subset=[ACTUAL])
    if labelled.empty:
        raise FeedbackError("no logged row has an actual yet: deliver actuals first")
    timeless = ~labelled[EVENT_SENT]
    if timeless.any():
        raise FeedbackError(
            f"{timeless.sum()} labelled rows were logged without an event time "
            f"({EVENT_TIME!r} in the request): their hour is unknown, so they cannot be data"
        )
    target = labelled[ACTUAL]
    if RAW_COLUMNS[dataset.TARGET].kind == "int":
        fractional = target != target.round()
        if fractional.any():
            first = labelled[fractional].iloc[0]
            raise FeedbackError(
                f"actuals must be whole numbers for the target {dataset.TARGET!r} (int): "
                f"{first[ACTUAL]} for request {first['request_id']} row {first['row']}"
            )
        target = target.astype("int64")
    rows = pd.DataFrame(
        {
            dataset.TIME: labelled[EVENT_TIME].dt.tz_convert(UTC).dt.tz_localize(None),
            **{name: labelled[name] for name in FEATURES},
            dataset.TARGET: target,
        }
    )
    rows = rows.assign(_served=labelled["ts"]).sort_values("_served").drop(columns="_served")
    return rows.drop_duplicates(list(dataset.KEY), keep="last").reset_index(drop=True)


def unseen(rows: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The rows whose key `table` (the dataset so far) does not hold."""
    key = list(dataset.KEY)
    known = pd.MultiIndex.from_frame(table[key])
    return rows[~pd.MultiIndex.from_frame(rows[key]).isin(known)].reset_index(drop=True)


def file_name(rows: pd.DataFrame) -> str:
    first, last = rows[dataset.TIME].min(), rows[dataset.TIME].max()
    return f"{first:%Y%m%dT%H%M}-{last:%Y%m%dT%H%M}.parquet"


# DVC plumbing: tests/monitoring/test_feedback.py runs it against a real repository and remote
# (marker `slow`), which `make mutation` leaves out
def dvc(*args: str, cwd: Path) -> None:  # pragma: no mutate block
    run = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if run.returncode != 0:
        raise FeedbackError(f"dvc {' '.join(args)} failed: {(run.stderr or run.stdout).strip()}")


def add_version(rows: pd.DataFrame, data_dir: Path, push: bool) -> Path:  # pragma: no mutate block
    """Write the rows to data/feedback/, `dvc add` the data and push it; on any failure, put
    the data and its .dvc file back as they were."""
    dvc_file = data_dir.parent / f"{data_dir.name}.dvc"
    before = dvc_file.read_text()
    path = data_dir / FEEDBACK_DIR.name / file_name(rows)
    write_table(path, rows)
    try:
        dvc("add", data_dir.name, cwd=data_dir.parent)
        if push:
            dvc("push", dvc_file.name, cwd=data_dir.parent)
    except FeedbackError:
        path.unlink()
        dvc_file.write_text(before)
        raise
    return path


def collect(
    logs: Path, actuals: Path, since: datetime | None, until: datetime | None, data_dir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the labelled rows of the period, those of them the dataset does not hold yet)."""
    if not actuals.is_dir():
        raise FeedbackError(f"{actuals}: no actuals directory (deliver actuals first)")
    since, until = (as_utc(t) if t else None for t in (since, until))
    rows = labelled_rows(read_predictions(logs, actuals, since, until))
    validate_feedback(rows, f"labelled rows of {logs}")
    table = current_dataset(data_dir / RAW_DATA.name, data_dir / FEEDBACK_DIR.name)
    return rows, unseen(rows, table)


def event_time_option(text: str) -> datetime:
    """`--since`/`--until` as typer reads them: a bad value is refused naming the format."""
    try:
        return parse_event_time(text)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


# The options of every command that reads a period of the log (feedback, retrain, monitor).
Logs = Annotated[Path, typer.Option(help="Prediction log directory.")]
Actuals = Annotated[Path, typer.Option(help="Actuals directory.")]
Since = Annotated[
    Optional[datetime],  # noqa: UP045 (typer 0.9 cannot read `X | None`)
    typer.Option(
        parser=event_time_option,
        metavar="DATETIME",
        help="First event time to take (default: the log's first).",
    ),
]
Until = Annotated[
    Optional[datetime],  # noqa: UP045
    typer.Option(
        parser=event_time_option,
        metavar="DATETIME",
        help="Take event times before this (default: all).",
    ),
]
DataDir = Annotated[Path, typer.Option(help="The DVC-tracked data.")]

app = typer.Typer(add_completion=False)


@app.command()
def main(
    logs: Logs,
    actuals: Actuals,
    since: Since = None,
    until: Until = None,
    data_dir: DataDir = DATA_DIR,
    push: Annotated[bool, typer.Option(help="dvc push the new version.")] = True,
) -> None:
    """Add the labelled production rows of a period to the dataset as a new DVC version."""
    try:
        rows, new = collect(logs, actuals, since, until, data_dir)
        if new.empty:
            typer.echo(f"feedback: nothing new: the dataset holds all {len(rows)} labelled rows")
            return
        path = add_version(new, data_dir, push)
    except (FeedbackError, LogError, DataValidationError) as err:
        typer.echo(f"feedback: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"feedback: {len(new)} new rows ({len(rows) - len(new)} already held) -> {path}; "
        f"data.dvc is the new version{', pushed' if push else ' (not pushed)'}: commit it"
    )


if __name__ == "__main__":
    app()
