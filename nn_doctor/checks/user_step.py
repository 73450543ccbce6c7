"""G408 training-step-bug: the rules on the user's own training step (the harness is nn_doctor.user_step).

The doctor runs `user_step.diagnose_step` when the spec names `training.step` and puts its record in
`ctx.user_step`; the G408 check turns each bug found there into a finding with its own evidence and fix.
Parameters the step leaves alone are G405 (params-not-updating), decided by the G405 check in
checks/gradients.py, which reads them through `params_left_alone`.
"""
from __future__ import annotations

from typing import Any

from ..report import Finding
from . import check
from .context import ProbeContext


def _evidence(diag: Any, bug: Any) -> dict[str, Any]:
    ev = {"step_function": diag.ref, "bug": bug.kind, **bug.evidence}
    if diag.source:
        ev.setdefault("defined_at", diag.source)
    return ev


@check("G408", needs=("user_step",))
def check_training_step_bug(ctx: ProbeContext) -> list[Finding] | None:
    """G408 training-step-bug: one finding per bug the step harness found in the user's training step."""
    diag = ctx.user_step
    if diag is None:
        return None
    return [Finding("G408", f"{diag.ref}: {bug.message}", bug.fix, _evidence(diag, bug), severity=bug.severity)
            for bug in diag.bugs if bug.kind != "params-not-updating"]


def params_left_alone(diag: Any) -> tuple[str, str, dict[str, Any], str | None] | None:
    """(message, fix, evidence, severity) for the parameters the user's step freezes, leaves out of the
    optimizer or does not update; None when it updates them all (or there is no user step)."""
    if diag is None:
        return None
    bug = next((b for b in diag.bugs if b.kind == "params-not-updating"), None)
    if bug is None:
        return None
    return f"{diag.ref}: {bug.message}", bug.fix, _evidence(diag, bug), bug.severity
