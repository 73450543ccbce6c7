"""Step 3 checks: the hyperparameters (H300-H308), read off the probe records in a ProbeContext.

Each check returns early when its probe is missing (skipped for the budget, or its prerequisite
failed) and never trains anything itself: the doctor runs the probes, these functions only judge
them. "Clearly better" always means both a relative margin and an absolute floor measured against
the probe's starting loss, so two runs that both reach a near-zero loss (0.06 vs 0.03 on wine) are
not told apart on noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .. import curves, lr_search
from .. import fmt
from ..lr_search import LrStatus
from ..probe import DIVERGE_FACTOR, EVAL_ROWS, ProbeRecord
from ..catalogue import Severity
from ..report import Finding
from . import check, codes_for_step
from .context import ProbeContext
from .gradients import loss_floor

HYPER_CODES = codes_for_step("H")   # the catalogue's codes of this step

# ---- thresholds -------------------------------------------------------------------------------------
CLEAR_MARGIN = 0.2        # "clearly lower" (H302/H303/H307): >= 20% below the other run's loss ...
CLEAR_FLOOR = 0.1         # ... AND lower by >= 10% of the probe's starting loss. Measured on wine (start 1.08):
                          # re-seeding a probe moves its converged val loss by ~0.01 (std), another split by up
                          # to 0.10 (0.063..0.165 over 8 splits); batch 8 vs 32 at ~34 epochs reach 0.02-0.05 vs
                          # 0.06-0.13 (-50..-80%, but both near-perfect: 2.9-7.8% of the start, not a finding);
                          # the real cases are far above: adam weight_decay 1 vs 0 ends 0.95 vs 0.09 (79% of the
                          # start), sgd 1e-3 vs adam 0.92 vs 0.09, batch 128 vs 32 at 10 epochs 0.69 vs 0.42 (25%)
NOT_WORSE_MARGIN = 0.1    # H303: the weaker regularisation's val loss may be up to 10% (or CLEAR_FLOOR of the
                          # start) above the configured one and still count as "not worse" (validation noise)
UNDERFIT_FRACTION = curves.HIGH_LOSS_FRACTION  # H305: train and val still above 50% of their starting loss after
                          # the probe (a working lr cuts it by >= 25% in 150 steps; healthy wine reaches 9%)
ADAM_LR = 0.001           # H307: the optimizer the doctor tries against a struggling one (seeds/000: Adam 1e-3)
ADAM_FAMILY = ("adam", "adamw")  # H307 says nothing when the configured optimizer is one of these
CONFIGURED_COVERAGE = 0.9  # H308: the baseline probe must cover >= 90% of the configured training's steps
                          # (epochs x ceil(rows / batch)) before "still falling at the end" says anything about it
LOWER_FACTOR = 10         # H300 with no working lr: lower the diverging lr by a decade (the seeds' descent step)
EPOCH_FACTOR = 2          # H308: suggest twice the epochs (a probe of the longer run verifies it)


# ---- helpers ----------------------------------------------------------------------------------------

_g = fmt.num   # numbers in messages: nn_doctor/fmt.py


def _breaks(status: LrStatus | None) -> bool:
    """The lr probe diverged or oscillated: the lr is too high."""
    return status is not None and LrStatus(status).breaks_training


def _lr(x: float | None) -> str:
    return "n/a" if x is None else f"{x:g}"


def _losses(rec: ProbeRecord | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    return {"initial_loss": rec.initial_loss, "final_loss": rec.final_loss,
            "initial_val_loss": rec.initial_val_loss, "final_val_loss": rec.final_val_loss,
            "steps": rec.steps_run, "stopped": rec.stopped, "error": rec.error, "overrides": rec.overrides}


def _path(summary: dict[str, Any] | None) -> str:
    """'1.06 -> 0.0922' (or where it stopped) for one probe summary."""
    if summary is None:
        return "not probed"
    if summary.get("stopped") in ("diverged", "non-finite"):
        return f"{_g(summary.get('initial_loss'))} -> {summary['stopped']} at step {summary.get('steps')}"
    return f"{_g(summary.get('initial_loss'))} -> {_g(summary.get('final_loss'))}"


def clearly_lower(a: float | None, b: float | None, ref: float | None) -> bool:
    """a is clearly below b: by CLEAR_MARGIN of b and by CLEAR_FLOOR of the reference (starting) loss."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return False
    floor = CLEAR_FLOOR * abs(ref) if ref is not None and math.isfinite(ref) else 0.0
    return a < b * (1 - CLEAR_MARGIN) and b - a >= floor


def _metric(rec: ProbeRecord, use_val: bool) -> float | None:
    return rec.final_val_loss if use_val else rec.final_loss


def _start(rec: ProbeRecord, use_val: bool) -> float | None:
    return rec.initial_val_loss if use_val else rec.initial_loss


def baseline_verdict(ctx: ProbeContext) -> curves.CurveVerdict | None:
    """The train/validation pattern of the run's curves: the logged run's (check-curves), else the baseline
    record's per-step training losses (denser than the two full-batch points of train_eval; the curve
    classifier smooths them) against its validation losses. A probe that stopped because its smoothed loss
    blew up is diverging whatever its last steps show; a run that "learned" only as far as the constant
    prediction's loss (the record's reference_loss) is a prior-collapse."""
    if ctx.curve is not None:
        try:
            return curves.classify_curves(ctx.curve.train, ctx.curve.val)
        except ValueError:   # fewer than MIN_POINTS finite training points
            return None
    b = ctx.baseline
    if b is None or b.error is not None or len(b.losses) < curves.MIN_POINTS:
        return None
    if b.stopped == "diverged":
        return curves.make_verdict("diverging", f"the probe stopped at step {b.steps_run}: its smoothed loss rose "
                                                f"above {DIVERGE_FACTOR:g}x its start",
                                   {"stopped": b.stopped, "steps": b.steps_run, "initial_loss": b.initial_loss,
                                    "thresholds": {"diverge_factor": DIVERGE_FACTOR}})
    verdict = curves.classify_curves(list(enumerate(b.losses)), b.val_losses or None)
    ref = b.reference_loss
    if verdict.pattern == "learning" and ref is not None and b.final_loss is not None \
            and b.final_loss > curves.level(ref, curves.PRIOR_MARGIN):
        evidence = {**verdict.evidence, "learning_by_trend": verdict.reason, "final_loss": b.final_loss,
                    "reference_loss": ref, "metrics": dict(b.metrics),
                    "thresholds": {**verdict.evidence.get("thresholds", {}), "prior_margin": curves.PRIOR_MARGIN}}
        return curves.make_verdict(
            "prior-collapse", f"the training loss fell ({_g(b.initial_loss)} -> {_g(b.final_loss)}) but not below "
                              f"{curves.PRIOR_MARGIN:.0%} of a constant prediction's loss ({_g(ref)})",
            evidence, verdict.still_falling, verdict.train_trend, verdict.val_trend)
    # "learning" by its trends, or overfitting, while no probe's validation ever beat chance: nothing carries over
    chance = _validation_at_chance(ctx, b) if verdict.pattern in ("learning", "overfitting") else None
    if chance is not None:
        evidence = {**verdict.evidence, "learning_by_trend": verdict.reason, "final_loss": b.final_loss,
                    "reference_loss": ref, "at_chance": chance}
        return curves.make_verdict(
            "overfitting", f"the model learns its training rows ({chance['best_fit']['probe']}: loss "
                           f"{_g(chance['best_fit']['final_loss'])} vs a constant prediction's "
                           f"{_g(chance['best_fit']['reference_loss'])}) but the validation {chance['metric']} "
                           f"{chance['value']:.3g} is no better than chance ({chance['chance']:.3g}; the bar is "
                           f"{chance['bar']:.3g} on {chance['rows']} rows) in the baseline and in all "
                           f"{chance['probes_at_chance'] - 1} lr probes: nothing it learns carries over",
            evidence, verdict.still_falling, verdict.train_trend, verdict.val_trend)
    return verdict


CHANCE_Z = 2.0   # a validation balanced accuracy within 2 standard errors of chance, sqrt(c (1 - c) / n), is chance
                 # (triage.RAISE_Z's two-sided 95 % bar): on wine's 36 rows and 3 classes the bar is 0.49
CHANCE_R2 = 0.0  # a regression whose validation R^2 is <= 0 predicts no better than the training mean
MEMORISED_FRACTION = 0.5   # "learned its training rows": some probe's training loss ends at most half a constant
                           # prediction's (a training R^2 >= 0.5 under mse); 5 % below it (PRIOR_MARGIN) is a nudge
                           # that seed noise can undo (an unscaled regression target read "at chance" on 2 of 3 seeds)


def _validation_at_chance(ctx: ProbeContext, b: ProbeRecord) -> dict[str, Any] | None:
    """The validation metric of a model that can learn its training rows, when it is no better than chance in the
    baseline and in every lr probe that trained: the balanced accuracy of a constant prediction (1 / C) plus
    noise, or R^2 <= 0. No lr generalising while some lr memorises is the evidence; a slow configured lr alone
    is not. None otherwise (or unmeasured)."""
    a = ctx.arrays
    if a is None or a.y_val is None or not len(a.y_val) or b.final_loss is None or b.reference_loss is None:
        return None
    if b.final_loss > curves.level(b.reference_loss, curves.PRIOR_MARGIN):
        return None                  # it did not learn its training rows either: prior-collapse's business
    n = min(len(a.y_val), EVAL_ROWS)
    runs = [b] + [r for r in ctx.lr_records.values() if r.ok and r.metrics and r.final_loss is not None
                  and r.reference_loss is not None]
    if "balanced_accuracy" in b.metrics and a.n_classes and a.n_classes >= 2:
        c = 1.0 / a.n_classes
        out = {"metric": "balanced accuracy", "chance": c, "bar": c + CHANCE_Z * math.sqrt(c * (1 - c) / n)}
        key = "balanced_accuracy"
    elif "r2" in b.metrics:
        out, key = {"metric": "R²", "chance": 0.0, "bar": CHANCE_R2}, "r2"
    else:
        return None
    values = [r.metrics.get(key) for r in runs]
    if any(v is None or v > out["bar"] for v in values):
        return None
    best = min(runs, key=lambda r: r.final_loss / r.reference_loss if r.reference_loss > 0 else math.inf)
    if not (best.reference_loss > 0 and best.final_loss <= MEMORISED_FRACTION * best.reference_loss):
        return None
    lr = best.overrides.get("optimizer.lr") if best is not b else None
    return {**out, "value": b.metrics[key], "rows": n, "probes_at_chance": len(runs),
            "best_fit": {"probe": f"lr {lr:g}" if lr else "baseline", "final_loss": best.final_loss,
                         "reference_loss": best.reference_loss}}


@dataclass
class RunCurves:
    """The curve checks' view of the run, whichever producer made it: its verdict and its losses."""

    verdict: curves.CurveVerdict
    span: str                        # "150-step baseline probe", "300-step monitored run", "42-point logged run"
    axis: str                        # the x axis of step numbers: "step" or "epoch"
    last: float | None               # the last step (or epoch) of the run
    initial_loss: float | None
    final_loss: float | None
    initial_val_loss: float | None
    final_val_loss: float | None
    ok: bool                         # finished with finite losses
    evidence: dict[str, Any]         # the verdict's evidence, plus where a log came from


def run_curves(ctx: ProbeContext) -> RunCurves | None:
    """The run's curves and verdict (None when there is no curve to judge)."""
    verdict = baseline_verdict(ctx)
    if verdict is None:
        return None
    ev = {"pattern": verdict.pattern, "reason": verdict.reason, "still_falling": verdict.still_falling,
          **verdict.evidence}
    if ctx.curve is not None:
        log = ctx.curve
        t, v = verdict.evidence.get("train") or {}, verdict.evidence.get("val") or {}
        ev["log"] = {k: log.info.get(k) for k in ("path", "rows", "train_col", "val_col", "step_col", "train_points",
                                                 "val_points", "unparsed_cells")}
        return RunCurves(verdict, f"{len(log.train)}-point {ctx.run_name}", log.axis, t.get("last_step"),
                         t.get("start"), t.get("end"), v.get("start"), v.get("end"),
                         verdict.evidence.get("first_nonfinite") is None, ev)
    b = ctx.baseline
    return RunCurves(verdict, f"{b.steps_run}-step {ctx.run_name}", "step", b.steps_run, b.initial_loss,
                     b.final_loss, b.initial_val_loss, b.final_val_loss, b.ok, ev)


def _tried(ctx: ProbeContext) -> list[dict[str, Any]]:
    return [{k: t.get(k) for k in ("lr", "status", "initial_loss", "final_loss", "final_val_loss", "steps",
                                   "stopped")} for t in (ctx.lr.tried if ctx.lr is not None else [])]


def _summary(ctx: ProbeContext, lr: float | None) -> dict[str, Any] | None:
    if lr is None or ctx.lr is None:
        return None
    return next((t for t in _tried(ctx) if t["lr"] is not None and math.isclose(t["lr"], lr, rel_tol=1e-6)), None)


def _best_working(ctx: ProbeContext) -> tuple[float, ProbeRecord] | None:
    """The working probe with the lowest training loss (lr_search.decide's choice before the safety cap)."""
    working = [(lr, r) for lr, r in ctx.lr_records.items()
               if lr_search.classify(r) == lr_search.WORKING and r.final_loss is not None]
    return min(working, key=lambda p: (p[1].final_loss, -p[0])) if working else None


# ---- H300 / H301: the learning rate -----------------------------------------------------------------

@check("H300", needs=("spec", "lr"))
def check_lr_too_high(ctx: ProbeContext) -> Finding | None:
    """H300 lr-too-high: the configured lr diverged or oscillated in its probe."""
    res = ctx.lr
    if res is None or res.configured is None:
        return None
    far_worse = _far_worse_than_recommended(ctx)
    if not _breaks(res.configured_status) and far_worse is None:
        return None
    conf_rec = ctx.lr_records.get(res.configured)
    if conf_rec is not None and conf_rec.initial_loss is None:
        return None   # non-finite before the first update: no lr acted yet (G400 says what did)
    if res.recommended is None and res.configured_status != LrStatus.DIVERGED:
        return None   # no probed lr trains at all and the configured one did not blow up: not the lr
    if not _breaks(res.configured_status) and over_regularized(ctx) is not None:
        return None   # the weight decay / dropout holds it back at every lr (H303). A configured lr that breaks
                      # training is H300 whatever the regularisation: H303 steps back then (check_over_regularized),
                      # so one of the two always speaks
    conf = _summary(ctx, res.configured)
    recommended = _summary(ctx, res.recommended)
    best = _best_working(ctx)
    evidence = {"configured_lr": res.configured, "configured_status": res.configured_status,
                "configured_probe": conf, "recommended_lr": res.recommended, "rule": res.rule,
                "recommended_probe": recommended or (_summary(ctx, best[0]) if best else None),
                "edge_of_stability": res.edge, "tried": _tried(ctx),
                "thresholds": {"diverge_factor": DIVERGE_FACTOR, "unstable_rise": lr_search.UNSTABLE_RISE,
                               "min_progress": lr_search.MIN_PROGRESS, "safety_factor": lr_search.SAFETY_FACTOR}}
    if _breaks(res.configured_status):
        what = "diverged" if res.configured_status == LrStatus.DIVERGED else "oscillated"
    else:
        what = (f"ends far above what lower lrs reach ({_g(far_worse['mine'])} vs {_g(far_worse['theirs'])} at "
                f"lr {_lr(far_worse['best_lr'])})")
        evidence["far_worse"] = {k: v for k, v in far_worse.items() if k != "best"}
    message = f"the configured lr {_lr(res.configured)} {what} in its probe (loss {_path(conf)})"
    if res.recommended is None:
        lower = float(f"{res.configured / LOWER_FACTOR:.2g}")
        return Finding("H300", message + "; no probed lr trained well either",
                       f"lower optimizer.lr from {_lr(res.configured)} to {_lr(lower)} (it must at least stop "
                       f"diverging), then look at the data, model and gradient findings: no lr in the probed "
                       f"range made the training loss fall by {lr_search.MIN_PROGRESS:.0%}", evidence,
                       patch={"optimizer.lr": lower})
    if res.edge is not None:
        message += f"; training breaks above ~{_lr(res.edge)}"
    shown = evidence["recommended_probe"]
    if recommended is not None:
        tested = f" (its probe: loss {_path(recommended)})"
    elif shown is not None:   # the recommendation is the best probe capped below the edge of stability
        tested = f" (the best probe, lr {_lr(shown['lr'])}: loss {_path(shown)})"
    else:
        tested = ""
    return Finding("H300", message, f"lower optimizer.lr from {_lr(res.configured)} to {_lr(res.recommended)}{tested}",
                   evidence, patch={"optimizer.lr": res.recommended})


def _far_worse_than_recommended(ctx: ProbeContext) -> dict[str, Any] | None:
    """The configured lr is above the recommended one and its probe ends clearly worse than the best
    working probe: too high although it did not blow up (e.g. adam at 0.3-0.5 killing ReLUs or settling in a
    poor region: LSTM on digits 2.31 -> 1.37 vs 0.049 at lr 0.01)."""
    res = ctx.lr
    if res.recommended is None or res.configured <= res.recommended:
        return None
    conf_rec, best = ctx.lr_records.get(res.configured), _best_working(ctx)
    if conf_rec is None or best is None or conf_rec.final_loss is None:
        return None
    best_lr, best_rec = best
    if best_lr >= res.configured or not clearly_lower(best_rec.final_loss, conf_rec.final_loss, conf_rec.initial_loss):
        return None
    return {"best_lr": best_lr, "mine": conf_rec.final_loss, "theirs": best_rec.final_loss,
            "thresholds": {"clear_margin": CLEAR_MARGIN, "clear_floor": CLEAR_FLOOR}}


def lr_too_low(ctx: ProbeContext) -> dict[str, Any] | None:
    """The H301 condition: the configured lr works (or is too slow) but makes < TOO_LOW_RATIO of the best
    working probe's progress, and the sweep recommends a higher lr. Returns the numbers, or None."""
    res = ctx.lr
    if res is None or res.recommended is None or res.configured is None:
        return None
    if res.configured_status not in (LrStatus.CONVERGING, LrStatus.TOO_SLOW) or res.configured >= res.recommended:
        return None
    if over_regularized(ctx) is not None:
        return None   # dropout / weight decay is what slows it down (H303), not the lr
    conf_rec = ctx.lr_records.get(res.configured)
    best = _best_working(ctx)
    if conf_rec is None or best is None:
        return None
    best_lr, best_rec = best
    mine, theirs = lr_search.progress(conf_rec), lr_search.progress(best_rec)
    if theirs <= 0 or mine >= lr_search.TOO_LOW_RATIO * theirs:
        return None
    return {"configured": conf_rec, "best_lr": best_lr, "best": best_rec, "mine": mine, "theirs": theirs}


@check("H301", needs=("spec", "lr"))
def check_lr_too_low(ctx: ProbeContext) -> Finding | None:
    """H301 lr-too-low: the configured lr makes far less progress than the sweep's best lr."""
    low = lr_too_low(ctx)
    if low is None:
        return None
    res, conf_rec, best_lr, best_rec = ctx.lr, low["configured"], low["best_lr"], low["best"]
    mine, theirs = low["mine"], low["theirs"]
    ratio = mine / theirs
    evidence = {"configured_lr": res.configured, "configured_status": res.configured_status,
                "configured_progress": mine, "best_lr": best_lr, "best_progress": theirs, "progress_ratio": ratio,
                "configured_probe": _summary(ctx, res.configured), "best_probe": _summary(ctx, best_lr),
                "recommended_lr": res.recommended, "rule": res.rule, "tried": _tried(ctx),
                "thresholds": {"too_low_ratio": lr_search.TOO_LOW_RATIO, "min_progress": lr_search.MIN_PROGRESS}}
    share = f"{ratio:.0%}" if ratio >= 0.01 else "<1%"
    return Finding("H301",
                   f"in {conf_rec.steps_run} steps the configured lr {_lr(res.configured)} cut the training loss "
                   f"by {_g(mine)} ({_g(conf_rec.initial_loss)} -> {_g(conf_rec.final_loss)}), {share} of the "
                   f"{_g(theirs)} that lr {_lr(best_lr)} did (-> {_g(best_rec.final_loss)})",
                   f"raise optimizer.lr from {_lr(res.configured)} to {_lr(res.recommended)}",
                   evidence, patch={"optimizer.lr": res.recommended})


# ---- H302 / H303: batch size and regularisation ------------------------------------------------------

@check("H302", needs=("spec", "batch"), uses=("curves", "lr", "memory"))
def check_batch_size(ctx: ProbeContext) -> Finding | None:
    """H302 batch-size: another batch size fits clearly better at equal samples seen, or the configured
    one does not fit in memory.

    The batch probes share a sample budget that can be shorter than the configured training (the doctor
    caps it at ~10 epochs), and there a smaller batch wins only because it made more updates. So the
    configured batch is also credited with what the baseline (the configured spec) reached by the end
    of the configured training, and another size must beat the better of the two.
    """
    configured = ctx.spec.training.batch_size
    mem = ctx.memory or {}
    if mem.get("oom"):
        fits = mem.get("max_batch")
        evidence = {"configured_batch_size": configured, "memory": mem}
        if fits:
            return Finding("H302", f"batch size {configured} does not fit in memory; the largest that fits is {fits}",
                           f"set training.batch_size: {fits} (or use gradient accumulation / mixed precision; "
                           f"see R501)", evidence, patch={"training.batch_size": int(fits)})
        return Finding("H302", f"batch size {configured} does not fit in memory, and no smaller batch was found "
                               f"to fit", "shrink the model or the inputs, or use mixed precision (see R501)", evidence)
    conf = _configured_batch(ctx)
    if conf is None or not conf.ok:
        return None
    res = ctx.lr
    if res is not None and res.configured is not None and (
            _breaks(res.configured_status) or _far_worse_than_recommended(ctx) is not None):
        return None   # at a broken lr every batch size compares noise (H300 is the finding)
    verdict = baseline_verdict(ctx)
    if verdict is not None and verdict.still_falling:
        return None   # a training that is simply too short favours the batch with more updates (H308)
    conf_bs = next(bs for bs, r in ctx.batch.items() if r is conf)
    runs = {bs: r for bs, r in ctx.batch.items() if r.ok and r.final_loss is not None}
    use_val = all(r.final_val_loss is not None for r in runs.values())
    if len(runs) < 2 or _metric(conf, use_val) is None:
        return None
    best = min(runs, key=lambda bs: (_metric(runs[bs], use_val), bs))
    which = "validation" if use_val else "training"
    at_equal = _metric(conf, use_val)
    full = _configured_training_loss(ctx, use_val)
    mine = min(at_equal, full) if full is not None else at_equal
    theirs = _metric(runs[best], use_val)
    if best == conf_bs or not clearly_lower(theirs, mine, _start(conf, use_val)):
        return None
    evidence = {"configured_batch_size": configured, "probed_as": conf_bs, "best_batch_size": best,
                "compared": f"final {which} loss", "configured_at_equal_samples": at_equal,
                "configured_training": full,
                "runs": {bs: {"steps": r.steps_run, "final_loss": r.final_loss, "final_val_loss": r.final_val_loss}
                         for bs, r in sorted(runs.items())},
                "thresholds": {"clear_margin": CLEAR_MARGIN, "clear_floor": CLEAR_FLOOR}}
    direction = "smaller" if best < conf_bs else "larger"
    also = f" ({_g(full)} by the end of the configured training)" if full is not None else ""
    return Finding("H302",
                   f"at equal samples seen, batch size {best} reaches a {which} loss of {_g(theirs)} in "
                   f"{runs[best].steps_run} steps vs {_g(at_equal)} for the configured {configured} in "
                   f"{conf.steps_run}{also}",
                   f"set training.batch_size: {best} (a {direction} batch"
                   + (", more updates per epoch)" if best < conf_bs else ", less gradient noise)"),
                   evidence, patch={"training.batch_size": best})


def configured_steps(ctx: ProbeContext) -> int | None:
    """Steps of the configured training: epochs x ceil(rows / batch) (None without data)."""
    if ctx.arrays is None:
        return None
    from ..session import configured_steps as steps
    return steps(ctx.spec, len(ctx.arrays.X))


def _configured_training_loss(ctx: ProbeContext, use_val: bool) -> float | None:
    """The baseline's loss at the end of the configured training (the last validation point at or before
    its step count; the final training loss only when the baseline is not longer than the training)."""
    b, steps = ctx.baseline, configured_steps(ctx)
    if b is None or not b.ok or steps is None:
        return None
    if (b.settings or {}).get("batch_size") not in (None, ctx.spec.training.batch_size):
        return None
    if use_val:
        points = [v for s, v in b.val_losses if v is not None and s <= steps]
        return points[-1] if points else None
    return b.final_loss if b.steps_run <= steps else None


def _configured_batch(ctx: ProbeContext) -> ProbeRecord | None:
    """The batch probe of the configured size; the doctor probes it clipped to the training rows and to at
    least 8, so look under those keys too."""
    configured = ctx.spec.training.batch_size
    keys = [configured]
    if ctx.arrays is not None:
        n = len(ctx.arrays.X)
        keys += [min(configured, n), max(8, min(n, configured))]
    return next((ctx.batch[k] for k in keys if k in ctx.batch), None)


def describe_overrides(overrides: dict[str, Any]) -> str:
    """'optimizer.weight_decay: 0.0, dropout p: 0.0' (a model.layers override is summarised by its dropout)."""
    parts = []
    for k, v in overrides.items():
        if k == "model.layers" and isinstance(v, list):
            drops = [lay for lay in v if isinstance(lay, dict) and str(lay.get("type", "")).startswith("dropout")]
            ps = sorted({lay.get("p") for lay in drops}, key=str)
            parts.append(f"dropout p: {', '.join(map(str, ps))}" if ps else "model.layers changed")
        else:
            parts.append(f"{k}: {v}")
    return ", ".join(parts)


def over_regularized(ctx: ProbeContext, clear: bool = True) -> tuple[ProbeRecord, ProbeRecord] | None:
    """The H303 condition: the weaker-regularisation probe reaches a clearly lower training loss (with
    clear=False: any lower one) and a validation loss no worse (within NOT_WORSE_MARGIN). Returns (configured,
    weaker) or None."""
    conf, weak = ctx.regularization.get("configured"), ctx.regularization.get("weaker")
    if conf is None or weak is None or not weak.ok or weak.final_loss is None:
        return None
    if conf.ok and conf.final_loss is not None and not (
            clearly_lower(weak.final_loss, conf.final_loss, conf.initial_loss) if clear
            else weak.final_loss < conf.final_loss):
        return None
    if weak.final_val_loss is not None and conf.final_val_loss is not None:
        slack = max(NOT_WORSE_MARGIN * abs(conf.final_val_loss), CLEAR_FLOOR * abs(conf.initial_val_loss or 0.0))
        if weak.final_val_loss > conf.final_val_loss + slack:
            return None
    return conf, weak


HEAVY_DROPOUT = 0.5        # H303 remark: dropout above the p = 0.5 Srivastava et al. (2014) used for hidden units
HEAVY_WEIGHT_DECAY = 0.1   # ... or an L2 weight decay (added to the gradient) above 0.1, 10x the usual 1e-4..1e-2,
HEAVY_DECOUPLED_DECAY = 1.0  # ... or AdamW's decoupled decay above 1.0, 10x the top of its usual 0.01-0.1 range


def _heavy_regularisation(ctx: ProbeContext) -> bool:
    reg = _regularisation(ctx)
    limit = HEAVY_DECOUPLED_DECAY if reg.get("optimizer") == "adamw" else HEAVY_WEIGHT_DECAY
    return any(p > HEAVY_DROPOUT for p in reg.get("dropout_p") or []) or (reg.get("weight_decay") or 0.0) > limit


@check("H303", needs=("spec", "regularization"), uses=("curves", "lr"))
def check_over_regularized(ctx: ProbeContext) -> Finding | None:
    """H303 over-regularized: a weaker weight decay / dropout fits clearly better and validates no worse."""
    found, severity = over_regularized(ctx), None
    if found is None:
        # lower but not clearly (small data, or a loss that dropout keeps noisy): a remark whose counterfactual
        # probe decides (treatment.py); a clear validation gain raises it to a warning (triage.py)
        found, severity = (over_regularized(ctx, clear=False) if _heavy_regularisation(ctx) else None), Severity.INFO
    if found is None:
        return None
    if ctx.lr is not None and _breaks(ctx.lr.configured_status) and \
            ctx.regularization.get("configured") is not None and not ctx.regularization["configured"].ok:
        return None   # both probes ran at an lr that breaks training: H300 first
    conf, weak = found
    changes = describe_overrides(weak.overrides) or "weaker regularisation"
    evidence = {"configured": _regularisation(ctx), "weaker_overrides": dict(weak.overrides),
                "configured_probe": _losses(conf), "weaker_probe": _losses(weak),
                "thresholds": {"clear_margin": CLEAR_MARGIN, "clear_floor": CLEAR_FLOOR,
                               "not_worse_margin": NOT_WORSE_MARGIN}}
    val = (f" (validation {_g(weak.final_val_loss)} vs {_g(conf.final_val_loss)})"
           if weak.final_val_loss is not None and conf.final_val_loss is not None else "")
    got = _g(conf.final_loss) if conf.ok else f"nothing (it {conf.stopped})"
    return Finding("H303",
                   f"the regularisation {'may hold' if severity else 'holds'} the fit back: with {changes} the "
                   f"training loss reaches "
                   f"{_g(weak.final_loss)} instead of {got}{val}",
                   f"set {changes}", evidence, severity=severity, patch=dict(weak.overrides) or None)


# ---- H304 / H305 / H306 / H308: the run's curves ----------------------------------------------------

RAISED_PATTERNS = {"diverging", "data-problem"}   # H306 as a warning on the user's own run: there no lr probe
                                                  # (H300) names a divergence and no other code a data problem


def _regularisation(ctx: ProbeContext) -> dict[str, Any]:
    """The run's weight decay and dropout: the spec's; for a monitored run the optimizer's weight decay."""
    if ctx.spec is None:
        return {"weight_decay": ctx.setting("weight_decay"), "optimizer": ctx.setting("name"), "dropout_p": None}
    layers = ctx.spec.model.layers or []
    drop = [lay.kwargs.get("p", 0.5) for lay in layers if lay.type.startswith("dropout")]
    return {"weight_decay": ctx.spec.optimizer.weight_decay, "optimizer": ctx.spec.optimizer.name,
            "dropout_p": drop}


@check("H304", needs=("curves",))
def check_overfitting(ctx: ProbeContext) -> Finding | None:
    """H304 overfitting: the run's training loss falls while its validation loss is flat or rises."""
    run = run_curves(ctx)
    if run is None or run.verdict.pattern != "overfitting" or not run.ok:
        return None
    gap = None if run.final_val_loss is None or run.final_loss is None else run.final_val_loss - run.final_loss
    v = run.verdict.evidence.get("val") or {}
    evidence = {**run.evidence, "final_train_loss": run.final_loss, "final_val_loss": run.final_val_loss,
                "generalisation_gap": gap,
                "relative_gap": None if gap is None or not run.final_val_loss else gap / abs(run.final_val_loss),
                "regularisation": _regularisation(ctx)}
    low = v.get("min_step")
    stop = (f" (the validation loss was lowest at {run.axis} {low:g} of {run.last:g})"
            if low and run.last is not None and low < run.last else "")
    fix = ctx.fix_text("add dropout (a dropout layer with p 0.2-0.5 after the hidden layers) or "
                       "optimizer.weight_decay (e.g. 1e-4)",
                       "add dropout (nn.Dropout with p 0.2-0.5 after the hidden layers) or weight decay "
                       "(the optimizer's weight_decay, e.g. 1e-4)")
    if run.verdict.evidence.get("at_chance"):
        # nothing carried over at all: the training is broken, not merely too long (an error: a CI gate must not
        # pass it), and the data itself is the first suspect; stopping earlier cannot lift chance
        return Finding("H304", run.verdict.reason,
                       "check that the targets belong to their rows and are what you mean to predict (a shuffle or "
                       "a join can misalign them; an id column carries no signal) and that the features carry the "
                       "signal; then " + fix + ", or get more training data",
                       evidence, severity=Severity.ERROR)
    if ctx.curve is not None:   # a logged run: quote the values as logged, not the smoothed window means
        last_t, last_v = _last_logged(ctx.curve.train), _last_logged(ctx.curve.val or [])
        evidence.update({"last_logged_train_loss": last_t, "last_logged_val_loss": last_v})
        tail = f"last logged: training {_g(last_t)}, validation {_g(last_v)}"
    else:
        tail = f"final train {_g(run.final_loss)} vs validation {_g(run.final_val_loss)}"
    patch, fix_stop = None, f"stop earlier{stop}"
    total = configured_steps(ctx)
    if ctx.source == "probe" and ctx.curve is None and low and total and run.last and low < run.last \
            and ctx.baseline is not None and ctx.baseline.steps_run >= CONFIGURED_COVERAGE * min(total, run.last):
        # a probe covering the configured training: stop at the epoch of the lowest validation loss (the fix
        # a counterfactual probe can test; dropout or weight decay need a size the probe cannot pick for you)
        t = ctx.spec.training
        per_epoch = max(1, total // max(1, t.epochs))
        epochs = max(1, math.ceil(low / per_epoch))
        if epochs < t.epochs:
            patch = {"training.epochs": epochs}
            fix_stop = f"stop earlier: set training.epochs from {t.epochs} to {epochs}{stop}"
            return Finding("H304", f"{run.verdict.reason}; {tail}",
                           f"{fix_stop}; or {fix}, or get more training data", evidence, patch=patch)
    return Finding("H304", f"{run.verdict.reason}; {tail}", f"{fix}, {fix_stop}, or get more training data",
                   evidence)


def _last_logged(series) -> float | None:
    """The last finite value of a logged curve [(x, y), ...] as it was logged."""
    return next((float(y) for _, y in reversed(list(series)) if fmt.finite(y)), None)


def _best_probe(ctx: ProbeContext) -> dict[str, Any] | None:
    """The lowest final training loss any probe of the context reached (H305 evidence: what is attainable)."""
    runs = [(f"lr {lr:g}", r) for lr, r in ctx.lr_records.items()]
    runs += [(f"batch {bs}", r) for bs, r in ctx.batch.items()]
    runs += [(f"regularisation {k}", r) for k, r in ctx.regularization.items()]
    runs += [(f"optimizer {k}", r) for k, r in ctx.optimizers.items()]
    runs = [(name, r) for name, r in runs if r.ok and r.final_loss is not None]
    if not runs:
        return None
    name, r = min(runs, key=lambda p: p[1].final_loss)
    return {"probe": name, "initial_loss": r.initial_loss, "final_loss": r.final_loss, "steps": r.steps_run}


def _above(loss: float | None, floor: float) -> float | None:
    return None if loss is None else max(loss - floor, 0.0)


def _ratio(end: float | None, start: float | None) -> float | None:
    return end / start if end is not None and start and start > 0 else None


@check("H305", needs=("curves",), uses=("batch", "lr", "optimizer", "regularization"))
def check_underfitting(ctx: ProbeContext) -> Finding | None:
    """H305 underfitting: training and validation loss both stay high, and the lr is not the reason."""
    run = run_curves(ctx)
    if run is None or not run.ok or run.verdict.pattern in ("diverging", "overfitting"):
        return None   # overfitting (H304) is the opposite diagnosis, even when label noise keeps train high
    # measured above the lowest reachable loss: under label smoothing 0.9 on 3 classes cross-entropy cannot go below
    # 1.089 (ln 3 is 1.099), so a run that reached it read "still 98% of its start" and was told to grow
    floor = loss_floor(ctx) if ctx.spec is not None else 0.0
    train_ratio = _ratio(_above(run.final_loss, floor), _above(run.initial_loss, floor))
    val_ratio = _ratio(_above(run.final_val_loss, floor), _above(run.initial_val_loss, floor))
    if train_ratio is None or train_ratio <= UNDERFIT_FRACTION or (val_ratio is not None
                                                                   and val_ratio <= UNDERFIT_FRACTION):
        return None
    res = ctx.lr
    # a diverging/oscillating lr (H300) or a too-low one that a higher lr fixes (H301) is the explanation
    if res is not None and (_breaks(res.configured_status)
                            or (res.configured_status == LrStatus.TOO_SLOW and res.recommended is not None)
                            or lr_too_low(ctx) is not None):
        return None
    if over_regularized(ctx) is not None or adam_clearly_better(ctx) is not None:
        return None   # H303 / H307 name the cause and a tested fix
    reg = _regularisation(ctx)
    if ctx.spec is not None:
        hints = ["more capacity (wider or more hidden layers in model.layers)", "longer training (training.epochs)"]
        if reg["weight_decay"] or reg["dropout_p"]:
            hints.append("less regularisation (optimizer.weight_decay / the dropout p)")
    else:
        hints = ["more capacity (a wider or deeper model)", "longer training (more epochs)"]
        if reg["weight_decay"] is None or reg["weight_decay"] > 0:
            hints.append("less regularisation (weight decay, dropout)")
        hints.append("a better learning rate (nn-doctor probe-lr finds one)")
    evidence = {**run.evidence, "train_ratio": train_ratio, "val_ratio": val_ratio,
                "initial_loss": run.initial_loss, "final_loss": run.final_loss,
                "initial_val_loss": run.initial_val_loss, "final_val_loss": run.final_val_loss,
                "steps": run.last, "lr_status": res.configured_status if res is not None else "not probed",
                **({"loss_floor": floor} if floor else {}),
                "regularisation": reg, "best_probe": _best_probe(ctx),
                "thresholds": {"underfit_fraction": UNDERFIT_FRACTION}}
    val = (f", validation {_g(run.initial_val_loss)} -> {_g(run.final_val_loss)} "
           f"({fmt.share(run.final_val_loss, run.initial_val_loss)})"
           if val_ratio is not None else "")
    when = f"after {run.last:g} steps" if ctx.curve is None else f"at the end of the {run.span}"
    severity, patch, learned = None, None, _learned_share(ctx, run)
    if learned is not None and learned <= LEARNED_SHARE:
        # it learns from the inputs, and a noisy target (or a loss such as L1) may keep the loss high whatever
        # the model: a remark whose spec change a probe tests (longer if still falling, else wider); a clear
        # validation gain raises it to a warning (triage.py)
        severity = Severity.INFO
        evidence["learned_share"] = learned
        from .model import layer_dicts, measured_outputs, widened
        layers = layer_dicts(ctx)
        if run.verdict.still_falling:
            patch = {"training.epochs": ctx.spec.training.epochs * EPOCH_FACTOR}
        elif layers:
            new = widened(layers, measured_outputs(ctx) or 1)
            patch = {"model.layers": new} if new else None
    return Finding("H305",
                   f"{when} the training loss is still {fmt.share(run.final_loss, run.initial_loss)} of its start "
                   f"({_g(run.initial_loss)} -> {_g(run.final_loss)}){val}; pattern {run.verdict.pattern}"
                   + (f"; it is {fmt.share(learned, 1.0)} of a constant prediction's loss, so the inputs are used"
                      if severity else ""),
                   "; or ".join(hints), evidence, severity=severity, patch=patch)


LEARNED_SHARE = 0.8   # H305: a probe run ending at <= 80% of the best constant prediction's loss learns from the
                      # inputs (the lr search counts 95% as trained, lr_search.REFERENCE_MARGIN); its high loss is
                      # then a remark until a probe shows that a longer or wider run validates better


def _learned_share(ctx: ProbeContext, run) -> float | None:
    """The run's final training loss over the loss of the best constant prediction (probes only)."""
    b = ctx.baseline
    if ctx.source != "probe" or ctx.curve is not None or ctx.spec is None or b is None:
        return None
    ref = b.reference_loss
    if ref is None or ref <= 0 or run.final_loss is None:
        return None
    return run.final_loss / ref


@check("H306", needs=("curves",))
def check_loss_curve_pattern(ctx: ProbeContext) -> Finding | None:
    """H306 loss-curve-pattern: which of the seeds' train/validation patterns the run shows."""
    run = run_curves(ctx)
    if run is None:
        return None
    verdict, evidence = run.verdict, dict(run.evidence)
    severity = None
    if ctx.source != "probe" and verdict.pattern in RAISED_PATTERNS and "first_nonfinite" not in verdict.evidence \
            and (ctx.baseline is None or ctx.baseline.first_nonfinite is None):
        severity = "warning"
        evidence["severity_reason"] = f"the {verdict.pattern} pattern is reported by no other code for this run"
    elif ctx.source == "probe" and verdict.pattern == "diverging" and "first_nonfinite" not in verdict.evidence \
            and ctx.baseline is not None and ctx.baseline.first_nonfinite is None:
        # the configured training itself broke: a run whose every later check saw only its first steps is never
        # healthy. A cause found elsewhere (H300, H303, ...) makes this a symptom (triage.py); without one it
        # is the finding (the lr probes can converge where the configured run, with its dropout noise, did not)
        severity = "warning"
        evidence["severity_reason"] = (f"the configured training broke in the baseline probe (stopped at step "
                                       f"{ctx.baseline.steps_run}): nothing after that step was checked")
    return Finding("H306", f"{verdict.pattern} over the {run.span}: {verdict.reason}", verdict.seeds_advice,
                   evidence, severity=severity)


def _short_training(ctx: ProbeContext) -> Finding | None:
    """H308 when the configured training is shorter than the baseline probe: the spec run for exactly its
    configured updates (plan.py's "as configured" probe) ends clearly above where the longer baseline gets."""
    short, b, total = ctx.as_configured, ctx.baseline, configured_steps(ctx)
    if short is None or b is None or total is None or not short.ok or not b.ok:
        return None
    use_val = short.final_val_loss is not None and b.final_val_loss is not None
    end, longer = _metric(short, use_val), _metric(b, use_val)
    if not clearly_lower(longer, end, _start(short, use_val)):
        return None
    t = ctx.spec.training
    per_epoch = max(1, total // max(1, t.epochs))
    epochs = max(t.epochs * EPOCH_FACTOR, math.ceil(b.steps_run / per_epoch))
    which = "validation" if use_val else "training"
    evidence = {"configured_steps": total, "epochs": t.epochs, "steps_per_epoch": per_epoch,
                f"{which}_loss_at_configured_end": end, f"{which}_loss_after_probe": longer,
                "probe_steps": b.steps_run, "thresholds": {"clear_margin": CLEAR_MARGIN, "clear_floor": CLEAR_FLOOR}}
    return Finding("H308",
                   f"the configured training is only {total} updates ({t.epochs} epochs x {per_epoch}): it ends at a "
                   f"{which} loss of {_g(end)}, while the same spec reaches {_g(longer)} in {b.steps_run} updates",
                   f"raise training.epochs from {t.epochs} to {epochs}", evidence,
                   patch={"training.epochs": epochs}, severity="warning")


@check("H308", needs=("curves",))
def check_not_converged(ctx: ProbeContext) -> Finding | None:
    """H308 not-converged: the training stops far from where it would get (a configured training shorter than
    the probe), or its loss still falls steeply at the end of a configured-length run."""
    if ctx.source == "probe":
        short = _short_training(ctx)
        if short is not None:
            return short
    run = run_curves(ctx)
    if run is None or not run.verdict.still_falling or not run.ok or run.verdict.pattern == "diverging":
        return None
    frac = run.verdict.evidence["train"].get("last_quarter_drop_fraction")
    thresholds = {"still_falling_fraction": curves.STILL_FALLING_FRACTION}
    if ctx.source != "probe":   # the user's own run is the configured training
        return Finding("H308", f"the training loss is still falling at the end of the {run.span}: its last "
                               f"quarter made {frac:.0%} of the drop", "train longer (more epochs)",
                       {**run.evidence, "steps": run.last, "last_quarter_drop_fraction": frac,
                        "thresholds": thresholds})
    b, total = ctx.baseline, configured_steps(ctx)
    if ctx.curve is not None or b is None or total is None or b.steps_run < CONFIGURED_COVERAGE * total:
        return None   # a probe shorter than the training says nothing about where the training ends
    t = ctx.spec.training
    evidence = {**run.evidence, "configured_steps": total, "probe_steps": b.steps_run,
                "last_quarter_drop_fraction": frac,
                "thresholds": {**thresholds, "configured_coverage": CONFIGURED_COVERAGE}}
    return Finding("H308",
                   f"the training loss is still falling at the end of a {b.steps_run}-step probe (the configured "
                   f"{t.epochs} epochs are {total} steps): its last quarter made {frac:.0%} of the drop",
                   f"raise training.epochs from {t.epochs} to {t.epochs * EPOCH_FACTOR}", evidence,
                   patch={"training.epochs": t.epochs * EPOCH_FACTOR})


# ---- H307: the optimizer ----------------------------------------------------------------------------

def adam_clearly_better(ctx: ProbeContext) -> tuple[ProbeRecord, ProbeRecord] | None:
    """The H307 condition: the configured optimizer is not adaptive and the adam probe reaches a clearly
    lower training loss (or trains where the configured one diverged). Returns (configured, adam) or None."""
    conf, adam = ctx.optimizers.get("configured"), ctx.optimizers.get("adam")
    if conf is None or adam is None or not adam.ok or adam.final_loss is None:
        return None
    if ctx.spec.optimizer.name in ADAM_FAMILY:   # already adaptive: a bad lr is H300/H301's business
        return None
    if conf.ok and not clearly_lower(adam.final_loss, conf.final_loss, conf.initial_loss):
        return None
    return conf, adam


@check("H307", needs=("spec", "optimizer"), uses=("curves",))
def check_optimizer_choice(ctx: ProbeContext) -> Finding | None:
    """H307 optimizer-choice: Adam at 1e-3 trains clearly faster than the configured optimizer."""
    found = adam_clearly_better(ctx)
    if found is None:
        return None
    conf, adam = found
    o = ctx.spec.optimizer
    evidence = {"configured": {"name": o.name, "lr": o.lr, "momentum": o.momentum, **(_losses(conf) or {})},
                "adam": {"name": "adam", "lr": ADAM_LR, **(_losses(adam) or {})},
                "thresholds": {"clear_margin": CLEAR_MARGIN, "clear_floor": CLEAR_FLOOR}}
    got = _g(conf.final_loss) if conf.ok else f"nothing: it {conf.stopped} at step {conf.steps_run}"
    patch = dict(adam.overrides) or {"optimizer.name": "adam", "optimizer.lr": ADAM_LR}
    # info by default; a warning when the configured optimizer leaves the training underfit (it is then the
    # cause H305 defers to, and must not be outranked by a symptom such as G407)
    stuck = conf.ok and conf.initial_loss and conf.final_loss is not None and \
        conf.final_loss > UNDERFIT_FRACTION * conf.initial_loss
    severity = "warning" if stuck else None
    return Finding("H307",
                   f"adam (lr {ADAM_LR:g}) reaches a training loss of {_g(adam.final_loss)} in {adam.steps_run} "
                   f"steps; the configured {o.name} (lr {o.lr:g}) reaches {got}",
                   f"set {describe_overrides(patch)}", evidence, patch=patch, severity=severity)
