from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gitml.dataset import TARGET, TIME
from gitml.pipeline.features import split_xy
from gitml.schema import FEATURES
from gitml.serving import predict

BOUNDED = [n for n, spec in FEATURES.items() if spec.high is not None]
CATEGORIES = [n for n, spec in FEATURES.items() if spec.kind == "category"]
FIRST = next(iter(FEATURES))
# Each kind of bad batch the spec allows, and what the error must name.
BAD_BATCHES = [
    *[(lambda f, n=n: f.assign(**{n: FEATURES[n].high + 30}), f"'{n}'") for n in BOUNDED[:1]],
    *[(lambda f, n=n: f.assign(**{n: "tornado-xyz"}), f"'{n}'") for n in CATEGORIES[:1]],
    (lambda f: f.drop(columns=FIRST), f"missing column(s): ['{FIRST}']"),
    (lambda f: f.head(0), "no rows"),
]


@pytest.fixture
def batch(splits: dict[str, pd.DataFrame], tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    frame = splits["production"].head(30)[[TIME, *FEATURES]]
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    return frame, path


def predict_csv(rows: Path, out: Path, model: Path, *extra: str) -> Any:
    args = ["--input", str(rows), "--output", str(out), "--model", str(model), *extra]
    return CliRunner(mix_stderr=False).invoke(predict.app, args)


def test_batch_predictions_match_the_model(
    batch: tuple[pd.DataFrame, Path],
    packaged_model: Path,
    trained_model: Any,
    params: dict[str, Any],
    tmp_path: Path,
) -> None:
    frame, path = batch
    out = tmp_path / "predictions.csv"
    result = predict_csv(path, out, packaged_model, "--keep", TIME)
    assert result.exit_code == 0, result.stderr
    written = pd.read_csv(out)
    assert list(written.columns) == [TIME, "prediction"]
    inputs, _ = split_xy(frame.assign(**{TARGET: 0}), params["features"])
    np.testing.assert_allclose(written["prediction"], trained_model.predict(inputs).round(3))


@pytest.mark.parametrize(("change", "message"), BAD_BATCHES)
def test_invalid_input_writes_nothing(
    batch: tuple[pd.DataFrame, Path],
    packaged_model: Path,
    tmp_path: Path,
    change: Any,
    message: str,
) -> None:
    frame, path = batch
    change(frame).to_csv(path, index=False)
    out = tmp_path / "predictions.csv"
    result = predict_csv(path, out, packaged_model, "--keep", TIME)
    assert result.exit_code == 1
    assert message in result.stderr
    assert not out.exists()


def test_unexpected_columns_must_be_kept_explicitly(
    batch: tuple[pd.DataFrame, Path], packaged_model: Path, tmp_path: Path
) -> None:
    _, path = batch
    result = predict_csv(path, tmp_path / "o.csv", packaged_model)
    assert result.exit_code == 1
    assert f"unexpected column(s): ['{TIME}'] (pass them with --keep)" in result.stderr
