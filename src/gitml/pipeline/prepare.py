"""prepare stage: cut the clean table into time-ordered train, test and production splits.

Nothing is shuffled across time: train is everything before `split.test_from`, test runs up
to `split.production_from`, and production, from there to the end, is never trained or tested
on: the stream monitoring replays. Each boundary is a date (`2011-10-01`) or a number of days
back from the end of the data (`-92d`: the last 92 days), over any number of years.

Rolling splits: with `-Nd` boundaries the windows move with the data, so a retrain on newer
labelled data tests on its last days and learns the season before them. `production_from:
null` holds no stream back (a fork whose production stream is its real traffic): production is
written empty, and everything labelled trains or tests.
"""

import re
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from gitml.config import CLEAN_DATA, SPLITS_DIR, load_params, split_path
from gitml.dataset import TIME
from gitml.files import read_parquet, write_table

DAYS_BACK = re.compile(r"-(\d+)d")


def boundary(setting: str, value: object, times: pd.Series) -> pd.Timestamp:
    """The first instant of a split: a date, or `-Nd` (N days before the data's last day
    ends)."""
    if isinstance(value, str) and (days := DAYS_BACK.fullmatch(value.strip())):
        end = times.max().normalize() + pd.Timedelta(days=1)
        return end - pd.Timedelta(days=int(days.group(1)))
    if isinstance(value, date):  # YAML reads an unquoted 2011-10-01 as a date
        return pd.Timestamp(value)
    if isinstance(value, str):
        try:
            return pd.Timestamp(datetime.fromisoformat(value.strip()))  # strict: no "September"
        except ValueError:
            pass
    raise ValueError(f"{setting}={value!r} is neither a date (YYYY-MM-DD) nor -<days>d")


def split_by_time(
    table: pd.DataFrame, test_from: object, production_from: object
) -> dict[str, pd.DataFrame]:
    """Split on time: train < test_from <= test < production_from <= production.

    Returns:
        The "train", "test" and "production" frames, each sorted by time.

    Raises:
        ValueError: naming the setting when a boundary is unreadable or a split would be empty.
    """
    times = table[TIME]
    first_test = boundary("split.test_from", test_from, times)
    held_back = production_from is not None
    first_production = (
        boundary("split.production_from", production_from, times)
        if held_back
        else times.max() + pd.Timedelta(days=1)
    )
    table = table.sort_values(TIME)
    when = table[TIME]
    splits = {
        "train": table[when < first_test],
        "test": table[(when >= first_test) & (when < first_production)],
        "production": table[when >= first_production],
    }
    empty = [
        name
        for name, frame in splits.items()
        if frame.empty and (held_back or name != "production")
    ]
    if empty:
        raise ValueError(
            f"split.test_from={test_from} ({first_test:%Y-%m-%d}) and split.production_from="
            f"{production_from} ({first_production:%Y-%m-%d}) leave {' and '.join(empty)} "
            f"empty: the data runs from {times.min():%Y-%m-%d %H:%M} to "
            f"{times.max():%Y-%m-%d %H:%M}"
        )
    return splits


app = typer.Typer(add_completion=False)


@app.command()
def main(
    clean_path: Annotated[Path, typer.Option("--clean", help="Clean parquet.")] = CLEAN_DATA,
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where splits go.")] = SPLITS_DIR,
) -> None:
    """Write train/test/production parquet files split by time."""
    params = load_params("split")
    try:
        missing = [
            f"split.{name}" for name in ("test_from", "production_from") if name not in params
        ]
        if missing:
            raise ValueError(f"params.yaml sets no {' or '.join(missing)}")
        splits = split_by_time(
            read_parquet(clean_path), params["test_from"], params["production_from"]
        )
    except ValueError as err:
        typer.echo(f"prepare: {err}", err=True)
        raise typer.Exit(1) from None
    for name, frame in splits.items():
        write_table(split_path(name, out_dir), frame)
        if frame.empty:
            typer.echo(f"prepare: {name}: none held back (split.production_from: null)")
            continue
        first, last = frame[TIME].min(), frame[TIME].max()
        typer.echo(f"prepare: {name}: {len(frame)} rows, {first:%Y-%m-%d} .. {last:%Y-%m-%d}")


if __name__ == "__main__":
    app()
