from typing import Any

import pandas as pd
import pytest

from gitml.prepare import split_by_time


def test_splits_are_ordered_in_time_and_disjoint(splits: dict[str, pd.DataFrame]) -> None:
    train, test, production = splits["train"], splits["test"], splits["production"]
    assert train["timestamp"].max() < test["timestamp"].min()
    assert test["timestamp"].max() < production["timestamp"].min()
    assert sum(len(s) for s in splits.values()) == len(
        pd.concat(splits.values()).drop_duplicates("timestamp")
    )


def test_split_months_follow_params(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    first_production = params["split"]["production_from_month"]
    first_test = first_production - params["split"]["test_months"]
    assert splits["train"]["month"].max() == first_test - 1
    assert set(splits["test"]["month"]) == set(range(first_test, first_production))
    assert splits["production"]["month"].min() == first_production


@pytest.mark.parametrize(("production_from", "test_months"), [(1, 1), (13, 1), (10, 0), (10, 9)])
def test_impossible_cut_is_an_error(
    clean_table: pd.DataFrame, production_from: int, test_months: int
) -> None:
    with pytest.raises(ValueError, match="empty split"):
        split_by_time(clean_table, production_from, test_months)
