from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from gitml.config import GOLDEN_FILE
from gitml.pipeline.features import split_xy
from gitml.schema import FEATURES
from gitml.serving.packaging import load_model, model_hash


def test_mlem_metadata_records_the_input_schema(packaged_model: Path) -> None:
    meta = yaml.safe_load(Path(f"{packaged_model}.mlem").read_text())
    frame = meta["processors"]["model"]["methods"]["predict"]["args"][0]["type_"]
    assert frame["columns"] == list(FEATURES)
    kinds = {"int": "int64", "float": "float64", "category": "object"}
    assert frame["dtypes"] == [kinds[spec.kind] for spec in FEATURES.values()]


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


def test_golden_cases_are_test_rows_as_sent_with_the_packaged_models_predictions(
    packaged_model: Path, splits: dict[str, pd.DataFrame]
) -> None:
    import json

    golden = json.loads((packaged_model.parent / GOLDEN_FILE).read_text())
    # the rows: the first test rows, feature columns only, as JSON a client sends
    rows = pd.DataFrame(golden["rows"])
    expected = splits["test"].head(20)[list(FEATURES)].reset_index(drop=True)
    assert sorted(rows) == sorted(FEATURES) and len(rows) == 20
    for name, spec in FEATURES.items():
        if spec.kind == "float":
            np.testing.assert_allclose(rows[name], expected[name])
        else:
            assert rows[name].tolist() == expected[name].astype(rows[name].dtype).tolist(), name
    # the predictions: what the model saved on disk (loaded back by MLEM, as the server does)
    # gives them, not the in-memory object that wrote them
    loaded = load_model(packaged_model)
    np.testing.assert_allclose(loaded.predict(rows), golden["predictions"], rtol=1e-12)
    assert len(set(golden["predictions"])) > 1  # real predictions, not one constant


def test_the_servers_frame_decoder_makes_the_frame_mlem_makes(packaged_model: Path) -> None:
    import json

    from mlem.api import load_meta
    from mlem.runtime.interface import ModelInterface

    from gitml.serving.packaging import frame_decoder

    meta = load_meta(str(packaged_model), load_value=True)
    signature = ModelInterface.from_model(meta).get_method_signature("predict")
    serializer = signature.args[0].get_serializer()
    decode = frame_decoder(serializer.data_type, serializer.deserialize)
    golden = json.loads((packaged_model.parent / GOLDEN_FILE).read_text())["rows"]
    rows = [{name: row[name] for name in FEATURES} for row in golden]
    floats = [name for name, spec in FEATURES.items() if spec.kind == "float"]
    rows[0][floats[0]] = None  # a missing value: NaN in both
    for sent in (rows, rows[:1]):
        pd.testing.assert_frame_equal(decode(sent), serializer.deserialize({"values": sent}))
    # a data type it does not know keeps MLEM's serializer
    assert frame_decoder(object(), lambda obj: obj)(rows[:1]) == {"values": rows[:1]}


def test_with_compiling_off_the_models_own_predict_serves(
    packaged_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gitml.serving.packaging import StrictFastAPIServer, build_app
    from gitml.serving.serve import request_model

    build_app(packaged_model, request_model(10, 5), compiled=False)
    assert StrictFastAPIServer.fast_predict is None
    assert "serving: the model's own predict (compiling is off)" in capsys.readouterr().err
    build_app(packaged_model, request_model(10, 5))
    assert StrictFastAPIServer.fast_predict is not None
    assert "serving: compiled predictor" in capsys.readouterr().err
