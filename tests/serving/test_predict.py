import subprocess
import sys
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


INTEGER = next((n for n, spec in FEATURES.items() if spec.kind == "int"), None)


@pytest.mark.skipif(INTEGER is None, reason="the dataset spec has no integer feature")
def test_integers_written_as_whole_floats_pass_as_the_api_lets_them(
    batch: tuple[pd.DataFrame, Path], packaged_model: Path, tmp_path: Path
) -> None:
    # one contract: the API takes 8.0 for an integer (JSON Schema's rule) and refuses 3.5
    frame, path = batch
    frame.assign(**{INTEGER: frame[INTEGER].astype(float)}).to_csv(path, index=False)
    assert "8.0" in path.read_text() or ".0," in path.read_text()  # floats, as written
    out = tmp_path / "predictions.csv"
    result = predict_csv(path, out, packaged_model, "--keep", TIME)
    assert result.exit_code == 0, result.stderr
    frame.assign(**{INTEGER: frame[INTEGER] + 0.5}).to_csv(path, index=False)
    refused = predict_csv(path, tmp_path / "refused.csv", packaged_model, "--keep", TIME)
    assert refused.exit_code == 1 and f"'{INTEGER}'" in refused.stderr


def test_a_missing_input_is_one_line_naming_it(packaged_model: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.csv"
    result = predict_csv(missing, tmp_path / "o.csv", packaged_model)
    assert result.exit_code == 1
    assert result.stderr == f"predict: {missing}: no such file\n"


def test_a_wrong_output_suffix_is_refused_before_any_work(tmp_path: Path) -> None:
    # neither the input nor the model exists: the output is checked first
    result = predict_csv(tmp_path / "in.csv", tmp_path / "out.txt", tmp_path / "no-model")
    assert result.exit_code == 1
    assert result.stderr == f"predict: {tmp_path / 'out.txt'}: write .csv or .parquet\n"


def test_a_missing_model_is_one_line_naming_it(
    batch: tuple[pd.DataFrame, Path], tmp_path: Path
) -> None:
    _, path = batch
    result = predict_csv(path, tmp_path / "o.csv", tmp_path / "no-model", "--keep", TIME)
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert f"{tmp_path / 'no-model'}: no MLEM model" in result.stderr


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunks_give_the_same_predictions_as_one_pass(
    batch: tuple[pd.DataFrame, Path], packaged_model: Path, tmp_path: Path, suffix: str
) -> None:
    frame, _ = batch
    source = tmp_path / f"rows{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(source, index=False)
    else:
        frame.to_csv(source, index=False)
    whole, chunked = tmp_path / f"whole{suffix}", tmp_path / f"chunked{suffix}"
    assert predict_csv(source, whole, packaged_model, "--keep", TIME).exit_code == 0
    result = predict_csv(source, chunked, packaged_model, "--keep", TIME, "--chunk-rows", "7")
    assert result.exit_code == 0, result.stderr
    read = pd.read_parquet if suffix == ".parquet" else pd.read_csv
    pd.testing.assert_frame_equal(read(chunked), read(whole))
    assert len(read(chunked)) == len(frame) == 30


def test_a_bad_row_in_a_late_chunk_writes_nothing_and_names_its_line(
    batch: tuple[pd.DataFrame, Path], packaged_model: Path, tmp_path: Path
) -> None:
    frame, path = batch
    name = (BOUNDED or CATEGORIES)[0]
    wrong = FEATURES[name].high + 30 if name in BOUNDED else "tornado-xyz"
    frame = frame.astype({name: object})
    frame.iloc[27, frame.columns.get_loc(name)] = wrong  # the 4th chunk of 7 rows
    frame.to_csv(path, index=False)
    out = tmp_path / "predictions.csv"
    result = predict_csv(path, out, packaged_model, "--keep", TIME, "--chunk-rows", "7")
    assert result.exit_code == 1
    assert f"'{name}'" in result.stderr and "CSV lines [29]" in result.stderr  # header is line 1
    assert not out.exists() and list(tmp_path.glob(".predictions.csv.*")) == []


@pytest.mark.slow  # ~50 s of CPU: 320,000 rows (20k rows: 317 MiB peak, 300k: 362 MiB)
def test_memory_stays_bounded_whatever_the_input_size(
    batch: tuple[pd.DataFrame, Path], packaged_model: Path, tmp_path: Path
) -> None:
    frame, _ = batch
    peaks = {}
    for rows in (20_000, 300_000):
        path = tmp_path / f"rows{rows}.csv"
        pd.concat([frame] * (rows // len(frame)), ignore_index=True).to_csv(path, index=False)
        script = (
            "import resource, sys; from gitml.serving.predict import app\n"
            "try: app(sys.argv[1:])\n"
            "except SystemExit as e: assert not e.code, e\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        args = ["--input", str(path), "--output", str(tmp_path / "o.csv"),
                "--model", str(packaged_model), "--keep", TIME, "--chunk-rows", "10000"]  # fmt: skip
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                              text=True, check=True)  # fmt: skip
        peaks[rows] = int(done.stdout.split()[-1]) * 1024
        assert len(pd.read_csv(tmp_path / "o.csv")) == rows // len(frame) * len(frame)
    # 15 times the rows, the same chunks: at most a little more memory
    assert peaks[300_000] - peaks[20_000] < 64 << 20, peaks
