"""Feature engineering: which columns feed the model and how each kind is encoded.

The column lists come from params.yaml (`features`); the target and the columns that leak it
(never features) from the dataset spec.
"""

from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from gitml.dataset import LEAKY, TARGET


def feature_columns(params: dict[str, Any]) -> list[str]:
    """All input columns, categorical first, refusing the target and its parts."""
    columns = [*params["categorical"], *params["numeric"]]
    leaks = sorted(set(columns) & {TARGET, *LEAKY})
    if leaks:
        raise ValueError(f"features: {leaks} are the target or parts of it and cannot be features")
    return columns


def build_preprocessor(params: dict[str, Any]) -> ColumnTransformer:
    """One-hot encode categoricals (unseen levels ignored); impute then pass numerics through."""
    return ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                list(params["categorical"]),
            ),
            ("numeric", make_pipeline(SimpleImputer(strategy="median")), list(params["numeric"])),
        ],
        verbose_feature_names_out=False,
    )


def split_xy(frame: pd.DataFrame, params: dict[str, Any]) -> tuple[pd.DataFrame, pd.Series]:
    """The model inputs and the target of a split."""
    missing = [c for c in [*feature_columns(params), TARGET] if c not in frame]
    if missing:
        raise KeyError(f"columns {missing} are missing from the data")
    return frame[feature_columns(params)], frame[TARGET]
