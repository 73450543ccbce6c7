"""Small, JSON-safe series taken from the probes' records for the HTML report's plots.

A ProbeRecord keeps every step's loss and per-layer statistics at each recorded step; the report keeps
only what a plot needs (report.probes["baseline"], the init variants' curves), thinned to a few hundred
numbers, so the JSON report stays small. Plain Python: the records' lists are already floats (None for a
non-finite value); nothing here imports torch.
"""
from __future__ import annotations

import math
from typing import Any

MAX_CURVE_POINTS = 120   # points kept of a smoothed per-step loss curve (a plot line ~600 px wide needs no more)
MAX_LAYERS = 32          # layers kept in the per-layer gradient plots; beyond ~30 lines a plot cannot be read
                         # (first, evenly spaced middle ones, last)


def thin(values: list[Any], points: int = MAX_CURVE_POINTS) -> dict[str, Any]:
    """Every k-th value (k chosen so at most `points` remain) and k itself: value i is at step i * k."""
    every = max(1, math.ceil(len(values) / points)) if values else 1
    return {"every": every, "values": list(values[::every])}


def smoothed_curve(rec: Any, points: int = MAX_CURVE_POINTS) -> dict[str, Any]:
    """A probe's smoothed training-loss curve, thinned (None from the first non-finite value on)."""
    return thin(rec.smoothed(), points)


def _spread(names: list[str], n: int) -> list[str]:
    if len(names) <= n:
        return names
    idx = sorted({round(i * (len(names) - 1) / (n - 1)) for i in range(n)})
    return [names[i] for i in idx]


def baseline_series(rec: Any) -> dict[str, Any] | None:
    """The baseline probe's curves and per-layer gradient statistics, for the report's plots.

    train: the smoothed minibatch loss (thinned) and the full-batch training loss where it was evaluated;
    val: the validation loss where it was evaluated; layers: gradient norm and update/weight ratio of
    every layer with parameters at each recorded step.
    """
    if rec is None or rec.stopped == "skipped":
        return None
    steps = [int(r["step"]) for r in rec.layers]
    names: list[str] = []
    for r in rec.layers:
        for name, st in r["stats"].items():
            if name not in names and ("grad_norm" in st or "update_ratio" in st):
                names.append(name)
    layers = {}
    for name in _spread(names, MAX_LAYERS):
        layers[name] = {
            "kind": rec.layer_kinds.get(name),
            "grad_norm": [r["stats"].get(name, {}).get("grad_norm") for r in rec.layers],
            "update_ratio": [r["stats"].get(name, {}).get("update_ratio") for r in rec.layers],
        }
    out: dict[str, Any] = {
        "steps": rec.steps_run, "stopped": rec.stopped,
        "train_smoothed": smoothed_curve(rec),
        "train_eval": [[int(s), v] for s, v in rec.train_eval],
        "val": [[int(s), v] for s, v in rec.val_losses],
        "layer_steps": steps, "layers": layers, "n_layers": len(names),
    }
    # G406's band, for the update-ratio plot (taken here: the renderer imports no torch)
    from .checks.gradients import UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW, UPDATE_RATIO_TARGET
    out["update_ratio_band"] = {"low": UPDATE_RATIO_LOW, "target": UPDATE_RATIO_TARGET, "high": UPDATE_RATIO_HIGH}
    return out


def record_series(report: Any, ctx: Any) -> None:
    """full-report: keep the baseline's series in report.probes["baseline"] (when the baseline ran)."""
    base = baseline_series(getattr(ctx, "baseline", None))
    if base is not None:
        report.probes["baseline"] = base
