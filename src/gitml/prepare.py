"""prepare stage: cut the clean table into time-ordered train, test and production splits.

Nothing is shuffled across time: the test months follow the training months, and the months
from `split.production_from_month` on are never trained or tested on. They are the
"production stream" that monitoring replays later.
"""

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from gitml.config import CLEAN_DATA, SPLITS_DIR, load_params, split_path
from gitml.files import write_table


def split_by_time(
    table: pd.DataFrame, production_from_month: int, test_months: int
) -> dict[str, pd.DataFrame]:
    """Split on calendar months: train < test < production, with no overlap.

    Args:
        table: clean data with `timestamp` and `month` columns.
        production_from_month: first month (1-12) held out as the production stream.
        test_months: how many months right before it form the test set.

    Returns:
        The "train", "test" and "production" frames, each sorted by time.
    """
    first_test = production_from_month - test_months
    months = sorted(table["month"].unique())
    if test_months < 1 or first_test <= months[0] or production_from_month > months[-1]:
        raise ValueError(
            f"split.production_from_month={production_from_month} and "
            f"split.test_months={test_months} leave an empty split: the data covers months "
            f"{months[0]}..{months[-1]}"
        )
    table = table.sort_values("timestamp")
    month = table["month"]
    return {
        "train": table[month < first_test],
        "test": table[(month >= first_test) & (month < production_from_month)],
        "production": table[month >= production_from_month],
    }


app = typer.Typer(add_completion=False)


@app.command()
def main(
    clean_path: Annotated[Path, typer.Option("--clean", help="Clean parquet.")] = CLEAN_DATA,
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where splits go.")] = SPLITS_DIR,
) -> None:
    """Write train/test/production parquet files split by time."""
    params = load_params("split")
    try:
        splits = split_by_time(
            pd.read_parquet(clean_path),
            int(params["production_from_month"]),
            int(params["test_months"]),
        )
    except ValueError as err:
        typer.echo(f"prepare: {err}", err=True)
        raise typer.Exit(1) from None
    for name, frame in splits.items():
        write_table(split_path(name, out_dir), frame)
        first, last = frame["timestamp"].min(), frame["timestamp"].max()
        typer.echo(f"prepare: {name}: {len(frame)} rows, {first:%Y-%m-%d} .. {last:%Y-%m-%d}")


if __name__ == "__main__":
    app()
