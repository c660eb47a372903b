import numpy as np
import pytest

from gitml.bootstrap import mae, paired_difference_ci, r2, rmse

RNG = np.random.default_rng(7)
ACTUAL = RNG.normal(100, 20, 480)
DAYS = np.repeat(np.arange(20), 24)


def test_metrics_match_their_definitions() -> None:
    predicted = ACTUAL + 2.0
    assert mae(ACTUAL, predicted) == pytest.approx(2.0)
    assert rmse(ACTUAL, predicted) == pytest.approx(2.0)
    assert r2(ACTUAL, ACTUAL) == pytest.approx(1.0)


def test_a_clearly_better_model_gets_an_interval_below_zero() -> None:
    good, bad = ACTUAL + RNG.normal(0, 5, 480), ACTUAL + RNG.normal(0, 20, 480)
    diff, low, high = paired_difference_ci(ACTUAL, good, bad, DAYS, mae, n_resamples=300)
    assert low <= diff <= high < 0


def test_identical_models_get_an_interval_around_zero() -> None:
    noisy = ACTUAL + RNG.normal(0, 10, 480)
    other = noisy + RNG.normal(0, 0.5, 480)
    _, low, high = paired_difference_ci(ACTUAL, noisy, other, DAYS, mae, n_resamples=300)
    assert low < 0 < high


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="equal length"):
        paired_difference_ci(ACTUAL, ACTUAL[:-1], ACTUAL, DAYS, mae)
