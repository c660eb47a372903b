"""Build and run the serving image from the real Dockerfile, with or without a Docker daemon.

Where Docker works (GitHub's runners, most laptops) it builds and runs the image. Machines
without Docker or a registry (this project's own CI among them) build the same Dockerfile with
buildah, on a Debian 12 + Python 3.11 base made once with debootstrap and cached as an OCI
archive. Either way a container runs the image's own entrypoint, user, working directory and
environment, on the host network.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from gitml.config import PROJ_ROOT

LOCAL_BASE = "localhost/gitml-base:bookworm"
IMAGE = "localhost/gitml-serving:latest"
CONTEXT_DIR = PROJ_ROOT / "build" / "image"
CACHE_DIR = Path(os.environ.get("GITML_CACHE", Path.home() / ".cache" / "gitml"))
BASE_ARCHIVE = CACHE_DIR / "gitml-base-bookworm.oci.tar"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TRIMMED = ["var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
           "usr/share/locale", "var/log"]  # fmt: skip


class ImageError(RuntimeError):
    """Building or running the image failed; the message says what to do."""


def docker_available() -> bool:
    """A working Docker daemon (GitHub's runners have one): then `docker` builds and runs."""
    if os.environ.get("GITML_IMAGE_BACKEND") == "buildah" or shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def storage_driver() -> str:
    """overlay where it can mount (much faster), else vfs; BUILDAH_DRIVER overrides."""
    if os.environ.get("BUILDAH_DRIVER"):
        return os.environ["BUILDAH_DRIVER"]
    probe = subprocess.run(
        ["buildah", "--storage-driver", "overlay", "from", "-q", "scratch"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        return "vfs"
    container = probe.stdout.strip()
    mounted = subprocess.run(
        ["buildah", "--storage-driver", "overlay", "mount", container],
        capture_output=True, check=False,
    ).returncode == 0  # fmt: skip
    subprocess.run(["buildah", "--storage-driver", "overlay", "rm", container],
                   capture_output=True, check=False)  # fmt: skip
    return "overlay" if mounted else "vfs"


def buildah(driver: str, *args: str, capture: bool = True) -> str:
    result = subprocess.run(
        ["buildah", "--storage-driver", driver, *args],
        capture_output=capture, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ImageError(f"buildah {' '.join(args[:2])} failed:\n{(result.stderr or '').strip()}")
    return (result.stdout or "").strip()


def debian_mirror() -> str:
    """The Debian mirror apt uses here (debootstrap needs one; no registry is needed)."""
    for source in Path("/etc/apt/sources.list.d").glob("*.sources"):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")


def ensure_base(driver: str) -> str:
    """The local base image: in storage, else from the cached archive, else debootstrapped."""
    exists = subprocess.run(["buildah", "--storage-driver", driver, "inspect", "--type", "image",
                             LOCAL_BASE], capture_output=True, check=False)  # fmt: skip
    if exists.returncode == 0:
        return LOCAL_BASE
    if BASE_ARCHIVE.exists():
        buildah(driver, "pull", "-q", f"oci-archive:{BASE_ARCHIVE}")
        return LOCAL_BASE
    with tempfile.TemporaryDirectory(prefix="gitml-rootfs-") as scratch:
        root = Path(scratch) / "root"
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm",
             str(root), debian_mirror()], check=True, capture_output=True,
        )  # fmt: skip
        for trimmed in TRIMMED:
            shutil.rmtree(root / trimmed, ignore_errors=True)
        tarball = Path(scratch) / "root.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
        container = buildah(driver, "from", "-q", "scratch")
        buildah(driver, "add", container, str(tarball), "/")
        buildah(driver, "config", "--env", f"PATH={BASE_PATH}", "--env", "LANG=C.UTF-8",
                "--cmd", "python3", container)  # fmt: skip
        buildah(driver, "commit", "-q", "--rm", container, LOCAL_BASE)
    BASE_ARCHIVE.parent.mkdir(parents=True, exist_ok=True)
    buildah(driver, "push", "-q", LOCAL_BASE, f"oci-archive:{BASE_ARCHIVE}:{LOCAL_BASE}")
    return LOCAL_BASE


def build(context: Path, tag: str, model_version: str, git_commit: str) -> str:
    """`docker build` of the top-level Dockerfile, or `buildah bud` on the local base."""
    for needed in ("requirements.txt", "wheels", "dist", "model"):
        if not (context / needed).exists():
            raise ImageError(f"{context / needed} is missing: run `make image-context` first")
    args = ["--build-arg", f"MODEL_VERSION={model_version}",
            "--build-arg", f"GIT_COMMIT={git_commit}",
            "-f", str(PROJ_ROOT / "Dockerfile"), "-t", tag, str(context)]  # fmt: skip
    if docker_available():  # the default BASE_IMAGE comes from the registry
        subprocess.run(["docker", "build", *args], check=True)
        return tag
    driver = storage_driver()
    base = ensure_base(driver)
    buildah(driver, "bud", "--isolation", "chroot", "--layers", "--format", "docker",
            "--pull=never", "--build-arg", f"BASE_IMAGE={base}", *args, capture=False)  # fmt: skip
    return tag


def image_config(tag: str, driver: str | None = None) -> dict[str, object]:
    """The image's Docker config: Entrypoint, Cmd, Env, User, Labels, Healthcheck."""
    if docker_available():
        inspected = subprocess.run(["docker", "image", "inspect", tag], capture_output=True,
                                   text=True, check=True).stdout  # fmt: skip
        return dict(json.loads(inspected)[0]["Config"])
    inspected = json.loads(buildah(driver or storage_driver(), "inspect", "--type", "image", tag))
    return dict(inspected["Docker"]["config"])


def start(
    tag: str,
    env: dict[str, str],
    name: str,
    command: list[str] | None = None,
    volumes: dict[Path, str] | None = None,
) -> subprocess.Popen[str]:
    """Run the image's own entrypoint (or `command`) in a new container on the host network,
    with host directories mounted as `volumes` ({host path: container path}).

    `buildah run` applies the image's user, working directory and environment but not its
    entrypoint, so the entrypoint is read from the image and run as the command.
    """
    env_args = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    env_args += [a for host, ctr in (volumes or {}).items() for a in ("--volume", f"{host}:{ctr}")]
    if docker_available():
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        override = ["--entrypoint", command[0]] if command else []
        return subprocess.Popen(
            ["docker", "run", "--rm", "--name", name, "--network", "host", *env_args, *override,
             tag, *(command[1:] if command else [])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
    driver = storage_driver()
    if command is None:
        config = image_config(tag, driver)
        command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]  # type: ignore[misc]
    subprocess.run(["buildah", "--storage-driver", driver, "rm", name], capture_output=True,
                   check=False)  # fmt: skip
    container = buildah(driver, "from", "-q", "--pull=never", "--name", name, tag)
    return subprocess.Popen(
        ["buildah", "--storage-driver", driver, "run", "--isolation", "chroot", *env_args,
         container, "--", *command],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def stop(process: subprocess.Popen[str], name: str) -> None:
    """Stop a container started by `start` and remove it."""
    if docker_available():
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=10)
    if not docker_available():
        subprocess.run(["buildah", "--storage-driver", storage_driver(), "rm", name],
                       capture_output=True, check=False)  # fmt: skip


app = typer.Typer(add_completion=False, help=__doc__)


@app.command("build")
def build_command(
    context: Annotated[Path, typer.Option(help="Prepared build context.")] = CONTEXT_DIR,
    tag: Annotated[str, typer.Option(help="Image name.")] = IMAGE,
    model_version: Annotated[str, typer.Option(envvar="MODEL_VERSION")] = "unversioned",
    git_commit: Annotated[str, typer.Option(envvar="GIT_COMMIT")] = "unknown",
) -> None:
    """Build the serving image from the top-level Dockerfile with buildah."""
    for tool in () if docker_available() else ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            typer.echo(
                f"image: {tool} is not installed (as root: apt-get install {tool})", err=True
            )
            raise typer.Exit(1)
    started = time.perf_counter()
    try:
        build(context, tag, model_version, git_commit)
    except (ImageError, subprocess.CalledProcessError) as err:
        typer.echo(f"image: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"image: built {tag} in {time.perf_counter() - started:.0f} s")


@app.command("entrypoint")
def entrypoint_command(tag: Annotated[str, typer.Option(help="Image name.")] = IMAGE) -> None:
    """Print the image's configuration (entrypoint, user, labels, health check) as JSON."""
    typer.echo(json.dumps(image_config(tag), indent=2))


if __name__ == "__main__":
    app()
