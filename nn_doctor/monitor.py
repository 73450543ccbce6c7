"""Monitor: nn-doctor's steps 3-5 on the user's own training loop (the real run, not a probe).

Usage::

    from nn_doctor import Monitor

    with Monitor(model, optimizer, every=10) as mon:
        for epoch in range(epochs):
            model.train()
            for x, y in loader:
                optimizer.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                mon.step(loss)                 # AFTER optimizer.step(): one call per training step
            mon.val(evaluate(model, val_loader))   # the validation loss, whenever you evaluate
    report = mon.report()                      # an nn_doctor.report.Report (command "monitor")
    print(nn_doctor.render.render_text(report))

`mon.step(loss)` takes the loss tensor (or a float) of the step that just finished; call it after
`optimizer.step()`. The model must be called as `model(x)` (the Monitor's hooks sit on it). The report
holds, from the real run:

- step 3: the train/validation curve pattern (H306) and overfitting / underfitting / not converged
  (H304/H305/H308), judged by nn_doctor.checks.hyper on the per-step losses and the `mon.val` values;
- step 4: the first non-finite step and layer (G400), vanishing/exploding gradients (G401/G402), dead
  ReLUs (G403), saturated sigmoid/tanh (G404), parameters that never get a gradient or never change
  (G405), update/weight ratios (G406), from the per-layer statistics of nn_doctor.probe.Instruments;
- step 5: device, memory, throughput (R500/R502/R503/R504).

Cost design (benchmarks/bench_monitor.py measures it against the same loop without a Monitor):

- Every step: the forward hooks are idle (each returns at once) and `mon.step` only stores the loss:
  on the CPU it reads the value (`float(loss)`, what `loss.item()` costs; no device to wait for); on a
  GPU the loss stays on the device and the buffered values are read back in one transfer every `every`
  steps (no per-step synchronisation).
- Recorded steps (step 0, then every `every` steps): the Instruments' hooks are armed for that
  forward and reduce each layer's output to a few device scalars; the optimizer's step hooks take the
  gradient norms and the update/weight ratios; everything is read back in one transfer. When a
  recorded step costs more than RECORD_BUDGET of the time between two records (a tiny model), the
  interval is stretched (in multiples of `every`) until it does not. Between records the only per-step
  costs are one forward pre-hook on the model (a reference to the inputs) and step()'s fast path
  (the loss value, a running average, a comparison).
- NaN origin: the per-layer finiteness checks cost a synchronisation per layer, so they are armed only
  where a non-finite value is likely: on the first WATCH_FIRST steps (a bad setup blows up at once:
  unscaled data, a far too high lr) and, from then on, for WATCH_HOLD steps after any loss that looks
  like a blow-up (non-finite, or above SUSPECT_FACTOR x its running average). A loss that grows before
  it overflows (the usual lr-too-high divergence) is therefore watched when it overflows, and G400
  names the step and where the first NaN/Inf showed: a layer's output in the forward pass, the loss, a
  gradient, or the weights after the update. A loss that jumps from normal to non-finite in one step
  outside a watch is still dated exactly (the losses are all kept); its place is then reported as
  "loss" (or "input" when that step's input batch holds NaN/Inf), with `watched: false` and the first
  layer whose weights are non-finite by then in the evidence. On a GPU the losses are read every
  `every` steps, so suspicion arms the watch up to `every` steps late, and the input check only sees
  the last step's batch.

Everything the Monitor attaches (forward hooks, optimizer hooks) is removed on exit (`detach()`);
the model, the optimizer and the RNG are never modified.

`DoctorCallback` (defined when `lightning` or `pytorch_lightning` imports) wraps a Monitor in a
Lightning callback: `trainer = Trainer(callbacks=[DoctorCallback(every=10)])`, then
`callback.report` after `fit` (it reads the loss returned by training_step and the logged `val_loss`).
"""
from __future__ import annotations

import math
import platform
import statistics
import time
from array import array
from collections import deque
from typing import Any

import torch
from torch import nn

from .catalogue import Step
from .probe import DIVERGE_FACTOR, ProbeRecord, Instruments, ema
from .report import Report

# ---- constants ---------------------------------------------------------------------------------
WATCH_FIRST = 10        # steps watched for NaN/Inf from the start (a bad setup overflows within a few steps:
                        # unscaled wine, SGD lr 10, a leaky-ReLU MLP goes NaN at step 6)
SUSPECT_FACTOR = DIVERGE_FACTOR  # a loss > 4x its running average looks like a blow-up (the probes' divergence rule)
SUSPECT_ABS = 0.1       # ... and is above that average by >= 10% of the first loss (a near-zero converged loss
                        # that jumps 0.01 -> 0.05 on one batch is not a blow-up)
WATCH_HOLD = 10         # the watch stays armed this many steps after the last suspicious loss
RUNNING_BETA = 0.9      # the running average of the loss for the suspicion rule
RECORD_BUDGET = 0.02    # a recorded step may cost at most 2% of the time between two records (else the
                        # interval is stretched). A record of the 13-64-3 wine MLP costs ~0.9 of its 0.55 ms
                        # step (the reductions are many tiny ops), so it is recorded every ~50 steps there;
                        # a conv net's record is relatively cheaper
MAX_INTERVAL_FACTOR = 64  # ... but records stay at least every 64 x `every` steps
AVERAGE_WINDOW = 10     # initial/final training loss: mean of the first/last up to 10 per-step losses (5% of
                        # the run at most)
MAX_CURVE_STEPS = 2_000_000  # per-step losses kept (8 bytes each); longer runs keep every other value

MONITORED_STEPS = (Step.HYPERPARAMETERS, Step.GRADIENTS, Step.RESOURCES)   # what a user's own loop can tell
_OPT_NAMES = {"SGD": "sgd", "Adam": "adam", "AdamW": "adamw", "RMSprop": "rmsprop"}


class Monitor:
    """Watch a user's training loop; `report()` returns steps 3-5 of nn-doctor's checklist for the run.

    model: the nn.Module being trained (hooks go on it and its leaf layers);
    optimizer: its torch optimizer (optional: without it the gradient norms are read in `step()`, after
        the update, and the update ratios from a weight snapshot taken one step before each record);
    every: record per-layer statistics every `every` steps (stretched when a record is expensive; see the
        module docstring) and, on a GPU, read the losses back every `every` steps;
    watch_first: steps watched for NaN/Inf from the start.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, every: int = 10, *,
                 watch_first: int = WATCH_FIRST):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Monitor needs the torch.nn.Module being trained, got {type(model).__name__}")
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model, self.optimizer, self.every = model, optimizer, int(every)
        self.watch_first = int(watch_first)
        self._attached = False
        self._handles: list[Any] = []
        self._armed: list[Any] = []                  # hooks on for a recorded/watched step
        self._leaf_hooks: list[tuple[nn.Module, Any]] = []
        self._inst: Instruments | None = None
        # the run
        self._n = 0                                  # completed steps (mon.step calls)
        self._losses = array("d")                    # per-step training loss, NaN = non-finite
        self._n_values = 0                           # losses received (read back) so far
        self._append = self._losses.append
        self._quiet_until = -1                       # steps below this take step()'s fast path
        self._suspect_level = math.inf               # a loss at or above this arms the NaN watch
        self._suspect_margin = 0.0
        self._stride = 1                             # losses kept every `stride` steps (very long runs)
        self._pending: list[torch.Tensor] = []       # device losses not read back yet (consecutive steps)
        self._pending_start = 0                      # ... from this step on
        self._val: list[tuple[int, float | None]] = []
        self._records: list[dict[str, Any]] = []
        self._first_nonfinite: dict[str, Any] | None = None
        self._params_without_grad: list[str] | None = None
        self._batch_size: int | None = None
        self._input_abs_max: float | None = None
        # recording cadence
        self._interval = self.every
        self._next_record = 0
        self._recording = False                      # the step in progress is a recorded one
        self._grads: dict[str, torch.Tensor] = {}
        self._ratios: dict[str, torch.Tensor] | None = None
        self._before: dict[str, list[torch.Tensor]] | None = None
        self._snapshot: dict[str, list[torch.Tensor]] | None = None   # no optimizer: weights before a record
        # NaN watch
        self._watch_until = self.watch_first
        self._running: float | None = None
        self._first_loss: float | None = None
        self._opt_event: tuple[str, str | None] | None = None
        self._last_args: Any = None
        self._last_input_step = -1
        # timing
        self._t_attach = self._t_last = self._t_window = None
        self._window_start = 0
        self._dirty = False                          # a mon.val() inside the current timing window
        self._dirty_step = False                     # ... inside the current step period
        self._windows: deque[float] = deque(maxlen=1000)   # per-step seconds of clean windows
        self._step_avg: float | None = None          # running per-step time of unrecorded steps
        self._record_extra: float | None = None      # running extra time of a recorded step
        self._wall_s = 0.0
        self._fp0: dict[str, tuple[float, float]] = {}
        self._fp1: dict[str, tuple[float, float]] | None = None
        self._device = None

    # ---- attaching ----------------------------------------------------------------------------
    def __enter__(self) -> "Monitor":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def attach(self) -> "Monitor":
        if self._attached:
            return self
        # Instruments' layer table, parameter groups and reductions; its leaf hooks go on only around the
        # recorded and watched steps (a hook on a module sends every call of it down torch's slow path)
        inst = self._inst = Instruments(self.model)
        inst.remove()
        self._leaf_hooks = [(module, inst._hook(name, module, kind)) for name, module, kind in inst.layers]
        self._handles = [self.model.register_forward_pre_hook(self._pre_forward)]
        self._armed = []
        p = next(self.model.parameters(), None)
        self._device = p.device if p is not None else torch.device("cpu")
        if not self._fp0:
            self._fp0 = self._fingerprints()      # at the first attach: "unchanged" spans the whole run
        self._fp1 = None
        self._t_attach = self._t_last = self._t_window = time.perf_counter()
        self._window_start = self._n
        self._attached = True
        self._arm_for(self._n)
        return self

    def detach(self) -> None:
        """Remove every hook; keep what was measured (report() works after detach)."""
        if not self._attached:
            return
        self._flush()
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._inst is not None:
            self._inst.armed = self._inst.nan_watch = False
            self._inst.remove()
        self._disarm()
        self._quiet_until = -1
        self._fp1 = self._fingerprints()
        self._wall_s += time.perf_counter() - self._t_attach
        self._attached = False
        self._before = self._snapshot = None
        self._last_args = None

    close = detach

    # ---- hooks -----------------------------------------------------------------------------------
    def _watching(self, k: int) -> bool:
        return k < self._watch_until and self._first_nonfinite is None

    def _arm_for(self, k: int) -> None:
        """Put the leaf, post-forward and optimizer hooks on for step k when it is recorded or watched;
        take them off otherwise."""
        need = self._first_nonfinite is None and (k == self._next_record or self._watching(k))
        if need and not self._armed:
            self._armed = [m.register_forward_hook(h) for m, h in self._leaf_hooks]
            self._armed.append(self.model.register_forward_hook(self._post_forward))
            if self.optimizer is not None:
                self._armed += [self.optimizer.register_step_pre_hook(self._opt_pre),
                                self.optimizer.register_step_post_hook(self._opt_post)]
        elif not need and self._armed:
            self._disarm()
        if self.optimizer is None and k == self._next_record and k > 0 and self._first_nonfinite is None:
            self._snapshot = self._inst.weights()     # the weights before the recorded step's update

    def _disarm(self) -> None:
        for h in self._armed:
            h.remove()
        self._armed = []
        if self._inst is not None:
            self._inst.armed = self._inst.nan_watch = False

    def _pre_forward(self, module, args) -> None:
        # on every forward: keep a reference to the inputs (to tell a NaN input batch afterwards); the rest
        # only on recorded/watched steps, for training forwards (not evaluation ones)
        self._last_args = args
        self._last_input_step = self._n
        if self._armed and module.training and torch.is_grad_enabled():
            self._arm_forward(args)

    def _arm_forward(self, args) -> None:
        k = self._n
        x = args[0] if args else None
        inst = self._inst
        if k == self._next_record and self._first_nonfinite is None:
            self._recording = True
            inst.armed = True
            if torch.is_tensor(x) and x.dim() > 0:
                self._batch_size = int(x.shape[0])
                if self._input_abs_max is None and x.is_floating_point() and x.numel():
                    self._input_abs_max = float(x.detach().abs().amax())
        if self._watching(k):
            inst.nan_watch = True

    def _post_forward(self, module, args, output) -> None:
        inst = self._inst
        inst.armed = False
        inst.nan_watch = False

    def _opt_pre(self, optimizer, args, kwargs) -> None:
        if self._recording:
            self._before = self._inst.weights()

    def _opt_post(self, optimizer, args, kwargs) -> None:
        # gradients after the update: the same values the update used (torch's optimizers do not modify
        # .grad), and Lightning's closure has run its backward by now
        k = self._n
        if self._recording:
            self._grads = self._inst.grad_norms()
            if self._before is not None:
                self._ratios = self._inst.update_ratios(self._before)
            self._before = None
            if self._params_without_grad is None:
                self._params_without_grad = self._no_grad_params()
        if self._watching(k) and self._opt_event is None:
            self._opt_event = self._nonfinite_update()

    # ---- the user's calls ------------------------------------------------------------------------
    def step(self, loss: Any) -> None:
        """Record the step that just finished; call it once per training step, after optimizer.step()."""
        k = self._n
        if k < self._quiet_until:
            # the fast path of a plain step (no record, no watch, no flush due; a finite unsuspicious loss on
            # the host, or a device loss to buffer): a handful of operations, inlined, on every step
            if loss.__class__ is float:
                v = loss
            elif not isinstance(loss, torch.Tensor):
                v = None
            elif loss.is_cpu:
                v = loss.item() if loss.numel() == 1 else None
            else:
                v = None
                if loss.numel() == 1 and self._pending:
                    self._pending.append(loss.detach())
                    self._n = k + 1
                    now = time.perf_counter()
                    self._step_avg = RUNNING_BETA * self._step_avg + (1 - RUNNING_BETA) * (now - self._t_last)
                    self._t_last = now
                    return
            if v is not None and v < self._suspect_level and v == v and not self._pending:
                self._append(v)
                self._n_values += 1
                r = RUNNING_BETA * self._running + (1 - RUNNING_BETA) * v
                self._running = r
                self._suspect_level = max(SUSPECT_FACTOR * r, r + self._suspect_margin)
                self._n = k + 1
                now = time.perf_counter()
                self._step_avg = RUNNING_BETA * self._step_avg + (1 - RUNNING_BETA) * (now - self._t_last)
                self._t_last = now
                return
        self._slow_step(loss, k)

    def _slow_step(self, loss: Any, k: int) -> None:
        if not self._attached:
            raise RuntimeError("Monitor.step() outside the monitor: use `with Monitor(...) as mon:` or attach()")
        watched = self._watching(k)
        value: float | None = None
        if isinstance(loss, torch.Tensor):
            if loss.device.type == "cpu" or watched:
                value = loss.item() if loss.numel() == 1 else float(loss.detach().float().mean())
            else:   # kept on the device; read back every `every` steps (one transfer, no per-step sync)
                if not self._pending:
                    self._pending_start = k
                self._pending.append(loss.detach() if loss.numel() == 1 else loss.detach().float().mean())
        else:
            value = float(loss)
        if value is not None:
            if self._pending:
                self._flush()
            self._keep(value)
            finite = math.isfinite(value)
            if self._first_nonfinite is None:
                if watched:
                    self._locate(k, value)
                elif not finite:
                    self._locate_after(k)
            if finite:
                self._suspect(k, value)
        elif watched and self._first_nonfinite is None:
            self._locate(k, None)
        recorded = self._recording
        if recorded:
            self._record(k)
        if self._armed:
            self._inst.first_bad_layer = None
            self._opt_event = None
        self._n = k + 1
        if self._n % self.every == 0:
            self._flush()
        # timing, over the whole period between two step() calls (the user's step and all of ours): the
        # running time of a plain step, the extra cost of a recorded one (armed hooks, reductions, read-back)
        now = time.perf_counter()
        dt = now - self._t_last
        self._t_last = now
        if not self._dirty_step and k > 0:
            if recorded:
                extra = dt - (self._step_avg or dt)
                self._record_extra = extra if self._record_extra is None else \
                    RUNNING_BETA * self._record_extra + (1 - RUNNING_BETA) * extra
                self._adapt()
            elif not watched:
                self._step_avg = dt if self._step_avg is None else \
                    RUNNING_BETA * self._step_avg + (1 - RUNNING_BETA) * dt
        self._dirty_step = False
        self._arm_for(self._n)
        self._set_quiet()

    def _set_quiet(self) -> None:
        """The steps from now on that may take the fast path: up to (not including) the step before the next
        record, flush or watch, while nothing is pending, armed or dirty."""
        n = self._n
        if (self._armed or self._dirty_step or self._stride != 1 or self._running is None
                or self._step_avg is None or self._watching(n) or not self._attached):
            self._quiet_until = -1
            return
        nxt = (n // self.every + 1) * self.every                  # the next flush
        if self._first_nonfinite is None:
            nxt = min(nxt, self._next_record)
        self._quiet_until = min(nxt, MAX_CURVE_STEPS) - 1

    def val(self, val_loss: Any, step: int | None = None) -> None:
        """The validation loss at this point of the run (a tensor or a float); `step` defaults to the
        number of training steps so far."""
        v = float(val_loss.detach().float().mean()) if torch.is_tensor(val_loss) else float(val_loss)
        self._val.append((self._n if step is None else int(step), v if math.isfinite(v) else None))
        self._dirty = self._dirty_step = True
        self._quiet_until = -1

    @property
    def steps(self) -> int:
        return self._n

    # ---- internals ---------------------------------------------------------------------------------
    def _keep(self, value: float) -> None:
        """Store one step's loss (in step order); a very long run keeps every other value from then on."""
        if self._n_values % self._stride == 0:
            if len(self._losses) >= MAX_CURVE_STEPS:
                self._losses = array("d", self._losses[::2])
                self._append = self._losses.append
                self._stride *= 2
            if self._n_values % self._stride == 0:
                self._losses.append(value if math.isfinite(value) else math.nan)
        self._n_values += 1

    def _flush(self) -> None:
        """Read the device losses back (one transfer) and close a timing window."""
        if self._pending:
            steps = range(self._pending_start, self._pending_start + len(self._pending))
            vals = torch.stack([v.float() for v in self._pending]).cpu().tolist()
            self._pending = []
            for k, v in zip(steps, vals):
                self._keep(v)
                if not math.isfinite(v) and self._first_nonfinite is None:
                    self._locate_after(k)
                elif math.isfinite(v):
                    self._suspect(k, v)
        now = time.perf_counter()
        n = self._n - self._window_start
        if n > 0 and not self._dirty and self._window_start > 0:   # the first window holds the warm-up
            self._windows.append((now - self._t_window) / n)
        self._t_window, self._window_start, self._dirty = now, self._n, False

    def _suspect(self, k: int, v: float) -> None:
        """Arm the NaN watch after a loss that looks like a blow-up."""
        if self._first_loss is None:
            self._first_loss = v
            self._suspect_margin = SUSPECT_ABS * abs(v)
        r = self._running
        if r is not None and v > SUSPECT_FACTOR * r and v - r > self._suspect_margin:
            self._watch_until = max(self._watch_until, k + 1 + WATCH_HOLD)
        r = v if r is None else RUNNING_BETA * r + (1 - RUNNING_BETA) * v
        self._running = r
        # v > 4r and v - r > margin  <=>  v > max(4r, r + margin): one comparison on the fast path
        self._suspect_level = max(SUSPECT_FACTOR * r, r + self._suspect_margin)

    def _record(self, k: int) -> None:
        inst = self._inst
        if self.optimizer is None:
            self._grads = inst.grad_norms()
            self._ratios = inst.update_ratios(self._snapshot) if self._snapshot is not None else None
            self._snapshot = None
            if self._params_without_grad is None and any(p.grad is not None for p in self.model.parameters()):
                self._params_without_grad = self._no_grad_params()
        stats = inst.collect(self._grads, self._ratios)
        self._records.append({"step": k, "stats": stats})
        self._grads, self._ratios = {}, None
        self._recording = False
        self._next_record = k + self._interval

    def _adapt(self) -> None:
        """Stretch the record interval while a record costs more than RECORD_BUDGET of the time between two."""
        if not self._step_avg or self._record_extra is None or self._record_extra <= 0:
            return
        need = self._record_extra / (RECORD_BUDGET * self._step_avg)
        if need > self._interval:
            k = min(math.ceil(need / self.every), MAX_INTERVAL_FACTOR)
            self._interval = max(self._interval, k * self.every)
            self._next_record = self._records[-1]["step"] + self._interval if self._records else self._next_record

    def _no_grad_params(self) -> list[str]:
        """Trainable parameters without a gradient at the first record, and ones no optimizer group holds."""
        out = [n for n, p in self.model.named_parameters() if p.requires_grad and p.grad is None]
        if self.optimizer is not None:
            held = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
            out += [n for n, p in self.model.named_parameters() if p.requires_grad and id(p) not in held
                    and n not in out]
        return out

    def _first_bad(self, which: str) -> str | None:
        """The first layer (forward order) whose gradients or weights hold a NaN/Inf; None when all are finite."""
        inst = self._inst
        groups = [(name, [p.grad if which == "grad" else p.detach() for p in ps])
                  for name, ps in inst.params.items()]
        groups = [(name, [t for t in ts if t is not None]) for name, ts in groups]
        every = [t for _, ts in groups for t in ts]
        # max |t| is finite iff every element is (a norm would overflow on large finite values)
        if not every or bool(torch.isfinite(torch.stack([t.abs().amax() for t in every])).all()):
            return None
        for name, ts in groups:
            if ts and not bool(torch.isfinite(torch.stack([t.abs().amax() for t in ts])).all()):
                return name
        return None

    def _nonfinite_update(self) -> tuple[str, str | None] | None:
        layer = self._first_bad("grad")
        if layer is not None:
            return "gradient", layer
        layer = self._first_bad("weight")
        if layer is not None:
            return "weights", layer
        return None

    def _locate(self, k: int, value: float | None) -> None:
        """A watched step: the first place a NaN/Inf showed, in the order forward -> loss -> gradient -> weights."""
        inst = self._inst
        event = None
        if inst.first_bad_layer is not None:
            event = ("forward", inst.first_bad_layer)
        elif value is not None and not math.isfinite(value):
            event = ("loss", None)
        elif self.optimizer is not None:
            event = self._opt_event
        else:
            event = self._nonfinite_update()
        if event is not None:
            self._first_nonfinite = {"step": k, "where": event[0], "layer": event[1], "watched": True}

    def _locate_after(self, k: int) -> None:
        """A non-finite loss on a step that was not watched: date it exactly, place it as well as possible."""
        where = "loss"
        args = self._last_args
        x = args[0] if args else None
        if k == self._last_input_step and torch.is_tensor(x) and x.is_floating_point() \
                and not bool(torch.isfinite(x).all()):
            where = "input"
        self._first_nonfinite = {"step": k, "where": where, "layer": None, "watched": False}
        if self._inst is not None:   # where it has spread by now (the weights after later updates, on a GPU)
            self._first_nonfinite["nonfinite_weights_now"] = self._first_bad("weight")

    def _fingerprints(self) -> dict[str, tuple[float, float]]:
        """(sum, norm) per trainable parameter: two numbers that change when a parameter does (no copies kept)."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not named:
            return {}
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm([p.detach() for _, p in named])).float()
            sums = torch.stack([p.detach().float().sum() for _, p in named])
            host = torch.stack([sums, norms], 1).cpu().tolist()
        return {n: (a, b) for (n, _), (a, b) in zip(named, host)}

    # ---- the report ----------------------------------------------------------------------------------
    def record(self) -> ProbeRecord:
        """The run as a ProbeRecord (plain floats), the form the step 3-5 checks read."""
        if self._attached:
            self._flush()
        losses = [None if math.isnan(v) or math.isinf(v) else v for v in self._losses]
        stride = self._stride
        rec = ProbeRecord(name="monitor", settings={"every": self.every, "record_interval": self._interval,
                                                    "loss_stride": stride, "source": "monitor",
                                                    **self._observed_settings()},
                          overrides={}, device=str(self._device or "cpu"))
        rec.losses = losses
        # the curve classifier reads per-step losses against validation steps: in units of kept steps
        rec.val_losses = [(s / stride, v) for s, v in self._val] if stride > 1 else list(self._val)
        finite = [v for v in losses if v is not None]
        w = max(1, min(AVERAGE_WINDOW, len(finite) // 20))
        rec.initial_loss = statistics.fmean(finite[:w]) if finite else None
        rec.stopped = "non-finite" if self._first_nonfinite is not None else "completed"
        if self._first_nonfinite is None and finite:
            sm = [v for v in ema(losses) if v is not None]
            rec.final_loss = sm[-1] if sm else statistics.fmean(finite[-w:])
        vals = [v for _, v in self._val]
        rec.initial_val_loss = vals[0] if vals else None
        rec.final_val_loss = vals[-1] if vals and self._first_nonfinite is None else None
        rec.train_eval = [(0, rec.initial_loss)] + ([(self._n, rec.final_loss)] if rec.final_loss is not None else [])
        rec.first_nonfinite = dict(self._first_nonfinite) if self._first_nonfinite else None
        rec.layers = list(self._records)
        rec.init_layers = self._records[0]["stats"] if self._records else {}
        rec.layer_kinds = dict(self._inst.kinds) if self._inst is not None else {}
        rec.params_without_grad = list(self._params_without_grad or [])
        fp1 = self._fp1 if self._fp1 is not None else self._fingerprints()
        if self._first_nonfinite is None and self._n > 0:
            rec.params_unchanged = [n for n, v in fp1.items() if n in self._fp0 and self._fp0[n] == v
                                    and n not in rec.params_without_grad]
        rec.steps_run = self._n
        wall = self._wall_s + (time.perf_counter() - self._t_attach if self._attached else 0.0)
        rec.wall_s = wall
        rec.step_time_s = statistics.median(self._windows) if self._windows else \
            (wall / self._n if self._n else None)
        rec.n_params = sum(p.numel() for p in self.model.parameters())
        if self._device is not None and self._device.type == "cuda":
            rec.peak_memory_bytes = int(torch.cuda.max_memory_allocated(self._device))
        return rec

    def _observed_settings(self) -> dict[str, Any]:
        """What the Monitor saw of the run's settings: the optimizer's name, lr, momentum and weight decay
        (first parameter group), the batch size and the largest |x| of the first recorded input batch."""
        out: dict[str, Any] = {"batch_size": self._batch_size, "input_abs_max": self._input_abs_max,
                               "name": None, "lr": None, "momentum": None, "weight_decay": None, "grad_clip": None}
        opt = self.optimizer
        if opt is not None and opt.param_groups:
            g = opt.param_groups[0]
            out["name"] = _OPT_NAMES.get(type(opt).__name__, type(opt).__name__.lower())
            for key in ("lr", "momentum", "weight_decay"):
                v = g.get(key)
                out[key] = float(v) if isinstance(v, (int, float)) else None
        return out

    def context(self, rec: ProbeRecord | None = None):
        """A ProbeContext for the checks: the run as the baseline record (source "monitor", no spec)."""
        from .checks.context import ProbeContext
        rec = rec or self.record()
        dev = str(self._device or "cpu")
        mem: dict[str, Any] = {"batch_size": self._batch_size, "device": dev}
        if self._device is not None and self._device.type == "cuda":
            mem["peak_bytes"] = rec.peak_memory_bytes
            mem["total_bytes"] = int(torch.cuda.get_device_properties(self._device).total_memory)
        else:
            try:
                import resource
                mem["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            except ImportError:   # Windows
                pass
        return ProbeContext(device=dev, baseline=rec, init=rec, n_params=rec.n_params, memory=mem, env=self._env(),
                            source="monitor")

    def _env(self) -> dict[str, Any]:
        env = {"device": str(self._device or "cpu"), "python": platform.python_version(),
               "torch": torch.__version__.split("+")[0], "threads": torch.get_num_threads()}
        if self._device is not None and self._device.type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(self._device)
        return env

    def report(self, select: list[str] | None = None, ignore: list[str] | None = None) -> Report:
        """Steps 3-5 of the checklist for the monitored run (a Report with command "monitor")."""
        from .checks import codes_for_source, run_checks
        t0 = time.perf_counter()
        rec = self.record()
        ctx = self.context(rec)
        report = Report("monitor")
        cls = type(self.model)
        report.inputs = {"model": f"{cls.__module__}.{cls.__qualname__}",
                         "optimizer": type(self.optimizer).__name__ if self.optimizer is not None else None,
                         "steps": self._n, "validation_points": len(self._val)}
        report.environment.update(ctx.env)
        for st in Step:
            report.step(st).ran = st in MONITORED_STEPS
        select, ignore = list(select or []), list(ignore or [])
        if self._n < 2:
            for st in (Step.HYPERPARAMETERS, Step.GRADIENTS):
                report.skip_step(st, f"the monitor saw {self._n} training step(s): call mon.step(loss) once per step")
        run_checks(codes_for_source("monitor", MONITORED_STEPS), ctx, report, select, ignore)
        report.step(Step.HYPERPARAMETERS).summary = f"{self._n} steps, {len(self._val)} validation points"
        report.step(Step.GRADIENTS).summary = f"{len(self._records)} layer records (every {self._interval} steps)"
        report.probes["monitor"] = {
            "steps": self._n, "every": self.every, "record_interval": self._interval,
            "records": len(self._records), "validation_points": len(self._val), "batch_size": self._batch_size,
            "first_nonfinite": rec.first_nonfinite, "step_time_s": rec.step_time_s,
            "initial_loss": rec.initial_loss, "final_loss": rec.final_loss,
            "final_val_loss": rec.final_val_loss, "input_abs_max": self._input_abs_max}
        report.timing["report_s"] = time.perf_counter() - t0
        report.timing["monitored_s"] = rec.wall_s
        return report.finalize()


# ---- Lightning -----------------------------------------------------------------------------------

def _lightning():
    try:
        import lightning.pytorch as pl
        return pl
    except ImportError:
        pass
    try:
        import pytorch_lightning as pl
        return pl
    except ImportError:
        return None


_pl = _lightning()

if _pl is not None:
    class DoctorCallback(_pl.Callback):
        """A Monitor on a Lightning fit: `Trainer(callbacks=[cb := DoctorCallback()])`, then `cb.report`.

        The training loss is the `loss` returned by training_step; the validation loss is the metric
        `val_key` (default "val_loss") logged during validation. The first optimizer is watched.
        """

        def __init__(self, every: int = 10, val_key: str = "val_loss", watch_first: int = WATCH_FIRST):
            super().__init__()
            self.every, self.val_key, self.watch_first = every, val_key, watch_first
            self.monitor: Monitor | None = None
            self.report: Report | None = None

        def on_train_start(self, trainer, pl_module) -> None:
            opt = trainer.optimizers[0] if trainer.optimizers else None
            opt = getattr(opt, "optimizer", opt)     # a LightningOptimizer wraps the torch one
            self.monitor = Monitor(pl_module, opt, every=self.every, watch_first=self.watch_first).attach()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self.monitor is None:
                return
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if loss is not None:
                self.monitor.step(loss)

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if self.monitor is None or trainer.sanity_checking:
                return
            v = trainer.callback_metrics.get(self.val_key)
            if v is not None:
                self.monitor.val(v)

        def on_train_end(self, trainer, pl_module) -> None:
            if self.monitor is not None:
                self.monitor.detach()
                self.report = self.monitor.report()

        def on_exception(self, trainer, pl_module, exception) -> None:
            if self.monitor is not None:
                self.monitor.detach()
