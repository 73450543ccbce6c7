"""The catalogue drives what runs: `--select D1` trains nothing, `--select H300` runs only the lr search
(checks.PROBES_NEEDED, derived from what each check declares, read by plan.py). Probes are counted where
the executor runs them."""
from __future__ import annotations

from pathlib import Path

import pytest

import nn_doctor.probe as executor_module   # the executor imports run_probe from here when a round runs
from nn_doctor.catalogue import CATALOGUE
from nn_doctor.checks import PROBES_NEEDED, REGISTRY, load_checks
from nn_doctor.doctor import Options, full_report

ROOT = Path(__file__).resolve().parents[1]
WINE = str(ROOT / "configs" / "wine.yaml")


@pytest.fixture
def probes_run(monkeypatch):
    names: list[str] = []
    real = executor_module.run_probe

    def counting(spec, data, settings, overrides=None):
        names.append(settings.name)
        return real(spec, data, settings, overrides)
    monkeypatch.setattr(executor_module, "run_probe", counting)
    return names


def test_select_data_codes_trains_nothing(probes_run):
    report = full_report(Options(config=WINE, select=["D1"], quiet=True))
    assert probes_run == []
    assert report.steps and all(c.startswith("D") for r in report.steps.values() for c in r.checks_run)


def test_select_h300_runs_only_the_lr_search(probes_run):
    report = full_report(Options(config=WINE, select=["H300"], quiet=True))
    assert probes_run and all(name.startswith("lr ") for name in probes_run), probes_run
    assert "lr" in report.probes


def test_every_probe_group_named_is_one_the_planner_knows():
    for letter in "DMHGR":
        load_checks(letter)
    known = {"baseline", "lr", "batch", "regularization", "optimizer", "subset", "tiny", "memory", "user_step",
             "extra"}  # extra: transformer_probes.py (warmup, bf16 / loss scaling, norm-bias decay)
    assert set(PROBES_NEEDED) <= set(CATALOGUE)
    assert {p for needs in PROBES_NEEDED.values() for p in needs} <= known
    # every check that reads a probe record is listed (the codes that need only data or the model are not)
    assert {c for c in REGISTRY if c[0] in "HG" and c != "G409"} <= set(PROBES_NEEDED)
