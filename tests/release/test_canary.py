"""The canary overlay (deploy/k8s/canary) and its analysis (gitml.release.canary).

The manifests are what params.yaml renders, and valid against Argo Rollouts' published CRD
schemas (vendored in argo_rollouts/) and Kubernetes' own. The analysis runs for real: a
Prometheus (the real server) scrapes three real `gitml serve` processes, the stable version and
two candidates, each labelled as Argo labels a version's pods; traffic goes to them in each
step's proportions, and the AnalysisTemplate's own queries and conditions judge it. The broken
candidate aborts at the first step, a good one completes.
"""

import copy
import json
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from gitml.config import GOLDEN_FILE, load_params
from gitml.dataset import TARGET
from gitml.ports import free_port
from gitml.release import canary
from gitml.release.smoke import SYNTHETIC_TOKEN_ENV
from gitml.schema import as_model_input
from tests.conftest import Served, running_server
from tests.fake_github import reply_json
from tests.faulty_model import Broken
from tests.release.test_k8s import assert_schema_valid, dockerfile_env, kustomize
from tests.release.test_smoke import StandIn

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).parent / "argo_rollouts"
ARGO_KINDS = {"Rollout": "rollout", "AnalysisTemplate": "analysistemplate"}
NAMESPACE = "canary-test"
SCRAPE_S = 1.0
STEP_S = 3.0  # each step's traffic, spread so that Prometheus sees the counters grow
REQUESTS_PER_STEP = 60

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def settings() -> dict[str, Any]:
    return load_params("canary")


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return kustomize(canary.CANARY_DIR)


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def strict(schema: Any) -> Any:
    """A CRD's structural schema as the API server applies it with strict field validation
    (kubectl's default): unknown fields refused, int-or-string as such."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserved = out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not preserved and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def argo_errors(doc: Doc) -> list[str]:
    schema = json.loads((SCHEMAS / f"{ARGO_KINDS[doc['kind']]}.schema.json").read_text())
    validator = jsonschema.Draft7Validator(strict(schema))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def test_the_committed_manifests_are_what_params_render(settings: dict[str, Any]) -> None:
    for name, text in canary.manifests(settings).items():
        committed = (canary.CANARY_DIR / name).read_text()
        assert committed == text, f"{name} is stale: run `python -m gitml canary render`"


def test_the_overlay_renders_objects_valid_against_their_schemas(rendered: list[Doc]) -> None:
    argo = [doc for doc in rendered if doc["kind"] in ARGO_KINDS]
    assert sorted(doc["kind"] for doc in argo) == ["AnalysisTemplate"] * 2 + ["Rollout"]
    for doc in argo:
        assert argo_errors(doc) == [], doc["metadata"]["name"]
    assert_schema_valid([doc for doc in rendered if doc["kind"] not in ARGO_KINDS])


@pytest.mark.parametrize(
    ("path", "value"),
    [(("spec", "strategy", "canary", "stepz"), []),  # a misspelt field
     (("spec", "strategy", "canary", "steps", 0, "setWeight"), "ten"),  # a wrong type
     (("spec", "workloadRef", "scaleDown"), {"never": True})],
)  # fmt: skip
def test_the_schema_refuses_what_the_api_server_would(
    rendered: list[Doc], path: tuple[Any, ...], value: Any
) -> None:
    doc = copy.deepcopy(one(rendered, "Rollout"))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert argo_errors(doc), path


def test_the_rollout_takes_over_the_production_deployment(rendered: list[Doc]) -> None:
    rollout, deployment = one(rendered, "Rollout"), one(rendered, "Deployment")
    assert rollout["spec"]["workloadRef"]["name"] == deployment["metadata"]["name"]
    assert deployment["spec"]["replicas"] == 0, "the Deployment must not run pods of its own"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert rollout["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = one(rendered, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Rollout", rollout["metadata"]["name"])
    strategy = rollout["spec"]["strategy"]["canary"]
    for service in (strategy["stableService"], strategy["canaryService"]):
        assert one(rendered, "Service", service)["spec"]["selector"].items() <= pod_labels.items()
    assert {doc["metadata"]["namespace"] for doc in rendered} == {"gitml-production"}


def test_the_analysis_job_runs_the_released_image(rendered: list[Doc]) -> None:
    job = one(rendered, "AnalysisTemplate", canary.MODEL_TEMPLATE)["spec"]["metrics"][0]
    (container,) = job["provider"]["job"]["spec"]["template"]["spec"]["containers"]
    (server,) = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == server["image"]
    assert container["command"][:5] == ["python", "-m", "gitml", "canary", "compare"]
    # the golden cases the job sends lie beside the image's model
    assert Path(dockerfile_env("GITML_MODEL_PATH")).parent / GOLDEN_FILE == Path(
        canary.IMAGE_GOLDEN
    )


def test_every_analysis_argument_has_a_value(rendered: list[Doc]) -> None:
    """Argo fails an analysis whose template uses an argument nobody gives."""
    rollout = one(rendered, "Rollout")
    for step in rollout["spec"]["strategy"]["canary"]["steps"]:
        if "analysis" not in step:
            continue
        given = {arg["name"] for arg in step["analysis"]["args"]}
        for ref in step["analysis"]["templates"]:
            template = one(rendered, "AnalysisTemplate", ref["templateName"])
            declared = template["spec"].get("args", [])
            defaults = {arg["name"] for arg in declared if "value" in arg}
            used = set(canary.ARG.findall(json.dumps(template["spec"]["metrics"])))
            assert used <= {arg["name"] for arg in declared}, ref
            assert {arg["name"] for arg in declared} <= given | defaults, ref


def test_the_steps_are_the_params_and_each_is_judged(
    rendered: list[Doc], settings: dict[str, Any]
) -> None:
    steps = one(rendered, "Rollout")["spec"]["strategy"]["canary"]["steps"]
    assert [s["setWeight"] for s in steps if "setWeight" in s] == settings["steps"]
    assert [next(iter(s)) for s in steps] == ["setWeight", "pause", "analysis"] * len(
        settings["steps"]
    )


# --- the verdicts, without servers ---


@pytest.mark.parametrize(
    ("result", "ok"),
    [([0.01], True), ([0.0100001], False), ([], False), ([float("nan")], False),
     ([0.0, 0.0], False)],
)  # fmt: skip
def test_a_check_passes_only_on_one_value_within_its_limit(result: list[float], ok: bool) -> None:
    assert canary.passes(result, 0.01) is ok
    assert canary.CONDITION.format(limit=0.01) == "len(result) == 1 && result[0] <= 0.01"


def test_a_failed_step_aborts_the_rest() -> None:
    judged: list[int] = []

    def judge(weight: int) -> list[canary.Verdict]:
        judged.append(weight)
        return [canary.Verdict("x", 1.0, 0.5, weight < 50)]

    assert canary.run_steps([10, 50, 100], judge) == (50, False)
    assert judged == [10, 50]
    assert canary.run_steps([10], judge) == (10, True)


def test_behaviour_fails_a_shift_and_passes_the_same(settings: dict[str, Any]) -> None:
    stable = np.linspace(0, 100, 50)
    assert all(v.passed for v in canary.behaviour_verdicts(stable, stable.copy(), settings))
    spread = float(np.std(stable))
    shifted = stable + spread * settings["max_mean_shift"] * 1.5
    failed = {v.check for v in canary.behaviour_verdicts(stable, shifted, settings)
              if not v.passed}  # fmt: skip
    assert "mean-shift" in failed


def test_fill_names_a_missing_argument() -> None:
    assert canary.fill("{{args.a}}/{{ args.b-c }}", {"a": "1", "b-c": "2"}) == "1/2"
    with pytest.raises(KeyError, match=r"^\"no value for the analysis argument 'window'\"$"):
        canary.fill("[{{args.window}}]", {})


def test_no_step_is_a_completed_rollout_at_weight_zero() -> None:
    def judge(weight: int) -> list[canary.Verdict]:
        raise AssertionError(f"no step to judge, yet weight {weight} was")

    assert canary.run_steps([], judge) == (0, True)


def test_one_failed_check_of_several_fails_the_step() -> None:
    verdicts = [canary.Verdict("a", 0.1, 0.5, True), canary.Verdict("b", 0.9, 0.5, False)]
    assert canary.run_steps([10, 100], lambda weight: verdicts) == (10, False)


def test_behaviour_at_its_limits_passes() -> None:
    """stable [0, 2]: std 1; candidate [0.5, 2.5]: mean difference 0.5, so a shift of 0.5;
    their empirical distributions are 0.5 apart at most (between 0 and 0.5, and 2 and 2.5)."""
    settings = {"max_mean_shift": 0.5, "max_ks": 0.5}
    verdicts = canary.behaviour_verdicts(np.array([0.0, 2.0]), np.array([0.5, 2.5]), settings)
    assert verdicts == [canary.Verdict("mean-shift", 0.5, 0.5, True),
                        canary.Verdict("ks", 0.5, 0.5, True)]  # fmt: skip


def test_behaviour_fails_a_shift_down_as_one_up(settings: dict[str, Any]) -> None:
    stable = np.linspace(0, 100, 50)
    shift = settings["max_mean_shift"] * 1.5
    lower = stable - float(np.std(stable)) * shift
    (mean_shift, _) = canary.behaviour_verdicts(stable, lower, settings)
    assert mean_shift.check == "mean-shift" and not mean_shift.passed
    assert mean_shift.value == pytest.approx(shift)


def test_behaviour_of_constant_predictions(settings: dict[str, Any]) -> None:
    """The stable version predicting one value: no spread to measure a shift in; the same
    value is no shift, another an infinite one."""
    stable = np.full(20, 3.0)
    same = canary.behaviour_verdicts(stable, stable.copy(), settings)
    assert [(v.check, v.value, v.passed) for v in same] == [("mean-shift", 0.0, True),
                                                            ("ks", 0.0, True)]  # fmt: skip
    moved = canary.behaviour_verdicts(stable, stable + 1, settings)
    assert [(v.check, v.value, v.passed) for v in moved] == [("mean-shift", math.inf, False),
                                                             ("ks", 1.0, False)]  # fmt: skip


def test_behaviour_fails_another_distribution_with_the_same_mean(settings: dict[str, Any]) -> None:
    """[0, 1, 2, 3] against four times 1.5: the same mean, and half the mass on either side."""
    stable, candidate = np.array([0.0, 1.0, 2.0, 3.0]), np.full(4, 1.5)
    verdicts = canary.behaviour_verdicts(stable, candidate, settings)
    assert verdicts == [
        canary.Verdict("mean-shift", 0.0, settings["max_mean_shift"], True),
        canary.Verdict("ks", 0.5, settings["max_ks"], False),
    ]


def answering(values: dict[str, list[float]], asked: list[tuple[str, str]]) -> Any:
    """A query function for server_verdicts: the values of the first metric name (as it
    appears in its PromQL) that `promql` mentions; each (address, promql) noted in `asked`."""

    def query(address: str, promql: str) -> list[float]:
        asked.append((address, promql))
        return next(value for name, value in values.items() if name in promql)

    return query


ERRORS, LATENCY = "gitml_requests_total", "gitml_request_duration_seconds_bucket"


def test_server_verdicts_fill_each_query_and_judge_its_answer(settings: dict[str, Any]) -> None:
    template = canary.server_template(settings)
    asked: list[tuple[str, str]] = []
    args = {"namespace": "ns", "canary-hash": "abc", "prometheus": "http://prom:9090"}
    verdicts = canary.server_verdicts(template, args, answering({ERRORS: [0.02], LATENCY: [0.1]},
                                                                asked))  # fmt: skip
    assert verdicts == [
        canary.Verdict("error-share", 0.02, settings["max_error_share"], False),
        canary.Verdict("p99-latency-seconds", 0.1, settings["max_p99_latency_ms"] / 1000, True),
    ]
    assert [address for address, _ in asked] == ["http://prom:9090"] * 2
    for _, promql in asked:
        assert "{{" not in promql and f"[{settings['window']}]" in promql, promql
        assert 'namespace="ns",rollouts_pod_template_hash="abc"' in promql, promql
    # an argument given overrides the template's default
    asked.clear()
    canary.server_verdicts(template, args | {"window": "60s", "prometheus": "http://other"},
                           answering({ERRORS: [0.0], LATENCY: [0.0]}, asked))  # fmt: skip
    assert all(address == "http://other" and "[60s]" in q for address, q in asked), asked


def test_server_verdicts_without_one_answer_fail_with_no_value(settings: dict[str, Any]) -> None:
    template = canary.server_template(settings)
    args = {"namespace": "ns", "canary-hash": "abc"}
    verdicts = canary.server_verdicts(template, args, answering({ERRORS: [], LATENCY: [0.0, 0.0]},
                                                                []))  # fmt: skip
    assert [(v.check, v.value, v.passed) for v in verdicts] == [
        ("error-share", None, False),
        ("p99-latency-seconds", None, False),
    ]


def test_server_verdicts_of_a_template_without_arguments(settings: dict[str, Any]) -> None:
    template = canary.server_template(settings)
    del template["spec"]["args"]
    with pytest.raises(KeyError, match="'window'"):
        canary.server_verdicts(template, {"namespace": "n", "canary-hash": "h",
                                          "prometheus": "p"}, answering({}, []))  # fmt: skip
    args = {"namespace": "n", "canary-hash": "h", "prometheus": "p", "window": "1m"}
    verdicts = canary.server_verdicts(template, args, answering({ERRORS: [0.0], LATENCY: [0.0]},
                                                                []))  # fmt: skip
    assert all(v.passed for v in verdicts)


def test_server_verdicts_refuse_a_condition_they_cannot_read(settings: dict[str, Any]) -> None:
    template = canary.server_template(settings)
    template["spec"]["metrics"][1]["successCondition"] = "result[0] <= 0.25"
    with pytest.raises(ValueError, match=r"^p99-latency-seconds: unexpected successCondition$"):
        canary.server_verdicts(template, {"namespace": "n", "canary-hash": "h"},
                               answering({ERRORS: [0.0], LATENCY: [0.0]}, []))  # fmt: skip


# --- the analysis against stand-in servers in this process ---


class StandInPrometheus:
    """Prometheus' query API on loopback: for each instant query, `answer(promql)` gives the
    status and the JSON body; the queries asked are noted."""

    def __init__(self, answer: Any) -> None:
        self.queries: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                assert url.path == "/api/v1/query", url.path
                (promql,) = parse_qs(url.query)["query"]
                stand_in.queries.append(promql)
                reply_json(self, *answer(promql))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def vector(*values: float) -> tuple[int, Doc]:
    """Prometheus' answer to an instant query: one sample per series, its value a string."""
    samples = [{"metric": {}, "value": [1700000000.0, str(v)]} for v in values]
    return 200, {"status": "success", "data": {"resultType": "vector", "result": samples}}


@contextmanager
def stand_in_prometheus(answer: Any) -> Iterator[StandInPrometheus]:
    server = StandInPrometheus(answer)
    try:
        yield server
    finally:
        server.close()


def test_prometheus_query_reads_one_value_per_series() -> None:
    promql = 'sum(rate(x{a="b"}[5m])) / 2'
    with stand_in_prometheus(lambda q: vector(0.5, 2)) as prometheus:
        assert canary.prometheus_query(prometheus.url, promql) == [0.5, 2.0]
    assert prometheus.queries == [promql]


@pytest.mark.parametrize(
    "answer",
    [(200, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
     (200, {"status": "success", "data": {"resultType": "matrix", "result": []}})],
)  # fmt: skip
def test_prometheus_query_refuses_an_error_or_another_kind_of_result(answer: Any) -> None:
    with (
        stand_in_prometheus(lambda q: answer) as prometheus,
        pytest.raises(ValueError, match=r"^Prometheus answered .* to up$"),
    ):
        canary.prometheus_query(prometheus.url, "up")


def test_prometheus_query_raises_on_an_http_error() -> None:
    with (
        stand_in_prometheus(lambda q: (503, {"status": "error"})) as prometheus,
        pytest.raises(httpx.HTTPStatusError),
    ):
        canary.prometheus_query(prometheus.url, "up")


def test_check_judges_the_committed_template_on_prometheus(settings: dict[str, Any]) -> None:
    """`canary check`: the committed server template's queries, each line a verdict, exit 1 on
    a failed one."""
    values = {ERRORS: 0.5, LATENCY: 0.1}
    with stand_in_prometheus(
        lambda q: vector(next(v for name, v in values.items() if name in q))
    ) as prometheus:
        argv = ["check", "--prometheus", prometheus.url, "--namespace", "ns", "--canary-hash", "h"]
        failed = CliRunner().invoke(canary.app, argv)
        values[ERRORS] = 0.0
        passed = CliRunner().invoke(canary.app, [*argv, "--window", "60s"])
    error_limit, latency_limit = settings["max_error_share"], settings["max_p99_latency_ms"] / 1000
    assert (failed.exit_code, failed.output.splitlines()) == (1, [
        f"FAIL error-share: 0.5 (limit {error_limit})",
        f"ok   p99-latency-seconds: 0.1 (limit {latency_limit})",
    ])  # fmt: skip
    assert (passed.exit_code, passed.output.splitlines()) == (0, [
        f"ok   error-share: 0.0 (limit {error_limit})",
        f"ok   p99-latency-seconds: 0.1 (limit {latency_limit})",
    ])  # fmt: skip
    windows = [f"[{settings['window']}]"] * 2 + ["[60s]"] * 2
    assert all(window in q for window, q in zip(windows, prometheus.queries, strict=True))


@pytest.fixture
def stand_ins() -> Iterator[tuple[StandIn, StandIn]]:
    """A stable and a candidate version's /predict, each answering [1.0, 2.0] until told."""
    servers = (StandIn(), StandIn())
    yield servers
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


ROWS = [{"hr": 1}, {"hr": 2}]


def test_compare_versions_sends_the_rows_to_both_and_judges_the_answers(
    stand_ins: tuple[StandIn, StandIn], settings: dict[str, Any]
) -> None:  # fmt: skip
    stable, candidate = stand_ins
    ids = iter(range(10))
    verdicts = canary.compare_versions(stable.url, candidate.url, ROWS, settings,
                                       lambda: {"X-Request-ID": f"id-{next(ids)}"})  # fmt: skip
    assert [(v.check, v.value, v.passed) for v in verdicts] == [("mean-shift", 0.0, True),
                                                                ("ks", 0.0, True)]  # fmt: skip
    body = {"data": {"values": ROWS}}
    assert (stable.bodies, candidate.bodies) == ([("id-0", None, body)], [("id-1", None, body)])
    candidate.predictions = (200, [11, 12])  # far off: ints, read as floats
    shifted = canary.compare_versions(stable.url, candidate.url, ROWS, settings, dict)
    assert [(v.check, v.passed) for v in shifted] == [("mean-shift", False), ("ks", False)]
    assert shifted[0].value == pytest.approx(10 / float(np.std([1.0, 2.0])))


def test_predictions_are_floats(stand_ins: tuple[StandIn, StandIn]) -> None:
    stable, _ = stand_ins
    stable.predictions = (200, [1, 2])
    answer = canary.predictions(stable.url, ROWS, {})
    assert answer.dtype == np.float64 and answer.tolist() == [1.0, 2.0]


def test_a_version_that_does_not_answer_fails_the_model_check(
    stand_ins: tuple[StandIn, StandIn], settings: dict[str, Any]
) -> None:  # fmt: skip
    stable, candidate = stand_ins
    candidate.predictions = (500, {"detail": "boom"})
    (verdict,) = canary.compare_versions(stable.url, candidate.url, ROWS, settings, dict)
    assert verdict.check.startswith(f"answers from {candidate.url}: Server error '500")
    assert (verdict.value, verdict.limit, verdict.passed) == (None, 0.0, False)
    # an unreachable stable version: the candidate is not asked
    candidate.bodies.clear()
    gone = f"http://127.0.0.1:{free_port()}"
    (verdict,) = canary.compare_versions(gone, candidate.url, ROWS, settings, dict)
    assert verdict.check.startswith(f"answers from {gone}: ") and not verdict.passed
    assert candidate.bodies == []


def test_compare_marks_its_requests_synthetic_and_exits_on_the_verdict(
    stand_ins: tuple[StandIn, StandIn], settings: dict[str, Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`canary compare` as the analysis Job runs it: the golden rows to both versions, each
    request with an id of its own and, when the smoke checks' token is set, marked synthetic."""
    stable, candidate = stand_ins
    golden = tmp_path / GOLDEN_FILE
    golden.write_text(json.dumps({"rows": ROWS}))
    argv = ["compare", "--stable", stable.url, "--candidate", candidate.url, "--golden",
            str(golden), "--max-mean-shift", str(settings["max_mean_shift"]),
            "--max-ks", str(settings["max_ks"])]  # fmt: skip
    monkeypatch.setenv(SYNTHETIC_TOKEN_ENV, "secret")
    same = CliRunner().invoke(canary.app, argv)
    assert (same.exit_code, same.output.splitlines()) == (0, [
        f"ok   mean-shift: 0.0 (limit {settings['max_mean_shift']})",
        f"ok   ks: 0.0 (limit {settings['max_ks']})",
    ])  # fmt: skip
    sent = stable.bodies + candidate.bodies
    assert [(synthetic, body) for _, synthetic, body in sent] == [
        ("secret", {"data": {"values": ROWS}})
    ] * 2
    ids = [request_id for request_id, _, _ in sent]
    assert len(set(ids)) == 2 and all(i and i.startswith("smoke-") for i in ids), ids
    monkeypatch.delenv(SYNTHETIC_TOKEN_ENV)
    candidate.predictions = (200, [11.0, 12.0])
    shifted = CliRunner().invoke(canary.app, argv)
    assert shifted.exit_code == 1 and "FAIL mean-shift: " in shifted.output, shifted.output
    assert [synthetic for _, synthetic, _ in stable.bodies[1:]] == [None]


def test_render_writes_what_params_render(tmp_path: Path, settings: dict[str, Any]) -> None:
    result = CliRunner().invoke(canary.app, ["render", "--out", str(tmp_path)])
    expected = canary.manifests(settings)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"canary: wrote {tmp_path / name}" for name in expected]
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == expected


# --- the analysis against a real Prometheus scraping real servers ---


@dataclass
class Version:
    served: Served
    hash: str  # the pod-template hash Argo would give its pods


def package(model: Any, splits: dict[str, pd.DataFrame], directory: Path) -> Path:
    from gitml.serving.packaging import save_model

    path = directory / "model"
    save_model(model, as_model_input(splits["train"].head(50)), path)
    return path


@pytest.fixture(scope="module")
def versions(
    packaged_model: Path, trained_model: Any, splits: dict[str, pd.DataFrame],
    settings: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Version]]:  # fmt: skip
    """stable and good: the packaged model (a release that changes the server, not the model;
    a retrained one's predictions differ from it well inside the limits: docs/guide/canary.md);
    broken: off by the target's spread, slower than the latency budget, failing half its calls."""
    train = splits["train"]
    broken = Broken(trained_model, float(train[TARGET].std()),
                    2 * settings["max_p99_latency_ms"] / 1000)  # fmt: skip
    models = {"stable": packaged_model, "good": packaged_model,
              "broken": package(broken, splits, tmp_path_factory.mktemp("broken"))}  # fmt: skip
    with ExitStack() as stack, ThreadPoolExecutor(len(models)) as pool:
        servers = {name: running_server(path, trained_model, tmp_path_factory.mktemp(name),
                                        workers="1")
                   for name, path in models.items()}  # fmt: skip
        starting = {name: pool.submit(server.__enter__) for name, server in servers.items()}
        started, errors = {}, []
        for name, future in starting.items():  # the model loads overlap; each started one stops
            try:
                started[name], _ = future.result()
                stack.push(servers[name].__exit__)
            except BaseException as error:  # raised below, after the others stop
                errors.append(error)
        if errors:
            raise errors[0]
        yield {name: Version(served, f"{name}-hash") for name, served in started.items()}


@pytest.fixture(scope="module")
def prometheus(
    versions: dict[str, Version], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Prometheus scraping each version's metrics port every second, its samples
    labelled as the usual kubernetes-pods job labels a pod's (namespace, pod labels)."""
    exe = shutil.which("prometheus")
    if exe is None:  # a skip would read as green while the queries go untested
        pytest.fail("prometheus is missing: run `make monitor-tools` (Debian package prometheus)")
    directory = tmp_path_factory.mktemp("prometheus")
    targets = [{"targets": [v.served.metrics_url.removeprefix("http://")],
                "labels": {"namespace": NAMESPACE, "rollouts_pod_template_hash": v.hash}}
               for v in versions.values()]  # fmt: skip
    config = {"global": {"scrape_interval": f"{SCRAPE_S:g}s", "scrape_timeout": f"{SCRAPE_S:g}s"},
              "scrape_configs": [{"job_name": "gitml", "static_configs": targets}]}  # fmt: skip
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    log = directory / "prometheus.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [exe, f"--config.file={directory / 'prometheus.yml'}",
             f"--web.listen-address={address}", f"--storage.tsdb.path={directory / 'data'}",
             "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
    try:
        url = f"http://{address}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"Prometheus was not ready within 30 s:\n{log.read_text()}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def scraped_since(prometheus: str, moment: float) -> None:
    """Until Prometheus has scraped every target after `moment` (epoch seconds)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]
        scrapes = [pd.Timestamp(t["lastScrape"]).timestamp() for t in targets["activeTargets"]]
        if scrapes and min(scrapes) > moment + 0.1:
            return
        time.sleep(SCRAPE_S / 4)
    pytest.fail("Prometheus did not scrape every target in 20 s")


def traffic(stable: Served, candidate: Served, weight: int, rows: list[Doc]) -> None:
    """REQUESTS_PER_STEP single-row requests over STEP_S, `weight` % of them to the candidate
    (Argo's weight without a mesh: the share of pods, so of connections)."""

    def send(i: int) -> None:
        to = candidate if (i + 1) * weight // 100 > i * weight // 100 else stable
        httpx.post(f"{to.url}/predict", json={"data": {"values": [rows[i % len(rows)]]}},
                   timeout=30)  # fmt: skip  # a 500 is an answer the analysis must see

    with ThreadPoolExecutor(8) as pool:
        for i in range(REQUESTS_PER_STEP):
            pool.submit(send, i)
            time.sleep(STEP_S / REQUESTS_PER_STEP)


@pytest.fixture(scope="module")
def primed(versions: dict[str, Version], prometheus: str, packaged_model: Path) -> list[Doc]:
    """A few requests to every version, scraped: the series exist before the steps' traffic
    (Prometheus counts no increase in a series' first sample). The golden rows: what both see."""
    rows: list[Doc] = json.loads((packaged_model.parent / "golden.json").read_text())["rows"]
    for version in versions.values():
        for row in rows[:2]:
            httpx.post(f"{version.served.url}/predict", json={"data": {"values": [row]}},
                       timeout=30)  # fmt: skip
    scraped_since(prometheus, time.time())
    return rows


def drive(
    name: str, versions: dict[str, Version], prometheus: str, rows: list[Doc],
    rendered: list[Doc], settings: dict[str, Any],
) -> tuple[int, bool, dict[int, list[canary.Verdict]]]:  # fmt: skip
    """The candidate `name` through the Rollout's steps, each judged by the rendered templates."""
    template = one(rendered, "AnalysisTemplate", canary.SERVER_TEMPLATE)
    stable, candidate = versions["stable"].served, versions[name].served
    args = {
        "namespace": NAMESPACE,
        "canary-hash": versions[name].hash,
        "prometheus": prometheus,
        "window": "60s",
    }  # the test's whole traffic, as 5m is a step's in production
    verdicts: dict[int, list[canary.Verdict]] = {}

    def judge(weight: int) -> list[canary.Verdict]:
        traffic(stable, candidate, weight, rows)
        scraped_since(prometheus, time.time())
        verdicts[weight] = canary.server_verdicts(template, args, canary.prometheus_query) + \
            canary.compare_versions(stable.url, candidate.url, rows, settings, dict)  # fmt: skip
        return verdicts[weight]

    weight, completed = canary.run_steps(settings["steps"], judge)
    return weight, completed, verdicts


def test_a_broken_candidate_aborts_at_the_first_step(
    versions: dict[str, Version], prometheus: str, primed: list[Doc], rendered: list[Doc],
    settings: dict[str, Any],
) -> None:  # fmt: skip
    weight, completed, verdicts = drive("broken", versions, prometheus, primed, rendered, settings)
    assert (weight, completed) == (settings["steps"][0], False)
    failed = {v.check.split(":")[0] for v in verdicts[weight] if not v.passed}
    # every server check refuses it; the model check refuses its answers or their shift
    assert {"error-share", "p99-latency-seconds"} <= failed, verdicts
    assert failed - {"error-share", "p99-latency-seconds"}, verdicts


def test_a_good_candidate_completes(
    versions: dict[str, Version], prometheus: str, primed: list[Doc], rendered: list[Doc],
    settings: dict[str, Any],
) -> None:  # fmt: skip
    weight, completed, verdicts = drive("good", versions, prometheus, primed, rendered, settings)
    assert (weight, completed) == (settings["steps"][-1], True), verdicts
    assert all(
        v.value is not None and v.value > 0
        for v in verdicts[weight]
        if v.check == "p99-latency-seconds"
    ), "the candidate's latency was measured"


def test_the_commands_the_job_and_a_person_run_give_the_verdicts(
    versions: dict[str, Version], prometheus: str, primed: list[Doc], packaged_model: Path,
    settings: dict[str, Any],
) -> None:  # fmt: skip
    """`canary compare` as the analysis Job runs it (its exit code is the verdict), and `canary
    check` reading the committed template, on the servers and traffic of the tests above."""
    golden = str(packaged_model.parent / GOLDEN_FILE)
    (container,) = canary.model_template(settings)["spec"]["metrics"][0]["provider"]["job"][
        "spec"]["template"]["spec"]["containers"]  # fmt: skip
    limits = container["command"][-4:]  # the thresholds the Job is given
    assert limits[0] == "--max-mean-shift", container["command"]
    stable = versions["stable"].served.url
    for name, code in (("good", 0), ("broken", 1)):
        argv = ["compare", "--stable", stable, "--candidate", versions[name].served.url,
                "--golden", golden, *limits]  # fmt: skip
        result = CliRunner().invoke(canary.app, argv)
        assert result.exit_code == code, (name, result.output)
    check = ["check", "--prometheus", prometheus, "--namespace", NAMESPACE, "--window", "60s"]
    result = CliRunner().invoke(canary.app, [*check, "--canary-hash", versions["broken"].hash])
    assert result.exit_code == 1 and "FAIL error-share" in result.output, result.output
