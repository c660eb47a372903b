"""The model's input contract: one spec per feature column, from which the batch validator
(pandera) and the HTTP request model (pydantic) are both built, so they can never disagree.

To adapt the template, describe your feature columns here (tests check the spec matches
`features` in params.yaml).
"""

from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import pandera.pandas as pa


@dataclass(frozen=True)
class Column:
    kind: Literal["int", "float", "category"]
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()
    nullable: bool = False  # the value may be missing (the pipeline imputes it)
    example: Any = None


WEATHER = ("clear", "cloudy/misty", "light rain/snow", "heavy rain/snow")

FEATURES: dict[str, Column] = {
    "hr": Column("int", 0, 23, example=8),
    "weekday": Column("int", 0, 6, example=2),
    "weathersit": Column("category", categories=WEATHER, example="clear"),
    "workingday": Column("int", 0, 1, example=1),
    "holiday": Column("int", 0, 1, example=0),
    "temp": Column("float", 0.0, 1.0, example=0.5),
    "atemp": Column("float", 0.0, 1.0, example=0.48),
    "hum": Column("float", 0.0, 1.0, nullable=True, example=0.6),
    "windspeed": Column("float", 0.0, 1.0, example=0.2),
}

EXAMPLE_ROW = {name: spec.example for name, spec in FEATURES.items()}


def _pandera_column(spec: Column) -> pa.Column:
    checks = []
    if spec.kind == "category":
        checks.append(pa.Check.isin(list(spec.categories)))
        return pa.Column(str, checks, nullable=spec.nullable)
    if spec.low is not None and spec.high is not None:
        checks.append(pa.Check.in_range(spec.low, spec.high))
    dtype = "int64" if spec.kind == "int" else "float64"
    return pa.Column(dtype, checks, nullable=spec.nullable, coerce=spec.kind == "float")


def input_schema(features: dict[str, Column]) -> pa.DataFrameSchema:
    """The batch validator of a feature spec: every column checked, no other column allowed."""
    return pa.DataFrameSchema(
        {name: _pandera_column(spec) for name, spec in features.items()}, strict=True
    )


INPUT_SCHEMA = input_schema(FEATURES)


def as_model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """Feature columns in spec order, categories as plain strings (as the model was saved)."""
    table = frame[list(FEATURES)].reset_index(drop=True)  # MLEM would record an index column
    for name, spec in FEATURES.items():
        if spec.kind == "category":
            table[name] = table[name].astype(str)
    return table
