"""Hostile input against a real server process over real sockets: every request below must be
refused with a 4xx that says why, never a 5xx, and leave the server healthy. The bad values
are derived from the dataset spec (FEATURES), so the suite holds for any dataset.

The slow cases hold many connections open (slow bodies, slow heads, huge headers, validation
floods) and check that the server's memory stays bounded and /healthz keeps answering.
"""

import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gitml.config import PROJ_ROOT
from gitml.schema import EVENT_TIME, EXAMPLE_ROW, FEATURES
from gitml.serving.predlog import read_predictions
from tests.conftest import Served, running_server

READ_TIMEOUT = 2.0  # the hostile server's GITML_READ_TIMEOUT_S: slow clients are cut off fast
MAX_BODY = 1 << 20  # its GITML_MAX_BODY_BYTES (the default)
MAX_HEAD = 16 * 1024  # its GITML_MAX_HEADER_BYTES (the default)
HEADER_SENT = 100 << 20  # the header a client tries to send
IN_FLIGHT = 64  # its GITML_LIMIT_CONCURRENCY: requests in progress (more than the slow cases)
MAX_CONNECTIONS = 150  # its GITML_MAX_CONNECTIONS: open connections (more than they open)


def readiness_timeout() -> float:
    """Seconds the Deployment's readiness probe waits for /healthz: slower, and Kubernetes takes
    the pod out of its Service. What "health keeps answering" means under abuse (a bound from
    the manifest, not a speed target: those live in `make bench-serving`)."""
    manifest = yaml.safe_load((PROJ_ROOT / "deploy/k8s/base/deployment.yaml").read_text())
    (container,) = [c for c in manifest["spec"]["template"]["spec"]["containers"]
                    if "readinessProbe" in c]  # fmt: skip
    return float(container["readinessProbe"]["timeoutSeconds"])


HEALTH_DEADLINE = readiness_timeout()


@dataclass
class Hostile:
    served: Served
    host: str
    port: int


@contextlib.contextmanager
def hostile_server(
    packaged_model: Path, trained_model: Any, directory: Path, workers: int
) -> Iterator[Hostile]:
    settings = {
        "read_timeout_s": str(READ_TIMEOUT),
        "keep_alive_timeout_s": "2",
        "limit_concurrency": str(IN_FLIGHT),
        "max_connections": str(MAX_CONNECTIONS),
        "workers": str(workers),
    }
    with running_server(packaged_model, trained_model, directory, **settings) as (served, process):
        address = served.url.removeprefix("http://").split(":")
        yield Hostile(served, address[0], int(address[1]))
    # after everything above, its shutdown included: it stopped at the SIGTERM (which uvicorn
    # raises again once it has shut down), and every line it wrote is still JSON
    assert process.returncode in (0, -signal.SIGTERM), served.output.read_text()[-3000:]
    assert "Traceback" not in served.output.read_text()
    output_lines(served)


@pytest.fixture(scope="module")
def hostile(
    packaged_model: Path, trained_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    """One worker: the limits are each worker's, so the tests of limits and memory use one."""
    directory = tmp_path_factory.mktemp("hostile")
    with hostile_server(packaged_model, trained_model, directory, workers=1) as server:
        yield server


@pytest.fixture(scope="module")
def hostile_workers(
    packaged_model: Path, trained_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    """Two workers on the shared port, as the Deployment runs it: their access logs on one
    stream, their refusals counted in the shared metrics."""
    directory = tmp_path_factory.mktemp("hostile-workers")
    with hostile_server(packaged_model, trained_model, directory, workers=2) as server:
        yield server


@pytest.fixture(params=["1 worker", "2 workers"])
def each_server(request: pytest.FixtureRequest) -> Hostile:
    """The protocol tests run against both: what holds for one worker holds for two."""
    name = "hostile" if request.param == "1 worker" else "hostile_workers"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def reason(self) -> str:
        """The `error` of a JSON answer (what every refusal carries), else the text."""
        try:
            return str(json.loads(self.body)["error"])
        except (ValueError, KeyError, TypeError):
            return self.body.decode("utf-8", "replace")


def request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """A raw HTTP/1.1 request, byte for byte what is sent: no client normalises the path, the
    headers or the body on the way."""
    fields = {"Host": "127.0.0.1", **(headers or {})}
    if body and "Content-Length" not in fields and "Transfer-Encoding" not in fields:
        fields["Content-Length"] = str(len(body))
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body


def exchange(hostile: Hostile, raw: bytes, timeout: float = 30) -> Answer:
    """Send `raw` and read one answer (by its Content-Length, else until the server closes).
    No `Connection: close`: a server that answers before reading the whole body keeps reading
    it, so the answer is not lost to a reset."""
    with socket.create_connection((hostile.host, hostile.port), timeout=timeout) as sock:
        # refused before it read everything: the answer is already on its way
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        received = b""
        while b"\r\n\r\n" not in received and (chunk := sock.recv(1 << 16)):
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        length = int(headers.get("content-length", -1))
        while (length < 0 or len(body) < length) and (chunk := sock.recv(1 << 16)):
            body += chunk
    match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    assert match, f"no HTTP answer: {received[:200]!r}"
    return Answer(int(match.group(1)), headers, body)


def json_body(payload: Any) -> bytes:
    """`payload` as Python's json writes it: NaN and Infinity as bare words, lone surrogates
    as escapes, which is what a hostile client sends."""
    return json.dumps(payload).encode()


def rows(*values: Any) -> bytes:
    return json_body({"data": {"values": list(values)}})


def row(**changes: Any) -> dict[str, Any]:
    return {**EXAMPLE_ROW, **changes}


def predict(body: bytes, **headers: str) -> bytes:
    return request("POST", "/predict", body, {"Content-Type": "application/json", **headers})


# What each kind of field must refuse, by kind: (label, the value as JSON text).
NOT_A_NUMBER = [("string", '"0.5"'), ("bool", "true"), ("list", "[1]"), ("object", '{"a": 1}')]
WRONG = {
    "int": [*NOT_A_NUMBER, ("fraction", "3.5"), ("NaN", "NaN"), ("2^64", str(1 << 64))],
    "float": [
        *NOT_A_NUMBER,
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("1e400", "1e400"),
        ("10^400", "1" + "0" * 400),
        ("lone surrogate", '"\\udc80"'),
    ],
    "category": [
        ("number", "1"),
        ("bool", "false"),
        ("unknown", '"tornado-xyz"'),
        ("lone surrogate", '"\\udc80"'),
        ("object", '{"$ne": null}'),
        ("long", json.dumps("x" * 100_000)),
    ],
}


def with_raw_value(name: str, text: str) -> bytes:
    """A one-row request whose field `name` is the JSON text `text`, verbatim."""
    marker = "__VALUE__"
    return rows(row(**{name: marker})).replace(json.dumps(marker).encode(), text.encode())


@dataclass(frozen=True)
class Case:
    raw: bytes
    status: int
    reason: str  # a regular expression the refusal's reason must match


def field_cases() -> dict[str, Case]:
    """Every wrong value of each feature's kind, refused naming the feature (a kind this
    dataset has not is not listed)."""
    cases = {}
    for name, spec in FEATURES.items():
        for label, text in WRONG.get(spec.kind, []):
            where = re.escape(f"data.values.0.{name}:")
            cases[f"{spec.kind} {name}: {label}"] = Case(
                predict(with_raw_value(name, text)), 422, where
            )
    return cases


ANY = next(iter(FEATURES))
REQUIRED = next(name for name, spec in FEATURES.items() if not spec.nullable)
CASES: dict[str, Case] = {
    **field_cases(),
    # the body as a whole
    "empty body": Case(predict(b""), 422, r"body: field required"),
    "malformed JSON": Case(predict(b'{"data": {"values": ['), 422, r"malformed JSON"),
    "malformed JSON with a lone surrogate": Case(predict(b'{"data": "\\udc80'), 422, "malformed"),
    "not UTF-8": Case(predict(b'{"data": "\xff\xfe"}'), 400, r"not UTF-8 JSON"),
    "nested 100000 deep": Case(predict(b"[" * 100_000 + b"]" * 100_000), 400, r"nesting"),
    "an integer of 5000 digits": Case(
        predict(rows(row()).replace(b"{", b'{"x": ' + b"9" * 5000 + b", ", 1)), 400, r"numbers"
    ),
    "a JSON array": Case(predict(b"[1, 2]"), 422, r"body: value is not a valid dict"),
    "a JSON string": Case(predict(b'"data"'), 422, r"body: value is not a valid dict"),
    "values not a list": Case(
        predict(json_body({"data": {"values": {"0": EXAMPLE_ROW}}})),
        422,
        r"data\.values: value is not a valid list",
    ),
    "a row not an object": Case(
        predict(rows(1)), 422, r"data\.values\.0: value is not a valid dict"
    ),
    "no rows": Case(predict(rows()), 422, r"at least 1 items"),
    "too many rows": Case(predict(rows(*[EXAMPLE_ROW] * 1001)), 422, r"at most 1000 items"),
    # keys
    "a missing feature": Case(
        predict(rows({k: v for k, v in EXAMPLE_ROW.items() if k != REQUIRED})),
        422,
        re.escape(f"data.values.0.{REQUIRED}: field required"),
    ),
    "an extra key": Case(
        predict(rows(row(extra=1))), 422, r"data\.values\.0\.extra: extra fields not permitted"
    ),
    "a lone surrogate key": Case(
        predict(rows(row(**{"\ud800": 1}))), 422, r"data\.values\.0\.\\ud800: extra"
    ),
    "a key of control characters": Case(
        predict(rows(row(**{"\x00\x1b[31m": 1}))), 422, r"extra fields"
    ),
    "an extra key beside data": Case(
        predict(json_body({"data": {"values": [EXAMPLE_ROW]}, "x": 1})), 422, r"^x: extra fields"
    ),
    "an extra key beside values": Case(
        predict(json_body({"data": {"values": [EXAMPLE_ROW], "x": 1}})),
        422,
        r"data\.x: extra fields",
    ),
    "the event time a number": Case(
        predict(rows(row(**{EVENT_TIME: 1714550400}))),
        422,
        re.escape(f"{EVENT_TIME}: must be a string"),
    ),
    "the event time in year 1": Case(
        predict(rows(row(**{EVENT_TIME: "0001-01-01T00:00:00Z"}))),
        422,
        re.escape(f"{EVENT_TIME}: must be in the years"),
    ),
    "the event time a lone surrogate": Case(
        predict(rows(row(**{EVENT_TIME: "\udc80"}))),
        422,
        re.escape(f"{EVENT_TIME}: must be an ISO 8601"),
    ),
    # the limits
    "a body over the limit, declared": Case(
        predict(b"[" + b" " * MAX_BODY + b"]"), 413, r"larger than"
    ),
    "a body over the limit, chunked": Case(
        predict(
            b"%x\r\n%s\r\n0\r\n\r\n" % (MAX_BODY + 10, b" " * (MAX_BODY + 10)),
            **{"Transfer-Encoding": "chunked"},
        ),
        413,
        r"larger than",
    ),
    "a content length that is not a number": Case(
        predict(b"{}", **{"Content-Length": "-1"}), 400, r"Invalid HTTP request"
    ),
    "text/plain": Case(
        request("POST", "/predict", rows(EXAMPLE_ROW), {"Content-Type": "text/plain"}),
        415,
        r"content-type must be application/json",
    ),
    "a form": Case(
        request(
            "POST", "/predict", b"data=1", {"Content-Type": "application/x-www-form-urlencoded"}
        ),
        415,
        r"application/json",
    ),
    "multipart": Case(
        request(
            "POST",
            "/predict",
            b"--b\r\n\r\n--b--",
            {"Content-Type": "multipart/form-data; boundary=b"},
        ),
        415,
        r"application/json",
    ),
    "a header of 100 KB": Case(
        request("GET", "/healthz", headers={"X-Big": "a" * 100_000}),
        431,
        r"request head larger than",
    ),
    "5000 headers": Case(
        request("GET", "/healthz", headers={f"X-{i}": "b" for i in range(5000)}),
        431,
        r"request head larger than",
    ),
    "a URL of 50 KB": Case(request("GET", "/" + "a" * 50_000), 431, r"request head larger than"),
    "content length and chunked at once": Case(
        predict(b"0\r\n\r\n", **{"Content-Length": "5", "Transfer-Encoding": "chunked"}),
        400,
        r"Invalid HTTP request",
    ),
    "a header with a bare LF in its value": Case(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n", 400, r"Invalid HTTP request"
    ),
    # paths, hosts and methods
    "a trailing slash from a foreign host": Case(
        request(
            "POST",
            "/predict/",
            rows(EXAMPLE_ROW),
            {"Host": "evil.example", "Content-Type": "application/json"},
        ),
        404,
        r"Not Found",
    ),
    "a double slash": Case(request("GET", "//healthz"), 404, r"Not Found"),
    "a dot-dot path": Case(request("GET", "/static/../../etc/passwd"), 404, r"Not Found"),
    "an encoded slash": Case(request("POST", "/predict%2F", rows(EXAMPLE_ROW)), 404, r"Not Found"),
    "upper case": Case(request("POST", "/PREDICT", rows(EXAMPLE_ROW)), 404, r"Not Found"),
    "the API docs": Case(request("GET", "/docs"), 404, r"Not Found"),
    "ReDoc": Case(request("GET", "/redoc"), 404, r"Not Found"),
    "MLEM's interface": Case(request("GET", "/interface.json"), 404, r"Not Found"),
    "metrics on the API port": Case(request("GET", "/metrics"), 404, r"Not Found"),
    "an absolute URL to another host": Case(
        request("GET", "http://evil.example/docs"), 404, r"Not Found"
    ),
    **{
        f"{method} /predict": Case(request(method, "/predict"), 405, r"Method Not Allowed")
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")
    },
    "an unknown method": Case(request("BREW", "/predict"), 400, r"Invalid HTTP request"),
    "a request target that is not a URL": Case(
        request("GET", "http://a:b/"), 400, r"Invalid HTTP request.*not a valid URL"
    ),
    # rows, and the objects around them, only as JSON objects
    "a row as [key, value] pairs": Case(
        predict(rows(list(EXAMPLE_ROW.items()))),
        422,
        r"^data\.values\.0: value is not a valid dict",
    ),
    "data as [key, value] pairs": Case(
        predict(json_body({"data": [["values", [EXAMPLE_ROW]]]})),
        422,
        r"^data: value is not a valid dict",
    ),
    "the body as [key, value] pairs": Case(
        predict(json_body([["data", {"values": [EXAMPLE_ROW]}]])),
        422,
        r"^body: value is not a valid dict",
    ),
    # trailers are read and dropped, and bounded as a head is
    "trailers of 100 KB": Case(
        predict(
            b"%x\r\n%s\r\n0\r\nX-Big: %s\r\n\r\n"
            % (len(rows(EXAMPLE_ROW)), rows(EXAMPLE_ROW), b"a" * 100_000),
            **{"Transfer-Encoding": "chunked"},
        ),
        431,
        r"request trailers larger than",
    ),
}


def server_errors(served: Served) -> float:
    """5xx answers the server has counted (its metrics port), other than the 503 of its
    limit on requests in progress (which tests below bring about)."""
    text = httpx.get(f"{served.metrics_url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gitml_requests_total{") and re.search(r'status="5(?!03)\d\d"', line)
    )


def output_lines(served: Served) -> list[dict[str, Any]]:
    """Every line the server wrote (access log on stdout, its own messages on stderr), each
    of which must be a JSON object."""
    lines = served.output.read_text().splitlines()
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    return [json.loads(line) for line in lines]


def assert_healthy(served: Served) -> None:
    """/healthz answers at once, no 5xx was ever counted, and the server logged no traceback,
    no error and no line that is not JSON."""
    health = httpx.get(f"{served.url}/healthz", timeout=2)
    assert health.status_code == 200, health.text
    assert server_errors(served) == 0
    text = served.output.read_text()
    assert "Traceback" not in text and "RuntimeError" not in text
    assert all(line.get("level") not in ("error", "critical") for line in output_lines(served))


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_a_4xx_saying_why(hostile: Hostile, name: str) -> None:
    case = CASES[name]
    answer = exchange(hostile, case.raw)
    assert answer.status == case.status, (answer.status, answer.body[:500])
    assert re.search(case.reason, answer.reason()), answer.reason()
    assert "location" not in answer.headers  # no redirect, least of all to the Host sent
    assert "server" not in answer.headers
    assert len(answer.body) < 20_000  # bounded, whatever was sent
    if answer.headers.get("content-type") == "application/json":
        json.loads(answer.body)  # strict JSON: no NaN, no lone surrogate
        assert answer.body.isascii()
    assert_healthy(hostile.served)


def test_a_422_never_echoes_what_was_sent(hostile: Hostile) -> None:
    category = next((n for n, s in FEATURES.items() if s.kind == "category"), ANY)
    secret = "sensitive-" + "z" * 40
    answer = exchange(hostile, predict(rows(row(**{category: secret, secret: 1}))))
    assert answer.status == 422
    assert b"sensitive-zzzz" in answer.body  # the key, as a location, cut to 64 characters
    assert b"z" * 60 not in answer.body


def test_thousands_of_errors_make_a_small_answer_quickly(hostile: Hostile) -> None:
    """1000 rows of 80 unknown keys (~1 MB): pydantic alone made 80,000 errors, a 9 MB answer
    and 5 s of a blocked event loop; 4 KB of empty rows made 884 KB."""
    extra = {f"key{i}": 1 for i in range(80)}
    for body in (rows(*[extra] * 1000), rows(*[{}] * 1000)):
        started = time.perf_counter()
        answer = exchange(hostile, predict(body))
        assert answer.status == 422
        assert len(answer.body) < 20_000
        assert time.perf_counter() - started < 1.0
        detail = json.loads(answer.body)["detail"]
        assert detail[-1]["type"] == "value_error.too_many_errors"
        stopped = r"checking stopped after \d+ errors, before row \d+ of 1000"
        assert re.search(stopped, detail[-1]["msg"]), detail[-1]
    assert_healthy(hostile.served)


def test_a_spoofed_smoke_id_is_traffic_like_any_other(hostile: Hostile) -> None:
    """The monitor leaves synthetic requests out: only the shared secret makes one, not an id
    (`smoke-...` used to) nor a guess at the secret."""
    served = hostile.served
    spoofed, guessed = (f"smoke-{name}-{time.time_ns()}" for name in ("spoofed", "guessed"))
    for request_id, marks in ((spoofed, {}), (guessed, {"X-Gitml-Synthetic": "smoke"})):
        sent = predict(rows(EXAMPLE_ROW), **{"X-Request-ID": request_id}, **marks)
        answer = exchange(hostile, sent)
        assert answer.status == 200 and answer.headers["x-request-id"] == request_id
    assert {spoofed, guessed} <= set(read_predictions(served.log_dir)["request_id"])


def rss(pid: int | None) -> int:
    """The server process's resident memory, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


class Probe:
    """/healthz asked every 50 ms on a thread, and the server's peak RSS, while a test runs
    (at least once at the start and once at the end)."""

    def __init__(self, served: Served) -> None:
        self.served, self.peak = served, rss(served.pid)
        self.latencies: list[float] = []  # seconds; 99 for an answer other than 200
        self.stop, self.started = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while True:
                started = time.perf_counter()
                status = client.get(f"{self.served.url}/healthz").status_code
                self.latencies.append(time.perf_counter() - started if status == 200 else 99.0)
                self.peak = max(self.peak, rss(self.served.pid))
                self.started.set()
                if self.stop.wait(0.05):
                    break

    def __enter__(self) -> "Probe":
        self.thread.start()
        self.started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def open_connections(hostile: Hostile, count: int) -> list[socket.socket]:
    address = (hostile.host, hostile.port)
    return [socket.create_connection(address, timeout=30) for _ in range(count)]


def answers_of(sockets: list[socket.socket]) -> list[bytes]:
    """What each socket got before the server closed it."""
    answers = []
    for sock in sockets:
        received = b""
        try:
            while chunk := sock.recv(1 << 16):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        sock.close()
        answers.append(received)
    return answers


def slow_bodies(hostile: Hostile, count: int) -> list[bytes]:
    """`count` clients each send a body one byte short of what they declared (1 MiB), then
    wait: the answers they got before the server closed on them."""
    clients = open_connections(hostile, count)
    head = predict(b"", **{"Content-Length": str(MAX_BODY)})
    for sock in clients:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # cut off already
            sock.sendall(head + b" " * (MAX_BODY - 1))
    return answers_of(clients)


@pytest.mark.slow
def test_slow_bodies_are_cut_off_and_their_memory_reused(hostile: Hostile) -> None:
    """200 clients each holding a body one byte short of 1 MiB kept 198 MB for good: now each
    gets a 408 after GITML_READ_TIMEOUT_S, and a second wave takes no more memory than the
    first (what the first held is free again, if not given back to the system)."""
    served, count = hostile.served, 60
    before = rss(served.pid)
    with Probe(served) as probe:
        answers = slow_bodies(hostile, count)
    first = rss(served.pid)
    with Probe(served) as again:
        answers += slow_bodies(hostile, count)
    second = rss(served.pid)
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:40] for a in answers}
    assert b"request body not received within" in answers[0]
    slowest = max(probe.latencies + again.latencies)
    assert slowest < HEALTH_DEADLINE, slowest
    # a few copies of each body at most while they are held, and no growth after
    assert max(probe.peak, again.peak) - before < count * 3 * MAX_BODY, (before, probe.peak)
    # a second wave that kept its bodies would add count * MAX_BODY (60 MiB); the allocator's
    # arenas alone have grown by up to 14 MiB between waves on a loaded 2-core machine
    assert second - first < count * MAX_BODY // 2, (before, first, second)
    assert_healthy(served)


@pytest.mark.slow
def test_slow_heads_are_cut_off_while_health_answers(hostile: Hostile) -> None:
    """A client that never finishes its request line and headers (slowloris) gets a 408."""
    served = hostile.served
    with Probe(served) as probe:
        clients = open_connections(hostile, 100)
        for sock in clients:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.perf_counter()
        answers = answers_of(clients)
    assert time.perf_counter() - started < READ_TIMEOUT + 3
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:40] for a in answers}
    assert b"request head not received within" in answers[0]
    assert max(probe.latencies) < HEALTH_DEADLINE, max(probe.latencies)
    assert_healthy(served)


def socket_buffers_max() -> int:
    """The most a TCP connection's two kernel buffers hold: send (client) plus receive (server)."""
    limits = (Path("/proc/sys/net/ipv4/tcp_wmem"), Path("/proc/sys/net/ipv4/tcp_rmem"))
    return sum(int(limit.read_text().split()[-1]) for limit in limits)


@pytest.mark.slow
def test_a_100_mb_header_is_refused_early_and_costs_no_memory(hostile: Hostile) -> None:
    """One 100 MB header stalled the server for 13.6 s and cost 177 MB."""
    served = hostile.served
    before = rss(served.pid)
    with Probe(served) as probe, socket.create_connection((hostile.host, hostile.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent, chunk = 0, b"a" * (1 << 16)
        try:
            while sent < HEADER_SENT:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while part := sock.recv(1 << 16):
                received += part
        except ConnectionResetError:
            pass
    # refused after the limit, not after 100 MB: what was sent beyond it sat in the kernel's
    # buffers (the client's send buffer, the server's receive buffer), which vary by machine
    assert sent < min(MAX_HEAD + socket_buffers_max(), HEADER_SENT), sent
    assert received.startswith(b"HTTP/1.1 431") or received == b"", received[:100]
    assert probe.peak - before < 16 << 20
    assert max(probe.latencies) < HEALTH_DEADLINE, max(probe.latencies)
    assert_healthy(served)


@pytest.mark.slow
def test_validation_floods_leave_health_answering(hostile: Hostile) -> None:
    """Eight clients at once, each sending 1 MB of rows of unknown keys, again and again."""
    served = hostile.served
    body = predict(rows(*[{f"key{i}": 1 for i in range(80)}] * 1000))
    statuses: list[int] = []

    def flood() -> None:
        for _ in range(5):
            statuses.append(exchange(hostile, body).status)

    with Probe(served) as probe:
        threads = [threading.Thread(target=flood) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [422] * 40
    assert max(probe.latencies) < HEALTH_DEADLINE, max(probe.latencies)
    assert_healthy(served)


# --- the protocol: pipelining, half-closes, upgrades, idle connections, every refusal counted


class Connection:
    """One client connection, its answers read one by one as a client pairs them with its
    requests: in order, each by its Content-Length."""

    def __init__(self, hostile: Hostile, port: int | None = None) -> None:
        self.sock = socket.create_connection((hostile.host, port or hostile.port), timeout=15)
        self.reader = self.sock.makefile("rb")

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def answer(self) -> Answer | None:
        """The next answer, or None if the server closed the connection first."""
        try:
            status_line = self.reader.readline()
            if not status_line:
                return None
            headers = {}
            while (line := self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = self.reader.read(int(headers.get("content-length", 0)))
        except ConnectionResetError:
            return None
        return Answer(int(status_line.split()[1]), headers, body)

    def answers(self) -> list[Answer]:
        """Every answer until the server closes the connection."""
        found = []
        while (answer := self.answer()) is not None:
            found.append(answer)
        return found

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def with_id(raw: bytes, request_id: str) -> bytes:
    """`raw` with an X-Request-ID header added to its head."""
    head, _, rest = raw.partition(b"\r\n")
    return head + f"\r\nX-Request-ID: {request_id}".encode() + b"\r\n" + rest


def logged(served: Served, request_id: str, wait: float = 5.0) -> list[dict[str, Any]]:
    """The access-log lines of a request id (a moment after its answer: the drain copies)."""
    deadline = time.monotonic() + wait
    while True:
        found = [line for line in output_lines(served) if line.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def refusals(served: Served) -> dict[tuple[str, str], float]:
    """gitml_refusals_total by (listener, reason), from the metrics port."""
    text = httpx.get(f"{served.metrics_url}/metrics", timeout=10).text
    found = re.findall(r'gitml_refusals_total\{listener="(\w+)",reason="(\w+)"\} (\S+)', text)
    return {(listener, reason): float(value) for listener, reason, value in found}


def counted(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> dict:
    return {
        key: value - before.get(key, 0)
        for key, value in after.items()
        if value != before.get(key, 0)
    }


def test_pipelined_requests_are_answered_in_order_each_by_its_own_status(
    each_server: Hostile,
) -> None:
    """Requests sent back to back, the read ending part-way into a later request's head after
    bodies that alone exceed the head limit: each is answered, in order, with its own
    status (the head limit counts the current head only: no false 431)."""
    many = rows(*[EXAMPLE_ROW] * 150)  # ~25 KB, more than the head limit
    sent = [
        (predict(many), 200),
        (request("GET", "/healthz"), 200),
        (predict(rows(row(extra=1))), 422),
        (request("GET", "/nowhere"), 404),
        (predict(many), 200),
        (request("GET", "/predict"), 405),
        (predict(rows(EXAMPLE_ROW)), 200),
    ]
    raw = b"".join(with_id(each, f"pipe-{n}") for n, (each, _) in enumerate(sent))
    connection = Connection(each_server)
    connection.send(raw[:-9])  # the last head unfinished: the server reads what came
    time.sleep(0.3)
    connection.send(raw[-9:])
    answers = [connection.answer() for _ in sent]
    connection.close()
    assert [a.status if a else None for a in answers] == [status for _, status in sent]
    assert [a.headers["x-request-id"] for a in answers if a] == [
        f"pipe-{n}" for n in range(len(sent))
    ]
    for n, (_, status) in enumerate(sent):
        assert [line["status"] for line in logged(each_server.served, f"pipe-{n}")] == [status]
    assert_healthy(each_server.served)


MALFORMED = {
    "a bare LF in a header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n",
    "a request target that is not a URL": b"GET http://a:b/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "a chunk size that is not hex": predict(
        b"zz\r\n{}\r\n0\r\n\r\n", **{"Transfer-Encoding": "chunked"}
    ),
}


@pytest.mark.parametrize("malformed", list(MALFORMED))
def test_a_malformed_request_in_a_pipeline_is_refused_after_the_earlier_answers(
    each_server: Hostile, malformed: str
) -> None:
    """The 400 comes after the answers to the requests before it (a client pairs answers
    with requests in order), then the connection ends: the request after it is never read.
    The access log holds what each client received, and nothing for the rest."""
    tag = f"mal-{time.time_ns()}"
    before = refusals(each_server.served)
    connection = Connection(each_server)
    connection.send(
        with_id(predict(rows(EXAMPLE_ROW)), f"{tag}-0")
        + with_id(request("GET", "/healthz"), f"{tag}-1")
        + with_id(MALFORMED[malformed], f"{tag}-2")
        + with_id(predict(rows(EXAMPLE_ROW)), f"{tag}-3")
    )
    answers = connection.answers()
    connection.close()
    assert [a.status for a in answers] == [200, 200, 400]
    assert [a.headers["x-request-id"] for a in answers[:2]] == [f"{tag}-0", f"{tag}-1"]
    assert re.search(r"Invalid HTTP request", answers[2].reason())
    refused = logged(each_server.served, answers[2].headers["x-request-id"])
    assert [(line["status"], line["refused"]) for line in refused] == [(400, "malformed")]
    assert logged(each_server.served, f"{tag}-2", wait=0) == []  # the app never answered it
    assert logged(each_server.served, f"{tag}-3", wait=0) == []
    assert counted(before, refusals(each_server.served)) == {("api", "malformed"): 1}
    assert_healthy(each_server.served)


def test_a_half_closed_client_is_answered_and_one_that_leaves_is_logged_499(
    each_server: Hostile,
) -> None:
    """A client that shuts its sending side after a whole request still gets the answer; one
    that shuts it mid-body gets none, and the access log says 499 (client closed request),
    never a status nobody received."""
    tag = f"half-{time.time_ns()}"
    whole = Connection(each_server)
    whole.send(with_id(predict(rows(EXAMPLE_ROW)), f"{tag}-whole"))
    whole.sock.shutdown(socket.SHUT_WR)
    answers = whole.answers()
    whole.close()
    assert [(a.status, a.headers["x-request-id"]) for a in answers] == [(200, f"{tag}-whole")]
    assert [line["status"] for line in logged(each_server.served, f"{tag}-whole")] == [200]
    body = rows(EXAMPLE_ROW)
    cut = Connection(each_server)
    cut.send(with_id(predict(body), f"{tag}-cut")[: -len(body) // 2])
    time.sleep(0.2)  # the head is read, and the app waits on the body
    cut.sock.shutdown(socket.SHUT_WR)
    assert cut.answers() == []
    cut.close()
    assert [line["status"] for line in logged(each_server.served, f"{tag}-cut")] == [499]
    assert_healthy(each_server.served)


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


UPGRADES = {
    # a websocket handshake on the predict route, with a body
    "websocket": {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
    # what `curl --http2` sends on http://, its body chunked here
    "h2c": {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
            "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA", "Transfer-Encoding": "chunked"},
}  # fmt: skip


@pytest.mark.parametrize("upgrade", list(UPGRADES))
def test_an_upgrade_is_ignored_and_the_request_answered_in_plain_http(
    each_server: Hostile, upgrade: str
) -> None:
    """No upgrade path on a server that serves none: the request, body included, gets its
    plain answer (the same prediction as without the Upgrade), and the connection goes on."""
    headers = UPGRADES[upgrade]
    body = rows(EXAMPLE_ROW)
    framed = chunked(body) if "Transfer-Encoding" in headers else body
    plain = exchange(each_server, predict(body))
    connection = Connection(each_server)
    connection.send(predict(framed, **headers) + request("GET", "/healthz"))
    first, second = connection.answer(), connection.answer()
    connection.close()
    assert first is not None and second is not None
    assert (first.status, first.body) == (200, plain.body)
    assert "upgrade" not in first.headers
    assert second.status == 200
    assert_healthy(each_server.served)


def test_held_upgrade_requests_are_answered_and_leave_room_for_others(hostile: Hostile) -> None:
    """Connections each sending an upgrade request with a small body once (the websocket
    protocol used to hold them open past the read deadline, unanswered, and 400 of them turned
    every other request into a 503): each gets its answer, and other clients theirs."""
    raw = predict(rows(EXAMPLE_ROW), **UPGRADES["websocket"])
    clients = open_connections(hostile, IN_FLIGHT // 2)
    for sock in clients:
        sock.sendall(raw)
    assert exchange(hostile, predict(rows(EXAMPLE_ROW))).status == 200
    started = time.monotonic()
    answers = answers_of(clients)  # each closed by the server within the keep-alive timeout
    assert time.monotonic() - started < READ_TIMEOUT + 3
    assert {a[:12] for a in answers} == {b"HTTP/1.1 200"}
    assert_healthy(hostile.served)


def dribble(hostile: Hostile, first: bytes, each: bytes) -> float:
    """Send `first`, then `each` every 0.3 s until the server closes the connection: the
    seconds it stayed open."""
    started = time.monotonic()
    with socket.create_connection((hostile.host, hostile.port), timeout=1) as sock:
        sock.sendall(first)
        while time.monotonic() - started < READ_TIMEOUT + 10:
            try:
                if sock.recv(1 << 16) == b"":
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                break
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(each)
            time.sleep(0.3)
    return time.monotonic() - started


DRIBBLES = {
    "nothing at all": (b"", b""),
    "empty lines": (b"\r\n", b"\r\n"),
    "a head, a byte at a time": (b"GET /healthz HTTP/1.1\r\n", b"X"),
    "an upgrade request, then bytes": (
        request("GET", "/healthz", headers=UPGRADES["websocket"]),
        b"\x81\x05hello",
    ),
}


@pytest.mark.slow
def test_no_connection_outlives_the_read_deadline_without_a_whole_request(
    hostile: Hostile,
) -> None:
    """Each pattern on a connection of its own, all at once (each waits out the deadline)."""
    held: dict[str, float] = {}

    def run(name: str) -> None:
        held[name] = dribble(hostile, *DRIBBLES[name])

    threads = [threading.Thread(target=run, args=(name,)) for name in DRIBBLES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(seconds < READ_TIMEOUT + 2.5 for seconds in held.values()), held
    assert set(held) == set(DRIBBLES)
    assert_healthy(hostile.served)


@pytest.mark.slow
def test_idle_connections_do_not_starve_active_ones(hostile: Hostile) -> None:
    """500 silent connections on the API port (more than its GITML_MAX_CONNECTIONS) and 80
    on the metrics port (more than it allows): predictions and scrapes are still answered,
    and the idle connections closed to make room are counted."""
    served, before = hostile.served, refusals(hostile.served)
    metrics_port = int(served.metrics_url.rsplit(":", 1)[1])
    idle = open_connections(hostile, 500)
    idle += [socket.create_connection((hostile.host, metrics_port)) for _ in range(80)]
    for _ in range(5):
        assert exchange(hostile, predict(rows(EXAMPLE_ROW))).status == 200
        assert httpx.get(f"{served.metrics_url}/metrics", timeout=5).status_code == 200
    for sock in idle:
        sock.close()
    closed = counted(before, refusals(served))
    assert closed[("api", "idle_closed")] >= 500 - MAX_CONNECTIONS
    assert closed[("metrics", "idle_closed")] >= 80 - 64
    assert_healthy(served)


def refused_soon(hostile: Hostile, make: Any) -> tuple[Answer, int]:
    """The first answer that is not a 200 to requests `make(n)` sent one after another, for
    up to a second: the slow clients just opened may take a moment to reach a busy server.
    And how many requests were answered before it."""
    deadline = time.monotonic() + 1.0
    tries = 0
    while (answer := exchange(hostile, make(tries))).status == 200 and time.monotonic() < deadline:
        tries += 1
        time.sleep(0.05)
    return answer, tries


@pytest.mark.slow
def test_with_every_connection_holding_a_request_a_new_one_gets_a_503(hostile: Hostile) -> None:
    """Connections that hold a request (here unfinished heads) are never closed to make room:
    past GITML_MAX_CONNECTIONS a new connection is refused at once, and counted."""
    served, before = hostile.served, refusals(hostile.served)
    clients = open_connections(hostile, MAX_CONNECTIONS)
    for sock in clients:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
    answer, _ = refused_soon(hostile, lambda _: request("GET", "/healthz"))
    assert answer.status == 503 and answer.headers["retry-after"] == "1"
    assert re.search(r"too many connections", answer.reason())
    answers_of(clients)  # 408s, at the read deadline
    assert counted(before, refusals(served)) == {
        ("api", "connections"): 1, ("api", "head_timeout"): MAX_CONNECTIONS
    }  # fmt: skip
    assert_healthy(served)


@pytest.mark.slow
def test_requests_beyond_the_limit_in_progress_get_a_503_and_health_answers(
    hostile: Hostile,
) -> None:
    """GITML_LIMIT_CONCURRENCY counts requests in progress: with that many bodies on their
    way, another request is a 503 at once, with Retry-After, logged and counted; /healthz
    still answers; once they are gone, requests are answered again."""
    served, before = hostile.served, refusals(hostile.served)
    clients = open_connections(hostile, IN_FLIGHT)
    for sock in clients:
        sock.sendall(predict(b"", **{"Content-Length": "100"}) + b"{")
    tag = f"busy-{time.time_ns()}"
    busy, tries = refused_soon(
        hostile, lambda n: with_id(predict(rows(EXAMPLE_ROW)), f"{tag}-{n}")
    )
    assert busy.status == 503 and busy.headers["retry-after"] == "1"
    assert re.search(r"server busy", busy.reason())
    assert httpx.get(f"{served.url}/healthz", timeout=2).status_code == 200
    [line] = logged(served, f"{tag}-{tries}")
    assert (line["status"], line["refused"]) == (503, "overload")
    for sock in clients:
        sock.close()
    statuses = []  # until the slow ones are gone
    while len(statuses) < 50 and 200 not in statuses:
        statuses.append(exchange(hostile, predict(rows(EXAMPLE_ROW))).status)
        time.sleep(0.1)
    assert statuses[-1] == 200 and set(statuses) <= {200, 503}, statuses
    assert counted(before, refusals(served)) == {("api", "overload"): 1 + statuses.count(503)}
    assert_healthy(served)


def partial_head(hostile: Hostile) -> Answer:
    """A head that never ends: the 408 it gets at the read deadline."""
    connection = Connection(hostile)
    connection.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answer = connection.answer()
    connection.close()
    assert answer is not None
    return answer


REFUSALS = {  # reason: what brings it about, the status its client gets
    "malformed": (lambda h: exchange(h, request("BREW", "/predict")), 400),
    "head_too_large": (lambda h: exchange(h, CASES["a header of 100 KB"].raw), 431),
    "head_timeout": (partial_head, 408),
    "body_too_large": (lambda h: exchange(h, CASES["a body over the limit, declared"].raw), 413),
    "body_timeout": (lambda h: exchange(h, predict(b"", **{"Content-Length": "10"}) + b"{"), 408),
}


@pytest.mark.parametrize("reason", list(REFUSALS))
def test_every_refusal_is_counted_and_logged(each_server: Hostile, reason: str) -> None:
    """So that an attack shows on the dashboards and an alert can fire
    (deploy/prometheus/alerts.yml, GitmlRequestsRefused): each refusal is one count of
    gitml_refusals_total and one access-log line with the status its client received."""
    make, status = REFUSALS[reason]
    before = refusals(each_server.served)
    answer = make(each_server)
    assert answer.status == status
    assert counted(before, refusals(each_server.served)) == {("api", reason): 1}
    [line] = logged(each_server.served, answer.headers["x-request-id"])
    assert (line["status"], line["refused"]) == (status, reason)
    assert_healthy(each_server.served)


def test_trailers_never_change_the_request(each_server: Hostile) -> None:
    """A trailer named X-Request-ID or Content-Type is read and dropped: the id in the answer
    and the logs is the head's, and the body is judged by the head's Content-Type."""
    body = rows(EXAMPLE_ROW)
    framed = b"%x\r\n%s\r\n0\r\nX-Request-ID: from-trailer\r\nContent-Type: text/plain\r\n\r\n" % (
        len(body), body
    )  # fmt: skip
    answer = exchange(
        each_server,
        predict(framed, **{"Transfer-Encoding": "chunked", "X-Request-ID": "from-head"}),
    )
    assert (answer.status, answer.headers["x-request-id"]) == (200, "from-head")
    assert [line["status"] for line in logged(each_server.served, "from-head")] == [200]
    assert "from-trailer" not in each_server.served.output.read_text()
    assert "from-head" in set(read_predictions(each_server.served.log_dir)["request_id"])


@pytest.mark.parametrize("spaces", ["  ", "\t", " \t "])
def test_a_content_length_with_trailing_whitespace_is_read_as_http_says(
    each_server: Hostile, spaces: str
) -> None:
    """RFC 9110 5.5: whitespace around a field value is not part of it."""
    body = rows(EXAMPLE_ROW)
    answer = exchange(each_server, predict(body, **{"Content-Length": f"{len(body)}{spaces}"}))
    assert answer.status == 200, answer.body


def test_an_answer_before_an_expected_body_ends_the_connection(each_server: Hostile) -> None:
    """A client that sent `Expect: 100-continue` and got its answer (here a 413) instead may
    send the body or not: the connection cannot carry another request, so it ends."""
    connection = Connection(each_server)
    connection.send(
        predict(b"", **{"Content-Length": str(MAX_BODY + 1), "Expect": "100-continue"})
    )
    answer = connection.answer()
    rest = connection.answers()
    connection.close()
    assert answer is not None and answer.status == 413
    assert answer.headers.get("connection") == "close" and rest == []
    assert_healthy(each_server.served)
