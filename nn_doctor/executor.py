"""Executors run rounds of independent probes.

A probe task is pure: (spec, settings, overrides) + the command's data -> ProbeRecord. Commands plan
their probes in rounds of independent tasks and hand each round to an executor. The local executor
(the default) runs them in-process, one after the other. A Ray executor (nn_doctor.ray_executor, the
optional `ray` extra) fans the same tasks out over a cluster, side by side.

Every executor keeps `rounds`: one entry per round it ran, {"round": its label, "probes": how many
probes ran (skipped ones not counted), "wall_s": the round's wall time, "probe_s": the sum of those
probes' own wall times}. Σ wall_s is the command's critical path through its probes, Σ probe_s what
the same probes cost one after another; on the local executor the two are nearly equal.

torch is imported with the probes (nn_doctor.probe), not with this module: the CLI checks a Ray
cluster's address before it pays for torch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .probe import DeviceData, ProbeRecord, ProbeSettings
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
    from .probe import ProbeRecord
    return ProbeRecord(name=task.settings.name, settings={}, overrides=task.overrides, stopped="skipped",
                       error=why)


def round_timing(label: str, wall_s: float, records) -> dict[str, Any]:
    """One entry of an executor's `rounds` (records: those that came back; None for none yet)."""
    ran = [r for r in records if r is not None and r.stopped != "skipped"]
    return {"round": label, "probes": len(ran), "wall_s": wall_s, "probe_s": sum(r.wall_s for r in ran)}


def timing_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """What a report's timing shows of an executor's rounds: the rounds, the critical path (Σ round walls:
    what the command waited for its probes) and the total probe time (what they cost one after another)."""
    return {"rounds": list(rounds), "critical_path_s": sum(r["wall_s"] for r in rounds),
            "probe_total_s": sum(r["probe_s"] for r in rounds)}


class RoundTimer:
    """`with RoundTimer(executor, label, tasks, records):` appends the round's timing to executor.rounds
    when the block ends, also when it ends by Ctrl-C (then with the probes that finished). A round of no
    tasks is not recorded; an unnamed one is called "round N"."""

    def __init__(self, executor, label: str | None, tasks: list, records: list):
        self.executor, self.tasks, self.records = executor, tasks, records
        self.label = label or f"round {len(executor.rounds) + 1}"

    def __enter__(self) -> "RoundTimer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.tasks:
            self.executor.rounds.append(round_timing(self.label, time.perf_counter() - self.t0, self.records))


class LocalExecutor:
    name = "local"

    def __init__(self, data: DeviceData, clock: BudgetClock | None = None,
                 on_done: Callable[[ProbeTask, ProbeRecord], None] | None = None):
        self.data = data
        self.clock = clock or BudgetClock(None)
        self.on_done = on_done
        self.skipped: list[str] = []
        self.rounds: list[dict[str, Any]] = []
        self.partial: tuple[list[ProbeTask], list[ProbeRecord]] = ([], [])
        self._background: list[tuple[ProbeTask, ProbeRecord]] = []

    def run_round(self, tasks: list[ProbeTask], label: str | None = None,
                  background: list[ProbeTask] | None = None) -> list[ProbeRecord]:
        """Run the tasks one after the other. `background` tasks (whose records the command needs only at its
        end: collect_background) run first: one at a time there is no idle slot for them to fill later."""
        from .probe import run_probe
        background = list(background or [])
        order = background + list(tasks)
        out: list[ProbeRecord] = []
        self.partial = (order, out)      # what finished, if Ctrl-C lands mid-round
        with RoundTimer(self, label, order, out):
            for task in order:
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
        self._background.extend(zip(background, out[:len(background)]))
        return out[len(background):]

    def collect_background(self) -> list[tuple[ProbeTask, ProbeRecord]]:
        done, self._background = self._background, []
        return done

    def close(self) -> None:
        pass
