"""G408 training-step-bug: the diagnosis of the user's own training step (nn_doctor.user_step).

The doctor runs `user_step.diagnose_step` when the spec names `training.step` and puts the
StepDiagnosis in `ctx.user_step`; this check turns each bug it found into a finding with its own
evidence and fix. Parameters the step leaves alone are G405 (params-not-updating): G405 is registered
by checks/gradients.py for the probe's own records, so this check returns those G405 findings itself
(run_checks adds whatever a check returns).
"""
from __future__ import annotations

from ..report import Finding
from . import check
from .context import ProbeContext


@check("G408")
def check_training_step(ctx: ProbeContext) -> list[Finding] | None:
    """G408 training-step-bug: one finding per bug the step harness found (G405 for parameters)."""
    diag = ctx.user_step
    if diag is None:
        return None
    found = []
    for bug in diag.bugs:
        if bug.code not in ("G408", "G405"):   # G412/G413 have their own checks (checks/transformers.py)
            continue
        ev = {"step_function": diag.ref, "bug": bug.kind, **bug.evidence}
        if diag.source:
            ev.setdefault("defined_at", diag.source)
        found.append(Finding(bug.code, f"{diag.ref}: {bug.message}", bug.fix, ev, severity=bug.severity))
    return found
