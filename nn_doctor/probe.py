"""The one instrumented training loop every probe uses.

A probe is a pure unit of work: spec (with overrides applied) + settings + seed -> ProbeRecord. It
builds the model from the spec with the probe's seed, trains `steps` minibatch steps on data that is
already on the device, and records:

- every step: the training loss (kept in a device buffer; read back every CHECK_EVERY steps, so a CUDA
  probe makes no host round-trip per step);
- every `eval_every` steps: the validation loss;
- at init and every `record_every` steps, per layer: gradient norm, activation mean/std, the fraction
  of ReLU-family units inactive on the whole batch, the fraction of sigmoid/tanh outputs saturated,
  and the update-to-weight norm ratio;
- the first step and the first layer where a NaN/Inf appears (found by replaying the step from the
  last snapshot with every hook armed, so the normal path pays nothing for it).

It stops early once the outcome is clear (non-finite loss, smoothed loss far above its start) and at
its time budget. Everything it keeps is plain floats: no record holds a tensor or a graph.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import curves
from .data import ArrayData
from .scaling import normalize_features, standardize_target
from .model import apply_init, build_loss, build_model, build_optimizer, build_scheduler, layer_table
from .spec import Spec

# ---- constants ------------------------------------------------------------------------------
CHECK_EVERY = 10          # steps between host read-backs of the loss buffer (one sync per 10 steps on CUDA)
DIVERGE_FACTOR = 4.0      # smoothed loss > 4x its start = diverged (Lightning's lr finder uses 4, torch-lr-finder 5)
EMA_BETA = 0.9            # loss smoothing with bias correction; shorter window than lr finders' 0.98: probes are short
EVAL_ROWS = 2048          # rows of train/val used for full-batch loss evaluations (enough for a stable mean)
SATURATION_SIGMOID = 0.01  # sigmoid output within 0.01 of 0/1: derivative s(1-s) < 0.01 (flat region)
SATURATION_TANH = 0.99    # |tanh| > 0.99: derivative 1 - y^2 < 0.02
RELU_FAMILY = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Hardswish, nn.PReLU, nn.RReLU)
DEAD_THRESHOLD = 0.0      # a ReLU-family unit is inactive on a sample when its output <= 0
FP16_MAX = 65504.0        # the largest finite float16; anything above overflows to inf
SCALE_INIT = 2.0 ** 16    # torch.amp.GradScaler's defaults: init_scale 65536, backoff 0.5, growth 2x every 2000
SCALE_BACKOFF = 0.5       # ... good steps (used by the simulated fp16 path too, so CPU and CUDA behave alike)
SCALE_GROWTH = 2.0
SCALE_GROWTH_INTERVAL = 2000
SCALE_FLOOR = 1.0         # a loss scale below 1 no longer scales anything up: the scaler has collapsed (16 halvings
                          # from 65536 in a row); the probe stops there, as every later step would be skipped
SINGLE_THREAD_WORK = 5e8  # CPU probes below ~500M multiply-adds per step run on one thread: OpenMP's fork/join
                          # costs more than it saves there (measured: a 10-32-1 MLP, 300 steps, 0.29 s on 1 thread
                          # vs 1.9 s on 2 threads of a busy 2-core machine)


@dataclass
class ProbeSettings:
    name: str = "probe"
    steps: int = 150
    batch_size: int | None = None     # None: the spec's training.batch_size
    subset: int | None = None         # train on the first `subset` rows of a seeded permutation
    eval_every: int = 25              # validation loss cadence (0: never)
    record_every: int = 25            # per-layer statistics cadence (0: only at init)
    instrument: bool = True           # per-layer hooks at all
    stop_on_divergence: bool = True
    budget_s: float | None = None     # wall-clock cap for this probe
    seed: int = 0
    # stop once the training loss is at most max(stop_below, stop_below_fraction x its start): the tiny-batch
    # test's "memorised" is clear then, and a long cap costs only the runs that do not get there
    stop_below: float | None = None
    stop_below_fraction: float | None = None


@dataclass
class ProbeRecord:
    name: str
    settings: dict[str, Any]
    overrides: dict[str, Any]
    losses: list[float | None] = field(default_factory=list)        # per step; None = non-finite
    val_losses: list[tuple[int, float | None]] = field(default_factory=list)
    train_eval: list[tuple[int, float | None]] = field(default_factory=list)  # full-batch train loss (no dropout)
    initial_loss: float | None = None        # full-batch training loss at init
    final_loss: float | None = None          # full-batch training loss at the end (None if non-finite)
    reference_loss: float | None = None      # the loss of the best constant prediction (class prior / target mean)
    initial_val_loss: float | None = None
    final_val_loss: float | None = None
    init_layers: dict[str, dict[str, float]] = field(default_factory=dict)   # layer stats at init (step 0)
    layers: list[dict[str, Any]] = field(default_factory=list)   # [{"step": s, "stats": {layer: {...}}}]
    first_nonfinite: dict[str, Any] | None = None
    params_without_grad: list[str] = field(default_factory=list)
    params_unchanged: list[str] = field(default_factory=list)
    stopped: str = "completed"               # completed | fitted | diverged | non-finite | budget | error
    error: str | None = None                 # "ExceptionType: message" when the probe raised
    error_type: str | None = None            # the exception's class name
    error_where: str | None = None           # the phase that raised: model build, forward, loss, backward, ...
    error_frame: str | None = None           # the innermost frame outside torch and nn-doctor ("net.py:12 in forward")
    steps_run: int = 0
    wall_s: float = 0.0
    step_time_s: float | None = None
    peak_memory_bytes: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)   # at the end, on validation (else training) rows
    device: str = "cpu"
    n_params: int = 0
    layer_kinds: dict[str, str] = field(default_factory=dict)
    # mixed precision (training.precision bf16/fp16): {"precision", "simulated", "loss_scaling", "first_overflow",
    # "overflow_steps", "skipped_steps", "scale_initial", "scale_final", "scale_min", "collapsed"}
    amp: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def smoothed(self) -> list[float | None]:
        return ema(self.losses)

    @property
    def ok(self) -> bool:
        return self.error is None and self.stopped not in ("diverged", "non-finite")


def ema(values: list[float | None], beta: float = EMA_BETA) -> list[float | None]:
    """Bias-corrected exponential moving average; stops (None) from the first non-finite value on."""
    out: list[float | None] = []
    avg = 0.0
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            out.extend([None] * (len(values) - i))
            break
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return out


# ---- data on the device -----------------------------------------------------------------------

class DeviceData:
    """The arrays moved to the device once; normalised variants computed once and cached."""

    def __init__(self, arrays: ArrayData, device: torch.device):
        self.arrays = arrays
        self.device = device
        self.task = arrays.task
        self.n_classes = arrays.n_classes
        self.sample_shape = arrays.sample_shape
        self._X = torch.as_tensor(np.array(arrays.X), device=device)
        self._Xv = torch.as_tensor(np.array(arrays.X_val), device=device) if arrays.X_val is not None else None
        classy = arrays.task in ("classification", "binary")
        ydt = torch.long if classy else torch.float32
        self.y = torch.as_tensor(np.array(arrays.y), device=device, dtype=ydt)
        self.y_val = torch.as_tensor(np.array(arrays.y_val), device=device, dtype=ydt) if arrays.y_val is not None else None
        self._cache: dict[tuple, tuple] = {}
        self._param_counts: dict[str, int] = {}

    def param_count(self, spec: Spec) -> int:
        """Parameters of the spec's model (built once per model spec on the CPU, cached)."""
        key = spec.model.model_dump_json()
        if key not in self._param_counts:
            try:
                with torch.random.fork_rng(devices=[]):
                    model = build_model(spec.model, self.sample_shape, spec.base_dir)
                self._param_counts[key] = sum(p.numel() for p in model.parameters())
            except Exception:
                self._param_counts[key] = 0
        return self._param_counts[key]

    def view(self, normalize: str, normalize_target: bool):
        """(X, y, X_val, y_val) with the spec's normalisation; statistics from the training rows only."""
        key = (normalize, normalize_target and self.task == "regression")
        if key not in self._cache:
            X, Xv, y, yv = self._X, self._Xv, self.y, self.y_val
            X, Xv = normalize_features(X, Xv, normalize)
            if key[1]:
                y, yv = standardize_target(y, yv)
            self._cache[key] = (X, y, Xv, yv)
        return self._cache[key]


def targets_for_loss(y: torch.Tensor, loss_name: str, task: str, n_out: int) -> torch.Tensor:
    """The target tensor in the form the loss expects, given how the model's output is shaped.

    Keeps probes running on mismatched specs (MSE on class labels, BCE on several outputs) so the
    counterfactual probes can compare them; the static checks report the mismatch itself.
    """
    classy = task in ("classification", "binary")
    if loss_name in ("cross_entropy", "nll"):
        if classy:
            return y
        return y.float()
    if classy:  # bce / mse / l1 / huber on class ids
        if n_out == 1:
            return y.float().unsqueeze(1)
        return F.one_hot(y, num_classes=n_out).float() if int(y.max()) < n_out else y.float().unsqueeze(1)
    return y.float()


# ---- instrumentation ----------------------------------------------------------------------------

class Instruments:
    """Forward hooks on the model's leaf layers. Armed hooks reduce to tensors kept on the device until the
    record is written (one read-back per record). The probe installs them only around the steps it
    records (attach/remove): even an idle hook sends every call of its module down torch's slow path
    (measured: +3.5% on a 0.8 ms step of an MLP 64-64 on the CPU)."""

    def __init__(self, model: nn.Module, attach: bool = True):
        self.layers = layer_table(model)
        self.kinds = {name: kind for name, _, kind in self.layers}
        self.armed = False
        self.nan_watch = False
        self.first_bad_layer: str | None = None
        self.acts: dict[str, dict[str, torch.Tensor]] = {}
        self.handles = []
        # Activations called as functions (torch.relu / F.relu in a user's forward) have no module to hook. A
        # ReLU unit that is dead outputs exactly 0 on every row, so it shows at the input of the next linear
        # or conv layer as a feature that is 0 on the whole batch. Watched only when no ReLU-family module
        # exists (modules are measured directly) and never at the first such layer (its input is the data).
        weighted = [name for name, _, kind in self.layers if kind in ("linear", "conv")]
        functional = not any(isinstance(m, RELU_FAMILY) for _, m, _ in self.layers)
        self.input_watch = set(weighted[1:]) if functional else set()
        if attach:
            self.attach()
        # parameters grouped by layer, for grad norms and update ratios
        self.params: dict[str, list[torch.nn.Parameter]] = {}
        for name, module, kind in self.layers:
            ps = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if kind in ("recurrent", "attention"):
                ps = [p for p in module.parameters() if p.requires_grad]
            if ps and kind in ("linear", "conv", "recurrent", "attention", "norm", "other"):
                self.params[name] = ps

    def _hook(self, name: str, module: nn.Module, kind: str):
        is_relu = isinstance(module, RELU_FAMILY)
        is_sig = isinstance(module, (nn.Sigmoid, nn.Hardsigmoid))
        is_tanh = isinstance(module, (nn.Tanh, nn.Hardtanh))
        watch_input = name in self.input_watch

        def hook(mod, inputs, output):
            if not (self.armed or self.nan_watch):
                return
            out = output[0] if isinstance(output, tuple) else output
            if not torch.is_tensor(out) or not out.is_floating_point():
                return
            out = out.detach()
            if self.nan_watch and self.first_bad_layer is None and not bool(torch.isfinite(out).all()):
                self.first_bad_layer = name
            if not self.armed:
                return
            stats = {"act_mean": out.mean(), "act_std": out.std() if out.numel() > 1 else out.new_zeros(())}
            x = inputs[0] if inputs else None
            if watch_input and torch.is_tensor(x) and x.is_floating_point() and x.dim() >= 2:
                # an input feature (channel) that is exactly 0 for every sample and position: a dead unit upstream
                per_feature = x.detach().transpose(0, 1).reshape(x.shape[1], -1)
                stats["dead_in_frac"] = (per_feature.abs().amax(dim=1) == 0).float().mean()
            if is_relu and out.dim() >= 2:
                # a unit (feature/channel) is dead on this batch when it is <= 0 for every sample (and position)
                per_unit = out.transpose(0, 1).reshape(out.shape[1], -1)
                stats["dead_frac"] = (per_unit.amax(dim=1) <= DEAD_THRESHOLD).float().mean()
            if is_sig:
                stats["sat_frac"] = ((out < SATURATION_SIGMOID) | (out > 1 - SATURATION_SIGMOID)).float().mean()
            if is_tanh:
                stats["sat_frac"] = (out.abs() > SATURATION_TANH).float().mean()
            self.acts[name] = stats
        return hook

    def _attention_hook(self, name: str):
        """Per-head entropy of the attention weights, recomputed from the module's own projections on the
        recorded steps only (torch's fused attention never materialises them)."""
        def hook(mod, args, kwargs, output):
            if not self.armed:
                return
            stats = attention_entropy(mod, args, kwargs)
            if stats is not None:
                self.acts.setdefault(name + "#attn", {}).update(stats)
        return hook

    def grad_norms(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, ps in self.params.items():
            grads = [p.grad for p in ps if p.grad is not None]
            if grads:
                out[name] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        return out

    def weights(self) -> dict[str, list[torch.Tensor]]:
        return {name: [p.detach().clone() for p in ps] for name, ps in self.params.items()}

    def weight_gains(self, weights: dict[str, list[torch.Tensor]] | None) -> dict[str, float]:
        """std(W) x sqrt(fan_in) of each weight layer's first weight matrix (M205: 1 for LeCun, sqrt(2) for He,
        1/sqrt(3) for torch's default); read once, at init."""
        kinds = {name: kind for name, _, kind in self.layers}
        out = {}
        for name, ws in (weights or {}).items():
            w = ws[0] if ws else None
            if kinds.get(name) in ("linear", "conv", "recurrent") and w is not None and w.dim() >= 2 and w.numel() > 1:
                out[name] = float(w.float().std()) * math.sqrt(w[0].numel())
        return out

    def update_ratios(self, before: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        out = {}
        for name, ps in self.params.items():
            old = before.get(name)
            if not old:
                continue
            dn = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(
                [p.detach() - o for p, o in zip(ps, old)])))
            wn = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(old)))
            out[name] = dn / wn.clamp_min(1e-12)
        return out

    def collect(self, grads: dict[str, torch.Tensor], ratios: dict[str, torch.Tensor] | None) -> dict[str, dict]:
        """One read-back: stack every recorded scalar, move to the host once, rebuild the dict."""
        keys, vals = [], []
        for name, stats in self.acts.items():
            for k, v in stats.items():
                keys.append((name, k))
                vals.append(v.float())
        for name, v in grads.items():
            keys.append((name, "grad_norm"))
            vals.append(v.float())
        for name, v in (ratios or {}).items():
            keys.append((name, "update_ratio"))
            vals.append(v.float())
        self.acts = {}
        if not vals:
            return {}
        host = torch.stack(vals).cpu().tolist()
        out: dict[str, dict] = {}
        for (name, k), v in zip(keys, host):
            out.setdefault(name.removesuffix("#attn"), {})[k] = v if math.isfinite(v) else None
        return out

    def attach(self) -> None:
        """Install the forward hooks (again); remove() takes them off."""
        if not self.handles:
            self.handles = [module.register_forward_hook(self._hook(name, module, kind))
                            for name, module, kind in self.layers]
            self.handles += [module.register_forward_hook(self._attention_hook(name), with_kwargs=True)
                             for name, module, kind in self.layers if kind == "attention"]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


@torch.no_grad()
def attention_entropy(mha: nn.MultiheadAttention, args: tuple, kwargs: dict) -> dict[str, torch.Tensor] | None:
    """{"attn_entropy_h<i>": mean over queries and samples of head i's attention entropy / ln(keys)}: 0 is
    one-hot attention (collapsed onto one key), 1 uniform over the non-padding keys. Padding queries are left
    out. Only the packed q/k/v projection of a self-attention with batch_first is supported (None otherwise)."""
    if not mha.batch_first or mha.in_proj_weight is None or len(args) < 2:
        return None
    q_in, k_in = args[0], args[1]
    if not (torch.is_tensor(q_in) and torch.is_tensor(k_in)) or q_in.dim() != 3:
        return None
    d, h = mha.embed_dim, mha.num_heads
    dh = d // h
    w, b = mha.in_proj_weight.float(), mha.in_proj_bias
    q = F.linear(q_in.float(), w[:d], None if b is None else b[:d].float())
    k = F.linear(k_in.float(), w[d:2 * d], None if b is None else b[d:2 * d].float())
    n, t, s_ = q.shape[0], q.shape[1], k.shape[1]
    q = q.view(n, t, h, dh).transpose(1, 2)
    k = k.view(n, s_, h, dh).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)            # (N, H, T, S)
    pad = kwargs.get("key_padding_mask")
    masked = None
    if torch.is_tensor(pad):
        masked = pad if pad.dtype == torch.bool else torch.isinf(pad) & (pad < 0)
        scores = scores.masked_fill(masked[:, None, None, :], float("-inf"))
    p = torch.softmax(scores, dim=-1)
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)            # (N, H, T)
    keys = (~masked).sum(-1).float() if masked is not None else torch.full((n,), float(s_), device=q.device)
    norm = ent / torch.log(keys.clamp_min(2.0))[:, None, None]
    if masked is not None and t == s_:
        valid = (~masked).float()[:, None, :]                      # queries at padding positions do not count
        per_head = (norm * valid).sum((0, 2)) / valid.sum((0, 2)).clamp_min(1.0)
    else:
        per_head = norm.mean((0, 2))
    return {f"attn_entropy_h{i}": per_head[i] for i in range(h)}


class Fp16Simulation:
    """fp16 autocast simulated on a device without it (the CPU): every output of a linear, conv, attention or
    recurrent layer (the ops autocast runs in float16) is rounded through float16, so values above 65504
    overflow to inf as they would on a GPU, and their gradients pass through float16 on the way back; the
    parameter gradients are rounded through float16 too. Loss scaling follows torch.amp.GradScaler's rules
    (SCALE_* constants). The first layer whose output overflowed is kept."""

    KINDS = ("linear", "conv", "attention", "recurrent")

    def __init__(self, model: nn.Module):
        self.first_bad_layer: str | None = None
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m, kind in layer_table(model)
                        if kind in self.KINDS]

    def _hook(self, name: str):
        def round_fp16(t):
            if torch.is_tensor(t) and t.is_floating_point() and t.dtype == torch.float32:
                r = t.half().float()
                if self.first_bad_layer is None and not bool(torch.isfinite(r).all()):
                    self.first_bad_layer = name
                return r
            return t

        def hook(mod, inputs, output):
            if isinstance(output, tuple):
                return tuple(round_fp16(o) for o in output)
            return round_fp16(output)
        return hook

    @staticmethod
    def round_grads(params) -> None:
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.grad.copy_(p.grad.half().float())

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class AmpState:
    """Autocast and loss scaling for one probe, as training.precision / grad_scaler say: bf16 autocast;
    fp16 autocast with torch's GradScaler on CUDA; fp16 through Fp16Simulation elsewhere (the CPU), with the
    same loss-scaling rules. `step()` does what GradScaler.step/update do and records what happened."""

    def __init__(self, spec: Spec, model: nn.Module, device: torch.device, rec: "ProbeRecord"):
        tr = spec.training
        self.precision = tr.precision
        self.device = device
        self.scaling = tr.loss_scaling
        self.sim = None
        self.scaler = None
        self.rec = rec
        self.scale = SCALE_INIT if self.scaling else 1.0
        self.good = 0
        if self.precision == "fp16":
            if device.type == "cuda":
                if self.scaling:
                    self.scaler = torch.amp.GradScaler("cuda", init_scale=SCALE_INIT, backoff_factor=SCALE_BACKOFF,
                                                       growth_factor=SCALE_GROWTH, growth_interval=SCALE_GROWTH_INTERVAL)
            else:
                self.sim = Fp16Simulation(model)
            rec.amp = {"precision": "fp16", "simulated": self.sim is not None, "loss_scaling": self.scaling,
                       "first_overflow": None, "overflow_steps": 0, "skipped_steps": 0,
                       "scale_initial": self.scale if self.scaling else None, "scale_final": None,
                       "scale_min": self.scale if self.scaling else None, "collapsed": False}
        elif self.precision == "bf16":
            rec.amp = {"precision": "bf16", "simulated": False}

    @property
    def active(self) -> bool:
        return self.precision != "fp32"

    def autocast(self):
        import contextlib
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.precision == "fp16" and self.sim is None:
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        elif self.sim is not None and self.scaling:
            (loss * self.scale).backward()
        else:
            loss.backward()

    def unscale_and_check(self, opt, params) -> bool:
        """Before clipping: gradients back to their true size; True when every gradient is finite."""
        if self.precision != "fp16":
            return True
        if self.scaler is not None:
            self.scaler.unscale_(opt)
            return True    # the scaler's own inf check decides in step()
        Fp16Simulation.round_grads(params)
        grads = [p.grad for p in params if p.grad is not None]
        finite = bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()) if grads else True
        if self.scaling and finite:
            torch._foreach_div_(grads, self.scale)
        return finite

    def step(self, opt, step: int, finite: bool) -> bool:
        """The optimizer step (skipped on an overflow when scaling); False when the probe must stop: the loss
        scale collapsed below SCALE_FLOOR."""
        a = self.rec.amp
        if self.scaler is not None:
            before = self.scaler.get_scale()
            self.scaler.step(opt)
            self.scaler.update()
            after = self.scaler.get_scale()
            finite = not after < before
            self.scale = after
        elif self.precision != "fp16":
            opt.step()
            return True
        elif self.scaling:
            if finite:
                opt.step()
                self.good += 1
                if self.good % SCALE_GROWTH_INTERVAL == 0:
                    self.scale *= SCALE_GROWTH
            else:
                self.good = 0
                self.scale *= SCALE_BACKOFF
        else:
            opt.step()
        if not finite:
            a["overflow_steps"] += 1
            if self.scaling:
                a["skipped_steps"] += 1
            if a["first_overflow"] is None:
                a["first_overflow"] = {"step": step, "layer": self.sim.first_bad_layer if self.sim else None,
                                       "where": "forward" if self.sim and self.sim.first_bad_layer else "gradient"}
        if self.scaling:
            a["scale_final"] = self.scale
            a["scale_min"] = min(a["scale_min"], self.scale)
            if self.scale < SCALE_FLOOR:
                a["collapsed"] = True
                return False
        return True

    def note_loss(self, step: int, loss_finite: bool) -> None:
        a = self.rec.amp
        if self.precision == "fp16" and not loss_finite and a.get("first_overflow") is None:
            a["first_overflow"] = {"step": step, "layer": self.sim.first_bad_layer if self.sim else None,
                                   "where": "forward"}

    def remove(self) -> None:
        if self.sim is not None:
            self.sim.remove()


# ---- the loop -----------------------------------------------------------------------------------

def _peak_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None


@torch.no_grad()
def _full_loss(model, loss_fn, X, y, loss_name, task, batch: int = 1024) -> float | None:
    """Mean loss over up to EVAL_ROWS rows in eval mode (no dropout), in chunks."""
    if X is None or len(X) == 0:
        return None
    was_training = model.training
    model.eval()
    n = min(len(X), EVAL_ROWS)
    total, count = None, 0
    for i in range(0, n, batch):
        xb, yb = X[i:i + batch][: n - i], y[i:i + batch][: n - i]
        out = model(xb)
        lv = loss_fn(out, targets_for_loss(yb, loss_name, task, out.shape[-1] if out.dim() > 1 else 1))
        total = lv * len(xb) if total is None else total + lv * len(xb)
        count += len(xb)
    model.train(was_training)
    v = float(total / count)
    return v if math.isfinite(v) else None


@torch.no_grad()
def constant_loss(t: torch.Tensor, loss_name: str) -> float | None:
    """The loss of the best constant prediction: what a model that learned nothing from the inputs reaches
    (the class prior's entropy for cross-entropy/BCE, the target variance for MSE, the mean absolute
    deviation from the median for L1). A probe that does not get below it has learned nothing."""
    if t.numel() == 0:
        return None
    if loss_name in ("cross_entropy", "nll") and not t.is_floating_point():
        p = torch.bincount(t).float()
        p = p[p > 0] / t.numel()
        return float(-(p * p.log()).sum())
    t = t.float().reshape(len(t), -1)
    if loss_name in ("bce", "bce_with_logits"):
        if not bool(((t == 0) | (t == 1)).all()):
            return None
        p = t.mean(dim=0).clamp(1e-7, 1 - 1e-7)
        return float((-(p * p.log() + (1 - p) * (1 - p).log())).mean())
    if loss_name == "mse":
        return float(((t - t.mean(dim=0)) ** 2).mean())
    if loss_name in ("l1", "huber"):
        d = t - t.median(dim=0).values
        return float(d.abs().mean()) if loss_name == "l1" else float(F.huber_loss(d, torch.zeros_like(d)))
    return None


@torch.no_grad()
def _metrics(model, X, y, loss_name: str, task: str) -> dict[str, float]:
    """Accuracy and balanced accuracy (classification) or R^2 (regression): comparable across losses,
    so a fix that changes the loss or its weights can still be judged."""
    was_training = model.training
    model.eval()
    n = min(len(X), EVAL_ROWS)
    out = torch.cat([model(X[i:i + 1024]) for i in range(0, n, 1024)])[:n].float()
    model.train(was_training)
    y = y[:n]
    if not bool(torch.isfinite(out).all()):
        return {}
    if task in ("classification", "binary"):
        if out.dim() == 1 or out.shape[-1] == 1:
            threshold = 0.5 if loss_name in ("bce", "mse", "l1", "huber") else 0.0
            pred = (out.reshape(-1) > threshold).long()
        else:
            pred = out.argmax(dim=-1)
        correct = (pred == y).float()
        n_cls = int(max(int(y.max()), int(pred.max())) + 1)
        per_class = torch.zeros(n_cls, device=y.device).index_add_(0, y, correct)
        counts = torch.bincount(y, minlength=n_cls).float()
        present = counts > 0
        bal = (per_class[present] / counts[present]).mean()
        return {"accuracy": float(correct.mean()), "balanced_accuracy": float(bal)}
    if task == "regression" and out.shape == y.shape:
        sse = ((out - y) ** 2).sum()
        sst = ((y - y.mean(dim=0)) ** 2).sum().clamp_min(1e-12)
        return {"r2": float(1 - sse / sst)}
    return {}


def build_for_probe(spec: Spec, data: DeviceData, seed: int):
    """Model (seeded init), loss and optimizer as the spec says, on the data's device."""
    torch.manual_seed(seed)
    model = build_model(spec.model, data.sample_shape, spec.base_dir)
    apply_init(model, spec.model.init, seed)
    model = model.to(data.device)
    loss_fn = build_loss(spec.loss, data.task, data.y, data.n_classes)
    optimizer = build_optimizer(spec.optimizer, model.parameters())
    return model, loss_fn, optimizer


def _work_per_step(spec: Spec, data: DeviceData, settings: ProbeSettings) -> float:
    """Rough multiply-adds per training step: parameters x batch x spatial positions (for conv inputs)."""
    n_params = data.param_count(spec)
    batch = settings.batch_size or spec.training.batch_size
    positions = int(np.prod(data.sample_shape[1:])) if len(data.sample_shape) > 1 else 1
    return 3.0 * n_params * batch * positions   # forward + backward ~ 3x the forward


def run_probe(spec: Spec, data: DeviceData, settings: ProbeSettings,
              overrides: dict[str, Any] | None = None) -> ProbeRecord:
    """Train a fresh model from `spec` for settings.steps steps and record what happened.

    The global RNG state is forked, so the caller's RNG is the same after the probe as before.
    A probe that diverges is a result; a probe that raises (bad shapes, out of memory) is recorded
    with `error` set. KeyboardInterrupt propagates.
    """
    devices = [data.device.index or 0] if data.device.type == "cuda" else []
    rec = ProbeRecord(name=settings.name, settings=asdict(settings), overrides=dict(overrides or {}),
                      device=str(data.device))
    t0 = time.perf_counter()
    # Denormal floats (tiny values in a collapsing or diverging probe) run ~100x slower on CPUs: a
    # diverging 10-step probe took 1.2 s instead of 8 ms. Flush them to zero while probing, then restore
    # torch's default (off).
    torch.set_flush_denormal(True)
    threads = torch.get_num_threads()
    if data.device.type == "cpu" and _work_per_step(spec, data, settings) < SINGLE_THREAD_WORK:
        torch.set_num_threads(1)
    with torch.random.fork_rng(devices=devices):
        try:
            _train(spec, data, settings, rec)
            rec.error_where = None
        except torch.cuda.OutOfMemoryError as err:
            _record_error(rec, err, f"out of memory: {str(err).splitlines()[0]}")
            torch.cuda.empty_cache()
        except (Exception, SystemExit) as err:
            # Anything the user's model, loss or data raises is a result of the probe, never the end of the
            # doctor: SystemExit from a user's forward must not end the process with exit 0, and a
            # RecursionError or a TypeError is evidence to report (the check G409 turns it into a finding).
            msg = _first_line(err)
            _record_error(rec, err, f"{type(err).__name__}: {msg}")
            if "out of memory" in msg.lower() and data.device.type == "cuda":
                rec.error = f"out of memory: {msg}"
                torch.cuda.empty_cache()
        finally:
            torch.set_flush_denormal(False)
            torch.set_num_threads(threads)
    rec.wall_s = time.perf_counter() - t0
    return rec


ERROR_MESSAGE_CHARS = 300   # an exception message kept in a record: one readable line, not a dump


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= ERROR_MESSAGE_CHARS else line[:ERROR_MESSAGE_CHARS] + "..."


def user_frame(tb) -> str | None:
    """The innermost traceback frame outside torch, nn-doctor and the standard library: where the user's code
    raised ("net.py:12 in forward"); None when the exception came from torch or nn-doctor itself."""
    import os
    import traceback
    skip = (os.path.dirname(torch.__file__), os.path.dirname(os.path.abspath(__file__)),
            os.path.dirname(os.__file__))
    frames = [f for f in traceback.extract_tb(tb) if not os.path.abspath(f.filename).startswith(skip)]
    if not frames:
        return None
    f = frames[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}"


def _record_error(rec: ProbeRecord, err: BaseException, text: str) -> None:
    rec.stopped, rec.error, rec.error_type = "error", text, type(err).__name__
    rec.error_frame = user_frame(err.__traceback__)
    rec.steps_run = len(rec.losses)


def _train(spec: Spec, data: DeviceData, s: ProbeSettings, rec: ProbeRecord) -> None:
    device = data.device
    rec.error_where = "model build"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model, loss_fn, opt = build_for_probe(spec, data, s.seed)
    rec.n_params = sum(p.numel() for p in model.parameters())
    X, y, Xv, yv = data.view(spec.data.normalize, spec.data.normalize_target)
    loss_name = spec.loss.name
    gen = torch.Generator().manual_seed(s.seed)     # batch order: a seeded permutation per epoch
    n_full = len(X)
    if s.subset is not None and s.subset < len(X):
        idx = torch.randperm(len(X), generator=gen)[: s.subset].to(device)
        X, y = X[idx], y[idx]
    n = len(X)
    bs = min(s.batch_size or spec.training.batch_size, n)
    k_acc = int(spec.training.accumulate)          # micro-batches per optimizer step (gradient accumulation)
    clip = spec.optimizer.grad_clip
    # the lr schedule runs over the configured training's optimizer steps; a probe sees its beginning
    total_steps = spec.training.epochs * max(1, math.ceil(n_full / (bs * k_acc)))
    sched = build_scheduler(spec.optimizer, opt, total_steps)
    amp = AmpState(spec, model, device, rec)
    inst = Instruments(model, attach=False) if s.instrument else None
    rec.layer_kinds = inst.kinds if inst else {}
    model.train()

    def full_loss(Xs, ys):
        with amp.autocast():
            return _full_loss(model, loss_fn, Xs, ys, loss_name, data.task)

    rec.error_where = "initial evaluation (forward and loss)"
    rec.initial_loss = full_loss(X, y)
    with torch.no_grad():
        n_out = model.eval()(X[:2]).shape[-1]
        model.train()
    rec.reference_loss = constant_loss(targets_for_loss(y[:EVAL_ROWS], loss_name, data.task, n_out), loss_name)
    rec.initial_val_loss = full_loss(Xv, yv)
    if rec.initial_val_loss is not None:
        rec.val_losses.append((0, rec.initial_val_loss))
    rec.train_eval.append((0, rec.initial_loss))

    levels = [s.stop_below, None if s.stop_below_fraction is None else s.stop_below_fraction * rec.initial_loss] \
        if rec.initial_loss is not None else []
    fitted_level = max((v for v in levels if v is not None), default=None)
    losses = torch.empty(s.steps, device=device)   # the per-step loss buffer, read back every CHECK_EVERY
    perm = torch.randperm(n, generator=gen).to(device)
    pos = 0
    snapshot = None        # (step, model state, optimizer state, rng) for replaying a non-finite step
    read = 0               # how many losses were read back
    step_times = []
    start = time.perf_counter()
    smoothed_ref = None
    ema_avg = 0.0          # the smoothed loss's running average (see ema())
    n_ema = 0
    params_all = [(nm, p) for nm, p in model.named_parameters()]
    trainable = [p for _, p in params_all if p.requires_grad]
    initial_params = {nm: p.detach().clone() for nm, p in params_all} if s.instrument else {}
    # with loss scaling, a step whose loss or gradients overflow is skipped (as torch's GradScaler does), so a
    # non-finite loss does not end the probe: the scale's collapse does
    skips_overflow = amp.precision == "fp16" and amp.scaling
    step = 0
    batches: list[torch.Tensor] = []   # batch indices since the snapshot (for the replay)
    for step in range(s.steps):
        if step % CHECK_EVERY == 0:
            snapshot = (step, {k: v.detach().clone() for k, v in model.state_dict().items()},
                        _clone_opt_state(opt), torch.get_rng_state())
            batches = []
        record = inst is not None and (step == 0 or (s.record_every and step % s.record_every == 0))
        opt.zero_grad(set_to_none=True)
        step_idx = []
        loss_sum = None
        for micro in range(k_acc):
            if pos + bs > n:
                perm = torch.randperm(n, generator=gen).to(device)
                pos = 0
            bidx = perm[pos:pos + bs]
            pos += bs
            step_idx.append(bidx)
            xb, yb = X[bidx], y[bidx]
            arm = record and micro == 0
            if arm:
                inst.attach()
                inst.armed = True
            with amp.autocast():
                rec.error_where = "forward"
                out = model(xb)
                rec.error_where = "loss"
                loss = loss_fn(out, targets_for_loss(yb, loss_name, data.task, out.shape[-1] if out.dim() > 1 else 1))
            if arm:
                inst.armed = False
                inst.remove()
            rec.error_where = "backward"
            amp.backward(loss / k_acc if k_acc > 1 else loss)
            loss_sum = loss.detach().float() if loss_sum is None else loss_sum + loss.detach().float()
        batches.append(step_idx[0] if k_acc == 1 else torch.cat(step_idx))
        finite = amp.unscale_and_check(opt, trainable) if amp.active else True
        grads = inst.grad_norms() if record else {}   # before clipping: G402 must see the explosion
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        before = inst.weights() if record else None
        if step == 0 and s.instrument:
            rec.params_without_grad = [nm for nm, p in params_all if p.requires_grad and p.grad is None]
            rec.params_without_grad += [nm for nm, p in params_all if not p.requires_grad]
        rec.error_where = "optimizer step"
        if amp.active:
            keep_going = amp.step(opt, step, finite)
        else:
            opt.step()
            keep_going = True
        if sched is not None:
            sched.step()
        losses[step] = loss_sum / k_acc
        if record:
            stats = inst.collect(grads, inst.update_ratios(before))
            if step == 0:
                for name, gain in inst.weight_gains(before).items():
                    if name in stats:
                        stats[name]["w_gain"] = gain
                rec.init_layers = stats
            rec.layers.append({"step": step, "stats": stats})
        if s.eval_every and step > 0 and step % s.eval_every == 0 and Xv is not None:
            rec.val_losses.append((step, full_loss(Xv, yv)))
        if not keep_going:      # the loss scale collapsed: every further step would be skipped
            vals = losses[read:step + 1].cpu().tolist()
            read = step + 1
            rec.losses.extend(v if math.isfinite(v) else None for v in vals)
            rec.stopped = "non-finite"
            fo = rec.amp.get("first_overflow") or {"step": step, "where": "gradient", "layer": None}
            rec.first_nonfinite = {"step": fo["step"], "where": fo["where"], "layer": fo["layer"]}
            break
        if (step + 1) % CHECK_EVERY == 0 or step == s.steps - 1:
            vals = losses[read:step + 1].cpu().tolist()
            read = step + 1
            for v in vals:
                rec.losses.append(v if math.isfinite(v) else None)
            step_times.append((time.perf_counter() - start) / read)
            bad = next((read - len(vals) + i for i, v in enumerate(vals) if not math.isfinite(v)), None)
            if bad is not None and amp.precision == "fp16" and rec.amp.get("first_overflow") is None:
                rec.amp["first_overflow"] = {"step": bad, "where": "forward",
                                             "layer": amp.sim.first_bad_layer if amp.sim else None}
            if bad is not None and not skips_overflow:
                rec.stopped = "non-finite"
                if amp.active:   # the fp32 replay would not reproduce a precision overflow
                    fo = rec.amp.get("first_overflow") or {"step": bad, "where": "loss", "layer": None}
                    rec.first_nonfinite = {"step": fo["step"], "where": fo["where"], "layer": fo["layer"]}
                else:
                    rec.first_nonfinite = _locate_nonfinite(model, opt, loss_fn, X, y, snapshot, batches, bad,
                                                            loss_name, data.task, clip)
                break
            for v in vals:   # ema() carried forward: recomputing it over all losses each time is O(steps^2)
                if not math.isfinite(v):
                    continue     # a skipped (overflowed) step under loss scaling
                ema_avg = EMA_BETA * ema_avg + (1 - EMA_BETA) * v
                n_ema += 1
            if n_ema == 0:
                continue
            smooth = ema_avg / (1 - EMA_BETA ** n_ema)
            if smoothed_ref is None:
                # the start on the smoothed curve's own basis: the first training-mode loss, with dropout active,
                # can sit far above the full-batch eval-mode initial loss (p 0.85 in a 16-unit net: > 4x), which
                # read as a divergence before any update acted; the larger of the two is the start
                first = next((v for v in rec.losses if v is not None and math.isfinite(v)), None)
                smoothed_ref = max(v for v in (rec.initial_loss, first) if v is not None) \
                    if (rec.initial_loss, first) != (None, None) else None
            if s.stop_on_divergence and smoothed_ref and smooth > curves.level(smoothed_ref, DIVERGE_FACTOR):
                rec.stopped = "diverged"
                break
            if s.budget_s is not None and time.perf_counter() - start > s.budget_s:
                rec.stopped = "budget"
                break
            if fitted_level is not None and vals[-1] <= fitted_level:
                rec.stopped = "fitted"
                break
    rec.steps_run = len(rec.losses)
    rec.error_where = "evaluation"
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    rec.step_time_s = elapsed / max(rec.steps_run, 1)
    if rec.stopped != "non-finite":
        rec.final_loss = full_loss(X, y)
        rec.train_eval.append((rec.steps_run, rec.final_loss))
        if Xv is not None:
            rec.final_val_loss = full_loss(Xv, yv)
            if not rec.val_losses or rec.val_losses[-1][0] != rec.steps_run:
                rec.val_losses.append((rec.steps_run, rec.final_val_loss))
        if rec.final_loss is None and rec.first_nonfinite is None:
            rec.first_nonfinite = {"step": rec.steps_run, "where": "weights", "layer": None}
    if rec.stopped != "non-finite":
        with amp.autocast():
            rec.metrics = _metrics(model, Xv if Xv is not None else X, yv if Xv is not None else y, loss_name, data.task)
    if s.instrument and rec.stopped not in ("non-finite",):
        rec.params_unchanged = [nm for nm, p in params_all
                                if p.requires_grad and nm in initial_params and torch.equal(p.detach(), initial_params[nm])]
    rec.peak_memory_bytes = _peak_memory(device)
    if inst is not None:
        inst.remove()
    amp.remove()


def _clone_opt_state(opt: torch.optim.Optimizer) -> dict:
    sd = opt.state_dict()
    return {"state": {k: {kk: (vv.clone() if torch.is_tensor(vv) else vv) for kk, vv in v.items()}
                      for k, v in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


def _locate_nonfinite(model, opt, loss_fn, X, y, snapshot, batches, bad_step, loss_name, task, clip) -> dict:
    """Replay from the last snapshot with NaN watches armed: the first step, and where it first shows
    (a layer's output in the forward pass, the loss, a gradient, or the weights after the update)."""
    step0, mstate, ostate, rng = snapshot
    model.load_state_dict(mstate)
    opt.load_state_dict(ostate)
    torch.set_rng_state(rng)
    inst = Instruments(model)
    inst.nan_watch = True
    names = dict(model.named_parameters())
    try:
        for k, bidx in enumerate(batches):
            step = step0 + k
            inst.first_bad_layer = None
            out = model(X[bidx])
            if inst.first_bad_layer is not None:
                return {"step": step, "where": "forward", "layer": inst.first_bad_layer}
            loss = loss_fn(out, targets_for_loss(y[bidx], loss_name, task, out.shape[-1] if out.dim() > 1 else 1))
            if not bool(torch.isfinite(loss)):
                return {"step": step, "where": "loss", "layer": None}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for nm, p in names.items():
                if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                    return {"step": step, "where": "gradient", "layer": _layer_of(nm, inst)}
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            for nm, p in names.items():
                if not bool(torch.isfinite(p).all()):
                    return {"step": step, "where": "weights", "layer": _layer_of(nm, inst)}
    finally:
        inst.remove()
    return {"step": bad_step, "where": "loss", "layer": None}


def _layer_of(param_name: str, inst: Instruments) -> str:
    prefix = param_name.rsplit(".", 1)[0]
    for name, module, kind in inst.layers:
        if name.split(":")[0] == prefix:
            return name
    return prefix


def memory_probe(spec: Spec, data: DeviceData, batch_size: int, seed: int = 0, steps: int = 2) -> dict[str, Any]:
    """Train `steps` steps at `batch_size` on the device and measure peak memory; an out-of-memory is
    caught, the memory freed, and reported as {"oom": True} (never raised). Rows are repeated when the
    data has fewer than batch_size, so the configured batch is tested for real."""
    device = data.device
    out: dict[str, Any] = {"batch_size": batch_size, "oom": False}
    model = opt = xb = loss = None
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            model, loss_fn, opt = build_for_probe(spec, data, seed)
            X, y, _, _ = data.view(spec.data.normalize, spec.data.normalize_target)
            idx = torch.arange(batch_size, device=device) % len(X)
            xb, yb = X[idx], y[idx]
            t0 = time.perf_counter()
            for _ in range(steps):
                o = model(xb)
                loss = loss_fn(o, targets_for_loss(yb, spec.loss.name, data.task, o.shape[-1] if o.dim() > 1 else 1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                out["peak_bytes"] = int(torch.cuda.max_memory_allocated(device) - base)
                out["total_bytes"] = int(torch.cuda.get_device_properties(device).total_memory)
                out["step_s"] = (time.perf_counter() - t0) / steps
        except torch.cuda.OutOfMemoryError:
            out["oom"] = True
        except RuntimeError as err:
            if "out of memory" not in str(err).lower():
                raise
            out["oom"] = True
        finally:
            del model, opt, xb, loss
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out
