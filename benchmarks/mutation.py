"""Mutation testing of the core modules (`make mutation`): would the fast tests catch a bug?

mutmut (configured in pyproject.toml, [tool.mutmut]) changes the core modules one small edit at
a time (a flipped comparison, a changed constant, a dropped argument...) and runs, for each
mutant, the fast tests that reach the mutated function. A mutant the tests do not notice
survives. This prints the commit the run tested, per module the share of mutants killed, and
every survivor (inspect one with `mutmut show NAME`). It exits 1 when a module scores under the
goal, or when an entry of EQUIVALENT no longer excuses a surviving mutant.

Equivalent mutants (they change the code but not what it does, so no test can kill them) are
listed in EQUIVALENT with the reason, and left out of the score. An entry names the function
and the lines the mutant changes, never mutmut's number for it (`x_main__mutmut_73`), which
moves whenever the function changes. An entry whose change no mutant makes any more, or whose
mutant a test kills, fails the run: an excuse cannot outlive the code it excused.
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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gitml.config import PROJ_ROOT

GOAL = 0.90
MUTANTS = PROJ_ROOT / "mutants"
RUN_FILE = "run.json"  # in MUTANTS: the commit and settings of the run this script started

# mutmut's exit codes (mutmut/__main__.py, status_by_exit_code): what counts as caught.
KILLED = {1: "killed", 3: "killed"}
CAUGHT = {**KILLED, -24: "timeout", 24: "timeout", 36: "timeout", 152: "timeout",
          255: "timeout", 37: "caught by type check"}  # fmt: skip
NOT_CAUGHT = {0: "survived", 5: "no tests", 33: "no tests", None: "not checked"}

# mutmut forks a child per mutant from a process whose tests have trained models: with more
# than one OpenMP thread (scikit-learn's gradient boosting) a forked child can hang for good.
MUTMUT_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MLEM_NO_ANALYTICS": "true"}


def normalized(lines: Iterable[str]) -> tuple[str, ...]:
    """Changed lines compared as code: runs of whitespace count as one space."""
    return tuple(" ".join(line.split()) for line in lines if line.strip())


@dataclass(frozen=True)
class Equivalent:
    """The mutants of `function` (module.function or module.Class.method) that change the lines
    `diff` ("- old" lines, then "+ new" ones, as `show` prints them) cannot change what it does,
    for the reason `why`. `times`: how many of its mutants make that change (a line written
    twice in the function)."""

    function: str
    why: str
    diff: tuple[str, ...]
    times: int = 1

    def __init__(self, function: str, why: str, *diff: str, times: int = 1) -> None:
        for name, value in (("function", function), ("why", why), ("diff", normalized(diff)),
                            ("times", times)):  # fmt: skip
            object.__setattr__(self, name, value)


_HEADER_CASE = "urllib's Request capitalizes header names: the request sent is the same"


def header_case(function: str, line: str, header: str) -> list[Equivalent]:
    """The two mutants that write the header name `header` on `line` in lower or upper case."""
    quoted = f'"{header}"'
    return [
        Equivalent(function, _HEADER_CASE, f"- {line}",
                   "+ " + line.replace(quoted, f'"{case}"'))
        for case in (header.lower(), header.upper())
    ]  # fmt: skip


_RUNNER_HEADERS = (
    'url, headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}'
)

# Each reviewed with `mutmut show NAME` (or the diff this script prints).
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
_RUN_STATUS = (
    'with_run_status(report, env.get("RUN_CONCLUSION", "success"), env.get("RUN_URL", ""))'
)
_SAME_FIT = "the encoder's columns and its lookups come from one fit: always as many"
_SPEED_ONLY = "changes how fast, not what: the same predictions"
_FALSY = "None is as falsy as False where it is read"
_YAML_WIDTH = (
    "PyYAML folds a plain scalar only at a space past `width` columns: the manifests have no "
    "space between columns 54 and 176 (the long queries' words are longer, the settings are "
    "numbers and durations), so 80 (the default), 100 and 101 write the same text"
)
_UNSET_FALSE = "an unset variable: '' and None are both false to all(), the same empty URL"
_MANIFESTS = "return {name: HEADER + yaml.safe_dump(doc, sort_keys=False, width=100)"
EQUIVALENT: list[Equivalent] = [
    Equivalent(
        "gitml.release.canary.manifests",
        "PyYAML sorts a mapping's keys only when sort_keys is true: None keeps their order",
        f"- {_MANIFESTS}",
        "+ " + _MANIFESTS.replace("sort_keys=False", "sort_keys=None"),
    ),
    *(
        Equivalent(
            "gitml.release.canary.manifests",
            _YAML_WIDTH,
            f"- {_MANIFESTS}",
            "+ " + _MANIFESTS.replace("width=100", width),
        )
        for width in ("width=None", "", "width=101")
    ),
    *(
        Equivalent(
            "gitml.monitoring.notify.run_url",
            _UNSET_FALSE,
            f"- {line}",
            "+ " + line.replace(', "")', default),
        )
        for line in (
            'parts = [env.get(name, "") for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY")]',
            'run_id = env.get("GITHUB_RUN_ID", "")',
        )
        for default in (", None)", ", )")
    ),
    *(
        Equivalent(
            "gitml.pipeline.train.check_loss",
            "no loss set: str() of '', None and 'XXXX' all lack 'poisson'",
            '- if "poisson" in str(hyperparams.get(key, "")) and (target < 0).any():',
            f'+ if "poisson" in str(hyperparams.get(key, {default})) and (target < 0).any():',
        )
        for default in ("None", "", '"XXXX"')
    ),
    *header_case("gitml.pull_requests.runner.get", _RUNNER_HEADERS, "Authorization"),
    *header_case("gitml.pull_requests.runner.get", _RUNNER_HEADERS, "Accept"),
    Equivalent(
        "gitml.serving.batching.Batcher.__init__",
        _FALSY,
        "- self._busy = False # a leader is predicting",
        "+ self._busy = None # a leader is predicting",
    ),
    Equivalent(
        "gitml.serving.batching.Batcher._run",
        _FALSY,
        "- self._busy = False",
        "+ self._busy = None",
    ),
    Equivalent(
        "gitml.serving.batching._Waiting.__init__",
        "result is read only after _run set it, or raised the call's error instead",
        "- self.result: list[Any] = []",
        "+ self.result: list[Any] = None",
    ),
    Equivalent(
        "gitml.serving.compiled._one_hot",
        _SAME_FIT,
        "- for column, lookup in zip(columns, lookups, strict=True):",
        "+ for column, lookup in zip(columns, lookups, strict=None):",
    ),
    Equivalent(
        "gitml.serving.compiled._one_hot",
        _SAME_FIT,
        "- for column, lookup in zip(columns, lookups, strict=True):",
        "+ for column, lookup in zip(columns, lookups, ):",
    ),
    Equivalent(
        "gitml.serving.compiled._one_hot",
        _SAME_FIT,
        "- for column, lookup in zip(columns, lookups, strict=True):",
        "+ for column, lookup in zip(columns, lookups, strict=False):",
    ),
    Equivalent(
        "gitml.serving.compiled._one_hot",
        "fromiter's count only preallocates",
        "- dtype=np.intp, count=rows,",
        "- ) # fmt: skip",
        "+ dtype=np.intp, ) # fmt: skip",
    ),
    Equivalent(
        "gitml.serving.compiled._one_hot",
        "an unseen level is any negative position",
        "- (lookup.get(value, -1) for value in np.asarray(column).tolist()),",
        "+ (lookup.get(value, -2) for value in np.asarray(column).tolist()),",
    ),
    Equivalent(
        "gitml.serving.compiled.compile_regressor",
        "astype(None) is float64",
        "- matrix = matrix.astype(np.float32).astype(np.float64)",
        "+ matrix = matrix.astype(np.float32).astype(None)",
    ),
    Equivalent(
        "gitml.serving.compiled._tree_walker",
        _SPEED_ONLY,
        "- return lambda matrix: treelite.gtil.predict(trees, matrix, nthread=1)",
        "+ return lambda matrix: treelite.gtil.predict(trees, matrix, )",
    ),
    Equivalent(
        "gitml.dataset.clean",
        _UNIT_ALIAS,
        '- + pd.to_timedelta(raw["day"] - 1, unit="D")',
        '+ + pd.to_timedelta(raw["day"] - 1, unit="d")',
    ),
    Equivalent(
        "gitml.dataset.clean",
        _UNIT_ALIAS,
        '- + pd.to_timedelta(raw["hr"], unit="h")',
        '+ + pd.to_timedelta(raw["hr"], unit="H")',
    ),
    Equivalent(
        "gitml.pull_requests.comment.main",
        _PUBLISH_DEFAULT,
        '- publish = same_repo and env.get("CML_PUBLISH", "true") != "false"',
        '+ publish = same_repo and env.get("CML_PUBLISH", None) != "false"',
    ),
    Equivalent(
        "gitml.pull_requests.comment.main",
        _PUBLISH_DEFAULT,
        '- publish = same_repo and env.get("CML_PUBLISH", "true") != "false"',
        '+ publish = same_repo and env.get("CML_PUBLISH", ) != "false"',
    ),
    Equivalent(
        "gitml.pull_requests.comment.main",
        _PUBLISH_DEFAULT,
        '- publish = same_repo and env.get("CML_PUBLISH", "true") != "false"',
        '+ publish = same_repo and env.get("CML_PUBLISH", "XXtrueXX") != "false"',
    ),
    *(
        Equivalent(
            "gitml.pull_requests.comment.main",
            _NO_RUN_URL,
            f"- {_RUN_STATUS}",
            "+ " + _RUN_STATUS.replace('env.get("RUN_URL", "")', f'env.get("RUN_URL", {default})'),
        )
        for default in ("None", "")
    ),
    Equivalent(
        "gitml.pull_requests.comment.main",
        _CHECK_DEFAULT,
        "- posted = subprocess.run(cml_command(comment, number, publish, repo_url), check=False)",
        "+ posted = subprocess.run(cml_command(comment, number, publish, repo_url), check=None)",
    ),
    Equivalent(
        "gitml.pull_requests.comment.main",
        _CHECK_DEFAULT,
        "- posted = subprocess.run(cml_command(comment, number, publish, repo_url), check=False)",
        "+ posted = subprocess.run(cml_command(comment, number, publish, repo_url), )",
    ),
    Equivalent(
        "gitml.pull_requests.comment.main",
        _GET_DEFAULT,
        '- pr = api(env, "GET", f"/pulls/{int(claimed)}") if claimed.strip().isdigit() else {}',
        '+ pr = api(env, None, f"/pulls/{int(claimed)}") if claimed.strip().isdigit() else {}',
    ),
    Equivalent(
        "gitml.pull_requests.comment.all_comments",
        _GET_DEFAULT,
        '- batch = api(env, "GET", f"/issues/{number}/comments?per_page={PAGE}&page={page}")',
        '+ batch = api(env, None, f"/issues/{number}/comments?per_page={PAGE}&page={page}")',
    ),
    *header_case(
        "gitml.pull_requests.comment.api",
        'headers={"Authorization": f"Bearer {env[\'REPO_TOKEN\']}",',
        "Authorization",
    ),
    *header_case(
        "gitml.pull_requests.comment.api", '"Accept": "application/vnd.github+json"},', "Accept"
    ),
    Equivalent(
        "gitml.pull_requests.comment.stale_reports",
        "a comment without a body: neither '' nor 'XXXX' holds the watermark",
        "- reports = [i for i, c in enumerate(comments) if "
        'WATERMARK_PATTERN.search(c.get("body") or "")]',
        "+ reports = [i for i, c in enumerate(comments) if "
        'WATERMARK_PATTERN.search(c.get("body") or "XXXX")]',
    ),
    Equivalent(
        "gitml.pull_requests.comment.main",
        _PUBLISH_DEFAULT,
        '- publish = same_repo and env.get("CML_PUBLISH", "true") != "false"',
        '+ publish = same_repo and env.get("CML_PUBLISH", "TRUE") != "false"',
    ),
    Equivalent(
        "gitml.pull_requests.report.git_show",
        _CHECK_DEFAULT,
        '- ["git", "show", f"{rev}:{path}"], cwd=cwd, capture_output=True, text=True, check=False',
        '+ ["git", "show", f"{rev}:{path}"], cwd=cwd, capture_output=True, text=True, check=None',
    ),
    Equivalent(
        "gitml.pull_requests.report.git_show",
        _CHECK_DEFAULT,
        '- ["git", "show", f"{rev}:{path}"], cwd=cwd, capture_output=True, text=True, check=False',
        "- )",
        '+ ["git", "show", f"{rev}:{path}"], cwd=cwd, capture_output=True, text=True, )',
    ),
    Equivalent(
        "gitml.pull_requests.report.command_output",
        _CHECK_DEFAULT,
        "- result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)",
        "+ result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=None)",
    ),
    Equivalent(
        "gitml.pull_requests.report.command_output",
        _CHECK_DEFAULT,
        "- result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)",
        "+ result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, )",
    ),
    *(
        Equivalent(
            "gitml.release.registry.checked_stage_tag",
            _CHECK_DEFAULT,
            "- check=False) # fmt: skip",
            f"+ {check}) # fmt: skip",
        )
        for check in ("check=None", "")
    ),
    Equivalent(
        "gitml.pull_requests.report.runner_section",
        _UNKNOWN_KIND,
        '- kind = env.get("RUNNER_KIND", "local")',
        '+ kind = env.get("RUNNER_KIND", None)',
    ),
    Equivalent(
        "gitml.pull_requests.report.runner_section",
        _UNKNOWN_KIND,
        '- kind = env.get("RUNNER_KIND", "local")',
        '+ kind = env.get("RUNNER_KIND", )',
    ),
    Equivalent(
        "gitml.pull_requests.report.runner_section",
        _UNKNOWN_KIND,
        '- kind = env.get("RUNNER_KIND", "local")',
        '+ kind = env.get("RUNNER_KIND", "XXlocalXX")',
    ),
    Equivalent(
        "gitml.pull_requests.report.runner_section",
        _UNKNOWN_KIND,
        '- kind = env.get("RUNNER_KIND", "local")',
        '+ kind = env.get("RUNNER_KIND", "LOCAL")',
    ),
    Equivalent(
        "gitml.pull_requests.report.runner_section",
        _NO_REASON,
        '- reason = env.get("RUNNER_REASON", "")',
        '+ reason = env.get("RUNNER_REASON", None)',
    ),
    Equivalent(
        "gitml.pull_requests.report.runner_section",
        _NO_REASON,
        '- reason = env.get("RUNNER_REASON", "")',
        '+ reason = env.get("RUNNER_REASON", )',
    ),
    Equivalent(
        "gitml.pull_requests.report.verdict",
        "low >= 0 is reached only when 0 is outside [low, high], where low >= 0 means low > 0",
        "- improved = (low > 0) == higher_is_better",
        "+ improved = (low >= 0) == higher_is_better",
    ),
    Equivalent(
        "gitml.pull_requests.comment.verify_pr",
        _VERIFIED_HEAD,
        '- if (pr.get("head", {}).get("repo") or {}).get("full_name") != head_repo:',
        '+ if (pr.get("head", None).get("repo") or {}).get("full_name") != head_repo:',
    ),
    Equivalent(
        "gitml.pull_requests.comment.verify_pr",
        _VERIFIED_HEAD,
        '- if (pr.get("head", {}).get("repo") or {}).get("full_name") != head_repo:',
        '+ if (pr.get("head", ).get("repo") or {}).get("full_name") != head_repo:',
    ),
    Equivalent(
        "gitml.pipeline.evaluate.seasonal_baseline",
        _OBSERVED,
        '- means = train.groupby(keys, observed=True)[target].mean().rename("baseline")',
        '+ means = train.groupby(keys, observed=None)[target].mean().rename("baseline")',
    ),
    Equivalent(
        "gitml.pipeline.evaluate.seasonal_baseline",
        _OBSERVED,
        '- means = train.groupby(keys, observed=True)[target].mean().rename("baseline")',
        '+ means = train.groupby(keys, )[target].mean().rename("baseline")',
    ),
    Equivalent(
        "gitml.pipeline.evaluate.seasonal_baseline",
        _OBSERVED,
        '- means = train.groupby(keys, observed=True)[target].mean().rename("baseline")',
        '+ means = train.groupby(keys, observed=False)[target].mean().rename("baseline")',
    ),
    Equivalent(
        "gitml.pipeline.evaluate.evaluate",
        "groupby(as_index=None) behaves as as_index=False",
        '- "error_by_group": errors.groupby("group", as_index=False).mean().round(3),',
        '+ "error_by_group": errors.groupby("group", as_index=None).mean().round(3),',
    ),
    Equivalent(
        "gitml.pipeline.validate.describe_failures",
        "groupby(sort=None) is falsy: groups keep their first-seen order, as with sort=False",
        '- for (column, check), group in cases.groupby(["column", "check"], sort=False):',
        '+ for (column, check), group in cases.groupby(["column", "check"], sort=None):',
    ),
    Equivalent(
        "gitml.pipeline.features.build_preprocessor",
        _NAMES,
        '- "categorical",',
        '+ "XXcategoricalXX",',
    ),
    Equivalent(
        "gitml.pipeline.features.build_preprocessor",
        _NAMES,
        '- "categorical",',
        '+ "CATEGORICAL",',
    ),
    Equivalent(
        "gitml.pipeline.features.build_preprocessor",
        _NAMES,
        '- ("numeric", make_pipeline(SimpleImputer(strategy="median")), list(params["numeric"])),',
        '+ ("XXnumericXX", make_pipeline(SimpleImputer(strategy="median")), '
        'list(params["numeric"])),',
    ),
    Equivalent(
        "gitml.pipeline.features.build_preprocessor",
        _NAMES,
        '- ("numeric", make_pipeline(SimpleImputer(strategy="median")), list(params["numeric"])),',
        '+ ("NUMERIC", make_pipeline(SimpleImputer(strategy="median")), list(params["numeric"])),',
    ),
    Equivalent(
        "gitml.release.registry.run",
        _CHECK_DEFAULT,
        "- return subprocess.run(command, capture_output=True, text=True, env=dict(env), "
        "check=False)",
        "+ return subprocess.run(command, capture_output=True, text=True, env=dict(env), "
        "check=None)",
    ),
    Equivalent(
        "gitml.release.registry.run",
        _CHECK_DEFAULT,
        "- return subprocess.run(command, capture_output=True, text=True, env=dict(env), "
        "check=False)",
        "+ return subprocess.run(command, capture_output=True, text=True, env=dict(env), )",
    ),
    Equivalent(
        "gitml.release.registry.image_digest",
        _CHECK_DEFAULT,
        '- "--format", "{{json .Manifest}}"], capture_output=True, text=True, check=False,',
        '+ "--format", "{{json .Manifest}}"], capture_output=True, text=True, check=None,',
    ),
    Equivalent(
        "gitml.release.registry.image_digest",
        _CHECK_DEFAULT,
        '- "--format", "{{json .Manifest}}"], capture_output=True, text=True, check=False,',
        "- ) # fmt: skip",
        '+ "--format", "{{json .Manifest}}"], capture_output=True, text=True, ) # fmt: skip',
    ),
    Equivalent(
        "gitml.release.registry.image_name",
        "the whole image name is lowercased afterwards",
        '- registry = env.get("REGISTRY") or "ghcr.io"',
        '+ registry = env.get("REGISTRY") or "GHCR.IO"',
    ),
    Equivalent(
        "gitml.release.registry.checkout_git_environment",
        "git config's section and key names ignore case",
        '- identity = bool(run(["git", "config", "user.email"], env).stdout.strip())',
        '+ identity = bool(run(["git", "config", "USER.EMAIL"], env).stdout.strip())',
    ),
    Equivalent(
        "gitml.schema._pandera_column",
        "a category column's dtype left unchecked: its isin check refuses every non-string",
        "- return pa.Column(str, checks, nullable=spec.nullable)",
        "+ return pa.Column(None, checks, nullable=spec.nullable)",
    ),
    Equivalent(
        "gitml.schema._pandera_column",
        "pandera's nullable=None is its default, False",
        "- return pa.Column(str, checks, nullable=spec.nullable)",
        "+ return pa.Column(str, checks, nullable=None)",
    ),
    Equivalent(
        "gitml.schema._pandera_column",
        "pandera's nullable default is False",
        "- return pa.Column(str, checks, nullable=spec.nullable)",
        "+ return pa.Column(str, checks, )",
    ),
    Equivalent(
        "gitml.pull_requests.runner.choose",
        "labels '' and None are both not a list: the same error",
        "- labels = None",
        '+ labels = ""',
    ),
    Equivalent(
        "gitml.pull_requests.runner.main",
        "a missing token: '' and None are both false",
        '- token = env.get("RUNNER_CHECK_TOKEN", "")',
        '+ token = env.get("RUNNER_CHECK_TOKEN", None)',
    ),
    Equivalent(
        "gitml.pull_requests.runner.main",
        "a missing token: '' and None are both false",
        '- token = env.get("RUNNER_CHECK_TOKEN", "")',
        '+ token = env.get("RUNNER_CHECK_TOKEN", )',
    ),
    Equivalent(
        "gitml.serving.predlog._read_jsonl",
        "codec names are case-insensitive",
        '- with open(path, encoding="utf-8") as handle:',
        '+ with open(path, encoding="UTF-8") as handle:',
    ),
    Equivalent(
        "gitml.serving.predlog.write_actuals",
        "codec names are case-insensitive",
        '- with open(path, "a", encoding="utf-8") as handle:',
        '+ with open(path, "a", encoding="UTF-8") as handle:',
    ),
    Equivalent(
        "gitml.serving.predlog.read_predictions",
        "merge(on=None) joins on the common columns, which are exactly request_id and row",
        '- return frame.merge(read_actuals(actuals_dir), on=KEY, how="left")',
        '+ return frame.merge(read_actuals(actuals_dir), on=None, how="left")',
    ),
    Equivalent(
        "gitml.serving.predlog.read_predictions",
        "merge without on= joins on the common columns, which are exactly request_id and row",
        '- return frame.merge(read_actuals(actuals_dir), on=KEY, how="left")',
        '+ return frame.merge(read_actuals(actuals_dir), how="left")',
    ),
    Equivalent(
        "gitml.serving.predlog.read_predictions",
        "float() reads 'NAN' as 'nan'",
        '- return frame.assign(**{ACTUAL: float("nan")})',
        '+ return frame.assign(**{ACTUAL: float("NAN")})',
    ),
    Equivalent(
        "gitml.monitoring.feedback.labelled_rows",
        "tz_convert(None) converts to UTC and drops the zone, as the tz_localize(None) after it",
        "- dataset.TIME: labelled[EVENT_TIME].dt.tz_convert(UTC).dt.tz_localize(None),",
        "+ dataset.TIME: labelled[EVENT_TIME].dt.tz_convert(None).dt.tz_localize(None),",
    ),
    Equivalent(
        "gitml.release.gate.judge",
        "numpy computes the MAE of an int target as of a float",
        "- actual = window[TARGET].to_numpy(dtype=float)",
        "+ actual = window[TARGET].to_numpy(dtype=None)",
    ),
    Equivalent(
        "gitml.release.gate.judge",
        "other labels, the same grouping by day",
        '- days = window[TIME].dt.strftime("%Y-%m-%d").to_numpy()',
        '+ days = window[TIME].dt.strftime("XX%Y-%m-%dXX").to_numpy()',
    ),
    Equivalent(
        "gitml.release.gate.judge",
        "%y and %Y group alike within a century",
        '- days = window[TIME].dt.strftime("%Y-%m-%d").to_numpy()',
        '+ days = window[TIME].dt.strftime("%y-%m-%d").to_numpy()',
    ),
    Equivalent(
        "gitml.pipeline.validate.with_feedback",
        "the index is rebuilt by reset_index(drop=True) after the sort",
        "- merged = pd.concat([table, feedback], ignore_index=True)",
        "+ merged = pd.concat([table, feedback], ignore_index=None)",
    ),
    Equivalent(
        "gitml.pipeline.validate.with_feedback",
        "the index is rebuilt by reset_index(drop=True) after the sort",
        "- merged = pd.concat([table, feedback], ignore_index=True)",
        "+ merged = pd.concat([table, feedback], )",
    ),
    Equivalent(
        "gitml.pipeline.validate.with_feedback",
        "the index is rebuilt by reset_index(drop=True) after the sort",
        "- merged = pd.concat([table, feedback], ignore_index=True)",
        "+ merged = pd.concat([table, feedback], ignore_index=False)",
    ),
    Equivalent(
        "gitml.serving.predlog.PredictionLog.append",
        "json.dumps(allow_nan=None) is falsy: NaN is refused as with False",
        '- json.dumps({**base, "row": i, **row, PREDICTION: float(pred)}, allow_nan=False) + '
        '"\\n"',
        '+ json.dumps({**base, "row": i, **row, PREDICTION: float(pred)}, allow_nan=None) + "\\n"',
    ),
]


def status(code: int | None) -> str:
    return CAUGHT.get(code) or NOT_CAUGHT.get(code) or f"suspicious (exit {code})"  # type: ignore[arg-type]


def results(mutants: Path = MUTANTS) -> dict[str, dict[str, int | None]]:
    """Module -> {mutant name: exit code (None: not run)}, from mutmut's result files."""
    found = {}
    for meta in sorted((mutants / "src").rglob("*.py.meta")):
        module = meta.relative_to(mutants / "src").with_suffix("").with_suffix("")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            found[".".join(module.parts)] = codes
    return found


def function_of(name: str) -> str:
    """The function a mutant changes, from mutmut's name for it: `gitml.x.x_main__mutmut_3` is
    `gitml.x.main`, `gitml.x.xǁBatcherǁ_run__mutmut_2` is `gitml.x.Batcher._run`."""
    module, _, mangled = name.rpartition(".")
    base = mangled.rsplit("__mutmut_", 1)[0]
    if base.startswith("xǁ"):
        _, owner, method = base.split("ǁ")
        return f"{module}.{owner}.{method}"
    return f"{module}.{base.removeprefix('x_')}"


@functools.cache
def functions(path: Path) -> dict[str, str]:
    """Source of every function in a module of mutmut's copy, by name."""
    source = path.read_text()
    lines = source.splitlines()
    return {
        node.name: "\n".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef)
    }


def changed(name: str, mutants: Path = MUTANTS) -> tuple[str, ...]:
    """The lines a mutant changes ("- old", then "+ new"), read from the mutated module, where
    mutmut keeps each mutant beside the original as a function of its own."""
    module, _, function = name.rpartition(".")
    original = function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
    bodies = functions((mutants / "src" / Path(*module.split("."))).with_suffix(".py"))
    plain = function_of(name).rsplit(".", 1)[1]  # the def lines, read with the function's name
    before = bodies.get(original, "").replace(original, plain, 1).splitlines()
    after = bodies.get(function, "").replace(function, plain, 1).splitlines()
    diff = difflib.unified_diff(before, after, lineterm="", n=0)
    return normalized(
        f"{line[0]} {line[1:]}"
        for line in diff
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def show(name: str, mutants: Path = MUTANTS) -> str:
    """What `mutmut show NAME` prints in full, cut to the changed lines."""
    return "\n".join(f"        {line}" for line in changed(name, mutants))


def excuses(
    found: dict[str, dict[str, int | None]],
    equivalent: Iterable[Equivalent],
    mutants: Path = MUTANTS,
) -> tuple[dict[str, Equivalent], list[str]]:
    """(the surviving mutants the entries excuse, each with its entry; what is wrong with the
    entries). An entry is wrong when no mutant makes its change any more (the code changed:
    recheck it with `mutmut show`), when a different number of mutants make it, when a test
    kills its mutant (not equivalent), or when it is listed twice."""
    entries = list(equivalent)
    wanted = {entry.function for entry in entries}
    making: dict[tuple[str, tuple[str, ...]], list[tuple[str, int | None]]] = {}
    for codes in found.values():
        for name, code in codes.items():
            if function_of(name) in wanted:
                key = (function_of(name), changed(name, mutants))
                making.setdefault(key, []).append((name, code))
    excused: dict[str, Equivalent] = {}
    problems = [
        f"listed {count} times: {function} {' / '.join(diff)}"
        for (function, diff), count in Counter((e.function, e.diff) for e in entries).items()
        if count > 1
    ]
    for entry in entries:
        where = f"{entry.function}: {' / '.join(entry.diff)}"
        made = making.get((entry.function, entry.diff), [])
        if not made:
            problems.append(f"stale: no mutant of {where}")
            continue
        if len(made) != entry.times:
            problems.append(f"{len(made)} mutants (the entry says {entry.times}) make {where}")
        killed = [name for name, code in made if code in KILLED]
        if killed:
            problems.append(f"not equivalent, a test kills {', '.join(killed)}: {where}")
        excused.update({name: entry for name, code in made if code not in CAUGHT})
    return excused, problems


@dataclass(frozen=True)
class Score:
    module: str
    mutants: int
    caught: int
    equivalent: int
    left: dict[str, str]  # survivor -> its status

    @property
    def score(self) -> float:
        counted = self.mutants - self.equivalent
        return self.caught / counted if counted else 1.0


def scores(found: dict[str, dict[str, int | None]], excused: dict[str, Equivalent]) -> list[Score]:
    rows = []
    for module, codes in found.items():
        counted = {name: code for name, code in codes.items() if name not in excused}
        left = {name: status(code) for name, code in counted.items() if code not in CAUGHT}
        caught = sum(code in CAUGHT for code in counted.values())
        rows.append(Score(module, len(codes), caught, len(codes) - len(counted), left))
    return rows


def table(rows: list[Score], markdown: bool = False) -> str:
    header = ("module", "mutants", "killed", "equivalent", "left", "score")
    lines = [[r.module, str(r.mutants), str(r.caught), str(r.equivalent), str(len(r.left)),
              f"{r.score:.1%}"] for r in rows]  # fmt: skip
    if markdown:
        return "\n".join(
            f"| {' | '.join(cells)} |" for cells in (header, ("---",) + ("---:",) * 5, *lines)
        )
    width = max(len(header[0]), *(len(r.module) for r in rows))
    return "\n".join(
        f"{cells[0]:{width}s} "
        + " ".join(f"{c:>{len(h)}s}" for c, h in zip(cells[1:], header[1:], strict=True))
        for cells in (header, *lines)
    )


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=PROJ_ROOT, capture_output=True, text=True,
                          check=False)  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else ""


def describe_run(mutants: Path = MUTANTS) -> str:
    """Which commit the results are of, and whether they are one run's."""
    path = mutants / RUN_FILE
    if not path.is_file():
        return (
            "mutmut was run directly (no record of the run): the commit it tested is unknown; "
            f"this checkout is at {git('rev-parse', 'HEAD')[:12] or 'no commit'}"
        )
    run = json.loads(path.read_text())
    changes = " with uncommitted changes" if run["uncommitted_changes"] else ""
    line = (
        f"one run at commit {run['commit'][:12]}{changes}, started {run['started']}, "
        f"{run['jobs']} mutants at a time, {run['mutants']}: {run['seconds']:.0f} s"
    )
    later = sorted(
        ".".join(meta.relative_to(mutants / "src").with_suffix("").with_suffix("").parts)
        for meta in (mutants / "src").rglob("*.py.meta")
        if meta.stat().st_mtime > path.stat().st_mtime
    )
    if later:
        line += f"\nnot one run: mutmut ran these again since: {', '.join(later)}"
    return line


def run_mutmut(jobs: int, survivors: bool) -> None:
    names = []
    if survivors:
        names = [n for codes in results().values() for n, c in codes.items() if c not in CAUGHT]
    started = time.monotonic()
    record = {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain")),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "jobs": jobs,
        "mutants": "the survivors of the last run again" if survivors else "all",
    }
    run = subprocess.run(
        [str(Path(sys.executable).parent / "mutmut"), "run", "--max-children", str(jobs),
         *names],
        cwd=PROJ_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        check=False, env=MUTMUT_ENV,
    )  # fmt: skip
    if run.returncode != 0:
        sys.exit(f"mutation: mutmut run failed:\n{run.stderr[-3000:]}")
    record["seconds"] = round(time.monotonic() - started)
    (MUTANTS / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants at once")
    parser.add_argument("--report-only", action="store_true", help="do not run mutmut again")
    parser.add_argument(
        "--survivors", action="store_true",
        help="retest only the mutants the last run left (after adding tests): quicker, but "
        "the figure of record is a whole run",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.report_only:
        run_mutmut(args.jobs, args.survivors)
    found = results(MUTANTS)
    if not found:
        sys.exit("mutation: no mutmut results under mutants/ (run without --report-only)")
    excused, problems = excuses(found, EQUIVALENT, MUTANTS)
    rows = scores(found, excused)
    print(describe_run(MUTANTS))
    print(f"\n{table(rows)}")
    totals = Counter(status(code) for codes in found.values() for code in codes.values())
    print(f"\nall mutants: {dict(totals)}")
    survivors = {name: why for row in rows for name, why in row.left.items()}
    if survivors:
        print("\nsurvivors (mutmut show NAME for the whole diff):")
        for name, why in survivors.items():
            print(f"  {name}: {why}\n{show(name, MUTANTS)}")
    if excused:
        print("\nequivalent mutants (left out of the score):")
        for name, entry in excused.items():
            print(f"  {name}: {entry.why}\n{show(name, MUTANTS)}")
    if "GITHUB_STEP_SUMMARY" in os.environ:  # the scheduled workflow's run page
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as summary:
            run = describe_run(MUTANTS)
            summary.write(f"## Mutation testing\n\n{run}\n\n{table(rows, markdown=True)}\n")
    failures = [f"under {GOAL:.0%}: {row.module}" for row in rows if row.score < GOAL]
    failures += [f"EQUIVALENT entry {problem}" for problem in problems]
    if failures:
        sys.exit("\nmutation: " + "\nmutation: ".join(failures))


if __name__ == "__main__":
    main()
