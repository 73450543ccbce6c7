"""Feature and target scaling, the one implementation (data.normalize, data.normalize_target).

Probes (probe.DeviceData), the checks that reason about what training sees (checks/model.py) and the
user-step harness all call these, on torch tensors or numpy arrays alike. Statistics come from the training
rows only and are applied to validation rows unchanged.
"""
from __future__ import annotations

from typing import Any


def feature_axes(ndim: int) -> tuple[int, ...]:
    """Axes a statistic is taken over: per feature for tables (N, F), per feature over samples and time for
    sequences (N, T, F), per channel for images (N, C, H, W)."""
    if ndim <= 2:
        return (0,)
    if ndim == 3:
        return (0, 1)
    return (0,) + tuple(range(2, ndim))


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _mean_std(x: Any, axes: tuple[int, ...]) -> tuple[Any, Any]:
    """Mean and the unbiased std (ddof 1, torch's default) with kept dimensions; a zero std becomes 1."""
    if _is_torch(x):
        import torch
        mu, sd = x.mean(dim=axes, keepdim=True), x.std(dim=axes, keepdim=True)
        return mu, torch.where(sd > 0, sd, torch.ones_like(sd))
    import numpy as np
    n = int(np.prod([x.shape[a] for a in axes]))
    mu = x.mean(axis=axes, keepdims=True)
    sd = x.std(axis=axes, keepdims=True, ddof=1 if n > 1 else 0)
    return mu, np.where(sd > 0, sd, 1.0).astype(x.dtype)


def _min_range(x: Any, axes: tuple[int, ...]) -> tuple[Any, Any]:
    if _is_torch(x):
        import torch
        lo, hi = x.amin(dim=axes, keepdim=True), x.amax(dim=axes, keepdim=True)
        return lo, torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    import numpy as np
    lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
    return lo, np.where(hi > lo, hi - lo, 1.0).astype(x.dtype)


def normalize_features(X: Any, X_val: Any, how: str) -> tuple[Any, Any]:
    """data.normalize: none | standardize | minmax, fitted on X and applied to both."""
    if how == "none":
        return X, X_val
    axes = feature_axes(X.ndim)
    shift, scale = _mean_std(X, axes) if how == "standardize" else _min_range(X, axes)
    return (X - shift) / scale, (None if X_val is None else (X_val - shift) / scale)


def standardize_target(y: Any, y_val: Any) -> tuple[Any, Any]:
    """data.normalize_target: each target column to mean 0, std 1 (training statistics)."""
    shift, scale = _mean_std(y, (0,))
    return (y - shift) / scale, (None if y_val is None else (y_val - shift) / scale)
