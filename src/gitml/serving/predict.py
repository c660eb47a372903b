"""Batch inference without a server: read a CSV, validate it like the API does, write
predictions. `python -m gitml predict --input rows.csv --output predictions.csv`.
"""

from pathlib import Path
from typing import Annotated

import pandas as pd
import pandera.pandas as pa
import typer

from gitml.config import MLEM_MODEL
from gitml.files import write_table
from gitml.pipeline.validate import DataValidationError, describe_failures, read_raw
from gitml.schema import FEATURES, INPUT_SCHEMA, as_model_input
from gitml.serving.packaging import load_model


def validate_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The feature columns, checked against the input contract; raise naming every fault."""
    if frame.empty:
        raise DataValidationError("the input has no rows")
    try:
        checked = INPUT_SCHEMA.validate(frame, lazy=True)
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


app = typer.Typer(add_completion=False)


@app.command()
def main(
    input_path: Annotated[Path, typer.Option("--input", help="CSV with the feature columns.")],
    output_path: Annotated[Path, typer.Option("--output", help="CSV of predictions to write.")],
    model_path: Annotated[Path, typer.Option("--model", help="MLEM model.")] = MLEM_MODEL,
    keep: Annotated[
        list[str], typer.Option(help="Extra input column copied to the output (repeatable).")
    ] = [],  # noqa: B006 (typer reads the default, never mutates it)
) -> None:
    """Predict every row of a CSV; nothing is written when any row is invalid."""
    try:
        frame = read_raw(input_path)
        unknown = [c for c in keep if c not in frame]
        if unknown:
            raise DataValidationError(f"--keep columns {unknown} are not in the input")
        extra = [c for c in frame if c not in FEATURES and c not in keep]
        if extra:
            raise DataValidationError(f"unexpected column(s): {extra} (pass them with --keep)")
        result = predict_frame(load_model(model_path), frame, keep)
    except DataValidationError as err:
        typer.echo(f"predict: {input_path}: {err}", err=True)
        raise typer.Exit(1) from None
    write_table(output_path, result)
    typer.echo(f"predict: {len(result)} predictions -> {output_path}")


if __name__ == "__main__":
    app()
