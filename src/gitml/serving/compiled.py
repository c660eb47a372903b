"""The served pipeline compiled for speed: the same predictions as its `predict`, in a fraction
of the time for the few rows a request holds.

scikit-learn's `predict` of one row costs ~20 ms on a loaded core, nearly all of it fixed
per-call overhead: the ColumnTransformer's input checks and column selection (~10 ms) and
HistGradientBoosting's Python loop over its trees (~9 ms). Compiled:
- each fitted preprocessing step becomes numpy operations on the request's columns, built from
  its public fitted attributes (`categories_`, `statistics_`, `transformers_`);
- a scikit-learn tree ensemble goes to treelite, whose C++ predictor walks every tree in one
  call; any other final step keeps its own `predict`, on the array.
A step it does not know (or a setting it does not reproduce) raises `NotCompilable`, and the
server keeps scikit-learn's predict: compiling is an optimisation, never a requirement.
`compile_verified` only hands out a predictor that matches the pipeline on the rows it is given.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

Columns = Mapping[str, Any] | pd.DataFrame  # column name -> one value per row
Block = Callable[[Sequence[Any]], np.ndarray]  # input columns (array-likes) -> a 2-D float block
Predictor = Callable[[Columns], np.ndarray]
# Compiled and scikit-learn predictions must agree to this relative tolerance: treelite sums
# the trees in another order (differences ~1e-14), a wrong split or encoding is far beyond it.
RTOL = 1e-9
# treelite's predictor has little per-call cost but walks trees slower than scikit-learn per
# row: for 300 trees 0.15 ms a call plus 0.12 ms a row, where HistGradientBoosting's predict
# costs 7.5 ms a call (25 us a tree) plus 0.03 ms a row. Both scale with the trees, so the
# crossover (~80 rows) hardly moves with the model's size.
TREELITE_MAX_ROWS = 64
TREELITE_INNER = "_predict_impl"  # what treelite.gtil.predict calls with its configuration


class NotCompilable(ValueError):
    """The pipeline holds a step, or a setting, this module does not reproduce."""


def _one_hot(encoder: Any) -> Block:
    if encoder.drop_idx_ is not None or getattr(encoder, "infrequent_categories_", None):
        raise NotCompilable("OneHotEncoder with drop or infrequent categories")
    if encoder.handle_unknown != "ignore" or encoder.sparse_output:
        raise NotCompilable("OneHotEncoder needs handle_unknown='ignore', sparse_output=False")
    lookups = []
    for categories in encoder.categories_:
        values = categories.tolist()
        if any(isinstance(v, float) and math.isnan(v) for v in values):
            raise NotCompilable("OneHotEncoder with missing values as a category")
        lookups.append({value: position for position, value in enumerate(values)})
    width = sum(len(lookup) for lookup in lookups)

    def encode(columns: Sequence[Any]) -> np.ndarray:
        rows = len(columns[0])
        block = np.zeros((rows, width))
        offset = 0
        for column, lookup in zip(columns, lookups, strict=True):
            positions = np.fromiter(
                (lookup.get(value, -1) for value in np.asarray(column).tolist()),
                dtype=np.intp, count=rows,
            )  # fmt: skip
            known = positions >= 0  # an unseen level: all zeros, as handle_unknown="ignore"
            block[np.flatnonzero(known), offset + positions[known]] = 1.0
            offset += len(lookup)
        return block

    return encode


def _impute(imputer: Any) -> Block:
    missing = imputer.missing_values
    if not (isinstance(missing, float) and math.isnan(missing)) or imputer.add_indicator:
        raise NotCompilable("SimpleImputer needs missing_values=nan and no indicator")
    try:  # a constant fill keeps its Python type (object); a level of a categorical is text
        fill = np.asarray(imputer.statistics_, dtype=float)
    except (TypeError, ValueError):
        raise NotCompilable("SimpleImputer of non-numeric columns") from None
    if np.isnan(fill).any():  # an all-missing training column, which transform drops
        raise NotCompilable("SimpleImputer with an empty feature")

    def impute(columns: Sequence[Any]) -> np.ndarray:
        block = _passthrough(columns)
        return np.where(np.isnan(block), fill, block)

    return impute


def _passthrough(columns: Sequence[Any]) -> np.ndarray:
    return np.column_stack([np.asarray(column) for column in columns])


def _chain(blocks: list[Block]) -> Block:
    def run(columns: Sequence[Any]) -> np.ndarray:
        block = blocks[0](columns)
        for step in blocks[1:]:
            block = step(list(block.T))
        return block

    return run


def compile_transformer(transformer: Any) -> Block:
    """A fitted preprocessing step as numpy operations on its input columns."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    if transformer is None or transformer == "passthrough":  # a Pipeline's skipped step
        return _passthrough
    if isinstance(transformer, FunctionTransformer) and transformer.func is None:
        return _passthrough  # how a fitted ColumnTransformer holds "passthrough"
    if isinstance(transformer, OneHotEncoder):
        return _one_hot(transformer)
    if isinstance(transformer, SimpleImputer):
        return _impute(transformer)
    if isinstance(transformer, Pipeline):
        return _chain([compile_transformer(step) for _, step in transformer.steps])
    raise NotCompilable(f"no compiled form of {type(transformer).__name__}")


def compile_features(transformer: Any, names: list[str]) -> Callable[[Columns], np.ndarray]:
    """The pipeline's first step, from named columns to the model's input matrix."""
    from sklearn.compose import ColumnTransformer

    if not isinstance(transformer, ColumnTransformer):
        block = compile_transformer(transformer)
        return lambda columns: block([columns[name] for name in names])
    if transformer.sparse_output_:
        raise NotCompilable("ColumnTransformer with sparse output")
    parts = []
    for _, step, selection in transformer.transformers_:
        selected = list(np.asarray(names)[selection]) if _positional(selection) else selection
        if step == "drop" or not len(selected):  # "passthrough" is a FunctionTransformer now
            continue
        parts.append((compile_transformer(step), list(selected)))

    def features(columns: Columns) -> np.ndarray:
        return np.hstack(
            [block([columns[name] for name in selected]) for block, selected in parts]
        )

    return features


def _positional(selection: Any) -> bool:
    """Column indices or a boolean mask (the remainder's), rather than column names."""
    kind = np.asarray(selection).dtype  # an empty selection: float, not positional
    return np.issubdtype(kind, np.integer) or np.issubdtype(kind, np.bool_)


def compile_regressor(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A scikit-learn tree ensemble through treelite's predictor up to TREELITE_MAX_ROWS rows
    and its own predict beyond; any other model (a linear one, XGBoost, whose own predict of a
    row costs ~1 ms and computes in float32) its own predict, on the array."""
    import treelite
    from sklearn.ensemble import HistGradientBoostingRegressor

    own: Callable[[np.ndarray], np.ndarray] = model.predict
    if not type(model).__module__.startswith("sklearn."):
        return own
    try:
        trees = treelite.sklearn.import_model(model)
    except Exception:  # not a tree ensemble: treelite refuses it with its own error types
        return own
    # scikit-learn's other trees compare features as float32: a value rounds to the far side
    # of a split as often as not, unless treelite sees it rounded the same way
    single = not isinstance(model, HistGradientBoostingRegressor)

    walk = _tree_walker(trees)

    def predict(matrix: np.ndarray) -> np.ndarray:
        if len(matrix) > TREELITE_MAX_ROWS:
            return own(matrix)
        if single:
            matrix = matrix.astype(np.float32).astype(np.float64)
        return walk(matrix).reshape(len(matrix))

    return predict


def _tree_walker(trees: Any) -> Callable[[np.ndarray], np.ndarray]:
    """treelite's predict, on one thread (the server runs a process per core, and a request
    holds a few rows). `gtil.predict` builds and parses its configuration anew on every call,
    a quarter of its cost for one row: where treelite has the function it calls with it
    (TREELITE_INNER, checked by the start-up comparison like the rest), the configuration is
    built once."""
    import treelite.gtil

    impl = getattr(treelite.gtil.gtil, TREELITE_INNER, None)
    if impl is None:
        return lambda matrix: treelite.gtil.predict(trees, matrix, nthread=1)
    config = treelite.gtil.gtil.GTILConfig(nthread=1, predict_type="default")
    return lambda matrix: impl(trees, matrix, config=config)


def compile_pipeline(pipeline: Any) -> Predictor:
    """A scikit-learn Pipeline (preprocessing, then a regressor) as one fast predictor."""
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        raise NotCompilable("not a two-step Pipeline (features, model)")
    (_, features), (_, model) = pipeline.steps
    names = list(pipeline.feature_names_in_)
    matrix = compile_features(features, names)
    regress = compile_regressor(model)
    return lambda columns: regress(matrix(columns))


def compile_verified(pipeline: Any, rows: pd.DataFrame) -> tuple[Predictor | None, str]:
    """The compiled predictor if it reproduces `pipeline.predict` on `rows`, else None; and
    why, in a line for the server's log."""
    try:
        predictor = compile_pipeline(pipeline)
        compiled = predictor(rows)
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # NotCompilable too
        return None, f"the model's own predict (not compiled: {err})"
    expected = pipeline.predict(rows)
    if compiled.shape != expected.shape or not np.allclose(compiled, expected, rtol=RTOL):
        return None, f"the model's own predict (the compiled one disagrees on {len(rows)} rows)"
    return predictor, f"compiled predictor (agrees with the model's own on {len(rows)} rows)"
