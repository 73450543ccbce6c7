"""What every command shares: its options, the progress bar, and the Session (spec, data, the probe
executor, the budget, the report being built). Nothing here judges: checks judge, commands (doctor.py)
decide what runs.
"""
from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .checks import codes_for_step, run_checks
from .data import ArrayData, Dataset, load_dataset, load_from_spec, prepare_arrays
from .errors import UsageError
from .report import Finding, Report
from .spec import Spec, load_spec


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
        self.forked = False         # a treatment-loop copy: finish() leaves the shared executor open

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
        self.report.notes.extend(ds.notes)
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
        d = self.spec.data
        # data.missing: keep leaves NaN/Inf in your own training; the probes drop those rows instead (and say so),
        # so every other step can still be checked - D101/D102 report the values themselves
        self.arrays = prepare_arrays(self.dataset, missing="drop" if d.missing == "keep" else d.missing,
                                     label_map=d.label_map)
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

    def run_round(self, tasks: list, what: str, background: list | None = None) -> list:
        """The tasks' records. `background`: tasks also sent now whose records come from collect_background(),
        so that a parallel executor runs them in the slots later rounds leave idle."""
        if not tasks and not background:
            return []
        self.progress.plan(len(tasks) + len(background or []), what)
        if background:
            return self.executor.run_round(tasks, what, background=background)
        return self.executor.run_round(tasks, what)

    def collect_background(self) -> list:
        """(task, record) of every background task sent so far, once they are done."""
        return self.executor.collect_background()

    def task(self, key: Any, spec: Spec, label: str, overrides: dict[str, Any] | None = None, **settings: Any):
        from .executor import ProbeTask
        from .probe import ProbeSettings
        settings.setdefault("seed", self.seed)
        settings.setdefault("name", label)
        return ProbeTask(key=key, spec=spec, settings=ProbeSettings(**settings), overrides=dict(overrides or {}),
                         label=label)

    def check(self, letter: str) -> list[Finding]:
        return run_checks(codes_for_step(letter), self.ctx, self.report, self.select, self.ignore)

    def fork(self, spec: Spec) -> "Session":
        """A session for diagnosing a repaired spec (the treatment loop): the same data on the device, executor,
        budget clock and progress bar; its own spec, report and check context."""
        from copy import copy
        from .checks.context import ProbeContext
        child = copy(self)
        child.spec = spec
        child.report = Report(self.report.command)
        child.report.inputs = dict(self.report.inputs)
        child.ctx = ProbeContext(spec=spec, arrays=self.arrays, device=self.ctx.device if self.ctx else "cpu")
        child.forked = True
        return child

    def finish(self) -> Report:
        self.progress.close()
        if self.report.interrupted:   # a step whose checks never ran must not read as passed
            for res in self.report.steps.values():
                if res.ran and not res.checks_run and res.status not in ("skipped", "crashed"):
                    res.status, res.reason = "skipped", "interrupted (Ctrl-C) before its checks ran"
        if self.executor is not None:
            self.report.skipped.extend(self.executor.skipped)
            self.report.environment["executor"] = self.executor.name
            rounds = getattr(self.executor, "rounds", None)
            if rounds:   # the critical path (rounds run one after another) against the probes' own time
                self.report.timing["rounds"] = rounds
                self.report.timing["critical_path_s"] = sum(r.get("wall_s", 0.0) for r in rounds)
                self.report.timing["probe_total_s"] = sum(r.get("probe_s", 0.0) for r in rounds)
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


def configured_steps(spec: Spec, n_train: int) -> int:
    """The updates of the training the user will run: epochs x ceil(rows / batch)."""
    return spec.training.epochs * steps_per_epoch(spec, n_train)
