"""`python -m gitml serve`: the prediction server (gitml.serving.serve) in this process, or
with GITML_WORKERS > 1 in that many worker processes sharing the listening sockets (also with
one worker where the prediction log is shipped: this process ships it).

This module imports no more than the settings: the supervisor holds no model, no FastAPI app
and little memory (25 MB against a worker's 240 to 270 MB).
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any

from gitml.serving.jsonlog import say
from gitml.serving.settings import Settings

# prometheus-client's multiprocess mode (gitml.serving.metrics): read once, when imported
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def listener(fd: int | None, host: str, port: int) -> socket.socket:
    """The inherited socket `fd`, or one bound and listening on host:port."""
    if fd is not None:
        return socket.socket(fileno=fd)  # family and type read from the socket
    # bound here, before anything is served: a taken port fails the start, loudly
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def supervise(settings: Settings) -> int:
    """Serve with `settings.workers` worker processes: this process binds the sockets (or
    takes the inherited ones) and starts each worker on them with GITML_FD and
    GITML_METRICS_FD, its own prediction-log file (GITML_INSTANCE `<instance>-w<n>`) and the
    shared metrics directory. A SIGTERM or SIGINT is passed on to every worker; when one worker
    stops, the others are stopped too and the exit status is that worker's: the container
    restarts as a whole rather than serve on with fewer workers than it was given. With
    GITML_PREDICTION_LOG_URL, this process ships the prediction log (gitml.serving.shipping),
    and last, once every worker has exited, what they left.
    """
    api = listener(settings.fd, settings.host, settings.port)
    env = {**os.environ, "GITML_WORKERS": "1", "GITML_FD": str(api.fileno())}
    fds = [api.fileno()]
    if settings.metrics_fd is not None or settings.metrics_port:
        scraped = listener(settings.metrics_fd, settings.host, settings.metrics_port)
        env["GITML_METRICS_FD"] = str(scraped.fileno())
        fds.append(scraped.fileno())
    # a fresh directory each start: values left by an earlier run must not be counted again
    shared = tempfile.mkdtemp(prefix="gitml-metrics-")
    env[MULTIPROC_ENV] = os.environ[MULTIPROC_ENV] = shared  # the shipper's metrics too
    try:
        shipper = start_shipper(settings)
    except SystemExit:
        shutil.rmtree(shared, ignore_errors=True)
        raise
    instance = settings.instance or socket.gethostname()  # predlog.default_instance
    command = [sys.executable, "-m", "gitml.serving.serve"]
    workers: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()  # SIGTERM: uvicorn finishes the requests in progress

    # before any worker starts: a SIGTERM while they start still reaches every one started
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for number in range(settings.workers):
        if not stopping:
            worker_env = {**env, "GITML_INSTANCE": f"{instance}-w{number}"}
            workers.append(subprocess.Popen(command, env=worker_env, pass_fds=fds))
    status = 0
    try:
        running = {worker.pid: worker for worker in workers}
        while running:
            pid, code = os.wait()
            if running.pop(pid, None) is None:
                continue
            if not stopping:  # a worker stopped on its own: a failure whatever its status
                status = os.waitstatus_to_exitcode(code)  # killed by a signal: negative
                say(f"serve: worker {pid} exited ({status}); stopping", "error")
                status = max(status, 1)
                stop()
    finally:
        if shipper is not None and not shipper.flush(settings.prediction_log_flush_timeout_s):
            status = status or 1
        shutil.rmtree(shared, ignore_errors=True)
    return status


def start_shipper(settings: Settings) -> Any:
    """The prediction log's shipper, where the log is written and GITML_PREDICTION_LOG_URL set;
    a URL naming no store this image can write to stops the start, loudly."""
    if not settings.prediction_log_url:
        return None
    if settings.prediction_log_dir is None:
        sys.exit("serve: GITML_PREDICTION_LOG_URL is set but GITML_PREDICTION_LOG_DIR is not: "
                 "there is no log to ship")  # fmt: skip
    from gitml.serving import shipping  # fsspec and prometheus-client: only where they ship

    try:
        return shipping.start(settings.prediction_log_dir, settings.prediction_log_url,
                              settings.prediction_log_ship_interval_s,
                              settings.prediction_log_spool_max_bytes)  # fmt: skip
    except shipping.StoreError as err:
        sys.exit(f"serve: {err}")


def main() -> None:
    settings = Settings()
    if settings.workers == 1 and not settings.prediction_log_url:
        from gitml.serving import serve  # FastAPI, MLEM and the model: only where they serve

        serve.main(settings)
    else:
        sys.exit(supervise(settings))


if __name__ == "__main__":
    # --help prints this module's docstring; its settings come from the environment
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
