"""Canary releases on Kubernetes with Argo Rollouts: the steps, the analysis and its verdicts.

params.yaml `canary` is the one place for the steps and the thresholds. `render` writes the
Rollout and its two AnalysisTemplates into deploy/k8s/canary from it (the tests check that the
committed files are what it writes), and the verdicts here read those same manifests:

- the server's health, from Prometheus: the candidate pods' share of 5xx /predict answers and
  their /predict p99 latency (gitml.serving.metrics), selected by the pod label Argo gives each
  version (`rollouts-pod-template-hash`, kept by Prometheus' usual pod `labelmap`);
- the model's behaviour, from a Job in the image (`compare`): the same rows (the golden cases
  baked beside the model) go to the stable and the candidate Service, and the two sets of
  predictions must agree on their mean and their distribution. The server exports no metric of
  the predicted values, so Prometheus cannot compare them on live traffic.

`python -m gitml canary render | check | compare`.
"""

import copy
import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer
import yaml
from scipy.stats import ks_2samp

from gitml.config import PROJ_ROOT, load_params

CANARY_DIR = PROJ_ROOT / "deploy" / "k8s" / "canary"
NAME = "gitml-serving"  # the base Deployment's, and its Service's
SERVER_TEMPLATE, MODEL_TEMPLATE = "gitml-canary-server", "gitml-canary-model"
STABLE_SERVICE, CANARY_SERVICE = f"{NAME}-stable", f"{NAME}-canary"
IMAGE_GOLDEN = "/app/model/golden.json"  # the image's GITML_MODEL_PATH's folder
PROMETHEUS = "http://prometheus-server.monitoring.svc"  # a cluster's own: override the arg
HEADER = "# Written by `python -m gitml canary render` from params.yaml `canary`: do not edit.\n"
ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}")  # Argo's argument placeholders
CONDITION = "len(result) == 1 && result[0] <= {limit}"  # no answer, or NaN, fails
PARSED_CONDITION = re.compile(r"len\(result\) == 1 && result\[0\] <= ([0-9.eE+-]+)")

# The candidate's pods: Argo labels each version's pods with their template hash.
PODS = 'namespace="{{args.namespace}}",rollouts_pod_template_hash="{{args.canary-hash}}"'
PREDICT = f'route="/predict",{PODS}'
SERVER_QUERIES = {
    # no 5xx series yet is a share of 0; no /predict traffic at all is no verdict (fails)
    "error-share": (
        f'(sum(rate(gitml_requests_total{{{PREDICT},status=~"5.."}}[{{{{args.window}}}}]))'
        " or vector(0))"
        f" / sum(rate(gitml_requests_total{{{PREDICT}}}[{{{{args.window}}}}]))"
    ),
    "p99-latency-seconds": (
        "histogram_quantile(0.99, sum by (le) ("
        f"rate(gitml_request_duration_seconds_bucket{{{PREDICT}}}[{{{{args.window}}}}])))"
    ),
}
LOCKED_DOWN = {
    "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
    "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    check: str
    value: float | None  # None: no answer (no traffic, no series)
    limit: float
    passed: bool


def limits(settings: dict[str, Any]) -> dict[str, float]:
    """Each server check's upper limit, in the unit its query answers."""
    return {
        "error-share": float(settings["max_error_share"]),
        "p99-latency-seconds": float(settings["max_p99_latency_ms"]) / 1000,
    }


def fill(text: str, args: dict[str, str]) -> str:
    """`text` with Argo's `{{args.name}}` placeholders replaced, as the controller does."""

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in args:
            raise KeyError(f"no value for the analysis argument {match.group(1)!r}")
        return args[match.group(1)]

    return ARG.sub(value, text)


def passes(result: list[float], limit: float) -> bool:
    """The AnalysisTemplate's successCondition (CONDITION), for the same result."""
    return len(result) == 1 and result[0] <= limit  # NaN compares false, as in Go


def server_verdicts(
    template: dict[str, Any], args: dict[str, str], query: Callable[[str, str], list[float]]
) -> list[Verdict]:
    """Every metric of the server AnalysisTemplate `template`, measured once as Argo does: its
    query (arguments filled, defaults from the template) sent to `query(address, promql)`."""
    given = {a["name"]: a["value"] for a in template["spec"].get("args", []) if "value" in a}
    given.update(args)
    verdicts = []
    for metric in template["spec"]["metrics"]:
        prometheus = metric["provider"]["prometheus"]
        parsed = PARSED_CONDITION.fullmatch(metric["successCondition"])
        if parsed is None:
            raise ValueError(f"{metric['name']}: unexpected successCondition")
        limit = float(parsed.group(1))
        result = query(fill(prometheus["address"], given), fill(prometheus["query"], given))
        verdicts.append(Verdict(metric["name"], result[0] if len(result) == 1 else None, limit,
                                passes(result, limit)))  # fmt: skip
    return verdicts


def behaviour_verdicts(
    stable: np.ndarray, candidate: np.ndarray, settings: dict[str, Any]
) -> list[Verdict]:
    """The candidate's predictions against the stable version's on the same rows: the mean
    difference in units of the stable predictions' spread, and the two-sample KS statistic."""
    difference = float(np.mean(candidate - stable))
    spread = float(np.std(stable))
    shift = abs(difference) / spread if spread > 0 else (0.0 if difference == 0 else math.inf)
    ks = float(ks_2samp(stable, candidate).statistic)
    mean_limit, ks_limit = float(settings["max_mean_shift"]), float(settings["max_ks"])
    return [
        Verdict("mean-shift", shift, mean_limit, shift <= mean_limit),
        Verdict("ks", ks, ks_limit, ks <= ks_limit),
    ]


def compare_versions(
    stable: str, candidate: str, rows: list[dict[str, Any]], settings: dict[str, Any],
    headers: Callable[[], dict[str, str]],
) -> list[Verdict]:  # fmt: skip
    """The model analysis: `rows` to both versions' /predict (`headers()` for each request); a
    version that does not answer them fails the check."""
    answers = []
    for url in (stable, candidate):
        try:
            answers.append(predictions(url, rows, headers()))
        except httpx.HTTPError as err:
            return [Verdict(f"answers from {url}: {err}", None, 0.0, False)]
    return behaviour_verdicts(answers[0], answers[1], settings)


def run_steps(steps: Iterable[int], judge: Callable[[int], list[Verdict]]) -> tuple[int, bool]:
    """Argo's canary with `failureLimit: 0`: each step's weight, then its analysis; the first
    failed check aborts. The last weight reached, and whether the rollout completed."""
    weight = 0
    for weight in steps:
        if not all(verdict.passed for verdict in judge(weight)):
            return weight, False
    return weight, True


def prometheus_query(address: str, promql: str) -> list[float]:
    """An instant query's values (Argo's `result`): one per series of the answer."""
    response = httpx.get(f"{address}/api/v1/query", params={"query": promql}, timeout=30)
    response.raise_for_status()
    body = response.json()
    if body.get("status") != "success" or body["data"]["resultType"] != "vector":
        raise ValueError(f"Prometheus answered {body!r} to {promql}")
    return [float(sample["value"][1]) for sample in body["data"]["result"]]


def predictions(url: str, rows: list[dict[str, Any]], headers: dict[str, str]) -> np.ndarray:
    response = httpx.post(f"{url}/predict", json={"data": {"values": rows}}, headers=headers,
                          timeout=60)  # fmt: skip
    response.raise_for_status()
    return np.asarray(response.json(), dtype=float)


# --- the manifests ---


def _template(name: str, args: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> Any:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": {"name": name}, "spec": {"args": args, "metrics": metrics}}  # fmt: skip


def server_template(settings: dict[str, Any]) -> dict[str, Any]:
    args = [{"name": "namespace"}, {"name": "canary-hash"},
            {"name": "window", "value": str(settings["window"])},
            {"name": "prometheus", "value": PROMETHEUS}]  # fmt: skip
    metrics = [
        {"name": name, "successCondition": CONDITION.format(limit=limit), "failureLimit": 0,
         "provider": {"prometheus": {"address": "{{args.prometheus}}",
                                     "query": SERVER_QUERIES[name]}}}
        for name, limit in limits(settings).items()
    ]  # fmt: skip
    return _template(SERVER_TEMPLATE, args, metrics)  # type: ignore[no-any-return]


def model_template(settings: dict[str, Any]) -> dict[str, Any]:
    command = ["python", "-m", "gitml", "canary", "compare",
               "--stable", f"http://{STABLE_SERVICE}", "--candidate", f"http://{CANARY_SERVICE}",
               "--golden", IMAGE_GOLDEN, "--max-mean-shift", str(settings["max_mean_shift"]),
               "--max-ks", str(settings["max_ks"])]  # fmt: skip
    container = {
        "name": "compare", "image": NAME, "command": command,
        # the smoke checks' token marks these requests synthetic: the monitor leaves them out
        "env": [{"name": "GITML_SYNTHETIC_TOKEN", "valueFrom": {"secretKeyRef": {
                    "name": "gitml-synthetic", "key": "token", "optional": True}}},
                {"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                      "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": LOCKED_DOWN, "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }  # fmt: skip
    pod = {"restartPolicy": "Never", "automountServiceAccountToken": False,
           "imagePullSecrets": [{"name": "ghcr-pull"}], "containers": [container],
           "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]}  # fmt: skip
    job = {"backoffLimit": 0, "activeDeadlineSeconds": 300, "template": {"spec": pod}}
    metric = {"name": "predictions", "failureLimit": 0, "provider": {"job": {"spec": job}}}
    return _template(MODEL_TEMPLATE, [], [metric])  # type: ignore[no-any-return]


def rollout(settings: dict[str, Any]) -> dict[str, Any]:
    analysis = {
        "templates": [{"templateName": SERVER_TEMPLATE}, {"templateName": MODEL_TEMPLATE}],
        "args": [{"name": "namespace",
                  "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                 {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}],
    }  # fmt: skip
    steps: list[dict[str, Any]] = []
    for weight in settings["steps"]:
        steps += [
            {"setWeight": int(weight)},
            {"pause": {"duration": f"{settings['pause_s']}s"}},
            {"analysis": copy.deepcopy(analysis)},
        ]  # a copy: no YAML anchors
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": NAME},
        "spec": {
            # no replicas: the HorizontalPodAutoscaler sets them (hpa-patch.yaml)
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            # the pods are the base Deployment's (its template, image and settings)
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME,
                            "scaleDown": "progressively"},
            "strategy": {"canary": {"stableService": STABLE_SERVICE,
                                    "canaryService": CANARY_SERVICE, "steps": steps}},
        },
    }  # fmt: skip


def manifests(settings: dict[str, Any]) -> dict[str, str]:
    """File name in deploy/k8s/canary -> its text."""
    docs = {"rollout.yaml": rollout(settings), "analysis-server.yaml": server_template(settings),
            "analysis-model.yaml": model_template(settings)}  # fmt: skip
    return {name: HEADER + yaml.safe_dump(doc, sort_keys=False, width=100)
            for name, doc in docs.items()}  # fmt: skip


# --- the CLI ---

app = typer.Typer(add_completion=False, help=__doc__)


def _report(verdicts: list[Verdict]) -> None:
    for v in verdicts:
        typer.echo(f"{'ok  ' if v.passed else 'FAIL'} {v.check}: {v.value} (limit {v.limit})")
    if not all(v.passed for v in verdicts):
        raise typer.Exit(1)


@app.command()
def render(out: Annotated[Path, typer.Option(help="The overlay's folder.")] = CANARY_DIR) -> None:
    """Write the Rollout and the AnalysisTemplates from params.yaml `canary`."""
    for name, text in manifests(load_params("canary")).items():
        (out / name).write_text(text)
        typer.echo(f"canary: wrote {out / name}")


@app.command()
def check(
    prometheus: Annotated[str, typer.Option(help="Prometheus' base URL.")],
    namespace: Annotated[str, typer.Option(help="The Rollout's namespace.")],
    canary_hash: Annotated[str, typer.Option(help="The candidate's pod-template hash.")],
    window: Annotated[str, typer.Option(help="PromQL range ('' = the template's).")] = "",
) -> None:
    """The server analysis, once, as the AnalysisTemplate in deploy/k8s/canary measures it."""
    template = yaml.safe_load((CANARY_DIR / "analysis-server.yaml").read_text())
    args = {"namespace": namespace, "canary-hash": canary_hash, "prometheus": prometheus}
    _report(server_verdicts(template, args | ({"window": window} if window else {}),
                            prometheus_query))  # fmt: skip


@app.command()
def compare(
    stable: Annotated[str, typer.Option(help="The stable version's base URL.")],
    candidate: Annotated[str, typer.Option(help="The candidate's base URL.")],
    golden: Annotated[Path, typer.Option(help="golden.json: the rows both predict.")],
    max_mean_shift: Annotated[float, typer.Option(help="Limit of |mean difference| / std.")],
    max_ks: Annotated[float, typer.Option(help="Limit of the KS statistic.")],
) -> None:
    """The model analysis: the same rows to both versions; exit 1 when they disagree."""
    from gitml.release.smoke import SYNTHETIC_TOKEN_ENV, request_id
    from gitml.serving.guards import SYNTHETIC_HEADER

    rows = json.loads(golden.read_text())["rows"]
    token = os.environ.get(SYNTHETIC_TOKEN_ENV, "")
    synthetic = {SYNTHETIC_HEADER: token} if token else {}
    settings = {"max_mean_shift": max_mean_shift, "max_ks": max_ks}
    _report(compare_versions(stable, candidate, rows, settings, lambda: synthetic | request_id()))


if __name__ == "__main__":
    app()
