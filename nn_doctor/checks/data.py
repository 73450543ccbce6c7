"""Step 1 — the data checks (D100..D114), one small function per code.

The statistics they read are measured once, chunked and vectorised, by nn_doctor.data_stats.DataContext
(per-column count/NaN/inf/mean/std/min/max/max|x|, median and MAD, robust-z outlier counts, row hashes,
label counts and the single-feature leakage scores; each a cached property, so a deselected check costs
nothing). This module only judges them: a check reads the context and returns a Finding or None.

Every threshold is a module constant with a one-line rationale; each finding puts the thresholds it
used into `evidence["thresholds"]`.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Any

import numpy as np
import pandas as pd

from ..catalogue import Severity, Step
from .. import fmt
from .. import data_stats
from ..data import Dataset
from ..data_stats import (BINARY_LOSSES, CLASS_INDEX_LOSSES, DataContext, MAX_EVIDENCE_COLUMNS,
                          MAX_EXAMPLE_ROWS, MAX_LEAK_CANDIDATES, ROBUST_Z_CONST,
                          ROBUST_Z_LIMIT, SEED, is_2d_target, is_numeric_dtype, mix_hash, pearson,
                          python_value)
from ..report import Finding, Report
from . import check, codes_for_step, run_checks

DATA_CODES = codes_for_step("D")   # the catalogue's codes of this step

# ---- thresholds --------------------------------------------------------------------------------
# D104 unscaled-features
FEATURE_STD_HIGH = 10.0        # std > 10: an order of magnitude above a standardized feature's 1
FEATURE_STD_LOW = 0.1          # 0 < std < 0.1: an order below (not for columns within [-1, 1] or two-valued)
FEATURE_MEAN_HIGH = 3.0        # |mean| > 3: the centre is 3 standardized units away from 0
SCALE_SPREAD_LIMIT = 100.0     # max std / min std of columns outside [-1, 1] > 100: two orders of magnitude
MAX_ABS_ERROR = 1e3            # findings.md: D104 is an error when some feature's max |x| exceeds 1e3
# D106 extreme-outliers
OUTLIER_CLASS_MIN_ROWS = 10    # labelled tables: a value must be extreme within its own class too (fault zoo: 20
                               # malignant rows among 357 benign made a real 'area error' of 526 read z 68 against
                               # the benign median; within its class it is z ~7); classes smaller than this
                               # (MIN_CLASS_SAMPLES) are judged against the whole column
# D108 unscaled-target
TARGET_MEAN_HIGH = 10.0        # |mean| > 10: initial MSE ~ mean^2 > 100, gradients dominated by the offset
TARGET_STD_HIGH = 10.0         # std > 10: an order of magnitude above a standardized target
# D109 class-imbalance
IMBALANCE_RATIO = 10.0         # majority/minority >= 10 is the usual "imbalanced" cut (findings.md)
# D110 duplicates-or-conflicts
DUPLICATE_FRACTION = 0.01      # duplicates of >= 1% of the training rows (a stray one, as in iris, is noise)
LEAK_ROWS_FRACTION = 0.01      # >= 1% of the validation rows also appear in training
CONFLICT_MIN_GROUPS = 1        # any feature vector seen with two labels is a labelling question
# D111 too-little-data
MIN_CLASS_SAMPLES = 10         # findings.md "fewer than ~10 samples for some class"
PARAMS_PER_SAMPLE_LIMIT = 100.0  # n_params > 100 x n_train: "samples far fewer than parameters", the same cut as
                                # M208's "too big" (fault zoo: at 10x, healthy residual/deep MLPs on wine with
                                # 34-40 parameters per row fired while training and validating fine)
# D112 target-leakage
LEAK_SCREEN_ETA2 = 0.5         # screen on the sample: a column must explain >= half the label variance (eta^2)
LEAK_SCREEN_R = 0.9            # regression screen (on the sample): |r| >= 0.9 gets the exact |r| on every row
LEAK_MAX_ERROR = 0.01          # a one-feature rule with >= 99% accuracy ...
LEAK_BASELINE_FACTOR = 0.1     # ... and at most a tenth of the majority-class baseline's error
LEAK_MIN_ABS_R = 0.99          # regression: |Pearson r| >= 0.99 with a single feature
LEAK_MIN_ROWS = 100            # classification: ">= 99% accuracy" needs >= 1 / LEAK_MAX_ERROR rows to mean anything
                               # below 100%; on fewer a feature separates by luck (fault zoo: iris cut to 8 flowers
                               # per class, 19 training rows, read petal width as a leak)
# D113 train-validation-shift
SHIFT_SMD = 0.5                # |mean_train - mean_val| / pooled std > 0.5 (Cohen's "medium" effect)
SHIFT_MIN_Z = 5.0              # ... and 5 standard errors from 0, so a random split of small data does not fire
LABEL_SHIFT_TVD = 0.1          # total variation distance between class frequencies >= 0.1 ...
LABEL_SHIFT_MIN_Z = 5.0        # ... with some class's proportion difference 5 standard errors from 0
# D114 degenerate-target: no threshold (a single class / zero variance)
MAX_LABEL_MAP = 50             # D107 writes data.label_map out only for up to 50 classes (longer maps are unreadable)

# ---- formatting --------------------------------------------------------------------------------

_g = fmt.num          # numbers in messages: nn_doctor/fmt.py
_short = fmt.listing


def _n(count: int, word: str) -> str:
    """'1 feature', '3 features'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _take_worst(names: list[str], score: np.ndarray, mask: np.ndarray, n: int = MAX_EVIDENCE_COLUMNS) -> list[int]:
    idx = np.flatnonzero(mask)
    return [int(i) for i in idx[np.argsort(-score[idx], kind="stable")][:n]]


def _feature_word(ctx: DataContext) -> str:
    """What one statistics column is called in messages."""
    return {"table": "feature", "matrix": "feature", "sequence": "feature", "image": "channel"}[ctx.layout]


# ---- the checks ------------------------------------------------------------------------------------

@dataclass
class UnreadableData:
    """What full-report knows when the loader refused the data: the message and the configured path."""
    error: str
    path: str


@check("D100", needs=("data",))
def check_data_unreadable(ctx: DataContext) -> Finding | None:
    """D100 data-unreadable: no training rows, or feature and target row counts that differ.

    File, parse and missing-target errors are raised by the loader (DataError) before statistics exist: full-report
    hands them over as an UnreadableData context, so that this check alone reports them too.
    """
    if isinstance(ctx, UnreadableData):
        return Finding("D100", ctx.error, "fix the data path or the file named in the message", {"path": ctx.path})
    ds = ctx.ds
    problems = []
    for part, X, y in (("training", ds.X, ds.y), ("validation", ds.X_val, ds.y_val)):
        if X is None and part == "validation":
            continue
        nx, ny = (0 if X is None else len(X)), (0 if y is None else len(y))
        if nx != ny:
            problems.append(f"{part} features have {nx} rows but the target has {ny}")
        elif nx == 0 and part == "training":
            problems.append("no training rows")
    if not problems:
        return None
    return Finding("D100", f"{ds.source}: " + "; ".join(problems),
                   "fix the file so features and target have the same, nonzero number of rows",
                   evidence={"source": ds.source, "problems": problems})


def _where(head: str, columns: list[tuple[str, int]], target_counts: dict[str, int]) -> str:
    """'2 of 13 features (a: 3, b: 1) and the target (label: 2)': where the bad cells lie, worst columns first."""
    parts = [f"{head} ({', '.join(f'{k}: {v}' for k, v in columns[:3])}{', ...' if len(columns) > 3 else ''})"] \
        if columns else []
    if target_counts:
        parts.append("the target (" + ", ".join(f"{k}: {v}" for k, v in target_counts.items()) + ")")
    return " and ".join(parts)


@check("D101", needs=("data",))
def check_missing_values(ctx: DataContext) -> Finding | None:
    """D101 missing-values: NaN/None/empty cells in the features or the target, counted per column."""
    if ctx.n_train == 0 or not _missing_unset(ctx):
        return None   # data.missing: drop | median deals with them before training
    counts: dict[str, int] = {}
    st, vs = ctx.train_stats, ctx.val_stats
    nan = st.n_nan + (vs.n_nan if vs is not None else 0)
    for j in np.flatnonzero(nan):
        counts[st.names[j]] = int(nan[j])
    if ctx.ds.kind == "table":                       # non-numeric columns: None / NaN / NaT
        for col in ctx.non_numeric:
            c = col["column"]
            n = int(ctx.ds.X[c].isna().sum()) + (int(ctx.ds.X_val[c].isna().sum()) if ctx.has_val else 0)
            if n:
                counts[c] = n
    target_counts = ctx.target_missing
    if not counts and not target_counts:
        return None
    total = sum(counts.values()) + sum(target_counts.values())
    worst = sorted(counts.items(), key=lambda kv: -kv[1])
    where = _where(f"{len(counts)} of {len(st.names) + len(ctx.non_numeric)} {_feature_word(ctx)}s", worst,
                   target_counts)
    cols = ", ".join(c for c, _ in worst[:3]) + (" ..." if len(worst) > 3 else "")
    fix = (f"set data.missing: median (impute {cols} with the training median) or data.missing: drop (drop those "
           f"rows)" if counts else "")
    if target_counts:
        fix = (fix + "; " if fix else "set data.missing: drop; ") + "rows whose target is missing are dropped"
    return Finding("D101", f"{total} missing values in {where}", fix,
                   evidence={"features": dict(worst[:MAX_EVIDENCE_COLUMNS]),
                             "n_feature_columns": len(counts), "target": target_counts,
                             "thresholds": {"missing": "> 0"}},
                   patch={"data.missing": "median" if counts else "drop"} if _missing_unset(ctx) else None,
                   untestable=PROBES_DROP_ROWS)


@check("D102", needs=("data",))
def check_non_finite_values(ctx: DataContext) -> Finding | None:
    """D102 non-finite-values: +inf/-inf in the features or the target."""
    if ctx.n_train == 0 or not _missing_unset(ctx):
        return None   # data.missing: drop | median deals with them before training
    st, vs = ctx.train_stats, ctx.val_stats
    inf = st.n_inf + (vs.n_inf if vs is not None else 0)
    counts = {st.names[j]: int(inf[j]) for j in _take_worst(st.names, inf.astype(float), inf > 0, len(inf))}
    target_counts = ctx.target_infinite
    if not counts and not target_counts:
        return None
    total = sum(counts.values()) + sum(target_counts.values())
    items = list(counts.items())
    where = _where(_n(len(counts), _feature_word(ctx)), items, target_counts)
    cols = ", ".join(list(counts)[:3] + list(target_counts)[:1])
    return Finding("D102", f"{total} infinite values in {where}",
                   f"set data.missing: drop (or median) to drop or impute the infinite values in {cols}, "
                   "or fix the computation that produced them (a division by zero, a log of 0)",
                   evidence={"features": dict(items[:MAX_EVIDENCE_COLUMNS]), "n_feature_columns": len(counts),
                             "target": target_counts, "thresholds": {"infinite": "> 0"}},
                   patch={"data.missing": "drop"} if _missing_unset(ctx) else None, untestable=PROBES_DROP_ROWS)


@check("D103", needs=("data",))
def check_non_numeric_features(ctx: DataContext) -> Finding | None:
    """D103 non-numeric-features: string, object, bool, date or category columns among the features."""
    cols = ctx.non_numeric
    if not cols:
        return None
    if ctx.ds.kind != "table":
        c = cols[0]
        return Finding("D103", f"X has dtype {c['dtype']} (e.g. {c['example']!r}); a network needs numbers",
                       "convert X to a numeric dtype (float32), encoding categories as integers",
                       evidence={"columns": cols})
    shown = ", ".join(f"{c['column']} ({c['dtype']}, e.g. {c['example']!r})" for c in cols[:3])
    names = ", ".join(c["column"] for c in cols[:5]) + (" ..." if len(cols) > 5 else "")
    n_total = ctx.ds.X.shape[1]
    bad = {c["column"] for c in cols}
    keep = [str(c) for c in ctx.ds.X.columns if str(c) not in bad]
    return Finding("D103", f"{len(cols)} of {n_total} feature columns are not numeric: {shown}"
                   + (" ..." if len(cols) > 3 else ""),
                   f"drop {names} (set data.features to the {len(keep)} numeric columns), or encode them yourself "
                   "(one-hot for few categories, ordinal or target encoding for many; dates as numbers such as days "
                   "since a reference)",
                   evidence={"columns": cols[:MAX_EVIDENCE_COLUMNS], "n_columns": len(cols)},
                   patch={"data.features": keep} if keep else None, untestable=PROBES_DROP_COLUMNS)


def _binary_like(ctx: DataContext, j: int) -> bool:
    """True when stat column j takes at most two distinct values on the median sample (0/1 indicators)."""
    col = ctx.train_sample[j]
    return len(np.unique(col[np.isfinite(col)])) <= 2


@check("D104", needs=("data",))
def check_unscaled_features(ctx: DataContext) -> Finding | None:
    """D104 unscaled-features: features far from mean 0 / std 1, scales orders of magnitude apart, raw pixels.

    Not when the spec scales the features already (data.normalize: standardize or minmax).
    """
    if ctx.n_train == 0 or ctx.train_part.k == 0 or ctx.features_scaled_by_spec:
        return None
    st = ctx.train_stats
    std, mean, max_abs = st.std, st.mean, st.max_abs
    valid = np.isfinite(std) & np.isfinite(mean)
    big_std = valid & (std > FEATURE_STD_HIGH)
    big_mean = valid & (np.abs(mean) > FEATURE_MEAN_HIGH)
    unit_range = valid & (st.min >= -1.0) & (st.max <= 1.0)   # min-max scaled / 0-1 columns: scaled already
    small_std = valid & (std > 0) & (std < FEATURE_STD_LOW) & ~unit_range
    for j in np.flatnonzero(small_std):            # two-valued indicators are not rescaled either
        if _binary_like(ctx, j):
            small_std[j] = False
    flagged = big_std | big_mean | small_std
    nonzero = valid & (std > 0)
    denom = nonzero & ~unit_range
    spread = float(std[nonzero].max() / std[denom].min()) if nonzero.sum() >= 2 and denom.any() else 1.0
    spread_hit = spread > SCALE_SPREAD_LIMIT
    X = ctx.ds.X
    pixel_hit = False
    pixel_range = None
    if ctx.layout in ("image", "sequence") and ctx.ds.kind == "array" and np.issubdtype(X.dtype, np.integer):
        lo, hi = np.nanmin(st.min), np.nanmax(st.max)
        pixel_range = [python_value(lo), python_value(hi)]
        pixel_hit = bool(lo >= 0 and hi > 1)
    if not (flagged.any() or spread_hit or pixel_hit):
        return None
    # rank by how many orders of magnitude a column is off: |log10 std|, log10(1 + |mean|)
    with np.errstate(divide="ignore", invalid="ignore"):
        badness = np.fmax(np.abs(np.log10(np.where(std > 0, std, 1.0))), np.log10(1 + np.abs(mean)))
    badness = np.nan_to_num(badness)
    mark = flagged | (spread_hit & nonzero & ((std == std[nonzero].max()) | (std == std[denom].min())))
    worst = _take_worst(st.names, badness, mark)
    evidence_cols = {st.names[j]: {"mean": mean[j], "std": std[j], "max_abs": max_abs[j]} for j in worst}
    gmax = float(np.nanmax(max_abs)) if np.isfinite(max_abs).any() else 0.0
    severity = Severity.ERROR if gmax > MAX_ABS_ERROR else Severity.WARNING
    word = _feature_word(ctx)
    j0 = worst[0] if worst else int(np.nanargmax(badness))
    example = f"{st.names[j0]}: mean {_g(mean[j0])}, std {_g(std[j0])}, max |x| {_g(max_abs[j0])}"
    reasons = []
    if big_std.any():
        reasons.append(f"{int(big_std.sum())} with std > {_g(FEATURE_STD_HIGH)}")
    if big_mean.any():
        reasons.append(f"{int(big_mean.sum())} with |mean| > {_g(FEATURE_MEAN_HIGH)}")
    if small_std.any():
        reasons.append(f"{int(small_std.sum())} with std < {_g(FEATURE_STD_LOW)}")
    if pixel_hit:
        message = (f"pixel values are raw {X.dtype} in [{_g(pixel_range[0])}, {_g(pixel_range[1])}], not scaled to "
                   f"[0, 1] ({example})")
        fix = f"scale pixels to [0, 1] (divide by {_g(pixel_range[1])}): set data.normalize: minmax"
        patch = {"data.normalize": "minmax"}
    else:
        head = f"{int(flagged.sum())} of {st.k} {word}s are off scale ({'; '.join(reasons)})" if flagged.any() \
            else f"{word} scales span a factor of {_g(spread)}"
        if flagged.any() and spread_hit:
            head += f", scales span a factor of {_g(spread)}"
        message = f"{head} ({example})"
        fix = "set data.normalize: standardize"
        patch = {"data.normalize": "standardize"}
    if severity == Severity.ERROR:
        message += f"; max |x| {_g(gmax)} > {_g(MAX_ABS_ERROR)}"
    return Finding("D104", message, fix, severity=severity, patch=patch,
                   evidence={"columns": evidence_cols, "n_flagged": int(flagged.sum()), "n_columns": st.k,
                             "std_spread": spread, "max_abs": gmax, "pixel_range": pixel_range,
                             "thresholds": {"std_high": FEATURE_STD_HIGH, "std_low": FEATURE_STD_LOW,
                                            "mean_high": FEATURE_MEAN_HIGH, "std_spread": SCALE_SPREAD_LIMIT,
                                            "error_max_abs": MAX_ABS_ERROR}})


@check("D105", needs=("data",))
def check_constant_features(ctx: DataContext) -> Finding | None:
    """D105 constant-features: zero-variance columns (every finite training value equal)."""
    if ctx.n_train == 0 or ctx.train_part.k == 0:
        return None
    st = ctx.train_stats
    const = (st.n_finite > 0) & (st.min == st.max)
    if not const.any():
        return None
    idx = np.flatnonzero(const)
    names = [st.names[j] for j in idx]
    shown = ", ".join(f"{st.names[j]} = {_g(st.min[j])}" for j in idx[:3]) + (" ..." if len(idx) > 3 else "")
    word = _feature_word(ctx)
    return Finding("D105", f"{len(idx)} of {st.k} {word}s are constant on the training rows ({shown})",
                   f"drop the constant {word}s: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}",
                   evidence={"columns": {st.names[j]: st.min[j] for j in idx[:MAX_EVIDENCE_COLUMNS]},
                             "n_constant": len(idx), "thresholds": {"std": 0}})


def _robust_z(x: np.ndarray, med: float | None = None, scale: float | None = None) -> np.ndarray:
    """0.6745 |x - median| / MAD (the MAD-0 fallback of _median_and_scale); 0 where x is not finite."""
    fin = np.isfinite(x)
    if med is None:
        v = x[fin]
        if len(v) == 0:
            return np.zeros(len(x))
        med = float(np.median(v))
        dev = np.abs(v - med)
        scale = float(np.median(dev))
        if scale == 0:
            off = dev[dev > 0]
            scale = float(np.median(off)) if len(off) else np.nan
    if not (scale is not None and np.isfinite(scale) and scale > 0):
        return np.zeros(len(x))
    return np.where(fin, ROBUST_Z_CONST * np.abs(np.where(fin, x, med) - med) / scale, 0.0)


def _within_class_outliers(ctx: DataContext, cols: np.ndarray) -> dict[int, tuple[int, float]] | None:
    """Labelled tables: for the flagged columns, (count, max robust z) with each value judged against the
    median/MAD of its own class (rows of classes under OUTLIER_CLASS_MIN_ROWS, or unlabelled, against the
    column's). None when there are no class labels to split by."""
    info = ctx.labels
    if info is None or info.n_classes < 2 or ctx.layout not in ("table", "matrix"):
        return None
    st, codes = ctx.train_stats, info.codes
    out = {}
    for j in cols:
        x = ctx.train_part.sample_column(int(j))
        z = _robust_z(x, float(st.median[j]), float(st.robust_scale[j]))
        for c in range(info.n_classes):
            m = codes == c
            if m.sum() >= OUTLIER_CLASS_MIN_ROWS:
                z[m] = _robust_z(x[m])
        out[int(j)] = (int((z > ROBUST_Z_LIMIT).sum()), float(z.max()) if len(z) else 0.0)
    return out


@check("D106", needs=("data",))
def check_extreme_outliers(ctx: DataContext) -> Finding | None:
    """D106 extreme-outliers: values whose robust z-score 0.6745*|x - median|/MAD exceeds ROBUST_Z_LIMIT
    (in a labelled table, within the value's own class as well)."""
    if ctx.n_train == 0 or ctx.train_part.k == 0:
        return None
    st = ctx.train_stats
    n_out, max_z = st.n_outliers.copy(), st.max_robust_z.copy()
    hit = n_out > 0
    if not hit.any():
        return None
    within = _within_class_outliers(ctx, np.flatnonzero(hit))
    if within is not None:
        for j, (count, z) in within.items():
            n_out[j], max_z[j] = count, z
        hit = n_out > 0
        if not hit.any():
            return None
    score = np.nan_to_num(max_z)
    worst = _take_worst(st.names, score, hit)
    j = worst[0]
    total = int(n_out.sum())
    word = _feature_word(ctx)
    cols = {st.names[i]: {"n_outliers": n_out[i], "max_robust_z": max_z[i],
                          "median": st.median[i], "mad": st.robust_scale[i], "max_abs": st.max_abs[i]}
            for i in worst}
    names = ", ".join(st.names[i] for i in worst[:3]) + (" ..." if len(worst) > 3 else "")
    return Finding("D106", f"{_n(total, 'extreme value')} in {_n(int(hit.sum()), word)} beyond robust z "
                   f"{_g(ROBUST_Z_LIMIT)}{' within their class' if within is not None else ''} ({st.names[j]}: "
                   f"{n_out[j]} values, max robust z {_g(max_z[j])}, median {_g(st.median[j])}, "
                   f"max |x| {_g(st.max_abs[j])})",
                   f"inspect those rows of {names}; clip/winsorize them (e.g. to the 0.1/99.9 percentiles) "
                   "or drop them if they are errors",
                   evidence={"columns": cols, "n_columns": int(hit.sum()),
                             "median_from_rows": min(st.n_rows, data_stats.MEDIAN_SAMPLE_ROWS),
                             "within_class": within is not None,
                             "thresholds": {"robust_z": ROBUST_Z_LIMIT,
                                            "class_min_rows": OUTLIER_CLASS_MIN_ROWS}})


PROBES_DROP_ROWS = "nn-doctor's probes already drop the rows with NaN/Inf; your own training would not"
PROBES_MAP_LABELS = "nn-doctor's probes already number the labels 0..C-1; your own training would not"
PROBES_DROP_COLUMNS = "nn-doctor's probes already leave non-numeric columns out; your own training would not"


def _missing_unset(ctx: DataContext) -> bool:
    return ctx.missing in (None, "keep")


def _format_mapping(classes: list[Any]) -> str:
    return f"map labels {_short(classes)} to 0..{len(classes) - 1}"


def _label_map_patch(ctx: DataContext, classes: list[Any]) -> dict[str, Any] | None:
    """data.label_map numbering the labels in sorted order: what the probes already do, written out."""
    if ctx.label_map is not None or len(classes) > MAX_LABEL_MAP:
        return None
    plain = [c.item() if hasattr(c, "item") else c for c in classes]
    return {"data.label_map": {(int(c) if isinstance(c, float) and c.is_integer() else c): i
                               for i, c in enumerate(plain)}}


@check("D107", needs=("data",))
def check_bad_label_format(ctx: DataContext) -> Finding | None:
    """D107 bad-label-format: string/float labels, not 0..C-1, one-hot vs class indices, binary not {0, 1}."""
    if ctx.task not in ("classification", "binary", "multilabel") or ctx.n_train == 0:
        return None
    loss = (ctx.loss_name or "").lower() or None
    issues: list[str] = []
    fixes: list[str] = []
    evidence: dict[str, Any] = {"loss": loss, "n_outputs": ctx.n_outputs}
    if is_2d_target(ctx.ds.y):
        Y = ctx.y_frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        fin = Y[np.isfinite(Y).all(axis=1)]
        zero_one = bool(np.isin(fin, (0.0, 1.0)).all()) if len(fin) else True
        one_hot = zero_one and len(fin) > 0 and bool((fin.sum(axis=1) == 1).all())
        evidence.update({"target_columns": Y.shape[1], "zero_one": zero_one, "one_hot": one_hot})
        if one_hot and (loss in CLASS_INDEX_LOSSES or (loss is None and ctx.task != "multilabel")):
            issues.append(f"the target is one-hot ({Y.shape[1]} columns) but {loss or 'a classification loss'} "
                          "wants class indices")
            fixes.append(f"convert the one-hot columns to class indices (argmax over {ctx.target_name})")
        elif not zero_one and (ctx.task == "multilabel" or loss in BINARY_LOSSES):
            bad = np.unique(fin[~np.isin(fin, (0.0, 1.0))])
            issues.append(f"multilabel targets must be 0/1 but contain {_short(bad.tolist())}")
            fixes.append("binarise the target columns to 0/1")
    else:
        info = ctx.labels
        if info is None or info.n_classes == 0 or ctx.label_map is not None:
            return None   # with data.label_map the spec numbers the labels itself
        classes, C = info.classes, info.n_classes
        dtype = info.dtype
        evidence.update({"labels": classes[:20], "n_classes": C, "dtype": str(dtype)})
        numeric = is_numeric_dtype(dtype)
        if pd.api.types.is_bool_dtype(dtype):
            issues.append("labels are booleans")
            fixes.append("cast the labels to integers 0/1")
        elif not numeric:
            issues.append(f"labels are strings {_short(classes)}")
            fixes.append(_format_mapping(classes))
        else:
            vals = np.asarray(classes, dtype=np.float64)
            integral = bool(np.all(vals == np.round(vals)))
            if not integral:
                issues.append(f"labels are non-integer numbers {_short(classes)}; class labels must be ids 0..C-1")
                fixes.append("use a regression task, or bin/map the values to class ids 0..C-1")
            else:
                ints = vals.astype(np.int64)
                wants_ids = loss in CLASS_INDEX_LOSSES or (loss is None and ctx.task == "classification")
                # floats are what bce wants; a NaN label also forces floats (D101 reports it)
                if wants_ids and pd.api.types.is_float_dtype(dtype) and not ctx.y_frame.isna().any().any():
                    issues.append(f"labels are floats ({_short(classes[:3])}) where the loss wants int64 class ids")
                    fixes.append("cast the labels to int64")
                if ctx.task == "binary" and C <= 2 and not set(ints.tolist()) <= {0, 1}:
                    issues.append(f"binary labels are {_short(ints.tolist())}, not {{0, 1}}")
                    fixes.append(f"map labels {_short(ints.tolist())} to [0, 1]" if C == 2 else
                                 f"map label {ints[0]} to 0 or 1")
                elif ctx.task != "binary" and not np.array_equal(ints, np.arange(C)):
                    if ints.min() > 0 and np.array_equal(ints, np.arange(ints.min(), ints.min() + C)):
                        kind = f"offset by {ints.min()}"
                    elif ints.min() < 0:
                        kind = "negative"
                    else:
                        kind = f"with gaps ({C} classes up to {ints.max()})"
                    issues.append(f"labels {_short(ints.tolist())} are not 0..{C - 1} ({kind})")
                    fixes.append(_format_mapping(ints.tolist()))
                # labels already 0..C-1 are well-formed class ids: a binary loss on them is the loss's fault
                # (M203 loss-task-mismatch), not the labels' (a 3-class table trained with bce_with_logits)
                if loss in BINARY_LOSSES and C > 2 and not np.array_equal(ints, np.arange(C)):
                    issues.append(f"{loss} wants 0/1 targets but the labels are {C} class indices")
                    fixes.append("use loss cross_entropy for several classes, or one-hot targets for multilabel")
                # labels already 0..C-1 but more of them than outputs: the output layer is wrong (M201), not
                # the labels (fault zoo: 2 outputs for wine's 3 classes read as a label bug)
                if ctx.n_outputs is not None and loss in CLASS_INDEX_LOSSES and ints.max() >= ctx.n_outputs \
                        and not np.array_equal(ints, np.arange(C)):
                    issues.append(f"label {ints.max()} is out of range for {ctx.n_outputs} outputs")
                    if not fixes:
                        fixes.append(f"map the labels to 0..{ctx.n_outputs - 1}")
    if not issues:
        return None
    mapping = None
    if ctx.labels is not None and not is_2d_target(ctx.ds.y) and any("map labels" in f for f in fixes):
        mapping = _label_map_patch(ctx, ctx.labels.classes)
    if mapping:
        written = ", ".join(f"{k!r}: {v}" if isinstance(k, str) else f"{k}: {v}"
                            for k, v in list(mapping["data.label_map"].items())[:6])
        more = ", ..." if len(mapping["data.label_map"]) > 6 else ""
        fixes = [f"{f} (set data.label_map: {{{written}{more}}})" if f.startswith("map labels") else f for f in fixes]
    return Finding("D107", "; ".join(issues), "; ".join(dict.fromkeys(fixes)),
                   evidence={**evidence, "issues": issues}, patch=mapping, untestable=PROBES_MAP_LABELS)


@check("D108", needs=("data",))
def check_unscaled_target(ctx: DataContext) -> Finding | None:
    """D108 unscaled-target: a regression target with |mean| or std above 10 (unless data.normalize_target)."""
    Y = ctx.regression_target
    if Y is None or len(Y) == 0 or ctx.normalize_target:
        return None
    fin = np.isfinite(Y)
    cnt = fin.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(fin, Y, 0.0).sum(axis=0) / np.maximum(cnt, 1)
        var = np.where(fin, (Y - mean) ** 2, 0.0).sum(axis=0) / np.maximum(cnt - 1, 1)
    std = np.sqrt(var)
    hit = (cnt > 1) & ((np.abs(mean) > TARGET_MEAN_HIGH) | (std > TARGET_STD_HIGH))
    if not hit.any():
        return None
    names = list(map(str, ctx.y_frame.columns))
    j = int(np.flatnonzero(hit)[0])
    cols = {names[i]: {"mean": mean[i], "std": std[i]} for i in np.flatnonzero(hit)[:MAX_EVIDENCE_COLUMNS]}
    return Finding("D108", f"regression target {names[j]!r} has mean {_g(mean[j])}, std {_g(std[j])} "
                   f"(|mean| > {_g(TARGET_MEAN_HIGH)} or std > {_g(TARGET_STD_HIGH)}): an initial MSE near "
                   f"{_g(mean[j] ** 2 + std[j] ** 2)}",
                   "set data.normalize_target: true", patch={"data.normalize_target": True},
                   evidence={"columns": cols, "thresholds": {"mean_high": TARGET_MEAN_HIGH,
                                                             "std_high": TARGET_STD_HIGH}})


@check("D109", needs=("data",))
def check_class_imbalance(ctx: DataContext) -> Finding | None:
    """D109 class-imbalance: majority/minority class ratio >= IMBALANCE_RATIO (unless loss.class_weights is set)."""
    info = ctx.labels
    if info is None or ctx.class_weights is not None:
        return None
    present = info.counts > 0
    if present.sum() < 2:
        return None
    counts = info.counts[present]
    classes = [c for c, p in zip(info.classes, present) if p]
    ratio = counts.max() / counts.min()
    if ratio < IMBALANCE_RATIO:
        return None
    hi, lo = int(np.argmax(counts)), int(np.argmin(counts))
    return Finding("D109", f"class {classes[hi]!r} has {counts[hi]} training rows, class {classes[lo]!r} only "
                   f"{counts[lo]}: ratio {_g(ratio)} >= {_g(IMBALANCE_RATIO)}",
                   "set loss.class_weights: balanced (or oversample the rare classes)",
                   patch={"loss.class_weights": "balanced"},
                   evidence={"counts": {str(c): int(n) for c, n in zip(classes, counts)}, "ratio": ratio,
                             "thresholds": {"ratio": IMBALANCE_RATIO}})


@check("D110", needs=("data",))
def check_duplicates_or_conflicts(ctx: DataContext) -> Finding | None:
    """D110 duplicates-or-conflicts: duplicate rows, rows shared with validation, same features with two labels."""
    n = ctx.n_train
    if n == 0:
        return None
    rh = ctx.row_hashes
    cand = rh.train_candidates                                 # only these can repeat (sorted positions)
    hx, hy = rh.train[cand], ctx.target_hashes[cand]
    with np.errstate(over="ignore"):
        pair = mix_hash(hx ^ mix_hash(hy))
    dup_c = pd.Series(pair).duplicated().to_numpy()            # same features and label as an earlier row
    n_dup = int(dup_c.sum())
    distinct = pd.Series(hx[~dup_c])                           # one row per (features, label)
    conflict_keys = distinct[distinct.duplicated()].unique()   # features seen with two or more labels
    n_conflict_groups = len(conflict_keys)
    conflict_c = pd.Series(hx).isin(conflict_keys).to_numpy() if n_conflict_groups else np.zeros(len(cand), bool)
    n_val = len(rh.val) if rh.val is not None else 0
    shared_pos = np.zeros(0, np.int64)
    if rh.val_candidates is not None and len(rh.val_candidates):
        vc = rh.val_candidates
        shared_pos = vc[pd.Series(rh.val[vc]).isin(pd.Series(hx)).to_numpy()]
    n_shared = len(shared_pos)
    dup, in_conflict = cand[dup_c], cand[conflict_c]           # positions among the training rows
    fire_dup = n_dup >= max(1.0, DUPLICATE_FRACTION * n)
    # a copy is as rare whichever side of the split it lands on: shared rows must also reach the duplicate
    # fraction of all the rows (fault zoo: iris's one known duplicate pair fired whenever the split put its
    # two copies on different sides, 1 of 30 validation rows)
    fire_shared = n_val > 0 and n_shared >= max(1.0, LEAK_ROWS_FRACTION * n_val) \
        and n_dup + n_shared >= DUPLICATE_FRACTION * (n + n_val)
    fire_conflict = n_conflict_groups >= CONFLICT_MIN_GROUPS
    if not (fire_dup or fire_shared or fire_conflict):
        return None
    parts = []
    if fire_dup:
        parts.append(f"{n_dup} of {n} training rows are duplicates ({n_dup / n:.1%})")
    if fire_shared:
        parts.append(f"{n_shared} of {n_val} validation rows also appear in training ({n_shared / n_val:.1%})")
    if fire_conflict:
        parts.append(f"{n_conflict_groups} feature vectors ({len(in_conflict)} rows) appear with different "
                     "labels")
    evidence = {
        "duplicates": {"count": n_dup, "examples": ctx.row_label(dup[:MAX_EXAMPLE_ROWS])},
        "shared_with_validation": {"count": n_shared,
                                   "examples": ctx.row_label(shared_pos[:MAX_EXAMPLE_ROWS], val=True)},
        "conflicts": {"groups": n_conflict_groups, "rows": len(in_conflict),
                      "examples": ctx.row_label(in_conflict[:MAX_EXAMPLE_ROWS])},
        "thresholds": {"duplicate_fraction": DUPLICATE_FRACTION, "shared_fraction": LEAK_ROWS_FRACTION,
                       "conflict_groups": CONFLICT_MIN_GROUPS},
    }
    fixes = []
    if fire_dup or fire_shared:
        fixes.append("drop the duplicate rows before splitting (pandas drop_duplicates)")
    if fire_conflict:
        ex = ", ".join(map(str, evidence["conflicts"]["examples"][:3]))
        fixes.append(f"check the labels of the conflicting rows (e.g. rows {ex})")
    return Finding("D110", "; ".join(parts), "; ".join(fixes), evidence=evidence)


@check("D111", needs=("data",))
def check_too_little_data(ctx: DataContext) -> Finding | None:
    """D111 too-little-data: a class with < MIN_CLASS_SAMPLES training rows, or n_params > 10 x training rows."""
    n = ctx.n_train
    if n == 0:
        return None
    parts, fixes, evidence = [], [], {}
    info = ctx.labels
    if info is not None and info.n_classes:
        small = np.flatnonzero(info.counts < MIN_CLASS_SAMPLES)
        if len(small):
            shown = ", ".join(f"{info.classes[i]!r}: {info.counts[i]}" for i in small[:5])
            parts.append(f"{len(small)} classes have fewer than {MIN_CLASS_SAMPLES} training rows ({shown})")
            fixes.append("collect more samples of the rare classes, augment them, or merge them")
            evidence["small_classes"] = {str(info.classes[i]): int(info.counts[i]) for i in small[:20]}
    if ctx.n_params is not None and ctx.n_params > PARAMS_PER_SAMPLE_LIMIT * n:
        parts.append(f"the model has {ctx.n_params} parameters for {n} training rows "
                     f"({_g(ctx.n_params / n)} per row > {_g(PARAMS_PER_SAMPLE_LIMIT)})")
        fixes.append("use a smaller model (fewer/narrower layers), more data, or augmentation; "
                     "add weight decay or dropout against memorising")
        evidence["n_params"] = ctx.n_params
    if not parts:
        return None
    evidence.update({"n_train": n, "thresholds": {"min_class_samples": MIN_CLASS_SAMPLES,
                                                  "params_per_sample": PARAMS_PER_SAMPLE_LIMIT}})
    return Finding("D111", "; ".join(parts), "; ".join(fixes), evidence=evidence)


def _sorted_neighbour_error(x: np.ndarray, codes: np.ndarray) -> tuple[float, float, int]:
    """Error of the best rule "one label per block of the sorted feature", beyond the C-1 changes it needs.

    Ties are ordered at random (seeded), so a discrete feature gains nothing from them. Returns
    (error rate, majority-baseline error rate, rows used).
    """
    ok = np.isfinite(x) & (codes >= 0)
    x, c = x[ok], codes[ok]
    n = len(x)
    if n < 3:
        return 1.0, 0.0, n
    order = np.lexsort((np.random.default_rng(SEED).random(n), x))
    s = c[order]
    changes = int((s[1:] != s[:-1]).sum())
    counts = np.bincount(c)
    n_present = int((counts > 0).sum())
    err = max(0, changes - (n_present - 1)) / n
    return err, 1.0 - counts.max() / n, n


@check("D112", needs=("data",))
def check_target_leakage(ctx: DataContext) -> Finding | None:
    """D112 target-leakage: a single feature predicts the target almost perfectly (>= 99% accuracy / |r| >= 0.99)."""
    screen = ctx.leakage_screen
    if screen is None:
        return None
    scores, _ = screen
    names = ctx.sample_names
    name = (lambda j: names[j] if j < len(names) else f"x{j}")  # noqa: E731
    hits: dict[str, dict[str, Any]] = {}
    if ctx.labels is not None:
        codes = ctx.labels.codes
        for j in np.argsort(-scores)[: int((scores >= LEAK_SCREEN_ETA2).sum())][:MAX_LEAK_CANDIDATES]:
            err, base_err, used = _sorted_neighbour_error(ctx.train_part.sample_column(int(j)), codes)
            if err <= LEAK_MAX_ERROR and err <= LEAK_BASELINE_FACTOR * base_err and used >= LEAK_MIN_ROWS:
                hits[name(int(j))] = {"accuracy": 1 - err, "baseline_accuracy": 1 - base_err,
                                      "eta2": scores[j], "rows": used}
        if not hits:
            return None
        first = next(iter(hits))
        h = hits[first]
        message = (f"{len(hits)} feature{'s' if len(hits) > 1 else ''} alone predict{'s' if len(hits) == 1 else ''} "
                   f"the labels: {first} with accuracy {_g(h['accuracy'])} (majority baseline "
                   f"{_g(h['baseline_accuracy'])}, threshold {_g(1 - LEAK_MAX_ERROR)})")
    else:
        y = ctx.regression_target[:, 0]
        for j in np.argsort(-scores)[: int((scores >= LEAK_SCREEN_R).sum())][:MAX_LEAK_CANDIDATES]:
            r = pearson(ctx.train_part.sample_column(int(j)), y)
            if r >= LEAK_MIN_ABS_R:
                hits[name(int(j))] = {"abs_r": r}
        if not hits:
            return None
        first = next(iter(hits))
        message = (f"{len(hits)} feature{'s' if len(hits) > 1 else ''} alone predict{'s' if len(hits) == 1 else ''} "
                   f"the target: {first} has |Pearson r| {hits[first]['abs_r']:.4f} >= {_g(LEAK_MIN_ABS_R)}")
    names_shown = ", ".join(list(hits)[:5])
    return Finding("D112", message,
                   f"remove {names_shown} from the features unless it is truly known at prediction time",
                   evidence={"columns": dict(list(hits.items())[:MAX_EVIDENCE_COLUMNS]),
                             "thresholds": {"max_error": LEAK_MAX_ERROR, "baseline_factor": LEAK_BASELINE_FACTOR,
                                            "min_rows": LEAK_MIN_ROWS,
                                            "screen_eta2": LEAK_SCREEN_ETA2, "screen_r": LEAK_SCREEN_R,
                                            "min_abs_r": LEAK_MIN_ABS_R}})


@check("D113", needs=("data",))
def check_train_validation_shift(ctx: DataContext) -> Finding | None:
    """D113 train-validation-shift: feature means or class frequencies differ between the splits beyond chance."""
    if not ctx.has_val or ctx.n_train == 0:
        return None
    parts, evidence = [], {}
    st, vs = ctx.train_stats, ctx.val_stats
    if st.k:
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = np.abs(st.mean - vs.mean)
            pooled = np.sqrt(((st.n_finite - 1) * st.std ** 2 + (vs.n_finite - 1) * vs.std ** 2)
                             / np.maximum(st.n_finite + vs.n_finite - 2, 1))
            smd = np.where(pooled > 0, diff / pooled, 0.0)
            # standard error of the difference in means, in samples (not pixels/steps: those are correlated)
            n_tr = np.maximum(st.n_finite / ctx.train_part.rows_per_sample, 1)
            n_va = np.maximum(vs.n_finite / ctx.val_part.rows_per_sample, 1)
            se = np.sqrt(st.std ** 2 / n_tr + vs.std ** 2 / n_va)
            z = np.where(se > 0, diff / se, 0.0)
        smd, z = np.nan_to_num(smd), np.nan_to_num(z)
        hit = (smd > SHIFT_SMD) & (z >= SHIFT_MIN_Z)
        if hit.any():
            worst = _take_worst(st.names, smd, hit)
            j = worst[0]
            parts.append(f"{int(hit.sum())} of {st.k} {_feature_word(ctx)}s shifted ({st.names[j]}: train mean "
                         f"{_g(st.mean[j])}, validation mean {_g(vs.mean[j])}, {_g(smd[j])} pooled std)")
            evidence["features"] = {st.names[i]: {"train_mean": st.mean[i], "val_mean": vs.mean[i],
                                                  "pooled_std": pooled[i], "smd": smd[i], "z": z[i]}
                                    for i in worst}
    info = ctx.labels
    if info is not None and info.val_counts is not None and info.val_counts.sum() > 0 and info.counts.sum() > 0:
        n1, n2 = info.counts.sum(), info.val_counts.sum()
        p1, p2 = info.counts / n1, info.val_counts / n2
        tvd = 0.5 * float(np.abs(p1 - p2).sum())
        p = (info.counts + info.val_counts) / (n1 + n2)
        with np.errstate(invalid="ignore", divide="ignore"):
            zc = np.nan_to_num(np.abs(p1 - p2) / np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2)))
        unseen = [info.classes[i] for i in np.flatnonzero((info.counts == 0) & (info.val_counts > 0))]
        if (tvd >= LABEL_SHIFT_TVD and zc.max() >= LABEL_SHIFT_MIN_Z) or unseen:
            txt = f"class frequencies differ (total variation {_g(tvd)})"
            if unseen:
                txt += f"; validation classes absent from training: {_short(unseen)}"
            parts.append(txt)
            evidence["labels"] = {"train": {str(c): int(k) for c, k in zip(info.classes, info.counts)},
                                  "validation": {str(c): int(k) for c, k in zip(info.classes, info.val_counts)},
                                  "tvd": tvd, "max_z": float(zc.max()), "unseen_in_train": unseen}
    if not parts:
        return None
    evidence["validation"] = ctx.ds.val_source
    evidence["thresholds"] = {"smd": SHIFT_SMD, "min_z": SHIFT_MIN_Z, "label_tvd": LABEL_SHIFT_TVD,
                              "label_min_z": LABEL_SHIFT_MIN_Z}
    fix = ("re-split the data with a shuffled, stratified split (drop data.val_path to let nn-doctor split)"
           if ctx.ds.val_source and not ctx.ds.val_source.startswith("split")
           else "check the pipeline that produced the two parts; shuffle before splitting")
    return Finding("D113", "; ".join(parts), fix, evidence=evidence)


@check("D114", needs=("data",))
def check_degenerate_target(ctx: DataContext) -> Finding | None:
    """D114 degenerate-target: a single class, or a constant regression (or multilabel) target."""
    if ctx.n_train == 0:
        return None
    info = ctx.labels
    if info is not None:
        present = int((info.counts > 0).sum())
        if present == 1:
            only = info.classes[int(np.argmax(info.counts))]
            return Finding("D114", f"every training label is {only!r} ({int(info.counts.sum())} rows): "
                           "a constant prediction scores perfectly",
                           "check the labels and how the data were collected (a filter that kept one class?)",
                           evidence={"counts": {str(only): int(info.counts.max())}, "n_classes": 1})
        return None
    if ctx.task in ("regression", "multilabel"):
        Y = ctx.y_frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        fin = np.isfinite(Y)
        with np.errstate(invalid="ignore"):
            lo = np.where(fin, Y, np.inf).min(axis=0)
            hi = np.where(fin, Y, -np.inf).max(axis=0)
        const = (fin.sum(axis=0) > 0) & (lo == hi)
        if not const.any():
            return None
        names = list(map(str, ctx.y_frame.columns))
        shown = ", ".join(f"{names[j]} = {_g(lo[j])}" for j in np.flatnonzero(const)[:5])
        return Finding("D114", f"{int(const.sum())} of {len(names)} target columns are constant ({shown})",
                       "check the target column and how the data were collected",
                       evidence={"columns": {names[j]: lo[j] for j in np.flatnonzero(const)[:MAX_EVIDENCE_COLUMNS]}})
    return None


# ---- running the step --------------------------------------------------------------------------------

def run_data_checks(ds: Dataset, report: Report, select: list[str] | None = None, ignore: list[str] | None = None,
                    n_params: int | None = None, loss_name: str | None = None,
                    n_outputs: int | None = None, spec: Any = None) -> list[Finding]:
    """Build the context once, run the enabled D1xx checks in order, and fill step 1's summary.

    With `spec`, what it already fixes is not reported: D104 when data.normalize scales the features,
    D108 with data.normalize_target, D109 with loss.class_weights. When D100 fires (no rows, or features
    and target of different lengths) the other checks do not run: nothing can be checked on rows that
    do not line up.
    """
    ctx = DataContext.build(ds, n_params=n_params, loss_name=loss_name, n_outputs=n_outputs, spec=spec)
    select, ignore = select or [], ignore or []
    report.step(Step.DATA).summary = ds.describe()
    found = run_checks(DATA_CODES[:1], ctx, report, select, ignore)
    if found or check_data_unreadable(ctx) is not None:
        return found
    if ds.tokens is not None:   # token sequences: their own checks (checks/tokens.py) instead of feature statistics
        from .tokens import NOT_FOR_TOKENS
        ctx.spec_layers = [l.model_dump(exclude_none=True) for l in spec.model.layers] \
            if spec is not None and spec.model.layers else None
        return found + run_checks([c for c in DATA_CODES[1:] if c not in NOT_FOR_TOKENS], ctx, report, select,
                                  ignore)
    from .tokens import TOKEN_CODES
    return found + run_checks([c for c in DATA_CODES[1:] if c not in TOKEN_CODES], ctx, report, select, ignore)
