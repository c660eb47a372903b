"""The production replay: the held-out hours as real HTTP requests to a real server."""

from typing import Any

import numpy as np
import pandas as pd
import pytest

from gitml.ports import free_port
from gitml.predlog import read_predictions
from gitml.replay import ReplayError, replay, requests_from
from gitml.schema import FEATURES
from gitml.serve import request_model
from tests.conftest import Served


def test_one_request_per_hour_in_time_order(splits: dict[str, pd.DataFrame]) -> None:
    production = splits["production"]
    requests = requests_from(production.sample(frac=1, random_state=0))  # shuffled input
    ids = [request_id for request_id, _ in requests]
    assert len(ids) == len(set(ids)) == len(production)
    assert ids == sorted(ids) and ids[0] == "replay-2011-10-01T00"
    request_model(max_rows=len(requests))(data={"values": [row for _, row in requests]})


def test_a_missing_humidity_is_sent_as_null(splits: dict[str, pd.DataFrame]) -> None:
    # Oct-Dec has no missing humidity, so one is made: the sensor fault validate masks
    day = splits["production"].sort_values("timestamp").head(24).reset_index(drop=True)
    day.loc[5, "hum"] = float("nan")
    requests = requests_from(day)
    assert [row["hum"] is None for _, row in requests] == [i == 5 for i in range(24)]
    request_model(max_rows=24)(data={"values": [row for _, row in requests]})  # still valid


def test_replayed_hours_are_answered_and_logged(
    process_server: Served, splits: dict[str, pd.DataFrame]
) -> None:
    hours = splits["production"].sort_values("timestamp").head(48)
    requests = requests_from(hours)
    predictions = replay(process_server.url, requests, concurrency=4)
    expected = process_server.model.predict(hours[list(FEATURES)])
    np.testing.assert_allclose(predictions, expected, rtol=1e-9)
    log = read_predictions(process_server.log_dir)
    assert {request_id for request_id, _ in requests} <= set(log["request_id"])


def test_a_rejected_hour_names_the_request(process_server: Served) -> None:
    broken: list[tuple[str, dict[str, Any]]] = [("replay-2011-10-01T05", {"hr": 5})]
    with pytest.raises(ReplayError, match=r"replay-2011-10-01T05: 422 .*temp: field required"):
        replay(process_server.url, broken)


def test_no_server_is_an_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ReplayError, match=f"no answer from {url}"):
        replay(url, [("replay-x", {"hr": 1})])
