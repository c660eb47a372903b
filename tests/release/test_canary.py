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
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from gitml.config import load_params
from gitml.dataset import TARGET
from gitml.ports import free_port
from gitml.release import canary
from gitml.schema import as_model_input
from gitml.serving.golden import GOLDEN_FILE
from tests.conftest import Served, running_server
from tests.faulty_model import Broken
from tests.release.test_k8s import assert_schema_valid, dockerfile_env, kustomize

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
    with pytest.raises(KeyError, match="'window'"):
        canary.fill("[{{args.window}}]", {})


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
