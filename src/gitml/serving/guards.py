"""The limits a server facing the internet needs around the FastAPI app (those below it, in the
HTTP protocol, are gitml.serving.protocol's): requests in progress, a bounded body and a body
deadline, JSON-only bodies, request ids and a bounded JSON access log that also records every
refusal the protocol makes.

Everything a client sends may be hostile: sizes, times and counts are bounded, and anything
echoed back or logged is truncated and escaped first.
"""

import asyncio
import hmac
import json
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any, TextIO

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from gitml.serving.jsonlog import now, write_line
from gitml.serving.protocol import Events, Refusal

REQUEST_ID_HEADER = "X-Request-ID"  # the caller's id for a request, or one made up here
SYNTHETIC_HEADER = "X-Gitml-Synthetic"  # the shared secret that marks a request synthetic
ID_KEY = REQUEST_ID_HEADER.lower().encode()
MAX_REQUEST_ID = 128  # characters kept of a caller's request id
MAX_LOGGED_PATH = 200  # characters of a path the access log keeps
JSON_TYPES = ("application/json",)  # and any application/*+json


def safe_text(value: Any, limit: int) -> str:
    """`value` as text of at most `limit` characters that any JSON encoder takes: a lone
    surrogate (which UTF-8 cannot carry) becomes its escape, e.g. the six characters \\udc80."""
    text = value if isinstance(value, str) else repr(value)
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


class StrictJSONResponse(JSONResponse):
    """A JSON response that is always valid JSON: ASCII only, and NaN or infinity is a bug
    (ValueError) rather than a body no strict parser reads."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode()


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, detail: Any = None
) -> Any:
    """`{"error": message, "detail": detail}`, every error's shape (detail: the message)."""
    body = {"error": message, "detail": message if detail is None else detail}
    return StrictJSONResponse(body, status, headers=headers)


def _is_json(kind: str) -> bool:
    return kind in JSON_TYPES or (kind.startswith("application/") and kind.endswith("+json"))


def first(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of a header, as Starlette's `Headers.get` reads it (a dict of the
    list would keep the last): every layer judges a request by the same field."""
    return next((value for key, value in headers if key == name), None)


def refuse(scope: Any, reason: str) -> None:
    """Mark a request as refused by a limit (`reason`: the metrics' label), for the access log
    and the metrics."""
    scope.setdefault("state", {})["refused"] = reason


def delivered_status(scope: Any, status: int) -> int | None:
    """The status the client could receive: `status`, 499 where the client left before the
    answer was written (nginx's "client closed request"), None where the protocol refused the
    request itself (its own log line and count say so). gitml.serving.protocol puts the
    request's cycle in the scope; under any other server every answer counts as delivered."""
    cycle = scope.get("extensions", {}).get("gitml.cycle")
    if cycle is None:
        return status
    if cycle.refused:
        return None
    return 499 if cycle.disconnected else status


class InFlightLimit:
    """ASGI middleware: at most `limit` requests in progress in this process; more get a 503 at
    once, with Retry-After, their bodies unread. It counts work, not sockets: idle keep-alive
    connections cost nothing here (gitml.serving.protocol bounds those). Each request in
    progress may hold a body of up to GITML_MAX_BODY_BYTES, so the limit also bounds memory.
    `exempt` paths (the health check) are never refused: a busy server is not a dead one, and
    a failed probe would restart or unroute a pod for being loaded, moving its load onto the
    others."""

    def __init__(self, app: Any, limit: int, exempt: Iterable[str] = ()) -> None:
        self.app, self.limit, self.exempt = app, limit, frozenset(exempt)
        self.in_flight = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            return await self.app(scope, receive, send)  # type: ignore[no-any-return]
        if self.in_flight >= self.limit:
            refuse(scope, "overload")
            message = f"server busy: {self.limit} requests in progress; retry later"
            answer = error_response(503, message, headers={"Retry-After": "1"})
            return await answer(scope, receive, send)  # type: ignore[no-any-return]
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class BodyGuard:
    """ASGI middleware: a body must be JSON (415), at most `max_bytes` long, declared or
    streamed (413), and arrive within `timeout` seconds (408), all before it is parsed."""

    def __init__(self, app: Any, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # type: ignore[no-any-return]
        headers = scope["headers"]
        too_large = f"request body larger than {self.max_bytes} bytes"
        # HTTP allows whitespace around a field's value (RFC 9110 5.5): "159  " is 159
        length = (first(headers, b"content-length") or b"0").strip(b" \t")
        if not length.isdigit():  # the HTTP parser refuses these first; other servers may not
            message = "content-length must be a decimal number of bytes"
            return await error_response(400, message)(scope, receive, send)  # type: ignore[no-any-return]
        if int(length) > self.max_bytes:
            refuse(scope, "body_too_large")
            return await error_response(413, too_large)(scope, receive, send)  # type: ignore[no-any-return]
        kind = (first(headers, b"content-type") or b"").split(b";")[0].strip()
        kind_text = kind.decode("latin-1").lower()
        if kind and scope["method"] not in ("GET", "HEAD", "OPTIONS") and not _is_json(kind_text):
            # FastAPI would hand any other body to the model as bytes: "not a valid dict"
            message = f"content-type must be application/json, not {safe_text(kind_text, 100)!r}"
            return await error_response(415, message)(scope, receive, send)  # type: ignore[no-any-return]
        seen, done = 0, False
        deadline = time.monotonic() + self.timeout

        async def guarded_receive() -> Any:
            nonlocal seen, done
            if done:  # the body is in: what follows is a disconnect, never late
                return await receive()
            try:
                # a floor: a deadline already past fails even a message that is already there;
                # asyncio.timeout, not wait_for, which (before Python 3.12) makes a task per call
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.05)):
                    message = await receive()
            except TimeoutError:
                refuse(scope, "body_timeout")
                seconds = f"{self.timeout:g}"
                raise HTTPException(408, f"request body not received within {seconds} s") from None
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                refuse(scope, "body_too_large")
                raise HTTPException(status_code=413, detail=too_large)
            done = not message.get("more_body", False)
            return message

        return await self.app(scope, guarded_receive, send)  # type: ignore[no-any-return]


class AccessLog:
    """ASGI middleware: gives every request an id (the caller's `X-Request-ID`, capped, or a
    new one), echoed on every response and kept in `scope["state"]["request_id"]`; marks it
    synthetic (`scope["state"]["synthetic"]`) only when it carries the configured shared secret;
    and writes one JSON line per request to `stream`: time, client, method, path, the status
    the client could receive (`delivered_status`), duration, request id and byte counts, and
    for a refusal its reason; never a body, every text field truncated and escaped.
    """

    def __init__(
        self, app: Any, enabled: bool, synthetic_token: str = "", stream: TextIO | None = None
    ) -> None:
        self.app, self.enabled = app, enabled
        self.token = synthetic_token.encode()
        self.stream = stream or sys.stdout

    def _synthetic(self, headers: list[tuple[bytes, bytes]]) -> bool:
        sent = first(headers, SYNTHETIC_HEADER.lower().encode())
        # compare_digest: the time taken says nothing about how much of a guess was right
        return bool(self.token) and sent is not None and hmac.compare_digest(sent, self.token)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # type: ignore[no-any-return]
        headers = scope["headers"]
        sent_id = (first(headers, ID_KEY) or b"").decode("latin-1")
        request_id = sent_id[:MAX_REQUEST_ID] or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"], state["synthetic"] = request_id, self._synthetic(headers)
        started, status, bytes_in, bytes_out = time.perf_counter(), 500, 0, 0

        async def counted_receive() -> Any:
            nonlocal bytes_in
            message = await receive()
            bytes_in += len(message.get("body", b""))
            return message

        async def tagged_send(message: Any) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = message["status"]
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != ID_KEY]
                message = {**message, "headers": [*kept, (ID_KEY, request_id.encode("latin-1"))]}
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counted_receive, tagged_send)
        finally:
            answered = delivered_status(scope, status)
            if self.enabled and answered is not None:
                self.write({
                    "ts": now(),
                    "client": (scope.get("client") or ("",))[0],
                    "method": safe_text(scope["method"], 16),
                    "path": safe_text(scope["path"], MAX_LOGGED_PATH),
                    "status": answered,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "request_id": request_id,
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out if answered == status else 0,
                    **({"synthetic": True} if state["synthetic"] else {}),
                    **({"refused": state["refused"]} if "refused" in state else {}),
                })  # fmt: skip

    def write(self, record: dict[str, Any]) -> None:
        write_line(self.stream, record)


class RefusalLog(Events):
    """The protocol's refusals (gitml.serving.protocol), before any app saw the request:
    counted in `metrics` (gitml_refusals_total, labelled with the listener and the reason) and,
    when `log`, written to the access log as the app's requests are, with a `refused` field."""

    def __init__(
        self, metrics: Any, listener: str, log: bool, stream: TextIO | None = None
    ) -> None:
        self.metrics, self.listener, self.log, self.stream = metrics, listener, log, stream

    def refused(self, refusal: Refusal) -> None:
        self.metrics.refusals.labels(self.listener, refusal.reason).inc()
        if self.log:
            write_line(self.stream or sys.stdout, {
                "ts": now(),
                "client": refusal.client,
                "method": safe_text(refusal.method, 16),
                "path": safe_text(refusal.path, MAX_LOGGED_PATH),
                "status": refusal.status,
                "duration_ms": round(refusal.duration * 1000, 1),
                "request_id": refusal.request_id,
                "bytes_in": 0,
                "bytes_out": refusal.bytes_out,
                "refused": refusal.reason,
            })  # fmt: skip

    def closed_idle(self) -> None:
        self.metrics.refusals.labels(self.listener, "idle_closed").inc()
