import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pytest
from typer.testing import CliRunner

from gitml import dataset
from gitml.columns import Column
from gitml.pipeline import validate
from gitml.pipeline.validate import (
    DataValidationError,
    clean,
    raw_columns,
    read_raw,
    validate_raw,
)
from gitml.schema import input_schema
from tests.example_data import example_only

Mutation = Callable[[pd.DataFrame], pd.DataFrame]


def set_cell(column: str, row: int, value: object) -> Mutation:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame

    return mutate


# Each kind of bad data in the example, and words the error must contain (CSV line = row + 2).
BAD_DATA: dict[str, tuple[Mutation, list[str]]] = {
    "out of range": (set_cell("temp", 5, 1.5), ["'temp'", "in_range", "[7]"]),
    "feels-like out of range": (set_cell("atemp", 5, -0.1), ["'atemp'", "in_range", "[7]"]),
    "humidity out of range": (set_cell("hum", 6, 1.01), ["'hum'", "in_range", "[8]"]),
    "wind out of range": (set_cell("windspeed", 7, 1.2), ["'windspeed'", "in_range", "[9]"]),
    "hour out of range": (set_cell("hr", 3, 24), ["'hr'", "in_range", "[5]"]),
    "unknown season": (set_cell("season", 3, 5), ["'season'", "in_range", "[5]"]),
    "negative registered": (set_cell("registered", 2, -1), ["'registered'", "[4]"]),
    "negative count": (
        set_cell("casual", 8, -3),
        ["'casual'", "greater_than_or_equal_to", "[10]"],
    ),
    "missing value": (set_cell("hr", 3, np.nan), ["'hr'", "not_nullable", "[5]"]),
    "unknown category": (set_cell("weathersit", 7, "tornado"), ["'weathersit'", "tornado", "[9]"]),
    "unknown month": (set_cell("mnth", 2, "Janvier"), ["'mnth'", "Janvier", "[4]"]),
    "wrong type": (set_cell("windspeed", 4, "windy"), ["'windspeed'", "float64", "[6]"]),
    "target inconsistent": (set_cell("bikers", 9, 999), ["bikers == casual + registered", "[11]"]),
    "workingday inconsistent": (set_cell("workingday", 0, 1), ["workingday ==", "[2]"]),
    "missing column": (lambda f: f.drop(columns=["temp"]), ["missing column(s): ['temp']"]),
    "extra column": (lambda f: f.assign(price=1.0), ["unexpected column(s): ['price']"]),
}


def test_real_data_passes(raw: pd.DataFrame) -> None:
    assert validate_raw(raw) is raw


@example_only
@pytest.mark.parametrize("kind", list(BAD_DATA))
def test_bad_data_is_rejected_naming_column_and_rows(raw: pd.DataFrame, kind: str) -> None:
    mutate, expected = BAD_DATA[kind]
    with pytest.raises(DataValidationError) as failure:
        validate_raw(mutate(raw))
    for words in expected:
        assert words in str(failure.value), f"{kind}: {words!r} not in:\n{failure.value}"


@example_only
def test_calendar_mismatch_is_rejected(raw: pd.DataFrame) -> None:
    raw.loc[0, "weekday"] = 3  # 2011-01-01 was a Saturday (6)
    raw.loc[0, "workingday"] = 1
    with pytest.raises(DataValidationError, match=r"'weekday' disagrees with the calendar.*\[2\]"):
        clean(validate_raw(raw), {"year": 2011})


def test_clean_keeps_every_row_sorted_by_time_on_a_fresh_index(
    raw: pd.DataFrame, params: dict[str, Any]
) -> None:
    table = clean(validate_raw(raw.iloc[::-1]), params["data"])  # rows in any order
    assert len(table) == len(raw)
    assert table[dataset.TIME].is_monotonic_increasing
    assert not table.duplicated(list(dataset.KEY)).any()
    assert table.index.equals(pd.RangeIndex(len(raw))) and "index" not in table
    assert set(dataset.FEATURES) | {dataset.TARGET} <= set(table.columns)


@example_only
def test_clean_dates_rows_and_handles_quirks(raw: pd.DataFrame) -> None:
    table = clean(validate_raw(raw), {"year": 2011})
    assert table["timestamp"].iloc[0] == pd.Timestamp("2011-01-01 00:00")
    assert table["timestamp"].iloc[-1] == pd.Timestamp("2011-12-31 23:00")
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
    pd.concat([raw, raw.iloc[[4]]]).to_csv(bad, index=False)  # a row twice
    result = CliRunner(mix_stderr=False).invoke(
        validate.app, ["--raw", str(bad), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert "duplicate rows of the key" in result.stderr and "[6, " in result.stderr
    assert list(tmp_path.iterdir()) == [bad]


def test_cli_writes_clean_table(raw_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "clean.parquet"
    result = CliRunner().invoke(validate.app, ["--raw", str(raw_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    # the raw rows, and the feedback rows beside them (data/feedback: the data grown by
    # `make feedback` or a retraining pull request), each new
    feedback = sum(len(pd.read_parquet(f)) for f in validate.FEEDBACK_DIR.glob("*.parquet"))
    assert len(pd.read_parquet(out)) == len(read_raw(raw_path)) + feedback


def message(raw: pd.DataFrame) -> str:
    with pytest.raises(DataValidationError) as failure:
        validate_raw(raw)
    return str(failure.value)


@example_only
def test_the_message_is_one_line_per_fault_in_column_order(raw: pd.DataFrame) -> None:
    raw = set_cell("casual", 8, -3)(set_cell("temp", 5, 1.5)(raw))
    lines = message(raw).splitlines()
    assert lines[0] == "raw data failed validation:"
    assert lines[1] == "  check 'bikers == casual + registered' failed at CSV lines [10]"
    temp = lines.index(
        "  column 'temp': failed 'in_range(0.0, 1.0)' at CSV lines [7] (values: [1.5])"
    )
    casual = lines.index(
        "  column 'casual': failed 'greater_than_or_equal_to(0)' at CSV lines [10] (values: [-3])"
    )
    assert temp < casual  # the schema's column order, not the alphabet


def test_a_missing_column_is_named_once(raw: pd.DataFrame) -> None:
    column = list(validate.RAW_SCHEMA.columns)[-1]
    lines = message(raw.drop(columns=[column])).splitlines()
    assert lines[:2] == ["raw data failed validation:", f"  missing column(s): ['{column}']"]
    assert sum(column in line for line in lines) == 1 or "check" in lines[-1]
    assert message(raw.assign(price_xyz=1.0)) == (
        "raw data failed validation:\n  unexpected column(s): ['price_xyz']"
    )


def test_a_duplicate_row_is_named_by_its_key_and_lines(
    raw: pd.DataFrame, params: dict[str, Any]
) -> None:
    duplicated = pd.concat([raw, raw.iloc[[10]]], ignore_index=True)
    with pytest.raises(DataValidationError) as failure:
        clean(validate_raw(duplicated), params["data"])
    assert str(failure.value) == (
        f"duplicate rows of the key {list(dataset.KEY)} at CSV lines [12, {len(raw) + 2}]"
    )


@example_only
@pytest.mark.parametrize(("bad_rows", "more"), [(10, False), (11, True)])
def test_at_most_ten_rows_and_values_are_listed(
    raw: pd.DataFrame, bad_rows: int, more: bool
) -> None:
    raw["temp"] = raw["temp"].astype(object)
    raw.loc[: bad_rows - 1, "temp"] = 2.0
    (line,) = [x for x in message(raw).splitlines() if "in_range" in x]
    assert f"at CSV lines {list(range(2, 12))}{' ...' if more else ''} (values:" in line
    assert line.endswith(f"(values: {[2.0] * 10})")


@example_only
def test_a_column_of_the_wrong_type_fails_as_a_whole(raw: pd.DataFrame) -> None:
    raw["hr"] = raw["hr"].astype(float)
    (line,) = [x for x in message(raw).splitlines() if "'hr'" in x]
    assert "at the column as a whole" in line


@example_only
def test_a_month_that_disagrees_with_the_day_names_mnth_and_ten_lines(raw: pd.DataFrame) -> None:
    raw.loc[:11, "mnth"] = "Feb"  # the first 12 hours are in January
    with pytest.raises(DataValidationError) as failure:
        clean(validate_raw(raw), {"year": 2011})
    assert str(failure.value) == (
        "column 'mnth' disagrees with the calendar of 2011 (day of year + data.year) at CSV "
        f"lines {list(range(2, 12))} ..."
    )


@example_only
def test_clean_table_types(raw: pd.DataFrame) -> None:
    table = clean(validate_raw(raw), {"year": 2011})
    assert list(table.weathersit.cat.categories) == [
        "clear", "cloudy/misty", "light rain/snow", "heavy rain/snow"
    ]  # fmt: skip
    assert {"mnth", "day"}.isdisjoint(table.columns)


@example_only
def test_the_same_hour_with_other_values_is_a_duplicate(raw: pd.DataFrame) -> None:
    again = raw.iloc[[10]].assign(temp=0.5 if raw.loc[10, "temp"] != 0.5 else 0.6)
    with pytest.raises(DataValidationError, match=r"duplicate rows of the key \['timestamp'\]"):
        clean(validate_raw(pd.concat([raw, again], ignore_index=True)), {"year": 2011})


def test_at_most_max_rows_lines_are_named(raw: pd.DataFrame) -> None:
    bad = raw.head(3).assign(**{next(iter(dataset.FEATURES)): None})  # missing in 3 rows
    with pytest.raises(pandera.errors.SchemaErrors) as err:
        validate.RAW_SCHEMA.validate(bad, lazy=True)
    described = validate.describe_failures(err.value.failure_cases, max_rows=2)
    assert "at CSV lines [2, 3] ..." in described


# --- feedback rows (make feedback) join the clean table ------------------------------------


def feedback_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[[dataset.TIME, *dataset.FEATURES, dataset.TARGET]].reset_index(drop=True)


def test_feedback_rows_join_the_table_in_time_order(clean_table: pd.DataFrame) -> None:
    recent = clean_table[clean_table[dataset.TIME] >= clean_table[dataset.TIME].quantile(0.9)]
    older = clean_table.drop(recent.index)
    merged = validate.with_feedback(older, feedback_rows(recent))
    assert len(merged) == len(clean_table)
    assert merged[dataset.TIME].is_monotonic_increasing
    assert merged[dataset.TARGET].sum() == clean_table[dataset.TARGET].sum()
    assert merged.dtypes[dataset.TARGET] == clean_table.dtypes[dataset.TARGET]


def test_feedback_repeating_a_key_of_the_data_is_refused(clean_table: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError, match=r"data/feedback repeats 2 rows of the key"):
        validate.with_feedback(clean_table, feedback_rows(clean_table.head(1)))


def test_a_feedback_file_that_breaks_a_column_spec_is_named(
    tmp_path: Path, clean_table: pd.DataFrame
) -> None:
    rows = feedback_rows(clean_table.head(3))
    column, spec = next((n, s) for n, s in dataset.FEATURES.items() if s.high is not None)
    rows.loc[1, column] = spec.high + 1
    (tmp_path / "feedback").mkdir()
    rows.to_parquet(tmp_path / "feedback" / "bad.parquet")
    with pytest.raises(
        DataValidationError, match=rf"bad\.parquet failed validation:\n.*'{column}'"
    ):
        validate.read_feedback(tmp_path / "feedback")


def test_no_feedback_directory_is_no_feedback(tmp_path: Path, clean_table: pd.DataFrame) -> None:
    none = validate.read_feedback(tmp_path / "absent")
    assert none.empty
    assert validate.with_feedback(clean_table, none) is clean_table


def test_feedback_faults_name_rows_and_a_missing_time(
    tmp_path: Path, clean_table: pd.DataFrame
) -> None:
    rows = feedback_rows(clean_table.head(3))
    column, spec = next((n, s) for n, s in dataset.FEATURES.items() if s.high is not None)
    rows.loc[1, column] = spec.high + 1
    with pytest.raises(DataValidationError) as refused:
        validate.validate_feedback(rows, "these rows")
    assert "at rows [3]" in str(refused.value) and "CSV" not in str(refused.value)
    timeless = feedback_rows(clean_table.head(3))
    timeless.loc[2, dataset.TIME] = pd.NaT
    with pytest.raises(
        DataValidationError, match=rf"^these rows: 1 rows have no '{dataset.TIME}'$"
    ):
        validate.validate_feedback(timeless, "these rows")


def test_feedback_files_read_together_with_a_fresh_index(
    tmp_path: Path, clean_table: pd.DataFrame
) -> None:
    (tmp_path / "feedback").mkdir()
    first, second = feedback_rows(clean_table.head(3)), feedback_rows(clean_table.iloc[3:5])
    first.to_parquet(tmp_path / "feedback" / "a.parquet")
    second.to_parquet(tmp_path / "feedback" / "b.parquet")
    rows = validate.read_feedback(tmp_path / "feedback")
    assert rows.index.tolist() == list(range(5))
    assert rows[dataset.TIME].tolist() == clean_table[dataset.TIME].head(5).tolist()
    none = validate.read_feedback(tmp_path / "absent")
    assert list(none.columns) == [dataset.TIME, *dataset.FEATURES, dataset.TARGET]
    older = clean_table.iloc[5:]
    merged = validate.with_feedback(older, rows)
    assert merged.index.tolist() == list(range(len(clean_table)))
    assert list(merged.columns) == list(clean_table.columns)


def test_a_repeated_key_is_named_by_its_first_row(clean_table: pd.DataFrame) -> None:
    again = feedback_rows(clean_table.iloc[[7, 9]])
    first = clean_table[list(dataset.KEY)].iloc[7].tolist()
    with pytest.raises(DataValidationError, match=re.escape(f"first {first}")):
        validate.with_feedback(clean_table, again)


# --- a feature the raw file holds in another form than the API (dataset.RAW_FEATURES) --------


def test_raw_features_replace_a_features_raw_spec_in_place() -> None:
    features = {"a": Column("int", 0, 1), "b": Column("category", categories=("x", "y"))}
    codes = Column("int", 1, 2)
    columns = raw_columns(features, {"b": codes}, {"t": Column("int")})
    assert list(columns) == ["a", "b", "t"]  # the spec's order: messages name columns in it
    assert columns == {"a": features["a"], "b": codes, "t": Column("int")}
    assert raw_columns(features, {}, {}) == features
    # None: a feature the raw file lacks, which clean() derives
    assert raw_columns(features, {"a": None}, {"t": Column("int")}) == {
        "b": features["b"],
        "t": Column("int"),
    }
    with pytest.raises(ValueError, match=r"RAW_FEATURES names \['c'\], which are not in FEATURES"):
        raw_columns(features, {"c": codes}, {})


Coded = tuple[pd.DataFrame, pandera.DataFrameSchema, str, dict[int, str], pd.DataFrame]


@pytest.fixture
def coded(raw: pd.DataFrame, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Coded:
    """The data with a category feature written as codes 1..n in the raw file (as many public
    files have it), the raw schema that RAW_FEATURES gives it, a spec whose clean() maps the
    codes back to the names the API takes, and the clean table of the data as it was."""
    name, spec = next(((n, s) for n, s in dataset.FEATURES.items() if s.kind == "category"),
                      (None, None))  # fmt: skip
    if name is None or spec is None:
        pytest.skip("the dataset spec has no category feature to write as codes")
    original = clean(validate_raw(raw.copy()), params["data"])
    names = dict(enumerate(spec.categories, 1))
    raw[name] = raw[name].map({category: code for code, category in names.items()})
    real_clean = dataset.clean
    monkeypatch.setattr(dataset, "clean", lambda table, params: real_clean(
        table.assign(**{name: table[name].map(names)}), params))  # fmt: skip
    raw_spec = Column("int", 1, len(names))
    columns = raw_columns(dataset.FEATURES, {name: raw_spec}, dataset.OTHER_COLUMNS)
    return raw, input_schema(columns, dataset.CHECKS), name, names, original


def test_codes_in_the_raw_file_are_refused_without_raw_features(coded: Coded) -> None:
    raw, _, name, _, _ = coded
    with pytest.raises(DataValidationError, match=rf"column '{name}': failed"):
        validate_raw(raw)  # FEATURES alone: the raw file must hold the API's names


def test_raw_features_let_clean_map_codes_to_the_apis_names(
    coded: Coded, params: dict[str, Any]
) -> None:
    raw, schema, name, _, original = coded
    assert pd.api.types.is_integer_dtype(raw[name])
    table = clean(validate_raw(raw, schema), params["data"])
    assert table[name].astype(str).tolist() == original[name].astype(str).tolist()


def test_a_code_clean_leaves_unmapped_breaks_the_contract_naming_its_rows(
    coded: Coded, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, schema, name, names, _ = coded
    last = max(names)
    real_clean = dataset.clean  # the fixture's: it maps every code; this one forgets the last
    monkeypatch.setattr(dataset, "clean", lambda table, params: real_clean(
        table.assign(**{name: table[name].where(table[name] != last, 0)}), params))  # fmt: skip
    rows = raw.index[raw[name] == last]
    if rows.empty:
        pytest.skip(f"no row of the data has the category {names[last]!r}")
    with pytest.raises(DataValidationError) as failure:
        clean(validate_raw(raw, schema), params["data"])
    lines = str(failure.value).splitlines()
    assert lines[0] == (
        "dataset.clean() made features that break the input contract (dataset.FEATURES):"
    )
    assert lines[1].startswith(f"  column '{name}': failed ")
    assert validate.csv_lines(rows) in lines[1]


def test_clean_must_return_every_feature(
    raw: pd.DataFrame, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_clean, dropped = dataset.clean, list(dataset.FEATURES)[-1]
    monkeypatch.setattr(dataset, "clean", lambda t, p: real_clean(t, p).drop(columns=[dropped]))
    with pytest.raises(DataValidationError, match=re.escape(
            f"dataset.clean() returned no feature column(s) ['{dropped}']")):  # fmt: skip
        clean(validate_raw(raw), params["data"])


def test_a_spec_without_raw_features_checks_the_raw_file_with_features() -> None:
    # RAW_FEATURES is optional: specs written before it (or without it) keep working
    script = ("import gitml.dataset as d; del d.RAW_FEATURES; from gitml.pipeline import validate;"
              " print(list(validate.RAW_COLUMNS) == [*d.FEATURES, *d.OTHER_COLUMNS])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "True\n"), done.stderr
