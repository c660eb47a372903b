"""The model's input contract, built from the dataset spec's `FEATURES` (dataset.py): the
batch validator (pandera) here, the HTTP request model (pydantic) in serve.py, so they can never
disagree.

Beside the features, a row may carry its event time (EVENT_TIME, the dataset's TIME column):
the time the prediction is about, which the log records and monitoring windows go by. It is not
a model input.
"""

from datetime import UTC, datetime

import pandas as pd
import pandera.pandas as pa

from gitml.columns import Column
from gitml.dataset import FEATURES, TIME

__all__ = [
    "EVENT_TIME",
    "EXAMPLE_ROW",
    "FEATURES",
    "INPUT_SCHEMA",
    "Column",
    "as_model_input",
    "event_time",
    "input_schema",
]

EVENT_TIME = TIME
if EVENT_TIME in FEATURES:
    raise ValueError(f"dataset.TIME {TIME!r} is also a feature: the event time must be apart")


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


# The prediction log is read with pandas, whose timestamps span 1677-2262; the OpenAPI document
# states these years as a pattern (JSON Schema has no date bounds).
EVENT_YEARS = (1700, 2199)
EVENT_TIME_PATTERN = r"^(1[7-9]|2[01])\d\d-"
EVENT_TIME_FORMAT = "ISO 8601 date-time, YYYY-MM-DDTHH:MM[:SS] with an offset or Z (none: UTC)"


def as_utc(moment: datetime) -> datetime:
    """The moment with its offset; one without an offset is read as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_event_time(text: str) -> datetime:
    """An event time given on a command line (`--since`, `--until`), read as `event_time`
    reads one: a date, or a date-time with an offset, `Z` or none (UTC)."""
    return datetime.fromisoformat(event_time(text))


def event_time(value: object) -> str:
    """An event time as UTC ISO text (`2024-05-01T08:00:00+00:00`); a ValueError naming the
    expected format for anything else."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string: {EVENT_TIME_FORMAT}")
    try:
        moment = datetime.fromisoformat(value.upper())  # RFC 3339 allows a lowercase t and z
    except ValueError:
        raise ValueError(f"must be an {EVENT_TIME_FORMAT}") from None
    if not EVENT_YEARS[0] <= moment.year <= EVENT_YEARS[1]:
        raise ValueError(f"must be in the years {EVENT_YEARS[0]} to {EVENT_YEARS[1]}")
    return as_utc(moment).astimezone(UTC).isoformat()
