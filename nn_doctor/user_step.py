"""Diagnose the user's own training step (G408; G405 for the parameters it leaves alone).

seeds/000 "实现代码问题" and seeds/001 "权重更新规则错误" list the code bugs that make a network fail to
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

and detects, each with its numbers as evidence:

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
from .probe import DeviceData, build_for_probe, targets_for_loss
from .spec import Spec

# ---- thresholds -------------------------------------------------------------------------------
ACCUM_MATCH = 0.1       # (a) the second gradient is within 10% (relative norm) of first + fresh: accumulated
ACCUM_FRESH_MISS = 0.5  # ... and >= 50% away from the fresh gradient alone. On wine (13-64-3 MLP, adam 1e-3)
                        # a correct step matches fresh to ~1e-7 and a step without zero_grad gives 1.0 / ~1e-7
ASCENT_COS = 0.1        # (b) cosine(update, gradient) > +0.1 is ascent: descent steps give -1 (sgd) or about
                        # -0.5..-0.8 (adam's first step ~ -lr*sign(g)); `p += lr*grad` gives +1
LR_SCALE = 10.0         # (c) the second run's lr factor
LR_SCALE_MIN = math.sqrt(LR_SCALE)  # a correct step's update grows 10x (sgd, adam, rmsprop, weight decay
                        # alike); one that ignores the lr 1x: the geometric midpoint separates them
NO_UPDATE_REL = 1e-6    # (f) a parameter "gets a gradient" when lr*|grad| >= 1e-6 |w| (an update that float32
                        # can represent); below that an unchanged weight is not a bug
REL_EPS = 1e-12

KIND_TITLES = {
    "grads-not-zeroed": "gradients are not zeroed between steps",
    "zeroed-before-step": "gradients are zeroed between backward() and optimizer.step()",
    "ascent": "the update climbs the gradient (ascent instead of descent)",
    "lr-ignored": "the update ignores the optimizer's learning rate",
    "eval-mode": "the model is in eval mode during the training step",
    "no-grad": "the loss is detached / computed without gradients",
    "no-update": "the step never updates the weights",
    "params-not-updating": "parameters frozen, missing from the optimizer or not updated",
    "no-loss": "the step does not return the loss",
    "exception": "the step raises an exception",
    "loss-not-divided": "the accumulated loss is not divided by the accumulation steps",
    "zero-grad-micro": "the gradients are zeroed on every micro-step of the accumulation",
}


# ---- the diagnosis ----------------------------------------------------------------------------

@dataclass
class StepBug:
    kind: str                     # a KIND_TITLES key
    code: str                     # "G408" or "G405"
    message: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None   # None: the catalogue's default


@dataclass
class StepDiagnosis:
    """What diagnose_step found; plain data (no tensors), read by the G408 check via ctx.user_step."""

    ref: str                                      # "my_train:step" or the function's qualified name
    source: str | None = None                     # "path/my_train.py:12"
    bugs: list[StepBug] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    calls: int = 0                                # calls of the user's step the harness made
    error: str | None = None                      # "RuntimeError: ..." when the step raised
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bugs

    @property
    def kinds(self) -> list[str]:
        return [b.kind for b in self.bugs]

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "source": self.source, "calls": self.calls, "error": self.error,
                "bugs": [{"kind": b.kind, "code": b.code, "message": b.message} for b in self.bugs],
                "measurements": self.measurements}


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
        self.mode_before = True
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
        c.mode_before = model.training
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
        except Exception as err:   # the user's bug is the result, not a crash
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


def _g(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3g}"


def _short(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


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
        if spec.training.accumulate > 1:   # the step gets micro-batches: the accumulation rules
            diagnose_accumulation(step_fn, spec, data, seed, make_optimizer, diag)
        else:
            _diagnose(step_fn, spec, data, seed, make_optimizer, diag)
    diag.wall_s = time.perf_counter() - t0
    return diag


def _exception_bug(c: _Call, which: str, fn: Callable, diag: StepDiagnosis) -> StepBug:
    err = c.error
    text = str(err).splitlines()[0] if str(err) else ""
    diag.error = f"{type(err).__name__}: {text}"
    ev = {"exception": type(err).__name__, "message": text, "where": c.where, "call": which}
    if "does not require grad" in text:
        grad_off = any(not g for _, g in c.forwards)
        line = _find_line(fn, r"no_grad\(|inference_mode\(|\.detach\(|set_grad_enabled\(")
        ev["forward_grad_enabled"] = not grad_off if c.forwards else None
        why = ("the model's forward ran under torch.no_grad()" if grad_off else
               "the loss was cut from the graph (.detach(), .item() or a new tensor)")
        return StepBug("no-grad", "G408",
                       f"the training step raises {type(err).__name__} at backward(): {text} - {why}{_at(c.where)}",
                       f"compute the forward pass and the loss with gradients enabled: remove the torch.no_grad()/"
                       f".detach() around model(x) and loss_fn(...){_at(line)}", ev)
    return StepBug("exception", "G408",
                   f"the training step raises {type(err).__name__}: {text}{_at(c.where)} ({which})",
                   f"fix the exception at {c.where}" if c.where else "fix the exception the step raises "
                   "(run it once by hand on a batch to see the traceback)", ev)


def _diagnose(fn: Callable, spec: Spec, data: DeviceData, seed: int, make_optimizer, diag: StepDiagnosis) -> None:
    H = _Harness(spec, data, seed, make_optimizer)
    model, loss_fn, opt = H.build()
    batch = _batch(spec, data, model, seed)
    s1, s2 = seed + 1, seed + 2          # dropout seeds of the two calls
    m = diag.measurements
    m["batch_size"] = int(batch[0].shape[0])
    m["lr"] = opt.param_groups[0]["lr"]
    m["optimizer"] = type(opt).__name__
    state0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    not_in_opt = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in in_opt]
    frozen0 = [n for n, p in model.named_parameters() if not p.requires_grad]
    drop_bn = _dropout_bn(model)

    # ---- call 1 (model A, initial state) ----
    c1 = H.call(fn, model, batch, opt, loss_fn, s1)
    diag.calls += 1
    if c1.error is not None:
        diag.bugs.append(_exception_bug(c1, "first call", fn, diag))
        return
    state1 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mode2 = model.training
    # ---- call 2 (model A, same batch) ----
    c2 = H.call(fn, model, batch, opt, loss_fn, s2)
    diag.calls += 1

    m["returned_loss"] = _loss_value(c1.loss)
    m["loss_requires_grad"] = bool(getattr(c1.loss, "requires_grad", False)) if torch.is_tensor(c1.loss) else None
    m["forwards_per_call"] = len(c1.forwards)
    m["optimizer_step_calls"] = c1.opt_steps

    train_fwd = [(t, g) for t, g in c1.forwards if g] or c1.forwards
    mode1 = train_fwd[0][0] if train_fwd else True
    ref_loss0, R1 = H.reference(state0, mode1, batch, s1)
    m["reference_loss"] = ref_loss0

    got = [n for n in names if n in c1.grads]
    g1_norm = _norm([c1.grads[n] for n in got])
    m["grad_norm"] = g1_norm
    m["reference_grad_norm"] = _norm(R1.values())
    dw1 = {n: c1.after[n] - c1.before[n] for n in names}
    dw1_norm = _norm(dw1.values())
    m["update_norm"] = dw1_norm

    # (e) no gradient reaches the parameters
    grad_off = any(not g for _, g in c1.forwards) and not any(g for _, g in c1.forwards)
    no_graph = torch.is_tensor(c1.loss) and c1.loss.grad_fn is None
    everything_frozen = len(frozen0) == len(names)
    if not everything_frozen and (not got or (g1_norm == 0.0 and (grad_off or no_graph))):
        line = _find_line(fn, r"no_grad\(|inference_mode\(|\.detach\(|requires_grad")
        ev = {"params_with_grad": len(got), "params": len(names), "forward_grad_enabled": not grad_off,
              "loss_has_graph": (not no_graph) if torch.is_tensor(c1.loss) else None,
              "loss_requires_grad": m["loss_requires_grad"], "update_norm": dw1_norm}
        why = ("the model's forward ran with gradients disabled (torch.no_grad)" if grad_off else
               "the returned loss has no graph back to the model (detached)" if no_graph else
               "no parameter has a gradient after the step")
        diag.bugs.append(StepBug("no-grad", "G408",
                                 f"no gradient reaches the parameters: {why}; {len(got)} of {len(names)} parameters "
                                 f"have a gradient after loss.backward()",
                                 "compute the forward pass and the loss with gradients enabled: remove the "
                                 f"torch.no_grad()/.detach() (and the requires_grad workaround){_at(line)}", ev))
        _check_mode(fn, c1, c2, drop_bn, diag)
        if c2.error is not None:
            diag.bugs.append(_exception_bug(c2, "second call", fn, diag))
        return

    # (e') zero_grad() between backward() and step(): the optimizer saw no gradient
    if c1.opt_steps and g1_norm > 0 and _norm(c1.step_grads.values()) == 0.0:
        line = _find_line(fn, r"zero_grad")
        diag.bugs.append(StepBug("zeroed-before-step", "G408",
                                 f"optimizer.step() sees zero gradients: backward() left a gradient of norm "
                                 f"{_g(g1_norm)}, cleared before the update",
                                 f"call optimizer.zero_grad() before loss.backward(), not between backward() and "
                                 f"optimizer.step(){_at(line)}",
                                 {"grad_norm_after_backward": g1_norm, "grad_norm_at_optimizer_step":
                                  _norm(c1.step_grads.values())}))

    # (b) ascent: the update against the harness's own gradient of loss_fn
    if dw1_norm > 0 and math.isfinite(dw1_norm):
        d, r = _flat(dw1, names), _flat(R1, names)
        cos = float(torch.dot(d, r) / (d.norm() * r.norm()).clamp_min(REL_EPS))
        m["update_grad_cosine"] = cos
        loss_after = H.eval_loss(c1.after, state0, batch)
        loss_before = H.eval_loss(c1.before, state0, batch)
        rn = r.norm().clamp_min(REL_EPS)
        descent = {n: c1.before[n] - dw1_norm * R1[n] / rn for n in names}
        loss_ref = H.eval_loss(descent, state0, batch)
        m.update({"batch_loss_before": loss_before, "batch_loss_after": loss_after,
                  "batch_loss_after_descent_step": loss_ref})
        if cos > ASCENT_COS:
            line = _find_line(fn, r"(\+=|\.add_\(|=\s*\S+\s*\+).*grad|grad.*\+")
            diag.bugs.append(StepBug(
                "ascent", "G408",
                f"the update climbs the gradient: cosine(update, gradient) = {cos:+.2f} (descent is < 0); the batch "
                f"loss goes {_g(loss_before)} -> {_g(loss_after)}, a descent step of the same size gives "
                f"{_g(loss_ref)}",
                f"subtract the gradient: p -= lr * p.grad (w = w - learning_rate * gradient), or call "
                f"optimizer.step(){_at(line)}",
                {"update_grad_cosine": cos, "threshold": ASCENT_COS, "batch_loss_before": loss_before,
                 "batch_loss_after": loss_after, "batch_loss_after_descent_step": loss_ref,
                 "update_norm": dw1_norm, "where": line}))

    # (f) parameters frozen, missing from the optimizer, or unchanged although they got a gradient
    lr = float(opt.param_groups[0]["lr"])
    frozen = sorted(set(frozen0) | set(c1.frozen_after), key=names.index)
    changed = {n for n in names if not torch.equal(c1.after[n], c1.before[n])}
    with_grad = [n for n in got if lr * float(c1.grads[n].float().norm()) >=
                 NO_UPDATE_REL * float(c1.before[n].float().norm()) and float(c1.grads[n].float().norm()) > 0]
    unchanged = [n for n in with_grad if n not in changed and n not in not_in_opt]
    if any(b.kind == "zeroed-before-step" for b in diag.bugs):
        unchanged = []   # explained: the optimizer saw no gradient
    m.update({"params": len(names), "params_changed": len(changed), "params_frozen": frozen,
              "params_not_in_optimizer": not_in_opt, "params_unchanged_with_grad": unchanged})
    if not changed and with_grad and c1.opt_steps == 0:
        line = _find_line(fn, r"\.backward\(")
        diag.bugs.append(StepBug("no-update", "G408",
                                 f"the step never updates the weights: {len(with_grad)} parameters get a gradient, "
                                 f"none changes, and optimizer.step() is never called",
                                 f"call optimizer.step() after loss.backward(){_at(line)}",
                                 {"params_with_grad": len(with_grad), "params_changed": 0,
                                  "optimizer_step_calls": 0}))
    elif frozen or not_in_opt or unchanged:
        parts, fixes = [], []
        if frozen:
            parts.append(f"{len(frozen)} frozen (requires_grad=False: {_short(frozen)})")
            fline = _find_line(fn, r"requires_grad(_\(|\s*=)")
            fixes.append(f"set requires_grad=True on {_short(frozen, 3)} (or drop them from the model if they are "
                         f"frozen on purpose){_at(fline)}")
        if not_in_opt:
            parts.append(f"{len(not_in_opt)} not in any optimizer param group ({_short(not_in_opt)})")
            fixes.append("build the optimizer over model.parameters()")
        if unchanged:
            parts.append(f"{len(unchanged)} unchanged after the step although they got a gradient "
                         f"({_short(unchanged)})")
            fixes.append("update every parameter: pass model.parameters() to the optimizer (an optimizer created "
                         "inside the step, or over a part of the model, leaves the rest alone)")
        only_frozen = not not_in_opt and not unchanged
        diag.bugs.append(StepBug("params-not-updating", "G405",
                                 f"parameters not updating in the training step: {'; '.join(parts)}",
                                 "; ".join(fixes),
                                 {"frozen": frozen, "not_in_optimizer": not_in_opt,
                                  "unchanged_with_grad": unchanged, "params": len(names),
                                  "params_changed": len(changed)},
                                 # freezing is often deliberate (fine-tuning): a warning; a parameter that gets a
                                 # gradient and is never applied is the catalogue's error
                                 severity="warning" if only_frozen else None))

    # (d) eval mode during training
    _check_mode(fn, c1, c2, drop_bn, diag)

    # (a) gradients not zeroed: the second call's gradient vs the fresh gradient at the same state
    if c2.error is not None:
        diag.bugs.append(_exception_bug(c2, "second call on the same batch", fn, diag))
    else:
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
            miss_fresh = float((g2 - f2).norm() / fresh)
            miss_accum = float((g2 - g1 - f2).norm() / accum)
            ratio = float(g2.norm() / fresh)
            m.update({"second_grad_vs_fresh": miss_fresh, "second_grad_vs_accumulated": miss_accum,
                      "second_grad_norm_ratio": ratio})
            if miss_accum <= ACCUM_MATCH and miss_fresh >= ACCUM_FRESH_MISS:
                line = _find_line(fn, r"\.backward\(")
                diag.bugs.append(StepBug(
                    "grads-not-zeroed", "G408",
                    f"gradients are not zeroed between steps: on a second call with the same batch the gradient "
                    f"is {ratio:.2f}x the gradient of one backward (the previous step's gradient is added to it)",
                    f"call optimizer.zero_grad() before loss.backward(){_at(line)}",
                    {"second_grad_norm": float(g2.norm()), "fresh_grad_norm": float(f2.norm()),
                     "first_grad_norm": float(g1.norm()), "ratio": ratio,
                     "relative_distance_to_fresh": miss_fresh, "relative_distance_to_accumulated": miss_accum,
                     "thresholds": {"accumulated": ACCUM_MATCH, "fresh": ACCUM_FRESH_MISS}}))

    # (c) lr not applied: the same step with lr x 10 from the same state
    if dw1_norm > 0 and math.isfinite(dw1_norm) and not any(b.kind == "no-update" for b in diag.bugs):
        mb, lb, ob = H.build(LR_SCALE)
        c4 = H.call(fn, mb, batch, ob, lb, s1)
        diag.calls += 1
        if c4.error is None:
            dw10 = _norm([c4.after[n] - c4.before[n] for n in names])
            scale = dw10 / dw1_norm
            m["update_scale_at_lr_x10"] = scale
            if math.isfinite(scale) and scale < LR_SCALE_MIN:
                line = _find_line(fn, r"(-=|\+=|\.sub_\(|\.add_\(|=).*grad")
                diag.bugs.append(StepBug(
                    "lr-ignored", "G408",
                    f"the update ignores the learning rate: with the optimizer's lr x {LR_SCALE:g} "
                    f"({lr:g} -> {lr * LR_SCALE:g}) the weights move {scale:.2f}x as far (a correct step: "
                    f"{LR_SCALE:g}x)",
                    "apply the optimizer's lr: call optimizer.step(), or update with "
                    f"p -= group['lr'] * p.grad (w = w - learning_rate * gradient){_at(line)}",
                    {"update_norm_lr": dw1_norm, "update_norm_lr_x10": dw10, "scale": scale, "lr": lr,
                     "threshold": LR_SCALE_MIN, "where": line}))
        else:
            diag.bugs.append(_exception_bug(c4, f"call with lr x {LR_SCALE:g}", fn, diag))

    if c1.loss is None or (not torch.is_tensor(c1.loss) and not isinstance(c1.loss, (int, float))):
        diag.bugs.append(StepBug("no-loss", "G408",
                                 f"the training step returns {type(c1.loss).__name__}, not the loss",
                                 "end the step with `return loss`", {"returned": type(c1.loss).__name__},
                                 severity="warning"))


def _check_mode(fn: Callable, c1: _Call, c2: _Call, drop_bn: list[str], diag: StepDiagnosis) -> None:
    """(d): a gradient-enabled forward with model.training False."""
    fwd = [t for t, g in c1.forwards + c2.forwards if g]
    diag.measurements["training_mode_in_forward"] = fwd[:4]
    if not fwd or all(fwd):
        return
    line = _find_line(fn, r"\.eval\(\)|\.train\(\s*(False|0)\s*\)")
    ev = {"model_training_in_forward": fwd[:4], "dropout_batchnorm_layers": drop_bn, "where": line}
    if drop_bn:
        msg = (f"the model is in eval mode during the training step (model.training is False in the forward): "
               f"its {len(drop_bn)} dropout/batchnorm layer{'s' if len(drop_bn) > 1 else ''} "
               f"({_short(drop_bn, 3)}) run as at inference (no dropout, frozen batch statistics)")
        sev = None
    else:
        msg = ("the model is in eval mode during the training step (model.training is False in the forward); "
               "no effect on this model (no dropout/batchnorm), but it will matter once such layers are added")
        sev = "info"
    diag.bugs.append(StepBug("eval-mode", "G408", msg,
                             f"call model.train() at the start of the training step (model.eval() only around "
                             f"evaluation, then switch back){_at(line)}", ev, severity=sev))


def _loss_value(loss: Any) -> float | None:
    try:
        if torch.is_tensor(loss):
            return float(loss.detach().float().mean()) if loss.numel() else None
        return float(loss)
    except (TypeError, ValueError, RuntimeError):
        return None


# ---- gradient accumulation (training.accumulate k > 1): G412, G413 -----------------------------------
# With training.accumulate k > 1 the step gets `batch` as a LIST of k (x, y) micro-batches and must do ONE
# optimizer step over them: a correct step divides each micro-batch loss by k, calls backward() on each, and
# zeroes the gradients once per optimizer step. The harness compares the gradient optimizer.step() sees with
# the mean of the micro-batch gradients (what a correct step gives) and with the last micro-batch's alone.
ACCUM_COS = 0.99          # the step's gradient points the same way as a reference: cosine > 0.99 (a correct
                          # step matches the mean to float precision; the two references differ at cosine ~0.3-0.8
                          # on a batch split in parts)
ACCUM_DISTINCT_COS = 0.95  # the mean and the last micro-batch's gradient must differ (cosine < 0.95) to tell
                           # "last micro-batch only" from "all of them"
ACCUM_SCALE_TOL = 0.2     # G412: |gradient| / |mean gradient| within 20% of k: summed, not averaged


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
    return float(a @ b) / den if den > 0 else 0.0


def diagnose_accumulation(fn: Callable, spec: Spec, data: DeviceData, seed: int, make_optimizer,
                          diag: StepDiagnosis) -> None:
    """The accumulation rules (G412 loss not divided by k, G413 zero_grad on every micro-step), on one call of
    the step with k micro-batches; dropout is switched off in the model so the references are exact."""
    H = _Harness(spec, data, seed, make_optimizer)
    model, loss_fn, opt = H.build()
    k = int(spec.training.accumulate)
    x, y = _batch(spec, data, model, seed)
    micro = list(zip(x.chunk(k), y.chunk(k)))
    k = len(micro)
    m = diag.measurements
    m.update({"accumulate": k, "micro_batch_sizes": [int(mx.shape[0]) for mx, _ in micro]})
    for mod in model.modules():   # exact references: no dropout noise between the step and the harness
        if isinstance(mod, nn.modules.dropout._DropoutNd):
            mod.p = 0.0
    state0 = {kk: v.detach().clone() for kk, v in model.state_dict().items()}
    c = H.call(fn, model, micro, opt, loss_fn, seed + 1)
    diag.calls += 1
    if c.error is not None:
        diag.bugs.append(_exception_bug(c, "call with micro-batches", fn, diag))
        return
    if not c.step_grads:
        m["accumulation"] = "optimizer.step() was not called: nothing to compare"
        return
    names = [n for n in c.step_grads]
    refs = []
    for mx, my in micro:
        model_r, _, _ = H.build()
        for mod in model_r.modules():
            if isinstance(mod, nn.modules.dropout._DropoutNd):
                mod.p = 0.0
        model_r.load_state_dict(state0)
        loss = loss_fn(model_r(mx), my)
        loss.backward()
        refs.append({n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                     for n, p in model_r.named_parameters()})
    g = _flat(c.step_grads, names)
    mean = _flat({n: sum(r[n] for r in refs) / k for n in names}, names)
    last = _flat(refs[-1], names)
    ratio = float(torch.linalg.vector_norm(g) / torch.linalg.vector_norm(mean).clamp_min(REL_EPS))
    cos_mean, cos_last, cos_ref = _cos(g, mean), _cos(g, last), _cos(mean, last)
    m.update({"grad_to_mean_ratio": ratio, "cos_with_mean_grad": cos_mean, "cos_with_last_micro_grad": cos_last,
              "cos_mean_vs_last": cos_ref})
    ev = {"accumulate": k, "grad_to_mean_ratio": ratio, "cos_with_mean_grad": cos_mean,
          "cos_with_last_micro_grad": cos_last}
    if cos_ref < ACCUM_DISTINCT_COS and cos_last > ACCUM_COS and cos_mean < ACCUM_COS:
        line = _find_line(fn, r"zero_grad\(")
        diag.bugs.append(StepBug(
            "zero-grad-micro", "G413",
            f"the gradient optimizer.step() sees is the last micro-batch's alone (cosine {cos_last:.3f}; with the "
            f"mean over the {k} micro-batches {cos_mean:.2f}): zero_grad() runs on every micro-step",
            f"call optimizer.zero_grad() once per optimizer step, after optimizer.step(){_at(line)}", ev))
        return
    if cos_mean > ACCUM_COS and abs(ratio / k - 1) < ACCUM_SCALE_TOL:
        line = _find_line(fn, r"\.backward\(")
        diag.bugs.append(StepBug(
            "loss-not-divided", "G412",
            f"the accumulated gradient is {ratio:.2f}x the mean micro-batch gradient (accumulate: {k}): the "
            f"micro-batch losses are summed, not divided by {k}, which multiplies the effective lr by {k}",
            f"divide each micro-batch loss by {k} before backward(): (loss / {k}).backward(){_at(line)}", ev))
