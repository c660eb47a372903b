"""Service health as Prometheus metrics (prometheus-client), served on GET /metrics.

Names match the alert rules in deploy/prometheus/alerts.yml; the Kubernetes pods carry the
`prometheus.io/scrape` annotations that point a Prometheus at this endpoint.

With several worker processes (GITML_WORKERS), prometheus-client's multiprocess mode: the
supervisor sets PROMETHEUS_MULTIPROC_DIR before any worker imports prometheus-client, each
worker writes its values to files there, and whichever worker answers a scrape sums them all.
"""

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

from gitml.serving.guards import delivered_status
from gitml.serving.workers import MULTIPROC_ENV

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    """The server's metrics in their own registry (one per app, so tests never collide)."""

    def __init__(self, model_version: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gitml_requests", "HTTP requests the app answered, by the status the client could"
            " receive (499: it left first); refusals before the app: gitml_refusals_total.",
            ["route", "method", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "gitml_request_duration_seconds", "Time to answer an HTTP request.",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.refusals = Counter(
            "gitml_refusals",
            "Requests refused by the server's limits and HTTP checks (malformed, head_too_large,"
            " head_timeout, body_timeout, body_too_large, overload, connections), and idle"
            " connections closed to make room (idle_closed).",
            ["listener", "reason"], registry=self.registry,
        )  # fmt: skip
        self.predictions = Counter("gitml_predictions", "Rows predicted.", registry=self.registry)
        self.log_errors = Counter(
            "gitml_prediction_log_errors", "Prediction-log writes that failed.",
            registry=self.registry,
        )  # fmt: skip
        # max: one series whatever the number of workers (ignored in a single process)
        info = Gauge("gitml_model_info", "The model version served.", ["version"],
                     registry=self.registry, multiprocess_mode="max")  # fmt: skip
        info.labels(version=model_version).set(1)
        self.shared_dir = os.environ.get(MULTIPROC_ENV) or None

    def endpoint(self, request: Request) -> Response:
        registry = self.registry
        if self.shared_dir is not None:  # every worker's values, not only this one's
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.shared_dir)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """ASGI middleware: count and time every HTTP request by route template and the status the
    client could receive (gitml.serving.guards.delivered_status: 499 where it left first), and
    count the refusals of the limits around the app by reason (`listener`: which port)."""

    def __init__(self, app: Any, metrics: ServerMetrics, listener: str = "api") -> None:
        self.app, self.metrics, self.listener = app, metrics, listener
        self.paths: set[str] | None = None  # the app's route templates, read on first use

    def _route(self, scope: Any) -> str:
        """The matched route's template, not the raw path: unknown paths share one label. A
        request refused before routing (a 503) still gets its route when its path is one."""
        matched = getattr(scope.get("route"), "path", None)
        if matched:
            return str(matched)
        if self.paths is None:
            routes = getattr(scope.get("app"), "routes", [])
            self.paths = {str(getattr(route, "path", "")) for route in routes}
        return scope["path"] if scope["path"] in self.paths else "unmatched"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # type: ignore[no-any-return]
        started, status = time.perf_counter(), 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            answered = delivered_status(scope, status)
            if answered is not None:
                route, method = self._route(scope), scope["method"]
                self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)
                self.metrics.requests.labels(route, method, str(answered)).inc()
                refused = scope.get("state", {}).get("refused")
                if refused is not None:
                    self.metrics.refusals.labels(self.listener, refused).inc()
