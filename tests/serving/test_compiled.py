import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from gitml.config import GOLDEN_FILE
from gitml.pipeline.features import split_xy
from gitml.pipeline.train import fit
from gitml.schema import FEATURES
from gitml.serving import compiled
from gitml.serving.compiled import (
    RTOL,
    TREELITE_MAX_ROWS,
    NotCompilable,
    compile_pipeline,
    compile_verified,
)
from gitml.serving.packaging import fast_predictor, load_model

# Each family train.py builds, as params.yaml configures it (its loss suits the dataset's
# target) but small enough to train in a second or two (xgboost: the dev group's CPU build, as
# tests/pipeline/test_train.py uses it).
SMALL = {
    "hist_gradient_boosting": {"max_iter": 40},
    "random_forest": {"n_estimators": 15, "n_jobs": 1},
    "ridge": {},
    "xgboost": {"n_estimators": 40},
}


def hostile_rows(inputs: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Test rows, then the same rows with every numeric missing, then with every categorical
    a level training never saw: the imputer's and the encoder's other branches."""
    missing = inputs.assign(**dict.fromkeys(params["features"]["numeric"], np.nan))
    unseen = inputs.copy()
    for name in params["features"]["categorical"]:
        levels = unseen[name]
        unseen[name] = levels.max() + 1000 if levels.dtype.kind in "iuf" else "never-seen"
    return pd.concat([inputs, missing, unseen], ignore_index=True)


@pytest.fixture(scope="module", params=sorted(SMALL))
def family_model(request: pytest.FixtureRequest, splits: dict[str, pd.DataFrame], params: Any):
    family = request.param
    configured = params["train"]["hyperparams"].get(family) or {}
    train = {**params["train"], "model": family,
             "hyperparams": {family: {**configured, **SMALL[family]}}}  # fmt: skip
    pipeline, _ = fit(splits["train"], params["features"], train)
    return family, pipeline


def test_every_family_compiles_to_the_same_predictions(
    family_model: tuple[str, Any], splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    _, pipeline = family_model
    inputs, _ = split_xy(splits["test"], params["features"])
    rows = hostile_rows(inputs, params)
    predict = compile_pipeline(pipeline)
    expected = pipeline.predict(rows)
    np.testing.assert_allclose(predict(rows), expected, rtol=RTOL)
    # the columns as the server decodes them (a dict of arrays), and small batches on both
    # sides of where tree ensembles leave treelite for their own predict
    for size in (1, TREELITE_MAX_ROWS, TREELITE_MAX_ROWS + 1):
        columns = {str(name): rows[name].to_numpy()[:size] for name in rows}
        np.testing.assert_allclose(predict(columns), expected[:size], rtol=RTOL)
    assert len(set(expected.round(6))) > 10  # real predictions, not a constant


@pytest.mark.parametrize("api", ["configured once", "public predict"])
def test_scikit_learns_tree_ensembles_go_through_treelite_for_a_few_rows_only(
    family_model: tuple[str, Any], splits: dict[str, pd.DataFrame], params: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch, api: str,
) -> None:  # fmt: skip
    """Through treelite's inner predict with a configuration made once, or, in a treelite
    without it, through its public predict; either way with the same predictions."""
    import treelite.gtil

    family, pipeline = family_model
    calls: list[int] = []
    name = "_predict_impl" if api == "configured once" else "predict"
    home = treelite.gtil.gtil if api == "configured once" else treelite.gtil
    real = getattr(home, name)

    def counted(model: Any, matrix: np.ndarray, **kwargs: Any) -> np.ndarray:
        calls.append(len(matrix))
        return real(model, matrix, **kwargs)  # type: ignore[no-any-return]

    if api == "public predict":
        monkeypatch.setattr(compiled, "TREELITE_INNER", "_not_in_this_treelite")
    monkeypatch.setattr(home, name, counted)
    predict = compile_pipeline(pipeline)
    inputs, _ = split_xy(splits["test"], params["features"])
    few = inputs.head(TREELITE_MAX_ROWS)
    np.testing.assert_allclose(predict(few), pipeline.predict(few), rtol=RTOL)
    predict(inputs.head(TREELITE_MAX_ROWS + 1))
    trees = family in ("hist_gradient_boosting", "random_forest")  # scikit-learn's
    assert calls == ([TREELITE_MAX_ROWS] if trees else [])


def pipeline_of(features: Any, rows: pd.DataFrame, model: Any = None) -> Pipeline:
    pipeline = Pipeline([("features", features), ("model", Ridge() if model is None else model)])
    return pipeline.fit(rows, np.arange(len(rows), dtype=float))


TOY = pd.DataFrame({
    "colour": ["red", "green", "blue", "red", "green", "blue"],
    "size": [1, 2, 3, 1, 2, 3],
    "weight": [1.5, np.nan, 3.0, 4.5, 5.0, np.nan],
    "ignored": [9.0, 8.0, 7.0, 6.0, 5.0, 4.0],
})  # fmt: skip


def same_predictions(pipeline: Pipeline, rows: pd.DataFrame) -> None:
    np.testing.assert_allclose(compile_pipeline(pipeline)(rows), pipeline.predict(rows), rtol=RTOL)


def test_string_levels_a_remainder_and_nested_pipelines_compile() -> None:
    features = ColumnTransformer(
        [
            ("levels", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["colour"]),
            ("weight", make_pipeline(SimpleImputer(strategy="mean")), ["weight"]),
        ],
        remainder="passthrough",  # size and ignored
    )
    pipeline = pipeline_of(features, TOY)
    same_predictions(pipeline, pd.concat([TOY, TOY.assign(colour="purple", weight=np.nan)]))


@pytest.mark.parametrize(
    "selection", [[1, 3], [1], [False, True, False, True]], ids=["indices", "one", "mask"]
)
def test_columns_selected_by_position_compile(selection: list[Any]) -> None:
    features = ColumnTransformer([("x", "passthrough", selection)])
    same_predictions(pipeline_of(features, TOY), TOY)


def test_dropped_and_empty_selections_are_left_out() -> None:
    features = ColumnTransformer(
        [
            ("gone", "drop", ["colour"]),
            ("kept", Pipeline([("skip", "passthrough"), ("fill", SimpleImputer())]), ["weight"]),
            ("also", Pipeline([("skip", None), ("fill", SimpleImputer())]), ["size", "ignored"]),
        ],
        remainder="passthrough",  # nothing is left for it
    )
    same_predictions(pipeline_of(features, TOY), TOY.assign(weight=[np.nan, 1, 2, 3, 4, 5]))


def test_a_first_step_without_a_column_transformer_compiles() -> None:
    numeric = TOY[["size", "weight"]]
    pipeline = Pipeline([("fill", SimpleImputer()), ("model", Ridge())])
    same_predictions(pipeline.fit(numeric, numeric["size"] * 2.0), numeric)


def test_a_constant_fill_compiles() -> None:
    features = impute("weight", strategy="constant", fill_value=7)  # statistics_: objects
    same_predictions(pipeline_of(features, TOY), TOY)


@pytest.mark.parametrize("trees", ["random_forest", "hist_gradient_boosting"])
def test_integer_columns_compile_for_treelite(trees: str) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    model = (RandomForestRegressor(3, random_state=0) if trees == "random_forest"
             else HistGradientBoostingRegressor(max_iter=5, min_samples_leaf=1))  # fmt: skip
    features = ColumnTransformer([("size", "passthrough", ["size"])])
    same_predictions(pipeline_of(features, TOY, model), TOY)


def one_hot(sparse_threshold: float = 0.3, **settings: Any) -> ColumnTransformer:
    encoder = OneHotEncoder(**settings)
    return ColumnTransformer([("x", encoder, ["colour"])], sparse_threshold=sparse_threshold)


def impute(column: str, **settings: Any) -> ColumnTransformer:
    return ColumnTransformer([("x", SimpleImputer(**settings), [column])])


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (
            ColumnTransformer([("x", StandardScaler(), ["size"])]),
            "no compiled form of StandardScaler",
        ),
        (
            one_hot(drop="first", sparse_output=False),
            "OneHotEncoder with drop or infrequent categories",
        ),
        (
            one_hot(handle_unknown="ignore", sparse_output=False, min_frequency=3),
            "OneHotEncoder with drop or infrequent categories",
        ),
        (
            one_hot(sparse_output=False),
            "OneHotEncoder needs handle_unknown='ignore', sparse_output=False",
        ),
        (
            one_hot(handle_unknown="ignore"),  # a dense output: 1 in 3 is no sparse matrix
            "OneHotEncoder needs handle_unknown='ignore', sparse_output=False",
        ),
        (
            one_hot(sparse_threshold=1.0, handle_unknown="ignore"),
            "ColumnTransformer with sparse output",
        ),
        (
            impute("weight", add_indicator=True),
            "SimpleImputer needs missing_values=nan and no indicator",
        ),
        (
            impute("size", missing_values=-1),
            "SimpleImputer needs missing_values=nan and no indicator",
        ),
        (
            impute("ignored", missing_values=-1.0),
            "SimpleImputer needs missing_values=nan and no indicator",
        ),
        (
            ColumnTransformer([(
                "x",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                ["colour"],
            )]),
            "SimpleImputer of non-numeric columns",
        ),
        (
            ColumnTransformer(
                [("x", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["weight"])]
            ),
            "OneHotEncoder with missing values as a category",
        ),
    ],
    ids=[
        "scaler", "drop", "infrequent", "unknown-error", "sparse-encoder", "sparse", "indicator",
        "marker", "float-marker",
        "non-numeric", "nan-level",
    ],
)  # fmt: skip
def test_what_it_cannot_reproduce_is_refused_by_name(features: Any, message: str) -> None:
    pipeline = pipeline_of(features, TOY)
    with pytest.raises(NotCompilable, match=f"^{re.escape(message)}$"):
        compile_pipeline(pipeline)


def test_an_imputer_fitted_on_an_empty_column_is_refused() -> None:
    empty = TOY.assign(weight=np.nan)
    features = ColumnTransformer([("x", SimpleImputer(), ["weight", "size"])])
    with pytest.warns(UserWarning, match="without any observed values"):
        pipeline = pipeline_of(features, empty)
    with pytest.raises(
        NotCompilable, match=f"^{re.escape('SimpleImputer with an empty feature')}$"
    ):
        compile_pipeline(pipeline)


def test_only_a_features_then_model_pipeline_compiles() -> None:
    refusal = f"^{re.escape('not a two-step Pipeline (features, model)')}$"
    with pytest.raises(NotCompilable, match=refusal):
        compile_pipeline(Ridge().fit(TOY[["size"]], TOY["size"]))
    three = Pipeline([
        ("a", ColumnTransformer([("x", "passthrough", ["size"])])),
        ("b", SimpleImputer()),
        ("model", Ridge()),
    ]).fit(TOY, TOY["size"])  # fmt: skip
    with pytest.raises(NotCompilable, match=refusal):
        compile_pipeline(three)


def test_verified_gives_the_predictor_only_where_it_agrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    features = ColumnTransformer([("x", SimpleImputer(), ["weight", "size"])])
    pipeline = pipeline_of(features, TOY)
    predictor, why = compile_verified(pipeline, TOY)
    assert (
        predictor is not None
        and why == "compiled predictor (agrees with the model's own on 6 rows)"
    )

    def off_by_a_little(model: Any) -> Any:
        return lambda matrix: model.predict(matrix) * (1 + 10 * RTOL)

    monkeypatch.setattr(compiled, "compile_regressor", off_by_a_little)
    predictor, why = compile_verified(pipeline, TOY)
    assert predictor is None and "disagrees on 6 rows" in why

    refused = pipeline_of(ColumnTransformer([("x", StandardScaler(), ["size"])]), TOY)
    predictor, why = compile_verified(refused, TOY)
    assert predictor is None and "StandardScaler" in why


def test_the_server_checks_it_on_the_golden_rows_and_their_missing_values(
    packaged_model: Path,
) -> None:
    import json

    golden = json.loads((packaged_model.parent / GOLDEN_FILE).read_text())
    model = load_model(packaged_model)
    predictor, why = fast_predictor(model, packaged_model)
    optional = any(spec.nullable and spec.kind == "float" for spec in FEATURES.values())
    checked = (1 + len(golden["rows"])) * (2 if optional else 1)  # the example row leads
    assert predictor is not None and f"on {checked} rows" in why
    rows = pd.DataFrame(golden["rows"])
    np.testing.assert_allclose(predictor(rows), golden["predictions"], rtol=RTOL)
