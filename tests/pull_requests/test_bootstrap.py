import numpy as np
import pytest

from gitml.pull_requests.bootstrap import mae, paired_difference_ci, r2, rmse

# Each test draws from its own seeded generator, so a test's data never depends on which
# tests ran before it (a module-level generator made one test fail when run alone).
ACTUAL = np.random.default_rng(7).normal(100, 20, 480)
DAYS = np.repeat(np.arange(20), 24)


def test_metrics_match_their_definitions() -> None:
    actual = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([2.0, 2.0, 3.0, 1.0])  # errors 1, 0, 0, -3
    assert mae(actual, predicted) == pytest.approx(1.0)
    assert rmse(actual, predicted) == pytest.approx(np.sqrt(10 / 4))
    assert r2(actual, predicted) == pytest.approx(1 - 10 / 5)  # total sum of squares: 5
    assert r2(actual, actual) == pytest.approx(1.0)


def test_a_clearly_better_model_gets_an_interval_below_zero() -> None:
    rng = np.random.default_rng(1)
    good, bad = ACTUAL + rng.normal(0, 5, 480), ACTUAL + rng.normal(0, 20, 480)
    diff, low, high = paired_difference_ci(ACTUAL, good, bad, DAYS, mae, n_resamples=300)
    assert diff == pytest.approx(mae(ACTUAL, good) - mae(ACTUAL, bad))
    assert low <= diff <= high < 0


def test_identical_models_get_an_interval_around_zero() -> None:
    rng = np.random.default_rng(2)
    noisy = ACTUAL + rng.normal(0, 10, 480)
    other = noisy + rng.normal(0, 0.5, 480)
    _, low, high = paired_difference_ci(ACTUAL, noisy, other, DAYS, mae, n_resamples=300)
    assert low < 0 < high


def test_one_day_is_one_block_so_every_resample_is_the_whole_day() -> None:
    # Resampling whole days: with a single day every resample is that day, and the interval
    # has no width. Resampling single hours would give it one.
    actual = np.zeros(24)
    new, old = np.arange(24.0), np.zeros(24)
    diff, low, high = paired_difference_ci(actual, new, old, np.zeros(24), mae, n_resamples=50)
    assert diff == low == high == pytest.approx(11.5)


def test_days_are_resampled_whole_and_as_often_as_there_are_days() -> None:
    # Two days whose hours all have the same error difference (day 0: 1, day 1: 3). A
    # resample of two whole days can only differ by 1, 2 or 3 in MAE; resampled hours would
    # give any value in between, and a resample of one day (or three) other proportions.
    actual = np.zeros(48)
    new, old = np.repeat([1.0, 3.0], 24), np.zeros(48)
    days = np.repeat(["2011-10-01", "2011-10-02"], 24)
    diff, low, high = paired_difference_ci(actual, new, old, days, mae, n_resamples=400, seed=3)
    assert diff == pytest.approx(2.0)
    assert low == pytest.approx(1.0) and high == pytest.approx(3.0)  # P(both days alike) = 1/2
    _, mid_low, mid_high = paired_difference_ci(
        actual, new, old, days, mae, n_resamples=400, confidence=0.2, seed=3
    )
    assert mid_low == mid_high == pytest.approx(2.0)  # one of each day: half the resamples


def test_the_interval_has_the_confidence_it_claims() -> None:
    # 200 days, each with its own constant error difference d (new predicts d, old the truth):
    # a resample's MAE difference is the mean d over 200 days drawn with replacement, close to
    # normal with standard error sd(d) / sqrt(200). A 95 % interval is then +-1.96 standard
    # errors wide (a 90 % one only +-1.645).
    rng = np.random.default_rng(4)
    per_day = rng.uniform(0, 10, 200)
    days = np.repeat(np.arange(200), 24)
    actual, new, old = np.zeros(len(days)), np.repeat(per_day, 24), np.zeros(len(days))
    diff, low, high = paired_difference_ci(actual, new, old, days, mae, n_resamples=4000)
    standard_error = per_day.std() / np.sqrt(len(per_day))
    assert diff == pytest.approx(per_day.mean())
    assert (high - low) / 2 / standard_error == pytest.approx(1.96, abs=0.08)
    _, low90, high90 = paired_difference_ci(
        actual, new, old, days, mae, n_resamples=4000, confidence=0.9
    )
    assert (high90 - low90) / 2 / standard_error == pytest.approx(1.645, abs=0.08)


def test_the_seed_makes_the_interval_reproducible() -> None:
    rng = np.random.default_rng(5)
    new, old = ACTUAL + rng.normal(0, 10, 480), ACTUAL + rng.normal(0, 12, 480)
    first = paired_difference_ci(ACTUAL, new, old, DAYS, mae, n_resamples=100, seed=11)
    assert paired_difference_ci(ACTUAL, new, old, DAYS, mae, n_resamples=100, seed=11) == first
    assert paired_difference_ci(ACTUAL, new, old, DAYS, mae, n_resamples=100, seed=12) != first


@pytest.mark.parametrize(
    ("actual", "new", "old", "groups"),
    [
        (ACTUAL, ACTUAL[:-1], ACTUAL, DAYS),
        (ACTUAL, ACTUAL, ACTUAL[:-1], DAYS),
        (ACTUAL[:-1], ACTUAL, ACTUAL, DAYS),
        (ACTUAL, ACTUAL, ACTUAL, DAYS[:-1]),
        (ACTUAL[:0], ACTUAL[:0], ACTUAL[:0], DAYS[:0]),
    ],
)
def test_mismatched_lengths_are_refused(
    actual: np.ndarray, new: np.ndarray, old: np.ndarray, groups: np.ndarray
) -> None:
    with pytest.raises(ValueError, match=r"^actual, new, old and groups must be non-empty"):
        paired_difference_ci(actual, new, old, groups, mae)


def test_one_row_is_enough_and_the_default_seed_is_zero() -> None:
    one = paired_difference_ci(np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1), mae)
    assert one == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(6)
    new, old = ACTUAL + rng.normal(0, 10, 480), ACTUAL + rng.normal(0, 12, 480)
    default = paired_difference_ci(ACTUAL, new, old, DAYS, mae, n_resamples=100)
    assert default == paired_difference_ci(ACTUAL, new, old, DAYS, mae, n_resamples=100, seed=0)
