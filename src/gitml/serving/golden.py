"""Golden cases: requests, and the predictions the packaged model gives them.

The package stage writes them beside the model (golden.json). The smoke check replays them
against a deployed server and the server checks its compiled predictor on them: a served
prediction other than the packaged model's own is a broken release.
"""

import json
from typing import Any

import pandas as pd

from gitml.schema import as_model_input

GOLDEN_ROWS = 20


def golden_rows(test: pd.DataFrame, count: int = GOLDEN_ROWS) -> pd.DataFrame:
    """What the cases ask: the first `count` rows of the test split, as the model takes them."""
    return as_model_input(test.head(count))


def golden_cases(model: Any, rows: pd.DataFrame) -> dict[str, Any]:
    """Requests with the predictions the packaged model gives them: what smoke checks replay."""
    records = json.loads(rows.to_json(orient="records"))  # JSON as a client sends it (NaN->null)
    return {"rows": records, "predictions": [float(x) for x in model.predict(rows)]}
