"""A stand-in for the GitHub REST API on loopback, for the stdlib modules that call it with
urllib (gitml.pull_requests.runner, gitml.pull_requests.comment).

GitHub cannot be reached from the tests, and those modules name https://api.github.com
themselves. So the stand-in is an HTTPS proxy: urllib honours HTTPS_PROXY, sends CONNECT to it,
and then speaks real TLS to a certificate for api.github.com signed by a CA made for the test
(trusted through SSL_CERT_FILE). The code under test runs unchanged, certificate checks on.
"""

import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "api.github.com"


def reply_json(handler: Any, status: int, body: object) -> None:
    """Answer a stand-in's request with `body` as JSON (None: an empty body), sized."""
    data = b"" if body is None else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _certificate(subject: str, key: Any, issuer_key: Any, issuer: str, ca: bool) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
        )
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: Any) -> bytes:
    return bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class FakeGitHub:
    """Routes: path (GET) or "METHOD path" -> (status, JSON body, or None for no body).
    `requests`: (method, path, Authorization) seen."""

    proxy_url: str
    ca_file: Path
    routes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # each request's Accept header

    def environment(self) -> dict[str, str]:
        """What a process needs to reach the stand-in instead of GitHub."""
        return {"HTTPS_PROXY": self.proxy_url, "https_proxy": self.proxy_url,
                "NO_PROXY": "", "no_proxy": "", "SSL_CERT_FILE": str(self.ca_file)}  # fmt: skip


def serve(directory: Path) -> Iterator[FakeGitHub]:
    """Start the stand-in (a generator: use it as a fixture body)."""
    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _certificate("gitml test CA", ca_key, ca_key, "gitml test CA", ca=True)
    leaf = _certificate(HOST, leaf_key, ca_key, "gitml test CA", ca=False)
    ca_file, chain_file, key_file = (directory / n for n in ("ca.pem", "leaf.pem", "leaf.key"))
    ca_file.write_bytes(_pem(ca))
    chain_file.write_bytes(_pem(leaf) + _pem(ca))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(chain_file, key_file)
    github: FakeGitHub

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_CONNECT(self) -> None:
            if self.path != f"{HOST}:443":
                self.send_error(403, f"only {HOST} is proxied")
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            # from here on the same connection carries TLS, then the real request
            self.connection = tls.wrap_socket(self.connection, server_side=True)
            self.rfile = self.connection.makefile("rb")
            self.wfile = self.connection.makefile("wb", buffering=0)
            self.close_connection = False

        def do_GET(self) -> None:
            github.requests.append(
                (self.command, self.path, self.headers.get("Authorization", ""))
            )
            github.accepted.append(self.headers.get("Accept", ""))
            route = self.path if self.command == "GET" else f"{self.command} {self.path}"
            status, body = github.routes.get(route, (404, {"message": "Not Found"}))
            reply_json(self, status, body)

        do_DELETE = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: no race for a free port
    github = FakeGitHub(f"http://127.0.0.1:{server.server_address[1]}", ca_file)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield github
    finally:
        server.shutdown()
        server.server_close()
