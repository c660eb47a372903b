"""Monitoring: a window of production's prediction log against the training reference.

Evidently measures per-feature data drift (its statistical tests, chosen by data size) and
prediction drift (prior shift); where actuals have been joined in, the window's relative error
is set against the held-out test month's (concept drift), with evidently's regression report.
Writes `reports/monitor/`: drift.html, quality.html (with actuals), summary.json, summary.md
and monitor.prom (Prometheus textfile). Exit status: 0 healthy, 1 action needed, 2 the logs or
the reference cannot be used. Thresholds: `monitor` in params.yaml.

Windows go by event time (the hour a prediction is about, which the request carries; else the
time it was served): the last `monitor.window_days` days up to the log's latest event, or
`--until`. A replayed year is judged on its own calendar, not on the minutes it took to send.
"""

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Optional

import joblib
import pandas as pd
import typer
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from gitml.config import MODEL_FILE, REPORTS_DIR, SPLITS_DIR, load_params, split_path
from gitml.dataset import TARGET, TIME
from gitml.files import write_atomic, write_json
from gitml.monitoring.feedback import event_time_option
from gitml.schema import EVENT_TIME, FEATURES, as_model_input, as_utc
from gitml.serving.predlog import ACTUAL, PREDICTION, LogError, read_predictions

MONITOR_DIR = REPORTS_DIR / "monitor"
FINDINGS = ("data_drift", "prediction_drift", "quality")


def labelled_predictions(model: Any, split: pd.DataFrame, target: str) -> pd.DataFrame:
    """A split as the log would show it: features, the model's prediction, and the actual."""
    frame = as_model_input(split)
    frame[PREDICTION] = model.predict(frame)
    frame[ACTUAL] = split[target].to_numpy(dtype=float)
    return frame


def relative_error(frame: pd.DataFrame) -> float:
    """Absolute error over total demand (WAPE): comparable between busy and quiet seasons."""
    return float((frame[PREDICTION] - frame[ACTUAL]).abs().sum() / frame[ACTUAL].abs().sum())


def _definition(categorical: list[str], labelled: bool) -> Any:
    from evidently import DataDefinition, Regression

    numeric = [name for name in FEATURES if name not in categorical] + [PREDICTION]
    if labelled:
        return DataDefinition(
            numerical_columns=[*numeric, ACTUAL],
            categorical_columns=categorical,
            regression=[Regression(target=ACTUAL, prediction=PREDICTION)],
        )
    return DataDefinition(numerical_columns=numeric, categorical_columns=categorical)


def _dataset(frame: pd.DataFrame, definition: Any) -> Any:
    from evidently import Dataset

    return Dataset.from_pandas(frame, data_definition=definition)


def _drifted(method: str, score: float, threshold: float) -> bool:
    # evidently's p-value tests flag drift below the threshold, its distances at or above it
    return score < threshold if "p_value" in method else score >= threshold


def drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    categorical: list[str],
    settings: dict[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """Evidently's data drift (each feature) and prediction drift; the snapshot and a summary."""
    from evidently import Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    definition = _definition(categorical, labelled=False)
    columns = [*FEATURES, PREDICTION]
    report = Report(
        [
            DataDriftPreset(columns=list(FEATURES), drift_share=settings["drift_share"]),
            ValueDrift(column=PREDICTION),
        ]
    )
    with warnings.catch_warnings():  # evidently warns about its own deprecated internals
        warnings.simplefilter("ignore")
        snapshot = report.run(
            _dataset(current[columns], definition), _dataset(reference[columns], definition)
        )
    tests: dict[str, dict[str, Any]] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            score, threshold = float(metric["value"]), float(config["threshold"])
            tests[config["column"]] = {
                "method": config["method"],
                "score": round(score, 4),
                "threshold": threshold,
                "drifted": _drifted(config["method"], score, threshold),
            }
    features = {name: tests[name] for name in FEATURES}
    drifted = sorted(name for name, test in features.items() if test["drifted"])
    share = len(drifted) / len(features)
    return snapshot, {
        "data_drift": {
            "detected": share >= settings["drift_share"],
            "share": round(share, 4),
            "threshold_share": settings["drift_share"],
            "drifted_features": drifted,
            "features": features,
        },
        "prediction_drift": {"detected": tests[PREDICTION]["drifted"], **tests[PREDICTION]},
    }


def quality(current: pd.DataFrame, expected: float, settings: dict[str, Any]) -> dict[str, Any]:
    """Relative error of the rows with actuals against the held-out `expected`, and by day."""
    labelled = current.dropna(subset=[ACTUAL])
    if len(labelled) < settings["min_rows"]:
        note = f"{len(labelled)} rows have actuals, fewer than monitor.min_rows"
        return {"detected": False, "labelled_rows": len(labelled), "note": note}
    error = relative_error(labelled)
    daily = labelled.groupby(labelled[EVENT_TIME].dt.strftime("%Y-%m-%d")).apply(relative_error)
    errors = labelled[PREDICTION] - labelled[ACTUAL]
    return {
        "detected": error > expected * settings["max_error_ratio"],
        "labelled_rows": len(labelled),
        "relative_error": round(error, 4),
        "expected_relative_error": round(expected, 4),
        "error_ratio": round(error / expected, 4),
        "max_error_ratio": settings["max_error_ratio"],
        "mae": round(float(errors.abs().mean()), 3),
        "bias": round(float(errors.sum() / labelled[ACTUAL].sum()), 4),
        "daily_relative_error": {day: round(float(v), 4) for day, v in daily.items()},
    }


def quality_report(reference: pd.DataFrame, current: pd.DataFrame, categorical: list[str]) -> Any:
    """Evidently's regression report (errors, their distribution, worst cases) with actuals."""
    from evidently import Report
    from evidently.presets import RegressionPreset

    labelled = current.dropna(subset=[ACTUAL])
    definition, columns = _definition(categorical, labelled=True), [*FEATURES, PREDICTION, ACTUAL]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Report([RegressionPreset()]).run(
            _dataset(labelled[columns], definition), _dataset(reference[columns], definition)
        )


def verdict(findings: dict[str, Any], alarm_on: list[str]) -> list[str]:
    """The findings that ask for action (those listed in `alarm_on` that were detected)."""
    unknown = sorted(set(alarm_on) - set(FINDINGS))
    if unknown:
        raise ValueError(f"params.yaml monitor.alarm_on: unknown {unknown}; use {FINDINGS}")
    return [name for name in alarm_on if findings[name]["detected"]]


def judge(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    expected_error: float,
    categorical: list[str],
    settings: dict[str, Any],
) -> tuple[Any, dict[str, Any], list[str]]:
    """Drift and quality of `current`: the drift snapshot, the findings, the alarms raised."""
    snapshot, findings = drift(reference, current, categorical, settings)
    findings["quality"] = quality(current, expected_error, settings)
    return snapshot, findings, verdict(findings, list(settings["alarm_on"]))


def time_windows(split: pd.DataFrame, days: int) -> list[pd.DataFrame]:
    """Consecutive whole windows of `days` days of a split (the backtest's unit)."""
    start, step = split[TIME].min().normalize(), pd.Timedelta(days=days)
    windows = []
    while start + step <= split[TIME].max() + pd.Timedelta(hours=1):
        windows.append(split[(split[TIME] >= start) & (split[TIME] < start + step)])
        start += step
    return windows


def as_logged(model: Any, window: pd.DataFrame, target: str) -> pd.DataFrame:
    """A window of a split as the prediction log would hold it, actuals joined."""
    frame = labelled_predictions(model, window, target)
    frame["ts"] = frame[EVENT_TIME] = window[TIME].dt.tz_localize(UTC).to_numpy()
    return frame


def event_window(
    logs: Path, days: float, until: datetime | None = None
) -> tuple[datetime, datetime]:
    """[since, until) of event time: `days` days up to `until` (no offset: UTC), by default
    up to and including the log's latest event."""
    if until is None:
        latest = read_predictions(logs)[EVENT_TIME].max().to_pydatetime()
        until = latest + timedelta(microseconds=1)
    else:
        until = as_utc(until)
    return until - timedelta(days=days), until


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def markdown(summary: dict[str, Any]) -> str:
    """The summary as the issue body the scheduled workflow posts."""
    data, pred, qual = summary["data_drift"], summary["prediction_drift"], summary["quality"]
    status = "Healthy"
    if summary["alarm"]:
        status = "**Action needed**: " + ", ".join(summary["alarms"])
    lines = [
        f"## Production monitoring: {status}",
        "",
        f"Window {summary['window']['from']} to {summary['window']['to']}: "
        f"{summary['rows']} predictions, model version(s) {', '.join(summary['model_versions'])}.",
        "",
        "| check | result | threshold | alarm on it |",
        "|---|---|---|---|",
        f"| data drift (share of features) | {data['share']:.2f} "
        f"({', '.join(data['drifted_features']) or 'none'}) | {data['threshold_share']} "
        f"| {_yes('data_drift' in summary['alarm_on'])} |",
        f"| prediction drift ({pred['method']}) | {pred['score']:.3f} | {pred['threshold']} "
        f"| {_yes('prediction_drift' in summary['alarm_on'])} |",
    ]
    if "error_ratio" in qual:
        lines.append(
            f"| relative error vs held-out | {qual['relative_error']:.3f} / "
            f"{qual['expected_relative_error']:.3f} = {qual['error_ratio']:.2f} "
            f"| {qual['max_error_ratio']} | {_yes('quality' in summary['alarm_on'])} |"
        )
        lines.append(
            f"| bias: (predicted - actual) / actual | {qual['bias']:+.1%} | | {_yes(False)} |"
        )
    else:
        lines.append(f"| quality | {qual['note']} | | |")
    lines += [
        "",
        "Per feature: "
        + ", ".join(
            f"{name} {test['score']:.3f}{' (drift)' if test['drifted'] else ''}"
            for name, test in data["features"].items()
        ),
    ]
    if summary["alarm"]:
        lines += [
            "",
            "Next: read the HTML reports (the run's artifact). A quality alarm starts the "
            "retrain workflow, which opens a pull request retrained on production's labelled "
            "rows (`make retrain-pr`); drift alone needs actuals before retraining can help.",
        ]
    return "\n".join(lines) + "\n"


def verdict_metrics(summary: dict[str, Any]) -> CollectorRegistry:
    """The verdict as gauges (alerts GitmlDriftDetected and GitmlMonitorStale read them)."""
    registry = CollectorRegistry()
    for name, doc, value in (
        ("gitml_monitor_alarm", "1 when drift or degradation needs action.", summary["alarm"]),
        ("gitml_monitor_drift_share", "Features drifted.", summary["data_drift"]["share"]),
        ("gitml_monitor_last_run_timestamp_seconds", "When the monitor last completed.",
         datetime.fromisoformat(summary["generated_at"]).timestamp()),
    ):  # fmt: skip
        Gauge(name, doc, registry=registry).set(float(value))
    return registry


def push_verdict(summary: dict[str, Any], gateway: str, env: str) -> None:
    """Replace this environment's verdict on a Pushgateway (for a job that runs in CI)."""
    push_to_gateway(gateway, job="gitml-monitor", grouping_key={"environment": env},
                    registry=verdict_metrics(summary), timeout=10)  # fmt: skip


def forget_verdict(out: Path) -> None:
    """An earlier run's reports go first: a run that fails leaves no verdict standing."""
    for stale in ("summary.json", "drift.html", "quality.html"):
        (out / stale).unlink(missing_ok=True)


def run(
    logs: Path,
    actuals: Path | None,
    since: datetime,
    until: datetime,
    out: Path,
    params_monitor: dict[str, Any],
    params_features: dict[str, Any],
    model_path: Path = MODEL_FILE,
    splits_dir: Path = SPLITS_DIR,
) -> dict[str, Any]:
    """Judge the logged window [since, until) and write the reports; returns the summary."""
    forget_verdict(out)
    current = read_predictions(logs, actuals, since, until)
    if len(current) < params_monitor["min_rows"]:
        raise LogError(
            f"{logs}: {len(current)} predictions in the window, fewer than "
            f"monitor.min_rows={params_monitor['min_rows']}: too few to judge"
        )
    model, target = joblib.load(model_path), TARGET
    train, test = (pd.read_parquet(split_path(name, splits_dir)) for name in ("train", "test"))
    reference = labelled_predictions(model, train, target)
    held_out = labelled_predictions(model, test, target)
    categorical = list(params_features["categorical"])
    drift_snapshot, findings, alarms = judge(
        reference, current, relative_error(held_out), categorical, params_monitor
    )
    summary = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "window": {  # event times: the hours the predictions are about
            "from": current[EVENT_TIME].min().isoformat(),
            "to": current[EVENT_TIME].max().isoformat(),
        },
        "rows": len(current),
        "model_versions": sorted(current["model_version"].unique()),
        "alarm": bool(alarms),
        "alarms": alarms,
        "alarm_on": list(params_monitor["alarm_on"]),
        **findings,
    }
    write_atomic(out / "drift.html", lambda tmp: drift_snapshot.save_html(str(tmp)))
    if "error_ratio" in findings["quality"]:
        snapshot = quality_report(reference, current, categorical)
        write_atomic(out / "quality.html", lambda tmp: snapshot.save_html(str(tmp)))
    write_atomic(out / "summary.md", lambda tmp: tmp.write_text(markdown(summary)))
    registry = verdict_metrics(summary)  # for a node-exporter textfile collector
    write_atomic(out / "monitor.prom", lambda tmp: write_to_textfile(str(tmp), registry))
    write_json(out / "summary.json", summary)  # last: its presence says the run completed
    return summary


app = typer.Typer(add_completion=False)


@app.command()
def main(
    logs: Annotated[Path, typer.Option(help="Prediction log directory.")],
    actuals: Annotated[
        Optional[Path],  # noqa: UP045 (typer 0.9 cannot read `X | None`)
        typer.Option(help="Actuals directory (joined in when given and present)."),
    ] = None,
    days: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="Judge the last DAYS days (default: monitor.window_days)."),
    ] = None,
    until: Annotated[
        Optional[datetime],  # noqa: UP045
        typer.Option(
            parser=event_time_option,
            metavar="DATETIME",
            help="The window's end, an event time (default: the log's latest).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where the reports go.")] = MONITOR_DIR,
    pushgateway: Annotated[
        str, typer.Option(envvar="PUSHGATEWAY_URL", help="Also push the verdict there.")
    ] = "",
    env: Annotated[str, typer.Option(help="The environment, as the Pushgateway labels it.")] = (
        "production"
    ),
) -> None:
    """Compare production's recent predictions with the training reference; exit 1 on alarm."""
    settings = load_params("monitor")
    try:
        forget_verdict(out)  # before reading the log, which may fail
        days = days if days is not None else settings["window_days"]
        since, until = event_window(logs, days, until)
        summary = run(
            logs,
            actuals if actuals and actuals.exists() else None,
            since,
            until,
            out,
            settings,
            load_params("features"),
        )
    except (LogError, ValueError, FileNotFoundError) as err:
        typer.echo(f"monitor: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(markdown(summary))
    typer.echo(f"monitor: reports in {out}/")
    if pushgateway:
        try:
            push_verdict(summary, pushgateway, env)
        except OSError as err:
            typer.echo(
                f"monitor: could not push to PUSHGATEWAY_URL={pushgateway}: {err}", err=True
            )
            raise typer.Exit(2) from None
        typer.echo(f"monitor: verdict pushed to {pushgateway} (environment={env})")
    if summary["alarm"]:
        # the last line says which failure this is: make reports every failing recipe as 2
        typer.echo(f"monitor: action needed: {', '.join(summary['alarms'])} (exit 1)", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
