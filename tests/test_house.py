"""The house rules, read off the source and checked on one curve:

- every finding code is emitted (`Finding("CODE", ...)`) in exactly one module, and that module is the
  check module that registers the code's check: one code, one place that decides it;
- check-curves, the Monitor and full-report's checks reach their findings through the same run_checks and
  give the same codes on the same curve.
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from nn_doctor import Monitor
from nn_doctor.catalogue import CATALOGUE
from nn_doctor.checks import PROVIDES, REGISTRY, codes_for_source, codes_for_step, load_checks, run_checks
from nn_doctor.checks.context import ProbeContext
from nn_doctor.curve_report import check_curves
from nn_doctor.probe import ProbeRecord
from nn_doctor.report import Report
from nn_doctor.spec import Spec

PACKAGE = Path(__file__).resolve().parents[1] / "nn_doctor"
EMITTED = re.compile(r"""\bFinding\(\s*["']([DMHGR]\d{3})["']""")
REGISTERED = re.compile(r"""^@check\(\s*["']([DMHGR]\d{3})["']""", re.M)
EXEMPT: set[tuple[str, str]] = set()   # no code is emitted outside its check module


def _scan(pattern: re.Pattern) -> dict[str, set[str]]:
    where: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = str(path.relative_to(PACKAGE))
        for code in pattern.findall(path.read_text(encoding="utf-8")):
            where.setdefault(code, set()).add(rel)
    return where


def test_each_code_is_emitted_in_exactly_one_check_module():
    emitted, registered = _scan(EMITTED), _scan(REGISTERED)
    for code in CATALOGUE:
        places = {p for p in emitted.get(code, set()) if (code, Path(p).name) not in EXEMPT}
        assert len(registered.get(code, ())) == 1, f"{code} is registered in {sorted(registered.get(code, ()))}"
        assert places == registered[code], (f"{code} is emitted in {sorted(places)}, "
                                            f"registered in {sorted(registered[code])}")
        assert all(p.startswith("checks/") for p in places), f"{code} is decided outside the checks: {places}"
    assert set(emitted) <= set(CATALOGUE)


def test_every_catalogue_code_has_one_registered_check_with_known_needs():
    for letter in "DMHGR":
        load_checks(letter)
    assert set(REGISTRY) == set(CATALOGUE)
    for code, chk in REGISTRY.items():
        assert chk.needs, code
    # what each producer can check follows from the needs alone
    assert codes_for_source("log") == ["H304", "H305", "H306", "H308", "G400"]
    assert set(codes_for_source("monitor")) >= {"H306", "G400", "G403", "G405", "G406", "R503"}
    assert not {"H300", "H302", "M200", "D100", "G407", "G408"} & set(codes_for_source("monitor"))
    assert codes_for_source("probe") == [c for s in "DMHGR" for c in codes_for_step(s)]
    assert PROVIDES["log"] < PROVIDES["monitor"] < PROVIDES["probe"]


# ---- one curve, three producers -------------------------------------------------------------------------

STEPS = 200
VAL_EVERY = 20


def _curves(kind: str) -> tuple[list[float], list[tuple[int, float]]]:
    """Per-step training losses and (step, validation loss) pairs of a synthetic run."""
    if kind == "overfitting":      # train keeps falling, validation bottoms out at step 60 and climbs back
        train = [0.05 + 1.0 * math.exp(-s / 30) for s in range(STEPS)]
        val = [(s, 0.6 + 0.5 * math.exp(-s / 20) + (0.004 * (s - 60) if s > 60 else 0.0))
               for s in range(VAL_EVERY - 1, STEPS, VAL_EVERY)]
    elif kind == "plateau":        # both flat near their start
        train = [1.0 + 0.01 * math.sin(s) for s in range(STEPS)]
        val = [(s, 1.02 + 0.005 * math.cos(s)) for s in range(VAL_EVERY - 1, STEPS, VAL_EVERY)]
    else:                          # diverging to NaN at step 120
        train = [1.0 * 1.03 ** s if s < 120 else math.nan for s in range(STEPS)]
        val = [(s, 1.0 * 1.03 ** s) for s in range(VAL_EVERY - 1, 120, VAL_EVERY)]
    return train, val


def _via_log(tmp_path: Path, train, val) -> set[str]:
    path = tmp_path / "metrics.csv"
    vals = dict(val)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "train_loss", "val_loss"])
        for s, v in enumerate(train):
            w.writerow([s, v, vals.get(s, "")])
    return {f.code for f in check_curves(path).findings}


def _via_monitor(train, val) -> Monitor:
    model = nn.Linear(2, 1)
    vals = dict(val)
    with Monitor(model, torch.optim.SGD(model.parameters(), lr=0.01), every=10) as mon:
        for s, v in enumerate(train):
            mon.step(v)
            if s in vals:
                mon.val(vals[s], step=s + 1)
    return mon


def _via_full_report_checks(train, val) -> set[str]:
    """full-report's checks of steps 3-4 on a baseline probe record holding the same curves."""
    finite = [v for v in train if not math.isnan(v)]
    nonfinite = next((s for s, v in enumerate(train) if math.isnan(v)), None)
    rec = ProbeRecord(name="baseline", settings={}, overrides={})
    rec.losses = [None if math.isnan(v) else v for v in train]
    rec.val_losses = [(s + 1, v) for s, v in val]
    rec.initial_loss, rec.initial_val_loss = train[0], val[0][1]
    rec.final_loss = None if nonfinite is not None else sum(finite[-10:]) / 10
    rec.final_val_loss = None if nonfinite is not None else val[-1][1]
    rec.steps_run = nonfinite + 1 if nonfinite is not None else len(train)
    rec.stopped = "non-finite" if nonfinite is not None else "completed"
    rec.first_nonfinite = {"step": nonfinite, "where": "loss", "layer": None} if nonfinite is not None else None
    spec = Spec.model_validate({"task": "classification", "model": {"layers": [{"type": "linear", "out": 3}]},
                                "loss": "cross_entropy", "optimizer": {"name": "sgd", "lr": 0.01},
                                "training": {"batch_size": 32, "epochs": 1000}})
    report = Report("full-report")
    found = run_checks(codes_for_step("H") + codes_for_step("G"), ProbeContext(spec=spec, baseline=rec),
                       report, [], [])
    return {f.code for f in found}


@pytest.mark.parametrize("kind,expected", [("overfitting", {"H304", "H306"}), ("plateau", {"H305", "H306"}),
                                           ("diverging", {"G400", "H306"})])
def test_one_curve_gives_the_same_codes_through_check_curves_monitor_and_full_report(tmp_path, kind, expected):
    train, val = _curves(kind)
    curve_codes = set(codes_for_source("log"))
    logged = _via_log(tmp_path, train, val)
    mon = _via_monitor(train, val)
    monitored = {f.code for f in mon.report().findings} & curve_codes
    probed = _via_full_report_checks(train, val) & curve_codes
    assert logged == monitored == probed == expected
    report = mon.report()
    # the Monitor speaks of the user's run and proposes no spec change: the user has no spec
    h306 = next(f for f in report.findings if f.code == "H306")
    assert "monitored run" in h306.message
    assert all(f.patch is None for f in report.findings)


def test_a_configured_training_that_broke_in_its_probe_is_never_a_remark_alone():
    # the baseline probe stopped "diverged" (finite, rising): whatever the lr probes say, the run as configured
    # broke, so H306 is a warning there (a cause such as H300 makes it a symptom in triage)
    train = [1.0 + 0.5 * s for s in range(12)]
    rec = ProbeRecord(name="baseline", settings={}, overrides={})
    rec.losses, rec.val_losses = list(train), [(6, 3.0), (12, 6.5)]
    rec.initial_loss, rec.initial_val_loss, rec.final_loss, rec.final_val_loss = 1.0, 1.0, 6.5, 6.5
    rec.steps_run, rec.stopped = len(train), "diverged"
    spec = Spec.model_validate({"task": "classification", "model": {"layers": [{"type": "linear", "out": 3}]},
                                "loss": "cross_entropy", "optimizer": {"name": "adam", "lr": 0.01},
                                "training": {"batch_size": 32, "epochs": 10}})
    found = run_checks(["H306"], ProbeContext(spec=spec, baseline=rec), Report("full-report"), [], [])
    h306 = next(f for f in found if f.code == "H306")
    assert h306.evidence["pattern"] == "diverging" and h306.severity.value == "warning", h306
