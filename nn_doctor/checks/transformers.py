"""Checks for the transformer-era settings (issue: transformers, token data, lr schedules, mixed precision):

H309 no-warmup, H310 lr-below-search-range, H311 weight-decay-on-norm-bias (step 3); G410 fp16-overflow,
G411 attention-collapse, G412 accumulation-loss-not-divided, G413 zero-grad-every-micro-step (step 4).

Each reads records only: the baseline probe, the counterfactual probes of transformer_probes.py
(ctx.extra), the lr search and the user-step harness. A finding whose fix was itself probed carries that
probe's result in `verified` and the spec change in `patch`.
"""
from __future__ import annotations

import math
from typing import Any

from .. import lr_search as L
from ..probe import ProbeRecord
from ..report import Finding
from . import check
from .context import ProbeContext

FIX_GAIN = 0.10           # a counterfactual probe "trains measurably better" when its loss is >= 10% lower: the
                          # doctor's VERIFY_IMPROVEMENT, so a fix that fires is one the verification accepts
FIX_GAIN_ABS = 0.05       # ... and >= 5% of the initial loss lower in absolute terms: two converged probes differ by
                          # 10-40% of a tiny loss from run to run (measured: weight decay 0.01 vs 0.1 on the copy
                          # task, 0.0018 vs 0.0022), which is noise, not a fix (lr_search's NEAR_BEST_ABS is 0.1)
COLLAPSED_ENTROPY = 0.1   # G411: a head's attention entropy below 10% of ln(keys): nearly every query puts all its
                          # weight on one key (healthy heads here stay 0.75-0.97 over 300 steps)
UNIFORM_ENTROPY = 0.98    # G411: above 98% of ln(keys): attention is uniform (random init gives ~0.95-0.97)
COLLAPSED_HEAD_SHARE = 0.5  # G411: at least half the heads of some attention layer collapsed


def _g(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _loss(rec: ProbeRecord | None) -> float | None:
    """The loss a fix is judged by: validation when both probes have it, else training."""
    if rec is None:
        return None
    return rec.final_val_loss if rec.final_val_loss is not None else rec.final_loss


def _verified(patch: dict[str, Any], base: ProbeRecord, fixed: ProbeRecord) -> dict[str, Any]:
    b, a = _loss(base), _loss(fixed)
    which = "validation" if base.final_val_loss is not None and fixed.final_val_loss is not None else "training"
    if which == "training":
        b, a = base.final_loss, fixed.final_loss
    start = abs(base.initial_loss or fixed.initial_loss or 0.0)
    improved = a is not None and (b is None or (a < b * (1 - FIX_GAIN) and b - a >= FIX_GAIN_ABS * start))
    return {"probe": ", ".join(f"{k}={v}" for k, v in patch.items()), "steps": fixed.steps_run, "loss": which,
            "loss_before": b, "loss_after": a, "improved": bool(improved),
            "status_before": L.classify(base), "status_after": L.classify(fixed)}


def _status_text(rec: ProbeRecord) -> str:
    st = L.classify(rec)
    if st == "diverged":
        return f"diverged (stopped at step {rec.steps_run})" if rec.stopped != "completed" else "diverged"
    return f"{st} (loss {_g(rec.initial_loss)} -> {_g(rec.final_loss)})"


# ---- step 3 ------------------------------------------------------------------------------------

@check("H309", needs=("curves", "extra"), uses=("lr",))
def check_no_warmup(ctx: ProbeContext) -> Finding | None:
    """H309 no-warmup: the configured run breaks and the same lr with a warmup trains."""
    warm, base = ctx.extra.get("warmup"), ctx.baseline
    if warm is None or base is None or warm.error or base.error:
        return None
    if L.classify(base) == L.WORKING or L.classify(warm) != L.WORKING:
        return None
    patch = warm.overrides
    steps = patch["optimizer.schedule"]["warmup_steps"]
    f = Finding("H309", f"{ctx.spec.optimizer.name} at lr {ctx.spec.optimizer.lr:g} on a transformer without warmup "
                f"{_status_text(base)}; the same lr with a {steps}-step warmup is {_status_text(warm)}",
                f"add a warmup: optimizer.schedule: {{warmup_steps: {steps}}} (a few hundred to a few thousand "
                f"steps on a full run)",
                {"lr": ctx.spec.optimizer.lr, "optimizer": ctx.spec.optimizer.name, "warmup_steps": steps,
                 "configured": L.summarize(ctx.spec.optimizer.lr, base, L.classify(base)) | {"curve": None},
                 "with_warmup": L.summarize(ctx.spec.optimizer.lr, warm, L.classify(warm)) | {"curve": None}},
                severity="error" if L.classify(base) in ("diverged", "unstable") else "warning")
    f.patch = {"optimizer.schedule": patch["optimizer.schedule"]}
    f.verified = _verified(f.patch, base, warm)
    return f


@check("H310", needs=("lr",))
def check_lr_below_search_range(ctx: ProbeContext) -> Finding | None:
    """H310 lr-below-search-range: nothing from max_lr to min_lr works; a lower, verified lr does."""
    res = ctx.lr
    if res is None or not res.extended_below or res.recommended is None or res.min_lr is None:
        return None
    if res.recommended >= res.min_lr or not res.verified:
        return None
    rec = ctx.lr_records.get(res.recommended)
    above = [t for t in res.tried if t["lr"] >= res.min_lr * (1 - 1e-9)]
    statuses = sorted({t["status"] for t in above})
    conf = ctx.spec.optimizer.lr
    f = Finding("H310", f"no lr from {max(t['lr'] for t in above):g} down to {res.min_lr:g} trains ({', '.join(statuses)}); "
                f"the search went on below --min-lr ({', '.join(f'{lr:g}' for lr in res.extended_below)}) and lr "
                f"{res.recommended:.2g} trains (loss {_g(rec.initial_loss if rec else None)} -> "
                f"{_g(rec.final_loss if rec else None)}, verified by its own probe)",
                f"set optimizer.lr to {res.recommended:.2g} (now {conf:g}); typical of fine-tuning a pretrained model",
                {"min_lr": res.min_lr, "extended_below": res.extended_below, "recommended": res.recommended,
                 "verified": res.verified, "statuses_above_min_lr": {f"{t['lr']:g}": t["status"] for t in above}},
                severity="error" if conf > res.recommended * 10 else "warning")
    if abs(conf / res.recommended - 1) > 0.05:
        f.patch = {"optimizer.lr": res.recommended}
    return f


@check("H311", needs=("curves", "extra"))
def check_weight_decay_on_norm_bias(ctx: ProbeContext) -> Finding | None:
    """H311 weight-decay-on-norm-bias: exempting norm gains and biases trains measurably better."""
    fixed, base = ctx.extra.get("no_decay_norm_bias"), ctx.baseline
    if fixed is None or base is None or fixed.error or base.error:
        return None
    v = _verified({"optimizer.decay_norm_bias": False}, base, fixed)
    if not v["improved"]:
        return None
    f = Finding("H311", f"weight decay {ctx.spec.optimizer.weight_decay:g} is applied to norm gains and biases; "
                f"exempting them ({v['loss']} loss {_g(v['loss_before'])} -> {_g(v['loss_after'])}) trains better",
                "set optimizer.decay_norm_bias: false (decay only the >= 2-D weights)",
                {"weight_decay": ctx.spec.optimizer.weight_decay, "optimizer": ctx.spec.optimizer.name,
                 "loss": v["loss"], "loss_before": v["loss_before"], "loss_after": v["loss_after"]})
    f.patch = {"optimizer.decay_norm_bias": False}
    f.verified = v
    return f


# ---- step 4 ------------------------------------------------------------------------------------

@check("G410", needs=("curves", "spec", "init"), uses=("extra",))
def check_fp16_overflow(ctx: ProbeContext) -> Finding | None:
    """G410 fp16-overflow: fp16 values overflowed (the probe died) or the loss scale collapsed."""
    base = ctx.baseline
    if base is None or ctx.spec.training.precision != "fp16" or not base.amp:
        return None
    a = base.amp
    died = base.stopped == "non-finite" and a.get("first_overflow") is not None
    if not (died or a.get("collapsed")):
        return None
    fo = a.get("first_overflow") or {}
    where = f" in {fo['layer']}" if fo.get("layer") else (f" ({fo['where']})" if fo.get("where") else "")
    sim = " (simulated float16 on the CPU)" if a.get("simulated") else ""
    if a.get("collapsed"):
        what = (f"the loss scale collapsed from {_g(a.get('scale_initial'))} to {_g(a.get('scale_final'))}: "
                f"{a.get('skipped_steps')} steps skipped for overflow, the first at step {fo.get('step')}{where}")
    else:
        what = (f"values overflowed float16 (> 65504) at step {fo.get('step')}{where} and training turned "
                f"non-finite" + ("" if a.get("loss_scaling") else " (no loss scaling)"))
    ev = {"precision": "fp16", "simulated": bool(a.get("simulated")), "loss_scaling": a.get("loss_scaling"),
          "first_overflow": fo, "overflow_steps": a.get("overflow_steps"), "skipped_steps": a.get("skipped_steps"),
          "scale_initial": a.get("scale_initial"), "scale_final": a.get("scale_final"), "collapsed": a.get("collapsed")}
    fixes = []
    for name, text in (("bf16", "training.precision: bf16"), ("grad_scaler", "training.grad_scaler: true")):
        rec = ctx.extra.get(name)
        if rec is not None and not rec.error:
            ev[f"with_{name}"] = _status_text(rec)
            if L.classify(rec) != "diverged" and rec.stopped != "non-finite":
                fixes.append((name, text, rec))
    f = Finding("G410", f"fp16{sim}: {what}", "", ev)
    if fixes:
        name, text, rec = fixes[0]
        f.fix = f"set {text} (its probe: {_status_text(rec)})"
        f.patch = dict(rec.overrides)
        f.verified = _verified(f.patch, base, rec)
    else:
        f.fix = "set training.precision: bf16 (float32's range) or fp32; keep activations small (normalise inputs)"
    return f


def _heads(stats: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    out = {}
    for layer, st in (stats or {}).items():
        hs = [v for k, v in sorted(st.items()) if k.startswith("attn_entropy_h") and v is not None]
        if hs:
            out[layer] = hs
    return out


@check("G411", needs=("layers", "init"), uses=("lr",))
def check_attention_collapse(ctx: ProbeContext) -> Finding | None:
    """G411 attention-collapse: heads with near-zero entropy at init or at the end of the probe, or uniform
    attention throughout a probe that does not learn."""
    base = ctx.baseline
    if base is None or not base.layers:
        return None
    recorded = [(r["step"], _heads(r["stats"])) for r in base.layers]
    recorded = [(s, h) for s, h in recorded if h]
    if not recorded:
        return None
    init_step, init = recorded[0]
    last_step, last = recorded[-1]

    def collapsed(heads: dict[str, list[float]]) -> dict[str, list[float]]:
        return {l: hs for l, hs in heads.items()
                if sum(h < COLLAPSED_ENTROPY for h in hs) >= COLLAPSED_HEAD_SHARE * len(hs)}

    ev: dict[str, Any] = {"entropy_at_init": init, "entropy_at_end": last, "end_step": last_step,
                          "collapsed_below": COLLAPSED_ENTROPY, "uniform_above": UNIFORM_ENTROPY}
    at_init, at_end = collapsed(init), collapsed(last)
    spec = ctx.spec
    if at_init or at_end:
        when = "at init" if at_init else f"by step {last_step}"
        layers = at_init or at_end
        layer, hs = next(iter(layers.items()))
        msg = (f"attention collapsed {when}: {len(layers)} attention layer(s) with most heads below "
               f"{COLLAPSED_ENTROPY:g} of the maximum entropy (e.g. {layer}: " + ", ".join(f"{h:.2f}" for h in hs)
               + "): each query attends to a single key")
        f = Finding("G411", msg, "", ev)
        if at_init and str(spec.model.init) != "default":
            f.fix = (f"model.init {spec.model.init} makes the query/key projections too large: use model.init: "
                     f"default (torch's xavier for attention)")
            f.patch = {"model.init": "default"}
        elif ctx.lr is not None and ctx.lr.recommended and ctx.lr.recommended < spec.optimizer.lr:
            f.fix = f"lower optimizer.lr to {ctx.lr.recommended:.2g} and add a warmup; pre-LN (norm_first: true)"
            f.patch = {"optimizer.lr": ctx.lr.recommended}
        else:
            f.fix = "add a warmup and use pre-LN (norm_first: true); bound the logits (qk-norm) on longer runs"
        return f
    every = [h for _, heads in recorded for hs in heads.values() for h in hs]
    if every and min(every) > UNIFORM_ENTROPY and L.classify(base) != L.WORKING:
        return Finding("G411", f"attention stayed uniform over the whole probe (every head's entropy > "
                       f"{UNIFORM_ENTROPY:g} of the maximum, steps {init_step}..{last_step}) while the loss "
                       f"{_status_text(base)}: the attention learned nothing",
                       "check that the lr is in range (probe-lr) and that the positions carry information "
                       "(positional_embedding); a warmup", ev)
    return None


ACCUM_COS = 0.99          # G412/G413: the step's gradient points the same way as a reference: cosine > 0.99 (a
                          # correct step matches the mean to float precision; on wine split in 4 the two references
                          # differ at cosine ~0.4)
ACCUM_DISTINCT_COS = 0.95  # the mean and the last micro-batch's gradient must differ (cosine < 0.95) to tell
                           # "last micro-batch only" from "all of them"
ACCUM_SCALE_TOL = 0.2     # G412: |gradient| / |mean gradient| within 20% of k: summed, not averaged


def _accumulation(ctx: ProbeContext) -> tuple[Any, dict[str, Any]] | None:
    diag = ctx.user_step
    acc = diag.measurements.get("accumulation") if diag is not None else None
    if not acc or "cos_with_mean_grad" not in acc:
        return None
    return diag, acc


def _step_evidence(diag, acc: dict[str, Any]) -> dict[str, Any]:
    ev = {"step_function": diag.ref, **{k: v for k, v in acc.items()}}
    if diag.source:
        ev["defined_at"] = diag.source
    return ev


def _at_line(diag, key: str) -> str:
    line = (diag.lines or {}).get(key)
    return f" (at {line})" if line else ""


@check("G412", needs=("user_step",))
def check_accumulation_loss_not_divided(ctx: ProbeContext) -> Finding | None:
    """G412 accumulation-loss-not-divided: the accumulated gradient is k x the mean micro-batch gradient."""
    got = _accumulation(ctx)
    if got is None:
        return None
    diag, acc = got
    k, ratio = acc["accumulate"], acc["grad_to_mean_ratio"]
    if _zeroed_per_micro(acc) or not (acc["cos_with_mean_grad"] > ACCUM_COS and abs(ratio / k - 1) < ACCUM_SCALE_TOL):
        return None
    return Finding("G412", f"{diag.ref}: the accumulated gradient is {ratio:.2f}x the mean micro-batch gradient "
                   f"(accumulate: {k}): the micro-batch losses are summed, not divided by {k}, which multiplies the "
                   f"effective lr by {k}",
                   f"divide each micro-batch loss by {k} before backward(): (loss / {k}).backward()"
                   f"{_at_line(diag, 'backward')}", _step_evidence(diag, acc))


def _zeroed_per_micro(acc: dict[str, Any]) -> bool:
    return (acc["cos_mean_vs_last"] < ACCUM_DISTINCT_COS and acc["cos_with_last_micro_grad"] > ACCUM_COS
            and acc["cos_with_mean_grad"] < ACCUM_COS)


@check("G413", needs=("user_step",))
def check_zero_grad_every_micro_step(ctx: ProbeContext) -> Finding | None:
    """G413 zero-grad-every-micro-step: the update sees the last micro-batch's gradient only."""
    got = _accumulation(ctx)
    if got is None or not _zeroed_per_micro(got[1]):
        return None
    diag, acc = got
    return Finding("G413", f"{diag.ref}: the gradient optimizer.step() sees is the last micro-batch's alone "
                   f"(cosine {acc['cos_with_last_micro_grad']:.3f}; with the mean over the {acc['accumulate']} "
                   f"micro-batches {acc['cos_with_mean_grad']:.2f}): zero_grad() runs on every micro-step",
                   f"call optimizer.zero_grad() once per optimizer step, after optimizer.step()"
                   f"{_at_line(diag, 'zero_grad')}", _step_evidence(diag, acc))
