"""Monitoring: a window of production's prediction log against the training reference.

The statistics of checks.py (per-feature drift distance and most frequent value's share,
prediction drift; where actuals have been joined in, the error ratio) are judged
against the limits `make calibrate` learned for this model (calibrate.py: the false-alarm rate
asked in params.yaml `monitor`), and shown with evidently's drift and regression reports.
Writes `reports/monitor/`: drift.html, quality.html (with actuals), summary.json, summary.md
and monitor.prom (Prometheus textfile). Exit status: 0 healthy, 1 action needed, 2 the logs,
the reference or the calibration cannot be used.

Windows go by event time (the hour a prediction is about, which the request carries; else the
time it was served): the last `monitor.window_days` days up to the log's latest event, or
`--until`. A replayed year is judged on its own calendar, not on the minutes it took to send.
"""

import json
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Optional

import joblib
import numpy as np
import pandas as pd
import typer
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from gitml.config import MODEL_FILE, REPORTS_DIR, SPLITS_DIR, load_params, split_path
from gitml.dataset import TARGET, TIME
from gitml.files import read_parquet, write_atomic, write_json
from gitml.monitoring import checks
from gitml.monitoring.calibrate import (
    CALIBRATION_DIR,
    CALIBRATION_FILE,
    ERRORS_FILE,
    categorical_features,
    md5,
)
from gitml.monitoring.feedback import event_time_option
from gitml.pipeline.evaluate import seasonal_baseline
from gitml.schema import EVENT_TIME, FEATURES, as_utc
from gitml.serving.predlog import ACTUAL, PREDICTION, LogError, read_predictions

MONITOR_DIR = REPORTS_DIR / "monitor"
FINDINGS = checks.CHECKS


def load_calibration(
    directory: Path, model_path: Path, settings: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    """`make calibrate`'s limits and error model, refused unless made for this model and
    these `monitor` settings."""
    record_file = directory / CALIBRATION_FILE
    if not record_file.exists():
        raise FileNotFoundError(f"{record_file} is missing: run `make calibrate`")
    record = json.loads(record_file.read_text())
    for name, path in (("model_md5", model_path), ("errors_md5", directory / ERRORS_FILE)):
        if record.get(name) != md5(path):
            raise ValueError(
                f"{record_file} was calibrated for another {path.name}: run `make calibrate` "
                "(dvc repro calibrate) so the limits fit the model"
            )
    for key in ("window_days", "false_alarm_rate", "alarm_on"):
        if record.get(key) != settings[key]:
            raise ValueError(
                f"{record_file} was calibrated for monitor.{key}={record.get(key)}, params.yaml "
                f"says {settings[key]}: run `make calibrate`"
            )
    return record, joblib.load(directory / ERRORS_FILE)


def relative_error(frame: pd.DataFrame) -> float:
    """Absolute error over total demand (WAPE): information, not a verdict."""
    return float((frame[PREDICTION] - frame[ACTUAL]).abs().sum() / frame[ACTUAL].abs().sum())


def _limit(limits: dict[str, Any], name: str) -> float | None:
    """A statistic's calibrated limit (None: it was not calibrated, e.g. never measured)."""
    return round(limits[name]["high"], 4) if name in limits else None


def drift_findings(found: dict[str, float], calibrated: dict[str, Any]) -> dict[str, Any]:
    """Data drift: which features moved beyond the range the training windows show."""
    limits, beyond = calibrated["limits"], checks.exceeded(found, calibrated["limits"])
    features = {}
    for name in FEATURES:
        stats = [checks.statistic(name, kind) for kind in (checks.DISTANCE, checks.MODE_SHARE)]
        features[name] = {
            "distance": round(found[stats[0]], 4),
            "distance_limit": _limit(limits, stats[0]),
            "mode_share": round(found[stats[1]], 4),
            "mode_share_limit": _limit(limits, stats[1]),
            "drifted": any(stat in beyond for stat in stats),
        }
    drifted = [name for name, test in features.items() if test["drifted"]]
    return {
        "detected": bool(beyond),
        "share": round(len(drifted) / len(features), 4),
        "drifted_features": drifted,
        "exceeded": beyond,
        "features": features,
    }


def quality_findings(
    current: pd.DataFrame,
    found: dict[str, float] | None,
    calibrated: dict[str, Any],
    test: dict[str, float],
    skill: float | None,
    min_rows: int,
) -> dict[str, Any]:
    """Quality: the error and bias ratios against their calibrated limits; the relative
    error, skill and bias beside them as information."""
    labelled = current.dropna(subset=[ACTUAL])
    if found is None:
        note = f"{len(labelled)} rows have actuals, fewer than monitor.min_rows={min_rows}"
        return {"detected": False, "labelled_rows": len(labelled), "note": note}
    limits = calibrated["limits"]
    beyond = checks.exceeded(found, limits)
    daily = labelled.groupby(labelled[EVENT_TIME].dt.strftime("%Y-%m-%d")).apply(relative_error)
    errors = labelled[PREDICTION] - labelled[ACTUAL]
    return {
        "detected": bool(beyond),
        "exceeded": beyond,
        "labelled_rows": len(labelled),
        "error_ratio": round(found[checks.ERROR_RATIO], 4),
        "error_ratio_limit": _limit(limits, checks.ERROR_RATIO),
        "relative_error": round(relative_error(labelled), 4),
        "expected_relative_error": test["relative_error"],
        "skill": None if skill is None else round(skill, 4),
        "test_skill": test["skill"],
        "mae": round(float(errors.abs().mean()), 3),
        "bias": round(float(errors.sum() / labelled[ACTUAL].sum()), 4),
        "daily_relative_error": {day: round(float(v), 4) for day, v in daily.items()},
    }  # fmt: skip


def baseline_skill(train: pd.DataFrame, current: pd.DataFrame, keys: list[str]) -> float | None:
    """The model's mean absolute error over the naive seasonal baseline's (evaluate.py's) on
    the labelled rows; None when a baseline key is not a logged feature."""
    labelled = current.dropna(subset=[ACTUAL])
    if labelled.empty or not set(keys) <= set(labelled):
        return None
    baseline = seasonal_baseline(train, labelled, keys, TARGET)
    model = (labelled[PREDICTION] - labelled[ACTUAL]).abs().sum()
    return float(model / np.abs(baseline - labelled[ACTUAL].to_numpy()).sum())


def verdict(findings: dict[str, Any], alarm_on: list[str]) -> list[str]:
    """The findings that ask for action (those listed in `alarm_on` that were detected)."""
    unknown = sorted(set(alarm_on) - set(FINDINGS))
    if unknown:
        raise ValueError(f"params.yaml monitor.alarm_on: unknown {unknown}; use {FINDINGS}")
    return [name for name in alarm_on if findings[name]["detected"]]


def judge(
    found: dict[str, dict[str, float]],
    current: pd.DataFrame,
    calibration: dict[str, Any],
    skill: float | None,
    settings: dict[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    """The window's findings against the calibration, and the alarms they raise."""
    calibrated = calibration["checks"]
    prediction = checks.statistic(PREDICTION, checks.DISTANCE)
    limits = calibrated[checks.PREDICTION_DRIFT]["limits"]
    findings = {
        checks.DATA_DRIFT: drift_findings(found[checks.DATA_DRIFT], calibrated[checks.DATA_DRIFT]),
        checks.PREDICTION_DRIFT: {
            "detected": bool(checks.exceeded(found[checks.PREDICTION_DRIFT], limits)),
            "method": checks.METHODS[False],
            "distance": round(found[checks.PREDICTION_DRIFT][prediction], 4),
            "limit": _limit(limits, prediction),
        },
        checks.QUALITY: quality_findings(current, found.get(checks.QUALITY),
                                         calibrated[checks.QUALITY], calibration["test"], skill,
                                         settings["min_rows"]),
    }  # fmt: skip
    return findings, verdict(findings, list(settings["alarm_on"]))


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, categorical: list[str], calibrated: Any
) -> Any:
    """evidently's data and prediction drift report, its tests set to the calibrated distance
    limits (the mode shares are in summary.md)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    features = list(FEATURES)
    limits = calibrated[checks.DATA_DRIFT]["limits"]
    distance = {name: limits.get(checks.statistic(name, checks.DISTANCE), {}).get("high")
                for name in features}  # fmt: skip
    prediction = calibrated[checks.PREDICTION_DRIFT]["limits"]
    numeric = [name for name in features if name not in categorical] + [PREDICTION]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report([
        DataDriftPreset(
            columns=features, drift_share=1 / len(features),  # one feature is a finding
            per_column_method={name: checks.METHODS[name in categorical] for name in features},
            per_column_threshold={name: v for name, v in distance.items() if v is not None},
        ),
        ValueDrift(column=PREDICTION, method=checks.METHODS[False],
                   threshold=prediction[checks.statistic(PREDICTION, checks.DISTANCE)]["high"]),
    ])  # fmt: skip
    columns = [*features, PREDICTION]
    with warnings.catch_warnings():  # evidently warns about its own deprecated internals
        warnings.simplefilter("ignore")
        return report.run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
        )


def quality_report(reference: pd.DataFrame, current: pd.DataFrame, categorical: list[str]) -> Any:
    """Evidently's regression report (errors, their distribution, worst cases) with actuals."""
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.presets import RegressionPreset

    labelled = current.dropna(subset=[ACTUAL])
    numeric = [name for name in FEATURES if name not in categorical] + [PREDICTION, ACTUAL]
    definition = DataDefinition(
        numerical_columns=numeric,
        categorical_columns=categorical,
        regression=[Regression(target=ACTUAL, prediction=PREDICTION)],
    )
    columns = [*FEATURES, PREDICTION, ACTUAL]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Report([RegressionPreset()]).run(
            Dataset.from_pandas(labelled[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
        )


def event_window(
    frame: pd.DataFrame, days: float, until: datetime | None = None
) -> tuple[datetime, datetime]:
    """[since, until) of event time: `days` days up to `until` (no offset: UTC), by default
    up to and including the log's latest event."""
    if until is None:
        latest = frame[EVENT_TIME].max().to_pydatetime()
        until = latest + timedelta(microseconds=1)
    else:
        until = as_utc(until)
    return until - timedelta(days=days), until


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def markdown(summary: dict[str, Any]) -> str:
    """The summary as the issue body the scheduled workflow posts."""
    data, pred, qual = summary["data_drift"], summary["prediction_drift"], summary["quality"]
    cal, alarm_on = summary["calibration"], summary["alarm_on"]
    status = "Healthy"
    if summary["alarm"]:
        status = "**Action needed**: " + ", ".join(summary["alarms"])
    drifted = data["drifted_features"]
    lines = [
        f"## Production monitoring: {status}",
        "",
        f"Window {summary['window']['from']} to {summary['window']['to']}: "
        f"{summary['rows']} predictions, model version(s) {', '.join(summary['model_versions'])}.",
        "",
        "| check | result | calibrated limit | alarm on it |",
        "|---|---|---|---|",
        f"| data drift: features beyond their range | {len(drifted)} of {len(data['features'])}"
        f" ({', '.join(drifted) or 'none'}) | per feature, below | "
        f"{_yes('data_drift' in alarm_on)} |",
        f"| prediction drift ({pred['method']} distance) | {pred['distance']:.3f} | "
        f"{_g(pred['limit'])} | {_yes('prediction_drift' in alarm_on)} |",
    ]
    if "error_ratio" in qual:
        on = _yes("quality" in alarm_on)
        skill = "n/a" if qual["skill"] is None else f"{qual['skill']:.2f}"
        lines += [
            f"| error ratio: absolute error / expected | {qual['error_ratio']:.2f} | "
            f"{_g(qual['error_ratio_limit'])} | {on} |",
            f"| relative error (test split: {qual['expected_relative_error']:.3f}) | "
            f"{qual['relative_error']:.3f} | | {_yes(False)} |",
            f"| skill: error / naive seasonal baseline's (test split: {qual['test_skill']:.2f}) "
            f"| {skill} | | {_yes(False)} |",
            f"| bias: (predicted - actual) / actual | {qual['bias']:+.1%} | | {_yes(False)} |",
        ]
    else:
        lines.append(f"| quality | {qual['note']} | | |")
    lines += [
        "",
        "| feature | drift distance | limit | most frequent value's share | limit | |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {test['distance']:.3f} | {_g(test['distance_limit'])} | "
            f"{test['mode_share']:.3f} | {_g(test['mode_share_limit'])} | "
            f"{'drift' if test['drifted'] else ''} |"
            for name, test in data["features"].items()
        ),
        "",
        f"Limits from `make calibrate`: {cal['windows']} windows the model did not train on "
        f"({cal['folds']} refitted folds of the training split, and the test split), set for a "
        f"false-alarm rate of {cal['false_alarm_rate']:.0%} over {', '.join(alarm_on)}. Judged "
        f"by limits calibrated without it, each of those windows alarmed at a rate of "
        f"{cal['left_out_false_alarm_rate'].get('alarm', 0):.0%} (docs/guide/monitoring.md).",
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
    days: float,
    until: datetime | None,
    out: Path,
    params_monitor: dict[str, Any],
    params_features: dict[str, Any],
    model_path: Path = MODEL_FILE,
    splits_dir: Path = SPLITS_DIR,
    calibration_dir: Path = CALIBRATION_DIR,
    baseline_keys: list[str] | None = None,
) -> dict[str, Any]:
    """Judge the last `days` days of event time up to `until` (default: the log's latest
    event) and write the reports; returns the summary. The log is read once."""
    forget_verdict(out)
    logged = read_predictions(logs, actuals, None, as_utc(until) if until else None)
    since, until = event_window(logged, days, until)
    current = logged[logged[EVENT_TIME] >= pd.Timestamp(since)].reset_index(drop=True)
    if len(current) < params_monitor["min_rows"]:
        raise LogError(
            f"{logs}: {len(current)} predictions in the window, fewer than "
            f"monitor.min_rows={params_monitor['min_rows']}: too few to judge"
        )
    calibration, errors = load_calibration(calibration_dir, model_path, params_monitor)
    model, train = joblib.load(model_path), read_parquet(split_path("train", splits_dir))
    categorical = categorical_features(params_features)
    reference = checks.as_logged(model, train, list(FEATURES), TARGET, TIME)
    found = checks.measure(reference, current, checks.expected_error(errors, current),
                           list(FEATURES), categorical, params_monitor["min_rows"])  # fmt: skip
    keys = baseline_keys if baseline_keys is not None else load_params("evaluate")["baseline_keys"]
    skill = baseline_skill(train, current, list(keys))
    findings, alarms = judge(found, current, calibration, skill, params_monitor)
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
        "calibration": {
            "false_alarm_rate": calibration["false_alarm_rate"],
            "windows": len(calibration["windows"]),
            "folds": calibration["folds"],
            "left_out_false_alarm_rate": calibration["left_out_false_alarm_rate"],
        },
        **findings,
    }
    drift_snapshot = drift_report(reference, current, categorical, calibration["checks"])
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
    calibration: Annotated[
        Path, typer.Option(help="`make calibrate`'s output: the thresholds for this model.")
    ] = CALIBRATION_DIR,
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
        summary = run(
            logs,
            actuals if actuals and actuals.exists() else None,
            days if days is not None else settings["window_days"],
            until,
            out,
            settings,
            load_params("features"),
            calibration_dir=calibration,
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
