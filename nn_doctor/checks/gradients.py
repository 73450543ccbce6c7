"""Step 4 checks: code and gradients (G400-G413): print the gradients, confirm backpropagation ran.

They read the configured-settings probe `ctx.baseline` (falling back to `ctx.init` when there is no
baseline), whose per-layer records hold, at init and every `record_every` steps: grad_norm (after any
clipping), act_std, dead_frac (ReLU family), sat_frac (sigmoid/tanh) and update_ratio. G407 reads
`ctx.tiny`, a probe on ~10 training samples at the working lr. Records that are missing give no finding.

Thresholds were set from probes on sample_data/wine.csv (142 training rows, 3 classes); the measured
values are quoted next to each constant.
"""
from __future__ import annotations

import math
import statistics

import numpy as np
from typing import Any

from ..model import SATURATING
from .. import fmt
from ..probe import ProbeRecord
from ..report import Finding
from . import check, codes_for_step
from .context import ProbeContext
from .model import canon, hidden_activations, layer_dicts, recommended_init, relu_instead_of_saturating, weight_layers
from .user_step import params_left_alone

GRADIENT_CODES = codes_for_step("G")   # the catalogue's codes of this step

# ---- thresholds ------------------------------------------------------------------------------
VANISH_RATIO = 1e-3        # G401: first/last weight-layer grad norm < 1e-3 ("orders of magnitude", seeds/004);
                           # wine: 10-layer sigmoid MLP xavier 7.5e-7 (init) / 3e-6 (step 75); 8-layer ReLU
                           # default 9.6e-3 / 0.088; 2-layer ReLU 0.46; digits conv net 0.17
VANISH_ZERO = 1e-7         # G401 error: the first layer's grad norm < 1e-7 is ~0 (smdebug's VanishingGradient default)
EXPLODE_NORM = 1e4         # G402: total grad norm > 1e4; unscaled wine (features ~1e3) already gives 883 and
                           # unscaled diabetes targets ~1.4e3, so 1e4 is a decade above plain unscaled data
EXPLODE_GROWTH = 100.0     # G402: total grad norm grows > 100x from init within the probe
EXPLODE_GROWTH_FLOOR = 1.0  # G402: ... to at least 1 (growth from a near-zero start is not an explosion)
DEAD_FRACTION = 0.5        # G403: >= half the units of a ReLU layer inactive on the whole batch (smdebug DeadRelu's
                           # threshold_layer 50%); wine 2x16 ReLU MLP, sgd lr 5: 1.0 in layer 2; standardized,
                           # adam 1e-3: 0-0.03; unscaled wine, default init: 0.47-0.55 by seed (proline > 0 everywhere)
SATURATED_FRACTION = 0.5   # G404: >= half the sigmoid/tanh outputs in the flat region (tanh on unscaled wine: 0.99;
                           # standardized sigmoid nets: 0-0.01)
DEAD_TYPES = {"relu", "relu6"}  # G403: zero gradient below 0; leaky/elu/gelu units output < 0 but still learn
STAT_WINDOW = 2            # G403/G404: the smallest fraction of the last 2 records, so one odd batch does not fire
UPDATE_RATIO_TARGET = 1e-3  # G406: Karpathy's rule of thumb: each step changes the weights by ~1e-3 of their norm
UPDATE_RATIO_HIGH = 1e-1   # G406: two decades above (adam 1e-3 on wine: 3e-3-6e-3; sgd lr 10: 7e2)
UPDATE_RATIO_LOW = 1e-5    # G406: two decades below (adam 1e-6: 5e-6-1e-5; sgd 1e-3: 9e-5-9e-4)
TINY_FRACTION = 0.1        # G407: fitting ~10 samples ends below 10% of the initial loss (2x64 ReLU MLP,
                           # 200 steps adam 1e-3: 1.3%; softmax before cross_entropy: 50%; 1-unit bottleneck,
                           # lr 1e-2: 33%)
TINY_FLOOR = 0.05          # G407: ... or below 0.05 in absolute terms (cross-entropy 0.05 = p(true class) 0.95)
TINY_PLATEAU = 0.9         # G407: "cannot" needs a plateau: over the last quarter of the steps the loss fell by less
                           # than 10%. Converging probes (200 steps) fall much faster there (a 2-unit tanh bottleneck
                           # on digits, lr 1.7e-2: x0.76; a linear stack on XOR, lr 1e-3: x0.51), stuck ones not at
                           # all (a linear stack that cannot separate its 10 rows: x1.00; a deep sigmoid net: x1.00)
BATCH_NORM_BATCH = 32      # G409: the batch size proposed when batch norm got one sample per batch (a common
                           # default, and the size the project's table examples train with)
DEFAULT_CLIP = 1.0         # G400/G402: max global grad norm proposed (seeds/004 uses max_norm=1.0)


# ---- helpers ---------------------------------------------------------------------------------

def _record(ctx: ProbeContext) -> ProbeRecord | None:
    rec = ctx.baseline if ctx.baseline is not None else ctx.init
    return rec if rec is not None and rec.error is None else None


def _recommended_lr(ctx: ProbeContext) -> float | None:
    rec = getattr(ctx.lr, "recommended", None) if ctx.lr is not None else None
    return float(rec) if rec else None


def _last_stats(rec: ProbeRecord) -> tuple[int, dict[str, dict]]:
    if rec.layers:
        return rec.layers[-1]["step"], rec.layers[-1]["stats"]
    return 0, rec.init_layers


def _window(rec: ProbeRecord, key: str) -> dict[str, list[float]]:
    """layer -> values of `key` in the last STAT_WINDOW records (init when nothing later was recorded)."""
    records = [r["stats"] for r in rec.layers[-STAT_WINDOW:]] or [rec.init_layers]
    out: dict[str, list[float]] = {}
    for stats in records:
        for name, st in stats.items():
            if st.get(key) is not None:
                out.setdefault(name, []).append(st[key])
    return out


def _dead_fractions(rec: ProbeRecord, at_init: bool = False) -> dict[str, float]:
    """ReLU/ReLU6 layer -> fraction of units inactive on the whole batch (smallest of the last records, or at
    init). A model whose activations are functions (no ReLU module) is measured at the next layer's input
    (probe.Instruments.input_watch): "input of fc2:linear"."""
    def window(key: str) -> dict[str, list[float]]:
        if at_init:
            return {n: [st[key]] for n, st in rec.init_layers.items() if st.get(key) is not None}
        return _window(rec, key)
    out = {n: min(v) for n, v in window("dead_frac").items() if ":" not in n or n.split(":", 1)[1] in DEAD_TYPES}
    return out or {f"{INPUT_OF}{n}": min(v) for n, v in window("dead_in_frac").items()}


INPUT_OF = "input of "   # names a layer measured at its input (a functional activation upstream)


_g = fmt.num   # numbers in messages: nn_doctor/fmt.py


def _replace_activation(layers: list[dict], old: set[str], new_type: str) -> list[dict]:
    out = []
    for l in layers:
        l = dict(l)
        if canon(l["type"]) == "residual":
            l["layers"] = _replace_activation(l.get("layers") or [], old, new_type)
        elif canon(l["type"]) in old:
            l = {"type": new_type}
        out.append(l)
    return out


def _saturating_patch(ctx: ProbeContext) -> dict[str, Any] | None:
    """relu for the hidden sigmoid/tanh layers + he init; he init alone when there are none."""
    layers = layer_dicts(ctx)
    if layers and any(a in SATURATING for a in hidden_activations(ctx)):
        return {"model.layers": relu_instead_of_saturating(layers), "model.init": "he"}
    if ctx.spec is None:
        return None
    good = recommended_init(ctx)
    return None if ctx.spec.model.init.scheme == good else {"model.init": good}


def _init_name(ctx: ProbeContext) -> str | None:
    return str(ctx.spec.model.init) if ctx.spec is not None else None


def _init_scheme(ctx: ProbeContext) -> str | None:
    return ctx.spec.model.init.scheme if ctx.spec is not None else None


def _batch_word(ctx: ProbeContext) -> str:
    return "probe" if ctx.source == "probe" else "training"


def _standardize(ctx: ProbeContext) -> str:
    return ctx.fix_text("set data.normalize: standardize", STANDARDIZE_CODE)


# ---- G400 ------------------------------------------------------------------------------------

CLIP_CODE = "torch.nn.utils.clip_grad_norm_(model.parameters(), {clip:g}) between backward() and optimizer.step()"
STANDARDIZE_CODE = "standardize the inputs (subtract the training mean and divide by the std of each feature)"


@check("G400", needs=("curves",))
def check_non_finite_training(ctx: ProbeContext) -> Finding | None:
    """G400 non-finite-training: NaN/Inf in the loss, gradients or weights; first step and layer."""
    if ctx.curve is not None:
        return _non_finite_log(ctx)
    rec = ctx.configured_record()
    if rec is None or rec.error is not None:
        return None
    if rec.initial_loss is None and rec.first_nonfinite is None:
        # non-finite before the first update: no lr, clip or step can be the cause
        rec.first_nonfinite = {"step": 0, "where": "loss at init", "layer": None}
    if rec.first_nonfinite is None:
        return None
    nf = rec.first_nonfinite
    if rec.initial_loss is None and ctx.spec is not None:
        return _non_finite_at_init(ctx, rec)
    step, where, layer = nf.get("step"), nf.get("where"), nf.get("layer")
    lr, name, clip = ctx.setting("lr"), ctx.setting("name"), ctx.setting("grad_clip")
    finite = [v for v in rec.losses if v is not None]
    ev: dict[str, Any] = {"step": step, "where": where, "layer": layer, "lr": lr, "optimizer": name,
                          "grad_clip": clip, "last_finite_losses": finite[-3:],
                          "initial_loss": rec.initial_loss}
    rec_lr = _recommended_lr(ctx)
    fixes = []
    patch: dict[str, Any] | None = None
    if ctx.spec is None:       # the user's own loop: say what to change in the code
        fixes.append(f"clip the gradients ({CLIP_CODE.format(clip=DEFAULT_CLIP)}) and lower the learning rate"
                     + (f" (now {lr:g})" if lr is not None else ""))
    elif rec_lr and rec_lr < lr:
        fixes.append(f"lower optimizer.lr from {lr:g} to {rec_lr:g} (the lr probe's recommendation)")
        patch = {"optimizer.lr": rec_lr}
    elif clip is None:
        fixes.append(f"set optimizer.grad_clip: {DEFAULT_CLIP:g} and lower optimizer.lr (now {lr:g})")
        patch = {"optimizer.grad_clip": DEFAULT_CLIP}
    else:
        fixes.append(f"lower optimizer.lr from {lr:g} to {lr / 10:g}")
        patch = {"optimizer.lr": float(f"{lr / 10:.2g}")}
    if ctx.inputs_unscaled:
        fixes.append(ctx.fix_text("set data.normalize: standardize", STANDARDIZE_CODE))
    if ctx.spec is not None and ctx.spec.loss.name == "bce" and where in ("loss", "gradient"):
        fixes.append("use loss: bce_with_logits (stable log of the sigmoid) without the final sigmoid")
    at = f" in {layer}" if layer else ""
    setting = f" (lr {lr:g}, {name})" if lr is not None else ""
    return Finding("G400", f"training goes non-finite at step {step}: first NaN/Inf in the {where}{at}{setting}",
                   "; ".join(fixes), ev, patch=patch)


def _non_finite_log(ctx: ProbeContext) -> Finding | None:
    """G400 on a loss log: the first step (or epoch) where a logged loss is NaN/Inf; a log has no layers."""
    from .hyper import run_curves
    run = run_curves(ctx)
    nf = run.verdict.evidence.get("first_nonfinite") if run is not None else None
    if nf is None:
        return None
    log = ctx.curve
    curve = "training" if nf["curve"] == "train" else "validation"
    series = log.train if nf["curve"] == "train" else (log.val or [])
    before = [y for x, y in series if x < nf["step"] and y is not None][-3:]
    return Finding("G400", f"the {curve} loss is non-finite (NaN/Inf) from {log.axis} {nf['step']:g} of the "
                           f"{ctx.run_name}",
                   f"lower the learning rate, clip gradients ({CLIP_CODE.format(clip=DEFAULT_CLIP)}), "
                   "check the data for NaN/Inf and use a logits loss (cross_entropy / bce_with_logits) "
                   "rather than log(softmax) or log(sigmoid); to find the layer, run the training under "
                   "nn_doctor.Monitor",
                   {**run.evidence, "step": nf["step"], "axis": log.axis, "curve": nf["curve"], "where": "loss",
                    "layer": None, "last_finite_losses": before,
                    "note": "a loss log has no per-layer data: nn_doctor.Monitor names the first layer"})


def _non_finite_at_init(ctx: ProbeContext, rec: ProbeRecord) -> Finding:
    """The loss is NaN/Inf before any update: the model's output, the data or the loss make it, not the lr."""
    spec = ctx.spec
    arrays = ctx.arrays
    bad_inputs = arrays is not None and not bool(np.isfinite(arrays.X).all())
    ev: dict[str, Any] = {"step": 0, "where": rec.first_nonfinite.get("where"), "initial_loss": None,
                          "inputs_finite": not bad_inputs, "init": str(spec.model.init), "loss": spec.loss.name}
    if bad_inputs:
        cause = "the input features contain NaN/Inf"
        fix, patch = "set data.missing: drop (or median) to drop or impute the rows with NaN/Inf values", \
            {"data.missing": "drop"}
    elif spec.model.layers is None:
        cause = f"the output of your model ({spec.model.class_}) is non-finite on real inputs"
        fix, patch = "make the forward pass finite: look for exp/log/division by zero or an overflowing " \
                     "activation in your model's forward", None
    else:
        good = recommended_init(ctx)
        cause = f"the model's output is non-finite at init (init {spec.model.init})"
        fix, patch = (f"set model.init: {good}", {"model.init": good}) if spec.model.init.scheme != good else \
            ("make the forward pass finite: an exp/log or a division in the model overflows", None)
    return Finding("G400", f"the loss is non-finite before the first update: {cause}; no lr can train this "
                           f"(probe '{rec.name}')", fix, ev, patch=patch)


# ---- G401 ------------------------------------------------------------------------------------

@check("G401", needs=("layers",))
def check_vanishing_gradients(ctx: ProbeContext) -> Finding | None:
    """G401 vanishing-gradients: the first layers' grad norm is orders of magnitude below the last layers'."""
    rec = _record(ctx)
    if rec is None or not rec.init_layers:
        return None
    if _init_scheme(ctx) == "zeros":
        return None   # exactly-zero gradients of a zero init: M204 and G405 report it
    if any(v >= 1.0 for v in _dead_fractions(rec).values()):
        return None   # a fully dead ReLU layer passes no gradient to the layers before it: G403's, not vanishing
    names = weight_layers(rec)
    step, last = _last_stats(rec)
    g0 = {n: rec.init_layers.get(n, {}).get("grad_norm") for n in names}
    gl = {n: last.get(n, {}).get("grad_norm") for n in names}
    names = [n for n in names if g0[n] is not None and gl[n] is not None]
    if len(names) < 2:
        return None
    first, out = names[0], names[-1]
    ratios = [g[first] / g[out] for g in (g0, gl) if g[out] > 0]
    if not ratios:
        return None
    ratio = max(ratios)      # persistent: vanishing at init and still at the last record
    if ratio >= VANISH_RATIO:
        return None
    first_norm = max(g0[first], gl[first])
    ev = {"grad_norm_init": {n: g0[n] for n in names}, f"grad_norm_step_{step}": {n: gl[n] for n in names},
          "ratio_first_last": ratio, "thresholds": {"ratio": VANISH_RATIO, "zero": VANISH_ZERO},
          "activations": sorted(set(hidden_activations(ctx))), "init": _init_name(ctx)}
    severity = "error" if first_norm < VANISH_ZERO else None
    patch = _saturating_patch(ctx)
    sat = any(a in SATURATING for a in hidden_activations(ctx))
    if ctx.spec is None:
        fix = ("use nn.ReLU for the hidden activations with He (kaiming) init, or add nn.BatchNorm1d after each "
               "linear layer, or residual connections" if sat else
               "add nn.BatchNorm1d after the weight layers, or residual connections, and check that the init suits "
               "the activation (He/kaiming for ReLU)")
    elif sat:
        fix = ("use relu for the hidden activations and set model.init: he (or add batchnorm1d after each linear, "
               "or residual connections)")
    elif patch:
        fix = f"set model.init: {patch['model.init']}, or add batchnorm1d after the weight layers"
    else:
        fix = "add batchnorm1d after the weight layers, or residual connections (the init already suits the activation)"
    return Finding("G401", f"gradients vanish: {first} gets a grad norm of {_g(first_norm)}, {ratio:.1g}x that of "
                           f"{out} ({_g(max(g0[out], gl[out]))}; threshold {VANISH_RATIO:g}x)"
                           + (" -- the first layer gets ~0" if severity else ""),
                   fix, ev, severity=severity, patch=patch)


# ---- G402 ------------------------------------------------------------------------------------

def total_grad_norms(rec: ProbeRecord) -> list[tuple[int, float | None]]:
    """(step, global grad norm over every recorded layer); None when some layer's norm was non-finite."""
    records = rec.layers or ([{"step": 0, "stats": rec.init_layers}] if rec.init_layers else [])
    out = []
    for r in records:
        norms = [st["grad_norm"] for st in r["stats"].values() if "grad_norm" in st]
        if not norms:
            continue
        out.append((r["step"], None if any(v is None for v in norms) else math.sqrt(sum(v * v for v in norms))))
    return out


@check("G402", needs=("layers",), uses=("lr",))
def check_exploding_gradients(ctx: ProbeContext) -> Finding | None:
    """G402 exploding-gradients: total grad norm very large, growing fast, or overflowing."""
    rec = _record(ctx)
    if rec is None:
        return None
    totals = total_grad_norms(rec)
    if not totals:
        return None
    finite = [(s, v) for s, v in totals if v is not None]
    overflow = next((s for s, v in totals if v is None), None)
    nf = rec.first_nonfinite or {}
    if overflow is not None and not any(s < overflow for s, _ in finite) and nf.get("where") in ("forward", "loss") \
            and (nf.get("step") is None or nf["step"] <= overflow):
        return None   # never finite: the forward pass or the loss made the NaN (G400), no gradient grew into it
    big = max(finite, key=lambda sv: sv[1]) if finite else None
    growth = None
    if len(finite) >= 2 and finite[0][1] > 0:
        later = max(v for _, v in finite[1:])
        growth = later / finite[0][1] if later >= EXPLODE_GROWTH_FLOOR else None
    ev = {"total_grad_norm": {str(s): v for s, v in totals}, "grad_clip": ctx.setting("grad_clip"),
          "thresholds": {"norm": EXPLODE_NORM, "growth": EXPLODE_GROWTH, "growth_floor": EXPLODE_GROWTH_FLOOR}}
    if growth is not None:
        ev["growth"] = growth
    if overflow is not None:
        what, severity = f"the gradient norm overflows (non-finite) at step {overflow}", "error"
    elif big is not None and big[1] > EXPLODE_NORM:
        what, severity = f"the total gradient norm reaches {big[1]:.3g} at step {big[0]} (> {EXPLODE_NORM:g})", None
    elif growth is not None and growth > EXPLODE_GROWTH:
        what, severity = (f"the total gradient norm grows {growth:.3g}x within the "
                           f"{'probe' if ctx.source == 'probe' else ctx.run_name} (> {EXPLODE_GROWTH:g}x)"), None
    else:
        return None
    opt = ctx.spec.optimizer if ctx.spec is not None else None
    rec_lr = _recommended_lr(ctx)
    if opt is None:
        fix, patch = f"clip the gradients: {CLIP_CODE.format(clip=DEFAULT_CLIP)}; or lower the learning rate", None
    elif opt.grad_clip is None:
        fix, patch = f"set optimizer.grad_clip: {DEFAULT_CLIP:g}", {"optimizer.grad_clip": DEFAULT_CLIP}
    elif rec_lr and rec_lr < opt.lr:
        fix, patch = f"lower optimizer.lr from {opt.lr:g} to {rec_lr:g}", {"optimizer.lr": rec_lr}
    else:
        fix, patch = "lower optimizer.lr, add batchnorm1d/layernorm", None
    if ctx.inputs_unscaled:
        fix += "; " + _standardize(ctx)
    return Finding("G402", f"gradients explode: {what}", fix, ev, severity=severity, patch=patch)


# ---- G403 ------------------------------------------------------------------------------------

@check("G403", needs=("layers",))
def check_dead_relu(ctx: ProbeContext) -> Finding | None:
    """G403 dead-relu: a large fraction of a ReLU layer's units inactive on the whole probe batch."""
    rec = _record(ctx)
    if rec is None:
        return None
    dead = _dead_fractions(rec)
    bad = {n: v for n, v in dead.items() if v >= DEAD_FRACTION}
    if not bad:
        return None
    worst = max(bad, key=bad.get)
    step, _ = _last_stats(rec)
    ev = {"dead_fraction": dead, "dead_fraction_init": _dead_fractions(rec, at_init=True),
          "step": step, "threshold": DEAD_FRACTION, "window": STAT_WINDOW, "lr": ctx.setting("lr")}
    # a layer with every unit dead passes no signal at all: training cannot use what is before it
    severity = "error" if bad[worst] >= 1.0 else None
    layers = layer_dicts(ctx)
    patch = {"model.layers": _replace_activation(layers, {"relu", "relu6"}, "leaky_relu")} if layers else None
    fix = ctx.fix_text("use leaky_relu (or elu) instead of relu", "use nn.LeakyReLU (or nn.ELU) instead of nn.ReLU")
    units = (f"the units feeding {worst.removeprefix(INPUT_OF)} (ReLUs called as functions)"
             if worst.startswith(INPUT_OF) else f"the units of {worst}")
    at_init = ev["dead_fraction_init"].get(worst)
    init = str(ctx.spec.model.init) if ctx.spec is not None else None
    if at_init is not None and at_init >= DEAD_FRACTION and init is not None and init != "he":
        # dead before the first step: the initial weights or biases kill the units, not the training. A fresh He
        # init (zero biases) is the fix to test, for layer stacks and for the user's own class alike
        patch = {"model.init": "he"}
        fix = (f"re-initialise the weights: set model.init: he (the units are dead at init already: "
               f"{at_init:.0%} of {units}; He init draws zero biases)")
    if ctx.inputs_unscaled:
        fix += "; " + _standardize(ctx)
    lr = ctx.setting("lr")
    fix += f"; if the lr is high (now {lr:g}), lower it" if lr is not None else "; if the lr is high, lower it"
    return Finding("G403", f"dead ReLUs: {bad[worst]:.0%} of {units} never activate on a "
                           f"{_batch_word(ctx)} batch "
                           f"at step {step} ({len(bad)} layer{'s' if len(bad) > 1 else ''} >= {DEAD_FRACTION:.0%})",
                   fix, ev, severity=severity, patch=patch)


# ---- G404 ------------------------------------------------------------------------------------

@check("G404", needs=("layers",))
def check_saturated_activations(ctx: ProbeContext) -> Finding | None:
    """G404 saturated-activations: sigmoid/tanh outputs mostly in their flat regions."""
    rec = _record(ctx)
    if rec is None:
        return None
    sat = {n: min(v) for n, v in _window(rec, "sat_frac").items()}
    bad = {n: v for n, v in sat.items() if v >= SATURATED_FRACTION}
    if not bad:
        return None
    worst = max(bad, key=bad.get)
    step, _ = _last_stats(rec)
    ev = {"saturated_fraction": sat, "step": step, "threshold": SATURATED_FRACTION, "window": STAT_WINDOW,
          "normalize": ctx.spec.data.normalize if ctx.spec is not None else None,
          "flat_region": "sigmoid within 0.01 of 0/1, |tanh| > 0.99"}
    if ctx.inputs_unscaled:
        fix = _standardize(ctx) + " (large inputs drive the units into the flat region)"
        patch = {"data.normalize": "standardize"} if ctx.spec is not None else None
    elif ctx.spec is None:
        fix, patch = ("use nn.ReLU for the hidden activations with He (kaiming) init, or add nn.BatchNorm1d before "
                      "them"), None
    else:
        layers = layer_dicts(ctx)
        fix = "use relu for the hidden activations with model.init: he, or add batchnorm1d before them"
        patch = {"model.layers": relu_instead_of_saturating(layers), "model.init": "he"} if layers else None
    return Finding("G404", f"saturated activations: {bad[worst]:.0%} of the outputs of {worst} are in the flat "
                           f"region at step {step} (>= {SATURATED_FRACTION:.0%}; the derivative there is ~0)",
                   fix, ev, patch=patch)


# ---- G405 ------------------------------------------------------------------------------------

@check("G405", needs=("layers",))
def check_params_not_updating(ctx: ProbeContext) -> list[Finding] | None:
    """G405 params-not-updating: parameters without a gradient, or unchanged after the run's steps; and
    the parameters the user's training step leaves alone (frozen, not in the optimizer, not updated)."""
    found = [f for f in (_params_in_run(ctx), _params_in_user_step(ctx)) if f is not None]
    return found or None


def _params_in_run(ctx: ProbeContext) -> Finding | None:
    rec = ctx.baseline
    if rec is None or rec.error is not None:
        return None
    no_grad = list(rec.params_without_grad)
    unchanged = [p for p in rec.params_unchanged if p not in no_grad]
    if not no_grad and not unchanged:
        return None
    ev = {"params_without_grad": no_grad, "params_unchanged": unchanged, "steps": rec.steps_run,
          "init": _init_name(ctx)}
    parts = []
    if no_grad:
        parts.append(f"{len(no_grad)} get no gradient ({', '.join(no_grad[:6])}{', ...' if len(no_grad) > 6 else ''})")
    if unchanged:
        parts.append(f"{len(unchanged)} never change in {rec.steps_run} steps "
                     f"({', '.join(unchanged[:6])}{', ...' if len(unchanged) > 6 else ''})")
    patch = None
    if _init_scheme(ctx) in ("zeros", "constant"):
        good = recommended_init(ctx)
        fix = (f"set model.init: {good}: with {ctx.spec.model.init} weights the hidden units output the same value "
               f"and these parameters get exactly zero gradient")
        patch = {"model.init": good}
    elif no_grad:
        fix = ("make sure every parameter is used in forward(), has requires_grad=True and is passed to the "
               "optimizer; remove torch.no_grad()/detach() around the model's computation")
    else:
        fix = ("they receive zero gradient: check for dead units (G403), detach()/no_grad in forward(), or "
               "parameters left out of the optimizer")
    return Finding("G405", f"parameters not updating: {'; '.join(parts)}", fix, ev, patch=patch)


def _params_in_user_step(ctx: ProbeContext) -> Finding | None:
    """The parameters the harness saw the user's training step leave alone (checks/user_step.py reads the rest)."""
    found = params_left_alone(ctx.user_step)
    if found is None:
        return None
    message, fix, evidence, severity = found
    return Finding("G405", message, fix, evidence, severity=severity)


# ---- G406 ------------------------------------------------------------------------------------

def update_ratios(rec: ProbeRecord) -> dict[str, float]:
    """Weight layer -> median update/weight norm ratio over the recorded steps."""
    out = {}
    for name in weight_layers(rec):
        vals = [r["stats"].get(name, {}).get("update_ratio") for r in rec.layers]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        if vals:
            out[name] = statistics.median(vals)
    return out


@check("G406", needs=("layers",), uses=("lr",))
def check_update_ratio(ctx: ProbeContext) -> Finding | None:
    """G406 update-ratio: the update-to-weight norm ratio far from ~1e-3."""
    rec = _record(ctx)
    if rec is None:
        return None
    if any(v >= 1.0 for v in _dead_fractions(rec).values()):
        return None   # a fully dead ReLU layer stops every update before it: G403, not the lr
    # layers that never move are G405's (frozen, no gradient); the lr rule applies to those that do
    ratios = {n: v for n, v in update_ratios(rec).items() if v > 0}
    if not ratios:
        return None
    med = statistics.median(ratios.values())
    if UPDATE_RATIO_LOW <= med <= UPDATE_RATIO_HIGH:
        return None
    big = med > UPDATE_RATIO_HIGH
    lr = ctx.setting("lr")
    rec_lr = _recommended_lr(ctx)
    if lr is None:   # a monitored run without its optimizer: the ratio is known, the lr is not
        new_lr, how = None, f"to bring the ratio near {UPDATE_RATIO_TARGET:g}"
    elif rec_lr and (rec_lr < lr if big else rec_lr > lr):
        new_lr, how = rec_lr, "the lr probe's recommendation"
    else:
        # the update is proportional to the lr: scale it towards the target ratio (at most 100x)
        factor = min(max(UPDATE_RATIO_TARGET / med, 1e-2), 1e2)
        new_lr, how = float(f"{lr * factor:.1g}"), f"to bring the ratio near {UPDATE_RATIO_TARGET:g}"
    ev = {"update_ratio": ratios, "median": med, "lr": lr, "optimizer": ctx.setting("name"),
          "thresholds": {"target": UPDATE_RATIO_TARGET, "low": UPDATE_RATIO_LOW, "high": UPDATE_RATIO_HIGH}}
    return Finding("G406", f"update/weight ratio {med:.2g} (median over layers and recorded steps) is "
                           f"{'above' if big else 'below'} {UPDATE_RATIO_HIGH if big else UPDATE_RATIO_LOW:g} "
                           f"(~{UPDATE_RATIO_TARGET:g} is healthy): updates are {'too big' if big else 'too small'}"
                           + (f" at lr {lr:g}" if lr is not None else ""),
                   f"{'lower' if big else 'raise'} "
                   + (ctx.fix_text(f"optimizer.lr from {lr:g} to {new_lr:g}", f"the learning rate from {lr:g} to "
                                   f"{new_lr:g}") if lr is not None else "the learning rate") + f" ({how})", ev,
                   patch={"optimizer.lr": new_lr} if ctx.spec is not None else None)


# ---- G407 ------------------------------------------------------------------------------------

def loss_floor(ctx: ProbeContext) -> float:
    """The lowest loss reachable: 0, or the entropy of the smoothed targets under label smoothing."""
    eps = ctx.spec.loss.label_smoothing
    C = ctx.arrays.n_classes if ctx.arrays is not None else None
    if ctx.spec.loss.name != "cross_entropy" or not eps or not C:
        return 0.0
    p_true, p_other = 1 - eps + eps / C, eps / C
    return -(p_true * math.log(p_true) + (C - 1) * p_other * math.log(p_other))


def _late_loss(rec: ProbeRecord) -> float | None:
    """The tiny probe's loss three quarters of the way through (its batch is all its rows, so no noise)."""
    losses = rec.losses
    if len(losses) < 8:
        return None
    return losses[(3 * len(losses)) // 4]   # None where that step's loss overflowed (skipped under loss scaling)


@check("G407", needs=("spec", "tiny"), uses=("lr",))
def check_cannot_overfit_small_batch(ctx: ProbeContext) -> Finding | None:
    """G407 cannot-overfit-small-batch: ~10 samples, many steps, and the loss does not approach zero."""
    rec = ctx.tiny
    if rec is None or rec.error is not None or rec.initial_loss is None or rec.final_loss is None:
        return None   # a tiny probe that diverges is explained by the lr findings (H300/G400)
    floor = loss_floor(ctx)
    start, end = rec.initial_loss - floor, rec.final_loss - floor
    if start <= 0 or end <= TINY_FRACTION * start or end <= TINY_FLOOR:
        return None
    late = _late_loss(rec)
    if late is not None and late - floor > 0 and end < TINY_PLATEAU * (late - floor):
        return None   # still falling fast when the probe ended: slow to memorise is not "cannot" (the lr's findings)
    n = rec.settings.get("subset")
    lr = ctx.working_lr or rec.overrides.get("optimizer.lr") or ctx.spec.optimizer.lr
    ev: dict[str, Any] = {"samples": n, "steps": rec.steps_run, "lr": lr, "initial_loss": rec.initial_loss,
                          "final_loss": rec.final_loss, "fraction": end / start,
                          "loss_at_three_quarters": late,
                          "thresholds": {"fraction": TINY_FRACTION, "floor": TINY_FLOOR, "plateau": TINY_PLATEAU}}
    if floor:
        ev["loss_floor"] = floor
    # Which earlier finding explains it (an output activation, the init, the lr, ...) is the triage pass's
    # call (catalogue EXPLAINED_BY): the report then lists this as that finding's symptom, never first.
    fix = ("an implementation or label bug, unless an earlier finding explains it (the report links it): check "
           "the output layer and loss, the init and the labels")
    return Finding("G407", f"cannot overfit {n} samples: loss {fmt.loss_path(rec.initial_loss, rec.final_loss)} after "
                           f"{rec.steps_run} steps at lr {lr:g} ({fmt.share(end, start)} of the start; near zero is "
                           f"< {TINY_FRACTION:.0%} or < {TINY_FLOOR:g})", fix, ev)


# ---- G409 ------------------------------------------------------------------------------------

@check("G409", needs=("spec",))   # reads every probe record the context holds
def check_probe_crashed(ctx: ProbeContext) -> Finding | None:
    """G409 probe-crashed: a probe raised instead of training. One finding for every crash, grouped by the
    exception: a crash is never silence (an lr table of errors once ended "Healthy")."""
    crashed = [(role, rec) for role, rec in ctx.records()
               if rec.error is not None and not rec.error.startswith("out of memory")]   # OOM is R501's
    if not crashed:
        return None
    role, first = crashed[0]
    where = first.error_where or "the probe"
    frame = f" at {first.error_frame}" if first.error_frame else ""
    ev: dict[str, Any] = {"exception": first.error_type, "message": first.error, "where": first.error_where,
                          "frame": first.error_frame, "probe": role,
                          "probes_crashed": [r for r, _ in crashed], "probes_total": len(ctx.records())}
    n, total = len(crashed), len(ctx.records())
    scope = "every probe" if n == total else f"{n} of {total} probes"
    user_code = spec_uses_user_code(ctx)
    patch = None
    if "Expected more than 1 value per channel when training" in (first.error or ""):
        # torch's batch norm cannot normalise one sample: a batch of 1 (or a last batch of 1) in training mode
        size = min(BATCH_NORM_BATCH, len(ctx.arrays.y)) if ctx.arrays is not None else BATCH_NORM_BATCH
        fix = (f"batch norm needs more than one sample per batch in training: set training.batch_size: {size} "
               f"(it is {ctx.spec.training.batch_size})")
        patch = {"training.batch_size": size}
    elif first.error_frame and user_code:
        fix = f"fix your code at {first.error_frame} ({where}): {first.error}"
    elif "out of bounds" in (first.error or "") or "Target" in (first.error or ""):
        fix = ("the targets do not fit the model's output: make the last layer's size the number of classes "
               "and the labels 0..C-1 (see the step 1 and 2 findings)")
    elif where == "model build":
        fix = "the spec's model does not build with these settings: see the message"
    else:
        fix = f"the {where} raised: check the loss, the output layer and the targets named in the message"
    return Finding("G409", f"{scope} crashed in the {where}{frame}: {first.error}", fix, ev, patch=patch)


def spec_uses_user_code(ctx: ProbeContext) -> bool:
    return ctx.spec.model.layers is None or bool(ctx.spec.training.step)
