"""Step 2 checks: the model structure (M200-M208): does the output layer fit the task, is the init right.

Static checks read the spec (`ctx.spec`, `ctx.model_summary`) and the data (`ctx.arrays`); measured ones
read probe records (`ctx.init`: per-layer statistics at init; `ctx.subset_fit`: a fit of a small training
subset). Each returns a Finding, a list of them, or None when it does not apply or its input is missing.
A finding's `patch` is the spec change that implements its fix (dotted overrides for Spec.with_overrides);
layer edits are written as a whole new `model.layers` list.

Thresholds (module constants below) were set from probes on sample_data/wine.csv (178 rows, 3 classes,
142 training rows) and diabetes.csv; the measured values are quoted next to each constant.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..catalogue import Severity
from ..errors import ModelBuildError
from .. import fmt
from ..model import _ACT_ALIASES, ACTIVATIONS, SATURATING
from ..report import Finding
from ..scaling import standardize_target
from . import check, codes_for_step
from .context import ProbeContext

MODEL_CODES = codes_for_step("M")   # the catalogue's codes of this step

# ---- thresholds ------------------------------------------------------------------------------
STD_RATIO_LOW = 0.1        # M205: last/first weight-layer output std < 1/10 at init = the signal vanishes
                           # (measured: 8-layer ReLU MLP with xavier 0.026 -- the spec's example; with he 0.40,
                           # torch default 0.15; 2-layer ReLU MLP default 0.33; digits conv net default 0.15)
STD_RATIO_HIGH = 10.0      # M205: last/first > 10 = the signal blows up ({normal: 3.0} 8-layer ReLU: 1.7e8)
INIT_GAIN_REF = math.sqrt(2)   # M205: He's gain std(W) sqrt(fan_in), the largest of the standard schemes (LeCun 1,
                               # Xavier <= sqrt(2) for equal fans, torch's default 1/sqrt(3)): it keeps a ReLU
                               # layer's output variance equal to its input's
INIT_GAIN_FACTOR = 4.0  # M205: a hidden weight layer whose gain is > 4x He's multiplies the signal's std by > 4 (two
                        # such layers: > 16x); tanh/sigmoid units fed pre-activations of std >= 4 sit mostly beyond
                        # |x| = 2, saturated. Applies where the depth trend below cannot (fewer weight layers)
INIT_NAN_STEPS = 10        # M205 is an error when a blown-up init makes training non-finite within 10 steps
STD_MIN_WEIGHT_LAYERS = 4  # M205: need >= 4 weight layers (3 layer-to-layer steps) for a trend: with 3, one of
                           # the two steps is into the output layer, whose scale the task sets (fault zoo: a
                           # 3-layer GELU MLP with torch's default init on friedman1 reads 0.069 and trains to -92%)
SATURATING_DEEP = 4        # M206: >= 4 sigmoid/tanh hidden activations: sigmoid' <= 0.25, so the gradient
                           # reaching the first layer is scaled by <= 0.25^4 = 0.004 (seeds/004)
INIT_LOSS_FACTOR = 3.0     # M207: initial loss > 3x or < 1/3 of its expected value (standardized wine, default
                           # init: 1.06 vs ln 3 = 1.10, ratio 0.97; he 8-layer: 1.26, 1.14; unscaled wine: 90, 82x)
SUBSET_FIT_FRACTION = 0.25  # M208: a fitted subset ends below 25% of its initial loss (width-64 MLP on wine:
                            # 0.07 at lr 1e-3, 0.001 at 1e-2; width-1 MLP: 0.41-0.78; width-2: 0.13 at 1e-2)
SMALL_PARAMS_PER_ROW = 1.0  # M208: "small" = fewer parameters than subset rows (it cannot memorise them);
                            # larger models that fail to fit point at optimisation or labels (G407), not size
HIDDEN_WIDTH = 64           # M208: the hidden layer given to a linear model that cannot fit (one ReLU layer of 64:
                            # the width of the project's own table examples, and a common first MLP)
AFFINE_TOL = 1e-6           # M208: a model whose midpoint test (plan._affine_error, in float64) is below 1e-6 is one
                            # affine map: rounding gives ~1e-15, a ReLU or tanh MLP at init 1e-3..1e-1
BIG_PARAMS_PER_ROW = 100.0  # M208: > 100 parameters per training row = far more than the data support
                            # (the 2x64 wine MLP has 1,091 parameters for 142 rows: 7.7 per row)

CE_LOSSES = ("cross_entropy", "nll")
BCE_LOSSES = ("bce", "bce_with_logits")
REGRESSION_LOSSES = ("mse", "l1", "huber")
RELU_FAMILY = {"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish", "prelu",
               "rrelu"}
PASSIVE = {"dropout", "dropout1d", "dropout2d", "alpha_dropout", "identity", "flatten", "unflatten"}
# the output range of activations that bound a regression output: (low, high); None = unbounded on that side
OUTPUT_RANGE: dict[str, tuple[float | None, float | None]] = {
    "relu": (0.0, None), "relu6": (0.0, 6.0), "softplus": (0.0, None), "sigmoid": (0.0, 1.0),
    "hardsigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hardtanh": (-1.0, 1.0), "softsign": (-1.0, 1.0),
    "elu": (-1.0, None), "celu": (-1.0, None), "selu": (-1.7581, None), "gelu": (-0.17, None),
    "silu": (-0.2785, None), "mish": (-0.3089, None), "hardswish": (-0.375, None), "softmax": (0.0, 1.0),
    "softmin": (0.0, 1.0), "log_softmax": (None, 0.0), "logsigmoid": (None, 0.0), "threshold": (None, None),
}

# M202: final activations that bound a logits loss's input from below or on both sides (Theia's and DeepLocalize's
# "wrong last-layer activation": a ReLU or tanh on the logits). Upper bounds alone (log_softmax, logsigmoid) do
# no harm to softmax, which ignores a shift; the squashing ones already named above keep their own message
CLIPS_LOGITS = frozenset(a for a, (lo, hi) in OUTPUT_RANGE.items() if lo is not None) - {
    "softmax", "softmin", "sigmoid", "hardsigmoid"}


# ---- helpers ---------------------------------------------------------------------------------

def canon(typ: str) -> str:
    return _ACT_ALIASES.get(typ, typ)


def layer_dicts(ctx: ProbeContext) -> list[dict[str, Any]] | None:
    """spec.model.layers as plain dicts (the form a `model.layers` patch takes); None for user classes and
    for a run without a spec."""
    if ctx.spec is None or ctx.spec.model.class_ or not ctx.spec.model.layers:
        return None
    return [layer.model_dump(exclude_none=True) for layer in ctx.spec.model.layers]


def _last_index(layers: list[dict], want) -> int | None:
    """Index of the output's last top-level layer (trailing dropout/identity/flatten skipped) if want(type)."""
    for i in range(len(layers) - 1, -1, -1):
        t = canon(layers[i]["type"])
        if t in PASSIVE:
            continue
        return i if want(t) else None
    return None


def without_last_activation(layers: list[dict]) -> list[dict] | None:
    i = _last_index(layers, lambda t: t in ACTIVATIONS)
    return None if i is None else layers[:i] + layers[i + 1:]


def with_last_out(layers: list[dict], n: int) -> list[dict] | None:
    """The layers with the last linear layer's `out` set to n (None when the output is not a linear)."""
    for i in range(len(layers) - 1, -1, -1):
        t = canon(layers[i]["type"])
        if t in PASSIVE or t in ACTIVATIONS:
            continue
        if t != "linear":
            return None
        new = [dict(l) for l in layers]
        new[i]["out"] = n
        return new
    return None


def relu_instead_of_saturating(layers: list[dict]) -> list[dict]:
    """Hidden sigmoid/tanh-like activations -> relu (the output activation, if any, is kept)."""
    out_idx = _last_index(layers, lambda t: t in ACTIVATIONS)

    def swap(ls: list[dict], top: bool) -> list[dict]:
        new = []
        for i, l in enumerate(ls):
            l = dict(l)
            if canon(l["type"]) == "residual":
                l["layers"] = swap(l.get("layers") or [], False)
            elif canon(l["type"]) in SATURATING and not (top and i == out_idx):
                l = {"type": "relu"}
            new.append(l)
        return new
    return swap(layers, True)


def hidden_activations(ctx: ProbeContext) -> list[str]:
    """Hidden activation types, from the spec, else from a probe's layer names ("1:relu")."""
    if ctx.model_summary:
        acts = list(ctx.model_summary.get("activations") or [])
        if ctx.model_summary.get("last_activation") and acts:
            acts.pop()
        return acts
    rec = ctx.init or ctx.baseline
    if rec is None:
        return []
    acts = [name.split(":", 1)[-1] for name, kind in rec.layer_kinds.items() if kind == "activation"]
    return acts[:-1] if acts and acts[-1] in ("softmax", "log_softmax", "sigmoid") else acts


def recommended_init(ctx: ProbeContext) -> str:
    """he for ReLU-family nets, xavier for sigmoid/tanh nets (the source notes on init)."""
    acts = hidden_activations(ctx)
    n_sat = sum(a in SATURATING for a in acts)
    n_relu = sum(a in RELU_FAMILY for a in acts)
    return "xavier" if n_sat > n_relu else "he"


def n_classes(ctx: ProbeContext) -> int | None:
    return ctx.arrays.n_classes if ctx.arrays is not None else None


def is_binary(ctx: ProbeContext) -> bool:
    return ctx.task == "binary" or (ctx.task == "classification" and n_classes(ctx) == 2)


def expected_outputs(ctx: ProbeContext) -> int | None:
    """How many outputs the loss needs for this data; None when the loss does not fit the task (M203)."""
    if ctx.arrays is None:
        return None
    loss, task = ctx.spec.loss.name, ctx.task
    if task in ("classification", "binary"):
        if loss in CE_LOSSES:
            return n_classes(ctx)
        if loss in BCE_LOSSES and is_binary(ctx):
            return 1
        return None
    if task == "regression" and loss in REGRESSION_LOSSES:
        return ctx.arrays.target_dim
    if task == "multilabel" and (loss in BCE_LOSSES or loss in REGRESSION_LOSSES):
        return ctx.arrays.target_dim
    return None


def measured_outputs(ctx: ProbeContext) -> int | None:
    """ctx.n_outputs, else a dummy forward of the spec's model."""
    if ctx.n_outputs is not None:
        return ctx.n_outputs
    if ctx.arrays is None or ctx.build_error is not None:
        return None
    try:
        import torch
        from ..model import build_model
        model = build_model(ctx.spec.model, ctx.arrays.sample_shape, ctx.spec.base_dir)
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros((2,) + tuple(ctx.arrays.sample_shape)))
        return int(out.shape[-1]) if out.dim() > 1 else 1
    except Exception:
        return None


def training_target(ctx: ProbeContext) -> np.ndarray | None:
    """The regression target the probes train on: standardized when data.normalize_target says so."""
    if ctx.arrays is None:
        return None
    y = np.asarray(ctx.arrays.y, dtype=np.float64)
    if ctx.task == "regression" and ctx.spec.data.normalize_target:
        y, _ = standardize_target(y, None)
    return y


def weight_layers(rec) -> list[str]:
    """Names of the linear/conv/recurrent layers of a probe record, in forward order."""
    return [name for name, kind in rec.layer_kinds.items() if kind in ("linear", "conv", "recurrent")]


def activation_std_profile(rec) -> list[tuple[str, float | None]]:
    """(layer, std of its output at init) for each weight layer that ran, first to last (None: non-finite).

    A layer the forward pass never calls (an unused head: G405's business) has no output statistics at
    all; it is left out rather than read as an overflow."""
    if rec is None or not rec.init_layers:
        return []
    return [(name, rec.init_layers[name].get("act_std")) for name in weight_layers(rec)
            if name in rec.init_layers and "act_std" in rec.init_layers[name]]


def std_ratio(rec) -> float | None:
    """Last/first weight-layer output std at init (inf when a later layer overflows); None if unmeasurable."""
    prof = activation_std_profile(rec)
    if len(prof) < 2 or prof[0][1] is None or prof[0][1] <= 0:
        return None
    if any(v is None for _, v in prof[1:]):
        return math.inf
    return prof[-1][1] / prof[0][1]


_g = fmt.num   # numbers in messages: nn_doctor/fmt.py


# ---- M200 ------------------------------------------------------------------------------------

@check("M200", needs=("spec", "model"))
def check_model_build_failed(ctx: ProbeContext) -> Finding | None:
    """M200 model-build-failed: the model does not build or its dummy forward fails."""
    err = ctx.build_error
    if err is None:
        return None
    evidence = dict(getattr(err, "evidence", None) or {})
    layer = getattr(err, "layer", None)
    if layer:
        evidence.setdefault("where", layer)
    text = str(err).strip()
    msg = text.splitlines()[0] if text else type(err).__name__
    if not isinstance(err, ModelBuildError):
        msg = f"{type(err).__name__}: {msg}"
    where = layer if layer and layer.startswith("model") else f"model.{layer}" if layer else "the model"
    fix = f"fix {where} as the message says, so that the shapes chain from the data's input to the output"
    layers = layer_dicts(ctx)
    repaired = _shape_repair(layers, evidence) if layers else None
    if repaired is not None:
        new, what = repaired
        fix = f"{what} (the treatment builds the model with this change before writing it)"
        return Finding("M200", msg, fix, evidence, patch={"model.layers": new})
    return Finding("M200", msg, fix, evidence)


TABLE_EQUIVALENT = {"batchnorm2d": "batchnorm1d", "batchnorm1d": "batchnorm1d", "dropout2d": "dropout",
                    "dropout1d": "dropout"}
IMAGE_ONLY = ("maxpool", "avgpool", "adaptive_", "flatten", "unflatten")


def _shape_repair(layers: list[dict], evidence: dict[str, Any]) -> tuple[list[dict], str] | None:
    """The layer change that makes the shapes chain, when the build error says which: a linear layer given
    (N, C, H, W) or (N, T, F) input gets a flatten before it; conv layers given a table (N, features) become
    linear layers of the same width (pooling and flatten dropped, 2d norms and dropouts their 1d forms)."""
    i, typ, shape = evidence.get("layer"), evidence.get("type"), evidence.get("input_shape")
    if not isinstance(i, int) or not isinstance(shape, list) or not 0 <= i < len(layers) or \
            canon(layers[i]["type"]) != typ:
        return None
    if typ == "linear" and len(shape) >= 2 and not any(canon(l["type"]) in ("lstm", "gru") for l in layers[i:]):
        return ([dict(l) for l in layers[:i]] + [{"type": "flatten"}] + [dict(l) for l in layers[i:]],
                f"add {{type: flatten}} before model.layers[{i}] (linear)")
    if typ in ("conv1d", "conv2d") and len(shape) == 1:
        new: list[dict] = []
        for l in layers:
            t = canon(l["type"])
            if t in ("conv1d", "conv2d"):
                new.append({"type": "linear", "out": int(l.get("out") or 1)})
            elif t in TABLE_EQUIVALENT:
                kept = {k: v for k, v in l.items() if k in ("p",)}
                new.append({"type": TABLE_EQUIVALENT[t], **kept})
            elif not t.startswith(IMAGE_ONLY):
                new.append(dict(l))
        return new, (f"the data are a table of {shape[0]} features: use linear layers instead of the conv layers "
                     f"(out {[int(l.get('out') or 1) for l in layers if canon(l['type']) in ('conv1d', 'conv2d')]}), "
                     f"without pooling or flatten")
    return None


# ---- M201 ------------------------------------------------------------------------------------

@check("M201", needs=("spec", "model", "arrays"))
def check_output_size_mismatch(ctx: ProbeContext) -> Finding | None:
    """M201 output-size-mismatch: output units != classes (or target dimensions)."""
    want = expected_outputs(ctx)
    if want is None or ctx.build_error is not None:
        return None
    if ctx.spec.model.class_ and ctx.n_outputs is None:
        return None
    got = measured_outputs(ctx)
    if got is None or got == want:
        return None
    loss, task = ctx.spec.loss.name, ctx.task
    what = (f"{n_classes(ctx)} classes" if task in ("classification", "binary") and loss in CE_LOSSES else
            "a binary target (one logit)" if loss in BCE_LOSSES and task != "multilabel" else
            f"{want} target column{'s' if want != 1 else ''}")
    layers = layer_dicts(ctx)
    new = with_last_out(layers, want) if layers else None
    evidence = {"outputs": got, "expected": want, "task": task, "loss": loss}
    if n_classes(ctx) is not None:
        evidence["n_classes"] = n_classes(ctx)
    fix = (f"set the last linear layer's out to {want}" if new else
           f"make the model output {want} value{'s' if want != 1 else ''} per sample")
    if is_binary(ctx) and loss in CE_LOSSES and got == 1:
        fix += " (or keep 1 output and use loss: bce_with_logits)"
    return Finding("M201", f"the model outputs {got} value{'s' if got != 1 else ''} per sample but {loss} on "
                           f"{what} needs {want}", fix, evidence,
                   patch={"model.layers": new} if new else None)


# ---- M202 ------------------------------------------------------------------------------------

def _probabilities_into_a_logits_loss(ctx: ProbeContext) -> Finding | None:
    """M202 for a model class, whose layers nn-doctor cannot read: its outputs at init on real rows all lie strictly
    inside (0, 1), as after a sigmoid or softmax, while the loss applies that squashing itself. (A raw linear
    output on real, varied rows spans both signs; an output that is squashed twice cannot reach the targets.)"""
    rng, loss = ctx.output_range, ctx.spec.loss.name if ctx.spec is not None else None
    if rng is None or loss not in ("bce_with_logits", "cross_entropy"):
        return None
    ev = {"output_min_at_init": rng[0], "output_max_at_init": rng[1], "loss": loss,
          "rows": "the first training rows, at init"}
    if rng[0] == 0.0 and rng[1] > 0.0:
        # exactly 0 and never below, over every row and output: clipped from below, as by a final ReLU
        return Finding("M202", f"the model's outputs never go below 0 at init (min exactly 0, max {_g(rng[1])}), as "
                               f"after a final ReLU, but {loss} takes raw logits of any sign: a logit stuck at 0 "
                               f"passes no gradient", "return raw logits from forward() (drop the final ReLU)", ev)
    if not (0.0 < rng[0] and rng[1] < 1.0):
        return None
    if loss == "bce_with_logits":
        return Finding("M202", f"the model's outputs all lie in ({_g(rng[0])}, {_g(rng[1])}) at init, as after a "
                               f"sigmoid, but bce_with_logits applies the sigmoid itself: squashed twice, the "
                               f"outputs cannot reach the targets",
                       "set loss: bce (it takes probabilities), or return raw logits from forward()", ev,
                       patch={"loss": "bce"})
    return Finding("M202", f"the model's outputs all lie in ({_g(rng[0])}, {_g(rng[1])}) at init, as after a softmax "
                           f"or sigmoid, but cross_entropy applies log_softmax itself: squashed twice, the loss "
                           f"cannot go near 0",
                   "return raw logits from forward() (drop the final softmax/sigmoid)", ev)


@check("M202", needs=("spec", "model", "arrays"))
def check_output_activation_mismatch(ctx: ProbeContext) -> Finding | None:
    """M202 output-activation-mismatch: the last activation does not fit the loss or the target's range."""
    summary = ctx.model_summary
    layers = layer_dicts(ctx)
    if layers is None:
        return _probabilities_into_a_logits_loss(ctx)
    if summary is None:
        return None
    last = summary.get("last_activation")
    loss, task = ctx.spec.loss.name, ctx.task
    ev = {"last_activation": last, "loss": loss, "task": task}
    removed = without_last_activation(layers)

    if loss == "cross_entropy" and last in ("softmax", "softmin", "sigmoid"):
        return Finding("M202", f"the model ends in {last} but cross_entropy applies log_softmax itself: the double "
                               f"squashing keeps the loss from going near 0 and shrinks the gradients",
                       f"remove the final {last} layer (cross_entropy takes raw logits)", ev,
                       patch={"model.layers": removed})
    if loss == "cross_entropy" and last == "log_softmax":
        return Finding("M202", "the model ends in log_softmax before cross_entropy, which applies log_softmax "
                               "itself; harmless (log_softmax is idempotent) but redundant",
                       "remove the final log_softmax layer, or use loss: nll with it", ev, severity="info",
                       patch={"model.layers": removed})
    if loss == "bce_with_logits" and last in ("sigmoid", "softmax", "hardsigmoid"):
        return Finding("M202", f"the model ends in {last} but bce_with_logits applies the sigmoid itself: outputs "
                               f"are squashed twice and the loss cannot go near 0",
                       f"remove the final {last} layer (bce_with_logits takes raw logits)", ev,
                       patch={"model.layers": removed})
    if loss in ("cross_entropy", "bce_with_logits") and last in CLIPS_LOGITS:
        lo, hi = OUTPUT_RANGE[last]
        rng = f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        ev["output_range"] = rng
        return Finding("M202", f"the model ends in {last}, which clips the logits to {rng}, but {loss} takes raw "
                               f"logits of any sign: " + ("a logit stuck at the bound passes no gradient and the "
                               "class cannot be pushed down" if hi is None else "the predicted probabilities "
                               "cannot approach 0 or 1, so the loss cannot go near 0"),
                       f"remove the final {last} layer ({loss} takes raw logits)", ev,
                       patch={"model.layers": removed})
    if loss == "nll" and last != "log_softmax":
        if last == "softmax":
            i = _last_index(layers, lambda t: t == "softmax")
            new = [dict(l) for l in layers]
            new[i]["type"] = "log_softmax"
            return Finding("M202", "nll expects log-probabilities but the model ends in softmax (probabilities)",
                           "replace the final softmax with log_softmax (or drop it and use loss: cross_entropy)",
                           ev, patch={"model.layers": new})
        patch: dict[str, Any] = {"loss": "cross_entropy"}
        if last is not None:
            patch["model.layers"] = removed
        return Finding("M202", f"nll expects log-probabilities but the model ends in "
                               f"{last or 'a linear layer (raw logits)'}",
                       ("use loss: cross_entropy on the raw logits" +
                        (f" and remove the final {last}" if last else "") + " (or end the model in log_softmax)"),
                       ev, patch=patch)
    if loss == "bce" and last not in ("sigmoid", "hardsigmoid"):
        patch = {"loss": "bce_with_logits"}
        if last is not None:
            patch["model.layers"] = removed
        return Finding("M202", f"bce expects probabilities in [0, 1] but the model ends in "
                               f"{last or 'a linear layer (raw logits, any sign)'}",
                       "use loss: bce_with_logits on the raw logits"
                       + (f" and remove the final {last}" if last else ""),
                       ev, patch=patch)
    if task == "regression" and loss in REGRESSION_LOSSES and last in OUTPUT_RANGE:
        lo, hi = OUTPUT_RANGE[last]
        y = training_target(ctx)
        if y is None or (lo is None and hi is None):
            return None
        outside = np.zeros(y.shape, dtype=bool)
        if lo is not None:
            outside |= y < lo
        if hi is not None:
            outside |= y > hi
        frac = float(outside.mean())
        if frac == 0.0:
            return None
        rng = f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        scaled = " (standardized: data.normalize_target)" if ctx.spec.data.normalize_target else ""
        ev.update({"output_range": rng, "target_min": float(y.min()), "target_max": float(y.max()),
                   "fraction_outside": frac})
        return Finding("M202", f"the regression output ends in {last} (range {rng}) but {frac:.0%} of the "
                               f"target{scaled} lies outside it (target {y.min():.3g} .. {y.max():.3g})",
                       f"remove the final {last} layer: a regression output should be linear", ev,
                       patch={"model.layers": removed})
    return None


# ---- M203 ------------------------------------------------------------------------------------

@check("M203", needs=("spec", "arrays"))
def check_loss_task_mismatch(ctx: ProbeContext) -> Finding | None:
    """M203 loss-task-mismatch: MSE/L1 on class labels, cross-entropy on a continuous target, BCE on multi-class."""
    if ctx.arrays is None:
        return None
    loss, task, C = ctx.spec.loss.name, ctx.task, n_classes(ctx)
    layers = layer_dicts(ctx)
    last = (ctx.model_summary or {}).get("last_activation")
    got = measured_outputs(ctx)
    ev: dict[str, Any] = {"loss": loss, "task": task}
    if C is not None:
        ev["n_classes"] = C

    def patch_for(new_loss: str, n_out: int, drop_last: bool) -> dict[str, Any]:
        p: dict[str, Any] = {"loss": new_loss}
        if layers is not None:
            new = without_last_activation(layers) if drop_last and last else layers
            if got is not None and got != n_out:
                new = with_last_out(new, n_out) if new else None
            if new is not None and new != layers:
                p["model.layers"] = new
        return p

    if task in ("classification", "binary") and loss in REGRESSION_LOSSES:
        if is_binary(ctx) and got == 1:
            new_loss, n_out = "bce_with_logits", 1
        else:
            new_loss, n_out = "cross_entropy", C
        return Finding("M203", f"{loss} is a regression loss but the target holds {C} class labels: it treats "
                               f"the class ids as numbers to approximate", f"use loss: {new_loss}"
                       + (f" with {n_out} outputs" if got != n_out else ""), ev,
                       patch=patch_for(new_loss, n_out, last in ("softmax", "sigmoid", "log_softmax")))
    if task == "regression" and (loss in CE_LOSSES or loss in BCE_LOSSES):
        y = training_target(ctx)
        if loss in BCE_LOSSES and y is not None and float(y.min()) >= 0.0 and float(y.max()) <= 1.0:
            return None   # soft targets in [0, 1]: BCE is a legitimate choice
        dim = ctx.arrays.target_dim
        return Finding("M203", f"{loss} is a classification loss but the target is continuous (regression)",
                       "use loss: mse (or l1/huber) with " + f"{dim} linear output{'s' if dim != 1 else ''}", ev,
                       patch=patch_for("mse", dim, True))
    if task == "classification" and loss in BCE_LOSSES and C is not None and C > 2:
        return Finding("M203", f"{loss} is a binary loss but the target has {C} classes",
                       f"use loss: cross_entropy with {C} outputs (raw logits)", ev,
                       patch=patch_for("cross_entropy", C, True))
    if task == "multilabel" and loss in CE_LOSSES:
        dim = ctx.arrays.target_dim
        return Finding("M203", f"{loss} picks one class per sample but the target has {dim} independent 0/1 labels "
                               f"(multilabel)", f"use loss: bce_with_logits with {dim} outputs", ev,
                       patch=patch_for("bce_with_logits", dim, True))
    return None


# ---- M204 ------------------------------------------------------------------------------------

def symmetric_layers(ctx: ProbeContext) -> list[str]:
    """Hidden linear/conv layers whose output units all have identical weights after init (built, not trained)."""
    if ctx.arrays is None or ctx.build_error is not None:
        return []
    try:
        from ..model import apply_init, build_model, layer_table
        model = build_model(ctx.spec.model, ctx.arrays.sample_shape, ctx.spec.base_dir)
        apply_init(model, ctx.spec.model.init, ctx.spec.training.seed)
    except Exception:
        return []
    weights = [(name, m) for name, m, kind in layer_table(model) if kind in ("linear", "conv")]
    out = []
    for name, m in weights[:-1]:       # the output layer's units are told apart by the loss itself
        w = m.weight.detach().reshape(m.weight.shape[0], -1)
        if w.shape[0] > 1 and bool((w == w[:1]).all()):
            out.append(name)
    return out


@check("M204", needs=("spec", "init"))
def check_symmetric_init(ctx: ProbeContext) -> Finding | None:
    """M204 symmetric-init: zeros/constant weights make the units of a layer identical."""
    init = ctx.spec.model.init
    static = init.scheme in ("zeros", "constant")
    measured = [] if static else (symmetric_layers(ctx) if ctx.spec.model.class_ else [])
    flat = []
    if ctx.init is not None:
        prof = activation_std_profile(ctx.init)
        flat = [name for name, std in prof[:-1] if std == 0.0]
    if not static and not measured:
        return None
    layers = measured or flat
    good = recommended_init(ctx)
    ev: dict[str, Any] = {"init": str(init)}
    if layers:
        ev["identical_unit_layers"] = layers
    if flat:
        ev["zero_std_at_init"] = flat
    where = f" ({', '.join(layers)})" if layers else ""
    what = f"model.init is {init}" if static else "the model's own init"
    return Finding("M204", f"{what}: every unit of a hidden layer starts with the same weights{where}, gets the "
                           f"same gradient and stays identical",
                   f"set model.init: {good}", ev, patch={"model.init": good})


# ---- M205 ------------------------------------------------------------------------------------

@check("M205", needs=("spec", "init"))
def check_init_scale_mismatch(ctx: ProbeContext) -> Finding | None:
    """M205 init-scale-mismatch: the output std of the weight layers shrinks or grows by a large factor at init."""
    rec = ctx.init
    if rec is None or rec.error is not None:
        return None
    prof = activation_std_profile(rec)
    ratio = std_ratio(rec)
    if ratio is None or len(prof) < STD_MIN_WEIGHT_LAYERS:
        return _oversized_weights(ctx, rec)
    if STD_RATIO_LOW <= ratio <= STD_RATIO_HIGH:
        return None
    shrinks = ratio < STD_RATIO_LOW
    ev = {"init": str(ctx.spec.model.init), "act_std": {n: v for n, v in prof}, "std_ratio_last_first": ratio,
          "thresholds": {"low": STD_RATIO_LOW, "high": STD_RATIO_HIGH, "min_weight_layers": STD_MIN_WEIGHT_LAYERS}}
    fix, patch = _init_fix(ctx, "add batchnorm1d/layernorm after the weight layers (the init already matches the "
                                "activation)")
    trend = "shrinks" if shrinks else "grows"
    # an error when the blow-up is itself what makes training non-finite within the first steps: it is then
    # the root cause, and must come before its symptom G400 as first_fix (zoo: g402_init_explodes_to_nan)
    nan = ctx.baseline.first_nonfinite if ctx.baseline is not None else None
    severity = None
    if not shrinks and nan is not None and nan.get("step", INIT_NAN_STEPS) < INIT_NAN_STEPS:
        severity = "error"
        ev["first_nonfinite"] = nan
    return Finding("M205", f"at init the output std of the {len(prof)} weight layers {trend} "
                           f"from {_g(prof[0][1])} to {_g(prof[-1][1])} ({ratio:.2g}x, outside "
                           f"[{STD_RATIO_LOW:g}, {STD_RATIO_HIGH:g}]) with model.init {ctx.spec.model.init}"
                           + (f"; training goes non-finite at step {nan['step']}" if severity else ""),
                   fix, ev, patch=patch, severity=severity)


def _init_fix(ctx: ProbeContext, already: str) -> tuple[str, dict[str, Any] | None]:
    """An init-scale finding's fix and patch: the init that matches the activation, or `already` (no patch) when
    the spec has that init."""
    good = recommended_init(ctx)
    if ctx.spec.model.init.scheme == good:
        return already, None
    return f"set model.init: {good}", {"model.init": good}


def _oversized_weights(ctx: ProbeContext, rec) -> Finding | None:
    """M205 for a net too shallow for the depth trend: a hidden weight layer drawn far wider than any standard
    scheme draws it ({normal: 3.0} into tanh; torch.randn weights in a user's module). A norm layer rescales
    the signal, so a model with one is left to the trend rule."""
    if any(kind == "norm" for kind in rec.layer_kinds.values()) or (ctx.model_summary or {}).get("has_norm"):
        return None
    names = [n for n in weight_layers(rec) if n in rec.init_layers]
    hidden = [(n, rec.init_layers[n].get("w_gain")) for n in names[:-1]]
    big = [(n, g) for n, g in hidden if g is not None and g > INIT_GAIN_FACTOR * INIT_GAIN_REF]
    if not big:
        return None
    worst = max(big, key=lambda t: t[1])
    ev = {"init": str(ctx.spec.model.init), "weight_gain": dict(hidden),
          "thresholds": {"gain_ref": INIT_GAIN_REF, "gain_factor": INIT_GAIN_FACTOR}}
    fix, patch = _init_fix(ctx, "scale the initial weights down (std about sqrt(2 / fan_in))")
    return Finding("M205", f"at init the weights of {len(big)} hidden layer{'s' if len(big) > 1 else ''} are drawn "
                           f"too wide: {worst[0]} has std(W) x sqrt(fan_in) = {worst[1]:.3g}, "
                           f"{worst[1] / INIT_GAIN_REF:.2g}x He's sqrt(2) (> {INIT_GAIN_FACTOR:g}x), so each such layer "
                           f"multiplies the signal's std by about that much",
                   fix, ev, patch=patch)


# ---- M206 ------------------------------------------------------------------------------------

@check("M206", needs=("spec", "model"), uses=("init",))
def check_saturating_deep_network(ctx: ProbeContext) -> Finding | None:
    """M206 saturating-deep-network: many sigmoid/tanh layers without normalisation or residual connections."""
    s = ctx.model_summary
    if s is None:
        return None
    n = s.get("n_saturating", 0)
    if n < SATURATING_DEEP or s.get("has_norm") or s.get("has_residual"):
        return None
    layers = layer_dicts(ctx)
    kinds = sorted({a for a in hidden_activations(ctx) if a in SATURATING})
    ev = {"n_saturating": n, "activations": kinds, "has_norm": False, "has_residual": False,
          "threshold": SATURATING_DEEP, "max_gradient_scale": 0.25 ** n if "sigmoid" in kinds else None}
    patch = {"model.layers": relu_instead_of_saturating(layers), "model.init": "he"} if layers else None
    return Finding("M206", f"{n} hidden {'/'.join(kinds)} activations and no batchnorm/layernorm or residual "
                           f"connection (>= {SATURATING_DEEP}): gradients shrink through each saturating layer",
                   "use relu for the hidden activations and set model.init: he (or add batchnorm1d after each "
                   "linear)", ev, patch=patch)


# ---- M207 ------------------------------------------------------------------------------------

def expected_initial_loss(ctx: ProbeContext) -> tuple[float, str] | None:
    """(expected loss at init, how it is derived); None when there is no standard expectation."""
    if ctx.arrays is None:
        return None
    loss, task, C = ctx.spec.loss.name, ctx.task, n_classes(ctx)
    last = (ctx.model_summary or {}).get("last_activation")
    if task in ("classification", "binary") and loss in CE_LOSSES and C and C >= 2:
        if loss == "nll" and last != "log_softmax":
            return None
        return math.log(C), f"ln {C} (uniform predictions over {C} classes)"
    if loss in BCE_LOSSES and (is_binary(ctx) or task == "multilabel"):
        if loss == "bce" and last not in ("sigmoid", "hardsigmoid"):
            return None
        return math.log(2), "ln 2 (predicting 0.5)"
    if task == "regression" and loss in REGRESSION_LOSSES:
        y = training_target(ctx)[:2048]           # the rows the probe's full-batch loss uses
        if loss == "mse":
            return float((y ** 2).mean()), "mean(y^2) (an output near 0: the target variance plus its squared mean)"
        if loss == "l1":
            return float(np.abs(y).mean()), "mean|y| (an output near 0)"
        a = np.abs(y)
        return float(np.where(a < 1, 0.5 * a ** 2, a - 0.5).mean()), "mean huber(y) (an output near 0)"
    return None


@check("M207", needs=("spec", "init", "arrays"))
def check_abnormal_initial_loss(ctx: ProbeContext) -> Finding | None:
    """M207 abnormal-initial-loss: the loss at init is far from ln C (cross-entropy) or mean(y^2) (MSE)."""
    rec = ctx.init
    if rec is None or rec.error is not None:
        return None
    exp = expected_initial_loss(ctx)
    if exp is None:
        return None
    expected, how = exp
    measured = rec.initial_loss
    ev: dict[str, Any] = {"expected": expected, "expected_from": how, "measured": measured,
                          "factor_threshold": INIT_LOSS_FACTOR, "init": str(ctx.spec.model.init),
                          "normalize": ctx.spec.data.normalize}
    if measured is None:
        if not (rec.losses or rec.first_nonfinite or rec.stopped == "non-finite"):
            return None   # not measured (an empty or skipped record), rather than non-finite
        return Finding("M207", f"the loss at init is not finite (expected ~{expected:.3g}, {how})",
                       "check the input scale (data.normalize: standardize), the init and the output layer", ev)
    if expected <= 0:
        return None
    ratio = measured / expected
    ev["ratio"] = ratio
    # MSE is quadratic in the error: compare it on the error's own scale (RMSE), so the factor means the
    # same as for the losses linear in the error. A gain-1 (xavier) regression head starts with outputs of
    # std ~1 next to a standardized target: MSE 1.5-3.5x mean(y^2) by seed, RMSE 1.2-1.9x (fault zoo)
    scaled = math.sqrt(ratio) if ctx.spec.loss.name == "mse" else ratio
    if ctx.spec.loss.name == "mse":
        ev["compared_on"] = "the error scale: sqrt(ratio) (MSE is quadratic in the error)"
    if 1 / INIT_LOSS_FACTOR <= scaled <= INIT_LOSS_FACTOR:
        return None
    patch = None
    if scaled > INIT_LOSS_FACTOR:
        if ctx.spec.data.normalize == "none" and ctx.task != "regression":
            fix, patch = "set data.normalize: standardize (large inputs give overconfident logits at init)", \
                {"data.normalize": "standardize"}
        elif ctx.spec.model.init.scheme in ("normal", "uniform", "constant"):
            good = recommended_init(ctx)
            fix, patch = f"set model.init: {good} (the init scale makes the outputs large)", {"model.init": good}
        else:
            fix = "check the output layer, the init scale and the labels"
    else:
        fix = "check the labels and the loss: a loss this low before training suggests leakage or a wrong target"
    beyond = (f"beyond {INIT_LOSS_FACTOR:g}x" if scaled == ratio else
              f"{scaled:.2g}x on the error scale (sqrt), beyond {INIT_LOSS_FACTOR:g}x")
    return Finding("M207", f"loss at init {measured:.4g} vs expected {expected:.4g} ({how}): {ratio:.2g}x, "
                           f"{beyond}", fix, ev, patch=patch)


# ---- M208 ------------------------------------------------------------------------------------

WIDENABLE = ("linear", "conv1d", "conv2d", "lstm", "gru")   # layers whose `out` sets a hidden width


def widened(layers: list[dict], n_out: int) -> list[dict] | None:
    """Every hidden weighted layer's out doubled (linear, conv and recurrent layers before the output layer; at
    least 2x the outputs, so no layer is a bottleneck); a model with no hidden linear layer (a linear model)
    gets one: HIDDEN_WIDTH ReLU units before its output layer."""
    idx = [i for i, l in enumerate(layers) if canon(l["type"]) == "linear"]
    if len(idx) == 1 and not any(canon(l["type"]) in ("conv1d", "conv2d", "lstm", "gru", "transformer_encoder")
                                 for l in layers):
        i = idx[0]
        return [dict(l) for l in layers[:i]] + [{"type": "linear", "out": max(HIDDEN_WIDTH, 2 * n_out)},
                                                {"type": "relu"}] + [dict(l) for l in layers[i:]]
    hidden = _hidden_weighted(layers)
    if not hidden:
        return None
    new = [dict(l) for l in layers]
    for i in hidden:
        new[i]["out"] = max(2 * int(new[i].get("out") or 1), 2 * n_out)
    return new


def _hidden_weighted(layers: list[dict]) -> list[int]:
    """Indices of the top-level layers with a hidden width: every WIDENABLE layer before the last linear."""
    lin = [i for i, l in enumerate(layers) if canon(l["type"]) == "linear"]
    if not lin:
        return []
    return [i for i, l in enumerate(layers[:lin[-1]]) if canon(l["type"]) in WIDENABLE and l.get("out")]


def widths(layers: list[dict]) -> list[int]:
    """The `out` of every hidden weighted layer (linear, conv, recurrent; the output layer excluded)."""
    return [int(layers[i].get("out") or 0) for i in _hidden_weighted(layers)]


def _with_activations(layers: list[dict]) -> list[dict]:
    """A ReLU after every weighted top-level layer but the last (an affine stack made a network)."""
    weighted = [i for i, l in enumerate(layers) if canon(l["type"]) in ("linear", "conv1d", "conv2d")]
    new: list[dict] = []
    for i, l in enumerate(layers):
        new.append(dict(l))
        if i in weighted[:-1]:
            new.append({"type": "relu"})
    return new


def _affine_model(ctx: ProbeContext) -> Finding | None:
    """The network is one affine map (no activation between its layers): it can only draw a linear boundary or
    fit a linear function. A remark: a linear model is a fair choice, and the counterfactual probe (a ReLU
    between the layers, or a hidden layer for a single one) decides whether the data asks for more."""
    err = ctx.affine_error
    if err is None or err > AFFINE_TOL or ctx.spec is None:
        return None
    layers = layer_dicts(ctx)
    n_out = measured_outputs(ctx) or 1
    ev = {"kind": "affine", "affine_error": err, "threshold": AFFINE_TOL,
          "test": "f((a+b)/2) vs (f(a)+f(b))/2 on pairs of training rows at init"}
    probe_only = None
    if layers:
        n_weighted = sum(canon(l["type"]) in ("linear", "conv1d", "conv2d") for l in layers)
        if n_weighted >= 2:
            new = _with_activations(layers)
            fix = f"add a ReLU after each of the first {n_weighted - 1} weighted layers (they compose to one linear map)"
        else:
            new = widened(layers, n_out)
            fix = f"add a hidden layer: {max(HIDDEN_WIDTH, 2 * n_out)} ReLU units before the output layer"
        patch = {"model.layers": new} if new else None
        what = f"{n_weighted} weighted layer{'s' if n_weighted > 1 else ''} and no activation between them"
    else:
        # the user's forward() is where the activations go; the probe stands in a small ReLU MLP to measure what
        # a non-linear model gains on this data, and that stand-in is never written
        patch = {"model": {"layers": [{"type": "linear", "out": max(HIDDEN_WIDTH, 2 * n_out)}, {"type": "relu"},
                                      {"type": "linear", "out": n_out}], "init": "he"}}
        probe_only = (f"a {max(HIDDEN_WIDTH, 2 * n_out)}-unit ReLU MLP in place of your model (a stand-in: the "
                      f"change belongs in your forward())")
        fix = "call an activation (torch.relu) between the Linear layers in forward()"
        what = "no activation between its layers (measured on its outputs)"
    f = Finding("M208", f"the model is one affine map: {what}, so it can only fit a linear function of the inputs "
                        f"(midpoint test {err:.0e} <= {AFFINE_TOL:g})", fix, ev, severity=Severity.INFO, patch=patch)
    f.probe_only = probe_only
    return f


@check("M208", needs=("spec", "subset", "arrays"), uses=("lr",))
def check_capacity_mismatch(ctx: ProbeContext) -> list[Finding] | None:
    """M208 capacity-mismatch: one affine map, cannot fit a small subset while small, or far more parameters than
    rows."""
    found = []
    affine = _affine_model(ctx)
    n_params = ctx.n_params or (ctx.subset_fit.n_params if ctx.subset_fit is not None else None)
    n_train = len(ctx.arrays.y) if ctx.arrays is not None else None
    rec = ctx.subset_fit
    if rec is not None and rec.error is None and rec.initial_loss and rec.final_loss is not None and n_params:
        subset = rec.settings.get("subset") or n_train or 0
        rows = min(subset, n_train) if n_train else subset
        frac = rec.final_loss / rec.initial_loss
        small = n_params <= SMALL_PARAMS_PER_ROW * rows
        if frac > SUBSET_FIT_FRACTION and small:
            lr = ctx.working_lr or rec.overrides.get("optimizer.lr") or ctx.spec.optimizer.lr
            layers = layer_dicts(ctx)
            n_out = measured_outputs(ctx) or 1
            new = widened(layers, n_out) if layers else None
            ev = {"kind": "too small", "rows": rows, "n_params": n_params, "initial_loss": rec.initial_loss,
                  "final_loss": rec.final_loss,
                  "fraction": frac, "steps": rec.steps_run, "lr": lr,
                  "thresholds": {"fit_fraction": SUBSET_FIT_FRACTION, "small_params_per_row": SMALL_PARAMS_PER_ROW}}
            found.append(Finding(
                "M208", f"too small: {n_params:,} parameters cannot fit {rows} training rows (loss "
                        f"{_g(rec.initial_loss)} -> {_g(rec.final_loss)}, {fmt.share(rec.final_loss, rec.initial_loss)} of the start after "
                        f"{rec.steps_run} steps at lr {lr:g}; a fit ends below {SUBSET_FIT_FRACTION:.0%})",
                (f"widen the hidden layers: out {widths(layers)} -> {widths(new)}" if new and widths(layers)
                 else f"add a hidden layer: {widths(new)[0]} ReLU units before the output layer" if new else
                 "widen the hidden layers or add a layer"), ev,
                patch={"model.layers": new} if new else None))
    if n_params and n_train and n_params > BIG_PARAMS_PER_ROW * n_train:
        per = n_params / n_train
        found.append(Finding(
            "M208", f"too big: {n_params:,} parameters for {n_train:,} training rows ({per:.0f} per row, "
                    f"> {BIG_PARAMS_PER_ROW:g})",
            "shrink the hidden layers, or regularise (dropout, optimizer.weight_decay) and stop early",
            {"kind": "too big", "n_params": n_params, "n_train": n_train, "params_per_row": per,
             "threshold": BIG_PARAMS_PER_ROW}))
    if affine is not None and not any(f.evidence.get("kind") == "too small" for f in found):
        found.append(affine)   # a subset it cannot fit already says more (a warning); else the probe decides
    return found or None
