"""Load the data a spec names, split it, infer the task, and turn it into numeric arrays.

Two stages, because step 1 must see the data as the user has it while the probes need numbers:

- `load_dataset` -> `Dataset`: the raw features/target as read (a DataFrame for tables, arrays for
  .npz/.npy), split into train/validation. The D1xx checks run on this.
- `prepare_arrays` -> `ArrayData`: float32 features, encoded labels, and the list of repairs made so
  the probes can still run on faulty data (rows with NaN dropped, labels mapped to 0..C-1, ...).

No torch import here: `check-data` never needs it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError
from . import fmt

TABLE_SUFFIXES = {".csv", ".tsv", ".txt", ".parquet", ".pq"}
ARRAY_SUFFIXES = {".npz", ".npy"}

# Task inference. A target is read as class labels when it has few distinct values relative to
# its size; the cut-offs are the usual ones of sklearn's `type_of_target` spirit, made explicit.
MAX_CLASSES = 100            # more distinct integer values than this reads as a regression target
MAX_CLASS_FRACTION = 0.5     # ... or when distinct values exceed half the rows (ids, counts)
MAX_FLOAT_CLASSES = 20       # integer-valued floats with at most this many values read as labels


@dataclass
class TokenInfo:
    """Token data (integer sequences, X of shape (N, T)): the vocabulary and padding as the spec gives them.

    vocab_size: data.vocab_size, else inferred as the largest id + 1 (train and validation); model_vocab /
    model_padding_idx: those of the model's embedding layer (None without one)."""

    vocab_size: int | None = None
    vocab_declared: bool = False
    pad_id: int | None = None
    model_vocab: int | None = None
    model_padding_idx: int | None = None
    padded: bool = False              # shorter Parquet sequences were padded with pad_id when read

    @property
    def limit(self) -> int | None:
        """Ids must be below this: the smaller of the declared vocabulary and the embedding's."""
        limits = [v for v in ((self.vocab_size if self.vocab_declared else None), self.model_vocab) if v]
        return min(limits) if limits else None


@dataclass
class Dataset:
    source: str                       # the path shown in messages
    kind: str                         # "table" | "array"
    X: Any                            # DataFrame (table) or ndarray (N, ...) — training part, raw
    y: Any                            # Series/DataFrame (table) or ndarray — training part, raw
    X_val: Any = None                 # validation part, same types; None when there is none
    y_val: Any = None
    task: str = "classification"
    task_inferred: bool = True
    target: list[str] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    val_source: str = "split"         # "split (20%, stratified)" or the validation file
    n_rows_read: int = 0              # before max_rows sampling
    tokens: TokenInfo | None = None   # token data: what the spec says about the ids (None: not token data)
    notes: list[str] = field(default_factory=list)   # what reading did that the user should know (a sample taken,
                                                     # a column read as text by check_types, ...)

    @property
    def n_train(self) -> int:
        return len(self.y)

    @property
    def n_val(self) -> int:
        return 0 if self.y_val is None else len(self.y_val)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        if self.kind == "table":
            return (self.X.shape[1],)
        return tuple(self.X.shape[1:])

    def describe(self) -> str:
        shape = "×".join(str(s) for s in self.sample_shape)
        feats = f"{self.X.shape[1]} features" if self.kind == "table" else f"samples {shape}"
        val = f", {self.n_val} validation" if self.n_val else ""
        return f"{self.n_train} train rows{val}, {feats}, {self.task}"


# ---- reading files --------------------------------------------------------------------------

def _check_file(path: Path, what: str = "data file") -> None:
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    if path.is_dir():
        raise DataError(f"{what} is a directory, not a file: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{what} is empty (0 bytes): {path}")


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return b"\x00" in head


def read_table(path: Path) -> pd.DataFrame:
    """CSV/TSV through pyarrow's parser (multi-threaded, fast on big files), Parquet through pyarrow."""
    _check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            if _looks_binary(path):
                raise DataError(f"{path}: looks like a binary file, not {suffix[1:].upper()} text")
            sep = "\t" if suffix == ".tsv" else ","
            try:
                frame = pd.read_csv(path, sep=sep, engine="pyarrow")
            except (pd.errors.EmptyDataError, ValueError, Exception) as err:  # pyarrow is strict; C parser next
                if isinstance(err, DataError):
                    raise
                frame = pd.read_csv(path, sep=sep, low_memory=False)
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: no columns to read (the file is empty or blank)") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (is it a binary file?)") from None
    except Exception as err:  # parser errors of all kinds: one line, naming the file
        raise DataError(f"{path}: cannot parse: {str(err).splitlines()[0]}") from None
    if frame.shape[1] == 0:
        raise DataError(f"{path}: no columns")
    if len(frame) == 0:
        raise DataError(f"{path}: has a header but no data rows")
    if not frame.index.is_unique:     # a Parquet file may carry a stored index with repeats: rows by position
        frame = frame.reset_index(drop=True)
    return frame


# ---- value types ---------------------------------------------------------------------------------
# What the data may hold (findings.md D103; issue "hostile input"). Per column or array:
#
#   numbers (int, uint, float), bool            used as they are
#   strings, categories                         features: D103 (non-numeric); target: class labels
#   dates, durations                            features: D103; target: refused (a date is no label or number)
#   complex numbers                             refused, features or target (casting drops the imaginary part)
#   nested cells (lists, dicts, arrays, sets)   features: read as their text, said in the report, and D103
#                                               names the column; target: refused (one value per row)
#   structured / raw-bytes arrays (.npz)        refused
#
# "Refused" is a DataError: exit 2 in check-data, D100 in full-report; never a crash inside a check.
NESTED_CELL_TYPES = (list, tuple, dict, set, frozenset, np.ndarray)
TYPE_SCAN_ROWS = 1000     # object columns: the first this-many non-missing cells are inspected for nested
                          # values (a column of lists is lists throughout; the scan stays cheap on big files)


def _kind_word(dtype: Any) -> str | None:
    """'complex numbers' | 'dates' | 'durations' | 'structured records' | None (acceptable)."""
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return "dates"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "durations"
    if pd.api.types.is_complex_dtype(dtype):
        return "complex numbers"
    if isinstance(dtype, np.dtype) and dtype.kind == "V":
        return "structured records" if dtype.names else "raw bytes"
    if isinstance(dtype, pd.PeriodDtype) or isinstance(dtype, pd.IntervalDtype):
        return "periods or intervals"
    return None


def _nested_example(col: pd.Series) -> Any:
    """The first nested cell (list, dict, array, ...) of an object column among its first TYPE_SCAN_ROWS
    non-missing cells, or None."""
    if col.dtype != object and not isinstance(col.dtype, pd.ArrowDtype):
        return None
    head = col.dropna().iloc[:TYPE_SCAN_ROWS] if col.dtype == object else col.iloc[:TYPE_SCAN_ROWS]
    for v in head.tolist():
        if isinstance(v, NESTED_CELL_TYPES):
            return v
    return None


def _example_text(v: Any, limit: int = 40) -> str:
    text = repr(v.tolist() if isinstance(v, np.ndarray) else v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _as_text(col: pd.Series) -> pd.Series:
    """A column of nested cells as text: arrays as lists, missing cells kept missing."""
    return col.map(lambda v: v if v is None or (isinstance(v, float) and v != v)
                   else repr(v.tolist() if isinstance(v, np.ndarray) else v)).astype(object)


def check_types(X: Any, y: Any, source: str, kind: str, conversions: list[str]) -> tuple[Any, Any]:
    """Refuse or convert the value types the table above names; returns (X, y), converted where said."""
    if kind == "array":
        what = _kind_word(X.dtype)
        if what in ("complex numbers", "structured records", "raw bytes"):
            raise DataError(f"{source}: X holds {what} ({X.dtype}); the probes train on real numbers"
                            + ("; split real and imaginary parts into two features" if what.startswith("complex")
                               else "; save a plain numeric array"))
        if 0 in X.shape[1:]:
            raise DataError(f"{source}: X has no features: its samples have shape {tuple(X.shape[1:])}")
        y = np.asarray(y)
        if y.ndim == 0 or y.ndim > 2:
            raise DataError(f"{source}: the target must be (samples,) or (samples, outputs); got shape {y.shape}")
        if y.ndim == 2 and y.shape[1] == 0:
            raise DataError(f"{source}: the target has no columns (shape {y.shape})")
        what = _kind_word(y.dtype)
        if what is not None:
            raise DataError(f"{source}: the target holds {what} ({y.dtype}); a target must be numbers or "
                            f"class labels")
        return X, y
    # tables
    frame_y = y.to_frame() if isinstance(y, pd.Series) else y
    for c in frame_y.columns:
        col = frame_y[c]
        what = _kind_word(col.dtype)
        nested = _nested_example(col)
        if what is not None or nested is not None:
            held = what or f"{type(nested).__name__}s (e.g. {_example_text(nested)})"
            hint = ("; for several 0/1 targets list their columns (data.target: [a, b, c])" if nested is not None
                    else "; convert it to numbers (e.g. days since a date) or class labels")
            raise DataError(f"{source}: target column {str(c)!r} holds {held}; a target must be one number or "
                            f"class label per row{hint}")
    converted = []
    for c in X.columns:
        col = X[c]
        if pd.api.types.is_complex_dtype(col.dtype):
            raise DataError(f"{source}: feature column {str(c)!r} holds complex numbers; the probes train on "
                            f"real numbers: split it into real and imaginary columns")
        if _nested_example(col) is not None:
            converted.append(c)
    if converted:
        X = X.copy()
        for c in converted:
            X[c] = _as_text(X[c])
        names = ", ".join(map(str, converted[:5])) + (" ..." if len(converted) > 5 else "")
        conversions.append(f"feature column{'s' * (len(converted) > 1)} {names} hold{'s' * (len(converted) == 1)} "
                           f"lists, dicts or arrays: read as text for the checks (D103 names "
                           f"{'them' if len(converted) > 1 else 'it'}; the probes leave "
                           f"{'them' if len(converted) > 1 else 'it'} out)")
    return X, y


def read_arrays(path: Path, x_key: str, y_key: str, target: Any) -> tuple[np.ndarray, np.ndarray]:
    _check_file(path)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.keys())
                if x_key not in npz:
                    raise DataError(f"{path}: no array '{x_key}' (arrays: {', '.join(keys)}); set data.x_key")
                y_name = target if isinstance(target, str) and target in npz else y_key
                if y_name not in npz:
                    raise DataError(f"{path}: no target array '{y_name}' (arrays: {', '.join(keys)}); "
                                    f"set data.target or data.y_key")
                X, y = npz[x_key], npz[y_name]
        else:  # .npy: X only; the labels come from data.target, a path to a .npy beside it
            X = np.load(path, allow_pickle=False)
            if not isinstance(target, str) or not target.endswith(".npy"):
                raise DataError(f"{path}: a .npy holds only X; set data.target to the .npy file with the labels")
            ypath = Path(target) if Path(target).is_absolute() else path.parent / target
            _check_file(ypath, "target file")
            y = np.load(ypath, allow_pickle=False)
    except DataError:
        raise
    except ValueError as err:
        raise DataError(f"{path}: cannot load arrays: {str(err).splitlines()[0]}") from None
    except Exception as err:
        raise DataError(f"{path}: not a valid {path.suffix} file: {str(err).splitlines()[0]}") from None
    if X.ndim < 2:
        raise DataError(f"{path}: X must have a sample axis and at least one feature axis, got shape {X.shape}")
    if len(X) == 0:
        raise DataError(f"{path}: X has no samples")
    if y.ndim == 0:
        raise DataError(f"{path}: the target is a single value, not one per sample (shape ())")
    if len(X) != len(y):
        raise DataError(f"{path}: X has {len(X)} samples but the target has {len(y)}")
    return X, y


# ---- task inference ---------------------------------------------------------------------------

def infer_task(y: Any) -> str:
    if isinstance(y, pd.DataFrame) or (isinstance(y, np.ndarray) and y.ndim == 2 and y.shape[1] > 1):
        return "multilabel"
    values = pd.Series(np.asarray(y).ravel()) if not isinstance(y, pd.Series) else y
    values = values.dropna()
    if len(values) == 0:
        return "regression"
    n_unique = values.nunique()
    if values.dtype == object or isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == bool \
            or pd.api.types.is_string_dtype(values.dtype):
        return "binary" if n_unique == 2 else "classification"
    if pd.api.types.is_integer_dtype(values.dtype):
        if n_unique == 2:
            return "binary"
        if n_unique <= MAX_CLASSES and n_unique <= max(2, MAX_CLASS_FRACTION * len(values)):
            return "classification"
        return "regression"
    arr = values.to_numpy(dtype=float)
    finite = arr[np.isfinite(arr)]
    if len(finite) and np.all(finite == np.round(finite)) and n_unique <= MAX_FLOAT_CLASSES \
            and n_unique <= MAX_CLASS_FRACTION * len(values):
        return "binary" if n_unique == 2 else "classification"
    return "regression"


# ---- loading ------------------------------------------------------------------------------

def _sample_rows(n: int, max_rows: int | None, seed: int) -> np.ndarray | None:
    if max_rows is None or n <= max_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def _split_table(frame: pd.DataFrame, target: list[str], features: list[str] | None, source: str):
    missing = [t for t in target if t not in frame.columns]
    if missing:
        cols = ", ".join(map(str, frame.columns[:12])) + (" ..." if frame.shape[1] > 12 else "")
        raise DataError(f"{source}: target column {missing[0]!r} not found (columns: {cols}); "
                        f"pass --target COL or set data.target")
    if features is None:
        features = [c for c in frame.columns if c not in target]
    else:
        absent = [c for c in features if c not in frame.columns]
        if absent:
            raise DataError(f"{source}: feature column {absent[0]!r} not found")
    if not features:
        raise DataError(f"{source}: no feature columns besides the target")
    y = frame[target[0]] if len(target) == 1 else frame[target]
    return frame[features], y


def stratified_split(y: np.ndarray, fraction: float, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val). Stratified: each class contributes round(fraction * count) rows."""
    n = len(y)
    rng = np.random.default_rng(seed)
    if not stratify:
        perm = rng.permutation(n)
        n_val = int(round(fraction * n))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    # NaN labels form their own group (factorize gives them -1; pandas 3 keeps NaN through astype(str))
    codes = pd.factorize(pd.Series(y).astype(str), use_na_sentinel=False)[0]
    perm = rng.permutation(n)
    codes_perm = codes[perm]
    order = np.argsort(codes_perm, kind="stable")            # grouped by class, shuffled inside
    sorted_codes = codes_perm[order]
    starts = np.searchsorted(sorted_codes, np.arange(codes.max() + 1))
    counts = np.bincount(codes, minlength=codes.max() + 1)
    n_val = np.round(fraction * counts).astype(int)
    rank = np.arange(n) - np.repeat(starts, counts)          # position inside its class
    is_val = rank < np.repeat(n_val, counts)
    val_idx = perm[order[is_val]]
    train_idx = perm[order[~is_val]]
    return np.sort(train_idx), np.sort(val_idx)


def load_dataset(path: str | Path, target: Any = None, *, features: list[str] | None = None,
                 val_path: str | Path | None = None, val_fraction: float = 0.2, task: str | None = None,
                 max_rows: int | None = None, seed: int = 0, x_key: str = "X", y_key: str = "y",
                 tokens: TokenInfo | None = None, image_size: Any = None) -> Dataset:
    path = Path(path)
    source = str(path)
    suffix = path.suffix.lower()
    if path.is_dir():   # an image folder: one subfolder per class (data_sources.py)
        from .data_sources import load_image_folder
        return load_image_folder(path, val_path=val_path, val_fraction=val_fraction, task=task, max_rows=max_rows,
                                 seed=seed, image_size=image_size)
    if suffix not in TABLE_SUFFIXES | ARRAY_SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{suffix or '(none)'}' "
                        f"(expected .csv, .tsv, .parquet, .npz or .npy, or a folder of images with one "
                        f"subfolder per class)")

    def read(p: Path):
        if suffix in TABLE_SUFFIXES:
            frame = read_table(p)
            if target is None:
                raise DataError(f"{p}: which column is the target? pass --target COL or set data.target")
            tgt = [target] if isinstance(target, str) else list(target)
            X, y = _split_table(frame, tgt, features, str(p))
            if tokens is not None:    # token sequences: one column of integer lists, or one column per position
                X = _token_matrix(X, tokens, str(p))
                y = y.to_numpy() if isinstance(y, pd.Series) else y.to_numpy()
            return X, y, tgt, len(frame)
        X, y = read_arrays(p, x_key, y_key, target)
        return X, y, [str(target or y_key)], len(X)

    X, y, tgt, n_read = read(path)
    rows = _sample_rows(len(y), max_rows, seed)
    if rows is not None:
        X = X.iloc[rows] if hasattr(X, "iloc") else X[rows]
        y = y.iloc[rows] if hasattr(y, "iloc") else y[rows]
    kind = "table" if suffix in TABLE_SUFFIXES and tokens is None else "array"
    val = None
    if val_path is not None:
        vpath = Path(val_path)
        if vpath.suffix.lower() != suffix:
            raise DataError(f"validation file {vpath} must be the same format as {path}")
        Xv, yv, _, _ = read(vpath)
        if tokens is not None and Xv.shape[1] != X.shape[1]:   # token sequences: pad to the common length
            width = max(Xv.shape[1], X.shape[1])
            X, Xv = _pad_to(X, width, tokens), _pad_to(Xv, width, tokens)
        if kind == "table" and list(Xv.columns) != list(X.columns):
            missing = [c for c in X.columns if c not in Xv.columns]
            extra = [c for c in Xv.columns if c not in X.columns]
            if missing:   # the same columns in another order are fine: a table's columns are read by name
                raise DataError(f"{vpath}: columns differ from {path}: missing {_names(missing)}"
                                + (f", not in the training file {_names(extra)}" if extra else ""))
            Xv = Xv[list(X.columns)]
        val = (Xv, yv, str(vpath))
    ds = build_dataset(X, y, source=source, kind=kind, target=tgt, n_rows_read=n_read, task=task, val=val,
                       val_fraction=val_fraction, seed=seed)
    if tokens is not None:
        ds.tokens = tokens
        _infer_vocab(ds)
    return ds


def build_dataset(X: Any, y: Any, *, source: str, kind: str, target: list[str], n_rows_read: int,
                  task: str | None, val: tuple[Any, Any, str] | None, val_fraction: float, seed: int,
                  notes: list[str] | None = None) -> Dataset:
    """A Dataset from what was read: the task inferred unless given, and a validation part, either `val`
    (X, y, where it came from) or a seeded split of `val_fraction` (stratified for class labels).
    Value types are checked first (check_types: refused, or converted and said in the notes)."""
    notes = list(notes or [])
    X, y = check_types(X, y, source, kind, notes)
    if val is not None:
        val = (*check_types(val[0], val[1], val[2], kind, []), val[2])
    resolved_task = task or infer_task(y)
    ds = Dataset(source=source, kind=kind, X=X, y=y, task=resolved_task, task_inferred=task is None,
                 target=target, n_rows_read=n_rows_read, notes=notes,
                 feature_names=[str(c) for c in X.columns] if kind == "table" else
                 [f"x{i}" for i in range(int(np.prod(X.shape[1:])))])
    if val is not None:
        Xv, yv, vsource = val
        if kind == "array" and Xv.shape[1:] != X.shape[1:]:
            raise DataError(f"{vsource}: X shape {Xv.shape[1:]} differs from {X.shape[1:]}")
        ds.X_val, ds.y_val, ds.val_source = Xv, yv, vsource
    elif val_fraction > 0 and len(y) >= 10:
        y_arr = np.asarray(y) if kind == "array" or isinstance(y, pd.Series) else np.asarray(y)
        stratify = resolved_task in ("classification", "binary") and y_arr.ndim == 1
        if stratify:  # a class with a single row cannot be split both ways: plain split then
            counts = pd.Series(y_arr.ravel()).value_counts(dropna=False)
            stratify = bool(counts.min() >= 2)
        tr, va = stratified_split(y_arr if y_arr.ndim == 1 else np.arange(len(y_arr)), val_fraction, seed,
                                  stratify)
        if stratify and (len(tr) == 0 or len(va) == 0):   # rounding per class emptied a side: plain split
            stratify = False
            tr, va = stratified_split(np.arange(len(y_arr)), val_fraction, seed, False)
        if len(tr) == 0 or len(va) == 0:
            side = "training" if len(tr) == 0 else "validation"
            raise DataError(f"data.val_fraction {val_fraction:g} leaves no {side} rows of {len(y_arr)}: a split "
                            f"needs rows on both sides; "
                            + ("lower it" if side == "training" else "raise it, or set val_fraction: 0 "
                               "(no validation)"))
        take = (lambda a, i: a.iloc[i]) if kind == "table" else (lambda a, i: a[i])
        ds.X, ds.X_val = take(X, tr), take(X, va)
        ds.y, ds.y_val = take(y, tr) if hasattr(y, "iloc") else y[tr], take(y, va) if hasattr(y, "iloc") else y[va]
        ds.val_source = f"split ({val_fraction:.0%}{', stratified' if stratify else ''}, seed {seed})"
    return ds


# ---- token sequences ----------------------------------------------------------------------------

def _token_matrix(X: pd.DataFrame, tokens: TokenInfo, source: str) -> np.ndarray:
    """The feature columns as an (N, T) integer matrix: a single column of integer lists (padded on the
    right with data.pad_id to the longest), or one integer column per position."""
    if X.shape[1] == 1 and X.iloc[:, 0].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).all():
        seqs = [np.asarray(v) for v in X.iloc[:, 0].tolist()]
        bad = next((i for i, q in enumerate(seqs) if q.ndim != 1 or not (np.issubdtype(q.dtype, np.integer)
                                                                       or len(q) == 0)), None)
        if bad is not None:
            raise DataError(f"{source}: row {bad} of column {X.columns[0]!r} is not a list of integer token ids")
        lengths = np.array([len(q) for q in seqs])
        width = int(lengths.max()) if len(lengths) else 0
        if width == 0:
            raise DataError(f"{source}: every token sequence is empty")
        if (lengths < width).any():
            if tokens.pad_id is None:
                raise DataError(f"{source}: token sequences have different lengths ({int(lengths.min())}.."
                                f"{width}); set data.pad_id to the id to pad them with")
            tokens.padded = True
        fill = tokens.pad_id if tokens.pad_id is not None else 0
        out = np.full((len(seqs), width), fill, dtype=np.int64)
        for i, q in enumerate(seqs):
            out[i, : len(q)] = q
        return out
    non_int = [c for c in X.columns if not pd.api.types.is_integer_dtype(X[c].dtype)]
    if non_int:
        raise DataError(f"{source}: token data need integer columns (one per position) or one column of "
                        f"integer lists; {non_int[0]!r} is {X[non_int[0]].dtype}")
    return X.to_numpy(dtype=np.int64)


def _names(cols: list, most: int = 5) -> str:
    shown = ", ".join(repr(str(c)) for c in cols[:most])
    return shown + (f" and {len(cols) - most} more" if len(cols) > most else "")


def _pad_to(X: np.ndarray, width: int, tokens: TokenInfo) -> np.ndarray:
    if X.shape[1] == width:
        return X
    if tokens.pad_id is None:
        raise DataError(f"token sequences of training and validation data differ in length ({X.shape[1]} vs "
                        f"{width}); set data.pad_id to pad them")
    out = np.full((len(X), width), tokens.pad_id, dtype=X.dtype)
    out[:, : X.shape[1]] = X
    return out


def _infer_vocab(ds: Dataset) -> None:
    """data.vocab_size when given, else the largest id + 1 over training and validation rows."""
    tok = ds.tokens
    if tok.vocab_declared:
        return
    highs = [int(np.max(a)) for a in (ds.X, ds.X_val) if a is not None and np.size(a)
             and np.issubdtype(np.asarray(a).dtype, np.number)]
    tok.vocab_size = max(highs) + 1 if highs else None


def token_info_from_spec(spec) -> TokenInfo | None:
    """Token data when the model starts with an embedding or data.vocab_size / data.pad_id is set."""
    d = spec.data
    layers = spec.model.layers or []
    emb = layers[0] if layers and layers[0].type == "embedding" else None
    if emb is None and d.vocab_size is None and d.pad_id is None:
        return None
    kw = emb.kwargs if emb is not None else {}
    vocab = kw.get("vocab", kw.get("num_embeddings"))
    return TokenInfo(vocab_size=d.vocab_size, vocab_declared=d.vocab_size is not None, pad_id=d.pad_id,
                     model_vocab=vocab if isinstance(vocab, int) else None,
                     model_padding_idx=kw.get("padding_idx") if isinstance(kw.get("padding_idx"), int) else None)


def load_from_spec(spec, *, data_path: str | None = None, target: Any = None, val_path: str | None = None,
                   task: str | None = None, seed: int | None = None) -> Dataset:
    """The spec's data section with command-line overrides (paths relative to the spec file)."""
    from .spec import resolve_path
    d = spec.data
    if d.dataset and not data_path:   # the user's own Dataset (data_sources.py)
        from .data_sources import load_user_dataset
        return load_user_dataset(spec, task=task or spec.task, seed=spec.training.seed if seed is None else seed)
    path = Path(data_path) if data_path else resolve_path(spec, d.path)
    if path is None:
        raise DataError("no data: set data.path (a file or an image folder) or data.dataset in the spec, "
                        "or pass the data file")
    vpath = Path(val_path) if val_path else resolve_path(spec, d.val_path)
    tgt = target if target is not None else d.target
    if isinstance(tgt, str) and tgt.endswith(".npy") and not Path(tgt).is_absolute() and not data_path:
        tgt = str(resolve_path(spec, tgt))
    return load_dataset(path, tgt, features=d.features, val_path=vpath, val_fraction=d.val_fraction,
                        task=task or spec.task, max_rows=d.max_rows,
                        seed=spec.training.seed if seed is None else seed, x_key=d.x_key, y_key=d.y_key,
                        tokens=token_info_from_spec(spec), image_size=d.image_size)


# ---- numeric arrays for the probes -------------------------------------------------------------

@dataclass
class ArrayData:
    """What the probes train on: float32 features, encoded targets, and what was repaired to get there."""

    X: np.ndarray                 # (N, ...) float32
    y: np.ndarray                 # int64 class ids (classification/binary) or float32 (N, k)
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    task: str
    n_classes: int | None         # classification/binary; None for regression
    target_dim: int               # outputs a model needs for regression/multilabel (1 for binary BCE)
    classes: list[Any] = field(default_factory=list)   # original label values, index = class id
    repairs: list[str] = field(default_factory=list)   # what was changed so probes could run
    feature_names: list[str] = field(default_factory=list)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.X.shape[1:])


def _numeric_features(X: Any, repairs: list[str]) -> np.ndarray:
    if isinstance(X, pd.DataFrame):
        numeric = X.select_dtypes(include=["number"]).columns
        dropped = [c for c in X.columns if c not in numeric]
        if dropped:
            bools = [c for c in dropped if X[c].dtype == bool]
            X = X.copy()
            for c in bools:
                X[c] = X[c].astype(np.float32)
            dropped = [c for c in dropped if c not in bools]
            X = X.drop(columns=dropped)
            if dropped:
                repairs.append(f"dropped non-numeric feature columns: {', '.join(map(str, dropped[:5]))}"
                               + (" ..." if len(dropped) > 5 else ""))
        if X.shape[1] == 0:
            raise DataError("no numeric feature columns left to train on")
        return X.to_numpy(dtype=np.float32, na_value=np.nan)
    arr = np.asarray(X)
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise DataError(f"X has dtype {arr.dtype}; expected numbers")
    return arr.astype(np.float32)


def check_token_ids(ds: Dataset) -> None:
    """Token ids must be integers in 0..limit-1 (the embedding's vocabulary, and data.vocab_size when
    given): any other id would crash the embedding lookup, so the probes do not start (D115 says which)."""
    tok = ds.tokens
    for name, X in (("training", ds.X), ("validation", ds.X_val)):
        if X is None or not np.size(X):
            continue
        X = np.asarray(X)
        if not np.issubdtype(X.dtype, np.number):
            raise DataError(f"token ids must be integers; the {name} X has dtype {X.dtype}")
        if not np.issubdtype(X.dtype, np.integer) and not np.all(np.isfinite(X) & (X == np.round(X))):
            raise DataError(f"token ids must be integers; the {name} X has non-integer values")
        lo, hi = int(np.min(X)), int(np.max(X))
        limit = tok.limit
        if lo < 0 or (limit is not None and hi >= limit):
            raise DataError(f"token ids outside 0..{(limit or hi + 1) - 1} in the {name} data (ids {lo}..{hi}); "
                            f"the embedding cannot look them up (D115)")


def prepare_arrays(ds: Dataset, missing: str = "drop", label_map: dict[Any, int] | None = None) -> ArrayData:
    """Numeric arrays for training. `missing` (the spec's data.missing): "drop" rows with NaN/Inf in features or
    target, "median" imputes features with the training rows' median, "keep" leaves non-finite features as they
    are (what a plain training loop would see). Rows without a usable target are dropped in every mode."""
    repairs: list[str] = []
    if ds.tokens is not None:
        check_token_ids(ds)
    Xtr = _numeric_features(ds.X, repairs)
    Xva = _numeric_features(ds.X_val, []) if ds.X_val is not None else None
    task = ds.task
    if missing == "median":
        Xtr, Xva = impute_median(Xtr, Xva, repairs)

    def bad_rows(X: np.ndarray, y: Any) -> np.ndarray:
        flat = X.reshape(len(X), -1)
        bad = np.zeros(len(X), dtype=bool) if missing == "keep" else ~np.isfinite(flat).all(axis=1)
        yv = pd.DataFrame(y) if not isinstance(y, (pd.Series, pd.DataFrame)) else y
        bad |= yv.isna().to_numpy().reshape(len(X), -1).any(axis=1)
        if task == "regression" or task == "multilabel":
            ynum = pd.DataFrame(yv).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
            bad |= ~np.isfinite(ynum).reshape(len(X), -1).all(axis=1)
        return bad

    what = "missing or infinite values" if missing == "drop" else "a missing target"
    ytr_raw, yva_raw = ds.y, ds.y_val
    bad = bad_rows(Xtr, ytr_raw)
    if bad.any():
        repairs.append(f"dropped {int(bad.sum())} training rows with {what}")
        Xtr, ytr_raw = Xtr[~bad], (ytr_raw[~bad] if not hasattr(ytr_raw, "iloc") else ytr_raw.iloc[~bad])
    if Xva is not None:
        badv = bad_rows(Xva, yva_raw)
        if badv.any():
            repairs.append(f"dropped {int(badv.sum())} validation rows with {what}")
            Xva, yva_raw = Xva[~badv], (yva_raw[~badv] if not hasattr(yva_raw, "iloc") else yva_raw.iloc[~badv])
    if len(Xtr) == 0:
        raise DataError(f"no usable training rows (every row has {what})")
    if label_map is not None and task in ("classification", "binary"):
        ytr_raw, yva_raw = _apply_label_map(ytr_raw, label_map), \
            (_apply_label_map(yva_raw, label_map) if yva_raw is not None else None)

    n_classes, classes, target_dim = None, [], 1
    if task in ("classification", "binary"):
        ytr_flat = np.asarray(ytr_raw).ravel()
        yva_flat = np.asarray(yva_raw).ravel() if yva_raw is not None else np.array([], dtype=ytr_flat.dtype)
        all_labels = pd.Series(np.concatenate([ytr_flat.astype(object), yva_flat.astype(object)]))
        classes = sorted(all_labels.unique().tolist(), key=lambda v: (str(type(v)), v))
        lookup = {c: i for i, c in enumerate(classes)}
        ytr = np.array([lookup[v] for v in ytr_flat.tolist()], dtype=np.int64) if ytr_flat.dtype == object \
            else np.searchsorted(np.array(classes), ytr_flat).astype(np.int64)
        yva = None
        if yva_raw is not None:
            yva = np.array([lookup[v] for v in yva_flat.tolist()], dtype=np.int64) if yva_flat.dtype == object \
                else np.searchsorted(np.array(classes), yva_flat).astype(np.int64)
        n_classes = len(classes)
        if classes != list(range(n_classes)):
            repairs.append(f"mapped labels {_short(classes)} to class ids 0..{n_classes - 1}")
        target_dim = n_classes
    else:
        ytr = pd.DataFrame(ytr_raw).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
        ytr = ytr.reshape(len(ytr), -1)
        yva = None
        if yva_raw is not None:
            yva = pd.DataFrame(yva_raw).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
            yva = yva.reshape(len(yva), -1)
        target_dim = ytr.shape[1]
    return ArrayData(X=Xtr, y=ytr, X_val=Xva if Xva is not None and len(Xva) else None,
                     y_val=yva if Xva is not None and len(Xva) else None, task=task, n_classes=n_classes,
                     target_dim=target_dim, classes=classes, repairs=repairs, feature_names=ds.feature_names)


def impute_median(Xtr: np.ndarray, Xva: np.ndarray | None, repairs: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Replace NaN/Inf features by the training rows' per-feature median (validation uses the same medians)."""
    flat = Xtr.reshape(len(Xtr), -1).astype(np.float64)
    bad = ~np.isfinite(flat)
    if not bad.any() and (Xva is None or np.isfinite(Xva).all()):
        return Xtr, Xva
    med = np.nanmedian(np.where(bad, np.nan, flat), axis=0)
    med = np.where(np.isfinite(med), med, 0.0)

    def fill(X: np.ndarray) -> tuple[np.ndarray, int]:
        f = X.reshape(len(X), -1).astype(np.float64)
        b = ~np.isfinite(f)
        f[b] = np.broadcast_to(med, f.shape)[b]
        return f.reshape(X.shape).astype(np.float32), int(b.sum())
    Xtr, n = fill(Xtr)
    repairs.append(f"imputed {n} non-finite training values with the column median")
    if Xva is not None:
        Xva, _ = fill(Xva)
    return Xtr, Xva


def _apply_label_map(y: Any, label_map: dict[Any, int]) -> np.ndarray:
    """Raw labels -> class ids by the spec's data.label_map (keys compared as text: YAML reads 1 and '1' alike)."""
    lookup = {str(k): int(v) for k, v in label_map.items()}
    flat = np.asarray(y).ravel()
    def key(v: Any) -> str:
        return str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v)
    missing = sorted({key(v) for v in flat.tolist()} - set(lookup))
    if missing:
        raise DataError(f"data.label_map has no entry for the label(s) {', '.join(missing[:5])}")
    return np.array([lookup[key(v)] for v in flat.tolist()], dtype=np.int64)


_short = fmt.listing   # nn_doctor/fmt.py
