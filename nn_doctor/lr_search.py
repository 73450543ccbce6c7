"""The learning-rate probe of the source notes' lr advice: start at 0.1, divide by 10 while the loss
diverges or does not fall, down to 1e-4; then bisect in log space between the last failing and the
first working lr to find the edge of stability.

Planned in rounds of independent probes (so an executor can run a round side by side):
  round 1: every decade from max_lr down to min_lr, plus the configured lr;
  round 2: BISECT_POINTS log-spaced points between the last failing and the first working decade.
The decision follows the seeds' order exactly (the first working lr from the top), whatever ran.

Each probe gets a status from its curves, not from one final value:
  diverged   - a non-finite loss, or the smoothed loss rose above DIVERGE_FACTOR x its start
               (the probe stopped early), or the final full-batch loss is above the initial one;
  unstable   - finite, but the smoothed curve climbs back by more than UNSTABLE_RISE of the progress it
               had made (oscillation; it must first have got MIN_PROGRESS below the initial loss),
               measured after the first fifth of the probe;
  converging - the full-batch training loss fell by at least MIN_PROGRESS of its initial value;
  too-slow   - finite and stable, but it fell by less than that, or not below REFERENCE_MARGIN x the loss
               of the best constant prediction (it learned nothing from the inputs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable

from .probe import ProbeRecord
from . import curves, fmt

if TYPE_CHECKING:
    from .session import Session

RISE_MARGIN = 0.02      # ending > 2% above the start is "rose"; a flat loss within that is too-slow, not diverged
MIN_PROGRESS = 0.25     # a working lr cuts the full-batch training loss by >= 25% within the probe
                        # (a probe is ~150 steps; seeds/003: "loss不下降" means essentially no fall)
UNSTABLE_RISE = 0.5     # climbing back by > 50% of the progress made = oscillating (seeds/003 "学习率设置过大，很容易震荡")
SETTLE_FRACTION = 0.2   # ignore the first 20% of steps when looking for oscillation (EMA warm-up, early transients)
REFERENCE_MARGIN = 0.95  # a working lr ends >= 5% below the loss of the best constant prediction (prior / mean)
BISECT_POINTS = 3       # interior log-spaced points between the failing and the working decade: resolution 10^(1/4) = 1.8x
NEAR_BEST_REL = 1.0     # "within noise of the best": up to 2x the best loss ...
NEAR_BEST_ABS = 0.1     # ... or 10% of the initial loss above it (re-splitting moved wine's converged val loss by 0.10)
SAFETY_FACTOR = 3.0     # recommend at most edge / 3: the edge itself is where training starts to break
TOO_LOW_RATIO = 0.5     # H301: the configured lr made < 50% of the best lr's progress
LOWEST_LR = 1e-6        # H310: below --min-lr the search goes on by decades down to here when nothing above works
                        # (fine-tuning lrs: 1e-5..5e-5 for BERT (Devlin et al.), down to 1e-6 for large models)
CURVE_POINTS = 40       # points kept of each smoothed curve for the report's chart



class LrStatus(str, Enum):
    """What one lr probe did (the module docstring gives the rules). A str Enum: the JSON keeps the plain
    strings ("diverged", ...), and a status compares equal to its string."""

    DIVERGED = "diverged"
    UNSTABLE = "unstable"
    CONVERGING = "converging"
    TOO_SLOW = "too-slow"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value

    __hash__ = str.__hash__   # hashes as its string too, so "diverged" in {LrStatus.DIVERGED} holds

    @property
    def breaks_training(self) -> bool:
        """Diverged or oscillating: the lr is too high (H300)."""
        return self in BREAKS_TRAINING


BREAKS_TRAINING = frozenset({LrStatus.DIVERGED, LrStatus.UNSTABLE})
WORKING = LrStatus.CONVERGING


def decades(max_lr: float, min_lr: float) -> list[float]:
    out, lr = [], max_lr
    while lr >= min_lr * (1 - 1e-9):
        out.append(float(f"{lr:.6g}"))
        lr /= 10
    return out


def bisect_points(fail_lr: float, ok_lr: float, n: int = BISECT_POINTS) -> list[float]:
    lo, hi = math.log10(ok_lr), math.log10(fail_lr)
    return [float(f"{10 ** (hi - (hi - lo) * k / (n + 1)):.3g}") for k in range(1, n + 1)]


def _rose_only_to_prior(rec: ProbeRecord) -> bool:
    """A loss that rose from a start better than a constant prediction, but ends no worse than one: the net
    shrank to the prior (heavy weight decay pulls every weight to 0), which an lr too high does not explain
    (measured: wine, adam 3e-3 with weight decay 1.0, seed 1: 0.588 -> 0.75 < ln 3 = 1.10; at other seeds the
    start is above ln 3 and the same curve reads too-slow)."""
    ref = rec.reference_loss
    return ref is not None and rec.initial_loss < ref and rec.final_loss <= ref


def classify(rec: ProbeRecord) -> LrStatus:
    if rec.error is not None:
        return LrStatus.ERROR
    if rec.stopped in ("non-finite", "diverged") or rec.final_loss is None or rec.initial_loss is None:
        return LrStatus.DIVERGED
    if rec.final_loss > curves.level(rec.initial_loss, 1 + RISE_MARGIN) and not _rose_only_to_prior(rec):
        return LrStatus.DIVERGED
    sm = [v for v in rec.smoothed() if v is not None]
    progress = (rec.initial_loss - rec.final_loss) / max(abs(rec.initial_loss), 1e-12)
    start = int(len(sm) * SETTLE_FRACTION)
    if len(sm) - start >= 5:
        tail = sm[start:]
        running_min, worst_rise = tail[0], 0.0
        for v in tail:
            running_min = min(running_min, v)
            worst_rise = max(worst_rise, v - running_min)
        # measured from the full-batch loss at init, not from sm[0] (one minibatch's loss, noisy); and
        # oscillation needs progress to climb back from: a curve that never got MIN_PROGRESS below its
        # start is minibatch noise around a plateau (too-slow), not an lr that is too high (measured:
        # without this, lr 1e-4..1e-6 on wine and diabetes read "unstable" on most seeds)
        ref = rec.initial_loss
        made = ref - min(tail)
        if made >= MIN_PROGRESS * abs(ref) and worst_rise > UNSTABLE_RISE * made and worst_rise > 0.05 * abs(ref):
            return LrStatus.UNSTABLE
    if rec.reference_loss is not None and rec.final_loss > curves.level(rec.reference_loss, REFERENCE_MARGIN):
        # fell from a bad start only as far as a constant prediction would: nothing learned from the inputs
        # (measured: unscaled wine at lr 1e-2..2e-3 falls 54 -> 1.086 = ln 3 as its ReLUs die)
        return LrStatus.TOO_SLOW
    return WORKING if progress >= MIN_PROGRESS else LrStatus.TOO_SLOW


@dataclass
class LrResult:
    tried: list[dict[str, Any]] = field(default_factory=list)
    recommended: float | None = None
    rule: str = ""
    reason: str | None = None
    edge: float | None = None               # lowest failing lr above the working ones
    configured: float | None = None
    configured_status: LrStatus | None = None
    plateau: list[float] = field(default_factory=list)   # the working lrs within noise of the best
    extended_below: list[float] = field(default_factory=list)   # decades probed below --min-lr (extend_below)
    min_lr: float | None = None             # the search's --min-lr
    verified: bool | None = None            # the recommended lr itself was probed and works

    def to_dict(self) -> dict[str, Any]:
        d = {"tried": self.tried, "recommended": self.recommended, "rule": self.rule, "reason": self.reason,
             "edge_of_stability": self.edge, "plateau": self.plateau, "configured": self.configured,
             "configured_status": self.configured_status, "verified": self.verified}
        if self.extended_below:
            d["extended_below"] = self.extended_below
        return d


def summarize(lr: float, rec: ProbeRecord, status: LrStatus) -> dict[str, Any]:
    sm = rec.smoothed()
    step = max(1, math.ceil(len(sm) / CURVE_POINTS))
    finite = [v for v in sm if v is not None]
    diverged = status == LrStatus.DIVERGED
    return {"lr": lr, "status": status, "initial_loss": rec.initial_loss,
            # a diverged probe has no meaningful final loss (report.md: null); where it stopped is kept
            "final_loss": None if diverged else rec.final_loss,
            "loss_at_stop": finite[-1] if diverged and finite else None,
            "reference_loss": rec.reference_loss,
            "best_loss": min(finite, default=None),
            "final_val_loss": rec.final_val_loss, "steps": rec.steps_run, "stopped": rec.stopped,
            "error": rec.error, "curve": sm[::step], "curve_every": step}


_fmt = fmt.lr_plain   # nn_doctor/fmt.py


def first_working(statuses: dict[float, LrStatus], lrs: list[float]) -> float | None:
    """The seeds' descent: from the top, the first lr whose probe works."""
    for lr in lrs:
        if statuses.get(lr) == WORKING:
            return lr
    return None


def _why_none_worked(records: dict[float, ProbeRecord], statuses: dict[float, LrStatus]) -> str:
    """What each failing probe did, in the terms of its status (so the sentence agrees with the lr table:
    a row that fell from 19.1 to 1.37 is 'no lower than a constant prediction', not 'did not fall')."""
    groups: dict[str, list[float]] = {}
    for lr, status in statuses.items():
        st, rec = str(status), records[lr]   # the plain string: a str Enum hashes by its name
        if st == "too-slow" and rec.reference_loss is not None and rec.final_loss is not None \
                and rec.final_loss > curves.level(rec.reference_loss, REFERENCE_MARGIN):
            st = "constant"
        groups.setdefault(st, []).append(lr)
    parts = []
    for st, text in (("diverged", "diverged"), ("unstable", "oscillated"), ("error", "failed to run"),
                     ("constant", "ended no lower than a constant prediction's loss"),
                     ("too-slow", f"cut the loss by less than {MIN_PROGRESS:.0%}")):
        lrs = groups.get(st)
        if not lrs:
            continue
        part = f"{len(lrs)} {text}"
        if st in ("constant", "too-slow"):
            best = min(lrs, key=lambda lr: records[lr].final_loss if records[lr].final_loss is not None else math.inf)
            r = records[best]
            part += f" (best: lr {_fmt(best)}, {fmt.loss_path(r.initial_loss, r.final_loss)}"
            if st == "constant":
                part += f" vs {fmt.num(r.reference_loss)} for a constant prediction"
            part += ")"
        parts.append(part)
    return "; ".join(parts) or "no probe finished"


def decide(records: dict[float, ProbeRecord], decade_lrs: list[float], configured: float) -> LrResult:
    """Turn the probes into statuses, the edge of stability and a recommendation (rule stated)."""
    statuses = {lr: classify(r) for lr, r in records.items()}
    res = LrResult(configured=configured, configured_status=statuses.get(configured))
    res.tried = [summarize(lr, records[lr], statuses[lr]) for lr in sorted(records, reverse=True)]
    ok = first_working(statuses, decade_lrs)
    lo, hi = min(decade_lrs) * (1 - 1e-9), max(decade_lrs) * (1 + 1e-9)
    in_range = {lr: st for lr, st in statuses.items() if lo <= lr <= hi}   # the configured lr may lie outside
    working = [lr for lr, st in in_range.items() if st == WORKING]
    if not working:
        res.reason = (f"no probed lr in [{min(decade_lrs):g}, {max(decade_lrs):g}] trained: "
                      f"{_why_none_worked(records, statuses)}")
        if res.configured_status == LrStatus.DIVERGED:
            res.reason += "; the configured lr diverges: lower it, and look at the other steps for the rest"
        else:
            res.reason += "; the problem is probably not the lr - see the other steps"
        return res
    failing_above = [lr for lr, st in in_range.items() if st in BREAKS_TRAINING and lr > max(working)]
    res.edge = min(failing_above) if failing_above else None
    # Judged on the full-batch training loss: the low-noise signal. Validation losses of small splits
    # reorder the decades from seed to seed (wine, 36 validation rows: best lr 0.003 on one seed, 0.1 on
    # two). The plateau below keeps the recommendation off the fastest-memorising extreme.
    which = "training"
    loss = {lr: records[lr].final_loss for lr in working}
    best = min(working, key=lambda lr: (loss[lr], -lr))
    # Every working lr within noise of the best forms the plateau; recommend its geometric middle. Picking
    # the single best decade flipped between 0.003 and 0.1 across split seeds on wine (36 validation rows).
    start = max(abs(records[best].initial_loss or 0.0), 1e-12)
    tol = max(NEAR_BEST_REL * loss[best], NEAR_BEST_ABS * start)
    plateau = sorted(lr for lr in working if loss[lr] <= loss[best] + tol)
    rec_lr = float(f"{math.sqrt(plateau[0] * plateau[-1]):.2g}")
    res.plateau = plateau
    if len(plateau) == 1:
        res.rule = f"the working lr with the lowest {which} loss; no other came within noise of it"
    else:
        res.rule = (f"the geometric middle of the working lrs whose {which} loss is within noise of the best "
                    f"({_fmt(plateau[0])}..{_fmt(plateau[-1])}; best {_fmt(best)})")
    if res.edge is not None and rec_lr > res.edge / SAFETY_FACTOR:
        rec_lr = float(f"{res.edge / SAFETY_FACTOR:.2g}")
        res.rule += f", capped at the edge of stability ({res.edge:g}) / {SAFETY_FACTOR:g}"
    res.recommended = rec_lr
    if ok is not None and ok != best:
        res.rule += f" (the descent by tenths from {max(decade_lrs):g} first worked at {ok:g})"
    return res


def extend_below(records: dict[float, ProbeRecord], decade_lrs: list[float], probe, floor: float = LOWEST_LR
                 ) -> list[float]:
    """The seeds' descent continued below --min-lr: when no decade from max_lr to min_lr works and the lowest
    one still diverges or oscillates (the lr is still too high), probe the next decades one at a time (`probe([lr])` adds records[lr]) down to `floor`, stopping at the first that works.
    Returns the decades it probed ([] when a decade above already works)."""
    if any(classify(records[lr]) == WORKING for lr in decade_lrs if lr in records):
        return []
    lowest = min(decade_lrs)
    if lowest not in records or classify(records[lowest]) not in ("diverged", "unstable"):
        return []    # still too high only when even the lowest lr breaks; too-slow or an error is not the lr
    added: list[float] = []
    lr = min(decade_lrs) / 10
    while lr >= floor * (1 - 1e-9):
        lr = float(f"{lr:.6g}")
        probe([lr])
        if lr not in records:      # skipped (budget) or interrupted: stop descending
            break
        added.append(lr)
        if classify(records[lr]) == WORKING:
            break
        lr /= 10
    return added


def mark_verified(result: LrResult, records: dict[float, ProbeRecord], min_lr: float) -> None:
    """Record which decades went below --min-lr, and whether the recommended lr's own probe works."""
    result.min_lr = min_lr
    result.extended_below = sorted((lr for lr in records if lr < min_lr * (1 - 1e-9)
                                    and abs(math.log10(lr / min_lr) - round(math.log10(lr / min_lr))) < 1e-6),
                                   reverse=True)
    if result.recommended is not None and result.recommended in records:
        result.verified = classify(records[result.recommended]) == WORKING


def progress(rec: ProbeRecord) -> float:
    if rec.initial_loss is None or rec.final_loss is None:
        return 0.0
    return rec.initial_loss - rec.final_loss


# ---- the search: planning the probes in rounds and deciding ------------------------------------------

def run_search(s: "Session", steps: int | None = None, alongside: list | None = None,
              on_alongside: Callable[[Any, Any], None] | None = None,
              beside_recommendation: Callable[[float], list] | None = None) -> Any:
    """The seeds' procedure in rounds: the decades (and the configured lr), then a bisection round
    between the last failing and the first working decade, then the recommendation itself if it was
    never probed. Fills s.ctx.lr / lr_records and report.probes["lr"].

    `alongside`: other independent probes (full-report's baseline, batch, regularisation and optimizer
    probes), sent with the decades' round in the background: nothing in the search waits for them, so a
    parallel executor runs them in the slots the search's rounds leave idle; the caller takes their records
    from s.collect_background() (the local executor runs them first, as before). On Ctrl-C, those that
    finished are handed to `on_alongside(task, record)`.

    `beside_recommendation(lr)`: probes that need the recommended lr (full-report's capacity and tiny-batch
    probes), run in the recommendation's own round, each also handed to `on_alongside`; another round fewer.
    Should the recommendation fail its probe, the caller sees a different s.ctx.lr.recommended than the lr
    those probes ran at, and runs them again."""
    from .errors import UsageError
    from .plan import LR_PROBE_STEPS
    spec, o = s.spec, s.opts
    if not (0 < o.min_lr <= o.max_lr):
        raise UsageError(f"--min-lr {o.min_lr:g} must be positive and <= --max-lr {o.max_lr:g}")
    steps = steps or o.steps or LR_PROBE_STEPS
    configured = spec.optimizer.lr
    dec = decades(o.max_lr, o.min_lr)
    records: dict[float, Any] = {}

    extra = list(alongside or [])

    def keep(t, rec) -> None:
        if any(t is e for e in extra):
            on_alongside(t, rec)
        elif rec.stopped != "skipped":
            records[t.key] = rec

    def probe(lrs: list[float], what: str, with_extra: bool = False, beside: list | None = None) -> None:
        todo = [lr for lr in lrs if lr not in records]
        tasks = [s.task(lr, spec.with_overrides(**{"optimizer.lr": lr}), f"lr {lr:.3g}", {"optimizer.lr": lr},
                        steps=steps, eval_every=0, record_every=0, instrument=False) for lr in todo]
        if beside:
            extra.extend(beside)
        tasks = list(beside or []) + tasks
        background = list(alongside or []) if with_extra else None
        for t, rec in zip(tasks, s.run_round(tasks, what, background=background)):
            keep(t, rec)

    try:
        probe(dec + ([configured] if configured not in dec else []),
              "probes: baseline, batch sizes, regularisation, lr decades" if extra else "lr probes: decades",
              with_extra=True)
    except KeyboardInterrupt:
        # keep what finished: the probes that ran are reported, without a recommendation
        tasks, recs = getattr(s.executor, "partial", ([], []))
        for t, rec in zip(tasks, recs):
            keep(t, rec)
        result = decide(records, dec, configured) if records else LrResult(configured=configured)
        result.recommended, result.reason = None, "interrupted (Ctrl-C) before the search finished"
        s.report.probes["lr"] = {**result.to_dict(), "steps_per_probe": steps, "optimizer": spec.optimizer.name}
        raise
    dec = dec + extend_below(records, dec, lambda lrs: probe(lrs, "lr probes: below --min-lr"))
    statuses = {lr: classify(r) for lr, r in records.items()}
    ok = first_working(statuses, dec)
    if ok is not None and dec.index(ok) > 0:
        above = dec[dec.index(ok) - 1]
        if statuses.get(above) not in (None, WORKING):   # probed, and failing
            probe(bisect_points(above, ok), "lr probes: bisection")
    result = decide(records, dec, configured)
    if result.recommended is not None:   # an lr already probed within 5% stands for the recommendation
        near = [lr for lr in records if abs(lr / result.recommended - 1) <= 0.05]
        if near:
            result.recommended = min(near, key=lambda lr: abs(lr / result.recommended - 1))
    if result.recommended is not None and result.recommended not in records:
        beside = beside_recommendation(result.recommended) if beside_recommendation else []
        probe([result.recommended], "lr probes: recommendation" + (", capacity and tiny batch" if beside else ""),
              beside=beside)
        if result.recommended in records and classify(records[result.recommended]) != WORKING:
            # the capped recommendation did not work: fall back to the best probe that did
            working = [lr for lr, r in records.items() if classify(r) == WORKING and min(dec) <= lr <= max(dec)]
            best = min(working, key=lambda lr: records[lr].final_loss) if working else None
            result = decide({k: v for k, v in records.items() if k != result.recommended}, dec, configured)
            result.recommended = best
        else:
            result.tried = [summarize(lr, records[lr], classify(records[lr]))
                            for lr in sorted(records, reverse=True)]
    mark_verified(result, records, s.opts.min_lr)
    s.ctx.lr, s.ctx.lr_records = result, records
    d = result.to_dict()
    d["steps_per_probe"] = steps
    d["optimizer"] = spec.optimizer.name
    s.report.probes["lr"] = d
    return result
