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


# ---- what each check needs -------------------------------------------------------------------------
# The probes a check reads (nn_doctor/plan.py runs only those the enabled codes need: `--select D1` trains
# nothing, `--select H300` runs only the lr search). Codes not listed need only the data or the built model.
PROBES_NEEDED: dict[str, tuple[str, ...]] = {
    "M204": ("baseline",), "M205": ("baseline",), "M206": ("baseline",), "M207": ("baseline",),
    "M208": ("subset", "lr"),
    "H300": ("lr",), "H301": ("lr",),
    "H302": ("baseline", "batch", "lr"),
    "H303": ("baseline", "regularization", "lr"),
    "H304": ("baseline",), "H306": ("baseline",), "H308": ("baseline",),
    "H305": ("baseline", "batch", "lr", "optimizer", "regularization"),
    "H307": ("baseline", "optimizer"),
    "G400": ("baseline",), "G401": ("baseline",), "G402": ("baseline", "lr"), "G403": ("baseline",),
    "G404": ("baseline",), "G405": ("baseline",), "G406": ("baseline", "lr"),
    "G407": ("tiny", "lr"),
    "G408": ("user_step",),
    "R501": ("memory",), "R502": ("memory",), "R503": ("baseline",),
    # transformer-era checks (checks/transformers.py); "extra" = transformer_probes.py's counterfactual probes
    "H309": ("baseline", "extra", "lr"), "H310": ("lr",), "H311": ("baseline", "extra"),
    "G410": ("baseline", "extra"), "G411": ("baseline", "lr"), "G412": ("user_step",), "G413": ("user_step",),
}


def probes_needed(select: list[str], ignore: list[str]) -> set[str]:
    """The probe groups the enabled codes read."""
    return {p for code in CATALOGUE if enabled(code, select, ignore) for p in PROBES_NEEDED.get(code, ())}


def codes_for_step(letter: str) -> list[str]:
    return sorted(c for c in CATALOGUE if c.startswith(letter))
