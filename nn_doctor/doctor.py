"""What each command does, in the five-step order: load, check, plan the probes in rounds, run them
on an executor, run the checks on what they recorded, verify the fixes, and return a Report.

The CLI (cli.py) only parses options and renders; everything here returns data.
"""
from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .catalogue import Severity, Step, parse_codes
from .checks import codes_for_step, run_checks
from .data import ArrayData, Dataset, load_dataset, load_from_spec, prepare_arrays
from .errors import DataError, ModelBuildError, UsageError
from .report import Finding, Report
from .spec import Spec, load_spec

# ---- probe lengths and plans (each a named constant; the budget can only shorten them) --------
LR_PROBE_STEPS = 150          # steps per lr probe: long enough for the smoothed curve to show its trend on small data
BASELINE_MAX_STEPS = 300      # the train/validation probe: the configured epochs, capped here
BASELINE_MIN_STEPS = 100      # ... and at least this many, so curves have a shape
VAL_POINTS = 12               # validation evaluations along the baseline probe
BATCH_FACTORS = (0.25, 4.0)   # batch-size probe: configured / 4 and x 4 (seeds/003: try smaller batches)
BATCH_SAMPLES_EPOCHS = 10     # batch probes see the same number of samples: ~10 passes over the data,
BATCH_SAMPLES_STEPS = 150     # ... or 150 steps at the configured batch, whichever is less (the cost stays bounded)
SUBSET_ROWS = 256             # M208: the small training subset the model must be able to fit
SUBSET_STEPS = 300
TINY_ROWS = 10                # G407: seeds/000 Q2 "使用小规模数据测试训练流程(如仅10条样本)"
TINY_STEPS = 200
INIT_VARIANTS = ("default", "he", "xavier", "lecun", "orthogonal")
DEFAULT_BUDGET_S = 120.0      # full-report's default wall-clock budget; small tabular data needs a few seconds
VERIFY_IMPROVEMENT = 0.10     # a fix is "verified" when its probe improves the compared quantity by >= 10%


@dataclass
class Options:
    config: str | None = None
    data: str | None = None
    target: str | None = None
    task: str | None = None
    val: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    device: str | None = None
    seed: int | None = None
    budget: float | None = None
    select: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    max_lr: float = 0.1
    min_lr: float = 1e-4
    steps: int | None = None
    executor: str = "local"
    ray_address: str | None = None
    gpus_per_probe: float | None = None
    write_fixed: str | None = None
    quiet: bool = False
    progress: bool = False          # show rich progress bars on stderr


# ---- progress --------------------------------------------------------------------------------

class Progress:
    """A rich progress bar on stderr (only on a terminal and without --quiet)."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeElapsedColumn
            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("probes", total=0)

    def plan(self, n: int, what: str) -> None:
        if self.bar:
            t = self.bar.tasks[0]
            self.bar.update(self.task, total=(t.total or 0) + n, description=what)

    def done(self, label: str) -> None:
        if self.bar:
            self.bar.update(self.task, advance=1, description=label)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


# ---- the session: what every command shares -----------------------------------------------------

class Session:
    def __init__(self, command: str, opts: Options):
        from .executor import BudgetClock
        self.command = command
        self.opts = opts
        self.report = Report(command)
        self.clock = BudgetClock(opts.budget)
        self.t0 = time.perf_counter()
        self.select = opts.select
        self.ignore = opts.ignore
        self.progress = Progress(opts.progress and not opts.quiet)
        self.spec: Spec | None = None
        self.dataset: Dataset | None = None
        self.arrays: ArrayData | None = None
        self.data = None            # probe.DeviceData
        self.executor = None
        self.ctx = None             # checks.context.ProbeContext

    # -- spec and data --
    def load_spec(self, path: str | None) -> Spec:
        spec = load_spec(path)
        o = self.opts
        changes: dict[str, Any] = {}
        if o.lr is not None:
            changes["optimizer.lr"] = o.lr
        if o.batch_size is not None:
            changes["training.batch_size"] = o.batch_size
        if o.device is not None:
            changes["training.device"] = o.device
        if o.seed is not None:
            changes["training.seed"] = o.seed
        if o.task is not None:
            changes["task"] = o.task
        try:
            spec = spec.with_overrides(**changes) if changes else spec
        except Exception as err:  # pydantic validation of an override
            raise UsageError(f"command-line override: {str(err).splitlines()[-1].strip()}") from None
        self.spec = spec
        self.report.inputs["config"] = display_path(path)
        return spec

    @property
    def seed(self) -> int:
        if self.spec is not None:
            return self.spec.training.seed
        return self.opts.seed or 0

    def load_data(self, spec: Spec | None) -> Dataset:
        o = self.opts
        if spec is not None:
            ds = load_from_spec(spec, data_path=o.data, target=o.target, val_path=o.val, task=o.task, seed=o.seed)
        else:
            if not o.data:
                raise UsageError("no data: pass a data file (or --config SPEC)")
            ds = load_dataset(o.data, o.target, val_path=o.val, task=o.task, seed=o.seed or 0)
        self.dataset = ds
        self.report.inputs["data"] = display_path(ds.source)
        if ds.val_source and ds.val_source != "split":
            self.report.inputs["validation"] = display_path(ds.val_source) if os.path.exists(ds.val_source) \
                else ds.val_source
        return ds

    def environment(self, device: str | None = None) -> dict[str, Any]:
        env: dict[str, Any] = {"device": device or "none", "python": platform.python_version(), "seed": self.seed}
        if "torch" in sys.modules:
            import torch
            env["torch"] = torch.__version__.split("+")[0]
            env["threads"] = torch.get_num_threads()
            if device and device.startswith("cuda"):
                env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        self.report.environment.update(env)
        return env

    # -- probes --
    def prepare_probes(self) -> None:
        """Numeric arrays on the device once, and the executor that runs rounds of probes."""
        from .checks.context import ProbeContext
        from .model import resolve_device
        from .probe import DeviceData
        assert self.spec is not None and self.dataset is not None
        self.arrays = prepare_arrays(self.dataset)
        for r in self.arrays.repairs:
            self.report.notes.append(f"probes ran after this repair of the data: {r}")
        device = resolve_device(self.spec.training.device)
        self.data = DeviceData(self.arrays, device)
        self.executor = self._make_executor()
        self.ctx = ProbeContext(spec=self.spec, arrays=self.arrays, device=str(device))
        self.environment(str(device))

    def _make_executor(self):
        from .executor import LocalExecutor

        def done(task, rec):
            self.progress.done(task.label or task.settings.name)
        if self.opts.executor == "ray":
            from .ray_executor import RayExecutor
            return RayExecutor(self.data, self.clock, done, address=self.opts.ray_address,
                               gpus_per_probe=self.opts.gpus_per_probe, spec_dir=self.spec.base_dir)
        if self.opts.executor != "local":
            raise UsageError(f"--executor must be local or ray, got {self.opts.executor!r}")
        return LocalExecutor(self.data, self.clock, done)

    def run_round(self, tasks: list, what: str) -> list:
        if not tasks:
            return []
        self.progress.plan(len(tasks), what)
        return self.executor.run_round(tasks)

    def task(self, key: Any, spec: Spec, label: str, overrides: dict[str, Any] | None = None, **settings: Any):
        from .executor import ProbeTask
        from .probe import ProbeSettings
        settings.setdefault("seed", self.seed)
        settings.setdefault("name", label)
        return ProbeTask(key=key, spec=spec, settings=ProbeSettings(**settings), overrides=dict(overrides or {}),
                         label=label)

    def check(self, letter: str) -> list[Finding]:
        return run_checks(codes_for_step(letter), self.ctx, self.report, self.select, self.ignore)

    def finish(self) -> Report:
        self.progress.close()
        if self.report.interrupted:   # a step whose checks never ran must not read as passed
            for res in self.report.steps.values():
                if res.ran and not res.checks_run and res.status not in ("skipped", "crashed"):
                    res.status, res.reason = "skipped", "interrupted (Ctrl-C) before its checks ran"
        if self.executor is not None:
            self.report.skipped.extend(self.executor.skipped)
            self.report.environment["executor"] = self.executor.name
            self.executor.close()
        self.report.timing["total_s"] = time.perf_counter() - self.t0
        return self.report.finalize()


def display_path(path: str | None) -> str | None:
    """A path as the user would type it: relative to the working directory when it lies below it."""
    if not path:
        return path
    try:
        rel = os.path.relpath(os.path.normpath(os.path.abspath(path)))
    except ValueError:
        return path
    return rel if not rel.startswith("..") else os.path.normpath(path)


def steps_per_epoch(spec: Spec, n_train: int) -> int:
    return max(1, math.ceil(n_train / min(spec.training.batch_size, n_train)))


# ---- check-data --------------------------------------------------------------------------------

def check_data(opts: Options) -> Report:
    """Step 1 only. Unreadable data is a usage error here (exit 2): there is nothing to report on."""
    from .checks.data import run_data_checks
    s = Session("check-data", opts)
    spec = s.load_spec(opts.config) if opts.config else None
    ds = s.load_data(spec)
    n_params = loss_name = n_outputs = None
    if spec is not None:
        loss_name = spec.loss.name
        n_params, n_outputs = _model_size(spec, ds)
    for st in Step:
        s.report.step(st).ran = st == Step.DATA
    run_data_checks(ds, s.report, s.select, s.ignore, n_params=n_params, loss_name=loss_name, n_outputs=n_outputs,
                    spec=spec)
    _require_some_check(s.report)
    s.environment(None)
    return s.finish()


def _model_size(spec: Spec, ds: Dataset) -> tuple[int | None, int | None]:
    """Parameter count and output size of the spec's model, for D111/D107 (None when it does not build)."""
    try:
        import torch
        from .model import build_model, count_parameters
        model = build_model(spec.model, ds.sample_shape, spec.base_dir)
        with torch.no_grad():
            out = model.eval()(torch.zeros((2,) + tuple(ds.sample_shape)))
        return count_parameters(model), int(out.shape[-1]) if out.dim() > 1 else 1
    except (ModelBuildError, UsageError, RuntimeError, ValueError, TypeError):
        return None, None


def _require_some_check(report: Report) -> None:
    if not any(r.checks_run for r in report.steps.values()):
        raise UsageError("no check ran: --select/--ignore leave nothing to run for this command")


# ---- probe-lr ----------------------------------------------------------------------------------

def lr_search(s: Session, steps: int | None = None, alongside: list | None = None,
              on_alongside: Callable[[Any, Any], None] | None = None) -> Any:
    """The seeds' procedure in rounds: the decades (and the configured lr), then a bisection round
    between the last failing and the first working decade, then the recommendation itself if it was
    never probed. Fills s.ctx.lr / lr_records and report.probes["lr"].

    `alongside`: other independent probes to run in the decades' round (full-report's baseline, batch,
    regularisation and optimizer probes), each handed to `on_alongside(task, record)`: one round fewer
    on the critical path of a parallel executor; the same records on the local one."""
    from . import lr_search as L
    spec, o = s.spec, s.opts
    if not (0 < o.min_lr <= o.max_lr):
        raise UsageError(f"--min-lr {o.min_lr:g} must be positive and <= --max-lr {o.max_lr:g}")
    steps = steps or o.steps or LR_PROBE_STEPS
    configured = spec.optimizer.lr
    dec = L.decades(o.max_lr, o.min_lr)
    records: dict[float, Any] = {}

    extra = list(alongside or [])

    def keep(t, rec) -> None:
        if any(t is e for e in extra):
            on_alongside(t, rec)
        elif rec.stopped != "skipped":
            records[t.key] = rec

    def probe(lrs: list[float], what: str, with_extra: bool = False) -> None:
        todo = [lr for lr in lrs if lr not in records]
        tasks = [s.task(lr, spec.with_overrides(**{"optimizer.lr": lr}), f"lr {lr:.3g}", {"optimizer.lr": lr},
                        steps=steps, eval_every=0, record_every=0, instrument=False) for lr in todo]
        tasks = (extra if with_extra else []) + tasks
        for t, rec in zip(tasks, s.run_round(tasks, what)):
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
        result = L.decide(records, dec, configured) if records else L.LrResult(configured=configured)
        result.recommended, result.reason = None, "interrupted (Ctrl-C) before the search finished"
        s.report.probes["lr"] = {**result.to_dict(), "steps_per_probe": steps, "optimizer": spec.optimizer.name}
        raise
    statuses = {lr: L.classify(r) for lr, r in records.items()}
    dec = dec + L.extend_below(records, dec, lambda lrs: probe(lrs, "lr probes: below --min-lr"))
    statuses = {lr: L.classify(r) for lr, r in records.items()}
    ok = L.first_working(statuses, dec)
    if ok is not None and dec.index(ok) > 0:
        above = dec[dec.index(ok) - 1]
        if statuses.get(above) in ("diverged", "unstable", "too-slow", "error"):
            probe(L.bisect_points(above, ok), "lr probes: bisection")
    result = L.decide(records, dec, configured)
    if result.recommended is not None:   # an lr already probed within 5% stands for the recommendation
        near = [lr for lr in records if abs(lr / result.recommended - 1) <= 0.05]
        if near:
            result.recommended = min(near, key=lambda lr: abs(lr / result.recommended - 1))
    if result.recommended is not None and result.recommended not in records:
        probe([result.recommended], "lr probes: recommendation")
        if result.recommended in records and L.classify(records[result.recommended]) != L.WORKING:
            # the capped recommendation did not work: fall back to the best probe that did
            working = [lr for lr, r in records.items() if L.classify(r) == L.WORKING and min(dec) <= lr <= max(dec)]
            best = min(working, key=lambda lr: records[lr].final_loss) if working else None
            result = L.decide({k: v for k, v in records.items() if k != result.recommended}, dec, configured)
            result.recommended = best
        else:
            result.tried = [L.summarize(lr, records[lr], L.classify(records[lr]))
                            for lr in sorted(records, reverse=True)]
    L.mark_verified(result, records, o.min_lr)
    s.ctx.lr, s.ctx.lr_records = result, records
    d = result.to_dict()
    d["steps_per_probe"] = steps
    d["optimizer"] = spec.optimizer.name
    s.report.probes["lr"] = d
    return result


def _probe_command(command: str, opts: Options, step: Step, probes: Callable[[Session], Any],
                   codes: list[str]) -> Report:
    """A one-step probe command: load, build the model, run its probes, run its checks."""
    s = Session(command, opts)
    spec = s.load_spec(opts.config)
    s.load_data(spec)
    for st in Step:
        s.report.step(st).ran = st == step
    try:
        s.prepare_probes()
        if not _model_builds(s):
            return s.finish()
        probes(s)
        run_checks(codes, s.ctx, s.report, s.select, s.ignore)
        _require_some_check(s.report)
    except KeyboardInterrupt:
        s.report.interrupted = True
    return s.finish()


def probe_lr(opts: Options) -> Report:
    return _probe_command("probe-lr", opts, Step.HYPERPARAMETERS, lr_search, ["H300", "H301", "H310"])


def _model_builds(s: Session) -> bool:
    """Build once before any probe: a spec that cannot build is M200 (reported in step 2)."""
    import torch
    from .model import build_model, count_parameters, model_summary
    s.ctx.model_summary = model_summary(s.spec.model)
    try:
        torch.manual_seed(s.seed)
        model = build_model(s.spec.model, s.arrays.sample_shape, s.spec.base_dir)
        with torch.no_grad():
            out = model.eval()(torch.zeros((2,) + tuple(s.arrays.sample_shape)))
        s.ctx.n_params = count_parameters(model)
        s.ctx.n_outputs = int(out.shape[-1]) if out.dim() > 1 else 1
        return True
    except ModelBuildError as err:
        s.ctx.build_error = err
        s.report.step(Step.MODEL).ran = True
        run_checks(["M200"], s.ctx, s.report, [], [])
        for st in (Step.HYPERPARAMETERS, Step.GRADIENTS):
            s.report.skip_step(st, "the model does not build (M200)")
        return False


# ---- probe-init --------------------------------------------------------------------------------

def init_variants(s: Session, steps: int | None = None) -> dict[str, Any]:
    from . import lr_search as L
    spec = s.spec
    configured = str(spec.model.init)
    names = [configured] + [v for v in INIT_VARIANTS if v != configured]
    tasks = []
    for name in names:
        init = spec.model.init if name == configured else name
        tasks.append(s.task(name, spec.with_overrides(**{"model.init": init}), f"init {name}", {"model.init": name},
                            steps=steps or s.opts.steps or LR_PROBE_STEPS, eval_every=0, record_every=0))
    records = {t.key: r for t, r in zip(tasks, s.run_round(tasks, "init probes")) if r.stopped != "skipped"}
    s.ctx.init_variants = records
    if configured in records:
        s.ctx.init = records[configured]
    variants = []
    for name, rec in records.items():
        layers = [{"layer": layer, "act_std": st.get("act_std"), "grad_norm": st.get("grad_norm")}
                  for layer, st in rec.init_layers.items() if rec.layer_kinds.get(layer) in ("linear", "conv", "recurrent")]
        variants.append({"init": name, "configured": name == configured, "status": L.classify(rec),
                         "initial_loss": rec.initial_loss, "final_loss": rec.final_loss, "layers": layers})
    ok = [v for v in variants if v["final_loss"] is not None and v["status"] != "diverged"]
    best = min(ok, key=lambda v: v["final_loss"]) if ok else None
    conf = next((v for v in variants if v["configured"]), None)
    out = {"variants": variants, "best": best["init"] if best else None, "configured": configured,
           "lr": spec.optimizer.lr, "steps_per_probe": steps or s.opts.steps or LR_PROBE_STEPS}
    if best and conf:
        if conf["final_loss"] is None:
            out["comparison"] = f"{best['init']} trains to loss {best['final_loss']:.3g}; the configured init {configured} diverged"
        elif best["init"] != configured:
            out["comparison"] = (f"{best['init']} trains to loss {best['final_loss']:.3g} vs {conf['final_loss']:.3g} "
                                 f"with the configured {configured} ({conf['final_loss'] / max(best['final_loss'], 1e-12):.1f}x lower)")
        else:
            out["comparison"] = f"the configured init {configured} trains best (loss {conf['final_loss']:.3g})"
    s.report.probes["init"] = out
    return out


def probe_init(opts: Options) -> Report:
    return _probe_command("probe-init", opts, Step.MODEL, init_variants, ["M204", "M205"])


# ---- full-report -----------------------------------------------------------------------------------

def full_report(opts: Options, example: bool = False) -> Report:
    from .checks.data import run_data_checks
    if opts.budget is None:
        opts.budget = DEFAULT_BUDGET_S
    s = Session("full-report", opts)
    spec = s.load_spec(opts.config)
    if example:
        s.report.notes.append("This is nn-doctor's bundled example (wine data with deliberate faults). "
                              "Run it on your own spec: nn-doctor full-report --config my_spec.yaml")
    # Step 1: data. An unreadable file is D100 here, not an exit 2: the rest of the report says what it can.
    try:
        ds = s.load_data(spec)
    except DataError as err:
        s.report.mark_checked("D100")
        s.report.add(Finding("D100", str(err), "fix the data path or the file named in the message",
                             {"path": str(spec.data.path)}))
        s.report.inputs.setdefault("data", str(spec.data.path))
        _static_model_checks_without_data(s)
        for st in (Step.HYPERPARAMETERS, Step.GRADIENTS, Step.RESOURCES):
            s.report.skip_step(st, "the data could not be read (D100)")
        s.environment(None)
        return s.finish()
    try:
        n_params, n_outputs = _model_size(spec, ds)
        run_data_checks(ds, s.report, s.select, s.ignore, n_params=n_params, loss_name=spec.loss.name,
                        n_outputs=n_outputs, spec=spec)
        try:
            s.prepare_probes()
        except DataError as err:
            s.report.notes.append(f"probes skipped: {err}")
            _static_model_checks_without_data(s)
            for st in (Step.HYPERPARAMETERS, Step.GRADIENTS, Step.RESOURCES):
                s.report.skip_step(st, f"no numeric data to probe: {err}")
            return s.finish()
        s.report.step(Step.DATA).summary = ds.describe()
        # Step 2: model structure (static), then everything that needs probes.
        s.report.step(Step.MODEL)
        if not _model_builds(s):
            s.check("M")  # the static checks still say what they can
            s.report.skip_step(Step.RESOURCES, "the model does not build (M200)")
            return s.finish()
        step_fn = _load_user_step(s)      # before the probes: an import error is exit 2 at once
        _run_probes(s)
        if step_fn is not None:
            from .user_step import diagnose_step
            s.progress.plan(1, "checking your training step")
            s.ctx.user_step = diagnose_step(step_fn, s.spec, s.data, s.seed, ref=s.spec.training.step)
            s.report.probes["user_step"] = s.ctx.user_step.to_dict()
            s.progress.done("your training step")
        for letter in ("M", "H", "G"):
            s.check(letter)
        _resources(s)
        s.check("R")
        _verify_fixes(s)
        if opts.write_fixed:
            _write_fixed(s, opts.write_fixed)
    except KeyboardInterrupt:
        s.report.interrupted = True
    return s.finish()


def _load_user_step(s: Session):
    """The spec's training.step (package.module:function): importing it runs the user's code."""
    if not s.spec.training.step:
        return None
    from .user_step import load_step
    return load_step(s.spec.training.step, s.spec.base_dir)


def _static_model_checks_without_data(s: Session) -> None:
    from .checks.context import ProbeContext
    from .model import model_summary
    s.ctx = ProbeContext(spec=s.spec, model_summary=model_summary(s.spec.model))
    s.report.step(Step.MODEL).summary = "static checks only (no data)"
    run_checks(["M202", "M203", "M204", "M206"], s.ctx, s.report, s.select, s.ignore)


def _run_probes(s: Session) -> None:
    """Every probe full-report needs, in rounds of independent probes."""
    from . import lr_search as L
    spec, ctx, arrays = s.spec, s.ctx, s.arrays
    n = len(arrays.X)
    spe = steps_per_epoch(spec, n)
    base_steps = int(min(BASELINE_MAX_STEPS, max(BASELINE_MIN_STEPS, spec.training.epochs * spe)))
    eval_every = max(1, base_steps // VAL_POINTS)
    bs = min(spec.training.batch_size, n)

    # The baseline (configured spec: curves, gradients, init stats) and the probes that depend on nothing
    # else: batch sizes, regularisation, optimizer comparison. They run in the lr decades' round.
    r1 = [s.task("baseline", spec, "baseline (configured spec)", steps=base_steps, eval_every=eval_every,
                 record_every=max(1, base_steps // 10))]
    samples = min(BATCH_SAMPLES_EPOCHS * n, BATCH_SAMPLES_STEPS * bs)
    for factor in (1.0,) + BATCH_FACTORS:
        b = int(max(8, min(n, round(bs * factor))))
        if factor != 1.0 and b == bs:
            continue
        steps = int(max(20, round(samples / b)))
        r1.append(s.task(("batch", b), spec.with_overrides(**{"training.batch_size": b}), f"batch {b}",
                         {"training.batch_size": b}, steps=steps, batch_size=b, eval_every=max(1, steps // 5),
                         record_every=0, instrument=False))
    weaker = _weaker_regularization(spec)
    if weaker:
        r1.append(s.task(("reg", "weaker"), spec.with_overrides(**weaker), "weaker regularisation", weaker,
                         steps=base_steps, eval_every=eval_every, record_every=0, instrument=False))
    if spec.optimizer.name == "sgd":
        adam = {"optimizer.name": "adam", "optimizer.lr": 1e-3, "optimizer.momentum": 0.0}
        r1.append(s.task(("opt", "adam"), spec.with_overrides(**adam), "optimizer adam", adam,
                         steps=base_steps, eval_every=eval_every, record_every=0, instrument=False))
    from .transformer_probes import extra_tasks
    r1 += extra_tasks(s, base_steps, eval_every)

    def keep(t, rec) -> None:
        if rec.stopped == "skipped":
            return
        if t.key[0] == "extra":
            ctx.extra[t.key[1]] = rec
        elif t.key == "baseline":
            ctx.baseline = ctx.init = rec
            ctx.regularization["configured"] = rec
            ctx.optimizers["configured"] = rec
        elif t.key[0] == "batch":
            ctx.batch[t.key[1]] = rec
        elif t.key[0] == "reg":
            ctx.regularization["weaker"] = rec
        elif t.key[0] == "opt":
            ctx.optimizers["adam"] = rec

    # Rounds 1-3: the lr search, its decades in one round with the probes above (none depends on another).
    lr = lr_search(s, alongside=r1, on_alongside=keep)
    if ctx.baseline is not None and "configured" not in ctx.optimizers:
        ctx.optimizers["configured"] = ctx.baseline
    # Round 5: a working lr for the capacity and tiny-batch tests: the recommendation, else the configured lr.
    ctx.working_lr = lr.recommended or spec.optimizer.lr
    working = spec.with_overrides(**{"optimizer.lr": ctx.working_lr})
    r5 = [s.task("subset", working, f"fit {min(SUBSET_ROWS, n)} rows", {"optimizer.lr": ctx.working_lr},
                 steps=SUBSET_STEPS, subset=SUBSET_ROWS, eval_every=0, record_every=0, instrument=False),
          s.task("tiny", _no_dropout(working), f"overfit {TINY_ROWS} rows", {"optimizer.lr": ctx.working_lr},
                 steps=TINY_STEPS, subset=TINY_ROWS, batch_size=TINY_ROWS, eval_every=0, record_every=0,
                 instrument=False)]
    for t, rec in zip(r5, s.run_round(r5, "probes: capacity and tiny batch")):
        if rec.stopped != "skipped":
            setattr(ctx, "subset_fit" if t.key == "subset" else "tiny", rec)
    _ = L  # the statuses are attached to report.probes by lr_search


def _weaker_regularization(spec: Spec) -> dict[str, Any] | None:
    """Weight decay and dropout set to zero (the probe for H303); None when neither is set."""
    changes: dict[str, Any] = {}
    if spec.optimizer.weight_decay > 0:
        changes["optimizer.weight_decay"] = 0.0
    if spec.model.layers and any(l.type.startswith("dropout") and (l.kwargs.get("p", 0.5) > 0)
                                 for l in spec.model.layers):
        changes["model.layers"] = [
            {**l.model_dump(exclude_none=True), "p": 0.0} if l.type.startswith("dropout") else l.model_dump(exclude_none=True)
            for l in spec.model.layers]
    return changes or None


def _no_dropout(spec: Spec) -> Spec:
    """The tiny-batch test measures whether the model can memorise; dropout and weight decay would only
    hold it back."""
    if spec.optimizer.weight_decay:
        spec = spec.with_overrides(**{"optimizer.weight_decay": 0.0})
    if not spec.model.layers or not any(l.type.startswith("dropout") for l in spec.model.layers):
        return spec
    return spec.with_overrides(**{"model.layers": [l.model_dump(exclude_none=True) for l in spec.model.layers
                                                   if not l.type.startswith("dropout")]})


# ---- step 5: resources -------------------------------------------------------------------------------

def _resources(s: Session) -> None:
    """Memory and throughput facts for R501-R503; on CUDA, the configured batch is tried for real and an
    out-of-memory is caught, the memory freed, and the largest batch that fits found by bisection."""
    from .probe import memory_probe
    ctx, spec = s.ctx, s.spec
    bs = spec.training.batch_size
    mem: dict[str, Any] = {"batch_size": bs, "device": ctx.device}
    if s.data.device.type == "cuda":
        res = memory_probe(spec, s.data, bs, s.seed)
        mem.update(res)
        if res.get("oom"):
            lo, hi = 1, bs   # lo fits (assumed; checked), hi does not
            if memory_probe(spec, s.data, 1, s.seed).get("oom"):
                mem["max_batch"] = 0
            else:
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if memory_probe(spec, s.data, mid, s.seed).get("oom"):
                        hi = mid
                    else:
                        lo = mid
                mem["max_batch"] = lo
    else:
        import resource
        mem["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ctx.memory = mem
    ctx.env = dict(s.report.environment)


# ---- verified fixes -----------------------------------------------------------------------------------

def _verify_fixes(s: Session) -> None:
    """For the first error in step order and every other error (and first_fix warning) whose fix is a
    spec change, run the baseline probe again with the fix applied and record the result in `verified`."""
    rep, ctx = s.report, s.ctx
    rep.finalize()
    first = rep.first_fix
    candidates = [f for f in rep.findings if f.patch and (f.severity == Severity.ERROR or f.code == first)]
    seen: dict[str, Any] = {}
    tasks, owners = [], []
    base = ctx.baseline
    if base is None:
        return
    for f in candidates:
        key = repr(sorted(f.patch.items(), key=lambda kv: kv[0]))
        if key in seen:
            owners[seen[key]].append(f)
            continue
        try:
            patched = s.spec.with_overrides(**f.patch)
        except Exception as err:
            f.verified = {"probe": _patch_text(f.patch), "result": f"not tested: the patch does not apply ({err})"}
            continue
        seen[key] = len(tasks)
        owners.append([f])
        st = base.settings
        tasks.append(s.task(key, patched, f"verify {f.code}", f.patch, steps=st.get("steps", BASELINE_MIN_STEPS),
                            eval_every=st.get("eval_every", 25), record_every=0, instrument=False))
    for t, rec, fs in zip(tasks, s.run_round(tasks, "probes: verifying fixes"), owners):
        for f in fs:
            f.verified = _compare(base, rec, f.patch, s.spec)


def _patch_text(patch: dict[str, Any]) -> str:
    parts = []
    for k, v in patch.items():
        if k == "model.layers":
            parts.append("model.layers changed")
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def _compare(before, after, patch: dict[str, Any], spec: Spec) -> dict[str, Any]:
    """Judge a fix by the loss when the loss is comparable, else by a task metric."""
    out: dict[str, Any] = {"probe": _patch_text(patch), "steps": after.steps_run}
    if after.stopped == "skipped":
        out["result"] = "not tested: budget exhausted"
        return out
    if after.error:
        out["result"] = f"the fixed spec failed to train: {after.error}"
        out["improved"] = False
        return out
    loss_changes = any(k.startswith("loss") or k in ("data.normalize_target",) for k in patch)
    metric = "balanced_accuracy" if "balanced_accuracy" in after.metrics else "r2" if "r2" in after.metrics else None
    use_metric = loss_changes and metric is not None
    if use_metric:
        b, a = before.metrics.get(metric), after.metrics.get(metric)
        out.update({"metric": metric, "metric_before": b, "metric_after": a})
        improved = a is not None and (b is None or a > b + VERIFY_IMPROVEMENT * max(abs(b), 0.05))
    else:
        b = before.final_val_loss if before.final_val_loss is not None and after.final_val_loss is not None \
            else before.final_loss
        a = after.final_val_loss if before.final_val_loss is not None and after.final_val_loss is not None \
            else after.final_loss
        out.update({"loss": "validation" if after.final_val_loss is not None and before.final_val_loss is not None
                    else "training", "loss_before": b, "loss_after": a})
        improved = a is not None and (b is None or a < b * (1 - VERIFY_IMPROVEMENT))
        if metric:
            out.update({"metric": metric, "metric_before": before.metrics.get(metric),
                        "metric_after": after.metrics.get(metric)})
    out["improved"] = bool(improved)
    if not improved:
        out["result"] = "the fix did not clearly help in a probe of the same length"
    return out


def _write_fixed(s: Session, path: str) -> None:
    """Write the spec with every verified fix applied (in step order), paths kept valid from the new place."""
    import yaml
    patch: dict[str, Any] = {}
    applied = []
    for f in sorted(s.report.findings, key=lambda f: (int(f.step), f.code)):
        if f.patch and f.verified and f.verified.get("improved"):
            patch.update(f.patch)
            applied.append(f.code)
    fixed = s.spec.with_overrides(**patch) if patch else s.spec
    d = fixed.to_yaml_dict()
    out = Path(path).resolve()
    for key in ("path", "val_path"):
        p = d.get("data", {}).get(key)
        if p and not Path(p).is_absolute() and s.spec.base_dir:
            d["data"][key] = os.path.relpath(Path(s.spec.base_dir) / p, out.parent)
    header = (f"# written by nn-doctor full-report --write-fixed from {s.report.inputs.get('config')}\n"
              f"# verified fixes applied: {', '.join(applied) if applied else 'none'}\n")
    try:
        out.write_text(header + yaml.safe_dump(d, sort_keys=False))
    except OSError as err:
        raise UsageError(f"--write-fixed {path}: cannot write: {err.strerror}") from None
    s.report.probes["fixed_spec"] = {"path": str(path), "applied": applied}
