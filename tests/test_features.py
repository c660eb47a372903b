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
    with pytest.raises(KeyError, match="temp"):
        split_xy(splits["train"].drop(columns="temp"), params["features"])


def test_preprocessor_ignores_unseen_categories_and_imputes(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    inputs, _ = split_xy(splits["train"], params["features"])
    preprocessor = build_preprocessor(params["features"]).fit(inputs)
    unseen = inputs.head(2).copy()
    unseen["weathersit"] = pd.Categorical(["heavy rain/snow"] * 2)
    unseen["hum"] = float("nan")
    encoded = preprocessor.transform(unseen)
    assert encoded.shape == (2, len(preprocessor.get_feature_names_out()))
    assert not pd.isna(encoded).any()
