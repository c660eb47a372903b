"""The serving image as built by `make image` from the real Dockerfile (buildah, no daemon).
Its HTTP behaviour is tested with the process server in test_serve.py (fixture `served`)."""

import httpx
import pytest

from gitml.release.image import image_config, start, stop
from tests.conftest import Served

pytestmark = pytest.mark.slow


def test_image_runs_as_non_root_and_is_labelled(built_image: str) -> None:
    config = image_config(built_image)
    assert config["User"] == "10001:10001"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] != "unknown"
    assert labels["org.opencontainers.image.version"]
    assert config["Entrypoint"] == ["python", "-m", "gitml", "serve"]
    assert "8080/tcp" in config["ExposedPorts"]


def test_image_holds_no_build_or_pipeline_tools(built_image: str) -> None:
    probe = "import importlib.util as u; print([m for m in ('dvc', 'evidently', 'pytest', 'pip_audit') if u.find_spec(m)])"
    process = start(built_image, {}, name="gitml-test-probe", command=["python", "-c", probe])
    output, _ = process.communicate(timeout=120)
    stop(process, "gitml-test-probe")
    assert "[]" in output
    for tool in ("gcc", "cc", "make"):
        process = start(
            built_image,
            {},
            name="gitml-test-probe",
            command=["sh", "-c", f"command -v {tool} || echo absent"],
        )
        output, _ = process.communicate(timeout=60)
        stop(process, "gitml-test-probe")
        assert "absent" in output, f"{tool} is in the image"


def test_health_check_command_passes_against_the_running_server(
    built_image: str, image_server: Served
) -> None:
    """The image's HEALTHCHECK, run inside a second container sharing the host network."""
    port = image_server.url.rsplit(":", 1)[1]
    check = image_config(built_image)["Healthcheck"]["Test"][1:]
    process = start(built_image, {"GITML_PORT": port}, name="gitml-test-health", command=check)
    process.communicate(timeout=60)
    stop(process, "gitml-test-health")
    assert process.returncode == 0
    assert httpx.get(f"{image_server.url}/healthz").status_code == 200
