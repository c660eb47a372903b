"""Is a metric change larger than noise? A paired, day-block bootstrap over test rows.

Hours of one day are strongly correlated, so resampling single hours would understate the noise;
resampling whole days keeps that structure (a moving-block bootstrap with one-day blocks).
"""

from collections.abc import Callable

import numpy as np
import pandas as pd

Metric = Callable[[np.ndarray, np.ndarray], float]


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs(actual - predicted)))


def rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((actual - predicted) ** 2)))


def r2(actual: np.ndarray, predicted: np.ndarray) -> float:
    residual = np.sum((actual - predicted) ** 2)
    total = np.sum((actual - actual.mean()) ** 2)
    return float(1.0 - residual / total)


METRICS: dict[str, Metric] = {"mae": mae, "rmse": rmse, "r2": r2}


def paired_difference_ci(
    actual: np.ndarray,
    new: np.ndarray,
    old: np.ndarray,
    groups: np.ndarray,
    metric: Metric,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Bootstrap the difference metric(new) - metric(old) on the same resampled rows.

    Args:
        actual: true values.
        new: predictions of the candidate.
        old: predictions of the reference, on the same rows.
        groups: a block label per row (e.g. the date); blocks are resampled whole.
        metric: metric(actual, predicted) -> float.
        n_resamples: bootstrap resamples.
        confidence: width of the interval.
        seed: random seed, so reports are reproducible.

    Returns:
        (difference on the full data, lower bound, upper bound).
    """
    if not len(actual) == len(new) == len(old) == len(groups) > 0:
        raise ValueError("actual, new, old and groups must be non-empty and of equal length")
    codes, _ = pd.factorize(groups)
    blocks = [np.flatnonzero(codes == code) for code in range(codes.max() + 1)]
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    for i in range(n_resamples):
        rows = np.concatenate([blocks[b] for b in rng.integers(0, len(blocks), len(blocks))])
        diffs[i] = metric(actual[rows], new[rows]) - metric(actual[rows], old[rows])
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return metric(actual, new) - metric(actual, old), float(low), float(high)
