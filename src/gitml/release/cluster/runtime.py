"""A pod's container under podman, as a kubelet would run it: the image pulled by digest, the
securityContext (user, read-only root, capabilities, no privilege escalation, seccomp), env
(values, the downward API, optional secrets), volumes (emptyDir as the pod's own directory on the
node, made 0777 as the kubelet makes it, or a tmpfs of its sizeLimit where the pod has none; a
claim as a directory of the cluster), resource limits, and each container port published on a
spare loopback port. Anything else in a pod spec is refused by name, never silently dropped.

`run_args` is the pure part (pod spec -> `podman run` arguments); `Podman` runs them with the
settings that work without systemd (runc, cgroupfs, rlimits under the host's hard limits).
"""

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Doc = dict[str, Any]

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""
UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
         "m": 1e-3}  # fmt: skip
FIELD = re.compile(r"metadata\.(name|namespace)$|metadata\.(annotations|labels)\['([^']+)'\]$")
# What a container spec may hold: the rest (lifecycle, probes) is the kubelet's, not podman's.
CONTAINER_KEYS = {"name", "image", "imagePullPolicy", "command", "args", "workingDir", "ports",
                  "env", "resources", "securityContext", "volumeMounts", "startupProbe",
                  "readinessProbe", "livenessProbe", "lifecycle"}  # fmt: skip
SECURITY_KEYS = {"runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem",
                 "allowPrivilegeEscalation", "privileged", "capabilities", "seccompProfile",
                 "fsGroup", "supplementalGroups"}  # fmt: skip


class PodSpecError(ValueError):
    """The pod cannot be run as written (Kubernetes: CreateContainerConfigError)."""


class PodmanError(RuntimeError):
    """podman failed; the message is podman's."""


def quantity(value: Any) -> float:
    """A Kubernetes quantity ("64Mi", "2", "500m") as a number."""
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    if not match or match[2] not in UNITS:
        raise PodSpecError(f"unreadable quantity {value!r}")
    return float(match[1]) * UNITS[match[2]]


@dataclass(frozen=True)
class Pod:
    """What a container needs from its pod: its identity and the cluster's volumes."""

    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: Doc
    claims: dict[str, Path]  # persistentVolumeClaim name -> host directory
    secrets: dict[str, dict[str, str]]  # Secret name -> its data
    # emptyDir volume name -> the pod's directory for it on this host (it outlives a container
    # restart, not the pod); a volume not named here is a tmpfs
    empty_dirs: dict[str, Path] = field(default_factory=dict)


def security(pod: Pod, container: Doc) -> dict[str, Any]:
    """The securityContext the kubelet applies: the container's settings over the pod's."""
    pod_context = pod.spec.get("securityContext") or {}
    own = container.get("securityContext") or {}
    for key in {*pod_context, *own} - SECURITY_KEYS:
        raise PodSpecError(f"securityContext.{key} is not supported by the local cluster")
    return {**pod_context, **own}


def security_args(context: dict[str, Any], image_user: str) -> list[str]:
    uid = context.get("runAsUser")
    if uid is None:  # the image's USER, which must be numeric to be checked
        name = image_user.split(":")[0]
        uid = int(name) if name.isdigit() else (0 if name in ("", "root") else None)
    if context.get("runAsNonRoot") and not uid:
        raise PodSpecError(
            "container has runAsNonRoot and image will run as root" if uid == 0 else
            f"container has runAsNonRoot and image has non-numeric user ({image_user})"
        )  # fmt: skip
    args = []
    if context.get("runAsUser") is not None:
        group = context.get("runAsGroup")
        args += ["--user", f"{context['runAsUser']}" + (f":{group}" if group is not None else "")]
    for group in [context.get("fsGroup"), *(context.get("supplementalGroups") or [])]:
        if group is not None:
            args += ["--group-add", str(group)]
    if context.get("readOnlyRootFilesystem"):
        # podman would add tmpfs on /tmp, /var/tmp and /run: a pod gets only its own volumes
        args += ["--read-only", "--read-only-tmpfs=false"]
    if context.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if context.get("privileged"):
        args += ["--privileged"]
    capabilities = context.get("capabilities") or {}
    args += [a for cap in capabilities.get("drop") or [] for a in ("--cap-drop", cap)]
    args += [a for cap in capabilities.get("add") or [] for a in ("--cap-add", cap)]
    seccomp = (context.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        raise PodSpecError(f"seccompProfile {seccomp} is not supported by the local cluster")
    return args


def field_value(pod: Pod, path: str) -> str:
    match = FIELD.match(path)
    if not match:
        raise PodSpecError(f"fieldRef {path} is not supported by the local cluster")
    if match[1]:
        return pod.name if match[1] == "name" else pod.namespace
    return (pod.annotations if match[2] == "annotations" else pod.labels).get(match[3], "")


def env_args(pod: Pod, container: Doc) -> list[str]:
    args = []
    for var in container.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            value = str(var.get("value", ""))
        elif "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            found = pod.secrets.get(ref["name"], {}).get(ref["key"])
            if found is None:
                if ref.get("optional"):
                    continue
                raise PodSpecError(f'secret "{ref["name"]}" (key {ref["key"]}) not found')
            value = found
        else:
            raise PodSpecError(f"env {var['name']}: {sorted(source)} is not supported")
        args += ["--env", f"{var['name']}={value}"]
    return args


def volume_args(pod: Pod, container: Doc) -> list[str]:
    volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
    args = []
    for mount in container.get("volumeMounts") or []:
        volume, path = volumes.get(mount["name"]), mount["mountPath"]
        if volume is None:
            raise PodSpecError(f"volumeMount {mount['name']} names no volume of the pod")
        if set(mount) - {"name", "mountPath", "readOnly"}:
            raise PodSpecError(f"volumeMount {mount['name']}: only mountPath and readOnly")
        mode = "ro" if mount.get("readOnly") else "rw"
        if "emptyDir" in volume and mount["name"] in pod.empty_dirs:
            args += ["--volume", f"{pod.empty_dirs[mount['name']]}:{path}:{mode}"]
        elif "emptyDir" in volume:
            size = (volume["emptyDir"] or {}).get("sizeLimit")
            limit = f",size={int(quantity(size))}" if size else ""
            args += ["--tmpfs", f"{path}:{mode},exec,nosuid,nodev,mode=1777{limit}"]
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in pod.claims:
                raise PodSpecError(f'persistentvolumeclaim "{claim}" not found')
            args += ["--volume", f"{pod.claims[claim]}:{path}:{mode}"]
        else:
            kinds = sorted(set(volume) - {"name"})
            raise PodSpecError(f"volume {mount['name']}: {kinds} not supported (emptyDir, "
                               "persistentVolumeClaim)")  # fmt: skip
    return args


def run_args(pod: Pod, container: Doc, image_user: str) -> list[str]:
    """`podman run` arguments (before the image) for one container of a pod."""
    if unknown := set(container) - CONTAINER_KEYS:
        raise PodSpecError(f"container {container['name']}: {sorted(unknown)} not supported")
    args = ["--hostname", pod.name, "--no-healthcheck"]  # Kubernetes ignores HEALTHCHECK
    args += security_args(security(pod, container), image_user)
    args += env_args(pod, container)
    args += volume_args(pod, container)
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            raise PodSpecError("hostPort is not supported: ports are published on loopback")
        args += ["--publish", f"127.0.0.1::{port['containerPort']}"]
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        args += ["--memory", str(int(quantity(limits["memory"])))]
    if "cpu" in limits:
        args += ["--cpus", f"{quantity(limits['cpu']):g}"]
    if container.get("workingDir"):
        args += ["--workdir", container["workingDir"]]
    if container.get("command"):
        args += ["--entrypoint", json.dumps(container["command"])]
    return args


class Podman:
    """podman with the local cluster's settings, its containers labelled `gitml.cluster=ID`."""

    def __init__(
        self, directory: Path, cluster_id: str, registry: str, mirrors: dict[str, str]
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "containers.conf").write_text(CONTAINERS_CONF)
        (directory / "registries.conf").write_text(registries_conf(registry, mirrors))
        self.env = {**os.environ, "CONTAINERS_CONF": str(directory / "containers.conf"),
                    "CONTAINERS_REGISTRIES_CONF": str(directory / "registries.conf")}  # fmt: skip
        self.cluster_id = cluster_id

    def __call__(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if "systemd" not in line]
            raise PodmanError("\n".join(lines).strip() or f"podman {args[0]} failed")
        return done.stdout

    def pull(self, image: str) -> str:
        """Pull from the registry (always: the registry decides, not a local copy); the image
        user, as its config says."""
        self("pull", "--quiet", image)
        return self("image", "inspect", "--format", "{{.Config.User}}", image).strip()

    def run(self, name: str, image: str, args: list[str], command_args: list[str]) -> None:
        self("rm", "--force", "--ignore", name)
        self("run", "--detach", "--name", name, "--label", f"gitml.cluster={self.cluster_id}",
             *args, image, *command_args)  # fmt: skip

    def published(self, name: str) -> dict[int, int]:
        """container port -> loopback port."""
        ports: dict[int, int] = {}
        for line in self("port", name).splitlines():  # "8080/tcp -> 127.0.0.1:41234"
            inside, _, outside = line.partition(" -> ")
            ports[int(inside.split("/")[0])] = int(outside.rsplit(":", 1)[1])
        return ports

    def state(self, name: str) -> tuple[bool, int]:
        """(running, exit code)."""
        out = self("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", name).split()
        return out[0] == "true", int(out[1])

    def stop(self, name: str, grace: int, pre_stop: list[str] | None) -> None:
        """The kubelet's termination: the preStop hook, then SIGTERM, SIGKILL after `grace`."""
        try:
            if pre_stop:
                self("exec", name, *pre_stop, timeout=grace)
            self("stop", "--time", str(grace), name, timeout=grace + 30)
        except (PodmanError, subprocess.TimeoutExpired):
            pass  # already gone, or the hook outlived the grace period: removed below
        self("rm", "--force", "--ignore", name)

    def remove_all(self) -> None:
        """Every container this cluster started (at shutdown; never another cluster's)."""
        label = f"label=gitml.cluster={self.cluster_id}"
        names = self("ps", "--all", "--quiet", "--filter", label)
        for container in names.split():
            self("rm", "--force", "--ignore", container)


def registries_conf(registry: str, mirrors: dict[str, str]) -> str:
    """containers-registries.conf: the loopback `registry` over plain HTTP, and each prefix of
    `mirrors` (ghcr.io) pulled from its location (the loopback registry)."""
    entries = [f'[[registry]]\nlocation = "{registry}"\ninsecure = true\n']
    entries += [f'[[registry]]\nprefix = "{prefix}"\nlocation = "{location}"\ninsecure = true\n'
                for prefix, location in mirrors.items()]  # fmt: skip
    return "\n".join(entries)
