"""Before a deploy job changes anything: are the settings it needs there? Each missing one is
named as the user sets it on GitHub (a secret or a variable), not as the job sees it.

Standard library only: it runs before the environment is installed (`make deploy-preflight`).
"""

import argparse
import os
import sys
from collections.abc import Mapping

# job environment variable -> (what the user sets on GitHub, what it is for)
NEEDED = {
    "KUBECONFIG_DATA": ("secret KUBECONFIG", "a kubeconfig for the cluster"),
    "SMOKE_URL": ("variable {ENV}_URL", "where the smoke checks reach the {env} service"),
}


def missing(env_name: str, env: Mapping[str, str]) -> list[str]:
    """One line per unset setting."""
    return [
        f"{setting.format(ENV=env_name.upper())} is not set ({why.format(env=env_name)})"
        for variable, (setting, why) in NEEDED.items()
        if not env.get(variable, "").strip()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", required=True, help="staging or production")
    args = parser.parse_args(argv)
    problems = missing(args.env, os.environ)
    for problem in problems:
        print(f"::error title=Deploy to {args.env} not configured::{problem}", file=sys.stderr)
    if problems:
        print(
            f"preflight: set them in Settings > Secrets and variables > Actions (or on the "
            f"{args.env} environment); nothing was deployed",
            file=sys.stderr,
        )
        raise SystemExit(1)
    print(f"preflight: {args.env} has a cluster and a smoke URL")


if __name__ == "__main__":
    main()
