"""The table-statistics engine of step 1: `DataContext`, built once from a `Dataset`, computes the statistics every check reads, once and
vectorised: per-column count/NaN/inf/mean/std/min/max/max|x|, median and MAD, robust-z outlier counts,
row hashes, label counts and the single-feature leakage scores. Each is a cached property, so a check
that is deselected costs nothing and two checks that read the same numbers share them.

How the features are viewed:

- tables: the numeric columns (bool, string, date and category columns are D103 and left out);
- arrays (N, F): one statistic per feature;
- arrays (N, T, F): one statistic per feature F, pooled over the T steps;
- arrays (N, C, H, W, ...): one statistic per channel, pooled over the pixels. Image borders are
  constant by nature, so no per-pixel table is ever built; evidence lists at most
  MAX_EVIDENCE_COLUMNS columns/channels.

The data are read in chunks of about CHUNK_ELEMENTS values, as column-major float64 blocks (columns x
rows), on WORKERS threads (numpy releases the GIL in its loops; the CSV reader uses every core too), so
the memory the checks need stays a fraction of the frame's. Medians and MADs come from a seeded sample
of at most MEDIAN_SAMPLE_ROWS rows (exact below that): the robust centre and scale of 100,000 values
are within a fraction of a percent of the full-data ones, and the outlier counts use every row.
D112's screen likewise runs on that sample; its decision reads every row of the screened columns.

It measures and never judges: the D rules in nn_doctor/checks/data.py read these statistics and decide
the findings. The only thresholds here are those a statistic is defined by (the robust z beyond which a
value counts as an outlier, the leakage screen's cuts); the rules' thresholds live with the rules.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from .data import Dataset

# ---- what the statistics are defined by ----------------------------------------------------------
ROBUST_Z_CONST = 0.6745        # robust z = 0.6745 * (x - median) / MAD (Iglewicz & Hoaglin 1993)
ROBUST_Z_LIMIT = 50.0          # far beyond the usual 3.5: clean breast_cancer's heaviest tail ('area error') reaches 38

# ---- implementation limits (not thresholds) ----------------------------------------------------
CHUNK_ELEMENTS = 1 << 19       # values per chunk (4 MiB as float64): bounds each thread's temporaries
WORKERS = min(8, os.cpu_count() or 1)  # threads for the chunked passes (numpy releases the GIL in its loops)
MEDIAN_SAMPLE_ROWS = 100_000   # median/MAD from at most this many rows of the statistics view (seeded)
LEAK_SAMPLE_VALUES = 5_000_000  # images/sequences: D112's screen reads at most this many values (~40 MB)
MAX_EVIDENCE_COLUMNS = 10      # evidence lists the worst columns only
MAX_EXAMPLE_ROWS = 5           # example row indices per duplicate/conflict kind
MAX_LEAK_CANDIDATES = 20       # D112 sorts at most this many screened columns (best first)
SEED = 0                       # the sample for medians and the tie order for D112

CLASS_INDEX_LOSSES = ("cross_entropy", "nll")
BINARY_LOSSES = ("bce", "bce_with_logits")


def python_value(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


# ---- hashing (D110) ----------------------------------------------------------------------------
# Two stages: a cheap linear hash of every row (one multiply and a sum per value), then the strong
# splitmix64-based hash only for the rows whose cheap hash is not unique. Equal rows always share the cheap
# hash, so no duplicate is missed; the strong hash separates the rows the cheap one merely collided.
# Blocks are column-major: (columns, rows), one hash per column of the block.

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_KEYS: dict[int, np.ndarray] = {}


def _column_keys(k: int) -> np.ndarray:
    """k random odd 64-bit multipliers (fixed seed), shaped (k, 1): the cheap hash's per-column weights."""
    if k not in _KEYS:
        keys = np.random.default_rng(20240601).integers(0, np.iinfo(np.uint64).max, size=k, dtype=np.uint64,
                                                        endpoint=True) | np.uint64(1)
        _KEYS[k] = keys[:, None]
    return _KEYS[k]


def _canonical_bits(B: np.ndarray, all_finite: bool) -> np.ndarray:
    B = B + 0.0                                      # -0.0 + 0.0 == +0.0 (and a fresh buffer)
    if not all_finite:
        B[np.isnan(B)] = np.nan                      # one NaN bit pattern
    return B.view(np.uint64)


def _cheap_hash(B: np.ndarray, all_finite: bool = False) -> np.ndarray:
    """One uint64 per row of a (columns, rows) float64 block: sum of value bits times a per-column key."""
    bits = _canonical_bits(B, all_finite)
    bits *= _column_keys(B.shape[0])                 # wraps modulo 2**64
    return bits.sum(axis=0, dtype=np.uint64)


def mix_hash(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * _M1
    z = z ^ (z >> np.uint64(27))
    z = z * _M2
    return z ^ (z >> np.uint64(31))


def _strong_hash(B: np.ndarray) -> np.ndarray:
    """One uint64 per row of a (columns, rows) block: splitmix64 of every value salted with its column, summed."""
    bits = _canonical_bits(B, False)
    bits ^= (np.arange(B.shape[0], dtype=np.uint64) * _GOLDEN)[:, None]
    with np.errstate(over="ignore"):
        return mix_hash(bits).sum(axis=0, dtype=np.uint64)


def _hash_values(values: Any) -> np.ndarray:
    """One uint64 per row of a Series/DataFrame/array of any dtype (pandas' hashing)."""
    if isinstance(values, np.ndarray):
        values = pd.DataFrame(values.reshape(len(values), -1)) if values.ndim > 1 else pd.Series(values)
    return pd.util.hash_pandas_object(values, index=False).to_numpy()


def _map(func: Any, items: list[Any]) -> list[Any]:
    """func over items on WORKERS threads (numpy releases the GIL in its loops), results in order."""
    if WORKERS <= 1 or len(items) <= 1:
        return [func(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(items))) as pool:
        return list(pool.map(func, items))


def _row_groups(k: int) -> list[range]:
    """k rows split into about WORKERS contiguous groups."""
    step = max(1, -(-k // WORKERS))
    return [range(a, min(k, a + step)) for a in range(0, k, step)]


# ---- the feature views ---------------------------------------------------------------------------

def is_numeric_dtype(dtype: Any) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


class _Part:
    """One split (train or validation) of the features, read as column-major float64 blocks.

    The statistics view has one column per table column / feature / channel (k of them); the sample
    view has one flattened row per sample (sample_width values). For tables and (N, F) arrays the two
    are the same ("fused"). Blocks are (columns, rows) and C-contiguous, so per-column reductions run
    along contiguous memory.
    """

    def __init__(self, X: Any, kind: str, numeric_cols: list[int]):
        self.X = X
        self.numeric_cols = numeric_cols          # table: positions of the numeric columns
        self.n = 0 if X is None else len(X)
        self._cols: list[np.ndarray] | None = None
        if kind == "table":
            self.layout = "table"
            self.k = len(numeric_cols)
            self.rows_per_sample = 1
            self.sample_width = self.k
            return
        numeric = is_numeric_dtype(X.dtype)
        self.layout = "matrix" if X.ndim == 2 else "sequence" if X.ndim == 3 else "image"
        self.sample_width = int(np.prod(X.shape[1:])) if numeric else 0
        if not numeric:
            self.k, self.rows_per_sample = 0, 1
        elif self.layout == "matrix":
            self.k, self.rows_per_sample = X.shape[1], 1
        elif self.layout == "sequence":             # (N, T, F): per feature F, pooled over T
            self.k, self.rows_per_sample = X.shape[2], X.shape[1]
        else:                                       # (N, C, H, W, ...): per channel, pooled over pixels
            self.k, self.rows_per_sample = X.shape[1], int(np.prod(X.shape[2:]))

    @property
    def fused(self) -> bool:
        return self.layout in ("table", "matrix")

    def columns(self) -> list[np.ndarray]:
        """Tables: one 1-D numpy array per numeric column, a view of the frame's memory where it can be.

        Taken once, on the calling thread, before any worker thread reads them.
        """
        if self._cols is None:
            cols = []
            for p in self.numeric_cols:
                s = self.X.iloc[:, p]
                if isinstance(s.dtype, np.dtype) and s.dtype.kind in "fiu":
                    cols.append(s.to_numpy())
                else:                                # nullable / Arrow dtypes: to float with NaN
                    cols.append(s.to_numpy(dtype=np.float64, na_value=np.nan))
            self._cols = cols
        return self._cols

    def stat_block(self, a: np.ndarray | slice, cols: list[int] | None = None) -> np.ndarray:
        """The statistics view of samples `a` (a slice or sorted positions): (k, rows) float64."""
        if self.layout == "table":
            arrays = self.columns()
            idx = list(range(self.k)) if cols is None else list(cols)
            if not idx:
                return np.empty((0, 0))
            if isinstance(a, slice):
                return np.stack([arrays[j][a] for j in idx]).astype(np.float64, copy=False)
            out = np.empty((len(idx), len(a)))       # a gather: one column per task, on the threads

            def gather(i: int) -> None:
                out[i] = arrays[idx[i]][a]

            _map(gather, list(range(len(idx))))
            return out
        part = np.asarray(self.X[a])
        if self.layout == "matrix":
            B = part.T
        elif self.layout == "sequence":
            B = part.reshape(-1, self.k).T
        else:                                       # (n, C, H, W) -> (C, n*H*W)
            B = np.moveaxis(part, 1, 0).reshape(self.k, -1)
        if cols is not None:
            B = B[cols]
        return np.ascontiguousarray(B, dtype=np.float64)

    def sample_block(self, a: np.ndarray | slice) -> np.ndarray:
        """The flattened samples `a`: (sample_width, n) float64."""
        if self.fused:
            return self.stat_block(a)
        part = np.asarray(self.X[a])
        return np.ascontiguousarray(part.reshape(len(part), -1).T, dtype=np.float64)

    def bounds(self, width: int, n: int | None = None) -> list[tuple[int, int]]:
        """Chunks of samples [a, b) holding about CHUNK_ELEMENTS values of `width` per sample."""
        n = self.n if n is None else n
        step = max(1, CHUNK_ELEMENTS // max(1, width))
        return [(a, min(n, a + step)) for a in range(0, n, step)]

    def sample_positions(self, max_samples: int) -> np.ndarray | None:
        """A seeded, sorted sample of at most `max_samples` sample positions; None means all of them."""
        max_samples = max(1, max_samples)
        if self.n <= max_samples:
            return None
        return np.sort(np.random.default_rng(SEED).choice(self.n, size=max_samples, replace=False))

    def sample_column(self, j: int) -> np.ndarray:
        """All values of flattened feature j, float64 (D112 sorts a few candidate columns)."""
        if self.layout == "table":
            return self.columns()[j].astype(np.float64)
        return self.X.reshape(self.n, -1)[:, j].astype(np.float64)


@dataclass
class ColumnStats:
    """Per stat column (table column / feature / channel) statistics of one split; arrays of shape (k,)."""

    names: list[str]
    n_rows: int                 # rows of the statistics view (samples x steps/pixels)
    n_nan: np.ndarray
    n_inf: np.ndarray
    n_finite: np.ndarray
    mean: np.ndarray            # over finite values
    std: np.ndarray             # sample std (ddof 1) over finite values
    min: np.ndarray
    max: np.ndarray
    max_abs: np.ndarray
    median: np.ndarray          # from MEDIAN_SAMPLE_ROWS rows at most (NaN for the validation split)
    mad: np.ndarray             # median |x - median|
    robust_scale: np.ndarray    # the MAD, or for MAD = 0 the median |x - median| of the values off the median
    n_outliers: np.ndarray      # values with robust z > ROBUST_Z_LIMIT, counted over every row
    max_robust_z: np.ndarray

    @property
    def k(self) -> int:
        return len(self.names)


def _median_and_scale(S: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Medians, MADs and robust scales of the rows of a (k, n) sample block (NaN/inf ignored)."""
    k = S.shape[0]
    if k == 0 or S.shape[1] == 0:
        nan = np.full(k, np.nan)
        return nan, nan, nan

    def nanmedian(A: np.ndarray) -> np.ndarray:
        if not np.isnan(A).any():
            return np.median(A, axis=1)
        A = np.sort(A, axis=1)                      # NaN sorts last: take the middle of the finite part
        n = (~np.isnan(A)).sum(axis=1)
        lo, hi = np.maximum((n - 1) // 2, 0), np.maximum(n // 2, 0)
        rows = np.arange(A.shape[0])
        return np.where(n > 0, (A[rows, lo] + A[rows, hi]) / 2, np.nan)

    def rows(r: range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        A = S[r.start:r.stop]
        A = np.where(np.isfinite(A), A, np.nan)
        med = nanmedian(A)
        dev = np.abs(A - med[:, None])
        mad = nanmedian(dev)
        scale = mad.copy()
        for j in np.flatnonzero(mad == 0):          # mostly-constant rows (indicators, sparse counts)
            off = dev[j][dev[j] > 0]
            scale[j] = np.median(off) if len(off) else np.nan
        return med, mad, scale

    out = _map(rows, _row_groups(k))
    return tuple(np.concatenate([o[i] for o in out]) for i in range(3))  # type: ignore[return-value]


def _scan(part: _Part, shift: np.ndarray, want_hashes: bool) -> dict[str, Any]:
    """One pass over the statistics view in chunks (on WORKERS threads): counts, shifted moments, min/max,
    and (optionally) the cheap hash of every sample.

    Sums are of D = x - shift with the shift near the centre (the sample median, or the training mean),
    so sum(D^2) - sum(D)^2/n loses no precision to large offsets.
    """
    k = part.k
    shift = np.where(np.isfinite(shift), shift, 0.0)[:, None]
    hashes = np.zeros(part.n, np.uint64) if want_hashes else None
    if part.layout == "table":
        part.columns()                              # taken before the threads start

    def chunk(ab: tuple[int, int]) -> tuple[Any, ...]:
        a, b = ab
        B = part.stat_block(slice(a, b))           # (k, rows)
        r = B.shape[1]
        fin = np.isfinite(B)
        all_fin = bool(fin.all())
        D = B - shift
        if all_fin:
            n_nan, n_fin = np.zeros(k, np.int64), np.full(k, r, np.int64)
            lo, hi = B.min(axis=1), B.max(axis=1)
        else:
            n_nan, n_fin = np.isnan(B).sum(axis=1), fin.sum(axis=1)
            D[~fin] = 0.0
            lo = np.where(fin, B, np.inf).min(axis=1)
            hi = np.where(fin, B, -np.inf).max(axis=1)
        if hashes is not None:
            hashes[a:b] = _cheap_hash(B, all_fin)
        return r, n_nan, n_fin, D.sum(axis=1), np.einsum("ij,ij->i", D, D), lo, hi

    parts = _map(chunk, part.bounds(k * part.rows_per_sample)) if k and part.n else []
    n_rows = sum(p[0] for p in parts)
    n_nan = sum((p[1] for p in parts), np.zeros(k, np.int64))
    n_fin = sum((p[2] for p in parts), np.zeros(k, np.int64))
    s1 = sum((p[3] for p in parts), np.zeros(k))
    s2 = sum((p[4] for p in parts), np.zeros(k))
    lo = np.min([p[5] for p in parts], axis=0) if parts else np.full(k, np.inf)
    hi = np.max([p[6] for p in parts], axis=0) if parts else np.full(k, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        d_mean = np.where(n_fin > 0, s1 / np.maximum(n_fin, 1), np.nan)
        ssq = np.maximum(s2 - s1 * np.nan_to_num(d_mean), 0.0)
        std = np.where(n_fin > 1, np.sqrt(ssq / np.maximum(n_fin - 1, 1)), np.nan)
    return {"n_rows": n_rows, "n_nan": n_nan, "n_inf": n_rows - n_fin - n_nan, "n_finite": n_fin,
            "mean": shift[:, 0] + d_mean, "std": std, "min": np.where(n_fin > 0, lo, np.nan),
            "max": np.where(n_fin > 0, hi, np.nan), "hashes": hashes}


def _column_stats(part: _Part, names: list[str], shift: np.ndarray,
                  robust: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                  want_hashes: bool) -> tuple[ColumnStats, np.ndarray | None]:
    """The statistics of one split (one pass), then robust-z outlier counts where some value is beyond."""
    k = part.k
    m = _scan(part, shift, want_hashes)
    lo, hi = m["min"], m["max"]
    med, mad, scale = robust if robust is not None else (np.full(k, np.nan),) * 3
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_scale = np.where(scale > 0, ROBUST_Z_CONST / np.where(scale > 0, scale, 1.0), np.nan)
        max_z = np.fmax(hi - med, med - lo) * inv_scale        # the farthest value is the min or the max
    n_out = np.zeros(k, np.int64)
    over = np.flatnonzero(np.nan_to_num(max_z) > ROBUST_Z_LIMIT).tolist()
    if over:                                                   # a second look only at those columns

        def count(ab: tuple[int, int]) -> np.ndarray:
            B = part.stat_block(slice(*ab), cols=over)
            with np.errstate(invalid="ignore"):
                z = np.abs(B - med[over, None]) * inv_scale[over, None]
            return (np.nan_to_num(z, nan=0.0, posinf=0.0) > ROBUST_Z_LIMIT).sum(axis=1)

        n_out[over] = sum(_map(count, part.bounds(len(over) * part.rows_per_sample)))
    stats = ColumnStats(names=names, n_rows=m["n_rows"], n_nan=m["n_nan"], n_inf=m["n_inf"],
                        n_finite=m["n_finite"], mean=m["mean"], std=m["std"], min=lo, max=hi,
                        max_abs=np.fmax(np.abs(lo), np.abs(hi)), median=med, mad=mad, robust_scale=scale,
                        n_outliers=n_out, max_robust_z=max_z)
    return stats, m["hashes"]


def _leak_scores(S: np.ndarray, codes: np.ndarray | None, y: np.ndarray | None) -> np.ndarray:
    """Per row of a (features, samples) block: eta^2 with the class codes, or |Pearson r| with y.

    NaN/inf values and missing labels/targets are left out. Runs over groups of features on the threads.
    """
    keep = np.flatnonzero((codes >= 0) if codes is not None else np.isfinite(y))
    if codes is not None:
        c = codes[keep]
        order = np.argsort(c, kind="stable")
        keep = keep[order]                                     # samples grouped by class
        starts = np.flatnonzero(np.r_[True, np.diff(c[order]) != 0])   # one segment per present class
    else:
        yk = y[keep]

    def group(r: range) -> np.ndarray:
        A = S[r.start:r.stop][:, keep]
        fin = np.isfinite(A)
        F = fin.astype(np.float64)
        n = F.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            X = np.where(fin, A, 0.0)
            X = np.where(fin, X - (X.sum(axis=1) / np.maximum(n, 1))[:, None], 0.0)
            if codes is not None:
                cn = np.add.reduceat(F, starts, axis=1)
                cs = np.add.reduceat(X, starts, axis=1)
                cq = np.add.reduceat(X * X, starts, axis=1)
                tq = cq.sum(axis=1)
                sst = tq - cs.sum(axis=1) ** 2 / np.maximum(n, 1)
                ssw = (cq - np.where(cn > 0, cs * cs / np.maximum(cn, 1), 0.0)).sum(axis=1)
                score = np.where(sst > 1e-12 * np.maximum(tq, 1e-300), 1.0 - ssw / sst, 0.0)
                return np.clip(np.nan_to_num(score), 0.0, 1.0)
            my = np.einsum("kn,n->k", F, yk) / np.maximum(n, 1)
            dy = np.where(fin, yk[None, :] - my[:, None], 0.0)
            cov = np.einsum("kn,kn->k", X, dy)
            vx = np.einsum("kn,kn->k", X, X)
            vy = np.einsum("kn,kn->k", dy, dy)
            r_ = np.where((vx > 0) & (vy > 0) & (n > 2), cov / np.sqrt(vx * vy), 0.0)
        return np.abs(np.nan_to_num(r_))

    k = S.shape[0]
    if k == 0 or len(keep) == 0:
        return np.zeros(k)
    return np.concatenate(_map(group, _row_groups(k)))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return 0.0
    dx, dy = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    den = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float(abs((dx * dy).sum()) / den) if den > 0 else 0.0


@dataclass
class RowHashes:
    """Feature hashes of every training/validation sample, and the samples that can be duplicates.

    A sample whose cheap hash is unique (in training, and absent from validation) cannot equal another,
    so D110 only needs to look at the candidates.
    """

    train: np.ndarray
    val: np.ndarray | None
    train_candidates: np.ndarray          # positions, sorted
    val_candidates: np.ndarray | None


@dataclass
class LabelInfo:
    """Class labels of a classification/binary task with a 1-D target."""

    classes: list[Any]          # sorted distinct labels of train + validation
    codes: np.ndarray           # train labels as indices into `classes`; -1 where missing
    counts: np.ndarray          # per class, train
    val_codes: np.ndarray | None
    val_counts: np.ndarray | None
    dtype: Any                  # the target's dtype as read

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _as_series(y: Any) -> pd.Series:
    if isinstance(y, pd.Series):
        return y
    if isinstance(y, pd.DataFrame):
        return y.iloc[:, 0]
    return pd.Series(np.asarray(y).reshape(len(y), -1)[:, 0] if np.ndim(y) > 1 else np.asarray(y))


def is_2d_target(y: Any) -> bool:
    if isinstance(y, pd.DataFrame):
        return y.shape[1] > 1
    return isinstance(y, np.ndarray) and y.ndim > 1 and int(np.prod(y.shape[1:])) > 1


def _target_frame(y: Any, names: list[str]) -> pd.DataFrame:
    if isinstance(y, pd.DataFrame):
        return y
    if isinstance(y, pd.Series):
        return y.to_frame(name=names[0] if names else (y.name or "target"))
    arr = np.asarray(y).reshape(len(y), -1)
    cols = names if len(names) == arr.shape[1] else \
        [(names[0] if names else "target") + (f"[{i}]" if arr.shape[1] > 1 else "") for i in range(arr.shape[1])]
    return pd.DataFrame(arr, columns=cols)


# ---- the context ---------------------------------------------------------------------------------

@dataclass
class DataContext:
    """Everything the D1xx checks read, computed once (lazily) from a Dataset."""

    ds: Dataset
    n_params: int | None = None         # the model's parameter count, when a spec is known
    loss_name: str | None = None        # the spec's loss (cross_entropy, bce, mse, ...)
    n_outputs: int | None = None        # the model's output units
    # what the spec already does about it (None: no spec): the data are judged as training will see them
    normalize: str | None = None        # data.normalize: none | standardize | minmax
    normalize_target: bool = False      # data.normalize_target
    class_weights: Any = None           # loss.class_weights
    missing: str | None = None          # data.missing: keep | drop | median
    label_map: Any = None               # data.label_map

    @classmethod
    def build(cls, ds: Dataset, n_params: int | None = None, loss_name: str | None = None,
              n_outputs: int | None = None, spec: Any = None) -> "DataContext":
        """The context for `ds`; with a spec, its loss and data settings (normalize, class_weights) too."""
        ctx = cls(ds=ds, n_params=n_params, loss_name=loss_name, n_outputs=n_outputs)
        if spec is not None:
            ctx.loss_name = loss_name or getattr(getattr(spec, "loss", None), "name", None)
            data = getattr(spec, "data", None)
            ctx.normalize = getattr(data, "normalize", None)
            ctx.normalize_target = bool(getattr(data, "normalize_target", False))
            ctx.class_weights = getattr(getattr(spec, "loss", None), "class_weights", None)
            ctx.missing = getattr(data, "missing", None)
            ctx.label_map = getattr(data, "label_map", None)
        return ctx

    @property
    def features_scaled_by_spec(self) -> bool:
        return self.normalize in ("standardize", "minmax")

    # -- shape -----------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.ds.task

    @property
    def n_train(self) -> int:
        return 0 if self.ds.X is None else len(self.ds.X)

    @property
    def has_val(self) -> bool:
        return self.ds.X_val is not None and len(self.ds.X_val) > 0

    @property
    def target_name(self) -> str:
        return ", ".join(map(str, self.ds.target)) or "target"

    @cached_property
    def non_numeric(self) -> list[dict[str, Any]]:
        """Feature columns that are not numbers: name, dtype, an example value (tables); the array dtype."""
        X = self.ds.X
        out: list[dict[str, Any]] = []
        if self.ds.kind == "table":
            for name, dtype in X.dtypes.items():
                if not is_numeric_dtype(dtype):
                    col = X[name]
                    first = col.first_valid_index()
                    example = python_value(col.loc[first]) if first is not None else None
                    if isinstance(example, (pd.Timestamp, np.datetime64)):
                        example = str(example)
                    out.append({"column": str(name), "dtype": str(dtype), "example": example})
        elif not is_numeric_dtype(X.dtype):
            flat = X.reshape(-1)
            out.append({"column": "X", "dtype": str(X.dtype), "example": python_value(flat[0]) if len(flat) else None})
        return out

    @cached_property
    def numeric_positions(self) -> list[int]:
        if self.ds.kind != "table":
            return []
        return [i for i, dt in enumerate(self.ds.X.dtypes) if is_numeric_dtype(dt)]

    @cached_property
    def train_part(self) -> _Part:
        return _Part(self.ds.X, self.ds.kind, self.numeric_positions)

    @cached_property
    def val_part(self) -> _Part | None:
        return _Part(self.ds.X_val, self.ds.kind, self.numeric_positions) if self.has_val else None

    @property
    def layout(self) -> str:
        return self.train_part.layout

    @cached_property
    def stat_names(self) -> list[str]:
        part = self.train_part
        if part.layout == "table":
            return [str(self.ds.X.columns[i]) for i in self.numeric_positions]
        if part.layout == "matrix":
            names = self.ds.feature_names
            return names if len(names) == part.k else [f"x{i}" for i in range(part.k)]
        if part.layout == "sequence":
            return [f"feature {i}" for i in range(part.k)]
        return [f"channel {i}" for i in range(part.k)]

    @cached_property
    def sample_names(self) -> list[str]:
        """Names of the flattened per-sample features (D112)."""
        if self.layout in ("table", "matrix"):
            return self.stat_names
        shape = self.ds.X.shape[1:]
        width = self.train_part.sample_width
        return ["x[" + ",".join(map(str, np.unravel_index(j, shape))) + "]" for j in range(width)] \
            if width <= 100_000 else []

    # -- feature statistics ----------------------------------------------------------------------
    @cached_property
    def _train_positions(self) -> np.ndarray | None:
        """The seeded sample of training samples behind the medians (None: all of them)."""
        return self.train_part.sample_positions(MEDIAN_SAMPLE_ROWS // self.train_part.rows_per_sample)

    @cached_property
    def train_sample(self) -> np.ndarray:
        """The training statistics view for medians, (k, rows): all rows, or about MEDIAN_SAMPLE_ROWS sampled."""
        pos = self._train_positions
        return self.train_part.stat_block(slice(0, self.n_train) if pos is None else pos)

    @cached_property
    def _train_pass(self) -> tuple[ColumnStats, np.ndarray | None]:
        part = self.train_part
        robust = _median_and_scale(self.train_sample) if part.k and part.n else None
        shift = robust[0] if robust is not None else np.zeros(part.k)
        return _column_stats(part, self.stat_names, shift, robust, want_hashes=part.fused)

    @cached_property
    def _val_pass(self) -> tuple[ColumnStats, np.ndarray | None] | None:
        if self.val_part is None:
            return None
        return _column_stats(self.val_part, self.stat_names, self.train_stats.mean, None,
                             want_hashes=self.val_part.fused)

    @property
    def train_stats(self) -> ColumnStats:
        return self._train_pass[0]

    @property
    def val_stats(self) -> ColumnStats | None:
        return self._val_pass[0] if self._val_pass is not None else None

    # -- target ------------------------------------------------------------------------------------
    @cached_property
    def y_frame(self) -> pd.DataFrame:
        return _target_frame(self.ds.y, [str(t) for t in self.ds.target])

    @cached_property
    def y_val_frame(self) -> pd.DataFrame | None:
        return _target_frame(self.ds.y_val, [str(t) for t in self.ds.target]) if self.ds.y_val is not None else None

    @cached_property
    def target_missing(self) -> dict[str, int]:
        """Target column -> missing cells (NaN/None), train and validation together."""
        return self._target_counts(lambda col: int(col.isna().sum()))

    @cached_property
    def target_infinite(self) -> dict[str, int]:
        """Numeric target column -> +/-inf cells, train and validation together."""
        return self._target_counts(lambda col: int(np.isinf(col.to_numpy(dtype=np.float64, na_value=np.nan)).sum())
                                   if is_numeric_dtype(col.dtype) else 0)

    def _target_counts(self, count) -> dict[str, int]:
        out: dict[str, int] = {}
        for frame in (self.y_frame, self.y_val_frame):
            if frame is None:
                continue
            for c in frame.columns:
                n = count(frame[c])
                if n:
                    out[str(c)] = out.get(str(c), 0) + n
        return out

    @cached_property
    def labels(self) -> LabelInfo | None:
        if self.task not in ("classification", "binary") or is_2d_target(self.ds.y):
            return None
        ytr = _as_series(self.ds.y)
        yva = _as_series(self.ds.y_val) if self.ds.y_val is not None else None
        values = pd.concat([ytr, yva]) if yva is not None else ytr
        uniq = pd.unique(values.dropna())
        try:
            classes = sorted(uniq.tolist())
        except TypeError:
            classes = sorted(uniq.tolist(), key=lambda v: (str(type(v)), str(v)))
        index = pd.Index(classes, dtype=object if values.dtype == object else None)
        codes = index.get_indexer(ytr)
        counts = np.bincount(codes[codes >= 0], minlength=len(classes))
        vcodes = index.get_indexer(yva) if yva is not None else None
        vcounts = np.bincount(vcodes[vcodes >= 0], minlength=len(classes)) if vcodes is not None else None
        return LabelInfo(classes=[python_value(c) for c in classes], codes=codes, counts=counts, val_codes=vcodes,
                         val_counts=vcounts, dtype=ytr.dtype)

    @cached_property
    def regression_target(self) -> np.ndarray | None:
        """Train target as float64 (N, k) for regression; non-numbers become NaN."""
        if self.task != "regression":
            return None
        return self.y_frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    # -- rows (D110) -------------------------------------------------------------------------------
    def _cheap_hashes(self, part: _Part, fused_pass: tuple[ColumnStats, np.ndarray | None] | None) -> np.ndarray:
        if part.sample_width == 0:
            return np.zeros(part.n, np.uint64)
        if part.fused and fused_pass is not None and fused_pass[1] is not None:
            return fused_pass[1]
        h = np.zeros(part.n, np.uint64)

        def chunk(ab: tuple[int, int]) -> None:
            h[ab[0]:ab[1]] = _cheap_hash(part.sample_block(slice(*ab)))

        _map(chunk, part.bounds(part.sample_width))
        return h

    def _strong_hashes(self, part: _Part, positions: np.ndarray) -> np.ndarray:
        if part.layout == "table":
            part.columns()
        out = np.zeros(len(positions), np.uint64)

        def chunk(ab: tuple[int, int]) -> None:
            out[ab[0]:ab[1]] = _strong_hash(part.sample_block(positions[ab[0]:ab[1]]))

        _map(chunk, part.bounds(part.sample_width, len(positions)))
        return out

    def _other_column_hashes(self, X: Any, part: _Part) -> np.ndarray | None:
        """Hash of the non-numeric feature columns (tables) or of a non-numeric array, per row."""
        if self.ds.kind == "table":
            others = [i for i in range(X.shape[1]) if i not in set(self.numeric_positions)]
            if not others:
                return None
            h = np.zeros(part.n, np.uint64)
            with np.errstate(over="ignore"):
                for i in others:
                    h += mix_hash(_hash_values(X.iloc[:, i]) ^ (np.uint64(i + 1) * _GOLDEN))
            return h
        return _hash_values(X.reshape(len(X), -1)) if part.sample_width == 0 else None

    @cached_property
    def row_hashes(self) -> RowHashes:
        """Feature hashes per sample: the cheap hash, made strong where it repeats (the candidates)."""
        tr, va = self.train_part, self.val_part
        h_tr = self._cheap_hashes(tr, self._train_pass if tr.fused else None).copy()
        h_va = self._cheap_hashes(va, self._val_pass if va.fused else None).copy() if va is not None else None
        s_tr = pd.Series(h_tr)
        cand_tr = s_tr.duplicated(keep=False).to_numpy()
        cand_va = None
        if h_va is not None:
            cand_va = pd.Series(h_va).isin(s_tr).to_numpy()
            if cand_va.any():
                cand_tr = cand_tr | s_tr.isin(h_va[cand_va]).to_numpy()
                if va.sample_width:
                    pos = np.flatnonzero(cand_va)
                    h_va[pos] = self._strong_hashes(va, pos)
        if cand_tr.any() and tr.sample_width:
            pos = np.flatnonzero(cand_tr)
            h_tr[pos] = self._strong_hashes(tr, pos)
        with np.errstate(over="ignore"):
            extra = self._other_column_hashes(self.ds.X, tr)
            if extra is not None:
                h_tr = h_tr + extra
            if h_va is not None:
                extra = self._other_column_hashes(self.ds.X_val, va)
                if extra is not None:
                    h_va = h_va + extra
        return RowHashes(train=h_tr, val=h_va, train_candidates=np.flatnonzero(cand_tr),
                         val_candidates=np.flatnonzero(cand_va) if cand_va is not None else None)

    @cached_property
    def target_hashes(self) -> np.ndarray:
        return _hash_values(self.ds.y)

    def row_label(self, positions: np.ndarray, val: bool = False) -> list[Any]:
        """Row identifiers for evidence: the table's index labels (original rows), else positions."""
        X = self.ds.X_val if val else self.ds.X
        if self.ds.kind == "table" and X is not None:
            return [python_value(v) for v in X.index[positions]]
        return [int(p) for p in positions]

    # -- leakage (D112) ----------------------------------------------------------------------------
    def _leak_target(self) -> dict[str, Any] | None:
        if self.labels is not None:
            return {"codes": self.labels.codes, "n_classes": self.labels.n_classes} \
                if self.labels.n_classes >= 2 else None
        Y = self.regression_target
        return {"y": Y[:, 0]} if Y is not None and Y.shape[1] == 1 else None

    @cached_property
    def leakage_screen(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(scores, sample positions): eta^2 or |r| of each flattened feature with the target, on a sample.

        The screen only picks candidates; D112 decides on every row of those columns.
        """
        part = self.train_part
        target = self._leak_target()
        if part.sample_width == 0 or self.n_train < 3 or target is None:
            return None
        if part.fused:
            pos, S = self._train_positions, self.train_sample
        else:
            pos = part.sample_positions(LEAK_SAMPLE_VALUES // part.sample_width)
            S = part.sample_block(slice(0, part.n) if pos is None else pos)
        take = (lambda v: v) if pos is None else (lambda v: v[pos])  # noqa: E731
        if "codes" in target:
            return _leak_scores(S, take(target["codes"]), None), pos
        return _leak_scores(S, None, take(target["y"])), pos
