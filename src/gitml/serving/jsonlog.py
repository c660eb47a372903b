"""The server's output as JSON lines, each one whole and ASCII: the access log on stdout, and
its own messages (uvicorn's included, tracebacks folded into one field) on stderr, so that no
byte a client sends can break or forge a line, and a collector parses every line."""

import json
import logging
import sys
import time
from typing import Any, TextIO

_second: list[Any] = [-1, ""]  # the last second formatted, and its text


def now() -> str:
    """The UTC time to the second, ISO 8601 (formatted once a second: every line needs it)."""
    second = int(time.time())
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))]
    return str(_second[1])


def write_line(stream: TextIO, record: dict[str, Any]) -> None:
    """One line of ASCII JSON, flushed; a closed stream must not fail the request."""
    try:
        stream.write(json.dumps(record, ensure_ascii=True) + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def say(message: str, level: str = "info") -> None:
    """A message of the server's own, on stderr."""
    write_line(sys.stderr, {"ts": now(), "level": level, "message": message})


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line; an exception's traceback goes in its `exc` field."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": now(), "level": record.levelname.lower(), "logger": record.name,
                "message": record.getMessage()}  # fmt: skip
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True)


# uvicorn's `log_config`: its loggers, and every other library's (the root logger, Python's
# warnings once captured), through JsonFormatter on stderr; no access log (ours is
# gitml.serving.guards.AccessLog)
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        },
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "uvicorn.access": {"handlers": [], "propagate": False},
    },
}
