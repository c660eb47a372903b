"""Shared fixtures: the real example data (pulled by `make data`) and the params."""

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gitml.config import PARAMS_FILE, RAW_DATA, load_params
from gitml.prepare import split_by_time
from gitml.validate import clean, read_raw


@pytest.fixture(scope="session")
def raw_path() -> Path:
    if not RAW_DATA.exists():
        pytest.fail(f"{RAW_DATA} is missing: run `make data` (the suite needs the real data)")
    return RAW_DATA


@pytest.fixture(scope="session")
def params() -> dict[str, Any]:
    return {
        name: load_params(name, PARAMS_FILE)
        for name in ("data", "split", "features", "train", "evaluate")
    }


@pytest.fixture
def raw(raw_path: Path) -> pd.DataFrame:
    """A fresh copy of the raw table for each test, free to mutate."""
    return read_raw(raw_path)


@pytest.fixture(scope="session")
def clean_table(raw_path: Path, params: dict[str, Any]) -> pd.DataFrame:
    return clean(read_raw(raw_path), params["data"]["year"])


@pytest.fixture(scope="session")
def splits(clean_table: pd.DataFrame, params: dict[str, Any]) -> dict[str, pd.DataFrame]:
    split = params["split"]
    return split_by_time(clean_table, split["production_from_month"], split["test_months"])
