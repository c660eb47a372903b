"""A model for the deploy tests: right as a candidate, wrong once it serves an environment.

It predicts like the model it wraps, plus one bike, when the server logs predictions (as an
environment's server does, and a candidate's does not): a defect that only the environment's
configuration brings out, as a wrong setting or mount would in a real deployment. It is pickled
into a real MLEM package, so the server imports this module (`tests` is importable from the
project root, where the tests start the servers).
"""

import itertools
import os
import time
from typing import Any

from sklearn.base import BaseEstimator, RegressorMixin


class WrongInEnvironments(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    def __init__(self, model: Any = None) -> None:
        self.model = model

    # scikit-learn's argument names: MLEM calls predict(X=...)
    def fit(self, X: Any, y: Any) -> "WrongInEnvironments":
        return self

    def predict(self, X: Any) -> Any:
        shift = 1.0 if os.environ.get("GITML_PREDICTION_LOG_DIR") else 0.0
        return self.model.predict(X) + shift


class Shifted(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Predicts like the model it wraps plus `shift`: worse by about `shift` on any data (the
    gate tests' candidate that must be refused)."""

    def __init__(self, model: Any = None, shift: float = 0.0) -> None:
        self.model, self.shift = model, shift

    def fit(self, X: Any, y: Any) -> "Shifted":
        return self

    def predict(self, X: Any) -> Any:
        return self.model.predict(X) + self.shift


_CALLS = itertools.count(1)  # per server process, never pickled


class Broken(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """A canary candidate wrong in every way the canary analysis judges: predictions off by
    `shift`, every call `delay_s` long, and every second call after the first (the server's
    warm-up) raising, which the server answers with a 500."""

    def __init__(self, model: Any = None, shift: float = 0.0, delay_s: float = 0.0) -> None:
        self.model, self.shift, self.delay_s = model, shift, delay_s

    def fit(self, X: Any, y: Any) -> "Broken":
        return self

    def predict(self, X: Any) -> Any:
        time.sleep(self.delay_s)
        if next(_CALLS) % 2 == 0:
            raise RuntimeError("a broken candidate")
        return self.model.predict(X) + self.shift
