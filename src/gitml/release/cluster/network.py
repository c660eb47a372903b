"""TCP on loopback, as kube-proxy and `kubectl port-forward` carry it: a listener whose every
new connection goes to an endpoint chosen then (a Service: the ready pods it selects now), bytes
relayed both ways until either side closes. Standard library only (the kubectl front uses it)."""

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable

Address = tuple[str, int]


def relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until one side closes, then close both."""

    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for side in (source, sink):  # the other pump's recv returns, and it ends too
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)

    other = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    other.start()
    pump(client, upstream)
    other.join()
    client.close()
    upstream.close()


class Forwarder:
    """Listens on 127.0.0.1:`port` (0: a spare one) and sends each connection to one of
    `endpoints()`, round robin; with none, the connection is closed at once (kube-proxy
    rejects it)."""

    def __init__(self, endpoints: Callable[[], list[Address]], port: int = 0) -> None:
        self.endpoints = endpoints
        self.listener = socket.create_server(("127.0.0.1", port), backlog=128)
        self.port = int(self.listener.getsockname()[1])
        self._turn = itertools.count()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        targets = self.endpoints()
        start = next(self._turn)
        for i in range(len(targets)):
            try:
                upstream = socket.create_connection(targets[(start + i) % len(targets)], 5)
            except OSError:
                continue
            upstream.settimeout(None)
            relay(client, upstream)
            return
        client.close()

    def close(self) -> None:
        self.listener.close()
