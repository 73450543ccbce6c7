"""Causes before symptoms: one pass over a report's findings, after every check has run.

The catalogue's EXPLAINED_BY table says which codes can explain which. A finding is a symptom when one of
its possible causes was found at error level, or at warning level with a fix no probe refuted; it keeps its severity and stays listed (nothing is
hidden), it names its causes in `explained_by`, and it never becomes the first fix (report.first_fix_finding).
Checks never look at one another's results for this: only this pass links them.

It also weighs the counterfactual probes (treatment.py): an info finding whose spec change a probe showed to
raise the validation metric materially is raised to a warning, since the training as configured leaves that much
on the table (a loss still falling at the end of too few epochs is a remark until a longer run scores better).
"""
from __future__ import annotations

import math

from .catalogue import CATALOGUE, Severity
from .report import Finding

RAISE_Z = 2.0   # a remark becomes a warning only when its fix's gain in validation accuracy is >= 2 standard errors of
                # the difference of two accuracies on the same rows, sqrt(2 p (1 - p) / n): on 20 validation rows a
                # gain of 0.25 is needed, on 359 (digits) 0.03 (the usual two-sided 95 % bar, rounded)


def triage(findings: list[Finding]) -> list[Finding]:
    """Set `explained_by` on every finding whose cause was found; return the findings that are causes."""
    for f in findings:
        v = f.verified or {}
        if f.severity == Severity.INFO and v.get("improved") and v.get("metric_up") and _significant(v):
            f.severity = Severity.WARNING
            f.evidence["raised_to_warning"] = (f"its fix raised the validation {v.get('metric')} from "
                                               f"{v.get('metric_before'):.3g} to {v.get('metric_after'):.3g} in a probe")
    # a warning whose own fix a probe refuted ("not confirmed") explains nothing: its symptoms stay causes. An
    # error keeps explaining (its evidence is structural, as for first_fix: a refuted error still ranks)
    present = {f.code for f in findings if f.severity == Severity.ERROR
               or (f.severity == Severity.WARNING and f.fix_status != "not confirmed")}
    for f in findings:
        f.explained_by = [c for c in CATALOGUE[f.code].explained_by if c in present and c != f.code]
    return [f for f in findings if not f.explained_by]


def _significant(v: dict) -> bool:
    """The gain of a balanced-accuracy-like metric is beyond the noise of its validation rows (R^2 gains and runs
    without a row count pass: the metric gain itself already cleared treatment.METRIC_GAIN)."""
    before, after, n = v.get("metric_before"), v.get("metric_after"), v.get("n_eval")
    if v.get("metric") != "balanced_accuracy" or before is None or after is None or not n:
        return True
    p = min(max((before + after) / 2, 0.0), 1.0)
    return after - before >= RAISE_Z * math.sqrt(2 * p * (1 - p) / n)
