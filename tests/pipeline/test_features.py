from typing import Any

import pandas as pd
import pytest

from gitml.dataset import LEAKY, TARGET
from gitml.pipeline.features import build_preprocessor, feature_columns, split_xy


@pytest.mark.parametrize("leak", [*LEAKY, TARGET])
def test_target_and_its_parts_are_refused(params: dict[str, Any], leak: str) -> None:
    features = {**params["features"], "numeric": [*params["features"]["numeric"], leak]}
    with pytest.raises(ValueError, match=leak):
        feature_columns(features)


def test_split_xy_names_missing_columns(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    column = params["features"]["numeric"][0]
    with pytest.raises(KeyError, match=rf"columns \['{column}'\] are missing from the data"):
        split_xy(splits["train"].drop(columns=column), params["features"])


def test_preprocessor_ignores_unseen_categories_and_imputes_the_median(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    inputs, _ = split_xy(splits["train"], params["features"])
    category = params["features"]["categorical"][0]
    counts = inputs[category].value_counts()
    rarest = counts[counts > 0].index[-1]
    # training never sees the rarest level, so at serving time it is an unseen category
    seen = inputs[inputs[category] != rarest]
    # a numeric column whose median is not its mean, so the median, not the mean, is tested
    numeric = next(c for c in params["features"]["numeric"] if seen[c].median() != seen[c].mean())
    preprocessor = build_preprocessor(params["features"]).fit(seen)
    unseen = seen.head(2).copy()
    unseen[category] = pd.Series([rarest] * 2, index=unseen.index).astype(inputs[category].dtype)
    unseen[numeric] = float("nan")
    encoded = pd.DataFrame(
        preprocessor.transform(unseen), columns=preprocessor.get_feature_names_out()
    )
    levels = [c for c in encoded if c.startswith(f"{category}_")]
    assert levels and f"{category}_{rarest}" not in levels
    assert (encoded[levels] == 0).all().all()  # an unseen level: no category is hot
    # a missing value becomes the training median (0 would read as, say, bone-dry air)
    assert encoded[numeric].tolist() == [seen[numeric].median()] * 2
    assert not pd.isna(encoded.to_numpy()).any()


def test_columns_are_categorical_first_then_numeric(params: dict[str, Any]) -> None:
    features = {"categorical": ["a", "b"], "numeric": ["c"]}
    assert feature_columns(features) == ["a", "b", "c"]
    for leak in (TARGET, *LEAKY):
        with pytest.raises(ValueError, match=rf"\['{leak}'\] are the target or parts of it"):
            feature_columns({**features, "numeric": ["c", leak]})


def test_split_xy_returns_the_inputs_and_the_target(
    splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    inputs, target = split_xy(splits["train"], params["features"])
    assert list(inputs) == feature_columns(params["features"])
    assert target.name == TARGET and target.equals(splits["train"][TARGET])
    with pytest.raises(KeyError, match=TARGET):
        split_xy(splits["train"].drop(columns=TARGET), params["features"])
