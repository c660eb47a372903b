"""Pipeline timings to compare changes by (a benchmark, not a test: it prints, never asserts).

Prints: cold `make run` in a fresh clone (environment from uv's warm cache, data seeded and
pulled, all stages run), a no-op `dvc repro`, and training alone (forced `train` stage, plus the
fit time the stage records). Run with `make bench`.
"""

import json
import os
import tempfile
import time
from pathlib import Path

from tests.e2e.clone import clean_env, make_clone, run


def timed(*cmd: str, cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    run(*cmd, cwd=cwd, env=env)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gitml-bench-") as scratch:
        clone = make_clone(Path(scratch) / "clone")
        env = clean_env()
        cold = timed("make", "run", cwd=clone, env=env)
        env["PATH"] = f"{clone / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
        no_op = min(timed("dvc", "repro", cwd=clone, env=env) for _ in range(3))
        train_stage = timed(
            "dvc", "repro", "--force", "--single-item", "train", cwd=clone, env=env
        )
        fit = json.loads((clone / "reports" / "training.json").read_text())["train_seconds"]
    print(f"{'cold make run (fresh clone)':32s} {cold:7.1f} s")
    print(f"{'no-op dvc repro (best of 3)':32s} {no_op:7.1f} s")
    print(f"{'train stage (forced)':32s} {train_stage:7.1f} s")
    print(f"{'  of which model fit':32s} {fit:7.1f} s")
    print(f"(machine: {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
