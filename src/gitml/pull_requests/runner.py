"""Which runner trains a pull request: self-hosted GPU, a cloud GPU launched by CML, or
GitHub-hosted CPU. Standard library only: it runs before any environment is installed.

Configuration (repository variables and secrets, passed in as environment variables):
  GPU_RUNNER_LABELS   JSON list of a registered self-hosted runner's labels, e.g.
                      '["self-hosted", "gpu"]'
  RUNNER_CHECK_TOKEN  a token allowed to list the repository's runners (fine-grained PAT or
                      App: "Administration: read"); without it a self-hosted runner cannot be
                      confirmed online and the job would queue for up to 24 h, so the GitHub-
                      hosted runner is used instead (GPU_RUNNER_SKIP_CHECK=true overrides)
  CML_CLOUD           aws | azure | gcp: launch a cloud GPU runner with `cml runner launch`
  IS_FORK             "true" for a pull request from a fork: it always trains on a GitHub-
                      hosted runner, whatever is configured (GitHub passes forks no secrets or
                      variables either); a maintainer's `safe-to-train` label only decides
                      whether it trains at all (see pr.yml)
"""

import argparse
import json
import os
import urllib.request
from dataclasses import dataclass

GITHUB_HOSTED = ["ubuntu-latest"]
CLOUD_LABELS = ["self-hosted", "cml-gpu"]


@dataclass(frozen=True)
class Choice:
    runs_on: list[str]
    kind: str  # self-hosted | cloud | github-hosted
    reason: str


def choose(env: dict[str, str], online_label_sets: list[set[str]] | None) -> Choice:
    """Decide from configuration and, when known, the label sets of the runners online now."""
    if env.get("IS_FORK") != "false":  # unknown counts as a fork: the safe side
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
        if online_label_sets is None:
            return Choice(
                GITHUB_HOSTED, "github-hosted",
                "GPU runner configured but RUNNER_CHECK_TOKEN is not set to confirm it is online",
            )  # fmt: skip
        if any(set(labels) <= online for online in online_label_sets):
            return Choice(labels, "self-hosted", "GPU runner online")
        if not env.get("CML_CLOUD"):
            return Choice(
                GITHUB_HOSTED, "github-hosted", f"no runner with labels {labels} is online"
            )
    if env.get("CML_CLOUD"):
        return Choice(CLOUD_LABELS, "cloud", f"launching a {env['CML_CLOUD']} GPU runner")
    return Choice(GITHUB_HOSTED, "github-hosted", "no GPU runner configured")


def online_runners(repository: str, token: str) -> list[set[str]]:
    """Label sets of the repository's self-hosted runners that are online."""
    request = urllib.request.Request(
        f"{os.environ.get('GITHUB_API_URL') or 'https://api.github.com'}/repos/{repository}"
        "/actions/runners?per_page=100",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        runners = json.load(response)["runners"]
    return [
        {label["name"] for label in runner["labels"]}
        for runner in runners
        if runner["status"] == "online"  # a busy runner still takes the job when free
    ]


def main() -> None:
    """Print the choice as GitHub step outputs (to $GITHUB_OUTPUT when set)."""
    env = dict(os.environ)
    token = env.get("RUNNER_CHECK_TOKEN", "")
    needs_check = env.get("GPU_RUNNER_LABELS") and env.get("GPU_RUNNER_SKIP_CHECK") != "true"
    online = online_runners(env["GITHUB_REPOSITORY"], token) if token and needs_check else None
    choice = choose(env, online)
    lines = [
        f"runs-on={json.dumps(choice.runs_on)}",
        f"kind={choice.kind}",
        f"reason={choice.reason}",
    ]
    print("\n".join(lines))
    if "GITHUB_OUTPUT" in env:
        with open(env["GITHUB_OUTPUT"], "a") as outputs:
            outputs.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    # --help prints this module's docstring; its settings come from the environment
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
