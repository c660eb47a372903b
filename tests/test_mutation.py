"""`make mutation`'s report (benchmarks/mutation.py), on mutmut results made up here: an
equivalent mutant is excused by what it changes, and an excuse that no longer matches the code
fails the run."""

import json
import os
import time
from pathlib import Path

import pytest
from benchmarks import mutation
from benchmarks.mutation import EQUIVALENT, Equivalent, excuses, function_of, results

# A module as mutmut writes its mutated copy: the original and each mutant as functions.
MUTATED = """
def x_pay__mutmut_orig(amount, env):
    fee = env.get("FEE", "0")
    return amount + int(fee)


def x_pay__mutmut_1(amount, env):
    fee = env.get("FEE", None)
    return amount + int(fee)


def x_pay__mutmut_2(amount, env):
    fee = env.get("FEE", "0")
    return amount - int(fee)


def x_pay__mutmut_3(amount, env):
    fee = env.get("FEE", "0")
    return amount + int(None)


def x_refund__mutmut_orig(amount, reason=""):
    return -amount


def x_refund__mutmut_1(amount, reason="XXXX"):
    return -amount
"""
FEE_DEFAULT = ('- fee = env.get("FEE", "0")', '+ fee = env.get("FEE", None)')


def mutants_dir(tmp_path: Path, codes: dict[int, int | None], source: str = MUTATED) -> Path:
    """mutmut's output for one module, gitml.shop: its mutated copy and each mutant's exit code
    (0 survived, 1 killed, None not run)."""
    module = tmp_path / "mutants" / "src" / "gitml" / "shop.py"
    module.parent.mkdir(parents=True)
    module.write_text(source)
    by_key = {f"gitml.shop.x_pay__mutmut_{n}": code for n, code in codes.items()}
    Path(f"{module}.meta").write_text(json.dumps({"exit_code_by_key": by_key}))
    mutation.functions.cache_clear()
    return tmp_path / "mutants"


def test_an_entry_excuses_the_surviving_mutant_that_makes_its_change(tmp_path: Path) -> None:
    mutants = mutants_dir(tmp_path, {1: 0, 2: 1, 3: 1})
    entry = Equivalent("gitml.shop.pay", "a missing FEE fails either way", *FEE_DEFAULT)
    excused, problems = excuses(results(mutants), [entry], mutants)
    assert excused == {"gitml.shop.x_pay__mutmut_1": entry} and problems == []
    (row,) = mutation.scores(results(mutants), excused)
    assert (row.mutants, row.caught, row.equivalent, row.left, row.score) == (3, 2, 1, {}, 1.0)
    # whitespace inside a line is not part of the change
    spaced = Equivalent("gitml.shop.pay", "", '-  fee = env.get("FEE",  "0")', FEE_DEFAULT[1])
    assert excuses(results(mutants), [spaced], mutants) == (
        {"gitml.shop.x_pay__mutmut_1": spaced},
        [],
    )


def test_an_entry_whose_change_no_mutant_makes_is_stale_and_excuses_nothing(
    tmp_path: Path,
) -> None:
    # the function changed (the default fee is now "1"): the mutant makes another change
    mutants = mutants_dir(tmp_path, {1: 0, 2: 1, 3: 1}, MUTATED.replace('"0"', '"1"'))
    entry = Equivalent("gitml.shop.pay", "a missing FEE fails either way", *FEE_DEFAULT)
    excused, problems = excuses(results(mutants), [entry], mutants)
    assert excused == {}
    assert problems == [f"stale: no mutant of gitml.shop.pay: {' / '.join(FEE_DEFAULT)}"]
    (row,) = mutation.scores(results(mutants), excused)
    assert row.left == {"gitml.shop.x_pay__mutmut_1": "survived"}  # a survivor again
    # the same change in another function, or the mutant's number, is no match either
    other = Equivalent("gitml.shop.refund", "", *FEE_DEFAULT)
    assert excuses(results(mutants), [other], mutants)[0] == {}


def test_an_entry_whose_mutant_a_test_kills_is_not_equivalent(tmp_path: Path) -> None:
    mutants = mutants_dir(tmp_path, {1: 1, 2: 1, 3: 1})
    entry = Equivalent("gitml.shop.pay", "a missing FEE fails either way", *FEE_DEFAULT)
    excused, problems = excuses(results(mutants), [entry], mutants)
    assert excused == {}
    assert problems == [
        "not equivalent, a test kills gitml.shop.x_pay__mutmut_1: gitml.shop.pay: "
        + " / ".join(FEE_DEFAULT)
    ]


def test_a_changed_default_argument_is_a_change_of_the_def_line(tmp_path: Path) -> None:
    mutants = mutants_dir(tmp_path, {1: 0})
    meta = mutants / "src" / "gitml" / "shop.py.meta"
    meta.write_text(json.dumps({"exit_code_by_key": {"gitml.shop.x_refund__mutmut_1": 0}}))
    assert mutation.changed("gitml.shop.x_refund__mutmut_1", mutants) == (
        '- def refund(amount, reason=""):',
        '+ def refund(amount, reason="XXXX"):',
    )


def test_the_count_of_mutants_an_entry_expects_and_a_repeated_entry_are_checked(
    tmp_path: Path,
) -> None:
    mutants = mutants_dir(tmp_path, {1: 0, 2: 1, 3: 1})
    twice = Equivalent("gitml.shop.pay", "", *FEE_DEFAULT, times=2)
    _, problems = excuses(results(mutants), [twice], mutants)
    assert problems == [
        f"1 mutants (the entry says 2) make gitml.shop.pay: {' / '.join(FEE_DEFAULT)}"
    ]
    once = Equivalent("gitml.shop.pay", "", *FEE_DEFAULT)
    _, problems = excuses(results(mutants), [once, once], mutants)
    assert problems == [f"listed 2 times: gitml.shop.pay {' / '.join(FEE_DEFAULT)}"]


def test_the_run_fails_when_an_entrys_change_is_edited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mutants = mutants_dir(tmp_path, {1: 0, 2: 1, 3: 1})
    monkeypatch.setattr(mutation, "MUTANTS", mutants)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    entry = Equivalent("gitml.shop.pay", "a missing FEE fails either way", *FEE_DEFAULT)
    monkeypatch.setattr(mutation, "EQUIVALENT", [entry])
    mutation.main(["--report-only"])  # excused: 100 %, and nothing wrong
    assert "gitml.shop.x_pay__mutmut_1: a missing FEE fails either way" in capsys.readouterr().out
    edited = Equivalent("gitml.shop.pay", entry.why, FEE_DEFAULT[0], '+ fee = env.get("FEE", "")')
    monkeypatch.setattr(mutation, "EQUIVALENT", [edited])
    with pytest.raises(SystemExit) as failed:
        mutation.main(["--report-only"])
    assert "mutation: under 90%: gitml.shop" in str(failed.value)  # 2 of 3 caught
    assert "mutation: EQUIVALENT entry stale: no mutant of gitml.shop.pay" in str(failed.value)


@pytest.mark.parametrize(
    ("name", "function"),
    [("gitml.pipeline.train.x_fit__mutmut_3", "gitml.pipeline.train.fit"),
     ("gitml.serving.compiled.x__one_hot__mutmut_42", "gitml.serving.compiled._one_hot"),
     ("gitml.serving.batching.xǁBatcherǁ__init____mutmut_4", "gitml.serving.batching.Batcher.__init__"),
     ("gitml.serving.batching.xǁBatcherǁ_run__mutmut_12", "gitml.serving.batching.Batcher._run")],
)  # fmt: skip
def test_a_mutants_name_gives_the_function_it_changes(name: str, function: str) -> None:
    assert function_of(name) == function


def test_every_entry_names_a_function_and_a_change() -> None:
    for entry in EQUIVALENT:
        assert entry.function.startswith("gitml.") and entry.why, entry
        assert entry.diff and all(line[:2] in ("- ", "+ ") for line in entry.diff), entry


def test_the_report_names_the_commit_and_what_ran_since(tmp_path: Path) -> None:
    mutants = mutants_dir(tmp_path, {1: 0})
    assert "the commit it tested is unknown" in mutation.describe_run(mutants)
    record = {"commit": "0123456789abcdef", "uncommitted_changes": False, "jobs": 2,
              "started": "2026-12-05T10:00:00+00:00", "mutants": "all", "seconds": 1520}  # fmt: skip
    (mutants / mutation.RUN_FILE).write_text(json.dumps(record))
    meta = mutants / "src" / "gitml" / "shop.py.meta"
    os.utime(meta, (time.time() - 60, time.time() - 60))
    assert mutation.describe_run(mutants) == (
        "one run at commit 0123456789ab, started 2026-12-05T10:00:00+00:00, 2 mutants at a "
        "time, all: 1520 s"
    )
    meta.touch()  # `mutmut run "gitml.shop*"` afterwards
    assert mutation.describe_run(mutants).endswith(
        "\nnot one run: mutmut ran these again since: gitml.shop"
    )
