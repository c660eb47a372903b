"""Backtest of the monitoring alarm (a benchmark: it prints, never asserts).

Judges every two-week window (monitor.window_days) of the training months, the held-out test
month and the production months (Oct-Dec) as `make monitor` would, with actuals joined, and
prints each window's findings and the alarm rate per split: the false-alarm rate on windows
the model knows, the detection rate on the season it never saw. Run with `make bench-monitor`
after changing the thresholds in params.yaml.
"""

import time

import joblib
import pandas as pd

from gitml.config import MODEL_FILE, load_params, split_path
from gitml.dataset import TARGET
from gitml.monitoring.monitor import (
    as_logged,
    judge,
    labelled_predictions,
    relative_error,
    time_windows,
)


def main() -> None:
    settings, features = load_params("monitor"), load_params("features")
    model, target = joblib.load(MODEL_FILE), TARGET
    splits = {name: pd.read_parquet(split_path(name)) for name in ("train", "test", "production")}
    reference = labelled_predictions(model, splits["train"], target)
    expected = relative_error(labelled_predictions(model, splits["test"], target))
    print(f"{'split':11s} {'window from':11s} {'rows':>5s} {'drift':>6s} {'pred':>6s} "
          f"{'error x':>7s}  alarms")  # fmt: skip
    for name, split in splits.items():
        alarmed, windows, started = 0, time_windows(split, settings["window_days"]), time.time()
        for window in windows:
            current = as_logged(model, window, target)
            _, found, alarms = judge(
                reference, current, expected, features["categorical"], settings
            )
            alarmed += bool(alarms)
            print(f"{name:11s} {window['timestamp'].min():%Y-%m-%d}  {len(window):5d} "
                  f"{found['data_drift']['share']:6.2f} {found['prediction_drift']['score']:6.2f} "
                  f"{found['quality'].get('error_ratio', float('nan')):7.2f}  "
                  f"{', '.join(alarms) or '-'}")  # fmt: skip
        seconds = (time.time() - started) / max(len(windows), 1)
        print(f"{name}: alarm in {alarmed} of {len(windows)} windows "
              f"({alarmed / max(len(windows), 1):.0%}); {seconds:.1f} s per window\n")  # fmt: skip


if __name__ == "__main__":
    main()
