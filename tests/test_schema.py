from typing import Any

from gitml.schema import FEATURES, INPUT_SCHEMA, as_model_input


def test_input_contract_covers_exactly_the_feature_params(params: dict[str, Any]) -> None:
    features = params["features"]
    assert set(FEATURES) == {*features["categorical"], *features["numeric"]}


def test_clean_data_satisfies_the_input_contract(splits: dict[str, Any]) -> None:
    INPUT_SCHEMA.validate(as_model_input(splits["test"]))
