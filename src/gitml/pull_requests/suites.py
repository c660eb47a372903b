"""Which tests does a change need? Standard library only: `make test-pr` asks before it runs
pytest.

A pull request that changes what an experiment changes (params.yaml, the data, the pipeline's
code and its unit tests, docs) cannot break the workflow harness, the image or the release
path: the person who opened it waits for the fast suite only (lint, unit tests), and the PR's
own training job runs the pipeline. A change to anything the heavy suites exercise (workflows,
Makefile, Dockerfile, manifests, serving, release, the monitoring and pull-request code the
workflows call, the dataset's spec, the dependencies, the other tests) runs them all: `make
test`. main.yml runs `make test` on every push and every night whatever changed, so nothing
goes untested for long.

When the changed files cannot be listed (no base commit in a shallow checkout, a base that
does not exist), everything runs: never fewer tests for want of a diff.

Prints `all` or `fast` on stdout, and why on stderr.
"""

import argparse
import subprocess
import sys
from collections.abc import Iterable

# Paths (a file, or a folder ending in /) whose change needs the heavy suites ...
HEAVY_INPUTS = (
    ".github/", ".ci/", "Makefile", "Dockerfile", ".dockerignore", "deploy/", "dvc.yaml",
    "pyproject.toml", "uv.lock", ".python-version", ".pre-commit-config.yaml", ".dvc/",
    ".pip-audit-ignore", "src/", "tests/", "benchmarks/loop_demo.py",
)  # fmt: skip
# ... except these: an experiment's own code and its unit tests (the PR's training runs them)
EXPERIMENT_INPUTS = ("src/gitml/pipeline/", "tests/pipeline/", "tests/model/")  # fmt: skip


def matches(path: str, patterns: tuple[str, ...]) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in patterns)


def heavy(path: str) -> bool:
    return matches(path, HEAVY_INPUTS) and not matches(path, EXPERIMENT_INPUTS)


class DiffError(Exception):
    """The changed files could not be listed."""


def choose(changed: Iterable[str]) -> tuple[str, str]:
    """('all' | 'fast', why) for the files a change touches."""
    changed = sorted(set(changed))
    needing = [path for path in changed if heavy(path)]
    if needing:
        more = f" and {len(needing) - 5} more" if len(needing) > 5 else ""
        shown = ", ".join(needing[:5]) + more
        return "all", f"the heavy suites' inputs changed: {shown}"
    if not changed:
        return "fast", "no file changed"
    return "fast", f"{len(changed)} changed files, none an input of the heavy suites"


def git(*args: str) -> list[str]:
    """git's output lines, in the current directory (the checkout)."""
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as err:
        raise DiffError(f"git {' '.join(args)}: {err.stderr.strip() or err.returncode}") from None
    return [line for line in done.stdout.splitlines() if line]


def changed_files(base: str) -> list[str]:
    """Files changed since `base` (its merge base with HEAD), committed or not, both names of a
    rename, and new untracked files."""
    (fork_point,) = git("merge-base", base, "HEAD")  # no common commit: git fails, DiffError
    return [*git("diff", "--name-only", "--no-renames", fork_point),
            *git("ls-files", "--others", "--exclude-standard")]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gitml suites", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--base", required=True,
                        help="the commit the change is judged against (pr.yml: the merge "
                             "commit's first parent, HEAD^1; locally: main)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        suites, why = choose(changed_files(args.base))
    except DiffError as err:
        suites, why = "all", f"the changed files cannot be listed ({err})"
    print(f"suites: {suites}: {why}", file=sys.stderr)
    print(suites)
    return 0


if __name__ == "__main__":
    sys.exit(main())
