from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from gitml.features import split_xy
from gitml.packaging import GOLDEN_FILE, load_model, model_hash
from gitml.schema import FEATURES


def test_mlem_metadata_records_the_input_schema(packaged_model: Path) -> None:
    meta = yaml.safe_load(Path(f"{packaged_model}.mlem").read_text())
    frame = meta["processors"]["model"]["methods"]["predict"]["args"][0]["type_"]
    assert frame["columns"] == list(FEATURES)
    assert frame["dtypes"][frame["columns"].index("weathersit")] == "object"
    assert frame["dtypes"][frame["columns"].index("temp")] == "float64"


def test_loaded_model_predicts_like_the_trained_one(
    packaged_model: Path,
    trained_model: Any,
    splits: dict[str, pd.DataFrame],
    params: dict[str, Any],
) -> None:
    inputs, _ = split_xy(splits["test"], params["features"])
    np.testing.assert_allclose(
        load_model(packaged_model).predict(inputs), trained_model.predict(inputs)
    )


def test_hash_identifies_the_artifact(packaged_model: Path) -> None:
    import hashlib

    assert model_hash(packaged_model) == hashlib.md5(packaged_model.read_bytes()).hexdigest()


def test_golden_cases_are_the_models_own_predictions(
    packaged_model: Path, trained_model: Any
) -> None:
    import json

    golden = json.loads((packaged_model.parent / GOLDEN_FILE).read_text())
    rows = pd.DataFrame(golden["rows"])[list(FEATURES)]
    np.testing.assert_allclose(trained_model.predict(rows), golden["predictions"])
