import re
import time
from datetime import timedelta
from typing import Any

import pandas as pd
import pandera.errors
import pytest

from gitml.dataset import TARGET
from gitml.schema import (
    EVENT_TIME_FORMAT,
    EVENT_TIME_PATTERN,
    EVENT_YEARS,
    EXAMPLE_ROW,
    FEATURES,
    INPUT_SCHEMA,
    Column,
    as_model_input,
    event_time,
    input_schema,
    parse_event_time,
)
from tests.example_data import example_only

DTYPES = {"int": "int64", "float": "float64", "category": "object"}


def test_input_contract_covers_exactly_the_feature_params(params: dict[str, Any]) -> None:
    features = params["features"]
    assert set(FEATURES) == {*features["categorical"], *features["numeric"]}


def test_clean_data_satisfies_the_input_contract(splits: dict[str, Any]) -> None:
    INPUT_SCHEMA.validate(as_model_input(splits["test"]))
    validated = input_schema(FEATURES).validate(as_model_input(splits["test"]))
    assert {n: str(validated[n].dtype) for n in FEATURES} == {
        n: DTYPES[spec.kind] for n, spec in FEATURES.items()
    }


def test_float_columns_are_coerced_and_int_columns_are_not() -> None:
    floats = [n for n, spec in FEATURES.items() if spec.kind == "float"]
    ints = [n for n, spec in FEATURES.items() if spec.kind == "int"]
    if not floats or not ints:
        pytest.skip("the dataset spec needs int and float features for this check")
    # a float column given as an integer within its bounds is coerced, not refused
    whole = {n: int(EXAMPLE_ROW[n]) for n in floats if float(EXAMPLE_ROW[n]).is_integer()}
    whole = whole or {floats[0]: int(FEATURES[floats[0]].low or 0)}
    table = input_schema(FEATURES).validate(one_row(**whole))
    assert all(table[n].dtype == "float64" for n in whole)
    with pytest.raises(pandera.errors.SchemaError, match=ints[0]):
        input_schema(FEATURES).validate(one_row(**{ints[0]: float(EXAMPLE_ROW[ints[0]])}))


# The contract, written out by hand (not read from FEATURES): a change to a bound must show here.
RANGES = {
    "hr": (0, 23),
    "weekday": (0, 6),
    "workingday": (0, 1),
    "holiday": (0, 1),
    "temp": (0.0, 1.0),
    "atemp": (0.0, 1.0),
    "hum": (0.0, 1.0),
    "windspeed": (0.0, 1.0),
}
STEP = {"int": 1, "float": 0.01}


def one_row(**changes: object) -> pd.DataFrame:
    return pd.DataFrame([{**EXAMPLE_ROW, **changes}])


@example_only
@pytest.mark.parametrize("column", list(RANGES))
def test_each_bounded_column_accepts_its_range_and_refuses_outside(column: str) -> None:
    low, high = RANGES[column]
    step = STEP[FEATURES[column].kind]
    for inside in (low, high):
        input_schema(FEATURES).validate(one_row(**{column: inside}))
    for outside in (low - step, high + step):
        with pytest.raises(pandera.errors.SchemaError, match=column):
            input_schema(FEATURES).validate(one_row(**{column: outside}))


@example_only
def test_weather_is_one_of_four_and_only_humidity_may_be_missing() -> None:
    assert FEATURES["weathersit"].categories == (
        "clear", "cloudy/misty", "light rain/snow", "heavy rain/snow"
    )  # fmt: skip
    with pytest.raises(pandera.errors.SchemaError, match="weathersit"):
        input_schema(FEATURES).validate(one_row(weathersit="tornado"))
    input_schema(FEATURES).validate(one_row(hum=None))
    for column in ("temp", "windspeed"):
        with pytest.raises(pandera.errors.SchemaError, match=column):
            input_schema(FEATURES).validate(one_row(**{column: None}))
    with pytest.raises(pandera.errors.SchemaErrors, match="extra"):
        input_schema(FEATURES).validate(one_row().assign(extra=1))  # strict: no unknown columns


def test_as_model_input_orders_columns_and_makes_categories_strings() -> None:
    frame = one_row().assign(**{TARGET: 5})[[TARGET, *reversed(list(FEATURES))]]
    categories = [n for n, spec in FEATURES.items() if spec.kind == "category"]
    for name in categories:
        frame[name] = pd.Categorical(frame[name])
    frame.index = [7]
    table = as_model_input(frame)
    assert list(table) == list(FEATURES) and list(table.index) == [0]
    for name in categories:
        assert table[name].dtype == object and table[name].iloc[0] == EXAMPLE_ROW[name]


def test_every_feature_has_an_example_the_contract_accepts() -> None:
    assert all(spec.example is not None for spec in FEATURES.values())
    input_schema(FEATURES).validate(one_row())


def test_a_one_sided_bound_checks_its_side() -> None:
    schema = input_schema({"x": Column("float", low=0.0)})
    schema.validate(pd.DataFrame({"x": [0.0, 1e9]}))
    with pytest.raises(pandera.errors.SchemaError, match="greater_than_or_equal_to"):
        schema.validate(pd.DataFrame({"x": [-0.5]}))
    schema = input_schema({"x": Column("int", high=3)})
    with pytest.raises(pandera.errors.SchemaError, match="less_than_or_equal_to"):
        schema.validate(pd.DataFrame({"x": [4]}))


@pytest.mark.parametrize("nullable", [False, True])
def test_text_and_bool_columns_check_their_type_and_missing_values(nullable: bool) -> None:
    schema = input_schema(
        {"when": Column("text", nullable=nullable), "flag": Column("bool", nullable=nullable)}
    )
    schema.validate(pd.DataFrame({"when": ["1962-12-03"], "flag": [True]}))
    with pytest.raises(pandera.errors.SchemaError, match="when"):
        schema.validate(pd.DataFrame({"when": [3], "flag": [True]}))
    with pytest.raises(pandera.errors.SchemaError, match="flag"):
        schema.validate(pd.DataFrame({"when": ["x"], "flag": ["yes"]}))
    missing = pd.DataFrame({"when": pd.Series([None], dtype=object), "flag": [True]})
    if nullable:
        schema.validate(missing)
    else:
        with pytest.raises(pandera.errors.SchemaError, match="when"):
            schema.validate(missing)


def test_checks_across_columns_are_applied() -> None:
    check = pandera.Check(lambda df: df["a"] < df["b"], name="a below b")
    schema = input_schema({"a": Column("int"), "b": Column("int")}, [check])
    schema.validate(pd.DataFrame({"a": [1], "b": [2]}))
    with pytest.raises(pandera.errors.SchemaError, match="a below b"):
        schema.validate(pd.DataFrame({"a": [3], "b": [2]}))


@pytest.mark.parametrize(
    ("sent", "utc"),
    [
        ("2024-05-01T08:00:00Z", "2024-05-01T08:00:00+00:00"),
        ("2024-05-01T10:00+02:00", "2024-05-01T08:00:00+00:00"),
        ("2024-05-01T03:30:00.250-04:30", "2024-05-01T08:00:00.250000+00:00"),
        ("2024-05-01t08:00:00z", "2024-05-01T08:00:00+00:00"),  # RFC 3339's lowercase
        ("2024-05-01T08:00", "2024-05-01T08:00:00+00:00"),  # no offset: UTC
        ("2024-05-01", "2024-05-01T00:00:00+00:00"),
    ],
)
def test_an_event_time_is_read_as_utc(sent: str, utc: str) -> None:
    assert event_time(sent) == utc
    parsed = parse_event_time(sent)  # as a command line's --since/--until gives it
    assert (parsed.isoformat(), parsed.utcoffset()) == (utc, timedelta(0))


@pytest.mark.parametrize(
    "sent", ["yesterday", "2024-13-01T00:00", "2024-05-01T25:00", "", "2024-05-01T08:00+25:00",
             1714550400, None, ["2024-05-01"]],
)  # fmt: skip
def test_anything_else_is_refused_naming_the_format(sent: object) -> None:
    with pytest.raises(ValueError, match="ISO 8601 date-time") as refused:
        event_time(sent)
    assert EVENT_TIME_FORMAT in str(refused.value)


@pytest.mark.parametrize("sent", ["1699-12-31T23:59:59Z", "2200-01-01T00:00:00Z", "0001-01-01"])
def test_an_event_time_the_log_could_not_hold_is_refused(sent: str) -> None:
    # the prediction log is read with pandas, whose timestamps span 1677-2262
    first, last = EVENT_YEARS
    with pytest.raises(ValueError, match=f"must be in the years {first} to {last}"):
        event_time(sent)
    assert event_time(f"{first}-01-01T00:00:00+01:00").startswith(f"{first - 1}-12-31T23:00")
    assert event_time(f"{last}-12-31T23:59:59-01:00").startswith(f"{last + 1}-01-01T00:59")
    assert re.match(EVENT_TIME_PATTERN, f"{first}-01-01") and re.match(
        EVENT_TIME_PATTERN, f"{last}-12-31"
    )
    assert not re.match(EVENT_TIME_PATTERN, sent)


def test_an_event_time_without_an_offset_is_utc_whatever_the_machines_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert event_time("2024-05-01T08:00") == "2024-05-01T08:00:00+00:00"
        assert event_time("2024-05-01T10:00+02:00") == "2024-05-01T08:00:00+00:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
