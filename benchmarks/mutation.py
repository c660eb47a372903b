"""Mutation testing of the core modules (`make mutation`): would the fast tests catch a bug?

mutmut (configured in pyproject.toml, [tool.mutmut]) changes the core modules one small edit at
a time (a flipped comparison, a changed constant, a dropped argument...) and runs, for each
mutant, the fast tests that reach the mutated function. A mutant the tests do not notice
survives. This prints, per module, the share of mutants killed and every survivor (inspect one
with `mutmut show NAME`), and exits 1 when a module scores under the goal.

Equivalent mutants (they change the code but not what it does, so no test can kill them) are
listed in EQUIVALENT with the reason, and left out of the score.
"""

import argparse
import ast
import difflib
import functools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from gitml.config import PROJ_ROOT

GOAL = 0.90
MUTANTS = PROJ_ROOT / "mutants"

# mutmut's exit codes (mutmut/__main__.py, status_by_exit_code): what counts as caught.
CAUGHT = {1: "killed", 3: "killed", -24: "timeout", 24: "timeout", 36: "timeout", 152: "timeout",
          255: "timeout", 37: "caught by type check"}  # fmt: skip
NOT_CAUGHT = {0: "survived", 5: "no tests", 33: "no tests", None: "not checked"}

# mutmut forks a child per mutant from a process whose tests have trained models: with more
# than one OpenMP thread (scikit-learn's gradient boosting) a forked child can hang for good.
MUTMUT_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MLEM_NO_ANALYTICS": "true"}

# mutant name -> why it cannot change behaviour (reviewed with `mutmut show NAME`).
_HEADER_CASE = "urllib's Request capitalizes header names: the request sent is the same"
_VERIFIED_HEAD = "the repository check runs only after the sha check, which needs `head`"
_OBSERVED = (
    "observed= only matters for categorical keys; their unobserved combinations get NaN means, "
    "which fillna replaces with the same overall mean"
)
_NAMES = "a ColumnTransformer step's name; with verbose_feature_names_out=False it shows nowhere"
_CHECK_DEFAULT = "subprocess.run's check defaults to False"
_UNKNOWN_KIND = (
    "any unknown RUNNER_KIND (None, 'XXlocalXX') reads 'a local machine', as 'local' does"
)
_NO_REASON = "no RUNNER_REASON: '' and None are both false, so no reason is shown"
_UNIT_ALIAS = "pandas reads 'd' as 'D' and 'H' as 'h' (a deprecated alias): the same timedelta"
_PUBLISH_DEFAULT = "CML_PUBLISH unset: any default but 'false' (None, 'XXtrueXX') publishes"
_GET_DEFAULT = "urllib sends GET when a request has no method and no body"
_NO_RUN_URL = "RUN_URL unset: '' and None both fall back to 'see the pr workflow run'"
_SAME_FIT = "the encoder's columns and its lookups come from one fit: always as many"
_SPEED_ONLY = "changes how fast, not what: the same predictions"
_FALSY = "None is as falsy as False where it is read"
EQUIVALENT: dict[str, str] = {
    "gitml.serving.batching.xǁBatcherǁ__init____mutmut_4": _FALSY,
    "gitml.serving.batching.xǁBatcherǁ_run__mutmut_12": _FALSY,
    "gitml.serving.batching.xǁ_Waitingǁ__init____mutmut_3": (
        "result is read only after _run set it, or raised the call's error instead"
    ),
    "gitml.serving.compiled.x__one_hot__mutmut_42": _SAME_FIT,
    "gitml.serving.compiled.x__one_hot__mutmut_45": _SAME_FIT,
    "gitml.serving.compiled.x__one_hot__mutmut_46": _SAME_FIT,
    "gitml.serving.compiled.x__one_hot__mutmut_53": "fromiter's count only preallocates",
    "gitml.serving.compiled.x__one_hot__mutmut_59": "an unseen level is any negative position",
    "gitml.serving.compiled.x_compile_regressor__mutmut_14": "astype(None) is float64",
    "gitml.serving.compiled.x_compile_regressor__mutmut_22": _SPEED_ONLY,
    "gitml.dataset.x_clean__mutmut_25": _UNIT_ALIAS,
    "gitml.dataset.x_clean__mutmut_33": _UNIT_ALIAS,
    "gitml.pull_requests.comment.x_main__mutmut_72": _PUBLISH_DEFAULT,
    "gitml.pull_requests.comment.x_main__mutmut_74": _PUBLISH_DEFAULT,
    "gitml.pull_requests.comment.x_main__mutmut_77": _PUBLISH_DEFAULT,
    "gitml.pull_requests.comment.x_main__mutmut_89": _NO_RUN_URL,
    "gitml.pull_requests.comment.x_main__mutmut_105": _NO_RUN_URL,
    "gitml.pull_requests.comment.x_main__mutmut_107": _NO_RUN_URL,
    "gitml.pull_requests.comment.x_main__mutmut_143": _CHECK_DEFAULT,
    "gitml.pull_requests.comment.x_main__mutmut_145": _CHECK_DEFAULT,
    "gitml.pull_requests.comment.x_main__mutmut_42": _GET_DEFAULT,
    "gitml.pull_requests.comment.x_all_comments__mutmut_10": _GET_DEFAULT,
    "gitml.pull_requests.comment.x_api__mutmut_18": _HEADER_CASE,
    "gitml.pull_requests.comment.x_api__mutmut_19": _HEADER_CASE,
    "gitml.pull_requests.comment.x_api__mutmut_23": _HEADER_CASE,
    "gitml.pull_requests.comment.x_api__mutmut_24": _HEADER_CASE,
    "gitml.pull_requests.comment.x_stale_reports__mutmut_8": (
        "a comment without a body: neither '' nor 'XXXX' holds the watermark"
    ),
    "gitml.pull_requests.comment.x_main__mutmut_73": _PUBLISH_DEFAULT,
    "gitml.pull_requests.comment.x_main__mutmut_75": _PUBLISH_DEFAULT,
    "gitml.pull_requests.comment.x_main__mutmut_78": _PUBLISH_DEFAULT,
    "gitml.pull_requests.comment.x_main__mutmut_79": _PUBLISH_DEFAULT,
    "gitml.pull_requests.report.x_git_show__mutmut_6": _CHECK_DEFAULT,
    "gitml.pull_requests.report.x_git_show__mutmut_11": _CHECK_DEFAULT,
    "gitml.pull_requests.report.x_command_output__mutmut_6": _CHECK_DEFAULT,
    "gitml.pull_requests.report.x_command_output__mutmut_11": _CHECK_DEFAULT,
    "gitml.pull_requests.report.x_runner_section__mutmut_3": _UNKNOWN_KIND,
    "gitml.pull_requests.report.x_runner_section__mutmut_5": _UNKNOWN_KIND,
    "gitml.pull_requests.report.x_runner_section__mutmut_8": _UNKNOWN_KIND,
    "gitml.pull_requests.report.x_runner_section__mutmut_9": _UNKNOWN_KIND,
    "gitml.pull_requests.report.x_runner_section__mutmut_12": _NO_REASON,
    "gitml.pull_requests.report.x_runner_section__mutmut_14": _NO_REASON,
    "gitml.pull_requests.report.x_verdict__mutmut_7": (
        "low >= 0 is reached only when 0 is outside [low, high], where low >= 0 means low > 0"
    ),
    "gitml.pull_requests.comment.x_fetch_pr__mutmut_8": _HEADER_CASE,
    "gitml.pull_requests.comment.x_fetch_pr__mutmut_9": _HEADER_CASE,
    "gitml.pull_requests.comment.x_fetch_pr__mutmut_11": _HEADER_CASE,
    "gitml.pull_requests.comment.x_fetch_pr__mutmut_12": _HEADER_CASE,
    "gitml.pull_requests.runner.x_online_runners__mutmut_7": _HEADER_CASE,
    "gitml.pull_requests.runner.x_online_runners__mutmut_8": _HEADER_CASE,
    "gitml.pull_requests.runner.x_online_runners__mutmut_10": _HEADER_CASE,
    "gitml.pull_requests.runner.x_online_runners__mutmut_11": _HEADER_CASE,
    "gitml.pull_requests.comment.x_verify_pr__mutmut_24": _VERIFIED_HEAD,
    "gitml.pull_requests.comment.x_verify_pr__mutmut_26": _VERIFIED_HEAD,
    "gitml.pipeline.evaluate.x_seasonal_baseline__mutmut_4": _OBSERVED,
    "gitml.pipeline.evaluate.x_seasonal_baseline__mutmut_6": _OBSERVED,
    "gitml.pipeline.evaluate.x_seasonal_baseline__mutmut_7": _OBSERVED,
    "gitml.pipeline.evaluate.x_evaluate__mutmut_91": (
        "groupby(as_index=None) behaves as as_index=False"
    ),
    "gitml.pipeline.validate.x_describe_failures__mutmut_42": (
        "groupby(sort=None) is falsy: groups keep their first-seen order, as with sort=False"
    ),
    "gitml.pipeline.features.x_build_preprocessor__mutmut_5": _NAMES,
    "gitml.pipeline.features.x_build_preprocessor__mutmut_6": _NAMES,
    "gitml.pipeline.features.x_build_preprocessor__mutmut_17": _NAMES,
    "gitml.pipeline.features.x_build_preprocessor__mutmut_18": _NAMES,
    "gitml.release.registry.x_run__mutmut_5": _CHECK_DEFAULT,
    "gitml.release.registry.x_run__mutmut_10": _CHECK_DEFAULT,
    "gitml.release.registry.x_image_digest__mutmut_5": _CHECK_DEFAULT,
    "gitml.release.registry.x_image_digest__mutmut_9": _CHECK_DEFAULT,
    "gitml.release.registry.x_image_name__mutmut_7": (
        "the whole image name is lowercased afterwards"
    ),
    "gitml.release.registry.x_checkout_git_environment__mutmut_12": (
        "git config's section and key names ignore case"
    ),
    "gitml.release.registry.x_image_digest__mutmut_4": "json.loads reads bytes as well as text",
    "gitml.release.registry.x_image_digest__mutmut_8": "json.loads reads bytes as well as text",
    "gitml.release.registry.x_image_digest__mutmut_24": "json.loads reads bytes as well as text",
    "gitml.schema.x__pandera_column__mutmut_8": (
        "a category column's dtype left unchecked: its isin check refuses every non-string"
    ),
    "gitml.schema.x__pandera_column__mutmut_10": "pandera's nullable=None is its default, False",
    "gitml.schema.x__pandera_column__mutmut_13": "pandera's nullable default is False",
    "gitml.pull_requests.runner.x_choose__mutmut_37": (
        "labels '' and None are both not a list: the same error"
    ),
    "gitml.pull_requests.runner.x_main__mutmut_5": "a missing token: '' and None are both false",
    "gitml.pull_requests.runner.x_main__mutmut_7": "a missing token: '' and None are both false",
    "gitml.serving.predlog.xǁPredictionLogǁ__init____mutmut_12": (
        "_day is compared only once _fd is set, which sets _day too"
    ),
    "gitml.serving.predlog.xǁPredictionLogǁ__init____mutmut_13": (
        "_day is compared only once _fd is set, which sets _day too"
    ),
    "gitml.serving.predlog.x__read_jsonl__mutmut_7": "codec names are case-insensitive",
    "gitml.serving.predlog.x_write_actuals__mutmut_16": "codec names are case-insensitive",
    "gitml.serving.predlog.x_read_predictions__mutmut_110": (
        "merge(on=None) joins on the common columns, which are exactly request_id and row"
    ),
    "gitml.serving.predlog.x_read_predictions__mutmut_113": (
        "merge without on= joins on the common columns, which are exactly request_id and row"
    ),
    "gitml.serving.predlog.x_read_predictions__mutmut_108": "float() reads 'NAN' as 'nan'",
    "gitml.monitoring.feedback.x_labelled_rows__mutmut_31": (
        "tz_convert(None) converts to UTC and drops the zone, as the tz_localize(None) after it"
    ),
    "gitml.release.gate.x_judge__mutmut_2": (
        "numpy computes the MAE of an int target as of a float"
    ),
    "gitml.monitoring.trigger.x_trigger__mutmut_13": "urllib sends POST when a body is given",
    "gitml.release.gate.x_judge__mutmut_5": "other labels, the same grouping by day",
    "gitml.release.gate.x_judge__mutmut_6": "%y and %Y group alike within a century",
    **dict.fromkeys(
        [f"gitml.pipeline.validate.x_with_feedback__mutmut_{n}" for n in (5, 7, 8)],
        "the index is rebuilt by reset_index(drop=True) after the sort",
    ),
    "gitml.serving.predlog.xǁPredictionLogǁappend__mutmut_23": (
        "json.dumps(allow_nan=None) is falsy: NaN is refused as with False"
    ),
}


def status(code: int | None) -> str:
    return CAUGHT.get(code) or NOT_CAUGHT.get(code) or f"suspicious (exit {code})"  # type: ignore[arg-type]


def results() -> dict[str, dict[str, int | None]]:
    """Module -> {mutant name: exit code}, from mutmut's result files."""
    found = {}
    for meta in sorted((MUTANTS / "src").rglob("*.py.meta")):
        module = meta.relative_to(MUTANTS / "src").with_suffix("").with_suffix("")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            found[".".join(module.parts)] = codes
    return found


@functools.cache
def functions(module: str) -> dict[str, str]:
    """Source of every function in mutmut's copy of `module`, by name."""
    source = (MUTANTS / "src" / Path(*module.split("."))).with_suffix(".py").read_text()
    lines = source.splitlines()
    return {
        node.name: "\n".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef)
    }


def show(name: str) -> str:
    """The lines a mutant changes (what `mutmut show NAME` prints in full), read from the
    mutated module, where mutmut keeps each mutant beside the original as a function."""
    module, _, function = name.rpartition(".")
    original = function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
    bodies = functions(module)
    before = bodies.get(original, "").splitlines()[1:]  # the names differ: skip the def line
    after = bodies.get(function, "").splitlines()[1:]
    changed = [
        line for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]  # fmt: skip
    return "\n".join(f"        {line[0]} {line[1:].strip()}" for line in changed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants at once")
    parser.add_argument("--report-only", action="store_true", help="do not run mutmut again")
    parser.add_argument(
        "--survivors", action="store_true",
        help="retest only the mutants the last run left (after adding tests): quicker, but "
        "the figure of record is a whole run",
    )  # fmt: skip
    args = parser.parse_args()
    started = time.monotonic()
    if not args.report_only:
        names = []
        if args.survivors:
            names = [
                n for codes in results().values() for n, c in codes.items() if c not in CAUGHT
            ]
        run = subprocess.run(
            [str(Path(sys.executable).parent / "mutmut"), "run", "--max-children", str(args.jobs),
             *names],
            cwd=PROJ_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            check=False, env=MUTMUT_ENV,
        )  # fmt: skip
        if run.returncode != 0:
            sys.exit(f"mutation: mutmut run failed:\n{run.stderr[-3000:]}")
    found = results()
    if not found:
        sys.exit("mutation: no mutmut results under mutants/ (run without --report-only)")
    below, survivors = [], {}
    print(
        f"{'module':28s} {'mutants':>7s} {'killed':>6s} {'equiv':>5s} {'left':>5s} {'score':>6s}"
    )
    for module, codes in found.items():
        # a mutant listed as equivalent but killed was not equivalent: it counts as killed
        equivalent = [n for n, code in codes.items() if n in EQUIVALENT and code not in CAUGHT]
        counted = {name: code for name, code in codes.items() if name not in equivalent}
        caught = sum(code in CAUGHT for code in counted.values())
        score = caught / len(counted) if counted else 1.0
        left = {name: status(code) for name, code in counted.items() if code not in CAUGHT}
        survivors.update(left)
        print(f"{module:28s} {len(codes):7d} {caught:6d} {len(equivalent):5d} {len(left):5d} "
              f"{score:6.1%}")  # fmt: skip
        if score < GOAL:
            below.append(module)
    totals = Counter(status(code) for codes in found.values() for code in codes.values())
    print(f"\nall mutants: {dict(totals)}; took {time.monotonic() - started:.0f} s")
    if survivors:
        print("\nsurvivors (mutmut show NAME for the whole diff):")
        for name, why in survivors.items():
            print(f"  {name}: {why}\n{show(name)}")
    present = [
        name
        for codes in found.values()
        for name, code in codes.items()
        if name in EQUIVALENT and code not in CAUGHT
    ]
    if present:
        print("\nequivalent mutants (left out of the score):")
        for name in present:
            print(f"  {name}: {EQUIVALENT[name]}\n{show(name)}")
    if below:
        sys.exit(f"\nmutation: under {GOAL:.0%}: {', '.join(below)}")


if __name__ == "__main__":
    main()
