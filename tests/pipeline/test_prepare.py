from typing import Any

import pandas as pd
import pytest

from gitml.dataset import TIME
from gitml.pipeline.prepare import boundary, split_by_time


def test_splits_are_ordered_in_time_disjoint_and_complete(
    splits: dict[str, pd.DataFrame], clean_table: pd.DataFrame
) -> None:
    train, test, production = splits["train"], splits["test"], splits["production"]
    assert train[TIME].max() < test[TIME].min()
    assert test[TIME].max() < production[TIME].min()
    assert sum(len(s) for s in splits.values()) == len(clean_table)


def test_split_boundaries_follow_params(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    test_from = pd.Timestamp(params["split"]["test_from"])
    production_from = pd.Timestamp(params["split"]["production_from"])
    assert splits["train"][TIME].max() < test_from <= splits["test"][TIME].min()
    assert splits["test"][TIME].max() < production_from <= splits["production"][TIME].min()


def test_days_back_count_from_the_end_of_the_data(clean_table: pd.DataFrame) -> None:
    last_day = clean_table[TIME].max().normalize()
    assert boundary("split.x", "-1d", clean_table[TIME]) == last_day
    assert boundary("split.x", " -30d ", clean_table[TIME]) == last_day - pd.Timedelta(days=29)
    splits = split_by_time(clean_table, "-60d", "-30d")
    assert splits["production"][TIME].min() >= last_day - pd.Timedelta(days=29)
    assert splits["production"][TIME].dt.normalize().nunique() <= 30


def test_boundaries_span_any_number_of_years() -> None:
    times = pd.date_range("2019-01-01", "2021-12-31 23:00", freq="h")
    table = pd.DataFrame({TIME: times, "y": range(len(times))})
    splits = split_by_time(table, "2020-10-01", "2021-01-01")
    assert splits["train"][TIME].max() == pd.Timestamp("2020-09-30 23:00")
    assert len(splits["test"]) == (31 + 30 + 31) * 24  # Oct-Dec of the second year only
    assert splits["production"][TIME].min() == pd.Timestamp("2021-01-01")


@pytest.mark.parametrize(
    ("test_from", "production_from", "empty"),
    [
        ("1900-01-01", "-30d", "train"),
        ("-30d", "-30d", "test"),
        ("-10d", "-30d", "test"),
        ("-30d", "2999-01-01", "production"),
    ],
)
def test_a_cut_that_leaves_a_split_empty_is_an_error_naming_it(
    clean_table: pd.DataFrame, test_from: str, production_from: str, empty: str
) -> None:
    with pytest.raises(ValueError) as err:
        split_by_time(clean_table, test_from, production_from)
    message = str(err.value)
    assert f"split.test_from={test_from}" in message
    assert f"split.production_from={production_from}" in message
    assert f"leave {empty} empty" in message
    assert f"{clean_table[TIME].min():%Y-%m-%d %H:%M}" in message  # the data's range


@pytest.mark.parametrize("value", ["September", "30d", "-d", 10, None, "2011-13-01"])
def test_an_unreadable_boundary_is_an_error_naming_the_setting(
    clean_table: pd.DataFrame, value: object
) -> None:
    with pytest.raises(ValueError, match=r"split.test_from=.* is neither a date"):
        split_by_time(clean_table, value, "-30d")


def test_a_rolling_split_without_a_held_back_stream_trains_and_tests_on_everything(
    clean_table: pd.DataFrame,
) -> None:
    splits = split_by_time(clean_table, "-14d", None)
    assert splits["production"].empty
    assert list(splits["production"].columns) == list(clean_table.columns)
    assert len(splits["train"]) + len(splits["test"]) == len(clean_table)
    end = clean_table[TIME].max().normalize() + pd.Timedelta(days=1)
    assert splits["test"][TIME].min() >= end - pd.Timedelta(days=14) > splits["train"][TIME].max()


def test_a_rolling_test_window_moves_with_newer_data(clean_table: pd.DataFrame) -> None:
    # the same params on a table that has grown by a month: the test window is its last month
    older = clean_table[clean_table[TIME] < clean_table[TIME].max() - pd.Timedelta(days=30)]
    before, after = (split_by_time(table, "-14d", None)["test"] for table in (older, clean_table))
    assert after[TIME].min() - before[TIME].min() >= pd.Timedelta(days=29)
    assert after[TIME].max() == clean_table[TIME].max()


def test_a_date_yaml_reads_unquoted_is_that_day(clean_table: pd.DataFrame) -> None:
    times = clean_table[TIME]
    day = times.iloc[len(times) // 2].normalize()
    assert boundary("split.x", day.date(), times) == day
    by_date, by_text = (
        split_by_time(clean_table, value, None) for value in (day.date(), f"{day:%Y-%m-%d}")
    )
    assert by_date["test"][TIME].min() == by_text["test"][TIME].min() == day


def test_an_unreadable_production_boundary_names_its_setting(clean_table: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"^split.production_from='soon' is neither a date"):
        split_by_time(clean_table, "-30d", "soon")


def test_a_cut_leaving_two_splits_empty_names_both_and_the_day_after_the_data(
    clean_table: pd.DataFrame,
) -> None:
    last = clean_table[TIME].max()
    with pytest.raises(ValueError) as err:
        split_by_time(clean_table, "2999-01-01", "2999-06-01")
    assert "leave test and production empty" in str(err.value)
    with pytest.raises(ValueError) as err:  # nothing held back: production ends with the data
        split_by_time(clean_table, "2999-01-01", None)
    day_after = last + pd.Timedelta(days=1)
    assert f"split.production_from=None ({day_after:%Y-%m-%d}) leave test empty" in str(err.value)
