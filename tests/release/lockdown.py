"""The serving image run as the Deployment's pod runs it, for the image tests: the pod spec's
securityContext, volumes and ports read from the rendered manifests and turned into `podman run`
arguments by the local cluster's own code (gitml.release.cluster.runtime). Its env is the
image's own plus what a test passes (the Deployment's settings, such as GITML_DOCS=false, are
not the image's defaults under test)."""

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitml.release import k8s
from gitml.release.cluster.runtime import Pod, Podman, run_args


@dataclass
class Container:
    name: str
    process: subprocess.Popen[str]
    ports: dict[str, int]  # the pod spec's port name (http, metrics) -> loopback port
    podman: Podman


LOG_VOLUME = "predictions"  # the Deployment's volume for the prediction log (test_k8s checks it)


def deployment_pod(log_dir: Path) -> tuple[Pod, dict[str, Any]]:
    """The production Deployment's pod, its prediction-log volume on `log_dir`, and its one
    container."""
    deployment = k8s.the(k8s.render("production"), "Deployment")
    template = deployment["spec"]["template"]
    meta = template["metadata"]
    pod = Pod(f"gitml-test-{os.getpid()}-{time.monotonic_ns() % 10**6}", "tests",
              meta["labels"], meta.get("annotations", {}), template["spec"], {}, {},
              {LOG_VOLUME: log_dir})  # fmt: skip
    return pod, template["spec"]["containers"][0]


@contextmanager
def locked_down(
    image: str, log_dir: Path, env: dict[str, str], command: list[str] | None = None
) -> Iterator[Container]:
    """Run `image` (its entrypoint, or `command`) locked down; stopped when the block ends."""
    pod, container = deployment_pod(log_dir)
    args = run_args(pod, {**container, "env": []}, image_user="")
    args += [a for key, value in env.items() for a in ("--env", f"{key}={value}")]
    if command:
        args += ["--entrypoint", json.dumps(command[:1])]
    with tempfile.TemporaryDirectory(prefix="gitml-podman-") as scratch:
        podman = Podman(Path(scratch), f"tests-{os.getpid()}", "127.0.0.1:9", {})
        process = subprocess.Popen(
            ["podman", "run", "--rm", "--name", pod.name, *args, image, *(command or [])[1:]],
            env=podman.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            names = {p["containerPort"]: p["name"] for p in container["ports"]}
            ports: dict[int, int] = {}
            while not ports and process.poll() is None:
                try:
                    ports = podman.published(pod.name)
                except RuntimeError:
                    time.sleep(0.2)  # not created yet
            yield Container(pod.name, process, {names[p]: h for p, h in ports.items()}, podman)
        finally:
            podman("rm", "--force", "--ignore", pod.name)
            process.wait(timeout=60)
