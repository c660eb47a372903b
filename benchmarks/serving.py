"""Serving throughput and latency (a benchmark, not a test: it prints, never asserts).

Starts `python -m gitml serve` on loopback with the packaged model (artifacts/mlem, from
`make package`), loads it with wrk (single rows, then batches of 100), with the prediction log
off and on, and measures the same model's in-process predict rate, so the HTTP overhead and
the logging overhead show as ratios. Run with `make bench-serving` (GITML_BENCH_SECONDS sets
each wrk run's length).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

from gitml.config import MLEM_MODEL, split_path
from gitml.schema import as_model_input
from gitml.serving.packaging import load_model
from gitml.serving.predlog import PredictionLog

SECONDS = int(os.environ.get("GITML_BENCH_SECONDS", "10"))
PORT = int(os.environ.get("GITML_BENCH_PORT", "18080"))


def rows(size: int) -> list[dict[str, object]]:
    frame = as_model_input(pd.read_parquet(split_path("test")).head(size))
    return json.loads(frame.to_json(orient="records"))


def in_process_rate(model: object, size: int, seconds: float = 5.0) -> float:
    """Rows per second through model.predict on DataFrames of `size` rows."""
    frame = pd.DataFrame(rows(size))
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict(frame)  # type: ignore[attr-defined]
        calls += 1
    return calls * size / (time.perf_counter() - started)


def wrk(url: str, body: dict[str, object]) -> dict[str, float]:
    """Requests/s and p50/p99 latency (ms) from a wrk run: 1 thread, 4 connections."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')  # fmt: skip
    output = subprocess.run(
        ["wrk", "-t1", "-c4", f"-d{SECONDS}s", "--latency", "-s", script.name, f"{url}/predict"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    Path(script.name).unlink()
    if "Non-2xx" in output:
        raise RuntimeError(f"the server answered errors under load:\n{output}")

    def millis(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": millis("50%"), "p99": millis("99%")}


def serve_and_load(log_dir: Path | None) -> dict[str, dict[str, float]]:
    """Single-row and 100-row wrk runs against a fresh server (prediction log in `log_dir`)."""
    # the server's environment as the image sets it (Dockerfile: OMP_NUM_THREADS=1)
    env = {**os.environ, "GITML_PORT": str(PORT), "MLEM_NO_ANALYTICS": "true"}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("GITML_PREDICTION_LOG_DIR", None)
    if log_dir is not None:
        env["GITML_PREDICTION_LOG_DIR"] = str(log_dir)
    server = subprocess.Popen([sys.executable, "-m", "gitml", "serve"], env=env)
    url = f"http://127.0.0.1:{PORT}"
    try:
        for _ in range(240):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        return {
            "1": wrk(url, {"data": {"values": rows(1)}}),
            "100": wrk(url, {"data": {"values": rows(100)}}),
        }
    finally:
        server.terminate()
        server.wait()


def append_seconds(size: int, repeats: int = 200) -> float:
    """Seconds one PredictionLog.append of `size` rows takes: the log's own cost per request."""
    with tempfile.TemporaryDirectory() as log_dir:
        log, batch = PredictionLog(Path(log_dir), "bench"), rows(size)
        started = time.perf_counter()
        for _ in range(repeats):
            log.append("bench", batch, [1.0] * size)
        return (time.perf_counter() - started) / repeats


def main() -> None:
    model = load_model(MLEM_MODEL)
    plain = serve_and_load(None)
    with tempfile.TemporaryDirectory() as log_dir:
        logged = serve_and_load(Path(log_dir))
        logged_rows = sum(len(f.read_text().splitlines()) for f in Path(log_dir).rglob("*.jsonl"))
    local_single, local_batch = in_process_rate(model, 1), in_process_rate(model, 100)
    print(f"{'':28s} {'req/s':>8s} {'rows/s':>9s} {'p50 ms':>7s} {'p99 ms':>7s}")
    for log_label, runs in (("", plain), (", logged", logged)):
        for size in ("1", "100"):
            run, label = runs[size], f"HTTP, {size} row{'s' if size != '1' else ''}{log_label}"
            rate = run["rps"] * int(size)
            print(f"{label:28s} {run['rps']:8.1f} {rate:9.0f} {run['p50']:7.1f} {run['p99']:7.1f}")
    print(f"{'in-process, 1 row':28s} {'':8s} {local_single:9.0f}")
    print(f"{'in-process, 100 rows':28s} {'':8s} {local_batch:9.0f}")
    single = plain["1"]
    print(f"HTTP / in-process, single rows: {single['rps'] / local_single:.2f}"
          f"  (batches of 100: {plain['100']['rps'] * 100 / local_batch:.2f})")  # fmt: skip
    for size in ("1", "100"):
        cost = 1 - logged[size]["rps"] / plain[size]["rps"]
        p50 = logged[size]["p50"] / plain[size]["p50"] - 1
        append = append_seconds(int(size)) * 1000
        print(f"prediction log, {size:>3s}-row requests: throughput {-cost:+.1%}, p50 {p50:+.1%}"
              f" (under load, noisy); its append alone {append:.2f} ms ="
              f" {append / plain[size]['p50']:.1%} of p50")  # fmt: skip
    print(f"({logged_rows} rows logged; wrk -t1 -c4 -d{SECONDS}s per run; {os.cpu_count()} CPUs;"
          " server and load on one machine)")  # fmt: skip


if __name__ == "__main__":
    main()
