"""HTTP/1.1 connections, as a server facing the internet must hold them: uvicorn's httptools
protocol (llhttp, the parser Node.js uses) with the limits and the hygiene it lacks.

- A request head (request line and headers) over `max_head_bytes` is a 431, trailers over it
  too; the count covers the current request only, never what came before it in the same read.
- A request must arrive whole within `read_timeout` seconds of its first byte (or of the
  connection, for a client that sends nothing): a 408 while its head is incomplete, the app's
  own 408 (gitml.serving.guards.BodyGuard) once it waits on the body.
- Pipelined requests are answered in order; a malformed one is refused (400) only after every
  request before it is answered, and a request already answered is never answered twice.
- An Upgrade (websocket, h2c) is ignored, as RFC 9110 7.8 allows a server that speaks only
  HTTP/1.1: the request, body included, is answered in plain HTTP.
- Trailers are read and dropped: they never change the head's fields.
- A client that half-closes still gets its answers; one that leaves mid-request leaves its
  request unanswered (the access log says 499, gitml.serving.guards.AccessLog).
- At most `max_connections` per process: past it, connections that hold no request (waiting for
  a first byte, or idle between requests) are closed, those idle longest first, as nginx does;
  with none to close, the new connection gets a 503. Work (requests in progress) is limited
  above the protocol, by gitml.serving.guards.InFlightLimit.
- Every refusal made here is reported to `events` (the access log and the metrics).

Configure with `guarded_protocol`, which sets the class attributes.
"""

import asyncio
import http
import json
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gitml.serving.jsonlog import say

# After the last answer, what the client still sends is read and dropped for this long, or
# this much: enough for what was in flight, never for a client that streams on.
LINGER_S, LINGER_BYTES = 2.0, 256 * 1024
MAX_REASON = 100  # characters of a parser's reason echoed in a 400


@dataclass(frozen=True)
class Refusal:
    """A request (or connection) refused by the protocol, before any app saw it."""

    status: int
    reason: str  # a short name for the metrics: malformed, head_too_large, head_timeout, ...
    message: str  # what the client is told
    client: str
    method: str  # "" where the request line was not read
    path: str
    duration: float  # seconds from the request's first byte (or the connection's start)
    request_id: str
    bytes_out: int


class Events:
    """What the protocol reports; the server counts and logs it (gitml.serving.serve)."""

    def refused(self, refusal: Refusal) -> None:
        """A refusal was written to the client."""

    def closed_idle(self) -> None:
        """A connection holding no request was closed to make room for a new one."""


class _HeadTooLarge(Exception):
    pass


def _response(status: int, message: str, request_id: str) -> bytes:
    """A whole HTTP/1.1 error response in the server's `{"error", "detail"}` shape."""
    body = json.dumps({"error": message, "detail": message}, ensure_ascii=True).encode()
    phrase = http.HTTPStatus(status).phrase.encode()
    retry = b"retry-after: 1\r\n" if status == 503 else b""
    return b"".join([
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n" % (status, phrase),
        b"content-length: %d\r\nx-request-id: %s\r\n%sconnection: close\r\n\r\n"
        % (len(body), request_id.encode(), retry),
        body,
    ])  # fmt: skip


class _Output:
    """The socket as a cycle writes to it. A response's head is held until its body's first
    part, so a small answer leaves in one write (one segment, one wake-up of the client)
    rather than two; closing goes through the protocol, which lets the client read first."""

    __slots__ = ("held", "holding", "protocol")

    def __init__(self, protocol: "GuardedHttpTools") -> None:
        self.protocol, self.held, self.holding = protocol, b"", False

    def write(self, data: bytes) -> None:
        if self.holding and not self.held:
            self.held = data
            return
        self.holding = False
        data, self.held = self.held + data, b""
        if data and self.protocol.can_write():
            self.protocol.transport.write(data)

    def flush(self) -> None:
        self.holding = False
        if self.held:
            self.write(b"")

    def close(self) -> None:
        self.flush()
        self.protocol.end()

    def is_closing(self) -> bool:
        return not self.protocol.can_write()


class GuardedCycle(RequestResponseCycle):
    """uvicorn's request-response cycle, writing through `_Output`, and knowing whether its
    answer left: `disconnected` (the client left before it was written) or `refused` (the
    protocol answered this request itself; the app's answer is dropped and not logged)."""

    def __init__(self, output: _Output, on_complete: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(transport=output, on_response=self._completed, **kwargs)  # type: ignore[arg-type]
        self.output, self.on_complete = output, on_complete
        self.refused = False

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.output.holding = True
            if self.waiting_for_100_continue:  # answered before the body it never asked for:
                self.keep_alive = False  # the client may send it yet, or not; the connection ends
        await super().send(message)

    def _completed(self) -> None:
        self.output.flush()  # before anything the protocol writes next (a refusal)
        self.on_complete()


def _body_framing(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The framing header a request's body was announced with, or None if it has none."""
    for name, value in headers:
        if name == b"transfer-encoding" and value.lower().rstrip(b" \t").endswith(b"chunked"):
            return b"transfer-encoding: chunked"
    for name, value in headers:
        if name == b"content-length" and value.strip(b" \t") not in (b"", b"0"):
            return b"content-length: " + value.strip(b" \t")
    return None


class GuardedHttpTools(HttpToolsProtocol):
    max_head_bytes = 16 * 1024
    read_timeout = 10.0
    max_connections = 1024
    events: Events = Events()
    cycle: GuardedCycle  # every cycle here is one (on_headers_complete)

    # --- the connection

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._output = _Output(self)
        self._unanswered: deque[GuardedCycle] = deque()  # oldest first
        self._refusal: tuple[int, str, str] | None = None  # waits for the earlier answers
        self._reading = True  # False: no more requests are parsed (a refusal, an EOF, a close)
        self._finished = False  # nothing more is written: closed, or shut after a refusal
        self._messages = 0  # requests begun on this connection
        self._in_message = False  # a request has begun and is not whole yet
        self._in_head = True  # the connection's first bytes are a head too
        self._current: GuardedCycle | None = None  # the cycle of the request being read
        self._chunk_open = False  # a chunk header read, and no chunk data since: trailers?
        self._replaying = False  # a stand-in head is parsed (see _after_upgrade)
        self._upgrade_body: bytes | None = None
        self._too_large = ""
        self._dropped = 0  # bytes read after the last request parsed
        self._began = self._idle_since = self.loop.time()
        self._counts = [0, 0, 0, 0]  # head bytes read, head parsed, trailers read, parsed
        self._arm()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._finished = True
        self._abandon(list(self._unanswered))
        super().connection_lost(exc)

    def can_write(self) -> bool:
        return not self._finished and not self.transport.is_closing()

    def _reusable(self) -> bool:
        """Holds no request: waiting for a first byte, or idle between requests."""
        return self._reading and not self._in_message and not self._unanswered

    def _make_room(self) -> None:
        others = [
            c for c in self.connections
            if isinstance(c, GuardedHttpTools) and c is not self and c.can_write()
        ]  # fmt: skip
        excess = len(others) + 1 - self.max_connections
        if excess <= 0:
            return
        idle = sorted((c for c in others if c._reusable()), key=lambda c: c._idle_since)
        # an eighth more than needed: the next new connections find room without a search
        for connection in idle[: excess + self.max_connections // 8]:
            connection._finished = True
            connection.transport.close()
            self.events.closed_idle()
        if len(idle) < excess:
            message = f"too many connections (more than {self.max_connections} open)"
            self._refuse(503, "connections", message)

    def _abandon(self, cycles: list[GuardedCycle]) -> None:
        for cycle in cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()

    # --- the read deadline

    def _arm(self, delay: float | None = None) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(delay or self.read_timeout, self._on_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if not self.can_write():
            return
        if self._unanswered and (self._in_head or not self._in_message):
            self._arm()  # input waits while earlier requests are answered: not the client's delay
        elif self._in_head:
            message = f"request head not received within {self.read_timeout:g} s"
            self._refuse(408, "head_timeout", message)
        elif self._current is None or self._current.response_complete:
            self.end()  # answered, and the rest of the body still dribbles in; or only CRLFs
        else:
            self._arm(1.0)  # the app waits on the body: BodyGuard's deadline answers 408

    # --- input

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if not self._reading:  # after a refusal or a close: read only to be dropped
            self._dropped += len(data)
            if self._finished and self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        if not self._in_message and not self._unanswered:
            self._began = self.loop.time()
            self._arm()  # any byte starts the deadline of the request it begins
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Parse in slices of at most max_head_bytes, so that a head's bytes not yet reported
        by the parser (a header it buffers until it ends) never exceed one slice unseen."""
        view, start = memoryview(data), 0
        while start < len(view) and self._reading:
            piece = view[start : start + self.max_head_bytes]
            start += len(piece)
            serial, in_head, trailing = self._messages, self._in_head, self._chunk_open
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade as upgrade:
                view, start = view[start - len(piece) + upgrade.args[0] :], 0
                self._after_upgrade()
                continue
            except httptools.HttpParserError as err:
                self._malformed(err)
                return
            if serial != self._messages:
                continue  # a request began in this slice: only the parser's counts hold
            if (in_head and self._in_head and self._over(0, len(piece), "request head")) or (
                trailing and self._chunk_open and self._over(2, len(piece), "request trailers")
            ):
                self._malformed(_HeadTooLarge())
                return

    def _over(self, which: int, size: int, what: str) -> bool:
        """Count `size` bytes of a head (or trailers), read (0, 2) or parsed (1, 3): over the
        limit? Each count alone is at most the true size, so a head within it never is."""
        self._counts[which] += size
        if self._counts[which] > self.max_head_bytes:
            self._too_large = self._too_large or what
        return bool(self._too_large)

    def _add(self, which: int, size: int, what: str) -> None:
        if self._over(which, size, what):
            raise _HeadTooLarge  # in a parser callback: httptools reports a callback error

    def _after_upgrade(self) -> None:
        """llhttp hands what follows an Upgrade request's head to the other protocol; this
        server speaks none, so it reads on in HTTP: the request's body (a stand-in head with
        the same framing is parsed first, unreported) and the requests after it."""
        if self._upgrade_body is not None:
            self._replaying = True
            stand_in = b"POST / HTTP/1.1\r\n" + self._upgrade_body + b"\r\n\r\n"
            self._upgrade_body = None
            self.parser.feed_data(stand_in)

    def _malformed(self, err: Exception) -> None:
        if self._too_large:
            message = f"{self._too_large} larger than {self.max_head_bytes} bytes"
            self._refuse(431, "head_too_large", message)
        else:  # llhttp's reason; a callback's failure is a URL it could not read, or a bug
            cause = err.__context__ if isinstance(err, httptools.HttpParserCallbackError) else None
            reason = str(err)
            if isinstance(cause, httptools.HttpParserInvalidURLError | UnicodeDecodeError):
                reason = "the request target is not a valid URL"
            elif cause is not None:
                say(f"protocol: a parser callback failed: {cause!r}", "error")
            reason = reason.encode("ascii", "backslashreplace").decode()[:MAX_REASON]
            self._refuse(400, "malformed", f"Invalid HTTP request received: {reason}")

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """The client shut its sending side: the requests it sent whole are answered (RFC
        9112 9.6), a request it cut short is not (it can never complete)."""
        self._reading = False
        self._disarm()
        if self._in_message and self._current is not None:
            self._abandon([self._current])
            if self._current in self._unanswered:
                self._unanswered.remove(self._current)
        self._in_message = False
        if self._refusal is not None or self._unanswered:
            return True  # the transport stays open for the answers; then closed
        return None  # nothing to answer: uvloop closes it

    # --- parser callbacks

    def on_message_begin(self) -> None:
        if self._replaying:
            return
        super().on_message_begin()
        self._messages += 1
        self._in_message = self._in_head = True
        self._current = None
        self._chunk_open = False
        self._counts = [0, 0, 0, 0]
        self._arm()

    def on_url(self, url: bytes) -> None:
        if not self._replaying:
            self._add(1, len(url), "request head")
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._replaying:
            return
        if self._in_head:
            self._add(1, len(name) + len(value) + 3, "request head")  # at least `:` and CRLF
            super().on_header(name, value)
        else:  # a trailer: never a field of the request the app sees
            self._add(3, len(name) + len(value) + 3, "request trailers")

    def on_headers_complete(self) -> None:
        if self._replaying:
            self._replaying = False
            return
        self._in_head = False
        method = self.parser.get_method().decode("ascii")
        self.scope["method"] = method
        if (version := self.parser.get_http_version()) != "1.1":
            self.scope["http_version"] = version
        url = httptools.parse_url(self.url)
        path = url.path.decode("ascii")
        self.scope["path"] = self.root_path + (urllib.parse.unquote(path) if "%" in path else path)
        self.scope["raw_path"] = self.root_path.encode("ascii") + url.path
        self.scope["query_string"] = url.query or b""
        if self.parser.should_upgrade():
            self._upgrade_body = _body_framing(self.headers)
        cycle = GuardedCycle(
            self._output, self.on_response_complete, scope=self.scope, flow=self.flow,
            logger=self.logger, access_logger=self.access_logger, access_log=False,
            default_headers=self.server_state.default_headers, message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=version != "1.0" and self.parser.should_keep_alive(),
        )  # fmt: skip
        self.scope["extensions"] = {"gitml.cycle": cycle}  # type: ignore[dict-item]
        earlier = self.cycle
        self.cycle = self._current = cycle
        self._unanswered.append(cycle)
        if earlier is None or earlier.response_complete:
            self._start_asgi_task(cycle, self.app)
        else:  # pipelined: it waits its turn, and so does the input
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))

    def on_body(self, body: bytes) -> None:
        self._chunk_open = False
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._chunk_open = True

    def on_chunk_complete(self) -> None:
        self._chunk_open = False

    def on_message_complete(self) -> None:
        if self._upgrade_body is not None:
            return  # the body follows, in what llhttp calls another protocol
        self._in_message = False
        self._idle_since = self.loop.time()
        self._disarm()
        super().on_message_complete()

    # --- answers

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        while self._unanswered and self._unanswered[0].response_complete:
            self._unanswered.popleft()
        if not self.can_write():
            return
        self._unset_keepalive_if_required()
        while self.pipeline:
            cycle, app = self.pipeline.pop()
            if not cycle.disconnected:
                self._start_asgi_task(cycle, app)
                return
        if self._unanswered:
            return
        if self._refusal is not None:
            self._write_refusal()
        elif not self._reading:
            self.end()
        else:
            self.flow.resume_reading()
            self._idle_since = self.loop.time()
            if not self._in_message:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer the request being read with `status` and end the connection, once every
        request before it is answered; a request already answered is not answered again."""
        self._reading = False
        self._disarm()
        self.flow.pause_reading()
        current = self._current if self._in_message else None
        if current is not None and current.response_started:
            current = None
            status = 0  # answered already: nothing more is written
        elif current is not None:  # its app may be waiting on the body: it never comes
            current.refused = True
            self._abandon([current])
            if current in self._unanswered:
                self._unanswered.remove(current)
        self._refusal = (status, reason, message)
        if not self._unanswered:
            self._write_refusal()

    def _write_refusal(self) -> None:
        assert self._refusal is not None
        (status, reason, message), self._refusal = self._refusal, None
        if status and self.can_write():
            request_id = uuid.uuid4().hex
            response = _response(status, message, request_id)
            self.transport.write(response)
            refusal = Refusal(
                status, reason, message, self.client[0] if self.client else "",
                self.scope["method"] if self.scope and "method" in self.scope else "",
                self.scope["path"] if self.scope and "path" in self.scope else "",
                self.loop.time() - self._began, request_id, len(response),
            )  # fmt: skip
            self.events.refused(refusal)
        self.end()

    def end(self) -> None:
        """Close once the client has read what was written: our side is shut (a FIN after the
        data), and what the client still sends is read and dropped (up to LINGER_S or
        LINGER_BYTES), so that its kernel does not answer the close with a reset that
        discards the answer unread (RFC 9112 9.6)."""
        self._reading = False
        if not self.can_write():
            return
        self._finished = True
        self._disarm()
        self._abandon(list(self._unanswered))
        self.flow.resume_reading()
        try:
            self.transport.write_eof()
        except OSError:  # the peer is gone already (ENOTCONN): nothing left to linger for
            self.transport.close()
            return
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)

    def timeout_keep_alive_handler(self) -> None:
        self._finished = True
        super().timeout_keep_alive_handler()


def guarded_protocol(
    max_head_bytes: int, read_timeout: float, max_connections: int, events: Events
) -> type[GuardedHttpTools]:
    """The protocol class for uvicorn's `http=` setting, with these limits."""
    limits = {
        "max_head_bytes": max_head_bytes,
        "read_timeout": read_timeout,
        "max_connections": max_connections,
        "events": events,
    }
    return type("GuardedHttpTools", (GuardedHttpTools,), limits)
