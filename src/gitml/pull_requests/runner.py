"""Which runner trains a pull request: self-hosted GPU, a cloud GPU launched by CML, or
GitHub-hosted CPU; or none, for a fork that cannot read the team's data. Standard library only:
it runs before any environment is installed.

Configuration (repository variables and secrets, passed in as environment variables):
  GPU_RUNNER_LABELS   JSON list of a registered self-hosted runner's labels, e.g.
                      '["self-hosted", "gpu"]'
  RUNNER_CHECK_TOKEN  a token allowed to list the runners: the repository's (fine-grained PAT
                      or App: "Administration: read") and, when it may, the organisation's
                      ("Self-hosted runners: read" on the organisation); without it a
                      self-hosted runner cannot be confirmed online and the job would queue for
                      up to 24 h, so the GitHub-hosted runner is used instead
                      (GPU_RUNNER_SKIP_CHECK=true overrides). When the check itself fails (an
                      expired token, GitHub unreachable), the GitHub-hosted runner is used too,
                      with a warning that says why.
  CML_CLOUD           aws | azure | gcp: launch a cloud GPU runner with `cml runner launch`
  IS_FORK             "true" for a pull request from a fork: it always trains on a GitHub-
                      hosted runner, whatever is configured (GitHub passes forks no secrets or
                      variables either), and not at all when the team's DVC remote needs
                      credentials (gitml.pull_requests.access); a maintainer's `safe-to-train`
                      label only decides whether it trains at all (see pr.yml)

What this cannot enforce: GitHub runs a pull request's own copy of pr.yml, so a fork can edit
`runs-on:` and the `if:` that guards this job. Only a repository setting keeps fork code off a
self-hosted runner: Settings > Actions > General > "Approval for running fork pull request
workflows from contributors" = "Require approval for all external contributors" (or self-hosted
runners in private repositories only). With a self-hosted runner configured, this reads that
setting (with RUNNER_CHECK_TOKEN) and warns when it is weaker, or says it could not confirm it.
"""

import argparse
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitml.github import annotate, step_outputs, step_summary
from gitml.pull_requests.access import Access, decide, default_remote

GITHUB_HOSTED = ["ubuntu-latest"]
CLOUD_LABELS = ["self-hosted", "cml-gpu"]
GPU_SYNC_ARGS = "--extra gpu --no-dev"  # CUDA XGBoost instead of the test tools
SAFE_APPROVAL = "all_external_contributors"
APPROVAL_SETTING = (
    'Settings > Actions > General > "Approval for running fork pull request workflows from '
    'contributors" = "Require approval for all external contributors"'
)


@dataclass(frozen=True)
class Choice:
    runs_on: list[str]
    kind: str  # self-hosted | cloud | github-hosted
    reason: str
    train: bool = True  # false: nothing can train this pull request (a fork without the data)

    @property
    def sync_args(self) -> str:
        """UV_SYNC_ARGS for the training job: GPU runners install the `gpu` extra."""
        return GPU_SYNC_ARGS if self.kind in ("self-hosted", "cloud") else ""


def choose(
    env: Mapping[str, str], online_label_sets: list[set[str]] | None,
    data: Access | None = None, check_failed: str = "",
) -> Choice:  # fmt: skip
    """Decide from configuration and, when known, the label sets of the runners online now
    (None: not checked, or `check_failed` says why the check failed)."""
    if env.get("IS_FORK") != "false":  # unknown counts as a fork: the safe side
        if data is not None and not data.readable:
            return Choice(GITHUB_HOSTED, "github-hosted", f"not trained: {data.reason}", False)
        why = "pull request from a fork" if env.get("IS_FORK") == "true" else "IS_FORK not set"
        return Choice(GITHUB_HOSTED, "github-hosted", why)
    labels_json = env.get("GPU_RUNNER_LABELS", "").strip()
    if labels_json:
        try:
            labels = json.loads(labels_json)
        except json.JSONDecodeError:
            labels = None
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ValueError(
                f"GPU_RUNNER_LABELS must be a JSON list of labels, got {labels_json!r}"
            )
        if env.get("GPU_RUNNER_SKIP_CHECK") == "true":
            return Choice(labels, "self-hosted", "runner labels configured")
        if check_failed and not env.get("CML_CLOUD"):
            return Choice(
                GITHUB_HOSTED, "github-hosted", f"the runner check failed: {check_failed}"
            )
        if online_label_sets is None and not check_failed:
            return Choice(
                GITHUB_HOSTED, "github-hosted",
                "GPU runner configured but RUNNER_CHECK_TOKEN is not set to confirm it is online",
            )  # fmt: skip
        if any(set(labels) <= online for online in online_label_sets or []):
            return Choice(labels, "self-hosted", "GPU runner online")
        if not env.get("CML_CLOUD"):
            return Choice(
                GITHUB_HOSTED, "github-hosted", f"no runner with labels {labels} is online"
            )
    if env.get("CML_CLOUD"):
        return Choice(CLOUD_LABELS, "cloud", f"launching a {env['CML_CLOUD']} GPU runner")
    return Choice(GITHUB_HOSTED, "github-hosted", "no GPU runner configured")


def get(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return dict(json.load(response))


def api_url() -> str:
    return os.environ.get("GITHUB_API_URL") or "https://api.github.com"


def online(runners: list[dict[str, Any]]) -> list[set[str]]:
    """Label sets of the runners that are online (a busy one still takes the job when free)."""
    return [{label["name"] for label in runner["labels"]}
            for runner in runners if runner["status"] == "online"]  # fmt: skip


def online_runners(repository: str, token: str) -> list[set[str]]:
    """Label sets of the repository's self-hosted runners that are online."""
    return online(get(f"{api_url()}/repos/{repository}/actions/runners?per_page=100", token)[
        "runners"])  # fmt: skip


def org_runners(owner: str, token: str) -> list[set[str]] | None:
    """The organisation's online runners (those shared with this repository among them), or
    None when the token may not list them or the owner is a user, not an organisation."""
    try:
        found = get(f"{api_url()}/orgs/{owner}/actions/runners?per_page=100", token)
    except urllib.error.HTTPError as err:
        if err.code in (403, 404):
            return None
        raise
    return online(found["runners"])


def check_runners(repository: str, token: str) -> tuple[list[set[str]] | None, str]:
    """(online label sets, "") or (None, why the check failed)."""
    try:
        label_sets = online_runners(repository, token)
        label_sets += org_runners(repository.split("/")[0], token) or []
    except urllib.error.HTTPError as err:
        hint = " (is RUNNER_CHECK_TOKEN expired or revoked?)" if err.code == 401 else (
            " (RUNNER_CHECK_TOKEN needs Administration: read on this repository)"
            if err.code in (403, 404) else "")  # fmt: skip
        return None, f"GitHub answered {err.code} {err.reason}{hint}"
    except (urllib.error.URLError, TimeoutError, ValueError, KeyError, TypeError) as err:
        return None, f"GitHub's runner list could not be read ({err})"
    return label_sets, ""


def approval_warning(repository: str, token: str) -> tuple[str, str]:
    """(level, message) about the fork approval setting, or ("", "") when it is the safe one."""
    url = f"{api_url()}/repos/{repository}/actions/permissions/fork-pr-contributor-approval"
    risk = ("GitHub runs a pull request's own copy of pr.yml, so a fork can edit `runs-on:` "
            "and the `if:` that keeps it off the self-hosted GPU runner")  # fmt: skip
    try:
        policy = str(get(url, token)["approval_policy"]) if token else ""
    except (urllib.error.URLError, TimeoutError, ValueError, KeyError) as err:
        policy, why = "", str(err)
    else:
        why = "" if token else "RUNNER_CHECK_TOKEN is not set"
    if policy == SAFE_APPROVAL:
        return "", ""
    if policy:
        return "warning", (f"{risk}, and this repository approves only some outside "
                           f"contributors' runs ({policy}): set {APPROVAL_SETTING}")  # fmt: skip
    return "notice", (f"{risk}; whether outside contributors' runs wait for approval could "
                      f"not be confirmed ({why}): check {APPROVAL_SETTING}")  # fmt: skip


def main() -> None:
    """Print the choice as GitHub step outputs (to $GITHUB_OUTPUT when set)."""
    env = dict(os.environ)
    token = env.get("RUNNER_CHECK_TOKEN", "")
    needs_check = env.get("GPU_RUNNER_LABELS") and env.get("GPU_RUNNER_SKIP_CHECK") != "true"
    label_sets, failed = None, ""
    if token and needs_check and env.get("IS_FORK") == "false":
        label_sets, failed = check_runners(env["GITHUB_REPOSITORY"], token)
    choice = choose(env, label_sets, decide(default_remote(Path.cwd()), env), failed)
    values = {"runs-on": json.dumps(choice.runs_on), "kind": choice.kind,
              "reason": choice.reason, "train": str(choice.train).lower(),
              "sync-args": choice.sync_args}  # fmt: skip
    print("\n".join(f"{key}={value}" for key, value in values.items()), flush=True)
    step_outputs(values)
    if failed:
        annotate("warning", "Runner check failed",
                 f"{failed}: training on a GitHub-hosted runner instead")  # fmt: skip
    if not choice.train:
        why = choice.reason.removeprefix("not trained: ")
        annotate("notice", "Not trained", why)
        step_summary(f"### Not trained\n\n{why[0].upper()}{why[1:]}.")
    if env.get("GPU_RUNNER_LABELS", "").strip() and env.get("IS_FORK") == "false":
        level, message = approval_warning(env["GITHUB_REPOSITORY"], token)
        if level:
            annotate(level, "Fork pull requests and the self-hosted runner", message)


if __name__ == "__main__":
    # --help prints this module's docstring; its settings come from the environment
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
