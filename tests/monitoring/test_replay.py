"""The production replay: the held-out rows as real HTTP requests to a real server."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gitml.dataset import TIME
from gitml.monitoring.replay import ReplayError, replay, requests_from
from gitml.ports import free_port
from gitml.schema import EVENT_TIME, EXAMPLE_ROW, FEATURES
from gitml.serving.predlog import read_predictions
from gitml.serving.serve import request_model
from tests.conftest import Served


def test_one_request_per_row_in_time_order(splits: dict[str, pd.DataFrame]) -> None:
    production = splits["production"]
    requests = requests_from(production.sample(frac=1, random_state=0))  # shuffled input
    ids = [request_id for request_id, _ in requests]
    assert len(ids) == len(set(ids)) == len(production)
    assert ids == sorted(ids) and ids[0] == f"replay-{production[TIME].min():%Y-%m-%dT%H:%M}"
    request_model(max_rows=len(requests))(data={"values": [row for _, row in requests]})


def test_a_missing_value_is_sent_as_null(splits: dict[str, pd.DataFrame]) -> None:
    nullable = [name for name, spec in FEATURES.items() if spec.nullable]
    if not nullable:
        pytest.skip("no feature of the dataset spec may be missing")
    column = nullable[0]  # one is made missing, as a sensor fault would
    day = splits["production"].sort_values(TIME).head(24).reset_index(drop=True)
    day.loc[5, column] = float("nan")
    requests = requests_from(day)
    assert [row[column] is None for _, row in requests] == [i == 5 for i in range(24)]
    request_model(max_rows=24)(data={"values": [row for _, row in requests]})  # still valid


def test_replayed_rows_are_answered_and_logged(
    process_server: Served, splits: dict[str, pd.DataFrame]
) -> None:
    rows = splits["production"].sort_values(TIME).head(48)
    requests = requests_from(rows)
    predictions = replay(process_server.url, requests, concurrency=4)
    expected = process_server.model.predict(rows[list(FEATURES)])
    np.testing.assert_allclose(predictions, expected, rtol=1e-9)
    log = read_predictions(process_server.log_dir).set_index("request_id")
    ids = [request_id for request_id, _ in requests]
    assert set(ids) <= set(log.index)
    # each row is logged as about its own hour, not the moment it was replayed
    assert log.loc[ids, EVENT_TIME].tolist() == rows[TIME].dt.tz_localize("UTC").tolist()


def test_a_rejected_row_names_the_request(process_server: Served) -> None:
    first, *rest = FEATURES  # a row without its other features
    broken: list[tuple[str, dict[str, Any]]] = [("replay-x05", {first: EXAMPLE_ROW[first]})]
    with pytest.raises(ReplayError, match=rf"replay-x05: 422 .*{rest[0]}: field required"):
        replay(process_server.url, broken)


def test_no_server_is_an_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ReplayError, match=f"no answer from {url}"):
        replay(url, [("replay-x", EXAMPLE_ROW)])


def test_an_empty_split_is_refused_before_any_request(
    tmp_path: Path, splits: dict[str, pd.DataFrame]
) -> None:
    splits["production"].head(0).to_parquet(tmp_path / "production.parquet")
    result = subprocess.run(
        [sys.executable, "-m", "gitml", "replay", "--url", f"http://127.0.0.1:{free_port()}",
         "--actuals", str(tmp_path / "actuals"), "--splits-dir", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "the production split is empty" in result.stderr
    assert not (tmp_path / "actuals").exists()
