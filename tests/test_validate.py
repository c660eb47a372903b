from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gitml import validate
from gitml.validate import DataValidationError, clean, read_raw, validate_raw

Mutation = Callable[[pd.DataFrame], pd.DataFrame]


def set_cell(column: str, row: int, value: object) -> Mutation:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame

    return mutate


# Each kind of bad data, and words the error must contain (CSV line = row + 2).
BAD_DATA: dict[str, tuple[Mutation, list[str]]] = {
    "out of range": (set_cell("temp", 5, 1.5), ["'temp'", "in_range", "[7]"]),
    "feels-like out of range": (set_cell("atemp", 5, -0.1), ["'atemp'", "in_range", "[7]"]),
    "humidity out of range": (set_cell("hum", 6, 1.01), ["'hum'", "in_range", "[8]"]),
    "wind out of range": (set_cell("windspeed", 7, 1.2), ["'windspeed'", "in_range", "[9]"]),
    "hour out of range": (set_cell("hr", 3, 24), ["'hr'", "in_range", "[5]"]),
    "unknown season": (set_cell("season", 3, 5), ["'season'", "isin", "[5]"]),
    "negative registered": (set_cell("registered", 2, -1), ["'registered'", "[4]"]),
    "negative count": (
        set_cell("casual", 8, -3),
        ["'casual'", "greater_than_or_equal_to", "[10]"],
    ),
    "missing value": (set_cell("hr", 3, np.nan), ["'hr'", "not_nullable", "[5]"]),
    "unknown category": (set_cell("weathersit", 7, "tornado"), ["'weathersit'", "tornado", "[9]"]),
    "unknown month": (set_cell("mnth", 2, "Janvier"), ["'mnth'", "Janvier", "[4]"]),
    "wrong type": (set_cell("windspeed", 4, "windy"), ["'windspeed'", "float64", "[6]"]),
    "duplicate hour": (
        lambda f: pd.concat([f, f.iloc[[10]]], ignore_index=True),
        ["duplicate hours (day, hr)", "12"],
    ),
    "target inconsistent": (set_cell("bikers", 9, 999), ["bikers == casual + registered", "[11]"]),
    "workingday inconsistent": (set_cell("workingday", 0, 1), ["workingday ==", "[2]"]),
    "missing column": (lambda f: f.drop(columns=["temp"]), ["missing column(s): ['temp']"]),
    "extra column": (lambda f: f.assign(price=1.0), ["unexpected column(s): ['price']"]),
}


def test_real_data_passes(raw: pd.DataFrame) -> None:
    assert validate_raw(raw) is raw


@pytest.mark.parametrize("kind", list(BAD_DATA))
def test_bad_data_is_rejected_naming_column_and_rows(raw: pd.DataFrame, kind: str) -> None:
    mutate, expected = BAD_DATA[kind]
    with pytest.raises(DataValidationError) as failure:
        validate_raw(mutate(raw))
    for words in expected:
        assert words in str(failure.value), f"{kind}: {words!r} not in:\n{failure.value}"


def test_calendar_mismatch_is_rejected(raw: pd.DataFrame) -> None:
    raw.loc[0, "weekday"] = 3  # 2011-01-01 was a Saturday (6)
    raw.loc[0, "workingday"] = 1
    with pytest.raises(DataValidationError, match=r"'weekday' disagrees with the calendar.*\[2\]"):
        clean(validate_raw(raw), 2011)


def test_clean_dates_rows_and_handles_quirks(raw: pd.DataFrame) -> None:
    table = clean(validate_raw(raw), 2011)
    assert len(table) == len(raw)
    assert table["timestamp"].is_monotonic_increasing
    assert table["timestamp"].iloc[0] == pd.Timestamp("2011-01-01 00:00")
    assert table["timestamp"].iloc[-1] == pd.Timestamp("2011-12-31 23:00")
    assert set(table["month"]) == set(range(1, 13))
    # the faulty 0 % humidity readings become missing, nothing else does
    assert table["hum"].isna().sum() == (raw["hum"] == 0).sum() > 0
    assert not table.drop(columns="hum").isna().any().any()


def test_read_raw_rejects_a_non_csv(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match="not a readable CSV"):
        read_raw(empty)


def test_cli_writes_nothing_on_bad_data(raw: pd.DataFrame, tmp_path: Path) -> None:
    bad, out = tmp_path / "bad.csv", tmp_path / "clean.parquet"
    set_cell("hum", 4, 7.0)(raw).to_csv(bad, index=False)
    result = CliRunner(mix_stderr=False).invoke(
        validate.app, ["--raw", str(bad), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert "'hum'" in result.stderr and "[6]" in result.stderr
    assert list(tmp_path.iterdir()) == [bad]


def test_cli_writes_clean_table(raw_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "clean.parquet"
    result = CliRunner().invoke(validate.app, ["--raw", str(raw_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(read_raw(raw_path)) == len(pd.read_parquet(out))
