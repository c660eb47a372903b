"""Where the example data comes from, and how the default DVC remote gets seeded.

The default remote is a local directory so a fresh clone runs with no cloud account. While
data.dvc is still the example's, that remote is seeded from the `ISLP` wheel on PyPI (downloaded
without its torch dependencies, hash-checked by pip), then filled through DVC itself in a
scratch repository, so `dvc pull` in the project is a real pull from a real remote. Once data.dvc
tracks other data, nothing is seeded: the data comes from the remote it was pushed to, and a
remote without it says how to push it (README: "Use your own remote").
"""

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated

import typer
import yaml

from gitml.config import PROJ_ROOT

# The pinned source of the example, data/bikeshare.csv: ISLP 0.6.0's copy of Capital
# Bikeshare, 2011, and the md5 data.dvc records for it.
WHEEL_REQUIREMENT = "ISLP==0.6.0"
WHEEL_SHA256 = "ca772cecca1747a2f84ee799a5503ddddbdf0e98f90c235494790c1d036c694b"
MEMBER = "ISLP/data/Bikeshare.csv"
FILE_NAME = "bikeshare.csv"
EXAMPLE_MD5 = "313d0546f3e5016e9a86d24a5157a98b.dir"
EXAMPLE_DVC = {"outs": [{"md5": EXAMPLE_MD5, "size": 567588, "nfiles": 1, "hash": "md5",
                         "path": "data"}]}  # fmt: skip
WHEEL_CACHE = Path.home() / ".cache" / "gitml" / "wheels"


class SeedError(RuntimeError):
    """The data source could not be fetched, verified or pushed."""


def download_wheel(cache_dir: Path = WHEEL_CACHE) -> Path:
    """Download the pinned wheel without dependencies; pip refuses it unless the sha256 matches."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
        requirements.write(f"{WHEEL_REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n")
        requirements.flush()
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--require-hashes", "-r", requirements.name,
             "-d", str(cache_dir)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise SeedError(f"pip download {WHEEL_REQUIREMENT} failed:\n{result.stderr.strip()}")
    wheels = sorted(cache_dir.glob("[Ii][Ss][Ll][Pp]-0.6.0-*.whl"))
    if not wheels:
        raise SeedError(f"pip reported success but no {WHEEL_REQUIREMENT} wheel is in {cache_dir}")
    return wheels[0]


def extract_csv(wheel: Path, out_dir: Path) -> Path:
    """Copy the Bikeshare CSV out of the wheel into `out_dir`."""
    target = out_dir / FILE_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


def tracked_md5(dvc_file: Path) -> str:
    """The md5 a .dvc file records for its single output."""
    return str(yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"])


def is_example(project: Path = PROJ_ROOT) -> bool:
    """data.dvc still tracks the example data as pinned, nothing added: only then is the
    local remote seeded from the wheel (the example's tests key on its raw file instead:
    tests/example_data.py)."""
    return tracked_md5(project / "data.dvc") == EXAMPLE_MD5


def default_remote_url(project: Path) -> str:
    """URL of the project's default DVC remote (local paths come back absolute)."""
    from dvc.repo import Repo  # imported here: is_example, which the tests ask, needs no DVC

    with Repo(project) as repo:
        name = repo.config["core"].get("remote")
        if not name:
            raise SeedError(f"{project} has no default DVC remote (`dvc remote add -d NAME URL`)")
        return str(repo.config["remote"][name]["url"])


def _dvc(*args: str, cwd: Path) -> str:
    result = subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SeedError(f"`dvc {' '.join(args)}` failed in {cwd}:\n{result.stderr.strip()}")
    return result.stdout.strip()


def seed_remote(project: Path = PROJ_ROOT, cache_dir: Path = WHEEL_CACHE) -> str:
    """Push the pinned data to the project's default remote, through DVC, in a scratch repo.

    Returns:
        The URL of the remote that was seeded.

    Raises:
        SeedError: when the data does not hash to what data.dvc records (nothing is pushed).
    """
    url = default_remote_url(project)
    with tempfile.TemporaryDirectory(prefix="gitml-seed-") as scratch:
        work = Path(scratch)
        _dvc("init", "--no-scm", "--quiet", cwd=work)
        extract_csv(download_wheel(cache_dir), work / "data")
        _dvc("add", "--quiet", "data", cwd=work)
        expected, got = tracked_md5(project / "data.dvc"), tracked_md5(work / "data.dvc")
        if expected != got:
            raise SeedError(
                f"{WHEEL_REQUIREMENT} data hashes to {got}, data.dvc expects {expected}"
            )
        _dvc("remote", "add", "--default", "seed", url, cwd=work)
        _dvc("push", "--quiet", cwd=work)
    return url


def pull_data(project: Path = PROJ_ROOT, cache_dir: Path = WHEEL_CACHE) -> str:
    """`dvc pull data.dvc`; if the bundled local remote is still empty, seed it first.

    Returns:
        What happened, for the log.

    Raises:
        SeedError: when the pull fails and the default remote is not a local directory
            (a team's cloud remote is never seeded; its error, e.g. missing credentials,
            is passed on), or data.dvc no longer tracks the example (only it is seeded).
    """
    try:
        _dvc("pull", "--quiet", "data.dvc", cwd=project)
        return "data pulled"
    except SeedError as first_failure:
        url = default_remote_url(project)
        if "://" in url:
            raise first_failure from None
        if not is_example(project):
            raise SeedError(
                f"{first_failure}\n\ndata.dvc tracks your own data, which the default remote "
                f"{url} does not hold: push your data to a remote the clone can reach "
                "(`dvc remote add -d storage s3://bucket/path`, commit .dvc/config, then "
                '`uv run dvc push`; README: "Use your own remote")'
            ) from None
    seed_remote(project, cache_dir)
    _dvc("pull", "--quiet", "data.dvc", cwd=project)
    return f"seeded the local remote {url} from {WHEEL_REQUIREMENT}, then pulled"


app = typer.Typer(add_completion=False)


@app.command()
def main(
    project: Annotated[Path, typer.Option(help="Project to pull the data into.")] = PROJ_ROOT,
) -> None:
    """Pull the data (dvc pull data.dvc), seeding the bundled local remote when it is empty."""
    try:
        outcome = pull_data(project.resolve())
    except SeedError as err:
        typer.echo(f"data: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"data: {outcome}")


if __name__ == "__main__":
    app()
