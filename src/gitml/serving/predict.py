"""Batch inference without a server: read a CSV or parquet file, validate it like the API does,
write predictions. `python -m gitml predict --input rows.csv --output predictions.csv`.

The input is read, checked, predicted and written a chunk at a time (GITML_PREDICT_CHUNK_ROWS
rows), so memory stays bounded whatever the file's size; the output appears, atomically, only
when every row has passed.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import pandera.pandas as pa
import typer

from gitml.config import MLEM_MODEL
from gitml.files import atomic_path
from gitml.pipeline.validate import DataValidationError, describe_failures
from gitml.schema import FEATURES, INPUT_SCHEMA, as_model_input
from gitml.serving.packaging import load_model

OUTPUTS = (".csv", ".parquet")
INTEGERS = [name for name, spec in FEATURES.items() if spec.kind == "int"]


def json_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Integer columns read as floats (`8.0`, or a CSV column pandas took for float) as
    integers where every value is whole: the API's rule (JSON Schema counts 2.0 as an
    integer). A 3.5, or a missing value, is left for the contract to refuse by name."""
    for name in INTEGERS:
        if name in frame and frame[name].dtype.kind == "f":
            values = frame[name]
            if values.notna().all() and (values % 1 == 0).all():
                frame[name] = values.astype("int64")
    return frame


def validate_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The feature columns, checked against the input contract; raise naming every fault."""
    if frame.empty:
        raise DataValidationError("the input has no rows")
    try:
        checked = INPUT_SCHEMA.validate(json_integers(frame), lazy=True)
    except pa.errors.SchemaErrors as err:
        raise DataValidationError(
            "input failed validation:\n" + describe_failures(err.failure_cases)
        ) from None
    return as_model_input(checked)


def predict_frame(model: object, frame: pd.DataFrame, keep: list[str]) -> pd.DataFrame:
    """Predictions next to the requested pass-through columns (e.g. an id or timestamp)."""
    passthrough = frame[keep].reset_index(drop=True)
    inputs = validate_input(frame.drop(columns=keep))
    predictions = model.predict(inputs)  # type: ignore[attr-defined]
    return passthrough.assign(prediction=predictions.round(3))


def read_chunks(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """`path` (parquet by its suffix, else CSV) `rows` at a time, each chunk indexed by its
    rows' positions in the file, so errors name the right lines."""
    if not path.is_file():
        raise DataValidationError("no such file")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq  # the pipeline group's; the serving image reads CSV

            start = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
                chunk = batch.to_pandas()
                chunk.index += start
                start += len(chunk)
                yield chunk
        else:
            yield from pd.read_csv(path, chunksize=rows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataValidationError(f"not a readable CSV file: {err}") from None
    except OSError as err:  # pyarrow's ArrowInvalid is one: not a parquet file
        raise DataValidationError(f"not readable: {err}") from None


class TableWriter:
    """Appends chunks of one table to a file, as CSV or parquet (`kind`: the suffix)."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind, self.rows = path, kind, 0
        self._parquet: Any = None  # a pyarrow ParquetWriter, from the first chunk's schema

    def write(self, chunk: pd.DataFrame) -> None:
        if self.kind == ".csv":
            chunk.to_csv(self.path, mode="a", header=self.rows == 0, index=False)
        else:
            import pyarrow as pa_
            import pyarrow.parquet as pq

            table = pa_.Table.from_pandas(chunk, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            elif table.schema != self._parquet.schema:
                try:
                    table = table.cast(self._parquet.schema)
                except (pa_.ArrowInvalid, ValueError):
                    raise DataValidationError(
                        f"a column's type changes at row {self.rows}: write CSV, or use larger "
                        "chunks (--chunk-rows)"
                    ) from None
            self._parquet.write_table(table)
        self.rows += len(chunk)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()


def check_columns(columns: list[str], keep: list[str]) -> None:
    unknown = [c for c in keep if c not in columns]
    if unknown:
        raise DataValidationError(f"--keep columns {unknown} are not in the input")
    extra = [c for c in columns if c not in FEATURES and c not in keep]
    if extra:
        raise DataValidationError(f"unexpected column(s): {extra} (pass them with --keep)")


def predict_file(
    input_path: Path, output_path: Path, model: Any, keep: list[str], chunk_rows: int
) -> int:
    """Predict every row of `input_path` into `output_path`, a chunk at a time; the output is
    moved into place only when every chunk passed. Returns the number of rows."""
    with atomic_path(output_path) as scratch:
        writer = TableWriter(scratch, output_path.suffix)  # the scratch file's is .tmp
        try:
            for chunk in read_chunks(input_path, chunk_rows):
                if writer.rows == 0:
                    check_columns(list(chunk.columns), keep)
                if not chunk.empty:
                    writer.write(predict_frame(model, chunk, keep))
        finally:
            writer.close()
        if writer.rows == 0:
            raise DataValidationError("the input has no rows")
    return writer.rows


app = typer.Typer(add_completion=False)


@app.command()
def main(
    input_path: Annotated[
        Path, typer.Option("--input", help="CSV (or .parquet) with the feature columns.")
    ],
    output_path: Annotated[
        Path, typer.Option("--output", help="Predictions to write: .csv or .parquet.")
    ],
    model_path: Annotated[Path, typer.Option("--model", help="MLEM model.")] = MLEM_MODEL,
    keep: Annotated[
        list[str], typer.Option(help="Extra input column copied to the output (repeatable).")
    ] = [],  # noqa: B006 (typer reads the default, never mutates it)
    chunk_rows: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="GITML_PREDICT_CHUNK_ROWS",
            help="Rows read, checked and predicted at once.",
        ),
    ] = 50_000,
) -> None:
    """Predict every row of a file; nothing is written when any row is invalid."""
    if output_path.suffix not in OUTPUTS:  # before any work, not after all of it
        typer.echo(f"predict: {output_path}: write .csv or .parquet", err=True)
        raise typer.Exit(1)
    if not Path(f"{model_path}.mlem").is_file():
        typer.echo(
            f"predict: {model_path}: no MLEM model there (`make package` builds one)", err=True
        )
        raise typer.Exit(1)
    try:
        if not input_path.is_file():
            raise DataValidationError("no such file")
        rows = predict_file(input_path, output_path, load_model(model_path), keep, chunk_rows)
    except DataValidationError as err:
        typer.echo(f"predict: {input_path}: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"predict: {rows} predictions -> {output_path}")


if __name__ == "__main__":
    app()
