"""The README's "Adapt it to your dataset", followed step by step on another public dataset:
ISLP's NYSE.csv (6,051 trading days, 1962-1986; a daily series whose target, `log_volume`, is
negative at times). Only the dataset spec, params.yaml and the data change; a fresh clone of the
adapted fork then pulls its data from the team's remote and runs the README's loop."""

import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from gitml.pipeline.data import download_wheel
from gitml.ports import free_port
from tests.e2e.clone import clean_env, make_clone, run

pytestmark = [pytest.mark.slow, pytest.mark.beside]  # a clone of its own: beside the suite

MAX_WRITTEN_LINES = 30
NYSE_MEMBER = "ISLP/data/NYSE.csv"

# Step 2: the dataset spec, everything from RAW_FILE on (the docstring and imports stay).
NYSE_SPEC = """RAW_FILE = "nyse.csv"
TIME = "date"
KEY = (TIME,)
TARGET = "log_volume"
LEAKY = ()
ERRORS_BY = "day_of_week"
DAYS = ("mon", "tues", "wed", "thur", "fri")
FEATURES: dict[str, Column] = {
    "day_of_week": Column("category", categories=DAYS, example="mon"),
    "DJ_return": Column("float", -0.3, 0.3, example=0.001),
    "log_volatility": Column("float", -15.0, -5.0, example=-9.8),
}
OTHER_COLUMNS: dict[str, Column] = {"date": Column("text"), "train": Column("bool"),
                                    TARGET: Column("float")}
CHECKS: list[pa.Check] = []


def clean(raw: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    return raw.drop(columns="train").assign(**{TIME: pd.to_datetime(raw["date"])})
"""
# Step 3: params.yaml, key by key (section.key: new value).
NYSE_PARAMS = {
    "data": "{}",
    "split.test_from": '"1985-01-01"',
    "split.production_from": '"1986-01-01"',
    "features.categorical": "[day_of_week]",
    "features.numeric": "[DJ_return, log_volatility]",
    "train.hyperparams.hist_gradient_boosting.loss": "squared_error",  # log_volume < 0 at times
    "train.hyperparams.xgboost.objective": "reg:squarederror",
    "evaluate.baseline_keys": "[day_of_week]",
    "quality.min_gain": "0.0",  # weak features (no lags): no better than the weekday mean
    "quality.beyond_noise": "false",
    "monitor.window_days": "365",  # a daily series: a year of trading days per window
}


def set_param(text: str, dotted: str, value: str) -> str:
    """Replace the value of one key of params.yaml, leaving every other line as it is."""
    lines, start, indent = text.splitlines(keepends=True), 0, -1
    for part in dotted.split("."):
        for i in range(start, len(lines)):
            found = re.match(rf"^(\s*){re.escape(part)}:(.*)$", lines[i])
            if found and len(found.group(1)) > indent:
                start, indent = i, len(found.group(1))
                break
        else:
            raise KeyError(f"params.yaml has no {dotted}")
    lines[start] = f"{' ' * indent}{dotted.split('.')[-1]}: {value}\n"
    if value == "{}":  # a section emptied: its keys go
        while start + 1 < len(lines) and lines[start + 1].startswith(" " * (indent + 1)):
            del lines[start + 1]
    return "".join(lines)


@pytest.fixture(scope="module")
def fork(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The template adapted to NYSE as the README says, committed; and the team's remote."""
    base = tmp_path_factory.mktemp("nyse")
    work, remote, env = make_clone(base / "fork"), base / "team-remote", clean_env()
    run("make", "setup", cwd=work, env=env)
    dvc = str(work / ".venv" / "bin" / "dvc")
    # Step 1: the data replaces data/, tracked and pushed to a remote every clone can reach
    shutil.rmtree(work / "data", ignore_errors=True)
    (work / "data").mkdir()
    with zipfile.ZipFile(download_wheel()) as wheel:
        (work / "data" / "nyse.csv").write_bytes(wheel.read(NYSE_MEMBER))
    run(dvc, "add", "-q", "data", cwd=work, env=env)
    run(dvc, "remote", "add", "--default", "team", str(remote), cwd=work, env=env)
    run(dvc, "push", "-q", "data.dvc", cwd=work, env=env)
    # Steps 2 and 3: the spec and params
    spec = work / "src" / "gitml" / "dataset.py"
    text = spec.read_text()
    spec.write_text(text[: text.index("RAW_FILE = ")] + NYSE_SPEC)
    params = (work / "params.yaml").read_text()
    for key, value in NYSE_PARAMS.items():
        params = set_param(params, key, value)
    (work / "params.yaml").write_text(params)
    run("git", "add", "-A", cwd=work)
    run("git", "-c", "user.name=Dana", "-c", "user.email=dana@example.com", "commit", "-q",
        "--no-verify", "-m", "Use the NYSE data", cwd=work)  # fmt: skip
    return work, remote


def test_the_recipe_is_at_most_30_written_lines(fork: tuple[Path, Path]) -> None:
    work, _ = fork
    numstat = run("git", "diff", "--numstat", "HEAD~1", "--", ".", ":!data.dvc", ":!dvc.lock",
                  cwd=work)  # fmt: skip
    rows = [line.split("\t") for line in numstat.strip().splitlines()]
    added, removed = sum(int(r[0]) for r in rows), sum(int(r[1]) for r in rows)
    print("\nhand-edited lines (git diff --numstat, data.dvc and dvc.lock excluded):")
    for plus, minus, name in rows:
        print(f"  {name:28s} +{plus:>3s} -{minus:>3s}")
    print(f"  written: {added}, removed: {removed} (the example's own spec lines)")
    assert {name for *_, name in rows} <= {"src/gitml/dataset.py", "params.yaml", ".dvc/config"}
    assert added <= MAX_WRITTEN_LINES


def test_a_fresh_clone_of_the_fork_runs_the_readme_loop(
    fork: tuple[Path, Path], tmp_path: Path
) -> None:
    work, _ = fork
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(work), str(clone), cwd=tmp_path)
    env = clean_env()
    env["GITML_STAGING_PORT"], env["GITML_PRODUCTION_PORT"] = str(free_port()), str(free_port())
    ran = run("make", "run", cwd=clone, env=env)
    assert "data: data pulled" in ran  # from the team's remote: nothing seeded
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    print(f"\nNYSE test split: model {metrics['model']}, baseline {metrics['baseline']}")
    run("make", "report", cwd=clone, env=env)
    assert "## Model report" in (clone / "reports" / "pr" / "report.md").read_text()
    try:
        replayed = run("make", "replay", cwd=clone, env=env)
        monitor = subprocess.run(["make", "monitor"], cwd=clone, env=env, capture_output=True,
                                 text=True, check=False)  # fmt: skip
    finally:
        run(str(clone / ".venv" / "bin" / "python"), "-m", "gitml", "deploy", "stop", "--env",
            "staging", cwd=clone, env=env)  # fmt: skip
    sent = int(re.search(r"replay: (\d+) rows of production sent", replayed).group(1))  # type: ignore[union-attr]
    summary = json.loads((clone / "reports" / "monitor" / "summary.json").read_text())
    print(f"NYSE monitor: {summary['rows']} rows, alarms {summary['alarms']}")
    assert summary["rows"] == sent == summary["quality"]["labelled_rows"]
    assert monitor.returncode == (2 if summary["alarm"] else 0), monitor.stderr
