"""The prediction server: MLEM's FastAPI app (gitml.serving.packaging) plus strict request models,
a health route, Prometheus metrics on a port of their own, the prediction log, the HTTP/1.1
hygiene and limits of gitml.serving.protocol (head size, read deadlines, pipelining, upgrades,
connections) and gitml.serving.guards (requests in progress, body size), a JSON access log that
records every refusal, and errors that name the field at fault.

Settings come from the environment (GITML_*, gitml.serving.settings), so the same image runs
anywhere: `python -m gitml serve` (gitml.serving.workers, which starts GITML_WORKERS processes
of this module) is the image's entrypoint.
"""

# No `from __future__ import annotations`: FastAPI must see real classes in the handlers.

import argparse
import asyncio
import contextlib
import gc
import logging
import logging.config
import math
import resource
from typing import Any, Literal, Optional

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import (
    BaseModel,
    Extra,
    Field,
    PydanticValueError,
    ValidationError,
    confloat,
    conint,
    conlist,
    create_model,
    root_validator,
    validator,
)
from pydantic.error_wrappers import ErrorWrapper
from pydantic.errors import DictError, ExtraError, ListMaxLengthError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from gitml.schema import (
    EVENT_TIME,
    EVENT_TIME_FORMAT,
    EVENT_TIME_PATTERN,
    EVENT_YEARS,
    FEATURES,
    Column,
    event_time,
)
from gitml.serving.guards import (
    AccessLog,
    BodyGuard,
    InFlightLimit,
    RefusalLog,
    error_response,
    safe_text,
)
from gitml.serving.jsonlog import LOG_CONFIG, say
from gitml.serving.metrics import MetricsMiddleware, ServerMetrics
from gitml.serving.packaging import UNPARSED, PredictHook, build_app, model_hash
from gitml.serving.predlog import PredictionLog
from gitml.serving.protocol import guarded_protocol
from gitml.serving.settings import Settings
from gitml.serving.workers import listener

HEALTH = "/healthz"
# The metrics port serves a few scrapers (a Prometheus pair), never the public.
METRICS_CONNECTIONS, METRICS_IN_FLIGHT = 64, 4
FD_RESERVE = 64  # descriptors kept for the model, the logs and the listening sockets


def _field_type(spec: Column) -> Any:
    bounds = {
        key: value for key, value in (("ge", spec.low), ("le", spec.high)) if value is not None
    }
    if spec.kind == "int":
        return conint(**{key: int(value) for key, value in bounds.items()})  # type: ignore[arg-type]
    if spec.kind == "float":
        return confloat(allow_inf_nan=False, **bounds)  # type: ignore[arg-type]
    return Literal[spec.categories]  # type: ignore[valid-type]


INT64 = 1 << 63  # what the model's integer columns hold


def _json_integer(value: Any) -> Any:
    # JSON Schema counts 2.0 as an integer; pydantic 1 alone would also take 3.7, "3" and true.
    if isinstance(value, str | bool) or (isinstance(value, float) and not value.is_integer()):
        raise TypeError("must be a JSON integer")
    number = int(value) if isinstance(value, float) else value
    if isinstance(number, int) and not -INT64 <= number < INT64:
        raise ValueError("must be a JSON integer of at most 64 bits")
    return number


def _json_number(value: Any) -> Any:
    if isinstance(value, str | bool):  # pydantic 1 would coerce "0.5" and true
        raise TypeError("must be a JSON number")
    if isinstance(value, int):
        try:
            value = float(value)
        except OverflowError:  # pydantic lets it through: a 500
            raise ValueError("must be a finite JSON number") from None
    # Python's json reads NaN, Infinity and 1e400 (inf); no bound check would say why
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite JSON number")
    return value


def _event_time(value: Any) -> Any:
    return None if value is None else event_time(value)


def _nullable_in_openapi(schema: dict[str, Any], model: Any) -> None:
    # pydantic 1 drops `null` from Optional fields; FastAPI 0.99 emits OpenAPI 3.1.
    nullable = [name for name, spec in FEATURES.items() if spec.nullable] + [EVENT_TIME]
    for name in nullable:
        field = schema["properties"][name]
        schema["properties"][name] = {
            "title": field.pop("title", name),
            **({"description": field.pop("description")} if "description" in field else {}),
            "anyOf": [field, {"type": "null"}],
        }


class TooManyErrors(PydanticValueError):
    code = "too_many_errors"
    code_type = "value_error.too_many_errors"  # its `type` in pydantic's error list
    msg_template = "checking stopped after {errors} errors, before row {row} of {rows}"


def _known_keys(allowed: set[str], max_errors: int) -> Any:
    """A pre root validator: unknown keys are errors, at most `max_errors` of them, found
    before pydantic would make one error object per key (a million of them fit in 8 MB)."""

    def check(cls: Any, values: Any) -> Any:
        if isinstance(values, dict):
            extra = [key for key in values if key not in allowed][:max_errors]
            if extra:
                raise ValidationError([ErrorWrapper(ExtraError(), loc=key) for key in extra], cls)
        return values

    return root_validator(pre=True, allow_reuse=True)(check)


# A model read only from a JSON object: pydantic 1 would also build one from anything `dict()`
# takes, such as a list of [key, value] pairs. (No docstring: OpenAPI would show it.)
class _JsonObject(BaseModel):
    @classmethod
    def validate(cls: Any, value: Any) -> Any:
        if not isinstance(value, dict | cls):
            raise DictError()
        return super().validate(value)


def _object_model(**config: Any) -> type[BaseModel]:
    """A base for create_model: a JSON object with no keys but its fields."""
    settings = type("Config", (), {"extra": Extra.forbid, **config})
    return type("JsonObject", (_JsonObject,), {"Config": settings})


def _checked_rows(row: type[BaseModel], max_rows: int, max_errors: int) -> Any:
    """A pre validator of the row list: the length first, then each row in turn, stopping after
    `max_errors` errors. pydantic alone checks every row and key whatever it has found, on the
    event loop: 1000 rows of 80 unknown keys took 5 s and made a 9 MB answer."""
    allowed = {*FEATURES, EVENT_TIME}

    def check(cls: Any, values: Any) -> Any:
        if not isinstance(values, list):
            return values  # pydantic says "value is not a valid list"
        if len(values) > max_rows:
            raise ListMaxLengthError(limit_value=max_rows)
        checked, found, errors = [], [], 0
        for number, value in enumerate(values):
            if errors >= max_errors:
                stop = TooManyErrors(errors=errors, row=number, rows=len(values))
                found.append(ErrorWrapper(stop, loc=()))
                break
            extra = [key for key in value if key not in allowed] if isinstance(value, dict) else []
            if extra:
                wrapped = [ErrorWrapper(ExtraError(), loc=(number, k)) for k in extra]
                found += wrapped[: max_errors - errors]
                errors += len(wrapped)
                continue
            try:
                checked.append(row.validate(value))
            except (ValueError, TypeError) as err:  # ValidationError, or pydantic's DictError
                found.append(ErrorWrapper(err, loc=(number,)))
                errors += len(err.raw_errors) if isinstance(err, ValidationError) else 1
        if found:
            raise ValidationError(found, row)
        return checked  # valid rows: pydantic's own pass only copies them

    return validator("values", pre=True, allow_reuse=True)(check)


def request_model(max_rows: int, max_errors: int = 20) -> type[BaseModel]:
    """`{"data": {"values": [row, ...]}}` (MLEM's wire format), every field of a row checked."""
    fields: dict[str, Any] = {}
    for name, spec in FEATURES.items():
        kind = _field_type(spec)
        # a nullable field stays required: the key must be sent, its value may be null
        fields[name] = (
            Optional[kind] if spec.nullable else kind,  # noqa: UP045 (a runtime type)
            Field(..., example=spec.example),
        )
    fields[EVENT_TIME] = (
        Optional[str],  # noqa: UP045
        Field(
            None,
            format="date-time",
            pattern=EVENT_TIME_PATTERN,
            description=f"The hour the prediction is about (optional): {EVENT_TIME_FORMAT}, "
            f"in the years {EVENT_YEARS[0]} to {EVENT_YEARS[1]}",
        ),
    )
    ints = [n for n, s in FEATURES.items() if s.kind == "int"]
    floats = [n for n, s in FEATURES.items() if s.kind == "float"]
    kinds = (("ints", ints, _json_integer), ("floats", floats, _json_number))
    row = create_model(  # type: ignore[call-overload]
        "PredictRow",
        __base__=_object_model(schema_extra=_nullable_in_openapi),
        __validators__={  # pydantic refuses a validator of no fields: only the kinds present
            **{
                name: validator(*columns, pre=True, allow_reuse=True)(check)
                for name, columns, check in kinds
                if columns
            },
            "event_time": validator(EVENT_TIME, pre=True, allow_reuse=True)(_event_time),
        },
        **fields,
    )
    frame = create_model(
        "PredictFrame",
        __base__=_object_model(),
        __validators__={
            "keys": _known_keys({"values"}, max_errors),
            "rows": _checked_rows(row, max_rows, max_errors),
        },
        values=(conlist(row, min_items=1, max_items=max_rows), ...),
    )
    return create_model(  # type: ignore[no-any-return]
        "PredictRequest",
        __base__=_object_model(),
        __validators__={"keys": _known_keys({"data"}, max_errors)},
        data=(frame, ...),
    )


def _where(error: Any) -> str:
    if error.get("type") == "value_error.jsondecode":
        return "body (malformed JSON)"
    parts = [_part(part) for part in error["loc"] if part not in ("body", "__root__")]
    return ".".join(str(part) for part in parts) or "body"


def _part(part: Any) -> Any:
    return part if isinstance(part, int) else safe_text(part, 64)  # a key sent may be anything


def validation_handler(max_errors: int) -> Any:
    """422s that stay small and are always valid JSON: at most `max_errors` errors, each its
    location, message and type, and a last one saying what was cut. Never the values or keys
    as sent (pydantic's `ctx` carries them: NaN, a lone surrogate, the whole malformed body),
    only escaped and truncated location names."""

    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        errors = exc.errors()
        stops = [e for e in errors if e["type"] == "value_error.too_many_errors"]
        found = [e for e in errors if e["type"] != "value_error.too_many_errors"]
        shown = [
            {
                "loc": [_part(part) for part in error["loc"]],
                "msg": safe_text(error["msg"], 300),
                "type": safe_text(error["type"], 64),
            }
            for error in found[:max_errors]
        ]
        hidden = len(found) - len(shown)
        if stops or hidden:  # last, whatever was cut: how much more there was, or may be
            said = [stops[0]["msg"]] if stops else []
            said += [f"{hidden} more errors not listed"] if hidden else []
            loc = [_part(part) for part in stops[0]["loc"]] if stops else ["body"]
            shown.append({"loc": loc, "msg": "; ".join(said), "type": TooManyErrors.code_type})
        summary = "; ".join(f"{_where(e)}: {e['msg']}" for e in shown[:10])
        return error_response(422, summary, detail=shown)

    return validation_error


async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
    """Every other error as {"error", "detail"}, as the 422s and the limits' answers are."""
    detail = str(exc.detail)
    if exc.status_code == 400 and detail == UNPARSED:
        detail = "body: not UTF-8 JSON, or numbers or nesting beyond what JSON parsing allows"
    return error_response(exc.status_code, safe_text(detail, 300), getattr(exc, "headers", None))


def prediction_log(settings: Settings, version: str) -> PredictionLog:
    """The log this process appends to; where it is shipped (gitml.serving.shipping), its
    files roll every GITML_PREDICTION_LOG_ROTATE_S and what waits unshipped is bounded."""
    assert settings.prediction_log_dir is not None
    if not settings.prediction_log_url:  # the files stay here: a file per day, no bound
        return PredictionLog(settings.prediction_log_dir, version, settings.instance)
    log = PredictionLog(settings.prediction_log_dir, version, settings.instance,
                        settings.prediction_log_rotate_s,
                        settings.prediction_log_spool_max_bytes)  # fmt: skip
    log.rotate_in_background()
    return log


def prediction_hook(log: PredictionLog | None, metrics: ServerMetrics) -> PredictHook:
    """Count every predicted row and log it under the request's id (AccessLog gives every
    request one), marked synthetic where AccessLog found the shared secret; a failed log write
    is counted and reported, but the caller still gets its answer (the GitmlPredictionLogFailing
    alert says so).
    """

    def on_predict(request: Request, rows: list[dict[str, Any]], predictions: list[float]) -> None:
        metrics.predictions.inc(len(rows))
        if log is None:
            return
        state = request.scope.get("state", {})
        try:
            log.append(state["request_id"], rows, predictions, synthetic=state["synthetic"])
        except OSError as err:
            metrics.log_errors.inc()
            say(f"prediction log: {err}", "error")

    return on_predict


# Browser pages (their scripts and styles from a CDN) and MLEM's description of the model
# (its version, the dtypes): for development, not for the public port.
DOCS_ROUTES = {"/docs", "/docs/oauth2-redirect", "/redoc", "/interface.json"}


def create_app(settings: Settings) -> FastAPI:
    """The served app: MLEM's /predict and /openapi.json, our /healthz, and with
    `settings.docs` /docs, /redoc and /interface.json. `app.state.metrics`: its metrics, which
    `metrics_app` serves."""
    version = settings.model_version or model_hash(settings.model_path)
    metrics = ServerMetrics(version)
    log = None
    if settings.prediction_log_dir is not None:
        log = prediction_log(settings, version)
    model = request_model(settings.max_rows, settings.max_errors)
    hook = prediction_hook(log, metrics)
    app, _ = build_app(settings.model_path, model, hook, settings.batch_rows, settings.compiled)
    app.title = "gitml model server"
    app.state.metrics = metrics
    # Starlette would answer /predict/ with a 307 to http://<the Host header sent>/predict
    app.router.redirect_slashes = False
    if not settings.docs:
        app.router.routes = [r for r in app.routes if getattr(r, "path", "") not in DOCS_ROUTES]
        app.docs_url = app.redoc_url = None
    app.add_exception_handler(RequestValidationError, validation_handler(settings.max_errors))
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(
        BodyGuard, max_bytes=settings.max_body_bytes, timeout=settings.read_timeout_s
    )
    app.add_middleware(InFlightLimit, limit=settings.limit_concurrency, exempt=[HEALTH])
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # counts the refusals above too
    app.add_middleware(  # outermost: every request gets an id and a line
        AccessLog,
        enabled=settings.access_log,
        synthetic_token=settings.synthetic_token.get_secret_value(),
    )
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path == "/predict":  # the documented one
            route.responses.update({
                400: {"description": "Request body is not UTF-8 JSON"},
                408: {"description": "Request body not received in time"},
                413: {"description": "Request body too large"},
                415: {"description": "Request body is not JSON"},
                503: {"description": "Too many requests in progress: retry (Retry-After)"},
            })  # fmt: skip

    if log is not None:  # after the last request: the open file is closed, ready to ship
        app.add_event_handler("shutdown", log.close)

    @app.get(HEALTH, tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness and readiness: the model is loaded and has answered a warm-up prediction."""
        return {"status": "ok", "model_version": version}

    return app


def metrics_app(metrics: ServerMetrics, access_log: bool = True) -> Any:
    """GET /metrics alone, for the metrics port, with its own limit on requests in progress;
    its requests are logged and counted as the API's are (listener "metrics")."""
    app = Starlette(routes=[Route("/metrics", metrics.endpoint)])
    app.router.redirect_slashes = False
    app.add_middleware(InFlightLimit, limit=METRICS_IN_FLIGHT)
    app.add_middleware(MetricsMiddleware, metrics=metrics, listener="metrics")
    app.add_middleware(AccessLog, enabled=access_log)
    return app


class _Sidecar(uvicorn.Server):
    """A second server in the same event loop: the first one handles the signals."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


def connection_budget(wanted: int, reserved: int) -> int:
    """`wanted` connections, or fewer where the process's descriptor limit (RLIMIT_NOFILE)
    would run out first: an accept that fails for want of a descriptor stalls every client."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = soft - reserved - FD_RESERVE if soft != resource.RLIM_INFINITY else wanted
    if budget < wanted:
        say(f"GITML_MAX_CONNECTIONS={wanted} lowered to {budget}: the descriptor limit is {soft}",
            "warning")  # fmt: skip
    return max(1, min(wanted, budget))


def _config(
    app: Any, settings: Settings, metrics: ServerMetrics, listener: str, connections: int
) -> uvicorn.Config:
    events = RefusalLog(metrics, listener, settings.access_log)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=LOG_CONFIG,
        log_level="warning",
        access_log=False,  # AccessLog writes one JSON line instead
        server_header=False,  # what runs here is nobody's business
        http=guarded_protocol(
            settings.max_header_bytes, settings.read_timeout_s, connections, events
        ),
        ws="none",  # no websocket route: an Upgrade is ignored (gitml.serving.protocol)
        timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]
    )


async def serve(settings: Settings, app: FastAPI) -> None:
    """Serve `app`, and its metrics on the metrics port when there is one, until a signal."""
    metrics = app.state.metrics
    with_metrics = settings.metrics_fd is not None or bool(settings.metrics_port)
    reserved = METRICS_CONNECTIONS if with_metrics else 0
    budget = connection_budget(settings.max_connections, reserved)
    api = uvicorn.Server(_config(app, settings, metrics, "api", budget))
    sockets = [listener(settings.fd, settings.host, settings.port)]
    if not with_metrics:
        return await api.serve(sockets=sockets)
    scraped = listener(settings.metrics_fd, settings.host, settings.metrics_port)
    side = metrics_app(metrics, settings.access_log)
    sidecar = _Sidecar(_config(side, settings, metrics, "metrics", METRICS_CONNECTIONS))
    side_task = asyncio.create_task(sidecar.serve(sockets=[scraped]))
    try:
        await api.serve(sockets=sockets)
    finally:
        sidecar.should_exit = True
        await side_task


def main(settings: Settings | None = None) -> None:
    """Serve in this process (gitml.serving.workers starts several of these)."""
    settings = settings or Settings()
    # from the start, every library's log record and warning is a JSON line too
    logging.config.dictConfig(LOG_CONFIG)
    logging.captureWarnings(True)
    app = create_app(settings)
    # What start-up made (~230k objects: FastAPI, MLEM, pandas, scikit-learn, the model) lives
    # as long as the process: out of the collector's sight, or every full collection walks it,
    # a pause of ~170 ms in the middle of some request (the open-loop benchmark's tail).
    gc.collect()
    gc.freeze()
    loop_factory = uvicorn.Config(app).get_loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings, app))


if __name__ == "__main__":
    # --help prints this module's docstring; its settings come from the environment
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
