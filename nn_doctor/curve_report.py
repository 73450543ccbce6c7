"""`nn-doctor check-curves LOG.csv`: the seeds/003 reading of a real training's loss curves.

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

Nothing here imports torch. Unreadable logs raise UsageError (exit 2), as other unreadable inputs do.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import curves
from .catalogue import Step, enabled
from .report import Finding, Report
from .series import thin

CURVE_CODES = ["H304", "H305", "H306", "H308", "G400"]
RAISED_PATTERNS = {"diverging", "data-problem"}   # H306 as a warning: no other finding names these
LOG_PLOT_POINTS = 500     # logged points kept per curve for the HTML plot (enough for a 700 px wide line)


def _points(series: curves.Series) -> list[list[Any]]:
    """[[x, loss], ...] as logged (None for a non-finite value): every k-th point of a long log, and the last."""
    pts = list(series)
    kept = thin(pts, LOG_PLOT_POINTS)["values"]
    if pts and kept[-1] is not pts[-1]:
        kept.append(pts[-1])
    return [[x, y] for x, y in kept]


def _g(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def curve_findings(train: curves.Series, val: curves.Series | None, what: str = "logged run",
                   axis: str = "step", extra: dict[str, Any] | None = None) -> tuple[curves.CurveVerdict, list[Finding]]:
    """The verdict on (train, val) and its findings. `what` names the run in messages ("logged run"),
    `axis` the x column ("step", "epoch"); `extra` is added to every finding's evidence."""
    verdict = curves.classify_curves(train, val)
    ev0 = {"pattern": verdict.pattern, "reason": verdict.reason, **verdict.evidence, **(extra or {})}
    t = verdict.evidence.get("train") or {}
    v = verdict.evidence.get("val") or {}
    out: list[Finding] = []
    nf = verdict.evidence.get("first_nonfinite")
    span = f"{len(train)}-point {what}" if train else what

    sev = "warning" if verdict.pattern in RAISED_PATTERNS and nf is None else None
    h306_ev = dict(ev0)
    if sev:
        h306_ev["severity_reason"] = f"the {verdict.pattern} pattern is reported by no other code"
    out.append(Finding("H306", f"{verdict.pattern} over the {span}: {verdict.reason}", verdict.seeds_advice,
                       h306_ev, severity=sev))

    if nf is not None:
        curve = "training" if nf["curve"] == "train" else "validation"
        series = train if nf["curve"] == "train" else (val or [])
        before = [y for x, y in series if x < nf["step"] and y is not None][-3:]
        out.append(Finding("G400", f"the {curve} loss is non-finite (NaN/Inf) from {axis} {nf['step']:g} of the "
                                   f"{what}",
                           "lower the learning rate, clip gradients (torch.nn.utils.clip_grad_norm_(params, 1.0)), "
                           "check the data for NaN/Inf and use a logits loss (cross_entropy / bce_with_logits) "
                           "rather than log(softmax) or log(sigmoid); to find the layer, run the training under "
                           "nn_doctor.Monitor",
                           {**ev0, "step": nf["step"], "axis": axis, "curve": nf["curve"], "where": "loss",
                            "layer": None, "last_finite_losses": before,
                            "note": "a loss log has no per-layer data: nn_doctor.Monitor names the first layer"}))
        return verdict, out

    if verdict.pattern == "overfitting":
        stop = (f" (the validation loss was lowest at {axis} {v['min_step']:g})"
                if v.get("min_step") is not None and v.get("min_step") < v.get("last_step", 0) else "")
        out.append(Finding("H304", f"{verdict.reason}; last train {_g(t.get('end'))} vs validation "
                                   f"{_g(v.get('end'))}",
                           f"add dropout or weight decay, stop earlier{stop}, or get more training data",
                           {**ev0, "final_train_loss": t.get("end"), "final_val_loss": v.get("end"),
                            "generalisation_gap": (v["end"] - t["end"]) if v.get("end") is not None
                            and t.get("end") is not None else None}))

    if verdict.pattern != "diverging" and t.get("start"):
        train_ratio = t["end"] / t["start"] if t["start"] > 0 else None
        val_ratio = v["end"] / v["start"] if v.get("start") and v["start"] > 0 else None
        high = train_ratio is not None and train_ratio > curves.HIGH_LOSS_FRACTION and \
            (val_ratio is None or val_ratio > curves.HIGH_LOSS_FRACTION)
        if high and verdict.pattern != "overfitting":
            val_txt = f", validation {_g(v.get('start'))} -> {_g(v.get('end'))} ({val_ratio:.0%})" \
                if val_ratio is not None else ""
            out.append(Finding("H305", f"the losses stay high: training {_g(t['start'])} -> {_g(t['end'])} "
                                       f"({train_ratio:.0%} of its start){val_txt}; pattern {verdict.pattern}",
                               "more capacity (wider or deeper model), longer training, less regularisation, "
                               "or a better learning rate (nn-doctor probe-lr)",
                               {**ev0, "train_ratio": train_ratio, "val_ratio": val_ratio,
                                "thresholds": {"underfit_fraction": curves.HIGH_LOSS_FRACTION}}))

    if verdict.still_falling and verdict.pattern != "diverging":
        frac = t.get("last_quarter_drop_fraction")
        out.append(Finding("H308", f"the training loss is still falling at the end of the {what}: its last "
                                   f"quarter made {frac:.0%} of the drop",
                           "train longer (more epochs)",
                           {**ev0, "last_quarter_drop_fraction": frac,
                            "thresholds": {"still_falling_fraction": curves.STILL_FALLING_FRACTION}}))
    return verdict, out


def check_curves(path: str | Path, train_col: str | None = None, val_col: str | None = None,
                 step_col: str | None = None, select: list[str] | None = None,
                 ignore: list[str] | None = None) -> Report:
    """Report (command "check-curves") on a training log CSV: steps 3 and 4 from its loss curves.

    UsageError (exit 2) when the file cannot be read or has no training-loss column.
    """
    t0 = time.perf_counter()
    select, ignore = list(select or []), list(ignore or [])
    train, val, info = curves.read_curve_log(path, train_col, val_col, step_col)
    report = Report("check-curves")
    report.inputs = {"log": str(path), "train_col": info["train_col"], "val_col": info["val_col"],
                     "x": info["step_col"]}
    for st in Step:
        report.step(st).ran = st in (Step.HYPERPARAMETERS, Step.GRADIENTS)
    for code in CURVE_CODES:
        if enabled(code, select, ignore):
            report.mark_checked(code)
    axis = "epoch" if str(info["step_col"]).lower().startswith("epoch") else "step"
    extra = {"log": {k: info[k] for k in ("path", "rows", "train_col", "val_col", "step_col", "train_points",
                                          "val_points", "unparsed_cells")}}
    if len(train) < curves.MIN_POINTS:
        for st in (Step.HYPERPARAMETERS, Step.GRADIENTS):
            report.skip_step(st, f"the training loss has {len(train)} point(s); a curve needs {curves.MIN_POINTS}")
    else:
        verdict, found = curve_findings(train, val, "logged run", axis, extra)
        for f in found:
            if enabled(f.code, select, ignore):
                report.add(f)
        report.step(Step.HYPERPARAMETERS).summary = (
            f"{info['train_points']} training points" + (f", {info['val_points']} validation" if val else "")
            + f", pattern {verdict.pattern}")
        report.probes["curves"] = {"pattern": verdict.pattern, "reason": verdict.reason,
                                   "still_falling": verdict.still_falling, **extra["log"],
                                   # the logged values as read (thinned), for the HTML report's plot
                                   "train": _points(train), "val": _points(val) if val else None}
    if not any(r.checks_run for r in report.steps.values()):
        from .errors import UsageError
        raise UsageError("no check ran: --select/--ignore leave nothing to run for this command")
    report.timing["total_s"] = time.perf_counter() - t0
    return report.finalize()
