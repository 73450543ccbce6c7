"""A plain PyTorch training loop for a spec YAML: the yardstick the fault zoo judges fixes with.

    python benchmarks/plain_trainer.py SPEC [--seeds 0,1,2] [--json]

It trains the spec the way a user's own short loop would (seeded init, shuffled minibatches for the
spec's epochs, the spec's optimizer, loss and gradient clipping) and reports the validation metric:
accuracy and balanced accuracy for classification/binary, R^2 for regression, plus the final training and
validation losses. It does not import nn_doctor.probe (nor doctor, lr_search, checks): the probes are what
is being judged, so the judge must not share their code. It uses only nn_doctor.spec (load_spec/parse_spec),
nn_doctor.data (load_from_spec: read the file and split it with the seed) and nn_doctor.model (build_model,
apply_init, build_loss, build_optimizer: build what the spec describes). The conversion of the table to
arrays, the handling of missing values, the label mapping, the normalisation of features and target, the
loop and the evaluation are this file's own code.

What a plain loop does with faulty data, on purpose (this is what a user without nn-doctor gets):
- `data.missing: keep` (the default): NaN/inf values go into the model as they are;
  `drop`: rows with a NaN/inf feature or target are dropped (training and validation);
  `median`: NaN/inf features are replaced by the training rows' median of the column (rows whose target is
  missing are dropped).
- `data.label_map: {raw: class_index}` maps raw labels to class ids. Without it, labels go to the loss as
  they are: integers are used as class ids (labels 1..3 with 3 outputs make cross-entropy raise), strings
  cannot become a tensor (the run fails).
- A non-numeric feature column makes the run fail (a plain loop cannot turn strings into a tensor).
- A run that fails (raises) or whose predictions are non-finite scores as the constant predictor: the
  training's majority class (classification) or mean (regression), per row whose output is not finite.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEEDS = (0, 1, 2)          # the "over seeds 0-2"
EXTRA_DATA_KEYS = ("missing", "label_map")   # keys the product's spec may not know yet (issue 11, item 4)
MISSING_MODES = ("keep", "drop", "median")


class TrainFailed(Exception):
    """The plain loop could not train this spec (a crash is a result: it scores as the constant predictor)."""


@dataclass
class Result:
    seed: int
    task: str
    metric_name: str                # balanced_accuracy (classification/binary) or r2 (regression)
    metric: float                   # the validation metric (the constant predictor's when the run failed)
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    r2: float | None = None
    final_train_loss: float | None = None
    final_val_loss: float | None = None
    diverged: bool = False          # the training loss went non-finite (the loop stopped there)
    failed: str | None = None       # the exception that ended the run, if any
    nonfinite_predictions: int = 0  # validation rows scored as the constant predictor
    steps: int = 0
    time_s: float = 0.0


# ---- the spec ---------------------------------------------------------------------------------------

def read_spec(path: str | Path):
    """(Spec, extras): the spec validated by nn_doctor.spec; the data keys it does not know yet, apart."""
    import yaml
    from nn_doctor.errors import UsageError
    from nn_doctor.spec import DataSpec, parse_spec
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"{path}: cannot read the spec: {err}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: the spec must be a mapping")
    extras: dict[str, Any] = {}
    data = raw.get("data")
    if isinstance(data, dict):
        for key in EXTRA_DATA_KEYS:
            if key in data:
                extras[key] = data[key]
                if key not in DataSpec.model_fields:     # not in the product's spec yet: read it here
                    data = {k: v for k, v in data.items() if k != key}
        raw = {**raw, "data": data}
    missing = extras.get("missing", "keep") or "keep"
    if missing not in MISSING_MODES:
        raise UsageError(f"data.missing: expected one of {', '.join(MISSING_MODES)}, got {missing!r}")
    extras["missing"] = missing
    lm = extras.get("label_map")
    if lm is not None and not isinstance(lm, dict):
        raise UsageError(f"data.label_map: expected a mapping raw label -> class index, got {lm!r}")
    return parse_spec(raw, base_dir=path.resolve().parent, source=str(path)), extras


# ---- arrays -------------------------------------------------------------------------------------------

def _features(X: Any) -> np.ndarray:
    import pandas as pd
    if isinstance(X, pd.DataFrame):
        bad = [c for c in X.columns if not (pd.api.types.is_numeric_dtype(X[c]) or X[c].dtype == bool)]
        if bad:
            raise TrainFailed(f"feature column {bad[0]!r} is not numeric")
        return X.to_numpy(dtype=np.float32, na_value=np.nan)
    arr = np.asarray(X)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TrainFailed(f"X has dtype {arr.dtype}")
    return arr.astype(np.float32)


def _map_label(v: Any, label_map: dict) -> Any:
    if v in label_map:
        return label_map[v]
    for k, idx in label_map.items():       # YAML keys may be read as str while the column holds numbers
        if str(k) == str(v) or (isinstance(v, float) and v.is_integer() and str(k) == str(int(v))):
            return idx
    return math.nan


def _targets(y: Any, task: str, label_map: dict | None) -> np.ndarray:
    """Class ids as the loop hands them to the loss (float, NaN where missing), or regression values."""
    import pandas as pd
    if task in ("classification", "binary"):
        flat = np.asarray(y, dtype=object).ravel()
        if label_map is not None:
            return np.array([_map_label(v, label_map) for v in flat], dtype=np.float64)
        try:
            out = pd.to_numeric(pd.Series(flat), errors="raise").to_numpy(dtype=np.float64)
        except (ValueError, TypeError):
            raise TrainFailed("the labels are not numbers (a plain loop cannot make a tensor of them)") from None
        return out
    out = pd.DataFrame(np.asarray(y, dtype=object).reshape(len(y), -1)).apply(pd.to_numeric, errors="coerce")
    return out.to_numpy(dtype=np.float64)


def _finite_rows(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.isfinite(X.reshape(len(X), -1)).all(axis=1) & np.isfinite(y.reshape(len(y), -1)).all(axis=1)


def _stat_dims(X: np.ndarray) -> tuple[int, ...]:
    """Per feature for tables, per feature over time for sequences (N, T, F), per channel for images."""
    if X.ndim == 2:
        return (0,)
    if X.ndim == 3:
        return (0, 1)
    return (0,) + tuple(range(2, X.ndim))


def prepare(ds, task: str, extras: dict[str, Any], normalize: str, normalize_target: bool):
    """(X, y, X_val, y_val) float arrays for the loop, with the spec's missing-value, label and scaling rules."""
    Xtr, Xva = _features(ds.X), _features(ds.X_val) if ds.X_val is not None else None
    lm = extras.get("label_map")
    ytr = _targets(ds.y, task, lm)
    yva = _targets(ds.y_val, task, lm) if ds.y_val is not None else None
    # a missing label cannot be trained on in any mode (the target is what the rows are for)
    keep = np.isfinite(ytr.reshape(len(ytr), -1)).all(axis=1)
    Xtr, ytr = Xtr[keep], ytr[keep]
    if yva is not None:
        kv = np.isfinite(yva.reshape(len(yva), -1)).all(axis=1)
        Xva, yva = Xva[kv], yva[kv]
    mode = extras.get("missing", "keep")
    if mode == "drop":
        ok = _finite_rows(Xtr, ytr)
        Xtr, ytr = Xtr[ok], ytr[ok]
        if Xva is not None:
            ok = _finite_rows(Xva, yva)
            Xva, yva = Xva[ok], yva[ok]
    elif mode == "median":
        flat = Xtr.reshape(len(Xtr), -1).copy()
        flat[~np.isfinite(flat)] = np.nan
        med = np.nanmedian(flat, axis=0) if len(flat) else np.zeros(flat.shape[1])
        med = np.where(np.isfinite(med), med, 0.0).astype(np.float32)

        def impute(X: np.ndarray) -> np.ndarray:
            f = X.reshape(len(X), -1).copy()
            bad = ~np.isfinite(f)
            f[bad] = np.broadcast_to(med, f.shape)[bad]
            return f.reshape(X.shape)
        Xtr = impute(Xtr)
        Xva = impute(Xva) if Xva is not None else None
    if len(Xtr) == 0:
        raise TrainFailed("no training rows left")
    if normalize != "none":
        dims = _stat_dims(Xtr)
        if normalize == "standardize":
            mu, sd = Xtr.mean(axis=dims, keepdims=True), Xtr.std(axis=dims, keepdims=True, ddof=1)
            sd = np.where(sd > 0, sd, 1.0)
            Xtr, Xva = (Xtr - mu) / sd, None if Xva is None else (Xva - mu) / sd
        else:
            lo, hi = Xtr.min(axis=dims, keepdims=True), Xtr.max(axis=dims, keepdims=True)
            rng = np.where(hi > lo, hi - lo, 1.0)
            Xtr, Xva = (Xtr - lo) / rng, None if Xva is None else (Xva - lo) / rng
    if normalize_target and task == "regression":
        mu, sd = ytr.mean(axis=0, keepdims=True), ytr.std(axis=0, keepdims=True, ddof=1)
        sd = np.where(sd > 0, sd, 1.0)
        ytr, yva = (ytr - mu) / sd, None if yva is None else (yva - mu) / sd
    return (Xtr.astype(np.float32), ytr, None if Xva is None else Xva.astype(np.float32), yva)


# ---- the loop -------------------------------------------------------------------------------------------

def _loss_target(y, loss_name: str, task: str, n_out: int):
    """The target in the form the loss takes, from the model's output width (the spec's own semantics:
    class ids for cross-entropy, the id or a one-hot row for BCE/MSE/L1/Huber on classes)."""
    import torch.nn.functional as F
    classy = task in ("classification", "binary")
    if loss_name in ("cross_entropy", "nll"):
        return y.long() if classy else y.float()
    if classy:
        if n_out == 1:
            return y.float().unsqueeze(1)
        ids = y.long()
        if len(ids) and int(ids.min()) >= 0 and int(ids.max()) < n_out:
            return F.one_hot(ids, num_classes=n_out).float()
        return y.float().unsqueeze(1)
    return y.float()


def _predict(out, loss_name: str):
    if out.dim() == 1 or out.shape[-1] == 1:
        threshold = 0.5 if loss_name in ("bce", "mse", "l1", "huber") else 0.0
        return (out.reshape(len(out), -1)[:, 0] > threshold).long()
    return out.argmax(dim=-1)


def _evaluate(out: np.ndarray, y: np.ndarray, task: str, loss_name: str, fallback: Any) -> dict[str, Any]:
    """Validation metrics; rows whose output is not finite get the constant predictor's answer."""
    import torch
    bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if task in ("classification", "binary"):
        pred = _predict(torch.as_tensor(np.nan_to_num(out)), loss_name).numpy()
        pred = np.where(bad, fallback, pred)
        ids = y.astype(np.int64)
        correct = pred == ids
        recalls = [float(correct[ids == c].mean()) for c in np.unique(ids)]
        return {"accuracy": float(correct.mean()), "balanced_accuracy": float(np.mean(recalls)),
                "nonfinite": int(bad.sum())}
    yy = y.reshape(len(y), -1)
    o = out.reshape(len(out), -1)
    if o.shape[1] != yy.shape[1]:
        o = np.broadcast_to(o[:, :1], yy.shape).copy() if o.shape[1] == 1 else o[:, : yy.shape[1]]
    o = np.where(bad[:, None], np.asarray(fallback).reshape(1, -1), o)
    sst = float(((yy - yy.mean(axis=0)) ** 2).sum())
    sse = float(((o - yy) ** 2).sum())
    return {"r2": 1.0 - sse / max(sst, 1e-12), "nonfinite": int(bad.sum())}


def _constant(ytr: np.ndarray, task: str) -> Any:
    if task in ("classification", "binary"):
        vals, counts = np.unique(ytr.astype(np.int64), return_counts=True)
        return int(vals[np.argmax(counts)])
    return ytr.reshape(len(ytr), -1).mean(axis=0)


def train(spec_path: str | Path, seed: int = 0) -> Result:
    """Train the spec once (split, init and batch order from `seed`) and score it on the validation rows."""
    import torch
    from nn_doctor.data import load_from_spec
    from nn_doctor.errors import ModelBuildError, UsageError
    from nn_doctor.model import apply_init, build_loss, build_model, build_optimizer
    t0 = time.perf_counter()
    spec, extras = read_spec(spec_path)
    ds = load_from_spec(spec, seed=seed)
    task = ds.task
    metric_name = "r2" if task == "regression" else "balanced_accuracy"
    res = Result(seed=seed, task=task, metric_name=metric_name, metric=math.nan)
    if task == "multilabel":
        raise TrainFailed("multilabel specs are not supported by the plain trainer")
    if ds.X_val is None:
        raise TrainFailed("no validation rows (set data.val_fraction or data.val_path)")
    ylabels = None
    try:
        X, y, Xv, yv = prepare(ds, task, extras, spec.data.normalize, spec.data.normalize_target)
    except TrainFailed as err:
        # the constant predictor over the raw labels (as classes in sorted order) or the raw target
        res.failed = str(err)
        ylabels = _raw_ids(ds, task, extras)
    if ylabels is not None:
        ytr_ids, yva_ids = ylabels
        _score(res, None, yva_ids, task, "", _constant(ytr_ids, task))
        res.time_s = time.perf_counter() - t0
        return res
    fallback = _constant(y, task)
    loss_name = spec.loss.name
    clip = spec.optimizer.grad_clip
    torch.manual_seed(seed)
    np.random.seed(seed)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    Xvt = torch.as_tensor(Xv)
    if task in ("classification", "binary"):
        yt = yt.reshape(-1)
    else:
        yt = yt.float()
    n_classes = int(np.nanmax(y)) + 1 if task in ("classification", "binary") and len(y) else None
    try:
        model = build_model(spec.model, tuple(X.shape[1:]), spec.base_dir)
        apply_init(model, spec.model.init, seed)
        loss_fn = build_loss(spec.loss, task, yt if task != "regression" else yt,
                             n_classes if task != "regression" else None)
        opt = build_optimizer(spec.optimizer, model.parameters())
        gen = torch.Generator().manual_seed(seed)
        n = len(Xt)
        bs = min(spec.training.batch_size, n)
        loss_v = math.nan
        for _epoch in range(spec.training.epochs):
            model.train()
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, bs):
                idx = perm[i:i + bs]
                out = model(Xt[idx])
                loss = loss_fn(out, _loss_target(yt[idx], loss_name, task, out.shape[-1] if out.dim() > 1 else 1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
                res.steps += 1
                loss_v = float(loss.detach())
                if not math.isfinite(loss_v):
                    res.diverged = True
                    break
            if res.diverged:
                break
        model.eval()
        with torch.no_grad():
            out_tr = torch.cat([model(Xt[i:i + 1024]) for i in range(0, n, 1024)])
            out_va = torch.cat([model(Xvt[i:i + 1024]) for i in range(0, len(Xvt), 1024)])
            yvt = torch.as_tensor(yv).reshape(-1) if task != "regression" else torch.as_tensor(yv).float()
            res.final_train_loss = _finite(loss_fn(out_tr, _loss_target(yt, loss_name, task, out_tr.shape[-1])))
            res.final_val_loss = _finite(loss_fn(out_va, _loss_target(yvt, loss_name, task, out_va.shape[-1])))
        _score(res, out_va.float().numpy(), yv, task, loss_name, fallback)
    except (TrainFailed, ModelBuildError, UsageError, RuntimeError, ValueError, IndexError, TypeError) as err:
        res.failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        _score(res, None, yv, task, loss_name, fallback)
    res.time_s = time.perf_counter() - t0
    return res


def _finite(t) -> float | None:
    v = float(t)
    return v if math.isfinite(v) else None


def _raw_ids(ds, task: str, extras: dict[str, Any]):
    """Labels as class ids (sorted raw values) or regression values, for scoring a run that could not start."""
    import pandas as pd
    if task in ("classification", "binary"):
        both = pd.concat([pd.Series(np.asarray(ds.y, dtype=object).ravel()),
                          pd.Series(np.asarray(ds.y_val, dtype=object).ravel())]).dropna()
        classes = sorted(both.unique().tolist(), key=lambda v: (str(type(v)), v))
        lookup = {c: i for i, c in enumerate(classes)}
        conv = lambda ys: np.array([lookup.get(v, -1) for v in np.asarray(ys, dtype=object).ravel()], float)  # noqa: E731
        tr, va = conv(ds.y), conv(ds.y_val)
        return tr[tr >= 0], va[va >= 0]
    tr = _targets(ds.y, task, None)
    va = _targets(ds.y_val, task, None)
    return tr[np.isfinite(tr).all(axis=1)], va[np.isfinite(va).all(axis=1)]


def _score(res: Result, out: np.ndarray | None, yv: np.ndarray, task: str, loss_name: str, fallback: Any) -> None:
    if out is None:          # the run failed: every row gets the constant prediction
        width = 1 if task != "regression" else yv.reshape(len(yv), -1).shape[1]
        out = np.full((len(yv), width), np.nan, dtype=np.float32)
    m = _evaluate(out, yv, task, loss_name, fallback)
    res.nonfinite_predictions = m.pop("nonfinite")
    for k, v in m.items():
        setattr(res, k, v)
    res.metric = float(m[res.metric_name])


def train_seeds(spec_path: str | Path, seeds=SEEDS) -> list[Result]:
    return [train(spec_path, s) for s in seeds]


def mean_metric(results: list[Result]) -> float:
    return statistics.fmean(r.metric for r in results)


# ---- CLI ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="the spec YAML")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"--seeds: expected comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    from nn_doctor.errors import UsageError
    try:
        results = train_seeds(args.spec, seeds)
    except (UsageError, TrainFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"results": [asdict(r) for r in results], "mean": mean_metric(results)}, indent=2))
        return 0
    for r in results:
        extra = f"accuracy {r.accuracy:.3f}  " if r.accuracy is not None else ""
        note = " DIVERGED" if r.diverged else ""
        note += f" FAILED ({r.failed})" if r.failed else ""
        loss = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
        print(f"seed {r.seed}: {r.metric_name} {r.metric:.3f}  {extra}train loss {loss(r.final_train_loss)}  "
              f"val loss {loss(r.final_val_loss)}  {r.steps} steps  {r.time_s:.1f} s{note}")
    print(f"mean {results[0].metric_name} over seeds {','.join(map(str, seeds))}: {mean_metric(results):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
