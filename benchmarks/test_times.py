"""How long the checks take, on a fresh clone (a benchmark, not a test: it prints, never asserts).

`pr`: what an experiment's pull request waits for. A fresh clone, a branch that changes
params.yaml (as an experiment does), then `make test-pr` against main: lint and the fast suite.
`all`: `make test` on a fresh clone, as CI runs it (`bash .ci/run`). Both install the project's
environment from uv's cache (warm, as setup-uv's cache makes it on GitHub) and the system tools
when missing. Run with `make bench-tests` (WHAT=pr, all, or both).
"""

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.clone import clean_env, make_clone, run

from gitml.config import PROJ_ROOT


def timed(*cmd: str, cwd: Path, env: dict[str, str], log: Path) -> float:
    """Wall seconds of a command that must succeed; its output's tail is printed either way,
    and the whole of it kept in `log` (the scratch clone is removed after)."""
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, check=False)  # fmt: skip
    elapsed = time.perf_counter() - started
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout)
    tail = done.stdout.strip().splitlines()[-3:]
    print("\n".join(f"    | {line}" for line in tail))
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({done.returncode}) after {elapsed:.0f} s; its output: {log}"
        )
    return elapsed


def experiment(clone: Path) -> None:
    """A branch that changes a parameter of params.yaml (its first seed), committed."""
    params_file = clone / "params.yaml"
    text = params_file.read_text()
    changed = re.sub(r"(seed: )(\d+)", lambda m: f"{m[1]}{int(m[2]) + 1}", text, count=1)
    assert changed != text, "params.yaml has no seed to change"
    params_file.write_text(changed)
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    run(*git, "switch", "-qc", "experiment", cwd=clone)
    run(*git, "commit", "-qam", "an experiment", cwd=clone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["pr", "all", "both"])
    what = parser.parse_args().what
    env = clean_env()
    # the harness's copies of the pinned actions sit beside the checkout it runs from
    env.setdefault("GITML_ACTIONS_DIR", str(PROJ_ROOT.parent / "shared" / "github-actions"))
    figures = []
    for name in ("pr", "all") if what == "both" else (what,):
        with tempfile.TemporaryDirectory(prefix="gitml-test-times-") as scratch:
            clone = make_clone(Path(scratch) / "clone")
            if name == "pr":
                experiment(clone)
                print("make test-pr (an experiment's change: params.yaml), fresh clone:")
                seconds = timed("make", "test-pr", "PR_BASE=main", cwd=clone, env=env,
                                log=PROJ_ROOT / "build" / "bench-tests-pr.log")  # fmt: skip
            else:
                print("make test, fresh clone:")
                seconds = timed("make", "test", cwd=clone, env=env,
                                log=PROJ_ROOT / "build" / "bench-tests-all.log")  # fmt: skip
            figures.append((name, seconds))
    for name, seconds in figures:
        label = "pull request check (make test-pr)" if name == "pr" else "make test"
        print(f"{label:36s} {seconds / 60:6.1f} min")
    print(f"(machine: {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
