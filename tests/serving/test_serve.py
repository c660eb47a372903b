"""The HTTP API, against a real server process and against the built image's entrypoint:
predictions, health, OpenAPI, bad input, and a property-based fuzzer."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from gitml.pipeline.features import split_xy
from gitml.schema import EVENT_TIME, EVENT_TIME_PATTERN, EXAMPLE_ROW, FEATURES, as_model_input
from gitml.serving.metrics import ServerMetrics
from gitml.serving.predlog import PredictionLog, read_predictions
from gitml.serving.serve import prediction_hook, request_model
from tests.conftest import Served
from tests.example_data import example_only


def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records = as_model_input(frame).astype(object).to_dict(orient="records")
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in records
    ]


def post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    if isinstance(body, bytes | str):
        return httpx.post(
            f"{url}/predict",
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
            **kwargs,
        )
    return httpx.post(f"{url}/predict", json=body, timeout=30, **kwargs)


@pytest.mark.parametrize("size", [1, 100])
def test_predictions_equal_the_in_process_model(
    served: Served, splits: dict[str, pd.DataFrame], params: dict[str, Any], size: int
) -> None:
    test = splits["test"].sample(size, random_state=size)
    response = post(served.url, {"data": {"values": rows(test)}})
    assert response.status_code == 200, response.text
    inputs, _ = split_xy(test, params["features"])
    np.testing.assert_allclose(response.json(), served.model.predict(inputs), rtol=1e-9)


def test_the_server_says_it_predicts_with_the_compiled_pipeline(served: Served) -> None:
    """The predictions above came from gitml.serving.compiled, which every model family
    of train.py compiles to, unless its start-up check refused it."""
    assert (
        "serving: compiled predictor (agrees with the model's own on" in served.output.read_text()
    )


def test_concurrent_requests_predicted_together_each_get_their_own_predictions(
    served: Served, splits: dict[str, pd.DataFrame], params: dict[str, Any]
) -> None:
    """Requests that wait at the same time share one predict (gitml.serving.batching)."""
    from concurrent.futures import ThreadPoolExecutor

    test = splits["test"].sample(48, random_state=7)
    parts = [test.iloc[n : n + 1 + n % 4] for n in range(0, 48, 4)]  # 1 to 4 rows each
    with ThreadPoolExecutor(len(parts)) as pool:
        answers = list(pool.map(lambda part: post(served.url, {"data": {"values": rows(part)}}),
                                parts))  # fmt: skip
    for part, answer in zip(parts, answers, strict=True):
        assert answer.status_code == 200, answer.text
        inputs, _ = split_xy(part, params["features"])
        np.testing.assert_allclose(answer.json(), served.model.predict(inputs), rtol=1e-9)


@pytest.mark.parametrize("name", [n for n, spec in FEATURES.items() if spec.nullable])
def test_a_missing_value_is_imputed(served: Served, name: str) -> None:
    response = post(served.url, {"data": {"values": [{**EXAMPLE_ROW, name: None}]}})
    assert response.status_code == 200, response.text
    assert np.isfinite(response.json()[0])


def test_health_reports_the_model_version(served: Served) -> None:
    body = httpx.get(f"{served.url}/healthz").json()
    assert body == {"status": "ok", "model_version": served.version}


def test_openapi_documents_predict_and_health(served: Served) -> None:
    spec = httpx.get(f"{served.url}/openapi.json").json()
    assert {"/predict", "/healthz"} <= set(spec["paths"])
    row = spec["components"]["schemas"]["PredictRow"]
    assert set(row["required"]) == set(FEATURES)  # the event time is optional
    event = row["properties"][EVENT_TIME]
    assert {"type": "string", "format": "date-time", "pattern": EVENT_TIME_PATTERN} in event[
        "anyOf"
    ]
    assert "ISO 8601" in event["description"]


def bad(**changes: Any) -> dict[str, Any]:
    row = {**EXAMPLE_ROW, **changes}
    return {"data": {"values": [{k: v for k, v in row.items() if v != "<drop>"}]}}


def first(kind: str, **having: Any) -> str | None:
    """The first feature of `kind` in the dataset spec (with the given attributes)."""
    return next(
        (n for n, spec in FEATURES.items()
         if spec.kind == kind and all(getattr(spec, k) == v for k, v in having.items())),
        None,
    )  # fmt: skip


NUMBER = first("float", nullable=False)  # a float that may not be missing
INTEGER = first("int")
CATEGORY = first("category")
TOP = next(((n, s.high) for n, s in FEATURES.items() if s.kind == "int" and s.high is not None),
           None)  # fmt: skip
ANY = next(iter(FEATURES))
BAD_REQUESTS: dict[str, tuple[Any, int, str]] = {
    "missing column": (bad(**{ANY: "<drop>"}), 422, f"data.values.0.{ANY}: field required"),
    "extra column": (bad(price_xyz=3), 422, "data.values.0.price_xyz: extra fields not permitted"),
    "empty list": (
        {"data": {"values": []}},
        422,
        "data.values: ensure this value has at least 1 items",
    ),
    "no data": ({}, 422, "data: field required"),
    "malformed JSON": ('{"data": {"values": [', 422, "malformed JSON"),
    "too many rows": ({"data": {"values": [EXAMPLE_ROW] * 1001}}, 422, "at most 1000 items"),
    "oversized body": ("[" + " " * (2 << 20) + "]", 413, "request body larger than"),
    "event time not a time": (
        bad(**{EVENT_TIME: "yesterday"}),
        422,
        f"data.values.0.{EVENT_TIME}: must be an ISO 8601",
    ),
    "event time a number": (
        bad(**{EVENT_TIME: 1714550400}),
        422,
        f"data.values.0.{EVENT_TIME}: must be a string",
    ),
}
if NUMBER:
    BAD_REQUESTS |= {
        "string for a number": (bad(**{NUMBER: "warm"}), 422,
                                f"data.values.0.{NUMBER}: must be a JSON number"),
        "numeric string": (bad(**{NUMBER: "0.5"}), 422, f"data.values.0.{NUMBER}"),
        "null where not allowed": (bad(**{NUMBER: None}), 422, f"data.values.0.{NUMBER}"),
        "NaN": (json.dumps(bad(**{NUMBER: float("nan")})), 422, f"data.values.0.{NUMBER}"),
        "Infinity": (json.dumps(bad(**{NUMBER: float("inf")})), 422, f"data.values.0.{NUMBER}"),
    }  # fmt: skip
if INTEGER:
    BAD_REQUESTS["fractional integer"] = (
        bad(**{INTEGER: 3.7}), 422, f"data.values.0.{INTEGER}: must be a JSON integer"
    )  # fmt: skip
if TOP:
    BAD_REQUESTS["out of range"] = (
        bad(**{TOP[0]: int(TOP[1]) + 1}), 422,
        f"data.values.0.{TOP[0]}: ensure this value is less than or equal to {int(TOP[1])}",
    )  # fmt: skip
if CATEGORY:
    BAD_REQUESTS["unknown category"] = (
        bad(**{CATEGORY: "tornado-xyz"}), 422, f"data.values.0.{CATEGORY}"
    )  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_4xx_naming_the_field(served: Served, case: str) -> None:
    body, status, words = BAD_REQUESTS[case]
    response = post(served.url, body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


@example_only
def test_request_model_mirrors_the_input_contract() -> None:
    schema = request_model(max_rows=10).schema()
    row = schema["definitions"]["PredictRow"]
    # the bounds written out, not read back from FEATURES (the source the model is built from)
    assert (row["properties"]["hr"]["minimum"], row["properties"]["hr"]["maximum"]) == (0, 23)
    assert (row["properties"]["temp"]["minimum"], row["properties"]["temp"]["maximum"]) == (0, 1)
    assert row["properties"]["weathersit"]["enum"] == [
        "clear", "cloudy/misty", "light rain/snow", "heavy rain/snow"
    ]  # fmt: skip
    assert sorted(row["required"]) == sorted(FEATURES)  # hum too: sent, possibly as null
    assert row["properties"]["hum"]["anyOf"][1] == {"type": "null"}
    assert row["additionalProperties"] is False


def test_fuzzer_finds_no_server_error(served: Served, tmp_path: Path) -> None:
    """schemathesis generates valid and invalid requests from the server's own OpenAPI document
    and runs every check: no 5xx, responses conform to the documented schemas and codes."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{served.url}/openapi.json",
         "--checks", "all", "--max-examples", "60", "--seed", "1", "--no-color"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    assert "passed" in result.stdout


def logged(served: Served, request_id: str) -> pd.DataFrame:
    frame = read_predictions(served.log_dir)
    return frame[frame["request_id"] == request_id].sort_values("row")


def test_every_answered_row_is_logged_with_its_prediction(
    served: Served, splits: dict[str, pd.DataFrame]
) -> None:
    request_id = f"test-{uuid.uuid4().hex}"
    sent = rows(splits["test"].head(3))
    response = post(served.url, {"data": {"values": sent}}, headers={"X-Request-ID": request_id})
    assert response.status_code == 200 and response.headers["X-Request-ID"] == request_id
    log = logged(served, request_id)
    assert log["prediction"].tolist() == response.json()
    assert set(log["model_version"]) == {served.version}
    pd.testing.assert_frame_equal(
        log[list(FEATURES)].reset_index(drop=True),
        pd.DataFrame(sent).astype(log[list(FEATURES)].dtypes.to_dict()),
    )


def test_the_event_time_is_logged_in_utc_and_never_reaches_the_model(served: Served) -> None:
    request_id = f"event-{uuid.uuid4().hex}"
    sent = [{**EXAMPLE_ROW, EVENT_TIME: "2024-05-01T10:00:00+02:00"}, EXAMPLE_ROW]
    response = post(served.url, {"data": {"values": sent}}, headers={"X-Request-ID": request_id})
    assert response.status_code == 200, response.text
    # the same prediction as without it: the event time is not a feature
    assert response.json() == [response.json()[1]] * 2
    times = logged(served, request_id)[EVENT_TIME].tolist()
    assert times[0] == pd.Timestamp("2024-05-01T08:00:00Z")
    assert times[1] == logged(served, request_id)["ts"].iloc[1]  # none sent: when it was served


def test_a_rejected_request_is_not_logged(served: Served) -> None:
    # one answered request first: the log exists even when this test runs alone
    answered, rejected = (f"test-{uuid.uuid4().hex}" for _ in range(2))
    response = post(served.url, bad(), headers={"X-Request-ID": answered})
    assert response.status_code == 200, response.text
    response = post(served.url, bad(price_xyz=3), headers={"X-Request-ID": rejected})
    assert response.status_code == 422
    assert len(logged(served, answered)) == 1 and logged(served, rejected).empty


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The metrics at `url`: the server's metrics port."""
    text = httpx.get(f"{url}/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def test_metrics_count_requests_errors_and_rows(served: Served) -> None:
    ok = ("gitml_requests_total", (("method", "POST"), ("route", "/predict"), ("status", "200")))
    rejected = (ok[0], (*ok[1][:2], ("status", "422")))
    rows_predicted = ("gitml_predictions_total", ())
    timed = ("gitml_request_duration_seconds_count", (("method", "POST"), ("route", "/predict")))
    _, before = scrape(served.metrics_url)
    assert post(served.url, {"data": {"values": [EXAMPLE_ROW] * 4}}).status_code == 200
    assert post(served.url, bad(hr=99)).status_code == 422
    text, after = scrape(served.metrics_url)
    assert after[ok] - before.get(ok, 0) == 1
    assert after[rejected] - before.get(rejected, 0) == 1
    assert after[rows_predicted] - before.get(rows_predicted, 0) == 4
    assert after[timed] - before.get(timed, 0) == 2
    assert after[("gitml_model_info", (("version", served.version),))] == 1
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make monitor-tools` (Debian package prometheus)"
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True)  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_a_failing_prediction_log_is_counted_not_fatal(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    metrics = ServerMetrics("v1")
    hook = prediction_hook(PredictionLog(blocked, "v1"), metrics)
    request = Request({"type": "http", "state": {"request_id": "r", "synthetic": False}})
    hook(request, [EXAMPLE_ROW], [1.0])  # must not raise: the caller still gets its answer
    assert metrics.log_errors._value.get() == 1
    assert metrics.predictions._value.get() == 1


def test_a_long_request_id_is_capped_before_it_is_echoed_and_logged(served: Served) -> None:
    # unique per run: the server (and its log) is shared with every other test, and reruns
    long_id = (uuid.uuid4().hex + "x" * 300)[:300]
    response = post(
        served.url, {"data": {"values": [EXAMPLE_ROW]}}, headers={"X-Request-ID": long_id}
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == long_id[:128]
    assert len(logged(served, long_id[:128])) == 1


@pytest.mark.parametrize("kind", ["int", "float", "category"])
def test_a_contract_of_one_kind_of_column_builds_a_request_model(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from gitml.columns import Column
    from gitml.serving import serve

    column = Column(kind, categories=("a", "b"), example="a" if kind == "category" else 1)  # type: ignore[arg-type]
    monkeypatch.setattr(serve, "FEATURES", {"x": column})
    model = serve.request_model(max_rows=10)
    model(data={"values": [{"x": column.example}]})


def test_the_public_port_serves_no_docs_metrics_or_model_interface(served: Served) -> None:
    # browser pages loading CDN assets, MLEM's version and dtypes, and the service's counters
    # are nobody's business on the public port (GITML_DOCS turns the first two on)
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect", "/interface.json", "/metrics"):
        response = httpx.get(f"{served.url}{path}")
        assert response.status_code == 404, path
        assert response.json() == {"error": "Not Found", "detail": "Not Found"}
    assert "server" not in httpx.get(f"{served.url}/healthz").headers
    assert httpx.get(f"{served.metrics_url}/metrics").status_code == 200
    for path in ("/healthz", "/predict", "/metrics/"):
        assert httpx.get(f"{served.metrics_url}{path}").status_code == 404, path


def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_sent(served: Served) -> None:
    response = httpx.post(
        f"{served.url}/predict/", json=bad(), headers={"Host": "evil.example"}, timeout=30
    )
    assert response.status_code == 404 and "location" not in response.headers


def raw_log_lines(served: Served, request_id: str) -> list[dict[str, Any]]:
    return [
        record
        for file in sorted(served.log_dir.rglob("*.jsonl"))
        for record in map(json.loads, file.read_text().splitlines())
        if record["request_id"] == request_id
    ]


def test_only_the_shared_secret_marks_a_request_synthetic(served: Served) -> None:
    ids = {mark: f"smoke-{mark}-{uuid.uuid4().hex}" for mark in ("secret", "guess", "none")}
    marks = {"secret": served.synthetic_token, "guess": "smoke", "none": None}
    for mark, request_id in ids.items():
        headers = {"X-Request-ID": request_id}
        if marks[mark] is not None:
            headers["X-Gitml-Synthetic"] = marks[mark]  # type: ignore[assignment]
        assert post(served.url, bad(), headers=headers).status_code == 200
    assert [r.get("synthetic") for r in raw_log_lines(served, ids["secret"])] == [True]
    assert [r.get("synthetic") for r in raw_log_lines(served, ids["guess"])] == [None]
    traffic = set(read_predictions(served.log_dir)["request_id"])
    assert ids["guess"] in traffic and ids["none"] in traffic  # `smoke-...` is just an id
    assert ids["secret"] not in traffic


def test_a_repeated_request_id_is_a_retry_and_its_last_answer_counts(
    served: Served, splits: dict[str, pd.DataFrame]
) -> None:
    # The server answers and logs every request; readers keep the last answer per (id, row)
    request_id = f"retry-{uuid.uuid4().hex}"
    first, second = rows(splits["test"].iloc[[0]]), rows(splits["test"].iloc[[1]])
    answers = [
        post(served.url, {"data": {"values": sent}}, headers={"X-Request-ID": request_id})
        for sent in (first, second)
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() != answers[1].json()  # two different rows, so the test can fail
    assert [r["prediction"] for r in raw_log_lines(served, request_id)] == [
        answers[0].json()[0], answers[1].json()[0]
    ]  # fmt: skip
    assert logged(served, request_id)["prediction"].tolist() == answers[1].json()


def access_log(served: Served, request_id: str) -> list[dict[str, Any]]:
    """The server's access-log lines of a request (its stdout, drained to a file)."""
    for _ in range(50):  # the drain thread copies the line a moment after it is written
        lines = [json.loads(line) for line in served.output.read_text().splitlines()
                 if line.startswith("{") and request_id in line]  # fmt: skip
        if lines:
            return lines
        time.sleep(0.1)
    return []


def test_every_request_gets_an_id_and_one_bounded_access_log_line(served: Served) -> None:
    request_id = f"access-{uuid.uuid4().hex}"
    category = CATEGORY or ANY
    response = post(
        served.url, bad(**{category: "secret-value-xyz"}), headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 422 and response.headers["X-Request-ID"] == request_id
    [line] = access_log(served, request_id)
    assert set(line) == {"ts", "client", "method", "path", "status", "duration_ms",
                         "request_id", "bytes_in", "bytes_out"}  # fmt: skip
    assert (line["method"], line["path"], line["status"]) == ("POST", "/predict", 422)
    assert line["bytes_in"] == len(response.request.content)
    assert line["bytes_out"] == len(response.content) and line["duration_ms"] >= 0
    assert "secret-value-xyz" not in served.output.read_text()  # bodies are never logged
    # a long, odd path is cut and escaped; an id is made up when none is sent
    odd = httpx.get(f"{served.url}/{'p' * 3000}%ff%0a\u2028")
    made_up = odd.headers["X-Request-ID"]
    assert odd.status_code == 404 and re.fullmatch(r"[0-9a-f]{32}", made_up)
    [line] = access_log(served, made_up)
    assert len(line["path"]) <= 203 and line["path"].endswith("...")


def test_worker_processes_share_the_port_the_metrics_and_the_log(
    packaged_model: Path, trained_model: Any, tmp_path: Path
) -> None:
    """GITML_WORKERS=2: both workers answer on the one port, a scrape of either counts both
    workers' requests, each worker logs to its own file, and SIGTERM stops them all."""
    from tests.conftest import running_server

    with running_server(packaged_model, trained_model, tmp_path, workers="2") as (served, proc):
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        assert len(workers.stdout.split()) == 2
        # a new connection each time: the kernel hands each to whichever worker accepts first
        sent = 0
        while sent < 100 and len(list(served.log_dir.rglob("*.jsonl"))) < 2:
            assert post(served.url, {"data": {"values": [EXAMPLE_ROW] * 3}}).status_code == 200
            sent += 1
        files = sorted(served.log_dir.rglob("*.jsonl"))
        assert {f.name.split(".")[0][-3:] for f in files} == {"-w0", "-w1"}
        assert sum(len(f.read_text().splitlines()) for f in files) == 3 * sent
        _, samples = scrape(served.metrics_url)
        ok = (("method", "POST"), ("route", "/predict"), ("status", "200"))
        assert samples[("gitml_requests_total", ok)] == sent
        assert samples[("gitml_predictions_total", ())] == 3 * sent
        assert samples[("gitml_model_info", (("version", served.version),))] == 1
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_a_worker_that_dies_stops_the_server(
    packaged_model: Path, trained_model: Any, tmp_path: Path
) -> None:
    """The container restarts as a whole rather than serve on with fewer workers."""
    from tests.conftest import running_server

    with running_server(packaged_model, trained_model, tmp_path, workers="2") as (_, proc):
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        os.kill(int(workers.stdout.split()[0]), 9)
        assert proc.wait(timeout=30) == 1
        assert "exited (-9); stopping" in (tmp_path / "server.log").read_text()


def test_connections_are_capped_below_the_descriptor_limit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An accept that fails for want of a descriptor stalls every client: GITML_MAX_CONNECTIONS
    is lowered, and the server says so, where `ulimit -n` would run out first."""
    import resource

    from gitml.serving import serve

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1000, 1000))
    assert serve.connection_budget(100, reserved=64) == 100
    assert capsys.readouterr().err == ""
    assert serve.connection_budget(5000, reserved=64) == 1000 - 64 - serve.FD_RESERVE
    said = json.loads(capsys.readouterr().err)
    assert (
        said["level"] == "warning" and "GITML_MAX_CONNECTIONS=5000 lowered to" in said["message"]
    )
