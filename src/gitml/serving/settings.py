"""The server's settings, read from the environment (GITML_*): a module of its own, light to
import, so that gitml.serving.workers reads them without loading FastAPI, MLEM or the model.
"""

from pathlib import Path
from typing import Optional

from pydantic import BaseSettings, PositiveFloat, PositiveInt, SecretStr

from gitml.config import MLEM_MODEL


class Settings(BaseSettings):
    model_path: Path = MLEM_MODEL
    model_version: str = ""  # e.g. the GTO version; defaults to the MLEM artifact hash
    host: str = "127.0.0.1"
    port: int = 8080
    # A listening socket inherited from the caller, served instead of host:port: whoever
    # starts the server holds the port from the start, so no other process can take it between
    # choosing a spare port and binding it (gitml.release.deploy's candidates, the tests' servers).
    fd: Optional[int] = None  # noqa: UP045 (pydantic 1 reads it at runtime)
    # GET /metrics on a port of its own (host as above), for Prometheus inside the cluster and
    # never through the public Service; 0: not served. metrics_fd: an inherited socket, as fd.
    metrics_port: int = 0
    metrics_fd: Optional[int] = None  # noqa: UP045
    max_rows: int = 1000
    max_body_bytes: int = 1 << 20  # ~1000 rows of ~170 bytes, with headroom
    max_errors: int = 20  # validation errors listed in a 422; checking stops after them
    max_header_bytes: int = 16 * 1024  # request line and headers (uvicorn's h11 default)
    read_timeout_s: float = 10.0  # a request's head and body must arrive within this
    keep_alive_timeout_s: float = 5.0  # an idle connection is closed after this
    # Requests in progress in a process (the health check aside); more get a 503 at once.
    # Bounds memory: each may hold a body of up to max_body_bytes.
    limit_concurrency: PositiveInt = 128
    # Open connections per process. Past it, those holding no request (silent, or idle between
    # requests) are closed, idlest first; with none idle, a new connection gets a 503. Lowered
    # to fit the process's descriptor limit (ulimit -n).
    max_connections: PositiveInt = 1024
    access_log: bool = True  # one JSON line per request on stdout
    docs: bool = False  # /docs, /redoc (browser pages loading CDN assets) and /interface.json
    # The shared secret that marks a request synthetic (smoke checks, whose rows the monitor
    # leaves out) when sent as X-Gitml-Synthetic; unset: every request is traffic.
    synthetic_token: SecretStr = SecretStr("")
    # Where every answered row is appended (gitml.serving.predlog); unset: no prediction log.
    prediction_log_dir: Optional[Path] = None  # noqa: UP045 (pydantic 1 reads it at runtime)
    instance: str = ""  # the log files' name prefix; default the host (a pod's) name
    # Where the log's closed files are shipped (gitml.serving.shipping), then removed here:
    # s3://bucket/prefix (gs:// and az:// with gcsfs or adlfs installed) or a folder; unset:
    # they stay in prediction_log_dir. With it, files roll every prediction_log_rotate_s, and
    # at most prediction_log_spool_max_bytes wait here unshipped (past it, rows go unlogged,
    # counted in gitml_prediction_log_errors_total). On SIGTERM, after the workers have
    # finished, what is left is shipped for at most prediction_log_flush_timeout_s.
    prediction_log_url: str = ""
    prediction_log_rotate_s: PositiveFloat = 60.0
    prediction_log_ship_interval_s: PositiveFloat = 5.0
    prediction_log_spool_max_bytes: PositiveInt = 256 << 20
    prediction_log_flush_timeout_s: PositiveFloat = 15.0
    # Server processes sharing the listening sockets (the kernel hands each new connection to
    # one of them). A predict holds the GIL for most of its time, so one process uses one core
    # at most: set it to the cores the server may use (the Deployment's cpu request), which
    # os.cpu_count() does not know in a container (it sees the node's). 1: no worker
    # processes, this one serves.
    workers: PositiveInt = 1
    # Rows one predict may gather from requests waiting at the same time in a worker
    # (gitml.serving.batching): a 1-row predict costs most of a 100-row one. 1: each alone.
    batch_rows: PositiveInt = 1000
    # Predict with the model's compiled form (gitml.serving.compiled) where it agrees with the
    # model's own predict at start-up; false: always the model's own predict.
    compiled: bool = True

    class Config:
        env_prefix = "GITML_"
