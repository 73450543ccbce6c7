"""The fault zoo's quick subset (benchmarks/zoo): one seeded fault per step plus healthy controls, run
through full-report exactly as benchmarks/run_zoo.py does, so a change that breaks a diagnosis fails here.

The full zoo (every scenario, several seeds, recall/precision per code) is `python benchmarks/run_zoo.py`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_zoo import run_one, summarize  # noqa: E402
from benchmarks.zoo.scenarios import ALWAYS_INFO, QUICK, SCENARIOS, by_name  # noqa: E402

QUICK_BUDGET_S = 30.0


def test_the_zoo_covers_every_code_that_a_spec_and_data_can_provoke():
    from nn_doctor.catalogue import CATALOGUE
    from benchmarks.zoo.modern import MODERN     # the transformer-era holdout scenarios
    expected = set().union(*(s.expected for s in list(SCENARIOS) + MODERN))
    gpu_or_user_step = {"R501", "G408"}     # out of memory needs a GPU; G408 needs a user training step
    assert set(CATALOGUE) - gpu_or_user_step - expected == set()
    assert len(SCENARIOS) >= 45 and len({s.name for s in SCENARIOS}) == len(SCENARIOS)
    healthy = [s for s in SCENARIOS if s.healthy]
    assert len(healthy) >= 12 and all(s.expected_first_fix is None and s.expected == ALWAYS_INFO for s in healthy)
    for s in SCENARIOS:
        if not s.healthy:
            assert s.expected_first_fix is None or s.expected_first_fix in s.expected, s.name
    two = [s for s in SCENARIOS if "two-faults" in s.tags]
    assert len(two) >= 3
    for s in two:                           # the first fix is the earlier step's fault
        steps = sorted({"DMHGR".index(c[0]) for c in s.expected})
        assert len(steps) == 2 and "DMHGR".index(s.expected_first_fix[0]) == steps[0], s.name
    # what is not the fault varies too
    tags = set().union(*(s.tags for s in SCENARIOS))
    assert {"multiclass", "binary", "regression", "table", "image", "sequence", "conv", "lstm", "residual",
            "sgd", "user-model", "generated"} <= tags


def test_the_holdout_part_is_separate_and_sourced():
    from benchmarks.zoo.holdout import HOLDOUT
    from nn_doctor.catalogue import CATALOGUE
    assert all(s.part == "dev" for s in SCENARIOS) and all(s.part == "holdout" for s in HOLDOUT)
    assert not {s.name for s in SCENARIOS} & {s.name for s in HOLDOUT}
    assert len({s.name for s in HOLDOUT}) == len(HOLDOUT)
    faults = [s for s in HOLDOUT if not s.healthy]
    assert len(faults) >= 30 and sum(s.healthy for s in HOLDOUT) >= 3
    for s in faults:
        assert s.expected and s.expected <= set(CATALOGUE), s.name
        assert s.expected_first_fix in s.expected, s.name
        assert any(src in s.source for src in ("Theia", "defects4ML", "TrainCheck", "SO", "forum")), s.name
    for s in HOLDOUT + SCENARIOS:
        assert s.fix is None or (isinstance(s.fix, dict) and s.fix), s.name
        assert not (s.healthy and s.fix), s.name
    # what is not the fault varies in the holdout too
    tags = set().union(*(s.tags for s in HOLDOUT))
    assert {"multiclass", "binary", "regression", "table", "image", "sequence", "conv", "lstm", "gru", "sgd",
            "user-model", "generated"} <= tags


def test_the_fresh_batch_is_split_by_alternation_and_joins_its_parts():
    """fresh.py was split when written (1st holdout, 2nd dev, ...), not by how nn-doctor does on it."""
    from benchmarks.run_zoo import DEV_PART, HOLDOUT_PART
    from benchmarks.zoo.fresh import FRESH
    from benchmarks.zoo.holdout import HOLDOUT
    from nn_doctor.catalogue import CATALOGUE
    faults = [s for s in FRESH if not s.healthy]
    assert [s.part for s in faults] == ["holdout", "dev"] * (len(faults) // 2)
    names = [s.name for s in SCENARIOS + HOLDOUT + FRESH]
    assert len(names) == len(set(names))
    assert {s.name for s in FRESH if s.part == "dev"} <= {s.name for s in DEV_PART}
    assert {s.name for s in FRESH if s.part == "holdout"} <= {s.name for s in HOLDOUT_PART}
    for s in faults:
        assert s.expected <= set(CATALOGUE) and s.expected_first_fix in s.expected and s.fix, s.name
        assert any(src in s.source for src in ("DeepDiagnosis", "DeepFD", "UMLAUT", "NeuraLint", "DeepLocalize",
                                               "SO")), s.name


def test_known_fixes_write_a_spec_the_plain_trainer_reads(tmp_path):
    from benchmarks.plain_trainer import read_spec
    from benchmarks.zoo.fresh import FRESH
    from benchmarks.zoo.holdout import HOLDOUT
    from benchmarks.zoo.scenarios import apply_fix
    from nn_doctor.data import load_from_spec
    for s in [x for x in SCENARIOS + HOLDOUT + FRESH if x.fix]:
        d = tmp_path / s.name
        d.mkdir()
        fixed = apply_fix(s.build(d, 0), s.fix)
        spec, extras = read_spec(fixed)
        load_from_spec(spec)                     # the data and any feature list the fix names exist
        for dotted, value in s.fix.items():
            if dotted.startswith("data.") and dotted.split(".")[1] in extras:
                assert extras[dotted.split(".")[1]] == value, s.name


def test_the_quick_subset_has_one_fault_per_step_and_two_healthy():
    zoo = by_name()
    quick = [zoo[n] for n in QUICK]
    assert sum(s.healthy for s in quick) >= 2
    assert {s.step for s in quick if not s.healthy} >= {1, 2, 3, 4}   # step 5 (R5xx) is checked in the healthy ones


@pytest.fixture(scope="module")
def quick_runs():
    zoo = by_name()
    return [run_one(zoo[n], 0, QUICK_BUDGET_S) for n in QUICK]


@pytest.mark.parametrize("name", QUICK)
def test_quick_scenario_diagnosis(quick_runs, name):
    run = next(r for r in quick_runs if r.scenario == name)
    assert run.crash is None
    assert run.first_fix == run.expected_first_fix, f"{name}: first_fix {run.first_fix}, found {run.found}"
    assert run.missing == [], f"{name}: missing {run.missing}, found {run.found}"
    assert run.unexpected == {}, f"{name}: unexpected {run.unexpected}"
    if run.healthy:
        assert run.errors == [] and run.verdict == "healthy"


def test_quick_summary(quick_runs):
    s = summarize(quick_runs, [by_name()[n] for n in QUICK])
    assert s["first_fix_accuracy"] == 1.0 and s["healthy_error_runs"] == 0
    assert all(v["recall"] == 1.0 for v in s["per_code"].values() if v["recall"] is not None)
    assert all(v["precision"] in (None, 1.0) for v in s["per_code"].values())
