"""Train/validation loss curves -> one of the train/validation loss patterns.

The source notes on reading train and test loss read the state of a network off its two
loss curves:

  1. train falling, val falling -> still learning                         ("learning")
  2. train falling, val flat    -> overfitting                            ("overfitting")
  3. train flat,    val falling -> the data set has a problem             ("data-problem")
  4. train flat,    val flat    -> a bottleneck: lower the lr or the batch ("plateau")
  5. train rising,  val rising  -> bad structure, hyperparameters or data ("diverging")

`classify_curves` decides the pattern from curve *trends*, never from single values:

- Each curve is bin-averaged to at most MAX_POINTS points (a 100k-step log costs the same as a probe).
- Windows are ranges of steps, not of points, so a per-step training curve and a validation curve
  evaluated every 25 steps are measured alike. The overall trend compares the mean of the first third
  with the mean of the last third; the recent trend compares the third quarter with the fourth.
- A move counts only when it is at least TREND_BAND of the earlier mean AND at least ABS_FLOOR of the
  curve's starting level; otherwise the curve is flat. The absolute floor keeps noise on a near-zero
  loss (0.03 -> 0.02 is -33%) from reading as a trend.

The rules, in order (the first that matches decides):

  1. a non-finite value anywhere                                   -> diverging (with its step)
  2. the training loss rises (overall or recently)                 -> diverging
  3. no validation curve: training falling -> learning, else plateau
  4. overfitting onset: the validation minimum lies in the first ONSET_POSITION of the run and the last
     validation value is ONSET_RISE above it, by ONSET_ABS of the curve's start -> overfitting
  5. the validation loss rises (overall or recently)               -> overfitting
  6. training falling: validation flat while training fell >= CLEAR_CHANGE, or training still falling
     clearly (RECENT_OVERFIT_DROP) over the last half while validation is flat -> overfitting;
     both flat over the second half while still above HIGH_LOSS_FRACTION of the start -> plateau;
     otherwise learning
  7. training flat: validation falling by >= CLEAR_CHANGE -> data-problem, otherwise plateau

`still_falling` (H308) is separate: the training curve's last quarter (Theil-Sen slope x its span)
still makes >= STILL_FALLING_FRACTION of its total drop.

A sixth pattern, "prior-collapse", is not the curves' to decide: a run whose loss fell (pattern 1 by
its trends) but ended no lower than PRIOR_MARGIN x the loss of the best constant prediction learned
nothing from its inputs (issue 11: unscaled wine falls 54 -> 1.09 = ln 3 while every ReLU dies). The
H306 check names it when the record knows that reference loss (nn-doctor's own probes do).

`read_curve_log` reads the CSV logs of Lightning's and Keras' CSVLogger into a CurveLog so `nn-doctor
check-curves` runs the same checks on a user's real training. No torch import here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import UsageError
from . import fmt

# ---- thresholds -------------------------------------------------------------------------------------
TREND_BAND = 0.05          # a window mean moving < 5% of the earlier window's mean is flat (per-step losses on wine
                           # scatter 3-6% (batch 32-8), ~1% on the mean of a 50-step third; a too-low lr (sgd 1e-3)
                           # still moves it -9%, a stuck one (adam 1e-6) -0.2%)
ABS_FLOOR = 0.02           # ... and so is a move < 2% of the curve's starting level (near-zero losses: the converged
                           # sgd-0.1 wine probe moves its validation loss 0.041 -> 0.034, 1% of its start of 1.08)
ONSET_POSITION = 0.8       # overfitting onset: the validation minimum lies in the first 80% of the run
ONSET_RISE = 0.1           # ... and the last validation value is >= 10% above that minimum
ONSET_ABS = 0.05           # ... by >= 5% of the validation curve's start (wine, 40 rows: 0.062 -> 0.071 is 0.8%,
                           # noise; 12 rows: 0.25 -> 0.43 is 17%, real)
RECENT_OVERFIT_DROP = 0.05  # "train keeps falling while val is flat" needs the recent training drop to be >= 5% of
                           # the training curve's start (a converged run's last 0.03 -> 0.01 is not "keeps falling")
HIGH_LOSS_FRACTION = 0.5   # a curve still above 50% of its starting level is "high" (a flat curve there is a
                           # plateau, not convergence; H305 underfitting uses the same cut)
def level(ref: float, factor: float) -> float:
    """`factor` x `ref` on the loss's own scale: ref + (factor - 1) |ref|. It equals factor x ref for a loss that is
    positive; a loss that can be negative (nll on probabilities or raw logits) would flip a plain product: 4 x
    -0.47 = -1.9 lies below the start, so every step of a falling curve read as "rose above 4x its start"."""
    return ref + (factor - 1.0) * abs(ref)


PRIOR_MARGIN = 0.95        # prior-collapse: a run that does not end >= 5% below the loss of the best constant
                           # prediction (class prior / target mean) learned nothing from the inputs (the same
                           # margin as lr_search.REFERENCE_MARGIN, whose too-slow status it mirrors)
STILL_FALLING_FRACTION = 0.1  # not converged: the last quarter of the run still makes >= 10% of the total drop, i.e.
                           # >= 40% of the run's average rate (an exponential approach with a time constant >= half
                           # the run)
CLEAR_CHANGE = 0.2         # a one-sided verdict (pattern 2 with a flat val curve, pattern 3) needs the moving curve
                           # to move >= 20% over the run; seeds/003 calls pattern 3 "100% a data problem", so a
                           # -9% drift against a -5% one (adam with weight_decay 1 on wine) must not qualify
MIN_POINTS = 2             # fewer finite points than this: no trend for that curve
MAX_POINTS = 400           # longer curves are bin-averaged to this many points first

FALLING, FLAT, RISING = "falling", "flat", "rising"
PATTERNS = ("learning", "overfitting", "data-problem", "plateau", "diverging", "prior-collapse")

# The seeds' reading of each pattern (seeds/003, the end), in English, one line each.
SEEDS_ADVICE = {
    "learning": "train and validation loss both falling: the network is still learning - let it train",
    "overfitting": "train loss falls while validation loss stays flat or rises: the network overfits - add "
                   "regularisation (dropout, weight decay), stop early, or get more data",
    "data-problem": "train loss flat while validation loss falls: the data set almost certainly has a problem - "
                    "check the labels, the split and the pipeline",
    "plateau": "train and validation loss both flat: learning has hit a bottleneck - lower the learning rate or "
               "the batch size",
    "diverging": "the loss is rising (or non-finite): bad network structure, bad training hyperparameters, or "
                 "data that needs cleaning",
    "prior-collapse": "the loss fell only as far as a constant prediction (the class prior / the target mean): the "
                      "network ignores its inputs - look at the causes named in steps 1-4 (unscaled inputs, an lr "
                      "that kills the ReLUs, the output activation) rather than training longer",
}

Series = Sequence[tuple[float, "float | None"]]


@dataclass
class CurveLog:
    """A finished run's loss curves as read from its log (the record check-curves hands the checks)."""

    train: list[tuple[float, float | None]]
    val: list[tuple[float, float | None]] | None
    axis: str = "step"                # the x column's meaning: "step" or "epoch"
    info: dict[str, Any] = field(default_factory=dict)   # where they came from (read_curve_log's info)

    @classmethod
    def read(cls, path: str | Path, train_col: str | None = None, val_col: str | None = None,
             step_col: str | None = None) -> "CurveLog":
        """read_curve_log as a record; UsageError when the log cannot be read."""
        train, val, info = read_curve_log(path, train_col, val_col, step_col)
        axis = "epoch" if str(info["step_col"]).lower().startswith("epoch") else "step"
        return cls(train, val, axis, info)


@dataclass
class CurveVerdict:
    pattern: str                      # one of PATTERNS
    seeds_advice: str                 # SEEDS_ADVICE[pattern]
    reason: str                       # one line: why this pattern (the trends that decided it)
    evidence: dict[str, Any] = field(default_factory=dict)
    still_falling: bool = False       # the training loss is still falling steeply at the end (H308)
    train_trend: str | None = None    # overall trend of each curve: falling | flat | rising (None: too short)
    val_trend: str | None = None


# ---- helpers ----------------------------------------------------------------------------------------

def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v))


def _clean(series: Series | None) -> list[tuple[float, float | None]]:
    """Sorted by step; values None where not finite."""
    if not series:
        return []
    out = [(float(x), float(v) if _finite(v) else None) for x, v in series if x is not None]
    out.sort(key=lambda p: p[0])
    return out


def _bin(xs: np.ndarray, ys: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive chunks so at most `max_points` points remain (a smoothing as well)."""
    if len(xs) <= max_points:
        return xs, ys
    chunks = np.array_split(np.arange(len(xs)), max_points)
    return (np.array([xs[c].mean() for c in chunks]), np.array([ys[c].mean() for c in chunks]))


def _trend(before: float, after: float, start: float) -> tuple[str, float]:
    """FALLING / FLAT / RISING for a move from window mean `before` to `after`; also the relative change."""
    delta = after - before
    rel = delta / max(abs(before), 1e-12)
    if abs(rel) >= TREND_BAND and abs(delta) >= ABS_FLOOR * abs(start):
        return (FALLING if delta < 0 else RISING), rel
    return FLAT, rel


def theil_sen_slope(xs: np.ndarray, ys: np.ndarray) -> float:
    """Median of the pairwise slopes: robust to the spikes of a per-step loss."""
    if len(xs) < 2:
        return 0.0
    i, j = np.triu_indices(len(xs), k=1)
    dx = xs[j] - xs[i]
    ok = dx != 0
    if not ok.any():
        return 0.0
    return float(np.median((ys[j] - ys[i])[ok] / dx[ok]))


def _window(xs: np.ndarray, ys: np.ndarray, lo: float, hi: float) -> float:
    """Mean of the points with lo <= step <= hi; the nearest point when none lies inside."""
    inside = (xs >= lo) & (xs <= hi)
    if inside.any():
        return float(ys[inside].mean())
    return float(ys[int(np.argmin(np.abs(xs - (lo + hi) / 2)))])


def _describe(xs: np.ndarray, ys: np.ndarray) -> dict[str, Any]:
    """Window means and trends of one finite curve. Windows are ranges of steps (not of points), so a
    per-step training curve and a validation curve evaluated every 25 steps are measured alike."""
    x0, x1 = float(xs[0]), float(xs[-1])
    span = x1 - x0
    # the start is the curve's level before it moves (the first 2% of the run: a few steps of a per-step
    # curve, the first evaluation of a validation curve); the end smooths over the last 10%
    start, end = _window(xs, ys, x0, x0 + span / 50), _window(xs, ys, x1 - span / 10, x1)
    first, last = _window(xs, ys, x0, x0 + span / 3), _window(xs, ys, x1 - span / 3, x1)
    trend, change = _trend(first, last, start)
    d: dict[str, Any] = {"points": len(ys), "first_step": x0, "last_step": x1, "start": start, "end": end,
                         "first_third_mean": first, "last_third_mean": last, "change": change, "trend": trend,
                         "recent_trend": None, "recent_change": None, "recent_drop": None}
    mid, q3 = x0 + span / 2, x0 + 3 * span / 4
    if ((xs >= mid) & (xs < q3)).any() and (xs >= q3).any():   # the second half holds points on both sides
        a, b = _window(xs, ys, mid, q3 - 1e-9 * max(span, 1.0)), _window(xs, ys, q3, x1)
        d["recent_trend"], d["recent_change"] = _trend(a, b, start)
        d["recent_drop"] = a - b
    return d


def _still_falling(xs: np.ndarray, ys: np.ndarray, info: dict[str, Any]) -> bool:
    """The last quarter's drop (Theil-Sen slope x its span) is >= STILL_FALLING_FRACTION of the total drop."""
    total = info["start"] - info["end"]
    q = xs >= xs[-1] - (xs[-1] - xs[0]) / 4
    info["last_quarter_drop_fraction"] = None
    if len(ys) < 6 or q.sum() < 2 or total <= 0 or total < ABS_FLOOR * abs(info["start"]):
        return False
    qx, qy = xs[q], ys[q]
    frac = -theil_sen_slope(qx, qy) * float(qx[-1] - qx[0]) / total
    info["last_quarter_drop_fraction"] = frac
    return frac >= STILL_FALLING_FRACTION


def thresholds() -> dict[str, float]:
    return {"trend_band": TREND_BAND, "abs_floor": ABS_FLOOR, "onset_position": ONSET_POSITION,
            "onset_rise": ONSET_RISE, "onset_abs": ONSET_ABS, "recent_overfit_drop": RECENT_OVERFIT_DROP,
            "high_loss_fraction": HIGH_LOSS_FRACTION, "clear_change": CLEAR_CHANGE,
            "still_falling_fraction": STILL_FALLING_FRACTION}


def make_verdict(pattern: str, reason: str, evidence: dict[str, Any], still_falling: bool = False,
                 train_trend: str | None = None, val_trend: str | None = None) -> CurveVerdict:
    """A verdict with the seeds' advice for `pattern` (also for callers that know more than the curves,
    e.g. a probe that stopped because its smoothed loss blew up)."""
    return CurveVerdict(pattern, SEEDS_ADVICE[pattern], reason, evidence, still_falling, train_trend, val_trend)


pct = fmt.change   # a relative change for messages: '-82%', or '×1.2e+10' past +1,000 % (nn_doctor/fmt.py)


# ---- the classification -----------------------------------------------------------------------------

def classify_curves(train: Series, val: Series | None = None) -> CurveVerdict:
    """The train/validation pattern of a training curve and an optional validation curve.

    Each series is [(step or epoch, loss)]; None, NaN or inf losses are non-finite. Raises ValueError
    when the training curve has fewer than MIN_POINTS points.
    """
    tr, va = _clean(train), _clean(val)
    evidence: dict[str, Any] = {"thresholds": thresholds()}
    # non-finite values: diverging, with the first step where one appears
    for name, pts in (("train", tr), ("val", va)):
        bad = next((x for x, v in pts if v is None), None)
        if bad is not None:
            evidence["first_nonfinite"] = {"curve": name, "step": bad}
            return make_verdict("diverging", f"the {'training' if name == 'train' else 'validation'} loss is "
                                         f"non-finite from step {bad:g}", evidence)
    if len(tr) < MIN_POINTS:
        raise ValueError(f"a training curve needs at least {MIN_POINTS} points, got {len(tr)}")
    tx, ty = _bin(np.array([x for x, _ in tr]), np.array([v for _, v in tr]))
    t = evidence["train"] = _describe(tx, ty)
    still = _still_falling(tx, ty, t)
    v = None
    if len(va) >= MIN_POINTS:
        vx, vy = _bin(np.array([x for x, _ in va]), np.array([y for _, y in va]))
        v = evidence["val"] = _describe(vx, vy)
        k = int(np.argmin(vy))
        v_min, v_min_step, v_last = float(vy[k]), float(vx[k]), float(vy[-1])
        span = float(vx[-1] - vx[0]) or 1.0
        v.update({"min": v_min, "min_step": v_min_step, "final": v_last,
                  "min_position": (v_min_step - float(vx[0])) / span,
                  "rise_from_min": (v_last - v_min) / max(abs(v_min), 1e-12)})
    else:
        evidence["val"] = None
    tt, rt = t["trend"], t["recent_trend"]
    high = t["end"] > HIGH_LOSS_FRACTION * t["start"]

    def done(pattern: str, reason: str) -> CurveVerdict:
        return make_verdict(pattern, reason, evidence, still, tt, v["trend"] if v else None)

    if tt == RISING or rt == RISING:
        both = v is not None and (v["trend"] == RISING or v["recent_trend"] == RISING)
        where, change = ("overall", t["change"]) if tt == RISING else ("over the second half", t["recent_change"])
        return done("diverging", f"the training loss is rising {where} ({pct(change)})"
                    + (" and so is the validation loss" if both else ""))
    if v is None:
        if tt == FALLING and not (rt == FLAT and high and not still):
            return done("learning", f"the training loss is falling ({pct(t['change'])}); no validation curve")
        return done("plateau", f"the training loss is flat ({pct(t['change'] if tt == FLAT else t['recent_change'])}"
                               f"{' over the second half' if tt != FLAT else ''}); no validation curve")
    vt, vr = v["trend"], v["recent_trend"]
    onset = (v["min_position"] <= ONSET_POSITION and v["rise_from_min"] >= ONSET_RISE
             and v["final"] - v["min"] >= ONSET_ABS * abs(v["start"]))
    if onset:
        return done("overfitting", f"the validation loss fell to {v['min']:.3g} at step {v['min_step']:g}, then "
                                   f"rose {pct(v['rise_from_min'])} to {v['final']:.3g} while the training loss "
                                   f"did not rise")
    if vt == RISING or vr == RISING:
        change = v["change"] if vt == RISING else v["recent_change"]
        return done("overfitting", f"the validation loss is rising ({pct(change)}) while the training loss is {tt}")
    stalled = rt == FLAT and vr in (FLAT, None) and high and not still   # fell at first, flat since, still high
    if tt == FALLING:
        if vt == FLAT and t["change"] <= -CLEAR_CHANGE:
            return done("overfitting", f"the training loss falls ({pct(t['change'])}) while the validation loss "
                                       f"stays flat ({pct(v['change'])})")
        recent_drop = t["recent_drop"] or 0.0
        if rt == FALLING and vr == FLAT and recent_drop >= RECENT_OVERFIT_DROP * abs(t["start"]):
            return done("overfitting", f"over the second half the training loss keeps falling "
                                       f"({pct(t['recent_change'])}) while the validation loss is flat "
                                       f"({pct(v['recent_change'])})")
        if stalled:
            return done("plateau", f"both losses fell at first, then stayed flat over the second half at "
                                   f"{fmt.share(t['end'], t['start'])} of the training loss's start")
        return done("learning", f"the training loss falls ({pct(t['change'])}) and the validation loss is "
                                f"{vt} ({pct(v['change'])})")
    if vt == FALLING and v["change"] <= -CLEAR_CHANGE:
        return done("data-problem", f"the training loss is flat ({pct(t['change'])}) while the validation loss "
                                    f"falls ({pct(v['change'])})")
    return done("plateau", f"the training loss ({pct(t['change'])}) and the validation loss ({pct(v['change'])}) "
                           f"are both flat or nearly so")


# ---- reading logs -----------------------------------------------------------------------------------

# column names, most preferred first (Lightning's CSVLogger adds _epoch/_step suffixes when a metric is
# logged with on_epoch/on_step; Keras' CSVLogger writes `loss` and `val_loss`)
TRAIN_COLUMNS = ("train_loss_epoch", "train_loss", "loss_epoch", "loss", "training_loss", "train/loss",
                 "train_loss_step", "loss_step")
VAL_COLUMNS = ("val_loss_epoch", "val_loss", "valid_loss", "validation_loss", "val/loss", "test_loss",
               "val_loss_step")
EPOCH_COLUMNS = ("epoch", "epochs")
STEP_COLUMNS = ("step", "global_step", "iteration", "iter")


def _pick(columns: list[str], wanted: Sequence[str], prefix: str | None = None) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    for w in wanted:
        if w in lower:
            return lower[w]
    if prefix:   # e.g. train_nll_loss: the first loss column with the prefix
        for c in columns:
            lc = c.lower()
            if lc.startswith(prefix) and "loss" in lc:
                return c
    return None


def _to_float(cell: str) -> float | None | str:
    """'' -> None (not logged on this row); a number (nan/inf included) -> float; else 'bad'."""
    cell = cell.strip()
    if cell == "":
        return None
    try:
        return float(cell)
    except ValueError:
        return "bad"


def read_curve_log(path: str | Path, train_col: str | None = None, val_col: str | None = None,
                   step_col: str | None = None) -> tuple[list[tuple[float, float | None]],
                                                          list[tuple[float, float | None]] | None, dict[str, Any]]:
    """Read a training log CSV into (train, val, info) series for `classify_curves`.

    Lightning's CSVLogger writes train and validation metrics on different rows (the other cells empty);
    rows are merged by the step column (epoch for epoch-level losses). Empty cells mean "not logged on
    this row"; a cell reading nan/inf is a non-finite loss and is kept as None. When several values share
    a step they are averaged (non-finite if any is).
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such log file")
    try:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False)
    except Exception as err:   # pandas raises several types for unreadable text
        raise UsageError(f"{p}: cannot read as CSV ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    cols = [str(c) for c in frame.columns]
    if frame.empty:
        raise UsageError(f"{p}: the log has no rows (columns: {', '.join(cols) or 'none'})")

    def named(col: str | None, what: str) -> str | None:
        if col is not None and col not in cols:
            raise UsageError(f"{p}: no column '{col}' for the {what} (columns: {', '.join(cols)})")
        return col

    train_c = named(train_col, "training loss") or _pick(cols, TRAIN_COLUMNS, "train")
    if train_c is None:
        raise UsageError(f"{p}: no training loss column found (columns: {', '.join(cols)}); "
                         f"name it with --train-col")
    val_c = named(val_col, "validation loss") or (None if val_col else _pick(cols, VAL_COLUMNS, "val"))
    if val_c == train_c:
        val_c = None
    values = {c: [_to_float(s) for s in frame[c].tolist()] for c in (train_c, val_c) if c}
    unparsed = {c: sum(1 for v in vs if v == "bad") for c, vs in values.items()}

    # the x axis: an explicit column; else epoch when the training loss has at most one value per epoch
    # (epoch-level, Keras); else the step column; else the row number
    logged = [i for i, v in enumerate(values[train_c]) if v is not None and v != "bad"]
    epoch_c, step_c = _pick(cols, EPOCH_COLUMNS), _pick(cols, STEP_COLUMNS)
    x_c = named(step_col, "step")
    if x_c is None:
        if epoch_c is not None:
            epochs = [frame[epoch_c].iloc[i] for i in logged]
            x_c = epoch_c if len(set(epochs)) == len(epochs) else step_c
        else:
            x_c = step_c
    xs = [_to_float(s) for s in frame[x_c].tolist()] if x_c else [float(i) for i in range(len(frame))]

    def series(col: str) -> list[tuple[float, float | None]]:
        by_x: dict[float, list[float]] = {}
        for x, v in zip(xs, values[col]):
            if v is None or v == "bad" or x is None or x == "bad" or not math.isfinite(x):
                continue
            by_x.setdefault(float(x), []).append(float(v))
        return [(x, (sum(vs) / len(vs)) if all(math.isfinite(u) for u in vs) else None)
                for x, vs in sorted(by_x.items())]

    train = series(train_c)
    if not train:
        raise UsageError(f"{p}: the training loss column '{train_c}' has no values")
    val = series(val_c) if val_c else None
    info = {"path": str(p), "rows": len(frame), "columns": cols, "train_col": train_c, "val_col": val_c,
            "step_col": x_c or "(row number)", "train_points": len(train), "val_points": len(val or []),
            "unparsed_cells": {c: n for c, n in unparsed.items() if n}}
    return train, (val or None), info
