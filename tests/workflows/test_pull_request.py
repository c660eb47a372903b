"""A fresh fork's first pull request, run by pr.yml then pr-comment.yml as GitHub runs them."""

import re
from dataclasses import dataclass

import pytest

from tests.workflows import events
from tests.workflows.conftest import REPOSITORY, Fork
from tests.workflows.harness import Result

pytestmark = [pytest.mark.slow, pytest.mark.workflows, pytest.mark.beside]

PR = 1
TOKEN = "ghs_job_token_stand_in"  # what GitHub hands each job as github.token
# The checks job runs `make test` as written; inside the harness its pytest runs a few modules
# and no harness (the whole suite is what runs the harness), the alerting tests among them:
# they need promtool, which a hosted runner must install without being root.
NESTED_PYTEST = "tests/monitoring/test_alerts.py tests/pull_requests/test_runner.py tests/pull_requests/test_comment.py"
EARLIER_COMMENTS = 31  # a discussion longer than the one page of comments CML reads


@dataclass
class Round:
    head: str
    pr: Result
    comment: Result


def push_experiment(fork: Fork, change: str, message: str) -> str:
    if fork.git("branch", "--show-current") != "experiment":
        fork.git("checkout", "-q", "-b", "experiment")
    params = fork.clone / "params.yaml"
    params.write_text(re.sub(r"(?m)^(\s+seed:) \d+", change, params.read_text(), count=1))
    fork.git("commit", "-qam", message)
    fork.git("push", "-q", "origin", "experiment")
    return fork.git("rev-parse", "HEAD")


def comment_round(fork: Fork, head: str, run_id: int, job: str | None) -> Round:
    base = fork.git("rev-parse", "origin/main")
    fork.github.add_pull(PR, head, REPOSITORY)
    payload = events.pull_request("opened" if job is None else "synchronize", PR, REPOSITORY,
                                  REPOSITORY, head, base)  # fmt: skip
    pr = fork.runner.act(
        fork.clone, "pull_request", payload, "pr.yml", job=job,
        env={"GITHUB_RUN_ID": str(run_id), "PYTEST_ARGS": NESTED_PYTEST, "WORKFLOW_TESTS": ""},
        secrets={"GITHUB_TOKEN": TOKEN},
    )  # fmt: skip
    fork.git("checkout", "-q", "main")  # pr-comment runs the default branch's code
    comment = fork.runner.act(
        fork.clone, "workflow_run",
        events.workflow_run(run_id, "success" if pr.returncode == 0 else "failure", head,
                            REPOSITORY, REPOSITORY, PR),
        "pr-comment.yml", env={"GITHUB_RUN_ID": str(run_id + 1)},
        secrets={"GITHUB_TOKEN": TOKEN},
    )  # fmt: skip
    fork.git("checkout", "-q", "experiment")
    return Round(head, pr, comment)


@pytest.fixture(scope="module")
def first(fork: Fork) -> Round:
    for n in range(EARLIER_COMMENTS):
        fork.github.state.comments.setdefault(PR, []).append({"id": n + 1, "body": f"note {n}"})
    head = push_experiment(fork, r"\1 7", "Try another seed")
    return comment_round(fork, head, run_id=101, job=None)


@pytest.fixture(scope="module")
def second(fork: Fork, first: Round) -> Round:
    head = push_experiment(fork, r"\1 11", "And another")
    return comment_round(fork, head, run_id=201, job="train")


def reports(fork: Fork) -> list[dict[str, str]]:
    return [
        c for c in fork.github.comments_on(PR) if "CML watermark gitml model report" in c["body"]
    ]


def test_checks_pass_as_a_non_root_runner(first: Round) -> None:
    assert first.pr.succeeded("checks"), first.pr.job_output("checks")[-6000:]


def test_training_runs_on_a_hosted_runner_when_nothing_is_configured(first: Round) -> None:
    assert first.pr.succeeded("pick-runner"), first.pr.job_output("pick-runner")[-3000:]
    assert "kind=github-hosted" in first.pr.job_output("pick-runner")
    assert not first.pr.ran("launch-runner")
    assert first.pr.succeeded("train"), first.pr.job_output("train")[-6000:]


def test_train_uploads_the_report(fork: Fork, first: Round) -> None:
    report = fork.runner.artifacts / "101" / "pr-report"
    assert (report / "report.md").read_text().startswith("## ")
    assert sorted(p.name for p in (report / "figures").glob("*.png"))
    assert f'"pr_number": "{PR}"' in (report / "meta.json").read_text()


def test_one_comment_with_the_report_and_its_plots(fork: Fork, first: Round) -> None:
    assert first.comment.succeeded("comment"), first.comment.job_output("comment")[-6000:]
    posted = reports(fork)
    assert len(posted) == 1
    report = (fork.runner.artifacts / "101" / "pr-report" / "report.md").read_text()
    headings = [line for line in report.splitlines() if line.startswith("#")]
    assert all(heading in posted[0]["body"] for heading in headings)
    figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", report)
    assert figures
    # same-repository PR, CML_PUBLISH unset: CML publishes the plots so they show in the comment
    assert posted[0]["body"].count("https://asset.cml.dev/") == len(figures)
    assert re.search(r"\| train\.seed\s*\| 42\s*\| 7\s*\|", posted[0]["body"])


def test_a_second_push_updates_that_comment(fork: Fork, first: Round, second: Round) -> None:
    assert second.pr.succeeded("train"), second.pr.job_output("train")[-6000:]
    assert second.comment.succeeded("comment"), second.comment.job_output("comment")[-6000:]
    posted = reports(fork)
    assert len(posted) == 1, "a push must update the report, not add one"
    assert re.search(r"\| train\.seed\s*\| 42\s*\| 11\s*\|", posted[0]["body"])
    assert not re.search(r"\| 42\s*\| 7\s*\|", posted[0]["body"])
    assert len(fork.github.comments_on(PR)) == EARLIER_COMMENTS + 1  # nobody else's was touched


# --- a pull request from a fork ---------------------------------------------------------------

FORK_PR, FORK_REPO = 2, "someone/Bike-Demand"
# Configured for the team's GPU runner; GitHub (and so the harness) passes a fork's run neither
# these variables nor any secret, and pick-runner sends a fork to a hosted runner regardless.
GPU_VARIABLES = {"GPU_RUNNER_LABELS": '["self-hosted", "gpu"]', "GPU_RUNNER_SKIP_CHECK": "true"}


def fork_pr(fork: Fork, run_id: int, labels: list[str], label: str | None) -> Result:
    head, base = fork.git("rev-parse", "HEAD"), fork.git("rev-parse", "origin/main")
    fork.github.add_pull(FORK_PR, head, FORK_REPO)
    payload = events.pull_request("labeled" if label else "opened", FORK_PR, REPOSITORY,
                                  FORK_REPO, head, base, labels, label)  # fmt: skip
    # verbose: act then says which jobs it skipped, and why
    return fork.runner.act(fork.clone, "pull_request", payload, "pr.yml", job="train",
                           env={"GITHUB_RUN_ID": str(run_id)}, variables=GPU_VARIABLES,
                           secrets={"GITHUB_TOKEN": TOKEN}, verbose=True)  # fmt: skip


@pytest.fixture(scope="module")
def fork_unlabelled(fork: Fork, second: Round) -> Result:
    return fork_pr(fork, 501, [], None)


@pytest.fixture(scope="module")
def fork_labelled(fork: Fork, fork_unlabelled: Result) -> tuple[Result, Result]:
    trained = fork_pr(fork, 502, ["safe-to-train"], "safe-to-train")
    comment = fork.runner.act(
        fork.clone, "workflow_run",
        events.workflow_run(502, "success", fork.git("rev-parse", "HEAD"), FORK_REPO,
                            REPOSITORY, FORK_PR),
        "pr-comment.yml", env={"GITHUB_RUN_ID": "503"}, secrets={"GITHUB_TOKEN": TOKEN},
    )  # fmt: skip
    return trained, comment


def test_a_fork_trains_nothing_until_a_maintainer_labels_it(fork_unlabelled: Result) -> None:
    assert fork_unlabelled.returncode == 0, fork_unlabelled.output[-4000:]
    # act said it skipped them on their `if:` (not merely: nothing was parsed)
    assert fork_unlabelled.skipped("pick-runner"), fork_unlabelled.output[-4000:]
    assert fork_unlabelled.skipped("train")
    assert not fork_unlabelled.ran("pick-runner") and not fork_unlabelled.ran("train")


def test_a_labelled_fork_trains_on_a_hosted_runner(fork_labelled: tuple[Result, Result]) -> None:
    trained, _ = fork_labelled
    assert trained.succeeded("pick-runner"), trained.job_output("pick-runner")[-3000:]
    assert "kind=github-hosted" in trained.job_output("pick-runner")
    assert "pull request from a fork" in trained.job_output("pick-runner")
    assert trained.succeeded("train"), trained.job_output("train")[-6000:]


def test_a_forks_report_is_posted_without_publishing_its_images(
    fork: Fork, fork_labelled: tuple[Result, Result]
) -> None:
    _, comment = fork_labelled
    assert comment.succeeded("comment"), comment.job_output("comment")[-4000:]
    (posted,) = fork.github.comments_on(FORK_PR)
    assert "asset.cml.dev" not in posted["body"] and "](figures/" in posted["body"]
