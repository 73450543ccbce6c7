"""Executors run rounds of independent probes.

A probe task is pure: (spec, settings, overrides) + the command's data -> ProbeRecord. Commands plan
their probes in rounds of independent tasks and hand each round to an executor. The local executor
(the default) runs them in-process, one after the other. A Ray executor (nn_doctor.ray_executor, the
optional `ray` extra) fans the same tasks out over a cluster.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .probe import DeviceData, ProbeRecord, ProbeSettings, run_probe
from .spec import Spec


@dataclass
class ProbeTask:
    key: Any                       # what the command calls this probe (an lr, an init name, ...)
    spec: Spec                     # the spec with this probe's overrides applied
    settings: ProbeSettings
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str = ""                # shown in the progress bar


class BudgetClock:
    """The command's wall-clock budget; probes not started before it runs out are skipped (and named)."""

    def __init__(self, budget_s: float | None):
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float | None:
        return None if self.budget_s is None else self.budget_s - self.elapsed()

    def exhausted(self) -> bool:
        left = self.left()
        return left is not None and left <= 0


def skipped_record(task: ProbeTask, why: str) -> ProbeRecord:
    return ProbeRecord(name=task.settings.name, settings={}, overrides=task.overrides, stopped="skipped",
                       error=why)


class LocalExecutor:
    name = "local"

    def __init__(self, data: DeviceData, clock: BudgetClock | None = None,
                 on_done: Callable[[ProbeTask, ProbeRecord], None] | None = None):
        self.data = data
        self.clock = clock or BudgetClock(None)
        self.on_done = on_done
        self.skipped: list[str] = []
        self.partial: tuple[list[ProbeTask], list[ProbeRecord]] = ([], [])

    def run_round(self, tasks: list[ProbeTask]) -> list[ProbeRecord]:
        out: list[ProbeRecord] = []
        self.partial = (tasks, out)      # what finished, if Ctrl-C lands mid-round
        for task in tasks:
            if self.clock.exhausted():
                rec = skipped_record(task, "budget exhausted")
                self.skipped.append(f"probe {task.label or task.settings.name}: budget exhausted")
            else:
                left = self.clock.left()
                if left is not None:
                    task.settings.budget_s = min(task.settings.budget_s or left, left)
                rec = run_probe(task.spec, self.data, task.settings, task.overrides)
            out.append(rec)
            if self.on_done:
                self.on_done(task, rec)
        return out

    def close(self) -> None:
        pass
