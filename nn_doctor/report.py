"""Findings, steps and the report every command produces (the model; renderers live in render.py).

The exit code and the verdict are computed from this model, never from what was printed
(flutter doctor's `diagnose`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .catalogue import CATALOGUE, Severity, Step

SCHEMA_VERSION = 1


@dataclass
class Finding:
    code: str
    message: str                      # one line, with the numbers that matter
    fix: str                          # concrete for this spec ("set data.normalize: standardize")
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None  # None: the catalogue's default
    verified: dict[str, Any] | None = None  # set when a probe tested the fix
    # the spec change that implements the fix, as dotted-path overrides ({"data.normalize": "standardize"});
    # the doctor runs a counterfactual probe with it and --write-fixed applies it. Not serialised.
    patch: dict[str, Any] | None = field(default=None, repr=False)
    # why a probe cannot test the patch (the probes already work around the fault); the fix is still written
    untestable: str | None = field(default=None, repr=False)
    # why the patch is a stand-in that is probed but never applied or written (the fix is in the user's own code)
    probe_only: str | None = field(default=None, repr=False)
    explained_by: list[str] = field(default_factory=list)   # found causes of this symptom (set by triage)
    # set by the treatment loop when this fix, refuted by its own probe, was confirmed later on the path once
    # earlier fixes were applied: {"after": [codes applied before it], "metric": ..., "before": ..., "value": ...}
    confirmed_after: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.code not in CATALOGUE:
            raise ValueError(f"unknown finding code {self.code}")
        if self.severity is None:
            self.severity = CATALOGUE[self.code].severity
        self.severity = Severity(self.severity)

    @property
    def name(self) -> str:
        return CATALOGUE[self.code].name

    @property
    def step(self) -> Step:
        return CATALOGUE[self.code].step

    def to_dict(self) -> dict[str, Any]:
        d = {"code": self.code, "name": self.name, "step": int(self.step), "severity": self.severity.value,
             "message": self.message, "evidence": clean_json(self.evidence), "fix": self.fix}
        if self.verified is not None:
            d["verified"] = clean_json(self.verified)
        if self.fix_status is not None:
            d["fix_status"] = self.fix_status
        if self.explained_by:
            d["explained_by"] = list(self.explained_by)
        if self.confirmed_after:
            d["confirmed_after"] = clean_json(self.confirmed_after)
        return d

    @property
    def fix_status(self) -> str | None:
        """"confirmed" (a probe of the fix helped materially), "not confirmed" (it was probed and did not),
        "untested" (a spec change no probe could test), or None (no spec change to test)."""
        if self.verified is not None and "improved" in self.verified:
            return "confirmed" if self.verified["improved"] else "not confirmed"
        if self.patch or self.untestable or self.verified is not None:
            return "untested"
        return None


@dataclass
class StepResult:
    step: Step
    status: str = "pass"              # pass | warn | fail | skipped | crashed
    codes: list[str] = field(default_factory=list)   # codes of the findings in this step
    checks_run: list[str] = field(default_factory=list)  # codes whose check ran (for JUnit)
    not_run: dict[str, str] = field(default_factory=dict)  # code -> why its check could not run here
    summary: str = ""                 # short status shown after the title: "178 rows, 13 features"
    reason: str = ""                  # why skipped / what crashed
    ran: bool = True                  # False when the command does not cover this step at all

    def to_dict(self) -> dict[str, Any]:
        d = {"step": int(self.step), "name": self.step.label, "status": self.status, "codes": self.codes}
        if self.summary:
            d["summary"] = self.summary
        if self.reason:
            d["reason"] = self.reason
        if self.not_run:
            d["not_run"] = dict(self.not_run)
        return d


MATERIAL_GAIN = 0.03   # a validation-metric difference that counts (also treatment.METRIC_GAIN): one validation
                       # row of wine's 36 moves balanced accuracy by ~0.028, so less is noise


def _metric_after(f: Finding) -> float | None:
    v = f.verified or {}
    return v.get("metric_after") if f.fix_status == "confirmed" else None


def best_in_step(candidates: list[Finding]) -> Finding:
    """The finding to fix first among candidates: the earliest step; within it, errors before warnings and
    confirmed fixes before untested ones; but when another confirmed fix of that step reached a validation
    metric higher by MATERIAL_GAIN in its probe, that one (rules propose, probes decide: the probe that shows
    the training repaired outranks a severity the rule assigned; a heavily decayed model's lr may "diverge"
    at every lr while removing the decay repairs it)."""
    first = min(candidates, key=lambda f: (int(f.step), -f.severity.rank, f.fix_status != "confirmed", f.code))
    top = _metric_after(first)
    rivals = [f for f in candidates if int(f.step) == int(first.step) and f is not first
              and _metric_after(f) is not None]
    if top is None or not rivals:
        return first
    best = max(rivals, key=lambda f: (_metric_after(f), f.severity.rank))
    return best if _metric_after(best) >= top + MATERIAL_GAIN else first


@dataclass
class Report:
    command: str
    inputs: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    steps: dict[Step, StepResult] = field(default_factory=dict)
    probes: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)    # e.g. "this is the bundled example"
    skipped: list[str] = field(default_factory=list)  # work skipped for the budget or an interrupt
    interrupted: bool = False

    # ---- building ------------------------------------------------------------------------
    def step(self, step: Step) -> StepResult:
        if step not in self.steps:
            self.steps[step] = StepResult(step)
        return self.steps[step]

    def add(self, finding: Finding) -> Finding:
        self.findings.append(finding)
        return finding

    def mark_checked(self, code: str) -> None:
        res = self.step(CATALOGUE[code].step)
        if code not in res.checks_run:
            res.checks_run.append(code)

    def mark_not_run(self, code: str, reason: str) -> None:
        """The check for `code` was enabled but could not run here (no CUDA, no user step)."""
        self.mark_checked(code)
        self.step(CATALOGUE[code].step).not_run[code] = reason

    def skip_step(self, step: Step, reason: str) -> None:
        res = self.step(step)
        res.status, res.reason = "skipped", reason

    def finalize(self) -> "Report":
        """Order findings in step order and derive each step's status from its findings."""
        self.findings.sort(key=lambda f: (int(f.step), -f.severity.rank, f.code))
        from .triage import triage
        triage(self.findings)
        for res in self.steps.values():
            mine = [f for f in self.findings if f.step == res.step]
            res.codes = list(dict.fromkeys(f.code for f in mine))
            if res.status in ("skipped", "crashed") and not mine:
                continue
            worst = max((f.severity.rank for f in mine), default=-1)
            res.status = "fail" if worst >= 2 else "warn" if worst == 1 else \
                ("crashed" if res.status == "crashed" else "pass")
        return self

    # ---- verdict ----------------------------------------------------------------------------
    @property
    def incomplete(self) -> bool:
        """Some step this command covers was not checked (interrupted, skipped, or a check crashed): no
        clean bill of health can be given, whatever the other steps found."""
        return self.interrupted or any(r.ran and r.status in ("skipped", "crashed") for r in self.steps.values())

    @property
    def verdict(self) -> str:
        """healthy | warnings | unhealthy | incomplete. "healthy" is a claim that needs evidence: every step
        the command covers ran its checks, and nothing crashed."""
        worst = max((f.severity.rank for f in self.findings), default=-1)
        if worst >= 2:
            return "unhealthy"
        if self.incomplete:
            return "incomplete"
        return "warnings" if worst == 1 else "healthy"

    @property
    def first_fix(self) -> str | None:
        f = self.first_fix_finding()
        return f.code if f is not None else None

    def first_fix_finding(self) -> Finding | None:
        """The thing to fix first: causes before symptoms (a finding explained by another found finding is
        skipped), then the earliest step among fixes a probe confirmed (alone, or on the treatment path once
        the fixes before it were applied) and errors no probe refuted; a warning whose fix was probed and did
        not help never comes first. Later tiers only when a tier is empty."""
        ranked = [f for f in self.findings if f.severity.rank >= 1]
        causes = [f for f in ranked if not f.explained_by] or ranked   # a cycle of explanations: all stay
        tiers = (
            [f for f in causes if f.fix_status == "confirmed" or f.confirmed_after or
             (f.severity == Severity.ERROR and f.fix_status != "not confirmed")],
            [f for f in causes if f.severity == Severity.ERROR],
            [f for f in causes if f.fix_status != "not confirmed"],
        )
        for tier in tiers:
            if tier:
                return best_in_step(tier)
        return None

    def exit_code(self, fail_on: str) -> int:
        if self.interrupted:
            return 130
        if fail_on == "never":
            return 0
        threshold = Severity(fail_on).rank
        # an incomplete run (a crashed check, a skipped step) cannot pass a CI gate: it was not checked
        return 1 if self.incomplete or any(f.severity.rank >= threshold for f in self.findings) else 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "nn-doctor", "version": __version__},
            "command": self.command,
            "inputs": clean_json(self.inputs),
            "environment": clean_json(self.environment),
            "verdict": self.verdict,
            "first_fix": self.first_fix,
            "steps": [self.steps[s].to_dict() for s in sorted(self.steps) if self.steps[s].ran],
            "findings": [f.to_dict() for f in self.findings],
            "probes": clean_json(self.probes),
            "timing": clean_json(self.timing),
        }
        if self.notes:
            d["notes"] = self.notes
        if self.skipped:
            d["skipped"] = self.skipped
        if self.interrupted:
            d["interrupted"] = True
        return d


def clean_json(value: Any) -> Any:
    """Make a value JSON-safe: numpy scalars -> Python, NaN/Inf -> None, floats rounded to 6 significant digits."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if hasattr(value, "tolist"):
        return clean_json(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.6g}")
    if isinstance(value, Severity):
        return value.value
    return str(value)
