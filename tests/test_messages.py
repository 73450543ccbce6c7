"""Messages a person can act on: numbers that read well (nn_doctor/fmt.py), sentences that agree with
the tables beside them, and JUnit that says which checks could not run."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from nn_doctor import fmt, lr_search
from nn_doctor.catalogue import Step
from nn_doctor.checks import run_checks
from nn_doctor.checks.context import ProbeContext
from nn_doctor.probe import ProbeRecord
from nn_doctor.render import _verified_text, render_junit
from nn_doctor.report import Report


# ---- fmt -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, text", [(None, "n/a"), (3, "3"), (120.0, "120"), (0.123456, "0.123"),
                                     (1.027e27, "1.03e+27"), (1389.7, "1,390"), (1234567.0, "1.23e+06"), (float("nan"), "nan"), (float("-inf"), "-inf")])
def test_num(x, text):
    assert fmt.num(x) == text


def test_no_percentage_past_a_thousand():
    # issue 13: G407 printed "(147931759597173993530375870087168% of the start ...)"
    huge = 1.4793e30
    assert fmt.share(huge, 1.0) == "×1.48e+30"
    assert "%" not in fmt.share(huge, 1.0)
    assert fmt.share(0.04, 1.0) == "4%" and fmt.share(0.004, 1.0) == "0.4%" and fmt.share(9.0, 1.0) == "900%"
    assert fmt.change(-0.82) == "-82%" and fmt.change(4.0) == "+400%" and fmt.change(1e10) == "×1e+10"
    for rel in (-0.99, 0.5, 8.99, 9.5, 1e3, 1e30):
        text = fmt.change(rel)
        assert not (text.endswith("%") and abs(float(text.rstrip("%"))) > 1000), text


def test_times_memory_and_counts():
    assert fmt.step_time(0.00073) == "0.73 ms" and fmt.step_time(0.21142) == "211 ms" and fmt.step_time(1.5) == "1.5 s"
    assert fmt.duration(37.04) == "37.0 s" and fmt.duration(600) == "10.0 min" and fmt.duration(9000) == "2.5 h"
    assert fmt.count(43769.2) == "43,769" and fmt.gib(2**30) == "1.00 GiB" and fmt.gib(2**20) == "1.0 MiB"
    assert fmt.lr(0.0032) == "3.2e-03" and fmt.lr(None) == "-" and fmt.lr_plain(0.0032) == "0.0032"
    assert fmt.listing([1, 2.5, "a", 4, 5, 6, 7]) == "[1, 2.5, 'a', 4, 5, 6, ...]"


def test_blown_up_losses_say_so():
    assert fmt.loss_path(19.08, 1.027e27) == "19.1 → blew up to 1.03e+27"
    assert fmt.loss_path(19.08, float("nan")) == "19.1 → diverged (non-finite)"
    assert fmt.loss_path(19.08, 1.367) == "19.1 → 1.37"
    assert fmt.before_after(1.027e27, 0.1737, 4) == "blew up to 1.027e+27 → 0.1737"


def test_verified_line_names_its_basis():
    # issue 13: "verified: ... loss 1.027e+27 → 0.1737" sat next to an initial loss of 19.08 without saying
    # which loss it was; the line names it (both sides are end-of-probe losses of the same kind)
    v = {"probe": "optimizer.lr=0.001", "steps": 150, "loss": "validation", "loss_before": 1.027e27,
         "loss_after": 0.1737, "improved": True}
    assert _verified_text(v) == "optimizer.lr=0.001: validation loss 1.027e+27 → 0.1737"


# ---- the lr search's sentence agrees with its table ------------------------------------------------------

def _rec(initial, final, reference=None, stopped="completed"):
    return ProbeRecord(name="lr", settings={}, overrides={}, initial_loss=initial, final_loss=final,
                       reference_loss=reference, losses=[initial, final], stopped=stopped, steps_run=150)


def test_no_working_lr_reason_agrees_with_the_rows():
    # issue 13: "No probed lr made the loss fall by 25%" beside a row that fell from 19.08 to 1.367: that
    # row failed because it ended no lower than a constant prediction, and the sentence must say so
    lrs = lr_search.decades(0.1, 1e-4)
    records = {0.1: _rec(19.08, None, 1.0986, stopped="diverged"), 0.01: _rec(19.08, 1.367, 1.0986),
               0.001: _rec(19.08, 1.5, 1.0986), 0.0001: _rec(19.08, 18.0, 1.0986)}
    res = lr_search.decide(records, lrs, 0.1)
    assert res.recommended is None
    statuses = {t["lr"]: t["status"] for t in res.tried}
    assert statuses == {0.1: "diverged", 0.01: "too-slow", 0.001: "too-slow", 0.0001: "too-slow"}
    assert "made the training loss fall by" not in res.reason
    assert "1 diverged" in res.reason
    assert "3 ended no lower than a constant prediction's loss (best: lr 0.01, 19.1 → 1.37 vs 1.1 for a " \
           "constant prediction)" in res.reason


def test_too_slow_reason_names_the_progress_rule():
    lrs = lr_search.decades(0.1, 0.01)
    records = {0.1: _rec(2.0, 1.9), 0.01: _rec(2.0, 1.95)}
    res = lr_search.decide(records, lrs, 0.1)
    assert "2 cut the loss by less than 25% (best: lr 0.1, 2 → 1.9)" in res.reason


# ---- JUnit: checks that could not run are skipped, with the reason -----------------------------------

def test_junit_marks_checks_that_could_not_run_as_skipped():
    report = Report("full-report")
    ctx = ProbeContext(spec=None, device="cpu", memory={"batch_size": 32, "device": "cpu"})
    run_checks(["R501", "G408"], ctx, report, [], [])
    report.finalize()
    assert report.steps[Step.RESOURCES].not_run["R501"].startswith("the out-of-memory test needs a CUDA device")
    assert "training.step" in report.steps[Step.GRADIENTS].not_run["G408"]
    suite = ET.fromstring(render_junit(report).split("\n", 1)[1])
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    for name in ("R501 out-of-memory", "G408 training-step-bug"):
        skipped = cases[name].find("skipped")
        assert skipped is not None and skipped.get("message").startswith("could not run: ")
    assert suite.get("skipped") == "2" and suite.get("failures") == "0"
    assert report.to_dict()["steps"][-1]["not_run"]["R501"].startswith("the out-of-memory test")
    from nn_doctor.render import render_text
    assert "could not run: R501: the out-of-memory test needs a CUDA device" in render_text(report, verbose=True)
    assert "could not run" not in render_text(report)


def test_junit_r501_runs_when_the_memory_probe_ran():
    report = Report("full-report")
    ctx = ProbeContext(spec=None, device="cuda", memory={"batch_size": 32, "device": "cuda", "oom": False})
    run_checks(["R501"], ctx, report, [], [])
    suite = ET.fromstring(render_junit(report.finalize()).split("\n", 1)[1])
    case = next(c for c in suite.iter("testcase") if c.get("name") == "R501 out-of-memory")
    assert case.find("skipped") is None and suite.get("skipped") == "0"
