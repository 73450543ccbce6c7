"""The check registry: one small function per finding code (ruff's rule functions, smdebug's rules).

A check is registered with `@check("D104", needs=(...), uses=(...))`: the inputs it must have and those it
reads when present (NEEDS). From these alone follow which codes a producer can check (codes_for_source:
the Monitor, a loss log) and which probes the planner runs for the enabled codes (PROBES_NEEDED). A check
receives the step's context object (data stats, probe records, ...) and returns a Finding, a list of
them, or None; it is the only place its code is decided. It never prints. `run_checks` runs the
enabled checks of a step in catalogue order; a check that raises becomes a crashed step row with the
exception text (flutter doctor's crash validator), never a traceback.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..catalogue import CATALOGUE, STEP_LETTERS, FindingSpec, Step, enabled
from ..report import Finding, Report

CheckResult = Finding | Iterable[Finding] | None

# What a check reads, named so a producer can say what it provides (and a planner what to run):
NEEDS = {
    "data": "the table statistics (nn_doctor.data_stats.DataContext)",
    "spec": "the spec (model, loss, optimizer, training settings)",
    "model": "the model built from the spec, or why it does not build",
    "arrays": "the numeric training/validation data the probes use",
    "init": "a short probe of the configured spec with per-layer statistics at init",
    "curves": "the run's training/validation loss curves (the baseline probe, a monitored run or a log)",
    "layers": "the run's per-layer statistics (the baseline probe or a monitored run)",
    "lr": "the learning-rate probes",
    "batch": "the batch-size probes",
    "regularization": "the weaker-regularisation probe",
    "optimizer": "the adam probe",
    "subset": "a fit of a small training subset",
    "tiny": "the ~10-sample overfit probe",
    "user_step": "the harness's record of the user's training step",
    "memory": "the memory probe (or what the Monitor measured)",
    "timing": "the run's step time",
    "env": "the device and the software environment",
    "extra": "the counterfactual probes of nn_doctor/transformer_probes.py (warmup, bf16 / loss scaling, "
             "weight decay off norm gains and biases)",
}
# What each producer hands the checks (ProbeContext.source); full-report provides everything
PROVIDES = {
    "probe": frozenset(NEEDS),
    "monitor": frozenset({"curves", "layers", "memory", "timing", "env"}),
    "log": frozenset({"curves"}),
}


# The probe group (nn_doctor/plan.py's names) that produces each input a check can read
INPUT_PROBES = {"init": "baseline", "curves": "baseline", "layers": "baseline", "timing": "baseline", "lr": "lr",
                "batch": "batch", "regularization": "regularization", "optimizer": "optimizer", "subset": "subset",
                "tiny": "tiny", "user_step": "user_step", "memory": "memory", "extra": "extra"}


class NotRun(Exception):
    """Raised by a check that cannot run here (R501 without CUDA, G408 without a user step): the report
    keeps the reason, and JUnit shows the check as skipped instead of passed."""


@dataclass(frozen=True)
class Check:
    code: str
    func: Callable[[Any], CheckResult]
    needs: frozenset[str] = frozenset()   # what it must have to judge (a producer without them cannot run it)
    uses: frozenset[str] = frozenset()    # what it also reads when present (a deferral, a sharper fix)

    @property
    def spec(self) -> FindingSpec:
        return CATALOGUE[self.code]

    @property
    def probes(self) -> tuple[str, ...]:
        """The probe groups the planner runs for this check: those producing what it needs or uses."""
        return tuple(sorted({INPUT_PROBES[x] for x in self.needs | self.uses if x in INPUT_PROBES}))


REGISTRY: dict[str, Check] = {}
# code -> the probe groups its check reads; filled as the check modules register (derived, never written)
PROBES_NEEDED: dict[str, tuple[str, ...]] = {}


def check(code: str, needs: Iterable[str] = ("spec",), uses: Iterable[str] = ()) -> Callable[
        [Callable[[Any], CheckResult]], Callable[[Any], CheckResult]]:
    """Register `func` as the check for `code` (one check per code); `needs` names what it must read and
    `uses` what it reads when present (both from NEEDS)."""
    if code not in CATALOGUE:
        raise ValueError(f"{code} is not in the catalogue")
    wanted, optional = frozenset(needs), frozenset(uses)
    if (wanted | optional) - set(NEEDS):
        raise ValueError(f"{code}: unknown inputs {sorted((wanted | optional) - set(NEEDS))}")

    def register(func: Callable[[Any], CheckResult]) -> Callable[[Any], CheckResult]:
        if code in REGISTRY:
            raise ValueError(f"{code} registered twice ({REGISTRY[code].func.__name__}, {func.__name__})")
        REGISTRY[code] = chk = Check(code, func, wanted, optional)
        if chk.probes:
            PROBES_NEEDED[code] = chk.probes
        return func
    return register


def as_list(result: CheckResult) -> list[Finding]:
    if result is None:
        return []
    if isinstance(result, Finding):
        return [result]
    return [f for f in result if f is not None]


# the modules that hold each step's checks (registration happens on import; torch is imported only with
# the steps that need it). Which codes they register comes from the catalogue and the @check decorators.
STEP_MODULES = {Step.DATA: ("data", "tokens"), Step.MODEL: ("model",), Step.HYPERPARAMETERS: ("hyper", "transformers"),
                Step.GRADIENTS: ("gradients", "user_step", "transformers"), Step.RESOURCES: ("resources",)}


def load_checks(letter: str) -> None:
    """Import the modules holding the checks of the step with this code letter ("D", "M", ...)."""
    for module in STEP_MODULES[STEP_LETTERS[letter]]:
        importlib.import_module(f".{module}", __name__)


def run_checks(codes: Iterable[str], ctx: Any, report: Report, select: list[str], ignore: list[str]) -> list[Finding]:
    """Run the registered, enabled checks for `codes`; add their findings to `report`; return them."""
    found: list[Finding] = []
    codes = list(codes)
    for letter in sorted({c[0] for c in codes}):
        load_checks(letter)
    for code in codes:
        chk = REGISTRY.get(code)
        if chk is None or not enabled(code, select, ignore):
            continue
        report.mark_checked(code)
        try:
            results = as_list(chk.func(ctx))
        except NotRun as why:
            report.mark_not_run(code, str(why))
            continue
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
def probes_needed(select: list[str], ignore: list[str]) -> set[str]:
    """The probe groups the enabled codes read (nn_doctor/plan.py runs only those: `--select D1` trains
    nothing, `--select H300` runs only the lr search)."""
    for letter in STEP_LETTERS:
        load_checks(letter)
    return {p for code in CATALOGUE if enabled(code, select, ignore) for p in PROBES_NEEDED.get(code, ())}


def codes_for_step(letter: str) -> list[str]:
    """Every catalogue code of the step with this code letter, in catalogue order."""
    return sorted(c for c in CATALOGUE if c.startswith(letter))


def codes_for_source(source: str, steps: Iterable[Step] = tuple(Step)) -> list[str]:
    """The catalogue codes of `steps` whose check reads only what `source` provides (PROVIDES)."""
    out = []
    for st in steps:
        letter = next(k for k, v in STEP_LETTERS.items() if v == st)
        load_checks(letter)
        out += [c for c in codes_for_step(letter) if c in REGISTRY and REGISTRY[c].needs <= PROVIDES[source]]
    return out
