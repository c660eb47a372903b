"""Backtest of the monitoring alarm on three datasets (a benchmark: it prints, never asserts).

For the project's own data (the dataset spec and params.yaml), ISLP's NYSE (a daily series of
log volumes) and a synthetic two-year hourly demand series, it calibrates the monitor as `make
calibrate` does, then judges every window the model did not train on (the refitted folds of the
training split, and the test split) twice: as it is, with limits calibrated without that window
(the false-alarm rate, honestly estimated), and with each of four production faults injected
(the detection rate):

- demand +50 %: the actuals 50 % higher (a log target moves by log 1.5);
- stuck: the numeric feature the model relies on most (permutation importance on the test
  split) logged at its training median;
- category: the categorical feature it relies on most logs its most frequent level as its
  second most frequent (a swapped code);
- relation: the target's relation to that numeric feature changes, demand multiplied by
  1.5 ** z (z the feature standardized within the window), its level unchanged.

It also judges the windows of the train, test and production splits as `make monitor` would
(the model itself, the final limits): the training windows' alarm rate is what issue 28 calls
the false-alarm rate on training windows (in-sample, so a lower bound). `make bench-monitor`;
`tests/monitoring/test_calibration_datasets.py` asserts the goals in params.yaml on the table.
"""

import io
import math
import platform
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from threadpoolctl import threadpool_limits

from gitml.config import MODEL_FILE, SPLITS, load_params, split_path
from gitml.files import read_parquet
from gitml.monitoring import calibrate, checks
from gitml.pipeline.train import build_pipeline
from gitml.serving.predlog import ACTUAL

FAULTS = ("demand", "stuck", "category", "relation")
RISE = 1.5  # the demand fault: +50 %


@dataclass
class Case:
    """A dataset as the benchmark judges it."""

    name: str
    splits: dict[str, pd.DataFrame]
    data: calibrate.Dataset
    settings: dict[str, Any]  # params.yaml's monitor section, window_days per dataset
    log_target: bool  # the target is a log of the demand: +50 % adds log 1.5
    model: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def refit_with(features: dict[str, Any], train: dict[str, Any], target: str) -> Callable:
    """The train params' pipeline fitted on given rows (the dataset's own target)."""

    def refit(rows: pd.DataFrame) -> Any:
        columns = [*features["categorical"], *features["numeric"]]
        return build_pipeline(features, train, "cpu").fit(rows[columns], rows[target])

    return refit


def example_case(splits: dict[str, pd.DataFrame] | None = None, model: Any = None) -> Case:
    """The project's data: the spec, params.yaml, and the splits and model given, by default
    those `make` built."""
    from gitml.dataset import OTHER_COLUMNS, TARGET

    if splits is None:
        splits = {name: read_parquet(split_path(name)) for name in SPLITS}
    # a target the spec lets go below zero is taken for a log of the demand (as NYSE's)
    low = OTHER_COLUMNS[TARGET].low if TARGET in OTHER_COLUMNS else None
    case = Case("example", splits, calibrate.project_dataset(), load_params("monitor"),
                log_target=low is None or low < 0)  # fmt: skip
    case.model = joblib.load(MODEL_FILE) if model is None else model
    return case


def nyse_case() -> Case:
    """ISLP's NYSE (1962-1986, trading days), as tests/e2e/test_another_dataset.py adapts
    the template to it (a year of trading days per window)."""
    from gitml.pipeline.data import download_wheel

    with zipfile.ZipFile(download_wheel()) as wheel:
        raw = pd.read_csv(io.BytesIO(wheel.read("ISLP/data/NYSE.csv")))
    table = raw.drop(columns="train").assign(
        date=pd.to_datetime(raw["date"]), day_of_week=pd.Categorical(raw["day_of_week"])
    )
    features = {"categorical": ["day_of_week"], "numeric": ["DJ_return", "log_volatility"]}
    train = load_params("train")  # log_volume < 0 at times: squared errors, as the recipe says
    train["hyperparams"]["hist_gradient_boosting"]["loss"] = "squared_error"
    train["hyperparams"]["xgboost"]["objective"] = "reg:squarederror"
    return Case(
        "NYSE",
        by_dates(table, "date", date(1985, 1, 1), date(1986, 1, 1)),
        calibrate.Dataset(["day_of_week", "DJ_return", "log_volatility"], ["day_of_week"],
                          "log_volume", "date", refit_with(features, train, "log_volume")),
        {**load_params("monitor"), "window_days": 365},
        log_target=True,
    )  # fmt: skip


def synthetic_table(seed: int = 7, days: int = 730, season: float = 0.3) -> pd.DataFrame:
    """Hourly demand over `days` days from 2022: a daily profile that differs on working days,
    a yearly temperature cycle (`season`: its amplitude), weather that persists for hours,
    Poisson counts."""
    rng = np.random.default_rng(seed)
    when = pd.date_range("2022-01-01", periods=days * 24, freq="h")
    hour, weekday = when.hour.to_numpy(), when.dayofweek.to_numpy()
    working = (weekday < 5).astype(int)
    cycle = np.sin(2 * np.pi * (when.dayofyear.to_numpy() - 110) / 365)
    daily_noise = np.repeat(rng.normal(0, 0.06, days), 24)
    temp = np.clip(0.5 + season * cycle + 0.05 * np.sin(2 * np.pi * (hour - 9) / 24)
                   + daily_noise, 0, 1)  # fmt: skip
    weather = np.zeros(len(when), dtype=int)  # 0 clear, 1 cloudy, 2 rain: a sticky chain
    for i in range(1, len(when)):
        weather[i] = weather[i - 1] if rng.random() < 0.95 else rng.choice(3, p=[0.6, 0.3, 0.1])
    hum = np.clip(0.55 + 0.15 * weather + rng.normal(0, 0.08, len(when)), 0, 1)
    commute = np.exp(-((hour - 8) ** 2) / 3) + 1.2 * np.exp(-((hour - 17.5) ** 2) / 4)
    leisure = np.exp(-((hour - 14) ** 2) / 12)
    profile = np.where(working == 1, 0.15 + commute, 0.1 + 1.1 * leisure)
    rate = 160 * profile * (0.3 + 1.4 * temp) * np.array([1.0, 0.85, 0.45])[weather]
    return pd.DataFrame({
        "time": when, "hr": hour, "weekday": weekday, "workingday": working,
        "temp": temp.round(3), "hum": hum.round(3),
        "weather": pd.Categorical(np.array(["clear", "cloudy", "rain"])[weather]),
        "demand": rng.poisson(rate),
    })  # fmt: skip


def synthetic_case(days: int = 730) -> Case:
    """Two years: train on the first eleven months, test on the twelfth, production the
    second year (the same process: its windows should stay quiet)."""
    table = synthetic_table(days=days)
    features = {"categorical": ["hr", "weekday", "weather"],
                "numeric": ["workingday", "temp", "hum"]}  # fmt: skip
    train = load_params("train")
    return Case(
        "synthetic",
        by_dates(table, "time", date(2022, 12, 1), date(2023, 1, 1)),
        calibrate.Dataset(["hr", "weekday", "weather", "workingday", "temp", "hum"],
                          ["hr", "weekday", "weather"], "demand", "time",
                          refit_with(features, train, "demand")),
        load_params("monitor"),
        log_target=False,
    )  # fmt: skip


def by_dates(table: pd.DataFrame, time: str, test: date, production: date) -> dict:
    when = table[time]
    return {
        "train": table[when < pd.Timestamp(test)],
        "test": table[(when >= pd.Timestamp(test)) & (when < pd.Timestamp(production))],
        "production": table[when >= pd.Timestamp(production)],
    }


def most_relied_on(case: Case) -> dict[str, str]:
    """The numeric and the categorical feature the model relies on most: permutation
    importance (mean absolute error) on the test split."""
    data, test = case.data, case.splits["test"]
    inputs = checks.as_logged(case.model, test, data.features, data.target, data.time)
    importance = permutation_importance(
        case.model, inputs[data.features], test[data.target], scoring="neg_mean_absolute_error",
        n_repeats=3, random_state=0,
    ).importances_mean  # fmt: skip
    ranked = [name for _, name in sorted(zip(importance, data.features, strict=True))[::-1]]
    return {
        "numeric": next(n for n in ranked if n not in data.categorical),
        "categorical": next(n for n in ranked if n in data.categorical),
    }


def faults(case: Case) -> dict[str, Callable[[pd.DataFrame], pd.DataFrame]]:
    """The four production faults, as functions of a window's rows."""
    data, train = case.data, case.splits["train"]
    chosen = most_relied_on(case)
    numeric, category = chosen["numeric"], chosen["categorical"]
    case.extra.update(chosen)
    median = train[numeric].median()
    first, second = train[category].value_counts().index[:2]

    def scaled(target: pd.Series, factor: Any) -> Any:
        return target + np.log(factor) if case.log_target else target * factor

    def demand(rows: pd.DataFrame) -> pd.DataFrame:
        return rows.assign(**{data.target: scaled(rows[data.target], RISE)})

    def stuck(rows: pd.DataFrame) -> pd.DataFrame:
        return rows.assign(**{numeric: median})

    def swapped(rows: pd.DataFrame) -> pd.DataFrame:
        return rows.assign(**{category: rows[category].mask(rows[category] == first, second)})

    def relation(rows: pd.DataFrame) -> pd.DataFrame:
        values = rows[numeric].astype(float)
        spread = values.std()
        z = (values - values.mean()) / spread if spread > 0 else values * 0.0
        return rows.assign(**{data.target: scaled(rows[data.target], RISE**z)})

    return {"demand": demand, "stuck": stuck, "category": swapped, "relation": relation}


def held_out_rates(case: Case) -> dict[str, Any]:
    """Calibrate as `make calibrate` does; then each held-out window, as it is and with each
    fault, judged by limits calibrated without it. Rates of windows alarmed."""
    data, settings = case.data, case.settings
    held, found, errors = calibrate.backtest(case.splits["train"], case.splits["test"],
                                             case.model, data, settings)  # fmt: skip
    rows = float(np.median([len(w.rows) for w in held]))
    case.extra.update(errors=errors, limits=calibrate.thresholds(found, settings, rows))
    injected = case.extra["faults"] = faults(case)
    statistics = {"none": found, **{name: judged(held, fault, case)
                                    for name, fault in injected.items()}}  # fmt: skip
    fired: dict[str, list[bool]] = {name: [] for name in statistics}
    for i in range(len(held)):
        limits = calibrate.thresholds(found[:i] + found[i + 1 :], settings, rows)
        for name, stats in statistics.items():
            raised = calibrate.alarms(stats[i], limits)
            fired[name].append(any(raised.get(c, False) for c in settings["alarm_on"]))
    return {"windows": len(held), **{name: float(np.mean(v)) for name, v in fired.items()}}


def judged(held: list[calibrate.HeldOut], fault: Callable, case: Case) -> list[dict[str, Any]]:
    """Each held-out window's statistics with a fault injected. A fault of the target alone
    leaves the features, the predictions and the expected errors as they were: only the
    quality changes. Otherwise each group's windows are logged and their errors expected in
    one call."""
    data, faulted = case.data, [fault(window.rows) for window in held]
    same = zip(faulted, held, strict=True)
    if all(rows[data.features].equals(w.rows[data.features]) for rows, w in same):
        return [quality_with(w, rows[data.target].to_numpy(float), w.statistics)
                for w, rows in zip(held, faulted, strict=True)]  # fmt: skip
    found: list[dict[str, Any]] = [{} for _ in held]
    for group in sorted({w.group for w in held}):
        mine = [i for i, w in enumerate(held) if w.group == group]
        model, errors = held[mine[0]].model, held[mine[0]].errors
        logged = calibrate.log_windows(model, [faulted[i] for i in mine], data)
        expected = checks.in_one_call(partial(checks.expected_error, errors), logged)
        for i, window, values in zip(mine, logged, expected, strict=True):
            found[i] = checks.measure(held[i].reference, window, values, data.features,
                                      data.categorical, case.settings["min_rows"])  # fmt: skip
    return found


def quality_with(
    window: calibrate.HeldOut, actual: np.ndarray, statistics: dict[str, Any]
) -> dict[str, Any]:
    """A window's statistics with other actuals (the features, and so the rest, unchanged)."""
    labelled = ~np.isnan(actual)
    logged = window.logged[labelled].assign(**{ACTUAL: actual[labelled]})
    quality = checks.quality_statistics(logged, window.expected[labelled])
    return {**statistics, checks.QUALITY: quality}


def monitor_rates(case: Case, demand: Callable | None = None) -> dict[str, tuple[int, int]]:
    """Windows of each split alarmed as `make monitor` judges them: (alarmed, windows); with
    `demand`, production's windows with that fault (the held-out check: a second year of
    higher demand)."""
    data, settings = case.data, case.settings
    reference = checks.as_logged(case.model, case.splits["train"], data.features, data.target,
                                 data.time)  # fmt: skip
    rates = {}
    splits = {"production": case.splits["production"]} if demand else case.splits
    for split, frame in splits.items():
        windows = [rows for rows in checks.time_windows(frame, settings["window_days"], data.time)
                   if len(rows) >= settings["min_rows"]]  # fmt: skip
        windows = [demand(rows) for rows in windows] if demand else windows
        logged = calibrate.log_windows(case.model, windows, data)
        errors = case.extra["errors"]
        expected = checks.in_one_call(partial(checks.expected_error, errors), logged)
        alarmed = 0
        for window, values in zip(logged, expected, strict=True):
            stats = checks.measure(reference, window, values, data.features, data.categorical,
                                   settings["min_rows"])  # fmt: skip
            raised = calibrate.alarms(stats, case.extra["limits"])
            alarmed += any(raised.get(c, False) for c in settings["alarm_on"])
        rates[split] = (alarmed, len(windows))
    return rates


def evaluate(case: Case) -> dict[str, Any]:
    """The benchmark's row for a dataset."""
    started = time.perf_counter()
    with threadpool_limits(calibrate.threads()):  # as the calibration runs (calibrate.py)
        if case.model is None:
            case.model = case.data.refit(case.splits["train"])
        held = held_out_rates(case)
        monitored = monitor_rates(case)
        demand = monitor_rates(case, case.extra["faults"]["demand"])
    monitored["production, demand +50 %"] = demand["production"]
    return {"dataset": case.name, **held, "monitor": monitored,
            "stuck_feature": case.extra["numeric"], "swapped_feature": case.extra["categorical"],
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def _rate(row: dict[str, Any], name: str) -> str:
    return f"{row[name]:.0%} ({round(row[name] * row['windows'])})"


def table(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    lines = [
        "| dataset | held-out windows | false alarms | demand +50 % | stuck feature | "
        "category swapped | relation changed | monitor: training windows | monitor: "
        "production | monitor: production, demand +50 % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        monitored = [f"{a}/{n}" for a, n in row["monitor"].values()]
        lines.append(
            f"| {row['dataset']} | {row['windows']} | {_rate(row, 'none')} | "
            f"{_rate(row, 'demand')} | {_rate(row, 'stuck')} ({row['stuck_feature']}) | "
            f"{_rate(row, 'category')} ({row['swapped_feature']}) | {_rate(row, 'relation')} "
            f"({row['stuck_feature']}) | {monitored[0]} | {monitored[2]} | {monitored[3]} |"
        )
    goal = (f"Goals (params.yaml monitor): false alarms <= {settings['false_alarm_rate']:.0%}, "
            f"detection >= {settings['detection_goal']:.0%}.")  # fmt: skip
    return "\n".join([*lines, "", goal])


def main() -> None:
    settings = load_params("monitor")
    rows = []
    for build in (example_case, nyse_case, synthetic_case):
        row = evaluate(build())
        print(f"{row['dataset']}: {row['windows']} held-out windows, {row['seconds']} s")
        rows.append(row)
    print()
    print(table(rows, settings))
    print(f"\n{date.today()}, {platform.node()} ({platform.processor() or platform.machine()}, "
          f"{math.floor(sum(r['seconds'] for r in rows))} s)")  # fmt: skip


if __name__ == "__main__":
    main()
