"""The champion/challenger gate: a candidate reaches production only if it is not worse than
the model production runs, on the same most recent labelled window that trained neither.

Both models predict the window (the candidate's test split: with rolling splits, the last days
of the data); the paired day-block bootstrap (bootstrap.py) gives the interval of the MAE
difference, candidate minus champion. The candidate is refused when even the interval's lower
bound is worse than `gate.tolerance` (a share of the champion's MAE): worse beyond noise and
beyond what params allow. `--override "why"` lets it through, and the reason is written into
reports/gate.json, which the release commits beside the version.

Production's model is the version of GTO's latest production tag. No such tag (a first release,
or the last production event took the model out) passes: there is nothing to beat, and the
model quality tests hold the candidate to the baseline. Not being able to tell is another
matter: a checkout without the full history and tags, a tag the gate cannot order, or a git,
GTO or DVC command that fails refuses the candidate (the advisory run records it as not passed).
"""

import json
import re
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import joblib
import numpy as np
import pandas as pd
import typer

from gitml.config import MODEL_FILE, PROJ_ROOT, REPORTS_DIR, SPLITS_DIR, load_params, split_path
from gitml.dataset import TARGET, TIME
from gitml.files import read_parquet, write_json
from gitml.github import step_outputs
from gitml.pull_requests.bootstrap import mae, paired_difference_ci
from gitml.release.registry import stage_assignment
from gitml.schema import as_model_input

GATE_FILE = REPORTS_DIR / "gate.json"
MODEL_IN_GIT = MODEL_FILE.relative_to(PROJ_ROOT).as_posix()
CHAMPION_FILE = PROJ_ROOT / "build" / "champion" / MODEL_FILE.name  # fetched, never committed
OVERRIDE_TRAILER = "Gate-Override"  # in a commit message: release this commit's model anyway
PRODUCTION = "production"  # the GTO stage whose model the candidate must beat
# GTO's stage tags: NAME#STAGE#N assigns, NAME#STAGE!#N takes out (N counts NAME's events)
STAGE_TAG = re.compile(r"(?P<name>[^#@]+)#(?P<stage>[^#!]+)(?P<out>!?)(?:#(?P<count>\d+))?")


class GateError(RuntimeError):
    """Production's model cannot be found or fetched; the message names the tag or command."""


def production_tag(name: str, tags: Iterable[str], shallow: bool) -> str | None:
    """NAME's tag of its latest production event among the repository's tags: None when NAME
    was never in production, or that event took it out (`NAME#production!#N`). GTO counts each
    artifact's events (`NAME#production#N`); a shallow checkout may lack tags, and a tag
    without its count cannot be ordered: both are errors, never "nothing in production"."""
    if shallow:
        raise GateError(
            f"the checkout is shallow, so its tags may be incomplete and whether {name} is in "
            "production cannot be told: fetch the whole history (actions/checkout with "
            "fetch-depth: 0)"
        )
    events: dict[int, tuple[str, bool]] = {}
    for tag in tags:
        event = STAGE_TAG.fullmatch(tag)
        if event is None or event["name"] != name or event["stage"] != PRODUCTION:
            continue
        if event["count"] is None:
            raise GateError(
                f"{tag}: a stage tag without its count cannot be ordered: assign stages with "
                f"GTO's counted tags ({name}#{PRODUCTION}#N, `make promote`), not --simple"
            )
        events[int(event["count"])] = (tag, bool(event["out"]))
    if not events:
        return None
    tag, out = events[max(events)]
    return None if out else tag


# git, GTO and DVC plumbing: tests/release/test_gate.py runs it against a real repository
# (marker `slow`), which `make mutation` leaves out
def git(*args: str) -> str:  # pragma: no mutate block
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GateError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def production_model(name: str, dest: Path) -> tuple[Path, str] | None:  # pragma: no mutate block
    """Fetch the model of the version GTO has in production (production_tag) from DVC at that
    version's commit: (the file, `NAME@version`); None when nothing is in production."""
    shallow = git("rev-parse", "--is-shallow-repository") == "true"
    latest = production_tag(name, git("tag", "--list").split(), shallow)
    if latest is None:
        return None
    check = subprocess.run(["gto", "check-ref", latest, "--json"], capture_output=True,
                           text=True, check=False)  # fmt: skip
    try:
        _, version = stage_assignment(json.loads(check.stdout or "{}"))
    except (ValueError, json.JSONDecodeError) as err:
        raise GateError(f"{latest}: {err} {check.stderr.strip()}") from None
    commit = git("rev-list", "-n", "1", f"{name}@{version}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fetched = subprocess.run(
        [sys.executable, "-m", "dvc", "get", ".", MODEL_IN_GIT, "--rev", commit, "-o", str(dest),
         "--force"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    if fetched.returncode != 0:
        raise GateError(
            f"dvc get {MODEL_IN_GIT} at {name}@{version} ({commit[:12]}) failed: "
            f"{fetched.stderr.strip()}\nThe gate reads production's model from the DVC remote, "
            "where main.yml's `make publish-outputs` pushes every model of main: a remote shared "
            'by the runners is needed (README: "Use your own remote")'
        )
    return dest, f"{name}@{version}"


def override_trailer() -> str:  # pragma: no mutate block
    """The `Gate-Override: why` trailer of HEAD's commit message (a merge or squash commit
    carries it onto main), or ""."""
    done = subprocess.run(
        ["git", "log", "-1",
         f"--format=%(trailers:key={OVERRIDE_TRAILER},valueonly,separator=; )"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else ""


def verdict_outputs(result: dict[str, Any]) -> dict[str, str]:
    """The verdict as step outputs: `register` writes an override's reason into the tag."""
    reason = " ".join(str(result.get("override", "")).split())  # one line
    return {
        "passed": str(result["passed"]).lower(),
        "message": f"gate overridden: {reason}" if reason else "",
    }


def judge(
    window: pd.DataFrame,
    champion: np.ndarray,
    candidate: np.ndarray,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The two models' MAE on the window, the interval of their difference, and the verdict."""
    actual = window[TARGET].to_numpy(dtype=float)
    days = window[TIME].dt.strftime("%Y-%m-%d").to_numpy()
    difference, low, high = paired_difference_ci(
        actual, candidate, champion, days, mae,
        n_resamples=int(settings["bootstrap_resamples"]), seed=int(settings["seed"]),
    )  # fmt: skip
    champion_mae = mae(actual, champion)
    allowed = float(settings["tolerance"]) * champion_mae
    return {
        "window": {
            "from": str(window[TIME].min()),
            "to": str(window[TIME].max()),
            "rows": len(window),
            "days": len(set(days)),
        },
        "champion_mae": round(champion_mae, 4),
        "candidate_mae": round(mae(actual, candidate), 4),
        "difference": round(difference, 4),
        "interval": [round(low, 4), round(high, 4)],
        "tolerance": float(settings["tolerance"]),
        "passed": bool(low <= allowed),
    }


def summary(result: dict[str, Any]) -> str:
    window = result["window"]
    low, high = result["interval"]
    verdict = "passes" if result["passed"] else "is refused"
    return (
        f"gate: on {window['rows']} rows ({window['days']} days, {window['from']} to "
        f"{window['to']}), candidate MAE {result['candidate_mae']:.3f} vs champion "
        f"{result['champion_mae']:.3f}: difference {result['difference']:+.3f}, 95 % interval "
        f"[{low:+.3f}, {high:+.3f}]; allowed worse: {result['tolerance']:.0%} of the champion's "
        f"MAE. The candidate {verdict}."
    )


app = typer.Typer(add_completion=False)


@app.command()
def main(
    champion: Annotated[
        Optional[Path],  # noqa: UP045 (typer 0.9 cannot read `X | None`)
        typer.Option(help="The model production runs (default: GTO's, with --name)."),
    ] = None,
    name: Annotated[str, typer.Option(help="GTO artifact whose production model to fetch.")] = "",
    candidate: Annotated[Path, typer.Option(help="The model to release.")] = MODEL_FILE,
    window_path: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--window", help="Labelled rows neither model trained on (default: test)."),
    ] = None,
    override: Annotated[
        str,
        typer.Option(
            envvar="GATE_OVERRIDE",
            help=f"Release a refused candidate: why (default: HEAD's {OVERRIDE_TRAILER} trailer).",
        ),
    ] = "",
    advisory: Annotated[
        bool, typer.Option(help="Report the verdict, never fail (the pull-request report).")
    ] = False,
    out: Annotated[Path, typer.Option(help="The verdict, committed with the release.")] = (
        GATE_FILE
    ),
) -> None:
    """Compare the candidate with production's model; exit 1 if it is refused."""
    checked_at = datetime.now(UTC).isoformat(timespec="seconds")
    if champion is None and not name:
        typer.echo("gate: give the model to beat (--champion) or the GTO artifact whose "
                   "production model it is (--name)", err=True)  # fmt: skip
        raise typer.Exit(2)
    champion_version = str(champion or "")
    if champion is None and name:
        try:
            found = production_model(name, CHAMPION_FILE)
        except GateError as err:
            typer.echo(f"gate: {err}", err=True)
            if not advisory:
                raise typer.Exit(1) from None
            note = f"production's model could not be fetched: {err}"
            write_json(out, {"checked_at": checked_at, "passed": False, "note": note})
            return
        champion, champion_version = found or (None, "")
    override = override or override_trailer()
    if champion is None:
        note = "no model in production yet: nothing to beat, the candidate passes"
        result: dict[str, Any] = {"passed": True, "note": note}
        typer.echo(f"gate: {note}")
    else:
        window = read_parquet(window_path or split_path("test", SPLITS_DIR))
        if window.empty:
            typer.echo("gate: the window has no labelled rows", err=True)
            raise typer.Exit(1)
        inputs = as_model_input(window)
        old, new = (joblib.load(path).predict(inputs) for path in (champion, candidate))
        result = {"champion": champion_version, **judge(window, old, new, load_params("gate"))}
        typer.echo(summary(result))
    if override:
        result["override"] = override
    write_json(out, {"checked_at": checked_at, **result})
    step_outputs(verdict_outputs(result))
    if not result["passed"]:
        if override or advisory:
            typer.echo(f"gate: overridden ({override}); recorded in {out}" if override else
                       "gate: refused (advisory: the release would refuse it)")  # fmt: skip
            return
        typer.echo(
            "gate: refused. Retrain or fix the candidate, or release it anyway with "
            f'GATE_OVERRIDE="why" or a "{OVERRIDE_TRAILER}: why" line in the commit message '
            "(recorded in the release's tag).",
            err=True,
        )
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
