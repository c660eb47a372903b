"""Before a deploy job changes anything: are the settings it needs there, and sound? Each
missing one is named as the user sets it on GitHub (a secret or a variable), not as the job
sees it.

- The cluster: secret KUBECONFIG (passed as KUBECONFIG_DATA).
- Where the smoke checks reach the environment: SMOKE_URL, else the variable of the
  environment (STAGING_URL, PRODUCTION_URL). Production's must be set and must not be
  staging's (when the job can see STAGING_URL: a variable scoped to the staging environment is
  not visible in production's job): a production release smoke-checked against staging passes
  whatever production serves.
- Production's protection: GitHub creates an environment that a job names but that does not
  exist, with no protection rule, so production would deploy right after staging with nobody
  asked. With the job's token (`permissions: actions: read`) this reads the environment's
  rules and warns, on the run's page and in its summary, when none makes a person approve or
  wait; it says so too when it cannot read them.

Standard library only: it runs before the environment is installed (`make deploy-preflight`).
"""

import argparse
import os
import sys
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from gitml.github import GitHub, annotate, step_summary

KUBECONFIG = ("KUBECONFIG_DATA", "secret KUBECONFIG", "a kubeconfig for the cluster")
# rule types that stop a deploy until a person acts (a branch policy only filters refs)
GATING_RULES = {"required_reviewers", "wait_timer"}
PROTECT = "Settings > Environments > {env} > Deployment protection rules: Required reviewers"


class PreflightError(RuntimeError):
    """The environment's settings cannot be read; the message says why."""


class Environments(GitHub):
    error = PreflightError
    permission = "actions: read"


def url_of(env_name: str, env: Mapping[str, str]) -> str:
    """Where the smoke checks of `env_name` go: SMOKE_URL, else its variable <ENV>_URL."""
    return (env.get("SMOKE_URL") or env.get(f"{env_name.upper()}_URL") or "").strip()


def same_service(first: str, second: str) -> bool:
    """Two URLs that reach the same place (case of scheme and host, default port, end slash)."""

    def key(url: str) -> tuple[str, str, int | None, str]:
        parts = urlsplit(url.strip())
        default = {"http": 80, "https": 443}.get(parts.scheme.lower())
        return (parts.scheme.lower(), (parts.hostname or "").lower(),
                parts.port or default, parts.path.rstrip("/"))  # fmt: skip

    return key(first) == key(second)


def problems(env_name: str, env: Mapping[str, str]) -> list[str]:
    """One line per missing or unsound setting."""
    found = []
    if not env.get(KUBECONFIG[0], "").strip():
        found.append(f"{KUBECONFIG[1]} is not set ({KUBECONFIG[2]})")
    url = url_of(env_name, env)
    variable = f"{env_name.upper()}_URL"
    if not url:
        found.append(f"variable {variable} is not set (where the smoke checks reach the "
                     f"{env_name} service)")  # fmt: skip
    staging = env.get("STAGING_URL", "").strip()
    if env_name == "production" and url and staging and same_service(url, staging):
        found.append(f"variable {variable} is staging's URL ({url}): production's smoke checks "
                     "would reach staging and pass whatever production serves")  # fmt: skip
    return found


def protection(env_name: str, env: Mapping[str, str]) -> tuple[str, str]:
    """(level, message) about the environment's protection; ("", "") when a rule gates it."""
    if not env.get("GITHUB_TOKEN"):
        return "notice", (f"the {env_name} environment's protection rules could not be read "
                          "(the job passes no GITHUB_TOKEN): check "
                          + PROTECT.format(env=env_name))  # fmt: skip
    try:
        found = Environments(env).call("GET", f"/environments/{quote(env_name, safe='')}")
    except PreflightError as err:
        if getattr(err, "status", 0) != 404:
            return "notice", (f"the {env_name} environment's protection rules could not be "
                              f"read ({err}): check " + PROTECT.format(env=env_name))  # fmt: skip
        found = None
    rules = {rule.get("type") for rule in (found or {}).get("protection_rules") or []}
    if rules & GATING_RULES:
        return "", ""
    what = "does not exist, so GitHub creates it at this deploy" if found is None else "exists"
    return "warning", (f"the {env_name} environment {what} with no protection rule: it deploys "
                       "as soon as the jobs before it succeed, with nobody asked. Add required "
                       "reviewers (or a wait timer): " + PROTECT.format(env=env_name))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", required=True, help="staging or production")
    args = parser.parse_args(argv)
    if args.env == "production":
        level, message = protection(args.env, os.environ)
        if level:
            annotate(level, "Production is not protected", message)
            step_summary(f"### Production is not protected\n\n{message[0].upper()}{message[1:]}.")
    found = problems(args.env, os.environ)
    for problem in found:
        print(f"::error title=Deploy to {args.env} not configured::{problem}", file=sys.stderr)
    if found:
        print(
            f"preflight: set them in Settings > Secrets and variables > Actions (or on the "
            f"{args.env} environment); nothing was deployed",
            file=sys.stderr,
        )
        raise SystemExit(1)
    print(f"preflight: {args.env} has a cluster and a smoke URL ({url_of(args.env, os.environ)})")


if __name__ == "__main__":
    main()
