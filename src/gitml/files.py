"""Reading tables safely, and writes that never leave a half-written output behind."""

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; move it into place only if the block succeeds.

    Args:
        target: the final output path; its parent directories are created.

    Yields:
        A temporary path in the same directory (so the final rename is atomic).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp creates 0600; outputs get the usual permissions
    try:
        yield tmp
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(target: Path, writer: Callable[[Path], Any]) -> None:
    """Call `writer(tmp_path)` and move the result to `target` only if it succeeded."""
    with atomic_path(target) as tmp:
        writer(tmp)


def write_json(target: Path, payload: Any) -> None:
    """Write pretty, key-sorted JSON atomically (stable bytes keep DVC hashes stable)."""
    write_atomic(
        target, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    )


def write_table(target: Path, table: pd.DataFrame) -> None:
    """Write a table atomically as parquet or CSV, chosen by the file suffix, without the index."""
    if target.suffix == ".parquet":
        write_atomic(target, lambda tmp: table.to_parquet(tmp, index=False))
    elif target.suffix == ".csv":
        write_atomic(target, lambda tmp: table.to_csv(tmp, index=False))
    else:
        raise ValueError(f"{target}: only .parquet and .csv tables are written")


def read_parquet(path: Path) -> pd.DataFrame:
    """Read a parquet table by its path, with Arrow's own file reader.

    `pandas.read_parquet` hands Arrow an open Python file, whose reads take the GIL from Arrow's
    worker threads; one still doing so while the interpreter exits aborts the process
    ("terminate called without an active exception", apache/arrow#34314). A command that exits
    soon after reading, as the CLIs do, hit that in a quarter of runs on a loaded 2-core machine.
    """
    import pyarrow.parquet as pq  # here: the serving image imports this module and has no pyarrow

    return pq.read_table(path).to_pandas()
