"""Golden cases: the first test rows as a client sends them, with the model's predictions."""

import json
from typing import Any

import numpy as np
import pandas as pd

from gitml.schema import FEATURES
from gitml.serving.golden import GOLDEN_ROWS, golden_cases, golden_rows


class Counting:
    """A model that answers 0.5, 1.5, 2.5... as numpy floats, and keeps what it was asked."""

    def __init__(self) -> None:
        self.asked: list[pd.DataFrame] = []

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        self.asked.append(rows)
        return np.arange(len(rows), dtype=np.float32) + 0.5


def test_the_rows_are_the_test_splits_first_as_the_model_takes_them(
    splits: dict[str, pd.DataFrame],
) -> None:
    test = splits["test"]
    rows = golden_rows(test)
    assert len(rows) == GOLDEN_ROWS == 20
    assert list(rows.columns) == list(FEATURES) and rows.index.tolist() == list(range(20))
    for name in FEATURES:  # the first rows by time, each value as the split holds it
        assert rows[name].astype(str).tolist() == test[name].head(20).astype(str).tolist()
    assert len(golden_rows(test, 3)) == 3


def test_the_cases_are_the_rows_as_json_and_the_models_own_predictions(
    splits: dict[str, pd.DataFrame],
) -> None:
    rows = golden_rows(splits["test"], 3)
    missing = next((name for name, spec in FEATURES.items() if spec.kind == "float"), None)
    if missing is not None:
        rows.loc[1, missing] = np.nan  # a value a client leaves out
    model = Counting()
    cases = golden_cases(model, rows)
    assert cases["predictions"] == [0.5, 1.5, 2.5]
    assert all(type(x) is float for x in cases["predictions"])  # JSON-ready, not numpy's
    assert model.asked[0] is rows
    assert [list(record) for record in cases["rows"]] == [list(FEATURES)] * 3
    if missing is not None:
        assert cases["rows"][1][missing] is None  # NaN travels as null, as a client sends it
    first: dict[str, Any] = json.loads(rows.head(1).to_json(orient="records"))[0]
    assert cases["rows"][0] == first
    json.dumps(cases, allow_nan=False)  # golden.json holds no NaN
