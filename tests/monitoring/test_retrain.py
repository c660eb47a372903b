"""The retraining pull request's words and token: what GitHub will and will not run for it.
(Its git and DVC steps run end to end in tests/e2e/test_loop.py and the workflow harness.)"""

import pandas as pd
import pytest

from gitml import dataset
from gitml.monitoring.retrain import (
    TOKEN_SECRET,
    RetrainError,
    body,
    branch_name,
    title,
    token_for_pull,
)


@pytest.fixture
def new(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return splits["test"].sort_values(dataset.TIME).head(30)


def test_the_branch_is_named_after_the_environment_and_the_utc_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time
    from datetime import UTC, datetime, timedelta, timezone

    monkeypatch.setenv("TZ", "Asia/Tokyo")  # the machine's zone must not matter
    time.tzset()
    moment = datetime(2026, 11, 27, 3, 4, 59, tzinfo=timezone(timedelta(hours=2)))
    assert branch_name("production", moment) == "retrain/production-20261127-0104"
    assert branch_name("staging", moment.astimezone(UTC)) == "retrain/staging-20261127-0104"
    monkeypatch.undo()
    time.tzset()


def test_the_title_counts_the_rows_and_gives_their_period(new: pd.DataFrame) -> None:
    first, last = new[dataset.TIME].min(), new[dataset.TIME].max()
    assert title("production", new) == (
        f"Retrain on 30 labelled rows of production "
        f"({first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M})"
    )


def test_an_app_token_or_pat_opens_a_pull_request_whose_checks_run() -> None:
    assert token_for_pull({TOKEN_SECRET: "app", "GITHUB_TOKEN": "job"}) == ("app", True)
    assert token_for_pull({"GITHUB_TOKEN": "job", TOKEN_SECRET: ""}) == ("job", False)


def test_no_token_at_all_says_which_to_set_and_how_to_work_locally() -> None:
    with pytest.raises(RetrainError) as refused:
        token_for_pull({})
    assert str(refused.value) == (
        "no token to open the pull request with: set the RETRAIN_TOKEN secret (a GitHub App "
        "token or fine-grained PAT: Contents and Pull requests, read and write), or pass the "
        "job's GITHUB_TOKEN (permissions: contents: write, pull-requests: write); locally, "
        "`make retrain-pr RETRAIN_PR=false` makes the branch without pushing it"
    )


@pytest.mark.parametrize("starts_checks", [True, False])
def test_the_body_says_what_changed_and_warns_when_no_check_will_run(
    new: pd.DataFrame, starts_checks: bool
) -> None:
    text = body("staging", new, 12, starts_checks, "https://github.com/a/b/actions/runs/7")
    assert text.startswith("Production (staging) has 30 labelled rows the dataset did not hold")
    assert "12 more were already in it" in text
    assert "production, on the newest labelled days" in text and "`make gate`" in text
    assert ("close and reopen this pull request" in text) is not starts_checks
    assert (f"`{TOKEN_SECRET}` secret" in text) is not starts_checks
    assert text.endswith("Opened by https://github.com/a/b/actions/runs/7\n")
    assert "Opened by" not in body("staging", new, 0, starts_checks, "")


def test_the_body_in_full(new: pd.DataFrame) -> None:
    period = (f"{new[dataset.TIME].min():%Y-%m-%d %H:%M} to "
              f"{new[dataset.TIME].max():%Y-%m-%d %H:%M}")  # fmt: skip
    assert body("production", new, 3, False, "") == (
        f"Production (production) has 30 labelled rows the dataset did not hold ({period}; 3 "
        "more were already in it). This branch adds them as a new data version (`data.dvc`) "
        "and retrains on it (`dvc.lock`, `reports/metrics.json`).\n"
        "\n"
        "The model report compares this model with the base branch's and with the model in "
        "production, on the newest labelled days, which neither trained on. Merge only if it "
        "beats production: the release refuses a worse model (`make gate`).\n"
        "\n"
        "> [!WARNING]\n> Opened with the workflow's `GITHUB_TOKEN`, so GitHub started no checks "
        "for it: close and reopen this pull request to run them, or set the `RETRAIN_TOKEN` "
        "secret so that the next one runs them itself.\n"
    )
    with_run = body("production", new, 3, True, "https://github.com/a/b/actions/runs/7")
    assert with_run.endswith("`make gate`).\n\nOpened by https://github.com/a/b/actions/runs/7\n")
