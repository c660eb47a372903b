"""The few GitHub REST calls our commands make, with the job's token (standard library only:
`make monitor-issue` and the monitor's retrain trigger run on the runner's python3, before any
environment is installed). The API is at GITHUB_API_URL, which GitHub Actions sets (GitHub
Enterprise hosts too); the tests serve a stand-in on loopback."""

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


def step_outputs(values: Mapping[str, str]) -> None:
    """Append KEY=VALUE lines to the step's outputs (GITHUB_OUTPUT), when running on GitHub."""
    if "GITHUB_OUTPUT" in os.environ:
        with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as file:
            file.writelines(f"{key}={value}\n" for key, value in values.items())


def annotate(level: str, title: str, message: str) -> None:
    """A notice, warning or error shown on the run's page (a workflow command on stdout)."""
    text = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    print(f"::{level} title={title.replace(',', ' ').replace('::', ' ')}::{text}", flush=True)


def step_summary(markdown: str) -> None:
    """Append markdown to the job's summary (GITHUB_STEP_SUMMARY), when running on GitHub."""
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as file:
            file.write(markdown.rstrip("\n") + "\n\n")


class GitHubError(RuntimeError):
    """A call was refused or GitHub could not be reached; the message says which and why.
    `status` is GitHub's HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class GitHub:
    """One repository's API, called with the token in `token_variable`."""

    error: type[RuntimeError] = GitHubError
    permission = "contents: read"  # what the workflow must grant, named in refusals

    def __init__(self, env: Mapping[str, str], token_variable: str = "GITHUB_TOKEN") -> None:
        for name in (token_variable, "GITHUB_REPOSITORY"):
            if not env.get(name):
                raise self.error(
                    f"environment variable {name} is not set: the workflow passes "
                    f"`GITHUB_TOKEN: ${{{{ github.token }}}}` (permissions: {self.permission})"
                )
        self.repository = env["GITHUB_REPOSITORY"]
        self.api = env.get("GITHUB_API_URL") or "https://api.github.com"
        self.token = env[token_variable]

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.api}/repos/{self.repository}{path}", method=method,
            data=None if payload is None else json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {self.token}",
                     "Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": "2022-11-28"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                data = response.read()
        except urllib.error.HTTPError as err:
            raise self.refusal(self.explain(method, path, err), err.code) from None
        except (urllib.error.URLError, TimeoutError) as err:
            raise self.refusal(f"{self.api} cannot be reached: {err}", 0) from None
        return json.loads(data) if data else None

    def refusal(self, message: str, status: int) -> RuntimeError:
        """The module's error, carrying GitHub's HTTP status as `status` (0: no answer)."""
        error = self.error(message)
        error.status = status  # type: ignore[attr-defined]
        return error

    def explain(self, method: str, path: str, err: urllib.error.HTTPError) -> str:
        detail = err.read().decode(errors="replace")[:300]
        if err.code in (401, 403):
            return (
                f"{method} {path} was refused ({err.code}): the token needs "
                f"`permissions: {self.permission}` on {self.repository}: {detail}"
            )
        return f"{method} {path} failed ({err.code}): {detail}"
