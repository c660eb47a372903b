"""calibrate stage: the monitor's limits, learned from windows the model did not train on.

A limit is only as good as the windows it was set on. The training windows are in-sample for
the model (its errors there are too small), so they are judged out of sample, by time-series
cross-validation: the training windows (`monitor.window_days`) go to `monitor.calibration_folds`
interleaved folds, and each fold's windows are judged by a model refitted, with the train
params, on the other folds' rows (less a day on each side, so no hour beside a held-out window
trains), against those rows as the drift reference. Interleaved, because every season then has
neighbours in training, as next year's windows do for a model trained on this one. The test
split's windows, judged by the model itself, join them. The quality check's error model is
cross-fitted the same way: a window's expected errors come from an error model that never saw
its fold.

Each statistic's limit comes from its own values in those windows ("like with like": a feature
that drifts every season gets a wide range and does not drown the others): its median, plus a
prediction bound on its excess past the median (`level`), set so that each check in
`monitor.alarm_on` alarms on at most its share of `monitor.false_alarm_rate` of new windows like
these. Writes `<out>/calibration.json` (limits, every window's statistics, a leave-one-window-out
estimate of the false-alarm rate) and `<out>/errors.joblib` (the error model), both tied to the
model by its hash; DVC versions them with it. docs/guide/monitoring.md has the why and the figures.
"""

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import joblib
import numpy as np
import pandas as pd
import typer
from threadpoolctl import threadpool_limits

from gitml.config import ARTIFACTS_DIR, MODEL_FILE, SPLITS_DIR, load_params, split_path
from gitml.files import read_parquet, write_atomic, write_json
from gitml.monitoring import checks
from gitml.pipeline.evaluate import seasonal_baseline
from gitml.schema import FEATURES
from gitml.serving.predlog import ACTUAL, PREDICTION

CALIBRATION_DIR = ARTIFACTS_DIR / "monitor"
CALIBRATION_FILE, ERRORS_FILE = "calibration.json", "errors.joblib"
# rows this close to a held-out window never train its fold's model: weather and events last
# hours to a day, and the hours just outside a window would otherwise vouch for it
PURGE = pd.Timedelta(days=1)
MIN_WINDOWS = 8  # fewer, and a statistic's median and spread are guesses


def threads() -> int:
    """The OpenMP threads of the calibration's fits and predictions: one, unless
    OMP_NUM_THREADS says otherwise. Its refits and error models learn from a few thousand
    rows each, where threads spend more time handing work over than they save: on 2 shared
    cores the example's five refits took 13 s of CPU (20 s wall) with two threads, 5 s (6 s)
    with one. One thread also keeps the result from depending on the machine's core count."""
    return int(os.environ.get("OMP_NUM_THREADS") or 1)


@dataclass
class Dataset:
    """What calibration needs to know of a dataset: its columns and the train params' refit."""

    features: list[str]
    categorical: list[str]
    target: str
    time: str
    refit: Callable[[pd.DataFrame], Any]  # a model trained on these rows, as `train` would


@dataclass
class HeldOut:
    """A window judged out of sample: by a model that did not train on it, against that
    model's training rows, with expected errors from an error model that never saw its group."""

    split: str
    group: int
    rows: pd.DataFrame
    logged: pd.DataFrame  # the rows as the log holds them, with the model's predictions
    model: Any
    reference: pd.DataFrame
    errors: Any = None
    expected: np.ndarray = field(default_factory=lambda: np.empty(0))
    statistics: dict[str, dict[str, float]] = field(default_factory=dict)


def log_windows(model: Any, windows: list[pd.DataFrame], data: Dataset) -> list[pd.DataFrame]:
    """The windows as logged with `model`'s predictions (one predict call for all)."""
    return checks.in_one_call(
        lambda rows: checks.as_logged(model, rows, data.features, data.target, data.time), windows
    )


def held_out_windows(
    train: pd.DataFrame, test: pd.DataFrame, model: Any, data: Dataset, days: float, folds: int
) -> list[HeldOut]:
    """Every whole training window (interleaved folds, refitted) and test window (`model`),
    logged by the model that judges it."""
    windows = checks.time_windows(train, days, data.time)
    folds = min(folds, len(windows))
    held: list[HeldOut] = []
    for fold in range(folds):
        keep = pd.Series(True, index=train.index)
        for window in windows[fold::folds]:
            first, last = window[data.time].min() - PURGE, window[data.time].max() + PURGE
            keep &= ~train[data.time].between(first, last)
        fitted = data.refit(train[keep])
        reference = checks.as_logged(fitted, train[keep], data.features, data.target, data.time)
        mine = windows[fold::folds]
        held += [
            HeldOut("train", fold, rows, logged, fitted, reference)
            for rows, logged in zip(mine, log_windows(fitted, mine, data), strict=True)
        ]
    reference = checks.as_logged(model, train, data.features, data.target, data.time)
    tests = checks.time_windows(test, days, data.time)
    held += [
        HeldOut("test", folds, rows, logged, model, reference)
        for rows, logged in zip(tests, log_windows(model, tests, data), strict=True)
    ]
    return held


def cross_fit(held: list[HeldOut], data: Dataset) -> Any:
    """Give each window the error model of the other groups' errors, and its rows' expected
    errors; returns the error model of all of them (the one the monitor uses)."""
    for group in sorted({window.group for window in held}):
        others = pd.concat([w.logged for w in held if w.group != group])
        errors = checks.error_model(others, data.features, data.categorical)
        mine = [w for w in held if w.group == group]
        expected = checks.in_one_call(partial(checks.expected_error, errors),
                                      [w.logged for w in mine])  # fmt: skip
        for window, values in zip(mine, expected, strict=True):
            window.errors, window.expected = errors, values
    return checks.error_model(pd.concat([w.logged for w in held]), data.features,
                              data.categorical)  # fmt: skip


def spread(values: np.ndarray, floor: float) -> tuple[float, float, int]:
    """A statistic's center (median), spread and how many windows lie past the median: the
    spread is their mean distance past it, at least `floor`. Each statistic is measured in
    units of its own tail, so one with a long tail (a feature that drifts every season) counts
    as much as a steady one, no more."""
    center = float(np.median(values))
    beyond = values[values > center] - center
    return center, max(float(beyond.mean()) if beyond.size else 0.0, floor), beyond.size


def floor_of(name: str, rows: float) -> float:
    # a share moves by 1/rows when one row changes: a smaller spread would be rounding noise
    return 1.0 / rows if name.endswith(checks.MODE_SHARE) else 1e-9


def level(statistics: int, rate: float, windows: int, measured: int) -> float:
    """How many spreads past its median a statistic's limit lies, so that a check of
    `statistics` statistics alarms on at most `rate` of new windows like the `windows` it was
    calibrated on (`measured` of them past the median).

    Each statistic gets rate / statistics (a union bound: whatever their dependence, the check
    holds the rate). Past the median, excesses are taken as exponential. Both the median and
    the spread are estimated, and a limit set as if they were known would be passed too often
    (with 30 windows, 8 % of the time for a 5 % aim), so the limit is a prediction bound for
    the next window: it lies past the median with probability (m+1)/(n+1) (exchangeability),
    and its excess over the mean of the m measured ones follows F(2, 2m), so
    P(excess > c spreads) = (1 + c/m)^-m."""
    m = max(measured, 1)
    past_median = (m + 1) / (windows + 1)
    return m * ((past_median * statistics / rate) ** (1 / m) - 1)


def calibrate_check(table: pd.DataFrame, rate: float, rows: float) -> dict[str, Any]:
    """One check's limits from its statistics in the windows (a row each)."""
    table = table.dropna(axis=1, thresh=max(len(table) // 2, 1))
    names = [str(name) for name in table.columns]
    limits = {}
    for name in names:
        center, scale, measured = spread(table[name].dropna().to_numpy(), floor_of(name, rows))
        high = center + level(len(names), rate, len(table), measured) * scale
        limits[name] = {"center": center, "scale": scale, "high": high}
    return {"rate": rate, "windows": len(table), "limits": limits}


def rates(settings: dict[str, Any]) -> dict[str, float]:
    """Each check's share of the false-alarm rate: the alarmed checks split it evenly (so
    the alarm as a whole holds it whatever their dependence); a check that only reports
    gets the whole rate."""
    unknown = sorted(set(settings["alarm_on"]) - set(checks.CHECKS))
    if unknown:
        raise ValueError(f"monitor.alarm_on: unknown {unknown}; use {list(checks.CHECKS)}")
    alarmed = [name for name in checks.CHECKS if name in settings["alarm_on"]]
    rate = float(settings["false_alarm_rate"])
    if not 0 < rate < 1:
        raise ValueError(f"monitor.false_alarm_rate must be between 0 and 1, got {rate}")
    return {name: rate / len(alarmed) if name in alarmed else rate for name in checks.CHECKS}


def thresholds(
    windows: list[dict[str, dict[str, float]]], settings: dict[str, Any], rows: float
) -> dict[str, Any]:
    """Every check's calibration from the windows' statistics."""
    tables = {
        name: pd.DataFrame([w[name] for w in windows if name in w]) for name in rates(settings)
    }
    return {
        name: calibrate_check(tables[name], rate, rows)
        for name, rate in rates(settings).items()
        if not tables[name].empty
    }


def alarms(found: dict[str, dict[str, float]], calibrated: dict[str, Any]) -> dict[str, bool]:
    """Which checks a window's statistics set off."""
    return {
        name: bool(checks.exceeded(found[name], calibrated[name]["limits"]))
        for name in checks.CHECKS
        if name in found and name in calibrated
    }


def left_out_rates(windows: list[dict[str, Any]], settings: dict[str, Any], rows: float) -> dict:
    """The false-alarm rate estimated honestly: each window judged by thresholds calibrated
    without it (per check, and the alarm as a whole over `monitor.alarm_on`)."""
    fired: dict[str, list[bool]] = {name: [] for name in [*checks.CHECKS, "alarm"]}
    for i, window in enumerate(windows):
        calibrated = thresholds(windows[:i] + windows[i + 1 :], settings, rows)
        found = alarms(window, calibrated)
        for name, value in found.items():
            fired[name].append(value)
        fired["alarm"].append(any(found[name] for name in settings["alarm_on"] if name in found))
    return {name: round(float(np.mean(v)), 4) for name, v in fired.items() if v}


def backtest(
    train: pd.DataFrame, test: pd.DataFrame, model: Any, data: Dataset, settings: dict[str, Any]
) -> tuple[list[HeldOut], list[dict[str, dict[str, float]]], Any]:
    """The held-out windows, their statistics, and the error model for the monitor."""
    if int(settings["calibration_folds"]) < 2:
        raise ValueError(
            f"monitor.calibration_folds={settings['calibration_folds']}: at least 2, so that "
            "each fold's model trains on the others"
        )
    days, min_rows = settings["window_days"], settings["min_rows"]
    whole = [w for split in (train, test) for w in checks.time_windows(split, days, data.time)]
    if sum(len(w) >= min_rows for w in whole) < MIN_WINDOWS:  # before any refit
        raise ValueError(
            f"the train and test splits hold {sum(len(w) >= min_rows for w in whole)} whole "
            f"windows of monitor.window_days={days} days with monitor.min_rows={min_rows} rows; "
            f"calibration needs {MIN_WINDOWS}: shorten the window or train on more data"
        )
    with threadpool_limits(threads()):
        held = held_out_windows(train, test, model, data, days, int(settings["calibration_folds"]))
        held = [w for w in held if len(w.rows) >= min_rows]
        errors = cross_fit(held, data)
    for w in held:
        w.statistics = checks.measure(w.reference, w.logged, w.expected, data.features,
                                      data.categorical, min_rows)  # fmt: skip
    return held, [w.statistics for w in held], errors


def test_references(
    train: pd.DataFrame, test: pd.DataFrame, model: Any, data: Dataset, keys: list[str]
) -> dict[str, float]:
    """What the test split shows the model doing, for the report: its relative error (WAPE)
    and its skill (mean absolute error over the naive seasonal baseline's, evaluate.py's)."""
    logged = checks.as_logged(model, test, data.features, data.target, data.time)
    errors = (logged[PREDICTION] - logged[ACTUAL]).abs()
    baseline = seasonal_baseline(train, test, keys, data.target)
    return {
        "relative_error": round(float(errors.sum() / logged[ACTUAL].abs().sum()), 4),
        "skill": round(float(errors.sum() / np.abs(baseline - logged[ACTUAL]).sum()), 4),
    }


def calibrate(
    train: pd.DataFrame,
    test: pd.DataFrame,
    model: Any,
    data: Dataset,
    settings: dict[str, Any],
    keys: list[str],
) -> tuple[dict[str, Any], Any]:
    """The calibration record and the error model."""
    held, found, errors = backtest(train, test, model, data, settings)
    rows = float(np.median([len(w.rows) for w in held]))
    record = {
        "false_alarm_rate": settings["false_alarm_rate"],
        "alarm_on": list(settings["alarm_on"]),
        "window_days": settings["window_days"],
        "folds": int(max(w.group for w in held if w.split == "train") + 1),
        "checks": thresholds(found, settings, rows),
        "left_out_false_alarm_rate": left_out_rates(found, settings, rows),
        "test": test_references(train, test, model, data, keys),
        "windows": [_window(w, stats, data.time) for w, stats in zip(held, found, strict=True)],
    }
    return _significant(record), errors


def _significant(value: Any) -> Any:
    """Floats to 6 significant digits: limits estimated from a few dozen windows mean no
    more, and the last bits of a sum (which numeric libraries may order differently) must not
    change the bytes DVC hashes."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {key: _significant(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_significant(item) for item in value]
    return value


def _window(held: HeldOut, found: dict[str, dict[str, float]], time: str) -> dict[str, Any]:
    return {
        "split": held.split,
        "fold": held.group,
        "from": f"{held.rows[time].min():%Y-%m-%d}",
        "rows": len(held.rows),
        "statistics": found,
    }


def categorical_features(params_features: dict[str, Any]) -> list[str]:
    """The logged features judged as categories: params' categorical ones and the spec's."""
    kinds = ("category", "text", "bool")
    spec = [name for name, column in FEATURES.items() if column.kind in kinds]
    return [name for name in FEATURES if name in {*params_features["categorical"], *spec}]


def project_dataset() -> Dataset:
    """The project's own dataset: the spec's columns, refitted with params.yaml's train."""
    from gitml.dataset import TARGET, TIME
    from gitml.pipeline.train import fit

    features, train = load_params("features"), load_params("train")
    return Dataset(list(FEATURES), categorical_features(features), TARGET, TIME,
                   lambda rows: fit(rows, features, train)[0])  # fmt: skip


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def save(record: dict[str, Any], errors: Any, model_path: Path, out: Path) -> None:
    """The calibration beside its error model, both tied to the model by their hashes."""
    write_atomic(out / ERRORS_FILE, lambda tmp: joblib.dump(errors, tmp))
    record = {**record, "model_md5": md5(model_path), "errors_md5": md5(out / ERRORS_FILE)}
    write_json(out / CALIBRATION_FILE, record)  # last: its presence says the pair is complete


app = typer.Typer(add_completion=False)


@app.command()
# file plumbing: run by the calibrate stage and tests/monitoring (slow), the core above by the
# fast tests
def main(
    splits_dir: Annotated[Path, typer.Option(help="Where the splits are.")] = SPLITS_DIR,
    model_path: Annotated[Path, typer.Option("--model", help="Trained model.")] = MODEL_FILE,
    out: Annotated[Path, typer.Option(help="Where the calibration goes.")] = CALIBRATION_DIR,
) -> None:  # pragma: no mutate block
    """Calibrate the monitor's thresholds on windows the model did not train on."""
    settings, data = load_params("monitor"), project_dataset()
    train, test = (read_parquet(split_path(name, splits_dir)) for name in ("train", "test"))
    try:
        record, errors = calibrate(train, test, joblib.load(model_path), data, settings,
                                   list(load_params("evaluate")["baseline_keys"]))  # fmt: skip
    except ValueError as err:
        typer.echo(f"calibrate: {err}", err=True)
        raise typer.Exit(1) from None
    save(record, errors, model_path, out)
    left_out = record["left_out_false_alarm_rate"]
    typer.echo(
        f"calibrate: {len(record['windows'])} held-out windows, each judged by limits "
        f"calibrated without it alarmed at {left_out} -> {out / CALIBRATION_FILE}"
    )


if __name__ == "__main__":
    app()
