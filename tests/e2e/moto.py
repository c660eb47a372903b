"""moto's S3 server on a spare loopback port: a real S3 protocol endpoint, no cloud account."""

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gitml.ports import free_port


@contextmanager
def moto_s3(port: int = 0, host: str = "127.0.0.1") -> Iterator[str]:
    """The server's endpoint URL while it runs (on `port`, or a spare one); stopped after.
    `host`: the address it listens on (loopback, unless containers must reach it)."""
    port = port or free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", host, "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("moto_server did not start")
        yield f"http://{host}:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
