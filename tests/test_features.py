from typing import Any

import pandas as pd
import pytest

from gitml.features import build_preprocessor, feature_columns, split_xy


@pytest.mark.parametrize("leak", ["casual", "registered", "bikers"])
def test_target_and_its_parts_are_refused(params: dict[str, Any], leak: str) -> None:
    features = {**params["features"], "numeric": [*params["features"]["numeric"], leak]}
    with pytest.raises(ValueError, match=leak):
        feature_columns(features)


def test_split_xy_names_missing_columns(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    with pytest.raises(KeyError, match=r"columns \['temp'\] are missing from the data"):
        split_xy(splits["train"].drop(columns="temp"), params["features"])


def test_preprocessor_ignores_unseen_categories_and_imputes_the_median(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    inputs, _ = split_xy(splits["train"], params["features"])
    # training never sees heavy rain, so at serving time it is an unseen category
    seen = inputs[inputs["weathersit"] != "heavy rain/snow"]
    preprocessor = build_preprocessor(params["features"]).fit(seen)
    unseen = seen.head(2).copy()
    unseen["weathersit"] = pd.Categorical(["heavy rain/snow"] * 2)
    unseen["hum"] = float("nan")
    encoded = pd.DataFrame(
        preprocessor.transform(unseen), columns=preprocessor.get_feature_names_out()
    )
    weather = [c for c in encoded if c.startswith("weathersit_")]
    assert weather and "weathersit_heavy rain/snow" not in weather
    assert (encoded[weather] == 0).all().all()  # an unseen level: no category is hot
    # a missing humidity becomes the training median (0 would read as bone-dry air)
    assert encoded["hum"].tolist() == [seen["hum"].median()] * 2
    assert seen["hum"].median() != seen["hum"].mean()  # so the median, not the mean, is tested
    assert not pd.isna(encoded.to_numpy()).any()


def test_columns_are_categorical_first_then_numeric(params: dict[str, Any]) -> None:
    features = {"target": "y", "categorical": ["a", "b"], "numeric": ["c"]}
    assert feature_columns(features) == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"\['y'\] are the target"):
        feature_columns({**features, "numeric": ["c", "y"]})


def test_split_xy_returns_the_inputs_and_the_target(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    inputs, target = split_xy(splits["train"], params["features"])
    assert list(inputs) == feature_columns(params["features"])
    assert target.name == "bikers" and target.equals(splits["train"]["bikers"])
    with pytest.raises(KeyError, match="bikers"):
        split_xy(splits["train"].drop(columns="bikers"), params["features"])
