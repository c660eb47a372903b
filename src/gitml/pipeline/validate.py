"""validate stage: check the raw data against the dataset spec and write a clean, typed table.

Bad data stops the pipeline with a message naming the columns and rows at fault, and writes
nothing. What is checked, and how the raw file becomes the clean table, is the dataset's
(dataset.py): every raw column (FEATURES and OTHER_COLUMNS) with its kind and bounds, the
CHECKS across columns, and `clean`. This stage adds what holds for any data: the key is unique,
and the table is sorted by time.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import pandera.pandas as pa
import typer

from gitml import dataset
from gitml.columns import BadRows
from gitml.config import CLEAN_DATA, DATA_DIR, load_params
from gitml.files import write_table
from gitml.schema import input_schema

RAW_DATA = DATA_DIR / dataset.RAW_FILE
RAW_SCHEMA = input_schema({**dataset.FEATURES, **dataset.OTHER_COLUMNS}, dataset.CHECKS)

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


def clean(raw: pd.DataFrame, data_params: dict[str, Any]) -> pd.DataFrame:
    """The dataset's clean table, its key unique, sorted by time, with a fresh index."""
    try:
        table = dataset.clean(raw, data_params)
    except BadRows as err:
        raise DataValidationError(f"{err} at {csv_lines(err.rows)}") from None
    key = list(dataset.KEY)
    duplicated = table.index[table.duplicated(key, keep=False)]
    if len(duplicated):
        raise DataValidationError(f"duplicate rows of the key {key} at {csv_lines(duplicated)}")
    return table.sort_values(dataset.TIME).reset_index(drop=True)


def read_raw(path: Path) -> pd.DataFrame:
    """Read the raw CSV, failing clearly when it is not one."""
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataValidationError(f"{path} is not a readable CSV file: {err}") from None


app = typer.Typer(add_completion=False)


@app.command()
def main(
    raw_path: Annotated[Path, typer.Option("--raw", help="Raw CSV.")] = RAW_DATA,
    out_path: Annotated[Path, typer.Option("--out", help="Clean parquet to write.")] = CLEAN_DATA,
) -> None:
    """Validate the raw data; write the clean table only if every check passes."""
    try:
        table = clean(validate_raw(read_raw(raw_path)), load_params("data"))
    except DataValidationError as err:
        typer.echo(f"validate: {raw_path}: {err}", err=True)
        raise typer.Exit(1) from None
    write_table(out_path, table)
    typer.echo(f"validate: {len(table)} rows OK -> {out_path}")


if __name__ == "__main__":
    app()
