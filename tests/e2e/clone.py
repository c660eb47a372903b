"""Fresh clones of the project as it stands, for end-to-end tests and benchmarks."""

import os
import shutil
import subprocess
from pathlib import Path

from gitml.config import PROJ_ROOT


class CommandFailed(RuntimeError):
    """A command of the end-to-end flow failed; the message holds its output."""


def run(*cmd: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command, failing the test with its output when it fails."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CommandFailed(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout + result.stderr


def project_uv() -> str:
    """The uv this checkout's make uses: the one UV names (make's own setting), else uv on
    PATH, else the one make bootstrapped into .tools/."""
    return os.environ.get("UV") or shutil.which("uv") or str(PROJ_ROOT / ".tools" / "bin" / "uv")


def clean_env() -> dict[str, str]:
    """The caller's environment without this checkout's venv, so the clone builds its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    venv_bin = str(PROJ_ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    env["UV"] = project_uv()  # reuse it (and its cache) instead of bootstrapping another
    return env


def make_clone(destination: Path) -> Path:
    """`git clone` of a commit of exactly the files git would track here, committed or not."""
    files = run(
        "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=PROJ_ROOT
    )
    source = destination.parent / "source"
    for name in filter(None, files.split("\0")):
        if (PROJ_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJ_ROOT / name, source / name)
    run("git", "init", "-q", "-b", "main", cwd=source)
    run("git", "add", "-A", cwd=source)
    run(
        "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "snapshot", cwd=source
    )
    run("git", "clone", "-q", str(source), str(destination), cwd=destination.parent)
    return destination
