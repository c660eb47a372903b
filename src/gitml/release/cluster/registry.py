"""An OCI registry on loopback: Debian's `docker-registry` (distribution 2.8), its storage in a
folder of its own, on a port given or spare. buildah pushes to it and podman pulls by digest
from it, as a cluster's nodes pull from GHCR. Standard library only (the workflow harness's
`docker` stand-in asks it for digests)."""

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# What `docker buildx imagetools inspect` accepts: single images and indexes, Docker's and OCI's
MANIFESTS = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])  # fmt: skip
CONFIG = """\
version: 0.1
log: {{level: warn}}
storage:
  filesystem: {{rootdirectory: {root}}}
  delete: {{enabled: true}}
http: {{addr: "127.0.0.1:{port}"}}
"""


class RegistryError(RuntimeError):
    """The registry did not start or answer; the message says why."""


@dataclass
class Registry:
    address: str  # 127.0.0.1:PORT
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(directory: Path, port: int = 0, attempts: int = 5) -> Registry:
    """Serve a registry from `directory` on `port` (0: a spare one, retried if taken meanwhile)."""
    if shutil.which("docker-registry") is None:
        raise RegistryError("docker-registry is not installed (make cluster-tools; Debian: "
                            "apt-get install docker-registry)")  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        chosen = port or spare_port()
        config = directory / "config.yml"
        config.write_text(CONFIG.format(root=directory / "data", port=chosen))
        log = open(directory / "registry.log", "ab")  # noqa: SIM115 (the server's own)
        process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        registry = Registry(f"127.0.0.1:{chosen}", process)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            try:
                urllib.request.urlopen(f"http://{registry.address}/v2/", timeout=2).close()
                return registry
            except OSError:
                time.sleep(0.2)
        registry.stop()
        if port:
            break
    said = (directory / "registry.log").read_text(errors="replace")[-2000:]
    raise RegistryError(f"docker-registry did not start on 127.0.0.1:{port or 'a spare port'}:"
                        f"\n{said}")  # fmt: skip


def manifest(address: str, reference: str) -> tuple[str, str] | None:
    """(digest, media type) of REPOSITORY:TAG or REPOSITORY@DIGEST in the registry at
    `address`, None when it does not hold it."""
    if "@" in reference:
        repository, tag = reference.split("@", 1)
    else:
        repository, _, tag = reference.rpartition(":")
    request = urllib.request.Request(f"http://{address}/v2/{repository}/manifests/{tag}",
                                     method="HEAD", headers={"Accept": MANIFESTS})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.headers["Docker-Content-Digest"], answer.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        said = f"the registry at {address} answered {err.code} for {reference}"
        raise RegistryError(said) from None


def local_reference(image: str, mirrors: dict[str, str]) -> str:
    """ghcr.io/acme/app:tag -> 127.0.0.1:PORT/acme/app:tag, for a mirrored prefix."""
    for prefix, location in mirrors.items():
        if image.startswith(f"{prefix}/"):
            return f"{location}/{image[len(prefix) + 1 :]}"
    return image
