"""The vocabulary of the dataset spec: how one input column of the model is described."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Column:
    """One column: its kind, bounds (either may be None), categories, whether it may be
    missing, and an example value (features only: the API documents it). `text` and `bool`
    are for raw columns that are not features (a date string, a flag)."""

    kind: Literal["int", "float", "category", "text", "bool"]
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()
    nullable: bool = False  # the value may be missing (the pipeline imputes it)
    example: Any = None


class BadRows(ValueError):
    """Rows of the raw table (by index) whose `column` is wrong for `reason`: raised by the
    spec's `clean`; the validate stage names their CSV lines."""

    def __init__(self, column: str, reason: str, rows: Iterable[Any]) -> None:
        super().__init__(f"column {column!r} {reason}")
        self.column, self.reason, self.rows = column, reason, list(rows)
