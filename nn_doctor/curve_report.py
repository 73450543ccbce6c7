"""`nn-doctor check-curves LOG.csv`: the train/validation reading of a real training's loss curves.

The log is a CSV with a training-loss column and optionally a validation-loss column (Lightning's and
Keras' CSVLogger write such files; curves.read_curve_log finds the columns and the x axis). The report
covers steps 3 and 4 as far as two curves can tell:

- H306 loss-curve-pattern: which of the five patterns (learning, overfitting, data problem, plateau,
  diverging) the curves show, with the seeds' advice. It is raised to a warning for the two patterns no
  other code reports (diverging without NaN/Inf, data problem);
- H304 overfitting, H305 underfitting (both losses still above HIGH_LOSS_FRACTION of their start), H308
  not converged (the training loss still falling steeply at the end);
- G400 non-finite-training: the first step (or epoch) where a loss is NaN/Inf. A log has no per-layer
  data: the finding says so and points at nn_doctor.Monitor, which finds the layer.

`check-curves` turns the log into a record (curves.CurveLog) and runs the same registered checks as
full-report and the Monitor on it (context source "log"): the codes it can report are those whose check
needs only the curves (checks.PROVIDES["log"]). The checks import torch (they share modules with the probe
checks); reading the log does not. Unreadable logs raise UsageError (exit 2), as other unreadable inputs do.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import curves
from .catalogue import Step
from .report import Report
from .series import thin

LOGGED_STEPS = (Step.HYPERPARAMETERS, Step.GRADIENTS)   # what two loss curves can tell
LOG_PLOT_POINTS = 500     # logged points kept per curve for the HTML plot (enough for a 700 px wide line)


def _points(series: curves.Series) -> list[list[Any]]:
    """[[x, loss], ...] as logged (None for a non-finite value): every k-th point of a long log, and the last."""
    pts = list(series)
    kept = thin(pts, LOG_PLOT_POINTS)["values"]
    if pts and kept[-1] is not pts[-1]:
        kept.append(pts[-1])
    return [[x, y] for x, y in kept]


def check_curves(path: str | Path, train_col: str | None = None, val_col: str | None = None,
                 step_col: str | None = None, select: list[str] | None = None,
                 ignore: list[str] | None = None) -> Report:
    """Report (command "check-curves") on a training log CSV: steps 3 and 4 from its loss curves.

    UsageError (exit 2) when the file cannot be read or has no training-loss column.
    """
    from .checks import codes_for_source, run_checks
    from .checks.context import ProbeContext
    from .errors import UsageError

    t0 = time.perf_counter()
    select, ignore = list(select or []), list(ignore or [])
    log = curves.CurveLog.read(path, train_col, val_col, step_col)
    info = log.info
    report = Report("check-curves")
    report.inputs = {"log": str(path), "train_col": info["train_col"], "val_col": info["val_col"],
                     "x": info["step_col"]}
    for st in Step:
        report.step(st).ran = st in LOGGED_STEPS
    short = len(log.train) < curves.MIN_POINTS
    if short:
        for st in LOGGED_STEPS:
            report.skip_step(st, f"the training loss has {len(log.train)} point(s); a curve needs {curves.MIN_POINTS}")
    found = run_checks(codes_for_source("log", LOGGED_STEPS), ProbeContext(curve=log, source="log"), report,
                       select, ignore)
    h306 = next((f for f in found if f.code == "H306"), None)
    if not short:
        pattern = h306.evidence["pattern"] if h306 is not None else None
        report.step(Step.HYPERPARAMETERS).summary = (
            f"{info['train_points']} training points" + (f", {info['val_points']} validation" if log.val else "")
            + (f", pattern {pattern}" if pattern else ""))
        judged = {k: h306.evidence[k] for k in ("pattern", "reason", "still_falling")} if h306 is not None else {}
        report.probes["curves"] = {**judged,
                                   **{k: info[k] for k in ("path", "rows", "train_col", "val_col", "step_col",
                                                           "train_points", "val_points", "unparsed_cells")},
                                   # the logged values as read (thinned), for the HTML report's plot
                                   "train": _points(log.train), "val": _points(log.val) if log.val else None}
    if not any(r.checks_run for r in report.steps.values()):
        raise UsageError("no check ran: --select/--ignore leave nothing to run for this command")
    report.timing["total_s"] = time.perf_counter() - t0
    return report.finalize()
