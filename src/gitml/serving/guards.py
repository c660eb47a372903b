"""The limits a server facing the internet needs, below and around the FastAPI app: a bounded
request head and a read deadline at the HTTP protocol, a bounded body and a body deadline,
JSON-only bodies, request ids and a bounded JSON access log.

Everything a client sends may be hostile: sizes, times and counts are bounded, and anything
echoed back or logged is truncated and escaped first.
"""

import asyncio
import hmac
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


def _refusal(status: int, reason: bytes, message: str) -> bytes:
    """A whole HTTP/1.1 response written straight to the socket, before any app runs."""
    body = json.dumps({"error": message, "detail": message}).encode()
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, reason),
        b"content-type: application/json\r\n",
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body),
        body,
    ])  # fmt: skip


class _HeadTooLarge(Exception):
    pass


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with two limits it lacks (its h11 protocol has only the
    first): a request head (request line and headers) over `max_head_bytes` is a 431, and a
    request whose head and body have not arrived within `read_timeout` seconds of its first
    byte (or of the connection, for a client that sends nothing) is cut off: a 408 while the
    head is incomplete, the app's own 408 (BodyGuard) once it waits on the body. Without them
    one client holds memory and a connection slot for as long as it likes.

    Configure with `guarded_protocol`, which sets the class attributes.
    """

    max_head_bytes = 16 * 1024
    read_timeout = 10.0
    # told (status, client address) of each request refused here, before any app saw it
    on_refused: Callable[[int, str], None] | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._timer: Any = None
        self._too_large = False
        self._start_head()
        self._arm()

    def _start_head(self) -> None:
        self._in_head, self._head_bytes, self._head_parsed = True, 0, 0

    def _arm(self, delay: float | None = None) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(delay or self.read_timeout, self._on_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            seconds = f"{self.read_timeout:g}"
            message = f"request head not received within {seconds} s"
            self._refuse(408, b"Request Timeout", message)
        elif self.cycle is not None and self.cycle.response_complete:
            self.transport.close()  # answered, and the rest of the body still dribbles in
        else:
            self._arm(1.0)  # the app waits on the body: BodyGuard's deadline answers 408

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        in_head = self._in_head
        super().data_received(data)
        # httptools buffers a header until it ends: count what arrives while the head is open
        if in_head and self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._too_large = True
                self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            return super().send_400_response(msg)
        message = f"request head larger than {self.max_head_bytes} bytes"
        self._refuse(431, b"Request Header Fields Too Large", message)
        return None

    def _refuse(self, status: int, reason: bytes, message: str) -> None:
        self.transport.write(_refusal(status, reason, message))
        self.transport.close()
        if self.on_refused is not None:
            self.on_refused(status, self.client[0] if self.client else "")

    def _count(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self.max_head_bytes:
            self._too_large = True
            raise _HeadTooLarge  # httptools: a parser error, answered by send_400_response

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head()
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def guarded_protocol(
    max_head_bytes: int, read_timeout: float, on_refused: Callable[[int, str], None] | None = None
) -> type[GuardedHttpTools]:
    """The protocol class for uvicorn's `http=` setting, with these limits."""
    limits = {"max_head_bytes": max_head_bytes, "read_timeout": read_timeout}
    # staticmethod: a plain function as a class attribute would be bound to the protocol
    return type(
        "GuardedHttpTools",
        (GuardedHttpTools,),
        {**limits, "on_refused": staticmethod(on_refused) if on_refused else None},
    )


def _is_json(kind: str) -> bool:
    return kind in JSON_TYPES or (kind.startswith("application/") and kind.endswith("+json"))


class BodyGuard:
    """ASGI middleware: a body must be JSON (415), at most `max_bytes` long, declared or
    streamed (413), and arrive within `timeout` seconds (408), all before it is parsed."""

    def __init__(self, app: Any, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # type: ignore[no-any-return]
        headers = dict(scope["headers"])
        too_large = f"request body larger than {self.max_bytes} bytes"
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await error_response(413, too_large)(scope, receive, send)  # type: ignore[no-any-return]
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1").lower()
        if kind and scope["method"] not in ("GET", "HEAD", "OPTIONS") and not _is_json(kind):
            # FastAPI would hand any other body to the model as bytes: "not a valid dict"
            message = f"content-type must be application/json, not {safe_text(kind, 100)!r}"
            return await error_response(415, message)(scope, receive, send)  # type: ignore[no-any-return]
        seen, done = 0, False
        deadline = time.monotonic() + self.timeout

        async def guarded_receive() -> Any:
            nonlocal seen, done
            if done:  # the body is in: what follows is a disconnect, never late
                return await receive()
            try:
                # a floor: wait_for(…, 0) fails even when the next message is already there
                left = max(deadline - time.monotonic(), 0.05)
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                seconds = f"{self.timeout:g}"
                raise HTTPException(408, f"request body not received within {seconds} s") from None
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(status_code=413, detail=too_large)
            done = not message.get("more_body", False)
            return message

        return await self.app(scope, guarded_receive, send)  # type: ignore[no-any-return]


class AccessLog:
    """ASGI middleware: gives every request an id (the caller's `X-Request-ID`, capped, or a
    new one), echoed on every response and kept in `scope["state"]["request_id"]`; marks it
    synthetic (`scope["state"]["synthetic"]`) only when it carries the configured shared secret;
    and writes one JSON line per request to `stream`: time, client, method, path, status,
    duration, request id and byte counts, never a body, every text field truncated and escaped.
    """

    def __init__(
        self, app: Any, enabled: bool, synthetic_token: str = "", stream: TextIO | None = None
    ) -> None:
        self.app, self.enabled = app, enabled
        self.token = synthetic_token.encode()
        self.stream = stream or sys.stdout

    def _synthetic(self, headers: dict[bytes, bytes]) -> bool:
        sent = headers.get(SYNTHETIC_HEADER.lower().encode())
        # compare_digest: the time taken says nothing about how much of a guess was right
        return bool(self.token) and sent is not None and hmac.compare_digest(sent, self.token)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # type: ignore[no-any-return]
        headers = dict(scope["headers"])
        sent_id = headers.get(ID_KEY, b"").decode("latin-1")
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
            if self.enabled:
                self.write({
                    "ts": _now(),
                    "client": (scope.get("client") or ("",))[0],
                    "method": safe_text(scope["method"], 16),
                    "path": safe_text(scope["path"], MAX_LOGGED_PATH),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "request_id": request_id,
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    **({"synthetic": True} if state["synthetic"] else {}),
                })  # fmt: skip

    def write(self, record: dict[str, Any]) -> None:
        write_line(self.stream, record)


def write_line(stream: TextIO, record: dict[str, Any]) -> None:
    """One access-log line: ASCII JSON, so no byte a client sent can break the line."""
    try:
        stream.write(json.dumps(record, ensure_ascii=True) + "\n")
        stream.flush()
    except (OSError, ValueError):  # a closed stdout must not fail the request
        pass


def refusal_logger(stream: TextIO | None = None) -> Callable[[int, str], None]:
    """`on_refused` for GuardedHttpTools: the access-log line of a request refused before it
    had a method or path."""

    def log(status: int, client: str) -> None:
        write_line(stream or sys.stdout, {"ts": _now(), "client": client, "method": "",
                                          "path": "", "status": status})  # fmt: skip

    return log


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
