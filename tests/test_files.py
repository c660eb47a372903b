import builtins
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gitml.files import read_parquet, write_table


def test_a_written_table_reads_back_equal(tmp_path: Path, clean_table: pd.DataFrame) -> None:
    path = tmp_path / "clean.parquet"
    write_table(path, clean_table)
    pd.testing.assert_frame_equal(read_parquet(path), clean_table.reset_index(drop=True))


def test_reading_opens_no_python_file(
    tmp_path: Path, clean_table: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow must read the file itself: a Python file's reads take the GIL from Arrow's threads,
    which aborts a process exiting right after the read (see read_parquet)."""
    path = tmp_path / "clean.parquet"
    write_table(path, clean_table.head(3))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a Python file was opened: {args}")

    monkeypatch.setattr(builtins, "open", refuse)
    assert len(read_parquet(path)) == 3
    with pytest.raises(AssertionError, match="a Python file was opened"):
        pd.read_parquet(path)  # what the reader must not do
