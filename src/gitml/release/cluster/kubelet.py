"""One pod's life, as a kubelet runs it: pull the image (always, so the registry decides), run
the container locked down (runtime.run_args), probe it (the startupProbe until it passes, then
readiness and liveness, httpGet, with their delays, periods and thresholds), restart it with a
back-off when it exits or fails a probe, and on deletion run its preStop hook and stop it within
its grace period. A pod counts as ready from its readinessProbe's first success on."""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from gitml.release.cluster.runtime import Pod, Podman, PodmanError, PodSpecError, run_args

Doc = dict[str, Any]
BACKOFF = (2.0, 300.0)  # the restart and pull back-off: first, longest
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


@dataclass
class PodState:
    pod: Pod
    owner: tuple[str, str]  # (namespace, deployment)
    template_hash: str
    container: str  # podman's name for it
    reason: str = "ContainerCreating"
    message: str = ""
    ports: dict[int, int] = field(default_factory=dict)  # container port -> loopback port
    ready_since: float | None = None
    restarts: int = 0
    deleting: threading.Event = field(default_factory=threading.Event)

    @property
    def spec(self) -> Doc:
        return dict(self.pod.spec["containers"][0])

    def ready(self) -> bool:
        return self.ready_since is not None and not self.deleting.is_set()

    def container_port(self, port: Any) -> int | None:
        """A port by number, or by the name the container gives it."""
        if isinstance(port, int):
            return port
        named = {p.get("name"): int(p["containerPort"]) for p in self.spec.get("ports") or []}
        return named.get(port)

    def status(self) -> Doc:
        """The Pod object `kubectl get pods -o json` shows."""
        reason = "Terminating" if self.deleting.is_set() else self.reason
        running = reason == "Running"
        state = {"running": {}} if running else {
            "waiting": {"reason": reason, "message": self.message}}  # fmt: skip
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.pod.name, "namespace": self.pod.namespace,
                         "labels": self.pod.labels, "annotations": self.pod.annotations},
            "spec": self.pod.spec,
            "status": {
                "phase": "Running" if running else "Pending",
                "conditions": [{"type": "Ready", "status": str(self.ready())}],
                "containerStatuses": [{"name": self.spec["name"], "image": self.spec["image"],
                                       "ready": self.ready(), "restartCount": self.restarts,
                                       "state": state}],
            },
        }  # fmt: skip


class Kubelet:
    def __init__(self, podman: Podman, clock: Callable[[], float] = time.monotonic) -> None:
        self.podman, self.clock = podman, clock

    def start(self, state: PodState) -> None:
        threading.Thread(target=self.run, args=(state,), daemon=True).start()

    def run(self, state: PodState) -> None:
        backoff = BACKOFF[0]
        while not state.deleting.is_set():
            self.attempt(state)
            state.ready_since = None
            state.deleting.wait(backoff)
            backoff = min(backoff * 2, BACKOFF[1])
        state.ready_since = None
        grace = int(state.pod.spec.get("terminationGracePeriodSeconds", 30))
        hook = ((state.spec.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}
        self.podman.stop(state.container, grace, hook.get("command"))
        state.reason = "Terminated"

    def attempt(self, state: PodState) -> None:
        """Pull, run and probe the container once, until it ends; say why in `state`."""
        container = state.spec
        try:
            user = self.podman.pull(container["image"])
        except PodmanError as err:
            state.reason, state.message = "ImagePullBackOff", str(err).removeprefix("Error: ")
            return
        try:
            args = run_args(state.pod, container, user)
            self.podman.run(state.container, container["image"], args,
                            list(container.get("args") or []))  # fmt: skip
            state.ports = self.podman.published(state.container)
        except PodSpecError as err:
            state.reason, state.message = "CreateContainerConfigError", str(err)
            return
        except PodmanError as err:
            state.reason, state.message = "RunContainerError", str(err).removeprefix("Error: ")
            return
        state.reason, state.message = "Running", ""
        self.probe(state, container)
        if not state.deleting.is_set():
            state.restarts += 1
            state.reason = "CrashLoopBackOff"

    def probe(self, state: PodState, container: Doc) -> None:
        """Probe until the container exits, fails its startup or liveness probe, or is deleted.
        The startupProbe runs until it passes; readiness and liveness only after it."""
        probes = {name: container[name] for name in PROBES if name in container}
        begun = self.clock()
        due = {name: begun + float(p.get("initialDelaySeconds", 0)) for name, p in probes.items()}
        streaks: dict[str, tuple[bool, int]] = {}
        started, looked = "startupProbe" not in probes, begun
        while not state.deleting.wait(0.25):
            if self.clock() - looked >= 2:
                looked = self.clock()
                running, code = self.podman.state(state.container)
                if not running:
                    state.message = f"exited with {code}"
                    return
            for name, probe in probes.items():
                if self.clock() < due[name] or (name == "startupProbe") == started:
                    continue
                due[name] = self.clock() + float(probe.get("periodSeconds", 10))
                ok = self.http_probe(state, probe)
                last, count = streaks.get(name, (ok, 0))
                streaks[name] = (ok, count + 1 if last == ok else 1)
                needed = int(probe.get("successThreshold", 1) if ok else
                             probe.get("failureThreshold", 3))  # fmt: skip
                if streaks[name][1] < needed:
                    continue
                if name == "readinessProbe":
                    state.ready_since = (state.ready_since or self.clock()) if ok else None
                elif ok:
                    started = started or name == "startupProbe"
                else:  # a failed startup or liveness probe: the container is restarted
                    state.message = f"{name} failed {streaks[name][1]} times"
                    self.podman.stop(state.container, 0, None)
                    return
            if started and "readinessProbe" not in probes and state.ready_since is None:
                state.ready_since = self.clock()

    def http_probe(self, state: PodState, probe: Doc) -> bool:
        check = probe.get("httpGet")
        if check is None:
            raise PodSpecError("only httpGet probes are supported by the local cluster")
        port = state.container_port(check["port"])
        if port not in state.ports:
            return False
        url = f"http://127.0.0.1:{state.ports[port]}{check.get('path', '/')}"
        try:
            answer = httpx.get(url, timeout=float(probe.get("timeoutSeconds", 1)))
        except httpx.HTTPError:
            return False
        return 200 <= answer.status_code < 400
