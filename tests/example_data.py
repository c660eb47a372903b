"""Tests that hold only for the bundled example (its quirks, its figures) are marked
`example_only`. What they need is the example's raw file (ISLP's Bikeshare.csv, as data/ of a
fresh clone holds it) under the dataset spec that names it: not data.dvc's hash. The retraining
loop grows the example by feedback rows beside that file (data/feedback/, a new data.dvc), and
the example's tests keep running on it. On other data (a fork's own) they skip, saying why; the
skip policy (tests/conftest.py) lets those skips through there only."""

import hashlib
import json
from pathlib import Path

import pytest

from gitml import dataset
from gitml.config import PROJ_ROOT
from gitml.pipeline.data import EXAMPLE_MD5, FILE_NAME

EXAMPLE_ONLY = "holds for the example data only: "  # the reason of each such skip starts so


def as_example_directory(raw: Path) -> str:
    """The md5 DVC gives a data directory that holds only `raw` (the md5 of its `.dir`
    manifest): for the example's raw file, the one data.dvc pins (data.EXAMPLE_MD5)."""
    manifest = [{"md5": hashlib.md5(raw.read_bytes()).hexdigest(), "relpath": raw.name}]
    return hashlib.md5(json.dumps(manifest, sort_keys=True).encode()).hexdigest() + ".dir"


def example_missing(project: Path = PROJ_ROOT) -> str | None:
    """Why `project`'s data is not the example's, or None when it is. A raw file not pulled yet
    is no reason: the tests then fail asking for `make data`, they do not skip."""
    if dataset.RAW_FILE != FILE_NAME:
        return f"the dataset spec reads data/{dataset.RAW_FILE}, not the example's {FILE_NAME}"
    raw = project / "data" / dataset.RAW_FILE
    if raw.is_file() and as_example_directory(raw) != EXAMPLE_MD5:
        return f"data/{dataset.RAW_FILE} is not the example's file"
    return None


_MISSING = example_missing()
example_only = pytest.mark.skipif(_MISSING is not None, reason=f"{EXAMPLE_ONLY}{_MISSING}")
