"""The check registry: one small function per finding code (ruff's rule functions, smdebug's rules).

A check is registered with `@check("D104")`; it receives the step's context object (data stats, probe
records, ...) and returns a Finding, a list of them, or None. It never prints. `run_checks` runs the
enabled checks of a step in catalogue order; a check that raises becomes a crashed step row with the
exception text (flutter doctor's crash validator), never a traceback.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..catalogue import CATALOGUE, FindingSpec, enabled
from ..report import Finding, Report

CheckResult = Finding | Iterable[Finding] | None


@dataclass(frozen=True)
class Check:
    code: str
    func: Callable[[Any], CheckResult]

    @property
    def spec(self) -> FindingSpec:
        return CATALOGUE[self.code]


REGISTRY: dict[str, Check] = {}


def check(code: str) -> Callable[[Callable[[Any], CheckResult]], Callable[[Any], CheckResult]]:
    """Register `func` as the check for `code` (one check per code)."""
    if code not in CATALOGUE:
        raise ValueError(f"{code} is not in the catalogue")

    def register(func: Callable[[Any], CheckResult]) -> Callable[[Any], CheckResult]:
        if code in REGISTRY:
            raise ValueError(f"{code} registered twice ({REGISTRY[code].func.__name__}, {func.__name__})")
        REGISTRY[code] = Check(code, func)
        return func
    return register


def as_list(result: CheckResult) -> list[Finding]:
    if result is None:
        return []
    if isinstance(result, Finding):
        return [result]
    return [f for f in result if f is not None]


_STEP_MODULES = {"D": ("data", "tokens"), "M": ("model",), "H": ("hyper", "transformers"),
                 "G": ("gradients", "user_step", "transformers"), "R": ("resources",)}


def load_step(letter: str) -> None:
    """Import the module holding a step's checks (registration happens on import; torch only when needed)."""
    for module in _STEP_MODULES[letter]:
        importlib.import_module(f".{module}", __name__)


def run_checks(codes: Iterable[str], ctx: Any, report: Report, select: list[str], ignore: list[str]) -> list[Finding]:
    """Run the registered, enabled checks for `codes`; add their findings to `report`; return them."""
    found: list[Finding] = []
    codes = list(codes)
    for letter in sorted({c[0] for c in codes}):
        load_step(letter)
    for code in codes:
        chk = REGISTRY.get(code)
        if chk is None or not enabled(code, select, ignore):
            continue
        report.mark_checked(code)
        try:
            results = as_list(chk.func(ctx))
        except Exception as err:  # a broken check must not take the doctor down
            res = report.step(chk.spec.step)
            res.status = "crashed"
            res.reason = (res.reason + "; " if res.reason else "") + \
                f"check {code} ({chk.spec.name}) crashed: {type(err).__name__}: {err}"
            continue
        for f in results:
            report.add(f)
            found.append(f)
    return found


def codes_for_step(letter: str) -> list[str]:
    return sorted(c for c in CATALOGUE if c.startswith(letter))
