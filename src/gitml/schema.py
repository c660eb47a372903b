"""The model's input contract, built from the dataset spec's `FEATURES` (dataset.py): the
batch validator (pandera) here, the HTTP request model (pydantic) in serve.py, so they can never
disagree.
"""

import pandas as pd
import pandera.pandas as pa

from gitml.columns import Column
from gitml.dataset import FEATURES

__all__ = ["EXAMPLE_ROW", "FEATURES", "INPUT_SCHEMA", "Column", "as_model_input", "input_schema"]


EXAMPLE_ROW = {name: spec.example for name, spec in FEATURES.items()}


def _pandera_column(spec: Column) -> pa.Column:
    checks = []
    if spec.kind == "category":
        checks.append(pa.Check.isin(list(spec.categories)))
        return pa.Column(str, checks, nullable=spec.nullable)
    if spec.kind in ("text", "bool"):
        return pa.Column(str if spec.kind == "text" else bool, nullable=spec.nullable)
    if spec.low is not None and spec.high is not None:
        checks.append(pa.Check.in_range(spec.low, spec.high))
    elif spec.low is not None:
        checks.append(pa.Check.ge(spec.low))
    elif spec.high is not None:
        checks.append(pa.Check.le(spec.high))
    dtype = "int64" if spec.kind == "int" else "float64"
    return pa.Column(dtype, checks, nullable=spec.nullable, coerce=spec.kind == "float")


def input_schema(
    columns: dict[str, Column], checks: list[pa.Check] | None = None
) -> pa.DataFrameSchema:
    """The validator of a table of `columns`: each column checked, then the table-wide
    `checks`, no other column allowed."""
    return pa.DataFrameSchema(
        {name: _pandera_column(spec) for name, spec in columns.items()},
        checks=checks,
        strict=True,
    )


INPUT_SCHEMA = input_schema(FEATURES)


def as_model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """Feature columns in spec order, categories as plain strings (as the model was saved)."""
    table = frame[list(FEATURES)].reset_index(drop=True)  # MLEM would record an index column
    for name, spec in FEATURES.items():
        if spec.kind == "category":
            table[name] = table[name].astype(str)
    return table
