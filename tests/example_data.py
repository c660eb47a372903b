"""Tests that hold only for the bundled example data (its quirks, its figures) are marked
`example_only`: once data.dvc tracks other data they skip, saying so, and the tests that derive
what they expect from the dataset spec and params.yaml carry on."""

import pytest

from gitml.config import PROJ_ROOT
from gitml.pipeline.data import is_example

example_only = pytest.mark.skipif(
    not is_example(PROJ_ROOT),
    reason="holds for the example data only: data.dvc now tracks other data",
)
