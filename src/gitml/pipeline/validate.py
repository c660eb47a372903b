"""validate stage: check the raw data against the dataset spec and write a clean, typed table.

Bad data stops the pipeline with a message naming the columns and rows at fault, and writes
nothing. What is checked, and how the raw file becomes the clean table, is the dataset's
(dataset.py): every raw column (FEATURES, or RAW_FEATURES where the raw file differs, and
OTHER_COLUMNS) with its kind and bounds, the CHECKS across columns, and `clean`, whose features
must then meet FEATURES, the API's contract. This stage adds what holds for any data: the key is
unique, and the table is sorted by time.

Labelled production rows (`make feedback`) join the raw data as parquet files in
data/feedback/: the features, the time and the target, checked with the same column specs.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import pandera.pandas as pa
import typer

from gitml import dataset
from gitml.columns import BadRows, Column
from gitml.config import CLEAN_DATA, DATA_DIR, load_params
from gitml.files import read_parquet, write_table
from gitml.schema import INPUT_SCHEMA, input_schema

RAW_DATA = DATA_DIR / dataset.RAW_FILE


def raw_columns(
    features: dict[str, Column], raw_features: dict[str, Column | None], others: dict[str, Column]
) -> dict[str, Column]:
    """The raw file's columns in the spec's order: each feature as the raw file holds it
    (`raw_features` where it differs from the API's form; None: not in the file, `clean`
    derives it), then the other columns."""
    unknown = sorted(set(raw_features) - set(features))
    if unknown:
        raise ValueError(f"dataset.RAW_FEATURES names {unknown}, which are not in FEATURES")
    raw = {name: raw_features.get(name, spec) for name, spec in features.items()}
    return {**{name: spec for name, spec in raw.items() if spec is not None}, **others}


# RAW_FEATURES is optional: a spec written before it, or without it, holds the API's forms
RAW_COLUMNS = raw_columns(
    dataset.FEATURES, getattr(dataset, "RAW_FEATURES", {}), dataset.OTHER_COLUMNS
)
RAW_SCHEMA = input_schema(RAW_COLUMNS, dataset.CHECKS)
CLEAN_FEATURES_SCHEMA = INPUT_SCHEMA  # what `clean` makes of the features: the API's contract
FEEDBACK_DIR = DATA_DIR / "feedback"
# a labelled production row: what the log holds (features), and the target its actual gives
FEEDBACK_SCHEMA = input_schema({**dataset.FEATURES, dataset.TARGET: RAW_COLUMNS[dataset.TARGET]})

PRESENCE_CHECKS = ("column_in_dataframe", "column_in_schema")


class DataValidationError(ValueError):
    """The data broke the schema; the message names the columns, checks and rows at fault."""


def csv_lines(rows: Iterable[Any], max_rows: int = 10) -> str:
    """Row positions as the CSV's line numbers (header + 1-based), at most `max_rows`."""
    lines = sorted({int(i) + 2 for i in rows})
    return f"CSV lines {lines[:max_rows]}{' ...' if len(lines) > max_rows else ''}"


def describe_failures(failure_cases: pd.DataFrame, max_rows: int = 10) -> str:
    """Turn pandera's failure table into one line per fault, naming columns and CSV lines."""
    lines = []
    for presence in PRESENCE_CHECKS:
        names = failure_cases.loc[failure_cases["check"] == presence, "failure_case"].tolist()
        if names:
            kind = "missing" if presence == "column_in_dataframe" else "unexpected"
            lines.append(f"  {kind} column(s): {names}")
    cases = failure_cases[~failure_cases["check"].isin(PRESENCE_CHECKS)]
    # A table-wide check fails once per column: report it once, by row.
    table_wide = cases["schema_context"] == "DataFrameSchema"
    cases = cases.assign(column=cases["column"].where(~table_wide, "<rows>"))
    for (column, check), group in cases.groupby(["column", "check"], sort=False):
        rows = group["index"].dropna()
        where = csv_lines(rows, max_rows) if len(rows) else "the column as a whole"
        if column == "<rows>":
            lines.append(f"  check {check!r} failed at {where}")
            continue
        values = group["failure_case"].head(max_rows).tolist()
        lines.append(f"  column {column!r}: failed {check!r} at {where} (values: {values})")
    return "\n".join(lines)


def validate_raw(raw: pd.DataFrame, schema: pa.DataFrameSchema = RAW_SCHEMA) -> pd.DataFrame:
    """Check raw data against the dataset's schema; raise naming every fault.

    Returns:
        The same table, unchanged.

    Raises:
        DataValidationError: listing each column, check and row that failed.
    """
    try:
        schema.validate(raw, lazy=True)
    except pa.errors.SchemaErrors as err:
        raise DataValidationError(
            "raw data failed validation:\n" + describe_failures(err.failure_cases)
        ) from None
    return raw


def check_clean_features(table: pd.DataFrame) -> pd.DataFrame:
    """The clean table's features against the API's contract (FEATURES): what `clean` made of
    the raw columns (RAW_FEATURES converted, say) must be what the model will be sent."""
    missing = [name for name in dataset.FEATURES if name not in table]
    if missing:
        raise DataValidationError(f"dataset.clean() returned no feature column(s) {missing}")
    try:  # a category column may be pandas' Categorical: pandera reads its values
        CLEAN_FEATURES_SCHEMA.validate(table[list(dataset.FEATURES)], lazy=True)
    except pa.errors.SchemaErrors as err:
        raise DataValidationError(
            "dataset.clean() made features that break the input contract (dataset.FEATURES):\n"
            + describe_failures(err.failure_cases)
        ) from None
    return table


def clean(raw: pd.DataFrame, data_params: dict[str, Any]) -> pd.DataFrame:
    """The dataset's clean table, its key unique, sorted by time, with a fresh index."""
    try:
        table = check_clean_features(dataset.clean(raw, data_params))
    except BadRows as err:
        raise DataValidationError(f"{err} at {csv_lines(err.rows)}") from None
    key = list(dataset.KEY)
    duplicated = table.index[table.duplicated(key, keep=False)]
    if len(duplicated):
        raise DataValidationError(f"duplicate rows of the key {key} at {csv_lines(duplicated)}")
    return table.sort_values(dataset.TIME).reset_index(drop=True)


def validate_feedback(rows: pd.DataFrame, source: str) -> pd.DataFrame:
    """Labelled production rows checked as raw rows are: every column's spec, a time each."""
    try:
        FEEDBACK_SCHEMA.validate(rows.drop(columns=[dataset.TIME]), lazy=True)
    except pa.errors.SchemaErrors as err:
        faults = describe_failures(err.failure_cases).replace("CSV lines", "rows")
        raise DataValidationError(f"{source} failed validation:\n{faults}") from None
    missing = rows[dataset.TIME].isna()
    if missing.any():
        raise DataValidationError(f"{source}: {missing.sum()} rows have no {dataset.TIME!r}")
    return rows


def read_feedback(directory: Path) -> pd.DataFrame:
    """Every feedback file, validated; none (or no directory): an empty table."""
    files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    frames = [validate_feedback(read_parquet(path), str(path)) for path in files]
    columns = [dataset.TIME, *dataset.FEATURES, dataset.TARGET]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def with_feedback(table: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """The clean table and the feedback rows, one row per key, sorted by time."""
    if feedback.empty:
        return table
    feedback = feedback.astype({name: table[name].dtype for name in feedback.columns})
    merged = pd.concat([table, feedback], ignore_index=True)
    key = list(dataset.KEY)
    repeated = merged[merged.duplicated(key, keep=False)]
    if len(repeated):
        raise DataValidationError(
            f"data/feedback repeats {len(repeated)} rows of the key {key}, first "
            f"{repeated[key].iloc[0].tolist()}: remove the file that adds them"
        )
    return merged.sort_values(dataset.TIME).reset_index(drop=True)


def read_raw(path: Path) -> pd.DataFrame:
    """Read the raw CSV, failing clearly when it is not one."""
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataValidationError(f"{path} is not a readable CSV file: {err}") from None


def current_dataset(raw_path: Path, feedback_dir: Path) -> pd.DataFrame:
    """The clean table the pipeline trains on: the raw file checked and cleaned, plus the
    feedback rows beside it; a DataValidationError naming the file at fault."""
    try:
        table = clean(validate_raw(read_raw(raw_path)), load_params("data"))
    except DataValidationError as err:
        raise DataValidationError(f"{raw_path}: {err}") from None
    return with_feedback(table, read_feedback(feedback_dir))


app = typer.Typer(add_completion=False)


@app.command()
def main(
    raw_path: Annotated[Path, typer.Option("--raw", help="Raw CSV.")] = RAW_DATA,
    feedback_dir: Annotated[
        Path, typer.Option("--feedback", help="Labelled production rows (make feedback).")
    ] = FEEDBACK_DIR,
    out_path: Annotated[Path, typer.Option("--out", help="Clean parquet to write.")] = CLEAN_DATA,
) -> None:
    """Validate the raw data; write the clean table only if every check passes."""
    try:
        table = current_dataset(raw_path, feedback_dir)
    except DataValidationError as err:
        typer.echo(f"validate: {err}", err=True)
        raise typer.Exit(1) from None
    write_table(out_path, table)
    typer.echo(f"validate: {len(table)} rows OK -> {out_path}")


if __name__ == "__main__":
    app()
