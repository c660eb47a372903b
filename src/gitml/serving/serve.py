"""The prediction server: MLEM's FastAPI app (gitml.serving.packaging) plus strict request models,
a health route, Prometheus metrics, the prediction log, a body-size limit and errors that name
the field at fault.

Settings come from the environment (GITML_*), so the same image runs anywhere:
`python -m gitml serve` is the image's entrypoint.
"""

# No `from __future__ import annotations`: FastAPI must see real classes in the handlers.

import argparse
import socket
import sys
from pathlib import Path
from typing import Any, Literal, Optional

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    BaseSettings,
    Extra,
    Field,
    confloat,
    conint,
    conlist,
    create_model,
    validator,
)

from gitml.config import MLEM_MODEL
from gitml.schema import (
    EVENT_TIME,
    EVENT_TIME_FORMAT,
    EVENT_TIME_PATTERN,
    EVENT_YEARS,
    FEATURES,
    Column,
    event_time,
)
from gitml.serving.metrics import MetricsMiddleware, ServerMetrics
from gitml.serving.packaging import PredictHook, build_app, model_hash
from gitml.serving.predlog import PredictionLog


class Settings(BaseSettings):
    model_path: Path = MLEM_MODEL
    model_version: str = ""  # e.g. the GTO version; defaults to the MLEM artifact hash
    host: str = "127.0.0.1"
    port: int = 8080
    # A listening socket inherited from the caller, served instead of host:port: whoever
    # starts the server holds the port from the start, so no other process can take it between
    # choosing a spare port and binding it (gitml.release.deploy's candidates, the tests' servers).
    fd: Optional[int] = None  # noqa: UP045 (pydantic 1 reads it at runtime)
    max_rows: int = 1000
    max_body_bytes: int = 1 << 20  # ~1000 rows of ~170 bytes, with headroom
    # Where every answered row is appended (gitml.serving.predlog); unset: no prediction log.
    prediction_log_dir: Optional[Path] = None  # noqa: UP045 (pydantic 1 reads it at runtime)
    instance: str = ""  # the log files' name prefix; default the host (a pod's) name

    class Config:
        env_prefix = "GITML_"


def _field_type(spec: Column) -> Any:
    bounds = {
        key: value for key, value in (("ge", spec.low), ("le", spec.high)) if value is not None
    }
    if spec.kind == "int":
        return conint(**{key: int(value) for key, value in bounds.items()})  # type: ignore[arg-type]
    if spec.kind == "float":
        return confloat(allow_inf_nan=False, **bounds)  # type: ignore[arg-type]
    return Literal[spec.categories]  # type: ignore[valid-type]


def _json_integer(value: Any) -> Any:
    # JSON Schema counts 2.0 as an integer; pydantic 1 alone would also take 3.7, "3" and true.
    if isinstance(value, str | bool) or (isinstance(value, float) and not value.is_integer()):
        raise TypeError("must be a JSON integer")
    return int(value) if isinstance(value, float) else value


def _json_number(value: Any) -> Any:
    if isinstance(value, str | bool):  # pydantic 1 would coerce "0.5" and true
        raise TypeError("must be a JSON number")
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


def request_model(max_rows: int) -> type[BaseModel]:
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
        __config__=type(
            "Config", (), {"extra": Extra.forbid, "schema_extra": _nullable_in_openapi}
        ),
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
    strict = type("Config", (), {"extra": Extra.forbid})
    frame = create_model(
        "PredictFrame",
        __config__=strict,
        values=(conlist(row, min_items=1, max_items=max_rows), ...),
    )
    return create_model("PredictRequest", __config__=strict, data=(frame, ...))  # type: ignore[no-any-return]


class BodySizeLimit:
    """ASGI middleware: 413 for a declared or streamed body over the limit, before parsing it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # type: ignore[no-any-return]
        detail = f"request body larger than {self.max_bytes} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            response = JSONResponse({"error": detail, "detail": detail}, status_code=413)
            return await response(scope, receive, send)  # type: ignore[no-any-return]
        seen = 0

        async def capped_receive() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(status_code=413, detail=detail)
            return message

        return await self.app(scope, capped_receive, send)  # type: ignore[no-any-return]


def _where(error: Any) -> str:
    if error.get("type") == "value_error.jsondecode":
        return "body (malformed JSON)"
    return ".".join(str(part) for part in error["loc"] if part != "body") or "body"


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    summary = "; ".join(f"{_where(e)}: {e['msg']}" for e in errors[:10])
    return JSONResponse(
        status_code=422, content=jsonable_encoder({"error": summary, "detail": errors})
    )


def prediction_hook(log: PredictionLog | None, metrics: ServerMetrics) -> PredictHook:
    """Count every predicted row and log it; a failed log write is counted and reported, but
    the caller still gets its answer (the GitmlPredictionLogFailing alert says so).
    """

    def on_predict(request_id: str, rows: list[dict[str, Any]], predictions: list[float]) -> None:
        metrics.predictions.inc(len(rows))
        if log is None:
            return
        try:
            log.append(request_id, rows, predictions)
        except OSError as err:
            metrics.log_errors.inc()
            print(f"prediction log: {err}", file=sys.stderr, flush=True)

    return on_predict


def create_app(settings: Settings) -> FastAPI:
    """The served app: MLEM's routes (/predict, /interface.json, /docs, /openapi.json) + ours."""
    version = settings.model_version or model_hash(settings.model_path)
    metrics = ServerMetrics(version)
    log = None
    if settings.prediction_log_dir is not None:
        log = PredictionLog(settings.prediction_log_dir, version, settings.instance)
    app, _ = build_app(
        settings.model_path, request_model(settings.max_rows), prediction_hook(log, metrics)
    )
    app.title = "gitml model server"
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts 413s too
    app.add_api_route("/metrics", metrics.endpoint, include_in_schema=False)  # type: ignore[arg-type]
    for route in app.routes:
        if getattr(route, "path", None) == "/predict":
            route.responses[413] = {"description": "Request body too large"}  # type: ignore[attr-defined]
            route.responses[400] = {"description": "Request body is not UTF-8 JSON"}  # type: ignore[attr-defined]

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness and readiness: the model is loaded and has answered a warm-up prediction."""
        return {"status": "ok", "model_version": version}

    return app


def main() -> None:
    settings = Settings()
    app = create_app(settings)
    if settings.fd is None:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    else:
        listener = socket.socket(fileno=settings.fd)  # family and type read from the socket
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])


if __name__ == "__main__":
    # --help prints this module's docstring; its settings come from the environment
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
