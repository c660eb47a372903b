"""Loopback ports for the servers this project starts (deploy, tests, benchmarks)."""

import socket


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (it may be taken by the time it is
    used: to start a server on a spare port, use reserve_port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reserve_port() -> socket.socket:
    """A socket listening on a spare loopback port, for a server process to inherit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock
