"""Can this pull request's run read the team's DVC remote? Standard library only: it runs before
any environment is installed (`make data-access`).

GitHub passes a pull request from a fork no secrets, so a remote that needs credentials (S3, GCS,
Azure, SSH, ...) cannot be read there: the data cannot be pulled, so the tests that need it, the
training and the report cannot run. That is GitHub's rule, not a failure of the change: the
check says what did not run and why, and stays green. Lint and the audit still run. A remote
that needs no credentials (the bundled local remote, or a public HTTP(S) one) is read by forks
as by anyone. A same-repository run always tries: its credentials are the repository's secrets,
and a missing one is named (as a warning: a self-hosted runner may authenticate otherwise).

Prints `readable`, `remote` and `reason` as step outputs (pr.yml's checks job wires its steps on
`readable`; `gitml.pull_requests.runner` skips a fork's training on the same rule).
"""

import argparse
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gitml.github import annotate, step_outputs, step_summary

# URL scheme -> (environment variables DVC authenticates with, the secrets that set them)
CREDENTIALS = {
    "s3": (("AWS_ACCESS_KEY_ID",),
           "DVC_READ_AWS_ACCESS_KEY_ID and DVC_READ_AWS_SECRET_ACCESS_KEY"),
    "gs": (("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS_DATA"),
           "DVC_READ_GCP_CREDENTIALS"),
    "azure": (("AZURE_STORAGE_CONNECTION_STRING",), "DVC_READ_AZURE_CONNECTION_STRING"),
}  # fmt: skip
ANONYMOUS = ("http", "https")  # remotes anyone may read: no credentials needed


@dataclass(frozen=True)
class Access:
    readable: bool
    remote: str
    reason: str


def dvc_config(text: str) -> dict[str, dict[str, str]]:
    """DVC's config file (configobj syntax: `['remote "name"']` sections, `key = value`)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if header := re.fullmatch(r"\[\s*(['\"]?)(.+?)\1\s*\]", stripped):
            current = sections.setdefault(header[2], {})
        elif "=" in stripped:
            key, _, value = stripped.partition("=")
            current[key.strip()] = value.strip().strip("'\"")
    return sections


def default_remote(project: Path) -> str:
    """The URL of the default remote (.dvc/config, overridden by .dvc/config.local); "" if none."""
    merged: dict[str, dict[str, str]] = {}
    for name in ("config", "config.local"):
        path = project / ".dvc" / name
        if path.is_file():
            for section, values in dvc_config(path.read_text()).items():
                merged.setdefault(section, {}).update(values)
    name = merged.get("core", {}).get("remote", "")
    return merged.get(f'remote "{name}"', {}).get("url", "") if name else ""


def scheme(url: str) -> str:
    """The remote's URL scheme ("" for a local path)."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def decide(url: str, env: Mapping[str, str]) -> Access:
    """Whether the run can read the remote at `url`, and why not."""
    kind = scheme(url)
    if env.get("IS_FORK") != "true" or not kind or kind in ANONYMOUS:
        return Access(True, url, "")
    return Access(
        False, url,
        f"this pull request comes from a fork, and GitHub gives a fork's run no secrets, so "
        f"the team's DVC remote ({url}) cannot be read: the data cannot be pulled",
    )  # fmt: skip


def missing_credentials(url: str, env: Mapping[str, str]) -> str:
    """A warning when none of the variables DVC authenticates with for `url` is set; else ""."""
    variables, secrets = CREDENTIALS.get(scheme(url), ((), ""))
    if not variables or any(env.get(name) for name in variables):
        return ""
    return (f"no credentials for the DVC remote {url} in this job ({' / '.join(variables)}): "
            f"if pulling fails, set the repository secrets {secrets}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="the checkout")
    args = parser.parse_args(argv)
    url = default_remote(args.project)
    access = decide(url, os.environ)
    step_outputs({"readable": str(access.readable).lower(), "remote": access.remote,
                  "reason": access.reason})  # fmt: skip
    if access.readable:
        warning = missing_credentials(url, os.environ)
        if warning:
            annotate("warning", "DVC remote credentials", warning)
        print(f"data-access: the DVC remote {url or '(none)'} can be read from this run")
        return
    not_run = ("the tests (they need the data), training and the model report did not run; "
               "lint and the dependency audit did")  # fmt: skip
    annotate("notice", "Data not pulled", f"{access.reason}. So {not_run}.")
    step_summary(
        f"### Not run: tests, training, model report\n\n{access.reason[0].upper()}"
        f"{access.reason[1:]}. So {not_run}. A maintainer who has read the change can run "
        "everything by pushing its branch to this repository "
        "(`git fetch origin pull/N/head:pr-N && git push origin pr-N`)."
    )
    print(f"data-access: {access.reason}", file=sys.stderr)


if __name__ == "__main__":
    main()
