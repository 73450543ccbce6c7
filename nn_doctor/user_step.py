"""The harness around the user's own training step: it measures; checks/user_step.py judges (G408, G405).

The source notes on implementation bugs and wrong weight-update rules list the code bugs that make a network fail to
train although data, model and hyperparameters are fine: an update without the learning rate, gradient
ascent instead of descent, a PyTorch training loop without `model.train()`, gradients computed under
`torch.no_grad()`. They cannot be seen in a spec; they live in the user's training step. nn-doctor runs
that step in a controlled harness and measures what it does.

The contract
------------
Point `training.step` in the spec at a function (`package.module:function`, imported relative to the
spec file, like `model.class`)::

    def step(model, batch, optimizer, loss_fn):
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

- `model`: the spec's model (model.layers or model.class), freshly built and initialised, in train
  mode, on the probe device;
- `batch`: a tuple `(x, y)` of tensors on the model's device: `x` normalised as `data.normalize` says,
  `y` already in the form `loss_fn` expects (class ids for cross_entropy, float `(N, 1)` for bce with
  one output, ...: `probe.targets_for_loss`);
- `optimizer`: the spec's optimizer over `model.parameters()` (lr, momentum, weight decay from the spec);
- `loss_fn`: the spec's loss module.

The function must do ONE full training step - zero the gradients, forward, loss, backward, and update
the weights (`optimizer.step()` or a manual update) - and return the loss (a tensor or a float).

Importing the module and calling the function RUNS THE USER'S CODE, with the user's rights (as
`model.class` does): only point nn-doctor at code you trust.

What the harness measures
-------------------------
All on fresh models built from the spec with the same seed (the user's objects are never touched), one
fixed training batch, the RNG reseeded before each call so dropout masks repeat, and the global RNG
state restored afterwards (torch.random.fork_rng):

1. model A: call the step twice on the SAME batch. A gradient hook on every parameter
   (register_post_accumulate_grad_hook) records the gradient each call leaves after its backward; a
   forward pre-hook records `model.training` and whether gradients were enabled; an optimizer
   step pre-hook counts `optimizer.step()` calls and the gradient norm it sees.
2. model C: the state A had before its second call, gradients cleared, the step called once: the
   gradient a correct step computes there (F2).
3. model B: the initial state again, with the optimizer's lr x 10.
4. the harness's own gradient of `loss_fn` on the batch at the initial state (R1), in the mode the
   step's forward ran in.

and records the numbers that reveal each of these bugs (the rules in nn_doctor/checks/user_step.py
judge them, with the numbers as evidence):

(a) gradients not zeroed: A's second gradient equals its first plus F2 (accumulated: ~2x one
    backward) instead of F2 - G408; also zero_grad() between backward() and step() (the optimizer
    sees zero gradients) - G408;
(b) gradient ascent: the update points along +R1 (cosine(dw, R1) > 0) - the batch loss rises where a
    descent step of the same size lowers it - G408;
(c) lr not applied: the update with lr x 10 is not clearly bigger (< sqrt(10)x; a correct step scales
    10x whatever the optimizer) - a hard-coded or missing lr - G408;
(d) eval mode: the training forward ran with model.training False - error when the model has
    dropout/batchnorm layers (they behave differently), info otherwise - G408;
(e) loss detached / computed under no_grad: no gradient reaches any parameter (or backward raises
    "does not require grad") - G408;
(f) parameters frozen (requires_grad False), left out of the optimizer, or unchanged after the step
    although they got a gradient - G405 (a step that updates nothing and never calls optimizer.step()
    is G408).

An exception raised by the step is a G408 finding naming the exception and the user's line, never a
crash. Intentional gradient accumulation across calls reads as (a): the contract is one full step
per call.
"""
from __future__ import annotations

import inspect
import math
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .errors import UsageError
from . import fmt
from .probe import DeviceData, build_for_probe, targets_for_loss
from .spec import Spec

# ---- how the harness measures (the rules' thresholds live in nn_doctor/checks/user_step.py) ------------
LR_SCALE = 10.0         # (c) the lr factor of the third run
NO_UPDATE_REL = 1e-6    # (f) a parameter "gets a gradient" when lr*|grad| >= 1e-6 |w| (an update that float32
                        # can represent); below that an unchanged weight is not a bug
REL_EPS = 1e-12
# the lines of the step a fix points at: a regular expression per kind of statement
LINE_PATTERNS = {
    "no_grad": r"no_grad\(|inference_mode\(|\.detach\(|set_grad_enabled\(",
    "no_grad_or_requires_grad": r"no_grad\(|inference_mode\(|\.detach\(|requires_grad",
    "zero_grad": r"zero_grad",
    "ascent": r"(\+=|\.add_\(|=\s*\S+\s*\+).*grad|grad.*\+",
    "requires_grad": r"requires_grad(_\(|\s*=)",
    "backward": r"\.backward\(",
    "eval": r"\.eval\(\)|\.train\(\s*(False|0)\s*\)",
    "update": r"(-=|\+=|\.sub_\(|\.add_\(|=).*grad",
}


# ---- the record ------------------------------------------------------------------------------

@dataclass
class StepDiagnosis:
    """What the harness measured of the user's step: plain data (no tensors), judged by the G405/G408
    checks (nn_doctor/checks/user_step.py) via ctx.user_step."""

    ref: str                                      # "my_train:step" or the function's qualified name
    source: str | None = None                     # "path/my_train.py:12"
    measurements: dict[str, Any] = field(default_factory=dict)   # the numbers (norms, cosines, losses, ...)
    exceptions: list[dict[str, Any]] = field(default_factory=list)   # per call that raised: what and where
    lines: dict[str, str | None] = field(default_factory=dict)   # LINE_PATTERNS key -> the user's line
    calls: int = 0                                # calls of the user's step the harness made
    error: str | None = None                      # "RuntimeError: ..." when the step raised
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "source": self.source, "calls": self.calls, "error": self.error,
                "exceptions": self.exceptions, "measurements": self.measurements}


# ---- loading ----------------------------------------------------------------------------------

def load_step(ref: str, base_dir: str | None = None) -> Callable:
    """Import `package.module:function` (base_dir first on sys.path). This RUNS the module's top-level code.

    UsageError when it cannot be imported, is not callable, or cannot take (model, batch, optimizer, loss_fn).
    """
    from .model import import_object
    fn = import_object(ref, base_dir, "training.step")
    if not callable(fn):
        raise UsageError(f"training.step '{ref}': {type(fn).__name__} object is not callable")
    try:
        inspect.signature(fn).bind(None, None, None, None)
    except TypeError:
        raise UsageError(f"training.step '{ref}': it must take (model, batch, optimizer, loss_fn), "
                         f"its signature is {fn.__name__}{inspect.signature(fn)}") from None
    except ValueError:   # builtins without a signature: let the call tell
        pass
    return fn


# ---- source lines (for the fixes) ----------------------------------------------------------------

def _source(fn: Callable) -> tuple[str | None, int, list[str]]:
    """(file, first line number, lines) of the step's source; (None, 0, []) when unavailable."""
    try:
        lines, start = inspect.getsourcelines(fn)
        path = inspect.getsourcefile(fn)
    except (OSError, TypeError):
        return None, 0, []
    return path, start, lines


def _find_line(fn: Callable, pattern: str) -> str | None:
    """'file.py:12 `loss.backward()`' for the first line of the step matching `pattern` (comments skipped)."""
    path, start, lines = _source(fn)
    rx = re.compile(pattern)
    for i, line in enumerate(lines):
        code = line.split("#", 1)[0]
        if re.match(r"\s*(async\s+def|def|@)", code):   # the signature names no statement
            continue
        if rx.search(code):
            return f"{Path(path).name if path else '?'}:{start + i} `{line.strip()}`"
    return None


def _at(where: str | None) -> str:
    return f" ({where})" if where else ""


def _user_frame(err: BaseException, fn: Callable) -> str | None:
    """The innermost traceback frame in the step's file, else the innermost outside torch and nn_doctor."""
    frames = traceback.extract_tb(err.__traceback__)
    path, _, _ = _source(fn)
    mine = [f for f in frames if path and Path(f.filename) == Path(path)]
    if not mine:
        mine = [f for f in frames if "/torch/" not in f.filename and "nn_doctor" not in f.filename]
    if not mine:
        return None
    f = mine[-1]
    return f"{Path(f.filename).name}:{f.lineno} `{(f.line or '').strip()}`"


# ---- the harness ----------------------------------------------------------------------------------

class _Call:
    """What one call of the user's step did (tensors kept only inside diagnose_step)."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}      # gradient left by the last backward, per parameter
        self.step_grads: dict[str, torch.Tensor] = {}  # gradients optimizer.step() saw (first call of it)
        self.opt_steps = 0
        self.forwards: list[tuple[bool, bool]] = []   # (model.training, grad enabled) per forward
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}
        self.loss: Any = None
        self.error: BaseException | None = None
        self.where: str | None = None
        self.frozen_after: list[str] = []


class _Harness:
    def __init__(self, spec: Spec, data: DeviceData, seed: int, make_optimizer):
        self.spec, self.data, self.seed, self.make_optimizer = spec, data, seed, make_optimizer

    def build(self, lr_factor: float = 1.0):
        model, loss_fn, opt = build_for_probe(self.spec, self.data, self.seed)
        if self.make_optimizer is not None:
            opt = self.make_optimizer(model)
        if lr_factor != 1.0:
            for g in opt.param_groups:
                g["lr"] = g["lr"] * lr_factor
        model.train()
        return model, loss_fn, opt

    def call(self, fn: Callable, model: nn.Module, batch, opt, loss_fn, seed: int) -> _Call:
        c = _Call()
        names = dict(model.named_parameters())
        c.before = {n: p.detach().clone() for n, p in names.items()}
        handles = []

        def grad_hook(name):
            def hook(p):
                if p.grad is not None:
                    c.grads[name] = p.grad.detach().clone()
            return hook

        for n, p in names.items():
            if p.requires_grad:
                handles.append(p.register_post_accumulate_grad_hook(grad_hook(n)))
        handles.append(model.register_forward_pre_hook(
            lambda m, a: c.forwards.append((m.training, torch.is_grad_enabled()))))

        def step_pre(optimizer, args, kwargs):
            c.opt_steps += 1
            if c.opt_steps == 1:
                c.step_grads = {n: p.grad.detach().clone() for n, p in names.items() if p.grad is not None}

        handles.append(opt.register_step_pre_hook(step_pre))
        torch.manual_seed(seed)
        try:
            c.loss = fn(model, batch, opt, loss_fn)
        except KeyboardInterrupt:
            raise
        except BaseException as err:   # the user's bug is the result, not a crash (sys.exit() in it too)
            c.error = err
            c.where = _user_frame(err, fn)
        finally:
            for h in handles:
                h.remove()
        if not c.grads:   # gradients set without backward() (torch.autograd.grad): what is there now
            c.grads = dict(c.step_grads) or {n: p.grad.detach().clone() for n, p in names.items()
                                             if p.grad is not None}
        c.after = {n: p.detach().clone() for n, p in names.items()}
        c.frozen_after = [n for n, p in names.items() if not p.requires_grad]
        return c

    def reference(self, state: dict, training: bool, batch, seed: int):
        """(loss, per-parameter gradient of loss_fn) at `state`, in the given mode, with the dropout seed."""
        model, loss_fn, _ = self.build()
        model.load_state_dict(state)
        model.train(training)
        for p in model.parameters():
            p.requires_grad_(True)
        x, y = batch
        torch.manual_seed(seed)
        loss = loss_fn(model(x), y)
        loss.backward()
        grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                 for n, p in model.named_parameters()}
        return float(loss.detach()), grads

    @torch.no_grad()
    def eval_loss(self, params: dict[str, torch.Tensor], state: dict, batch) -> float:
        """loss_fn on the batch in eval mode (no dropout) with the given parameter values."""
        model, loss_fn, _ = self.build()
        model.load_state_dict(state)
        for n, p in model.named_parameters():
            p.copy_(params[n])
        model.eval()
        x, y = batch
        return float(loss_fn(model(x), y))


def _norm(ts) -> float:
    ts = [t.float().reshape(-1) for t in ts]
    return float(torch.linalg.vector_norm(torch.cat(ts))) if ts else 0.0


def _flat(d: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([d[n].float().reshape(-1) for n in names]) if names else torch.zeros(0)


_g = fmt.num         # numbers in messages: nn_doctor/fmt.py
_short = fmt.names


def _dropout_bn(model: nn.Module) -> list[str]:
    kinds = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
    return [f"{n}:{type(m).__name__}" for n, m in model.named_modules() if isinstance(m, kinds)]


def _batch(spec: Spec, data: DeviceData, model: nn.Module, seed: int):
    X, y, _, _ = data.view(spec.data.normalize, spec.data.normalize_target)
    n = len(X)
    bs = min(spec.training.batch_size, n)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:bs].to(X.device)
    xb, yb = X[idx], y[idx]
    with torch.no_grad():
        was = model.training
        out = model.eval()(xb[:2])
        model.train(was)
    n_out = out.shape[-1] if out.dim() > 1 else 1
    return xb, targets_for_loss(yb, spec.loss.name, data.task, n_out)


def diagnose_step(step_fn: Callable, spec: Spec, data: DeviceData, seed: int = 0, *,
                  ref: str | None = None, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None
                  ) -> StepDiagnosis:
    """Run the user's step in the harness (see the module docstring) and return what it found.

    `make_optimizer(model)` replaces the spec's optimizer (to test the user's own optimizer construction);
    the RNG state is restored; exceptions from the user's code become findings.
    """
    import time
    t0 = time.perf_counter()
    name = ref or f"{getattr(step_fn, '__module__', '?')}:{getattr(step_fn, '__qualname__', repr(step_fn))}"
    path, start, _ = _source(step_fn)
    diag = StepDiagnosis(ref=name, source=f"{path}:{start}" if path else None)
    devices = [data.device.index or 0] if data.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if spec.training.accumulate > 1:   # the step gets micro-batches: measure the accumulation (G412, G413)
            measure_accumulation(step_fn, spec, data, seed, make_optimizer, diag)
        else:
            _measure(step_fn, spec, data, seed, make_optimizer, diag)
    diag.wall_s = time.perf_counter() - t0
    return diag


def _exception(c: _Call, which: str, diag: StepDiagnosis) -> None:
    """Record the exception a call raised (and, for "does not require grad", whether its forward ran
    with gradients enabled)."""
    err = c.error
    text = str(err).splitlines()[0] if str(err) else ""
    if diag.error is None:
        diag.error = f"{type(err).__name__}: {text}"
    diag.exceptions.append({"exception": type(err).__name__, "message": text, "where": c.where, "call": which,
                            "forward_grad_enabled": (not any(not g for _, g in c.forwards)) if c.forwards
                            else None})


def _measure(fn: Callable, spec: Spec, data: DeviceData, seed: int, make_optimizer, diag: StepDiagnosis) -> None:
    H = _Harness(spec, data, seed, make_optimizer)
    model, loss_fn, opt = H.build()
    batch = _batch(spec, data, model, seed)
    s1, s2 = seed + 1, seed + 2          # dropout seeds of the two calls
    m = diag.measurements
    diag.lines = {k: _find_line(fn, rx) for k, rx in LINE_PATTERNS.items()}
    m["batch_size"] = int(batch[0].shape[0])
    m["lr"] = opt.param_groups[0]["lr"]
    m["optimizer"] = type(opt).__name__
    state0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    not_in_opt = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in in_opt]
    frozen0 = [n for n, p in model.named_parameters() if not p.requires_grad]
    m["dropout_batchnorm_layers"] = _dropout_bn(model)

    # ---- call 1 (model A, initial state) ----
    c1 = H.call(fn, model, batch, opt, loss_fn, s1)
    diag.calls += 1
    if c1.error is not None:
        _exception(c1, "first call", diag)
        return
    state1 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mode2 = model.training
    # ---- call 2 (model A, same batch) ----
    c2 = H.call(fn, model, batch, opt, loss_fn, s2)
    diag.calls += 1

    m["returned_loss"] = _loss_value(c1.loss)
    m["returned_type"] = type(c1.loss).__name__
    m["returned_loss_ok"] = c1.loss is not None and (torch.is_tensor(c1.loss) or isinstance(c1.loss, (int, float)))
    m["loss_requires_grad"] = bool(getattr(c1.loss, "requires_grad", False)) if torch.is_tensor(c1.loss) else None
    m["loss_has_graph"] = (c1.loss.grad_fn is not None) if torch.is_tensor(c1.loss) else None
    m["forwards_per_call"] = len(c1.forwards)
    m["forward_grad_enabled"] = [g for _, g in c1.forwards]
    m["optimizer_step_calls"] = c1.opt_steps
    # (d) the mode of the gradient-enabled forwards of both calls
    m["training_mode_in_forward"] = [t for t, g in c1.forwards + c2.forwards if g][:4]

    train_fwd = [(t, g) for t, g in c1.forwards if g] or c1.forwards
    mode1 = train_fwd[0][0] if train_fwd else True
    ref_loss0, R1 = H.reference(state0, mode1, batch, s1)
    m["reference_loss"] = ref_loss0

    got = [n for n in names if n in c1.grads]
    g1_norm = _norm([c1.grads[n] for n in got])
    m.update({"grad_norm": g1_norm, "reference_grad_norm": _norm(R1.values()), "params_with_grad": len(got),
              "params": len(names), "params_frozen_at_start": frozen0,
              "grad_norm_at_optimizer_step": _norm(c1.step_grads.values())})
    dw1 = {n: c1.after[n] - c1.before[n] for n in names}
    dw1_norm = _norm(dw1.values())
    m["update_norm"] = dw1_norm
    if c2.error is not None:
        _exception(c2, "second call on the same batch", diag)

    # (e) no gradient reaches the parameters: nothing below can be measured
    grad_off = not any(m["forward_grad_enabled"]) and bool(c1.forwards)
    no_graph = m["loss_has_graph"] is False
    if len(frozen0) < len(names) and (not got or (g1_norm == 0.0 and (grad_off or no_graph))):
        m["no_gradient_reaches_params"] = True
        return
    m["no_gradient_reaches_params"] = False

    # (b) the update against the harness's own gradient of loss_fn
    if dw1_norm > 0 and math.isfinite(dw1_norm):
        d, r = _flat(dw1, names), _flat(R1, names)
        m["update_grad_cosine"] = float(torch.dot(d, r) / (d.norm() * r.norm()).clamp_min(REL_EPS))
        rn = r.norm().clamp_min(REL_EPS)
        descent = {n: c1.before[n] - dw1_norm * R1[n] / rn for n in names}
        m.update({"batch_loss_before": H.eval_loss(c1.before, state0, batch),
                  "batch_loss_after": H.eval_loss(c1.after, state0, batch),
                  "batch_loss_after_descent_step": H.eval_loss(descent, state0, batch)})

    # (f) parameters frozen, missing from the optimizer, or unchanged although they got a gradient
    lr = float(opt.param_groups[0]["lr"])
    frozen = sorted(set(frozen0) | set(c1.frozen_after), key=names.index)
    changed = {n for n in names if not torch.equal(c1.after[n], c1.before[n])}
    with_grad = [n for n in got if lr * float(c1.grads[n].float().norm()) >=
                 NO_UPDATE_REL * float(c1.before[n].float().norm()) and float(c1.grads[n].float().norm()) > 0]
    m.update({"params_changed": len(changed), "params_frozen": frozen, "params_not_in_optimizer": not_in_opt,
              "params_with_update_sized_grad": len(with_grad),
              "params_unchanged_with_grad": [n for n in with_grad if n not in changed and n not in not_in_opt]})

    # (a) the second call's gradient vs the fresh gradient of a correct step at the same state (model C)
    if c2.error is None:
        mc, lc, oc = H.build()
        mc.load_state_dict(state1)
        mc.train(mode2)
        c3 = H.call(fn, mc, batch, oc, lc, s2)
        diag.calls += 1
        common = [n for n in names if n in c1.grads and n in c2.grads and n in c3.grads]
        if c3.error is None and common:
            g1, g2, f2 = _flat(c1.grads, common), _flat(c2.grads, common), _flat(c3.grads, common)
            fresh = f2.norm().clamp_min(REL_EPS)
            accum = (g1 + f2).norm().clamp_min(REL_EPS)
            m.update({"second_grad_vs_fresh": float((g2 - f2).norm() / fresh),
                      "second_grad_vs_accumulated": float((g2 - g1 - f2).norm() / accum),
                      "second_grad_norm_ratio": float(g2.norm() / fresh), "second_grad_norm": float(g2.norm()),
                      "fresh_grad_norm": float(f2.norm()), "first_grad_norm": float(g1.norm())})

    # (c) the same step with lr x LR_SCALE from the same state (model B)
    if dw1_norm > 0 and math.isfinite(dw1_norm):
        mb, lb, ob = H.build(LR_SCALE)
        c4 = H.call(fn, mb, batch, ob, lb, s1)
        diag.calls += 1
        if c4.error is None:
            dw10 = _norm([c4.after[n] - c4.before[n] for n in names])
            m.update({"update_norm_lr_x10": dw10, "update_scale_at_lr_x10": dw10 / dw1_norm,
                      "lr_scale": LR_SCALE})
        else:
            _exception(c4, f"call with lr x {LR_SCALE:g}", diag)


def _loss_value(loss: Any) -> float | None:
    try:
        if torch.is_tensor(loss):
            return float(loss.detach().float().mean()) if loss.numel() else None
        return float(loss)
    except (TypeError, ValueError, RuntimeError):
        return None


# ---- gradient accumulation (training.accumulate k > 1) -------------------------------------------------
# With training.accumulate k > 1 the step gets `batch` as a LIST of k (x, y) micro-batches and must make ONE
# optimizer step over them: divide each micro-batch loss by k, backward() each, zero the gradients once per
# optimizer step. The harness records the gradient optimizer.step() sees against the mean of the micro-batch
# gradients (what a correct step gives) and the last micro-batch's alone; checks/transformers.py judges
# (G412 loss not divided, G413 zero_grad on every micro-step).

def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
    return float(a @ b) / den if den > 0 else 0.0


def _no_dropout(model: nn.Module) -> None:
    for mod in model.modules():   # exact references: no dropout noise between the step and the harness
        if isinstance(mod, nn.modules.dropout._DropoutNd):
            mod.p = 0.0


def measure_accumulation(fn: Callable, spec: Spec, data: DeviceData, seed: int, make_optimizer,
                         diag: StepDiagnosis) -> None:
    """One call of the step with k micro-batches (one batch split in k), dropout off; measurements go to
    diag.measurements["accumulation"]."""
    H = _Harness(spec, data, seed, make_optimizer)
    model, loss_fn, opt = H.build()
    k = int(spec.training.accumulate)
    x, y = _batch(spec, data, model, seed)
    micro = list(zip(x.chunk(k), y.chunk(k)))
    k = len(micro)
    diag.lines = {key: _find_line(fn, rx) for key, rx in LINE_PATTERNS.items()}
    acc: dict[str, Any] = {"accumulate": k, "micro_batch_sizes": [int(mx.shape[0]) for mx, _ in micro]}
    diag.measurements["accumulation"] = acc
    _no_dropout(model)
    state0 = {kk: v.detach().clone() for kk, v in model.state_dict().items()}
    c = H.call(fn, model, micro, opt, loss_fn, seed + 1)
    diag.calls += 1
    if c.error is not None:
        _exception(c, "first call", diag)
        return
    acc["optimizer_steps"] = c.opt_steps
    if not c.step_grads:
        return
    names = list(c.step_grads)
    refs = []
    for mx, my in micro:
        model_r, _, _ = H.build()
        _no_dropout(model_r)
        model_r.load_state_dict(state0)
        loss_fn(model_r(mx), my).backward()
        refs.append({n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                     for n, p in model_r.named_parameters()})
    g = _flat(c.step_grads, names)
    mean = _flat({n: sum(r[n] for r in refs) / k for n in names}, names)
    last = _flat(refs[-1], names)
    acc.update({"grad_to_mean_ratio": float(torch.linalg.vector_norm(g) / torch.linalg.vector_norm(mean).clamp_min(REL_EPS)),
                "cos_with_mean_grad": _cos(g, mean), "cos_with_last_micro_grad": _cos(g, last),
                "cos_mean_vs_last": _cos(mean, last)})
