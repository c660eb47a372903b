"""Serving speed and memory (a benchmark, not a test: it prints figures and ratios, never
asserts).

Starts `python -m gitml serve` on loopback with the packaged model (artifacts/mlem, from
`make package`) and the prediction log on, as in production, and measures:
- closed-loop throughput and latency with wrk (1 thread, 4 connections): single rows, then
  batches of 100, with the prediction log on, then off (the log's cost);
- open-loop latency at a constant rate (GITML_BENCH_RATE requests/s): each request is sent on
  its schedule whether or not earlier ones were answered, and its latency counts from the
  scheduled time, so a server that falls behind shows it (wrk's closed loop hides that: a slow
  answer delays the next send instead). The generator runs in a process of its own;
- the server's peak RSS (VmHWM, all its processes) after that load, and after hostile clients
  (slow bodies, a huge header, validation floods: tests/serving/test_hostile.py's slow cases);
- the batch CLI (`python -m gitml predict`) on GITML_BENCH_CLI_ROWS rows: rows/s, peak RSS;
- the same packaged model's in-process predict (model.predict on a DataFrame of 1 and of 100
  rows, in a loop: what a caller of the model in Python gets), measured before and after the
  HTTP runs, so the HTTP figures show as ratios of it;
- the serving image's size, where one is built;
- side by side, under the same wrk load: MLEM's own server (`mlem serve fastapi`, one
  process), ours, and a bare ASGI app on the same uvicorn + httptools that reads each request
  and answers a constant (`bare_app`, as many workers as ours). With the compiled predictor's
  in-process rate, a server that added nothing to it and to the bare stack would answer
  1 / (1/bare + 1/compiled) requests/s; ours is printed as a share of that.

Each figure carries the machine's 1-minute load average at its start: the benchmark shares
the machine with whatever else runs, and a loaded machine gives lower figures.

GITML_BENCH_BASELINE=<git ref> runs the same load against that ref's server and CLI (its
source from a temporary `git worktree`, on PYTHONPATH, with this venv and this packaged
model): a "before" column from the same machine in the same run. Run with
`make bench-serving`; GITML_BENCH_PEERS_ONLY=true runs the side-by-side block alone.
"""

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from pydantic import BaseSettings

from gitml.config import MLEM_MODEL, PROJ_ROOT, split_path
from gitml.files import read_parquet
from gitml.ports import free_port
from gitml.schema import FEATURES, as_model_input
from gitml.serving.packaging import fast_predictor, load_model
from gitml.serving.predlog import PredictionLog


class Bench(BaseSettings):
    seconds: int = 10  # each wrk run
    port: int = 0  # the servers' loopback port; 0: a spare one
    workers: int = os.cpu_count() or 1  # the server's GITML_WORKERS: a process per core here
    rate: float = 50.0  # the open-loop run: requests per second, one row each
    open_seconds: float = 20.0
    baseline: str = ""  # a git ref: its server and CLI get the same load ("before")
    cli_rows: int = 1_000_000
    image: str = "localhost/gitml-serving:latest"  # its size is printed, when it exists
    baseline_image: str = ""
    peers: bool = True  # the side-by-side runs of MLEM's server and the bare stack
    peers_only: bool = False  # only those (a few minutes)
    peer_rounds: int = 2  # rounds of the bare stack and ours; each keeps its best

    class Config:
        env_prefix = "GITML_BENCH_"


KEEP_ALIVE = 4.0  # the open-loop generator drops connections idle this long (server: 5 s)
READ_TIMEOUT = 2.0  # the server's GITML_READ_TIMEOUT_S: slow clients are cut off fast
MAX_BODY = 1 << 20  # GITML_MAX_BODY_BYTES, the default


def rows(size: int) -> list[dict[str, Any]]:
    frame = as_model_input(read_parquet(split_path("test")).head(size))
    return json.loads(frame.to_json(orient="records"))  # type: ignore[no-any-return]


def in_process_rate(
    predict: Callable[[pd.DataFrame], Any], size: int, seconds: float = 5.0
) -> float:
    """Rows per second through `predict` (the model's own) on DataFrames of `size` rows."""
    frame = pd.DataFrame(rows(size))
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predict(frame)
        calls += 1
    return calls * size / (time.perf_counter() - started)


def cpu_ms_per_row(predict: Callable[[pd.DataFrame], Any], seconds: float = 3.0) -> float:
    """CPU milliseconds `predict` spends on a 1-row DataFrame: unlike a rate, hardly moved by
    whatever else runs on the machine."""
    frame = pd.DataFrame(rows(1))
    calls, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        predict(frame)
        calls += 1
    return (time.process_time() - cpu) * 1000 / calls


def load_average() -> float:
    """The machine's 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process and its children (a server's workers)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    total = 0
    for each in [pid, *map(int, children.split())]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def wrk(url: str, body: dict[str, Any], seconds: int, pid: int | None = None) -> dict[str, float]:
    """Requests/s and p50/p99 latency (ms) from a wrk run: 1 thread, 4 connections; the load
    average at its start; and with the server's `pid`, its CPU milliseconds per request."""
    load = load_average()
    cpu = cpu_seconds(pid) if pid else 0.0
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')  # fmt: skip
    output = subprocess.run(
        ["wrk", "-t1", "-c4", f"-d{seconds}s", "--latency", "-s", script.name, f"{url}/predict"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    Path(script.name).unlink()
    if "Non-2xx" in output:
        raise RuntimeError(f"the server answered errors under load:\n{output}")

    def millis(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    found = {"rps": rps, "p50": millis("50%"), "p99": millis("99%"), "load": load}
    if pid:
        requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
        found["cpu_ms"] = (cpu_seconds(pid) - cpu) * 1000 / requests
    return found


# --- the open-loop generator (its own process: `python -m benchmarks.serving open-loop ...`)


async def _open_loop(host: str, port: int, body: bytes, rate: float, seconds: float) -> dict:
    """Send `rate` requests/s for `seconds` on a fixed schedule over a pool of keep-alive
    connections (a new one whenever none is idle), each latency from its scheduled time."""
    request = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
    # idle connections and when each was last used: one idle for longer than the server's
    # keep-alive timeout (5 s) may be closed under our feet, so it is dropped, as clients do
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    latencies: list[float] = []
    errors: list[str] = []
    lags: list[float] = []
    loop = asyncio.get_running_loop()

    async def one(scheduled: float) -> None:
        while idle and (loop.time() - idle[0][2] > KEEP_ALIVE or idle[0][0].at_eof()):
            idle.pop(0)[1].close()
        try:
            if idle:
                reader, writer, _ = idle.pop()
            else:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append(loop.time() - scheduled)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0].decode())
            if b"connection: close" in head.lower():
                writer.close()
            else:
                idle.append((reader, writer, loop.time()))
        except (OSError, asyncio.IncompleteReadError, AttributeError) as err:
            errors.append(type(err).__name__)

    tasks = []
    count = int(rate * seconds)
    start = loop.time() + 0.1
    for number in range(count):
        scheduled = start + number / rate
        await asyncio.sleep(max(scheduled - loop.time(), 0))
        lags.append(loop.time() - scheduled)
        tasks.append(asyncio.create_task(one(scheduled)))
    sent_for = loop.time() - start
    await asyncio.gather(*tasks)
    for _, writer, _ in idle:
        writer.close()
    ms = np.array(latencies) * 1000
    return {
        "sent": count, "answered": len(latencies), "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "rate": count / sent_for if sent_for else 0.0,
        "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()), "send_lag_p99": float(np.percentile(lags, 99) * 1000),
    }  # fmt: skip


def open_loop(url: str, body: dict[str, Any], rate: float, seconds: float) -> dict[str, float]:
    load = load_average()
    host, port = url.removeprefix("http://").split(":")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as sent:
        sent.write(json.dumps(body))
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", "open-loop", host, port, sent.name,
         str(rate), str(seconds)],
        capture_output=True, text=True, check=True, cwd=PROJ_ROOT,
    ).stdout  # fmt: skip
    Path(sent.name).unlink()
    return {**json.loads(output), "load": load}


# --- hostile clients (a few of tests/serving/test_hostile.py's slow cases, bounded here too,
# since the baseline server may have no limits)


def _predict_head(length: int) -> bytes:
    return (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % length)  # fmt: skip


def _answers(sockets: list[socket.socket], seconds: float) -> list[bytes]:
    """What each socket got before the server closed it, or `seconds` from now passed (a
    server without read deadlines never closes)."""
    deadline, answers = time.monotonic() + seconds, []
    for sock in sockets:
        received = b""
        with contextlib.suppress(OSError):
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                if not (chunk := sock.recv(1 << 16)):
                    break
                received += chunk
        sock.close()
        answers.append(received)
    return answers


def _status(answer: bytes) -> str:
    return answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "none"


def attacks(url: str) -> dict[str, str]:
    """What 60 slow bodies, a 32 MB header and 8 validation floods got back ("none": no
    answer before the client gave up)."""
    host, port = url.removeprefix("http://").split(":")
    address = (host, int(port))
    found: dict[str, str] = {}
    clients = [socket.create_connection(address, timeout=10) for _ in range(60)]
    for sock in clients:  # each body one byte short of what it declared
        with contextlib.suppress(OSError):
            sock.sendall(_predict_head(MAX_BODY) + b" " * (MAX_BODY - 1))
    found["60 slow 1 MiB bodies"] = _summary(_answers(clients, READ_TIMEOUT + 3))
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        with contextlib.suppress(OSError):
            while sent < 32 << 20:
                sock.sendall(b"a" * (1 << 16))
                sent += 1 << 16
        answer = _answers([sock], READ_TIMEOUT + 3)[0]
    found["one 32 MB header"] = f"{_status(answer)} after {sent >> 20} MB sent"
    flood = json.dumps({"data": {"values": [{f"key{i}": 1 for i in range(80)}] * 1000}}).encode()
    statuses: list[bytes] = []

    def send_flood() -> None:
        with socket.create_connection(address, timeout=30) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(_predict_head(len(flood)) + flood)
            statuses.append(_answers([sock], 60)[0])

    threads = [threading.Thread(target=send_flood) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found["8 floods of 1000 rows x 80 unknown keys at once"] = _summary(statuses)
    return found


def _summary(answers: list[bytes]) -> str:
    counts: dict[str, int] = {}
    for answer in answers:
        counts[_status(answer)] = counts.get(_status(answer), 0) + 1
    return ", ".join(f"{count} x {status}" for status, count in sorted(counts.items()))


def health_after(url: str, seconds: float = 60.0) -> str:
    """How long /healthz took to answer after the attacks (a server still busy with them
    answers late, or not within `seconds`)."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        with contextlib.suppress(httpx.TransportError):
            status = httpx.get(f"{url}/healthz", timeout=seconds).status_code
            return f"{status} in {time.perf_counter() - started:.2f} s"
    return f"no answer within {seconds:g} s"


def peak_rss_mb(pid: int) -> float:
    """VmHWM summed over the server's processes (the supervisor and its workers)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    total = 0
    for each in [pid, *map(int, children.split())]:
        status = Path(f"/proc/{each}/status").read_text()
        total += int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    return total / 1024


# --- the peers: MLEM's own server, and a bare ASGI app on the same stack


ANSWER = b"[429.87446529011845]"  # one prediction, as ours answers it


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that adds nothing: it reads the request's body and answers a constant."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": ANSWER})


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], url: str) -> Iterator[int]:
    """A server process, once it answers HTTP at all (any status)."""
    process = subprocess.Popen(command, env=env, cwd=PROJ_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(240):
            with contextlib.suppress(httpx.TransportError):
                httpx.get(url, timeout=2)
                break
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
            time.sleep(0.5)
        yield process.pid
    finally:
        process.terminate()
        process.wait()


def peers(bench: Bench, predict: Callable[[pd.DataFrame], Any]) -> dict[str, Any]:
    """One row per request under the same wrk load: MLEM's own server once (two orders of
    magnitude slower than the rest), then `bench.peer_rounds` rounds of the in-process
    predictor (`predict`), the bare stack and ours (before and after), back to back so that the
    machine's load is alike for all, each keeping its best round: on a shared machine other
    work slows a run down, never speeds it up."""
    single = {"data": {"values": rows(1)}}
    url = f"http://127.0.0.1:{bench.port}"
    env = environment(None)
    mlem = "MLEM's own server (mlem serve fastapi, 1 process)"
    bare = f"bare ASGI app, uvicorn + httptools, {bench.workers} workers"
    commands = {
        mlem: [str(Path(sys.executable).parent / "mlem"), "serve", "fastapi", "-m",
               str(MLEM_MODEL), "--host", "127.0.0.1", "--port", str(bench.port)],
        bare: [sys.executable, "-m", "uvicorn", "benchmarks.serving:bare_app", "--http",
               "httptools", "--workers", str(bench.workers), "--host", "127.0.0.1",
               "--port", str(bench.port), "--no-access-log", "--log-level", "warning",
               "--lifespan", "off"],
    }  # fmt: skip
    found: dict[str, Any] = {"in-process": 0.0, "in-process CPU": float("inf")}

    def keep(name: str, figures: dict[str, float] | str) -> None:
        if isinstance(found.get(name), dict) and (
            isinstance(figures, str) or figures["rps"] <= found[name]["rps"]
        ):
            return
        found[name] = figures

    def run(name: str) -> None:
        try:
            with running(commands[name], env, url) as pid:
                keep(name, wrk(url, single, bench.seconds, pid))
        except (RuntimeError, subprocess.CalledProcessError) as err:
            keep(name, str(err).splitlines()[0])

    run(mlem)
    for _ in range(bench.peer_rounds):
        found["in-process"] = max(found["in-process"], in_process_rate(predict, 1, 3.0))
        found["in-process CPU"] = min(found["in-process CPU"], cpu_ms_per_row(predict))
        run(bare)
        for label, ref in (("before", bench.baseline), ("after", "")):
            if label == "after" or ref:
                with (
                    source_of(ref) as src,
                    tempfile.TemporaryDirectory() as log_dir,
                    server(bench, src, Path(log_dir)) as (served, pid),
                ):
                    name = f"ours, {label} (GITML_WORKERS={bench.workers}, prediction log on)"
                    keep(name, wrk(served, single, bench.seconds, pid))
    return found


def side_by_side(bench: Bench, found: dict[str, Any]) -> None:
    """The peers' figures, ours as a share of the rate of a server that added nothing to the
    bare stack and the in-process predictor, and the CPU time per request ours adds to the
    two (a figure that other work on the machine moves far less than a rate)."""
    print(f"\nside by side: one row per request, wrk -t1 -c4 -d{bench.seconds}s, back to back,"
          f" the best of {bench.peer_rounds} rounds; req/s, p50 and p99 ms, the servers' CPU ms"
          " per request, the load average at the start of the run kept")  # fmt: skip
    in_process, in_cpu = found.pop("in-process"), found.pop("in-process CPU")
    bare = next(figures for name, figures in found.items() if name.startswith("bare"))
    for name, figures in found.items():
        if isinstance(figures, str):
            print(f"  {name:62s} failed: {figures}")
        else:
            print(f"  {name:62s}{figures['rps']:7.0f}{figures['p50']:8.1f}{figures['p99']:8.1f}"
                  f"{figures['cpu_ms']:8.3f}   load {figures['load']:.2f}")  # fmt: skip
    print(f"  {'the in-process predictor, 1 row':62s}{in_process:7.0f}"
          f"{'':16s}{in_cpu:8.3f}")  # fmt: skip
    if isinstance(bare, str):
        return
    nothing = 1 / (1 / bare["rps"] + 1 / in_process)
    nothing_cpu = bare["cpu_ms"] + in_cpu
    print(f"  a server adding nothing: 1 / (1/bare + 1/in-process) = {nothing:.0f} req/s;"
          f" bare + in-process = {nothing_cpu:.3f} CPU ms per request")  # fmt: skip
    for name, figures in found.items():
        if name.startswith("ours") and not isinstance(figures, str):
            print(f"  {name.split(' (')[0]}: {figures['rps'] / nothing:.2f} of its rate (goal: 0.5"
                  f" or more); {figures['cpu_ms'] - nothing_cpu:.3f} CPU ms per request more than"
                  " the two")  # fmt: skip


# --- servers, and a baseline's source


@contextlib.contextmanager
def source_of(ref: str) -> Iterator[Path | None]:
    """`src` of a temporary worktree of `ref` (None: this checkout's, as installed)."""
    if not ref:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="gitml-baseline-"))
    # no hooks: the checkout hook (dvc) belongs to a working copy, not to a source snapshot
    add = ["worktree", "add", "--detach", "-q", str(directory), ref]
    subprocess.run(["git", "-c", "core.hooksPath=/dev/null", *add], cwd=PROJ_ROOT, check=True)
    try:
        yield directory / "src"
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(directory)], cwd=PROJ_ROOT)


def environment(src: Path | None, **settings: str) -> dict[str, str]:
    """The server's environment as the image sets it (OMP_NUM_THREADS=1), the model given by
    path (a baseline's own default would point into its worktree)."""
    env = {**os.environ, "MLEM_NO_ANALYTICS": "true", "GITML_MODEL_PATH": str(MLEM_MODEL)}
    env.pop("GITML_PREDICTION_LOG_DIR", None)  # only where `settings` say
    env.update({f"GITML_{key.upper()}": value for key, value in settings.items()})
    env.setdefault("OMP_NUM_THREADS", "1")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


@contextlib.contextmanager
def server(bench: Bench, src: Path | None, log_dir: Path | None) -> Iterator[tuple[str, int]]:
    """A server on loopback, its access log to a file (as a container runtime keeps it)."""
    settings = {"port": str(bench.port), "workers": str(bench.workers),
                "read_timeout_s": str(READ_TIMEOUT)}  # fmt: skip
    if log_dir is not None:
        settings["prediction_log_dir"] = str(log_dir)
    with tempfile.TemporaryFile() as access_log:
        command = [sys.executable, "-m", "gitml", "serve"]
        process = subprocess.Popen(command, env=environment(src, **settings), stdout=access_log)
        url = f"http://127.0.0.1:{bench.port}"
        try:
            for _ in range(240):
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                time.sleep(0.5)
            yield url, process.pid
        finally:
            process.terminate()
            process.wait()


def load(bench: Bench, src: Path | None) -> dict[str, Any]:
    """Every server-side figure of one version of the code."""
    found: dict[str, Any] = {}
    single, batch = {"data": {"values": rows(1)}}, {"data": {"values": rows(100)}}
    with tempfile.TemporaryDirectory() as log_dir:
        with server(bench, src, Path(log_dir)) as (url, pid):
            found["1"], found["100"] = (
                wrk(url, single, bench.seconds),
                wrk(url, batch, bench.seconds),
            )
            found["open"] = open_loop(url, single, bench.rate, bench.open_seconds)
            found["rss_load"] = peak_rss_mb(pid)
            found["attacks"] = attacks(url)
            found["healthy"] = health_after(url)
            found["rss_attacks"] = peak_rss_mb(pid)
        found["logged"] = sum(
            len(f.read_text().splitlines()) for f in Path(log_dir).rglob("*.jsonl")
        )
    with server(bench, src, None) as (url, _):
        found["1 unlogged"] = wrk(url, single, bench.seconds)
        found["100 unlogged"] = wrk(url, batch, bench.seconds)
    return found


def batch_cli(src: Path | None, size: int, directory: Path) -> dict[str, float]:
    """`python -m gitml predict` on `size` rows of CSV: rows/s and its peak RSS (MB)."""
    source = directory / "rows.csv"
    if not source.exists():
        test = read_parquet(split_path("test"))[list(FEATURES)]
        repeated = pd.concat([test] * (size // len(test) + 1), ignore_index=True).head(size)
        repeated.to_csv(source, index=False)
    output = directory / "predictions.csv"
    command = [sys.executable, "-m", "gitml", "predict", "--input", str(source),
               "--output", str(output), "--model", str(MLEM_MODEL)]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, env=environment(src), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not all children's
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
    return {"rows/s": size / seconds, "rss": usage.ru_maxrss / 1024}


def image_mb(tag: str) -> float | None:
    """The image's size as buildah lists it (decimal units, e.g. "477 MB"), if it exists."""
    listed = subprocess.run(["buildah", "images", "--json", tag], capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout.strip():
        return None
    value, unit = json.loads(listed.stdout)[0]["size"].split()
    return float(value) * {"kB": 1e-3, "MB": 1.0, "GB": 1e3}[unit]


def append_ms(size: int, repeats: int = 200) -> float:
    """Milliseconds one PredictionLog.append of `size` rows takes: the log's own cost."""
    with tempfile.TemporaryDirectory() as log_dir:
        log, batch = PredictionLog(Path(log_dir), "bench"), rows(size)
        started = time.perf_counter()
        for _ in range(repeats):
            log.append("bench", batch, [1.0] * size)
        return (time.perf_counter() - started) / repeats * 1000


# --- the report


def main() -> None:
    bench = Bench()
    bench.port = bench.port or free_port()
    model = load_model(MLEM_MODEL)
    print(f"load average at the start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    first = (0.0, 0.0)
    if not bench.peers_only:
        first = (in_process_rate(model.predict, 1), in_process_rate(model.predict, 100))
    fast, serving = fast_predictor(model, MLEM_MODEL)
    if fast is not None:  # what the server predicts with (gitml.serving.compiled)
        sizes = ", ".join(f"{n} row{'s' * (n > 1)} {in_process_rate(fast, n):.0f} rows/s"
                          for n in (1, 100))  # fmt: skip
        print(f"in-process compiled predictor, on a DataFrame: {sizes}"
              f" (load average {load_average():.2f})")  # fmt: skip
    else:
        print(f"the server predicts with {serving}")
    if bench.peers_only:
        side_by_side(bench, peers(bench, fast or model.predict))
        return
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, ref in (("before", bench.baseline), ("after", "")):
            if label == "before" and not ref:
                continue
            with source_of(ref) as src:
                runs[label] = load(bench, src)
                runs[label]["cli"] = batch_cli(src, bench.cli_rows, Path(scratch))
    last = (in_process_rate(model.predict, 1), in_process_rate(model.predict, 100))
    local = {"1": (first[0] + last[0]) / 2, "100": (first[1] + last[1]) / 2}
    runs["after"]["image"] = image_mb(bench.image)
    if "before" in runs:
        runs["before"]["image"] = image_mb(bench.baseline_image) if bench.baseline_image else None
    report(bench, runs, local, first, last)
    if bench.peers:
        side_by_side(bench, peers(bench, fast or model.predict))


def report(bench: Bench, runs: dict[str, dict[str, Any]], local: dict[str, float],
           first: tuple[float, float], last: tuple[float, float]) -> None:  # fmt: skip
    labels = list(runs)
    print(f"\n{'':44s}" + "".join(f"{label:>12s}" for label in labels)
          + ("   after/before" if len(labels) == 2 else ""))  # fmt: skip

    def line(name: str, values: list[float | None], form: str = "{:12.1f}") -> None:
        cells = "".join(" " * 12 if v is None else form.format(v) for v in values)
        ratio = ""
        if len(values) == 2 and None not in values and values[0]:
            ratio = f"   {values[1] / values[0]:.2f}x"  # type: ignore[operator]
        print(f"{name:44s}{cells}{ratio}")

    def each(*keys: str) -> list[Any]:
        found = []
        for label in labels:
            value: Any = runs[label]
            for key in keys:
                value = None if value is None else value.get(key)
            found.append(value)
        return found

    print(f"in-process predict, 1 row: {local['1']:.0f} rows/s (start {first[0]:.0f}, end "
          f"{last[0]:.0f}); 100 rows: {local['100']:.0f} rows/s (start {first[1]:.0f}, end "
          f"{last[1]:.0f})")  # fmt: skip
    for size in ("1", "100"):
        for logged in ("", " unlogged"):
            key, name = size + logged, f"HTTP {size} row{'s' if size != '1' else ''}"
            name += ", log off" if logged else ", prediction log on"
            line(f"{name}: rows/s", [r * int(size) for r in each(key, "rps")], "{:12.0f}")
            line("  / in-process rows/s", [r * int(size) / local[size] for r in each(key, "rps")],
                 "{:12.2f}")  # fmt: skip
            line("  p50 ms (wrk -t1 -c4, closed loop)", each(key, "p50"))
            line("  p99 ms", each(key, "p99"))
            line("  load average at its start", each(key, "load"), "{:12.2f}")
    print(f"open loop, {bench.rate:g} req/s of 1 row for {bench.open_seconds:g} s, log on:")
    line("  achieved send rate, req/s", each("open", "rate"))
    line("  p50 ms from the scheduled send", each("open", "p50"))
    line("  p99 ms", each("open", "p99"))
    line("  max ms", each("open", "max"))
    line("  errors (non-200 or no answer)", each("open", "errors"), "{:12.0f}")
    found = zip(labels, each("open", "error_kinds"), strict=True)
    kinds = ", ".join(f"{label} {kind}" for label, kind in found if kind)
    if kinds:
        print(f"    {kinds}")
    line("  generator's send lag p99 ms", each("open", "send_lag_p99"), "{:12.2f}")
    line("  load average at its start", each("open", "load"), "{:12.2f}")
    for size in ("1", "100"):
        costs = [logged / plain - 1 for logged, plain in
                 zip(each(size, "rps"), each(size + " unlogged", "rps"), strict=True)]  # fmt: skip
        said = ", ".join(f"{label} {cost:+.1%}" for label, cost in zip(labels, costs, strict=True))
        print(f"prediction log, {size:>3s}-row requests: throughput {said} (noisy); its"
              f" append alone {append_ms(int(size)):.2f} ms")  # fmt: skip
    line("peak RSS after the load, MB (all processes)", each("rss_load"), "{:12.0f}")
    line("peak RSS after the attacks, MB", each("rss_attacks"), "{:12.0f}")
    for attack in runs["after"]["attacks"]:
        print(f"  {attack}: " + "; ".join(f"{label} {runs[label]['attacks'][attack]}"
                                           for label in labels))  # fmt: skip
    print("  /healthz afterwards: " + ", ".join(f"{label} {runs[label]['healthy']}"
                                                for label in labels))  # fmt: skip
    print(f"batch CLI, {bench.cli_rows:,} rows of CSV:")
    line("  rows/s", each("cli", "rows/s"), "{:12.0f}")
    line("  peak RSS MB", each("cli", "rss"), "{:12.0f}")
    line(f"image size MB ({bench.image})", each("image"), "{:12.0f}")
    logged = ", ".join(f"{label}: {n}" for label, n in zip(labels, each("logged"), strict=True))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"(rows logged: {logged}; wrk -d{bench.seconds}s per run; server GITML_WORKERS="
          f"{bench.workers} (a baseline without the setting: one process); {os.cpu_count()} CPUs;"
          f" server and load on one machine; load average at the end: {load})")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["open-loop"]:
        host, port, body, rate, seconds = sys.argv[2:7]
        found = asyncio.run(
            _open_loop(host, int(port), Path(body).read_bytes(), float(rate), float(seconds))
        )
        print(json.dumps(found))
    else:
        main()
