"""Build and push the serving image from the real Dockerfile, with or without a Docker daemon.

Where Docker works (GitHub's runners, most laptops) it builds and pushes the image. Machines
without Docker or a registry to pull bases from (this project's own CI among them) build the same
Dockerfile with buildah, on a Debian 12 + Python 3.11 base made once with debootstrap and cached
as an OCI archive. The image runs as a pod would run it, locked down: gitml.release.cluster.
"""

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from gitml.config import PROJ_ROOT

LOCAL_BASE = "localhost/gitml-base:bookworm"
IMAGE = "localhost/gitml-serving:latest"
CONTEXT_DIR = PROJ_ROOT / "build" / "image"
DOCKERFILE = PROJ_ROOT / "Dockerfile"
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
    """The local base image: in storage, else from the cached archive, else debootstrapped
    (one build at a time makes it: others wait, then find it)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_base(driver)


def _ensure_base(driver: str) -> str:
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


def build(
    context: Path, tag: str, build_args: dict[str, str], dockerfile: Path = DOCKERFILE
) -> str:
    """`docker build` of the Dockerfile, or `buildah bud` on the local base."""
    for needed in ("requirements.txt", "wheels", "dist", "model"):
        if not (context / needed).exists():
            raise ImageError(f"{context / needed} is missing: run `make image-context` first")
    args = [a for key, value in build_args.items() for a in ("--build-arg", f"{key}={value}")]
    args += ["-f", str(dockerfile), "-t", tag, str(context)]
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


def push(tag: str, destination: str) -> str:
    """Push the built image `tag` to `destination` (REGISTRY/NAME:TAG); its manifest digest,
    as the registry names it. A registry on loopback is spoken to over plain HTTP (Docker's rule
    for 127.0.0.0/8); any other over TLS."""
    insecure = destination.startswith(("127.", "localhost:", "localhost/"))
    if docker_available():
        subprocess.run(["docker", "tag", tag, destination], check=True, capture_output=True)
        subprocess.run(["docker", "push", "--quiet", destination], check=True, capture_output=True)
        digests = subprocess.run(["docker", "image", "inspect", "--format",
                                  "{{json .RepoDigests}}", destination], capture_output=True,
                                 text=True, check=True).stdout  # fmt: skip
        name = destination.rsplit(":", 1)[0]
        return next(d.split("@")[1] for d in json.loads(digests) if d.startswith(f"{name}@"))
    with tempfile.TemporaryDirectory(prefix="gitml-push-") as scratch:
        digest_file = Path(scratch) / "digest"
        buildah(storage_driver(), "push", "--quiet", f"--tls-verify={str(not insecure).lower()}",
                "--digestfile", str(digest_file), tag, f"docker://{destination}")  # fmt: skip
        return digest_file.read_text().strip()


app = typer.Typer(add_completion=False, help=__doc__)


@app.command("build")
def build_command(
    context: Annotated[Path, typer.Option(help="Prepared build context.")] = CONTEXT_DIR,
    tag: Annotated[str, typer.Option(help="Image name.")] = IMAGE,
    model_version: Annotated[str, typer.Option(envvar="MODEL_VERSION")] = "unversioned",
    git_commit: Annotated[str, typer.Option(envvar="GIT_COMMIT")] = "unknown",
    build_arg: Annotated[
        Optional[list[str]],  # noqa: UP045 (typer 0.9 cannot read `X | None`)
        typer.Option(help="KEY=VALUE, repeated: more build arguments (they win)."),
    ] = None,
    file: Annotated[Path, typer.Option(help="The Dockerfile.")] = DOCKERFILE,
) -> None:
    """Build the serving image from the Dockerfile (docker, or buildah without a daemon)."""
    for tool in () if docker_available() else ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            typer.echo(
                f"image: {tool} is not installed (as root: apt-get install {tool})", err=True
            )
            raise typer.Exit(1)
    started = time.perf_counter()
    try:
        more = dict(arg.split("=", 1) for arg in build_arg or [])
        build(context, tag, {"MODEL_VERSION": model_version, "GIT_COMMIT": git_commit, **more},
              file)  # fmt: skip
    except (ImageError, subprocess.CalledProcessError) as err:
        typer.echo(f"image: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"image: built {tag} in {time.perf_counter() - started:.0f} s")


@app.command("push")
def push_command(
    destination: Annotated[str, typer.Option(help="REGISTRY/NAME:TAG to push to.")],
    tag: Annotated[str, typer.Option(help="The built image.")] = IMAGE,
    digest_file: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Write the pushed manifest's digest here too."),
    ] = None,
) -> None:
    """Push the built image; print its digest (what a deploy pins)."""
    try:
        digest = push(tag, destination)
    except (ImageError, subprocess.CalledProcessError) as err:
        typer.echo(f"image: {err}", err=True)
        raise typer.Exit(1) from None
    if digest_file is not None:
        digest_file.write_text(digest)
    typer.echo(digest)


@app.command("entrypoint")
def entrypoint_command(tag: Annotated[str, typer.Option(help="Image name.")] = IMAGE) -> None:
    """Print the image's configuration (entrypoint, user, labels, health check) as JSON."""
    typer.echo(json.dumps(image_config(tag), indent=2))


if __name__ == "__main__":
    app()
