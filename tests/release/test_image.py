"""The serving image as built by `make image` from the real Dockerfile (buildah, no daemon), run
locked down as the Deployment's pod runs it (tests/release/lockdown.py reads the securityContext
and volumes from the rendered manifests). Its HTTP behaviour is tested with the process server
and this image in test_serve.py (fixture `served`)."""

import json
from pathlib import Path

import httpx
import pytest

from gitml.release import k8s
from gitml.release.image import image_config
from tests.conftest import Served
from tests.release.lockdown import locked_down

pytestmark = pytest.mark.slow


def run(image: str, log_dir: Path, command: list[str]) -> str:
    with locked_down(image, log_dir, {}, command) as container:
        output, _ = container.process.communicate(timeout=120)
    assert container.process.returncode == 0, output
    return output


def test_image_runs_as_non_root_and_is_labelled(built_image: str) -> None:
    config = image_config(built_image)
    assert config["User"] == "10001:10001"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] != "unknown"
    assert labels["org.opencontainers.image.version"]
    assert config["Entrypoint"] == ["python", "-m", "gitml", "serve"]
    assert "8080/tcp" in config["ExposedPorts"]


def test_image_holds_no_build_or_pipeline_tools(built_image: str, tmp_path: Path) -> None:
    probe = "import importlib.util as u; print([m for m in ('dvc', 'evidently', 'pytest', 'pip_audit') if u.find_spec(m)])"
    assert "[]" in run(built_image, tmp_path, ["python", "-c", probe])
    tools = run(built_image, tmp_path, ["sh", "-c", "for t in gcc cc make; do command -v $t "
                                        "|| echo absent; done"])  # fmt: skip
    assert tools.split() == ["absent"] * 3, tools


WRITES = """
import json, os
writes = {}
for folder in json.loads(os.environ["FOLDERS"]):
    try:
        with open(os.path.join(folder, "probe"), "w") as handle:
            handle.write("x")
        writes[folder] = "written"
    except OSError as err:
        writes[folder] = err.strerror
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({"writes": writes, "uid": os.getuid(), "gid": os.getgid(),
                  **{key: status[key].strip() for key in ("CapEff", "NoNewPrivs", "Seccomp")}}))
"""


def test_only_tmp_and_the_log_volume_take_writes(built_image: str, tmp_path: Path) -> None:
    """Locked down as deployed: the root file system refuses every write (even where the
    image's user owns the folder), the two volumes take them; no capability, no privilege
    escalation, seccomp filtering, the Deployment's user and group."""
    deployment = k8s.the(k8s.render("production"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = [mount["mountPath"] for mount in container["volumeMounts"]]
    elsewhere = ["/", "/app", "/app/model", "/opt/venv/bin", "/etc", "/var/tmp", "/run", "/home",
                 "/var/lib/gitml"]  # fmt: skip
    tmp_path.chmod(0o777)  # the log volume: the container's user writes there
    with locked_down(built_image, tmp_path, {"FOLDERS": json.dumps([*volumes, *elsewhere])},
                     ["python", "-c", WRITES]) as running:  # fmt: skip
        output, _ = running.process.communicate(timeout=120)
    seen = json.loads(output.strip().splitlines()[-1])
    assert {folder: seen["writes"][folder] for folder in volumes} == dict.fromkeys(
        volumes, "written")  # fmt: skip
    assert {folder: seen["writes"][folder] for folder in elsewhere} == dict.fromkeys(
        elsewhere, "Read-only file system")  # fmt: skip
    assert (tmp_path / "probe").read_text() == "x"  # the log volume is the host's folder
    context = {**pod["securityContext"], **container["securityContext"]}
    assert (seen["uid"], seen["gid"]) == (context["runAsUser"], context["runAsGroup"])
    assert int(seen["CapEff"], 16) == 0
    assert (seen["NoNewPrivs"], seen["Seccomp"]) == ("1", "2")  # 2: a seccomp filter applies


def test_health_check_command_passes_against_the_running_server(
    built_image: str, image_server: Served
) -> None:
    """The image's HEALTHCHECK, run inside the server's container as Docker runs it (a
    Kubernetes pod ignores it: its probes call /healthz)."""
    check = image_config(built_image)["Healthcheck"]["Test"][1:]
    from gitml.release.cluster.runtime import Podman

    podman = Podman(Path(image_server.log_dir.parent / "podman-exec"), "exec", "127.0.0.1:9", {})
    podman("exec", image_server.container, *check)  # raises when the check fails
    assert httpx.get(f"{image_server.url}/healthz").status_code == 200
