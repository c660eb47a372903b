"""validate stage: check the raw hourly data and write a clean, typed table.

Bad data stops the pipeline with a message naming the columns and rows at fault, and writes
nothing. Known quirks of the raw file are handled here, deliberately, in one place:
  * month names are abbreviated inconsistently ("Jan", "March", "Sept"): mapped to 1..12;
  * the table has no date, only the day of the year: `timestamp` is rebuilt from `data.year`;
  * humidity reads 0 % for a whole day (a sensor fault): set to missing, imputed downstream;
  * some hours are absent (e.g. storm days with few rentals): kept absent, never invented.
"""

from pathlib import Path
from typing import Annotated

import pandas as pd
import pandera.pandas as pa
import typer

from gitml.config import CLEAN_DATA, RAW_DATA, load_params
from gitml.files import write_table

MONTHS = {
    "Jan": 1, "Feb": 2, "March": 3, "April": 4, "May": 5, "June": 6,
    "July": 7, "Aug": 8, "Sept": 9, "Oct": 10, "Nov": 11, "Dec": 12,
}  # fmt: skip
WEATHER = ["clear", "cloudy/misty", "light rain/snow", "heavy rain/snow"]
UNIT_INTERVAL = pa.Check.in_range(0.0, 1.0)

RAW_SCHEMA = pa.DataFrameSchema(
    {
        "season": pa.Column(int, pa.Check.isin([1, 2, 3, 4])),
        "mnth": pa.Column(str, pa.Check.isin(list(MONTHS))),
        "day": pa.Column(int, pa.Check.in_range(1, 366)),
        "hr": pa.Column(int, pa.Check.in_range(0, 23)),
        "holiday": pa.Column(int, pa.Check.isin([0, 1])),
        "weekday": pa.Column(int, pa.Check.in_range(0, 6)),
        "workingday": pa.Column(int, pa.Check.isin([0, 1])),
        "weathersit": pa.Column(str, pa.Check.isin(WEATHER)),
        "temp": pa.Column(float, UNIT_INTERVAL),
        "atemp": pa.Column(float, UNIT_INTERVAL),
        "hum": pa.Column(float, UNIT_INTERVAL),
        "windspeed": pa.Column(float, UNIT_INTERVAL),
        "casual": pa.Column(int, pa.Check.ge(0)),
        "registered": pa.Column(int, pa.Check.ge(0)),
        "bikers": pa.Column(int, pa.Check.ge(0)),
    },
    checks=[
        pa.Check(
            lambda df: df["casual"] + df["registered"] == df["bikers"],
            name="bikers == casual + registered",
        ),
        pa.Check(
            lambda df: (
                df["workingday"]
                == (df["weekday"].between(1, 5) & (df["holiday"] == 0)).astype(int)
            ),
            name="workingday == weekday in Mon..Fri and not holiday",
        ),
    ],
    unique=["day", "hr"],
    strict=True,
    coerce=False,
)


class DataValidationError(ValueError):
    """The data broke the schema; the message names the columns, checks and rows at fault."""


def describe_failures(failure_cases: pd.DataFrame, max_rows: int = 10) -> str:
    """Turn pandera's failure table into one line per fault, naming columns and CSV lines."""
    lines = []
    for presence in ("column_in_dataframe", "column_in_schema"):
        names = failure_cases.loc[failure_cases["check"] == presence, "failure_case"].tolist()
        if names:
            kind = "missing" if presence == "column_in_dataframe" else "unexpected"
            lines.append(f"  {kind} column(s): {names}")
    cases = failure_cases[
        ~failure_cases["check"].isin(["column_in_dataframe", "column_in_schema"])
    ]
    # A table-wide check fails once per column: report it once, by row.
    table_wide = cases["schema_context"] == "DataFrameSchema"
    cases = cases.assign(column=cases["column"].where(~table_wide, "<rows>"))
    for (column, check), group in cases.groupby(["column", "check"], sort=False):
        rows = sorted({int(i) + 2 for i in group["index"].dropna()})  # header + 1-based lines
        where = f"CSV lines {rows[:max_rows]}{' ...' if len(rows) > max_rows else ''}"
        if column == "<rows>":
            label = "duplicate hours (day, hr)" if check == "multiple_fields_uniqueness" else check
            lines.append(f"  check {label!r} failed at {where}")
            continue
        values = group["failure_case"].head(max_rows).tolist()
        where = where if rows else "the column as a whole"
        lines.append(f"  column {column!r}: failed {check!r} at {where} (values: {values})")
    return "\n".join(lines)


def validate_raw(raw: pd.DataFrame) -> pd.DataFrame:
    """Check raw data against the schema and the calendar; raise naming every fault.

    Args:
        raw: the table as read from the CSV.

    Returns:
        The same table, unchanged.

    Raises:
        DataValidationError: listing each column, check and row that failed.
    """
    try:
        RAW_SCHEMA.validate(raw, lazy=True)
    except pa.errors.SchemaErrors as err:
        raise DataValidationError(
            "raw data failed validation:\n" + describe_failures(err.failure_cases)
        ) from None
    return raw


def clean(raw: pd.DataFrame, year: int) -> pd.DataFrame:
    """Turn validated raw data into a typed, time-indexed table (see the module docstring)."""
    timestamp = (
        pd.Timestamp(year=year, month=1, day=1)
        + pd.to_timedelta(raw["day"] - 1, unit="D")
        + pd.to_timedelta(raw["hr"], unit="h")
    )
    month = raw["mnth"].map(MONTHS)
    wrong_month = raw.index[timestamp.dt.month != month]
    wrong_weekday = raw.index[(timestamp.dt.dayofweek + 1) % 7 != raw["weekday"]]
    for name, rows in (("mnth", wrong_month), ("weekday", wrong_weekday)):
        if len(rows):
            lines = [int(i) + 2 for i in rows[:10]]
            raise DataValidationError(
                f"column {name!r} disagrees with the calendar of {year} "
                f"(day of year + data.year) at CSV lines {lines}"
            )
    table = raw.drop(columns=["mnth", "day"]).assign(
        timestamp=timestamp,
        month=month.astype("int64"),
        hum=raw["hum"].mask(raw["hum"] == 0.0),
        weathersit=pd.Categorical(raw["weathersit"], categories=WEATHER),
    )
    return table.sort_values("timestamp").reset_index(drop=True)


def read_raw(path: Path) -> pd.DataFrame:
    """Read the raw CSV, failing clearly when it is not one."""
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataValidationError(f"{path} is not a readable CSV file: {err}") from None


app = typer.Typer(add_completion=False)


@app.command()
def main(
    raw_path: Annotated[Path, typer.Option("--raw", help="Raw hourly CSV.")] = RAW_DATA,
    out_path: Annotated[Path, typer.Option("--out", help="Clean parquet to write.")] = CLEAN_DATA,
) -> None:
    """Validate the raw data; write the clean table only if every check passes."""
    year = int(load_params("data")["year"])
    try:
        table = clean(validate_raw(read_raw(raw_path)), year)
    except DataValidationError as err:
        typer.echo(f"validate: {raw_path}: {err}", err=True)
        raise typer.Exit(1) from None
    write_table(out_path, table)
    typer.echo(f"validate: {len(table)} rows OK -> {out_path}")


if __name__ == "__main__":
    app()
