from typing import Any

import pandas as pd
import pandera.errors
import pytest

from gitml.schema import (
    EXAMPLE_ROW,
    FEATURES,
    INPUT_SCHEMA,
    Column,
    as_model_input,
    input_schema,
)


def test_input_contract_covers_exactly_the_feature_params(params: dict[str, Any]) -> None:
    features = params["features"]
    assert set(FEATURES) == {*features["categorical"], *features["numeric"]}


def test_clean_data_satisfies_the_input_contract(splits: dict[str, Any]) -> None:
    INPUT_SCHEMA.validate(as_model_input(splits["test"]))
    validated = input_schema(FEATURES).validate(as_model_input(splits["test"]))
    assert validated["temp"].dtype == "float64" and validated["hr"].dtype == "int64"


def test_float_columns_are_coerced_and_int_columns_are_not() -> None:
    # a float column given as integers (0 and 1 are valid values) is coerced, not refused
    table = input_schema(FEATURES).validate(one_row(temp=1, windspeed=0))
    assert table["temp"].dtype == "float64"
    with pytest.raises(pandera.errors.SchemaError, match="hr"):
        input_schema(FEATURES).validate(one_row(hr=8.0))


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


@pytest.mark.parametrize("column", list(RANGES))
def test_each_bounded_column_accepts_its_range_and_refuses_outside(column: str) -> None:
    low, high = RANGES[column]
    step = STEP[FEATURES[column].kind]
    for inside in (low, high):
        input_schema(FEATURES).validate(one_row(**{column: inside}))
    for outside in (low - step, high + step):
        with pytest.raises(pandera.errors.SchemaError, match=column):
            input_schema(FEATURES).validate(one_row(**{column: outside}))


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
    frame = one_row().assign(bikers=5)[["bikers", *reversed(list(FEATURES))]]
    frame["weathersit"] = pd.Categorical(frame["weathersit"])
    frame.index = [7]
    table = as_model_input(frame)
    assert list(table) == list(FEATURES) and list(table.index) == [0]
    assert table["weathersit"].dtype == object and table["weathersit"].iloc[0] == "clear"


def test_a_one_sided_bound_checks_nothing_rather_than_failing() -> None:
    schema = input_schema({"x": Column("float", low=0.0)})
    schema.validate(pd.DataFrame({"x": [5.0, 1e9]}))
