"""The cluster's state and controllers: what was applied, Deployments rolled out pod by pod as
their strategy says, each pod run by a kubelet thread (pull, run, probe, restart, terminate),
and Services that reach the ready pods they select.

As Kubernetes does it: objects are checked against the API schemas (kubernetes-validate, strict)
and refused whole; a namespace must exist; a Deployment's selector must match its template and
never changes; every new pod template is a new revision (numbered from 1), a template seen before
takes the next number, and so does an undo; a rolling update keeps `maxUnavailable` and
`maxSurge`; a pod counts as available `minReadySeconds` after its readinessProbe passed; a
rollout fails at its `progressDeadlineSeconds`. The HPA and PDB are checked and stored, not run.
"""

import base64
import hashlib
import json
import math
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitml.release.cluster.kubelet import Kubelet, PodState
from gitml.release.cluster.network import Address, Forwarder
from gitml.release.cluster.runtime import Pod, Podman

Doc = dict[str, Any]
KINDS = {  # kind -> (apiVersion, plural as kubectl prints it)
    "Deployment": ("apps/v1", "deployment.apps"),
    "Service": ("v1", "service"),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaim"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscaler.autoscaling"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudget.policy"),
    "Secret": ("v1", "secret"),
}
REVISION = "deployment.kubernetes.io/revision"
ADDRESS = "gitml.local/address"  # a Service's loopback address, on the objects `get` returns
SCHEMAS = "1.30.0"  # kubernetes-validate's bundled schemas (no network)


class ApiError(ValueError):
    """What the API server would answer with an error; the message is kubectl's."""


@dataclass
class ReplicaSet:
    revision: int
    template_hash: str
    template: Doc


def template_hash(template: Doc) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def content(doc: Doc) -> Doc:
    """An object without its metadata: what an apply that changes nothing leaves as it was."""
    return {key: value for key, value in doc.items() if key != "metadata"}


def secret_data(doc: Doc) -> dict[str, str]:
    """A Secret's values: `data` base64-decoded, `stringData` as written (it wins, as the API
    server merges it into `data`)."""
    values = {
        key: base64.b64decode(value).decode() for key, value in (doc.get("data") or {}).items()
    }
    return {**values, **(doc.get("stringData") or {})}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def scaled(value: Any, desired: int, round_up: bool) -> int:
    """maxSurge (rounded up) or maxUnavailable (down): a count, or a percentage of desired."""
    if isinstance(value, str) and value.endswith("%"):
        share = desired * float(value[:-1]) / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(value)


class Cluster:
    """One node's worth of Kubernetes, run by podman. `service_ports` fixes the loopback port of
    a Service ("namespace/name"); others get a spare one, kept while the Service exists.
    `max_replicas` caps every Deployment's pods (a small machine's capacity; None: no cap)."""

    def __init__(
        self,
        podman: Podman,
        directory: Path,
        namespaces: list[str],
        service_ports: dict[str, int] | None = None,
        max_replicas: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.podman, self.directory, self.clock = podman, directory, clock
        self.kubelet = Kubelet(podman, clock)
        self.namespaces = {"default", *namespaces}
        self.service_ports = dict(service_ports or {})
        self.max_replicas = max_replicas
        self.objects: dict[tuple[str, str, str], Doc] = {}  # (kind, namespace, name)
        self.history: dict[tuple[str, str], list[ReplicaSet]] = {}
        self.progress: dict[tuple[str, str], tuple[tuple[int, ...], float]] = {}
        self.pods: dict[tuple[str, str], PodState] = {}
        self.started_pods = False
        self.proxies: dict[tuple[str, str], Forwarder] = {}
        self.lock = threading.RLock()
        self.closed = threading.Event()
        for key in self.service_ports:  # reserved now: a load balancer's address, known before
            self._expose(*key.split("/", 1))
        self.controller = threading.Thread(target=self._control, daemon=True)
        self.controller.start()

    # --- the API -------------------------------------------------------------------------
    def apply(self, docs: list[Doc]) -> list[str]:
        """Create or replace each object; all are checked before any is stored."""
        for doc in docs:
            self._check(doc)
        lines = []
        with self.lock:
            for doc in docs:
                kind, namespace, name = self._key(doc)
                before = self.objects.get((kind, namespace, name))
                verb = "created" if before is None else "configured"
                stored = json.loads(json.dumps(doc))
                if kind == "Deployment":
                    verb = self._store_deployment(stored, before) or verb
                elif before is not None and content(before) == content(stored):
                    verb = "unchanged"
                if verb != "unchanged":
                    self.objects[(kind, namespace, name)] = stored
                if kind == "Service":
                    self._expose(namespace, name)
                if kind == "PersistentVolumeClaim":
                    self._claim_dir(namespace, name).mkdir(parents=True, exist_ok=True)
                    self._claim_dir(namespace, name).chmod(0o777)  # as local-path provisions
                lines.append(f"{KINDS[kind][1]}/{name} {verb}")
            self._reconcile_all()
        return lines

    def deployment(self, namespace: str, name: str) -> Doc:
        found = self.objects.get(("Deployment", namespace, name))
        if found is None:
            raise ApiError(f'Error from server (NotFound): deployments.apps "{name}" not found')
        return found

    def scale(self, namespace: str, name: str, replicas: int) -> str:
        with self.lock:
            deployment = self.deployment(namespace, name)
            if deployment["spec"].get("replicas", 1) != replicas:
                deployment["spec"]["replicas"] = replicas
                deployment["metadata"]["generation"] += 1
            self._reconcile_all()
        return f"deployment.apps/{name} scaled"

    def undo(self, namespace: str, name: str, to_revision: int = 0) -> str:
        """The template of `to_revision` (0: the one before the current) as a new revision."""
        with self.lock:
            deployment = self.deployment(namespace, name)
            history = sorted(self.history[(namespace, name)], key=lambda rs: rs.revision)
            current = int(deployment["metadata"]["annotations"][REVISION])
            older = [rs for rs in history if rs.revision != current]
            if to_revision:
                wanted = [rs for rs in history if rs.revision == to_revision]
                if not wanted:
                    raise ApiError(f"error: unable to find specified revision {to_revision} "
                                   "in history")  # fmt: skip
            elif not older:
                raise ApiError(f'error: no rollout history found for deployment "{name}"')
            target = (wanted if to_revision else older)[-1]
            if target.revision == current:
                return f"deployment.apps/{name} skipped rollback (current template already "\
                       "matches revision {to_revision})"  # fmt: skip
            rolled = json.loads(json.dumps(deployment))
            rolled["spec"]["template"] = json.loads(json.dumps(target.template))
            self._store_deployment(rolled, deployment)
            self._reconcile_all()
        return f"deployment.apps/{name} rolled back"

    def rollout_status(self, namespace: str, name: str, timeout: float) -> tuple[bool, list[str]]:
        """Wait until every replica runs the current template and is available: (done, what
        kubectl prints)."""
        deadline, said = self.clock() + timeout, list[str]()
        while True:
            with self.lock:
                self.deployment(namespace, name)
                status = self._status(namespace, name)
                desired = status["desired"]
            if status["complete"]:
                return True, [*said, f'deployment "{name}" successfully rolled out']
            if status["stalled"]:
                return False, [*said, f'error: deployment "{name}" exceeded its progress '
                                      "deadline"]  # fmt: skip
            if status["updated"] < desired:
                line = (f'Waiting for deployment "{name}" rollout to finish: {status["updated"]} '
                        f"out of {desired} new replicas have been updated...")  # fmt: skip
            elif status["replicas"] > status["updated"]:
                line = (f'Waiting for deployment "{name}" rollout to finish: '
                        f"{status['replicas'] - status['updated']} old replicas are pending "
                        "termination...")  # fmt: skip
            else:
                line = (f'Waiting for deployment "{name}" rollout to finish: '
                        f"{status['available']} of {status['updated']} updated replicas are "
                        "available...")  # fmt: skip
            if not said or said[-1] != line:
                said.append(line)
            if self.clock() >= deadline:
                return False, [*said, "error: timed out waiting for the condition"]
            self.closed.wait(0.5)

    def endpoints(self, namespace: str, service: str) -> list[Address]:
        """The loopback addresses of the ready pods a Service selects, at its target port."""
        with self.lock:
            found = self.objects.get(("Service", namespace, service))
            if found is None:
                return []
            target = found["spec"]["ports"][0].get("targetPort", found["spec"]["ports"][0]["port"])
            selector = found["spec"].get("selector") or {}
            addresses = []
            for state in self.pods.values():
                if (state.pod.namespace == namespace and matches(selector, state.pod.labels)
                        and state.ready()):  # fmt: skip
                    port = state.container_port(target)
                    if port in state.ports:
                        addresses.append(("127.0.0.1", state.ports[port]))
            return addresses

    def delete_pod(self, namespace: str, name: str) -> str:
        """The pod stops as the kubelet stops one (preStop, SIGTERM, SIGKILL after the grace
        period), out of every Service at once; its Deployment starts another."""
        with self.lock:
            state = self.pods.get((namespace, name))
            if state is None or state.deleting.is_set():
                raise ApiError(f'Error from server (NotFound): pods "{name}" not found')
            self._delete(state)
            self._reconcile_all()
        return f'pod "{name}" deleted'

    def get(self, kind: str, namespace: str, name: str | None, selector: dict[str, str]) -> Doc:
        with self.lock:
            if kind == "Pod":
                found = [s.status() for s in self.pods.values()
                         if s.pod.namespace == namespace]  # fmt: skip
            elif kind == "ReplicaSet":
                found = [self._replicaset_object(ns, deployment, rs)
                         for (ns, deployment), sets in self.history.items() if ns == namespace
                         for rs in sets]  # fmt: skip
            else:
                found = [self._with_status(kind, doc) for (k, ns, _), doc in self.objects.items()
                         if k == kind and ns == namespace]  # fmt: skip
        found = [
            doc for doc in found if selector.items() <= doc["metadata"].get("labels", {}).items()
        ]
        if name is None:
            return {"apiVersion": "v1", "kind": "List", "items": found}
        for doc in found:
            if doc["metadata"]["name"] == name:
                return doc
        plural = KINDS.get(kind, ("", kind.lower()))[1].split(".")
        resource = plural[0] + "s" + (f".{'.'.join(plural[1:])}" if plural[1:] else "")
        raise ApiError(f'Error from server (NotFound): {resource} "{name}" not found')

    def close(self) -> None:
        """Stop every pod and Service (the cluster goes away with its process)."""
        self.closed.set()
        with self.lock:
            states = list(self.pods.values())
            for state in states:
                state.deleting.set()
            for proxy in self.proxies.values():
                proxy.close()
        for state in states:
            self.podman.stop(state.container, 0, None)
        if self.started_pods:  # and whatever a kubelet thread left behind
            self.podman.remove_all()

    # --- checks and storage --------------------------------------------------------------
    def _key(self, doc: Doc) -> tuple[str, str, str]:
        meta = doc.get("metadata") or {}
        return doc.get("kind", ""), meta.get("namespace", "default"), meta.get("name", "")

    def _check(self, doc: Doc) -> None:
        import kubernetes_validate

        kind, namespace, name = self._key(doc)
        if kind not in KINDS:
            raise ApiError(f"error: the local cluster does not run kind {kind!r} (it runs "
                           f"{', '.join(sorted(KINDS))})")  # fmt: skip
        if doc.get("apiVersion") != KINDS[kind][0]:
            raise ApiError(f'error: resource mapping not found for name: "{name}": no matches '
                           f'for kind "{kind}" in version "{doc.get("apiVersion")}"')  # fmt: skip
        try:
            kubernetes_validate.validate(doc, SCHEMAS, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.absolute_path)
            raise ApiError(f"error: error validating data: ValidationError({kind}.{where}): "
                           f"{err.message}") from None  # fmt: skip
        if namespace not in self.namespaces:
            raise ApiError(f'Error from server (NotFound): namespaces "{namespace}" not found')
        if kind == "Deployment":
            selector = doc["spec"]["selector"].get("matchLabels") or {}
            if doc["spec"]["selector"].get("matchExpressions"):
                raise ApiError("error: the local cluster selects by matchLabels only")
            labels = doc["spec"]["template"]["metadata"].get("labels") or {}
            if not matches(selector, labels):
                raise ApiError(f'The Deployment "{name}" is invalid: spec.template.metadata.'
                               "labels: Invalid value: `selector` does not match template "
                               "`labels`")  # fmt: skip
            before = self.objects.get((kind, namespace, name))
            if before is not None and before["spec"]["selector"] != doc["spec"]["selector"]:
                raise ApiError(f'The Deployment "{name}" is invalid: spec.selector: Invalid '
                               "value: field is immutable")  # fmt: skip
            if len(doc["spec"]["template"]["spec"]["containers"]) != 1:
                raise ApiError("error: the local cluster runs pods of one container")

    def _store_deployment(self, doc: Doc, before: Doc | None) -> str | None:
        """Record the template as a revision; "unchanged" when nothing changed."""
        namespace, name = doc["metadata"].get("namespace", "default"), doc["metadata"]["name"]
        history = self.history.setdefault((namespace, name), [])
        template = doc["spec"]["template"]
        wanted = template_hash(template)
        current = next((rs for rs in history if before is not None and rs.revision == int(
            before["metadata"]["annotations"][REVISION])), None)  # fmt: skip
        if current is None or current.template_hash != wanted:
            newest = max((rs.revision for rs in history), default=0)
            seen = next((rs for rs in history if rs.template_hash == wanted), None)
            if seen is None:
                seen = ReplicaSet(newest + 1, wanted, template)
                history.append(seen)
            seen.revision = newest + 1  # a template seen before takes the next number too
            current = seen
            self.progress.pop((namespace, name), None)
            limit = int(doc["spec"].get("revisionHistoryLimit", 10))
            old = sorted((rs for rs in history if rs is not current), key=lambda rs: rs.revision)
            for rs in old[: max(0, len(old) - limit)]:
                history.remove(rs)
        meta = doc["metadata"]
        meta.setdefault("annotations", {})[REVISION] = str(current.revision)
        generation = int((before or {}).get("metadata", {}).get("generation", 0))
        unchanged = before is not None and before["spec"] == doc["spec"]
        meta["generation"] = generation if unchanged else generation + 1
        if unchanged:
            return "unchanged"
        self.objects[("Deployment", namespace, name)] = doc
        return None

    def _claim_dir(self, namespace: str, name: str) -> Path:
        return self.directory / "volumes" / namespace / name

    def _expose(self, namespace: str, name: str) -> None:
        if (namespace, name) not in self.proxies:
            port = self.service_ports.get(f"{namespace}/{name}", 0)
            self.proxies[(namespace, name)] = Forwarder(lambda: self.endpoints(namespace, name),
                                                        port)  # fmt: skip

    # --- the Deployment controller -------------------------------------------------------
    def _control(self) -> None:
        while not self.closed.wait(0.3):
            with self.lock:
                self._reconcile_all()

    def _reconcile_all(self) -> None:
        for kind, namespace, name in list(self.objects):
            if kind == "Deployment":
                self._reconcile(namespace, name)
        for key, state in list(self.pods.items()):
            if state.reason == "Terminated":  # its volumes go with it
                del self.pods[key]
                shutil.rmtree(self._pod_dir(*key), ignore_errors=True)

    def _desired(self, deployment: Doc) -> int:
        wanted = int(deployment["spec"].get("replicas", 1))
        return wanted if self.max_replicas is None else min(wanted, self.max_replicas)

    def _available(self, state: PodState, deployment: Doc) -> bool:
        wait = float(deployment["spec"].get("minReadySeconds", 0))
        return state.ready() and self.clock() - (state.ready_since or 0) >= wait

    def _reconcile(self, namespace: str, name: str) -> None:
        deployment = self.objects[("Deployment", namespace, name)]
        current = template_hash(deployment["spec"]["template"])
        desired = self._desired(deployment)
        mine = [s for s in self.pods.values()
                if s.owner == (namespace, name) and not s.deleting.is_set()]  # fmt: skip
        new = [s for s in mine if s.template_hash == current]
        old = [s for s in mine if s.template_hash != current]
        strategy = deployment["spec"].get("strategy") or {}
        if strategy.get("type") == "Recreate":
            surge, unavailable = 0, desired
        else:
            rolling = strategy.get("rollingUpdate") or {}
            surge = scaled(rolling.get("maxSurge", "25%"), desired, round_up=True)
            unavailable = scaled(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
            surge = surge or (0 if unavailable else 1)
        if strategy.get("type") != "Recreate" or not old:
            while len(new) < desired and len(new) + len(old) < desired + surge:
                new.append(self._start_pod(deployment, current))
        available = sum(self._available(s, deployment) for s in new + old)
        for state in sorted(old, key=lambda s: self._available(s, deployment)):
            if not self._available(state, deployment):
                self._delete(state)
            elif available - 1 >= desired - unavailable:
                self._delete(state)
                available -= 1
        extra = sorted(new, key=lambda s: self._available(s, deployment))
        for state in extra[: max(0, len(new) - desired)]:
            self._delete(state)
        status = self._status(namespace, name)
        mark = (status["updated"], status["available"], status["replicas"])
        if self.progress.get((namespace, name), ((), 0.0))[0] != mark:
            self.progress[(namespace, name)] = (mark, self.clock())

    def _status(self, namespace: str, name: str) -> dict[str, Any]:
        deployment = self.objects[("Deployment", namespace, name)]
        current = template_hash(deployment["spec"]["template"])
        mine = [s for s in self.pods.values()
                if s.owner == (namespace, name) and not s.deleting.is_set()]  # fmt: skip
        new = [s for s in mine if s.template_hash == current]
        desired = self._desired(deployment)
        available = sum(self._available(s, deployment) for s in new)
        complete = len(new) == desired == len(mine) and available >= desired
        since = self.progress.get((namespace, name), ((), self.clock()))[1]
        deadline = float(deployment["spec"].get("progressDeadlineSeconds", 600))
        return {"desired": desired, "replicas": len(mine), "updated": len(new),
                "ready": sum(s.ready() for s in mine),
                "available": sum(self._available(s, deployment) for s in mine),
                "complete": complete,
                "stalled": not complete and self.clock() - since > deadline}  # fmt: skip

    # --- pods and their kubelet ----------------------------------------------------------
    def _start_pod(self, deployment: Doc, current: str) -> PodState:
        namespace = deployment["metadata"].get("namespace", "default")
        name = f"{deployment['metadata']['name']}-{current[:10]}-{secrets.token_hex(3)[:5]}"
        template = deployment["spec"]["template"]
        meta = template.get("metadata") or {}
        claims = {n: self._claim_dir(ns, n) for (k, ns, n) in self.objects
                  if k == "PersistentVolumeClaim" and ns == namespace}  # fmt: skip
        keys = {n: secret_data(doc) for (k, ns, n), doc in self.objects.items()
                 if k == "Secret" and ns == namespace}  # fmt: skip
        pod = Pod(name, namespace, {**meta.get("labels", {}), "pod-template-hash": current},
                  dict(meta.get("annotations") or {}), template["spec"], claims, keys,
                  self._empty_dirs(namespace, name, template["spec"]))  # fmt: skip
        state = PodState(pod, (namespace, deployment["metadata"]["name"]), current,
                         f"gitml-{self.podman.cluster_id}-{namespace}-{name}")  # fmt: skip
        self.pods[(namespace, name)] = state
        self.started_pods = True
        self.kubelet.start(state)
        return state

    def _empty_dirs(self, namespace: str, pod: str, spec: Doc) -> dict[str, Path]:
        """The pod's emptyDir volumes as directories of its own (a `medium: Memory` one stays a
        tmpfs), world-writable as the kubelet makes them: any pod user may write there."""
        made = {}
        for volume in spec.get("volumes") or []:
            if "emptyDir" in volume and (volume["emptyDir"] or {}).get("medium") != "Memory":
                folder = self._pod_dir(namespace, pod) / volume["name"]
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o777)
                made[volume["name"]] = folder
        return made

    def _pod_dir(self, namespace: str, pod: str) -> Path:
        return self.directory / "pods" / namespace / pod

    def _delete(self, state: PodState) -> None:
        state.deleting.set()  # out of every Service's endpoints from now on

    # --- what `get` shows ----------------------------------------------------------------
    def _with_status(self, kind: str, doc: Doc) -> Doc:
        shown = json.loads(json.dumps(doc))
        namespace, name = doc["metadata"].get("namespace", "default"), doc["metadata"]["name"]
        if kind == "Deployment":
            status = self._status(namespace, name)
            shown["status"] = {
                "observedGeneration": doc["metadata"]["generation"],
                "replicas": status["replicas"], "updatedReplicas": status["updated"],
                "readyReplicas": status["ready"], "availableReplicas": status["available"],
                "conditions": [{"type": "Progressing",
                                "status": "False" if status["stalled"] else "True",
                                "reason": "ProgressDeadlineExceeded" if status["stalled"] else
                                ("NewReplicaSetAvailable" if status["complete"] else
                                 "ReplicaSetUpdated")}],
            }  # fmt: skip
        if kind == "Service" and (namespace, name) in self.proxies:
            port = self.proxies[(namespace, name)].port
            shown["metadata"].setdefault("annotations", {})[ADDRESS] = f"127.0.0.1:{port}"
        return shown

    def _replicaset_object(self, namespace: str, deployment: str, rs: ReplicaSet) -> Doc:
        labels = {**(rs.template.get("metadata") or {}).get("labels", {}),
                  "pod-template-hash": rs.template_hash}  # fmt: skip
        return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": f"{deployment}-{rs.template_hash}", "namespace": namespace,
                             "labels": labels, "annotations": {REVISION: str(rs.revision)}},
                "spec": {"template": rs.template}}  # fmt: skip
