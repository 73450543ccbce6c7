"""The one scaling implementation (nn_doctor/scaling.py): numpy and torch agree, statistics come from the
training rows, and the axes follow the data's shape."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nn_doctor.scaling import feature_axes, normalize_features, standardize_target


@pytest.mark.parametrize("shape", [(50, 4), (50, 6, 3), (50, 2, 5, 5)])
@pytest.mark.parametrize("how", ["standardize", "minmax"])
def test_numpy_and_torch_agree_and_validation_uses_training_statistics(shape, how):
    rng = np.random.default_rng(0)
    X = (rng.normal(5, 3, shape) * np.arange(1, shape[-1] + 1)).astype(np.float32)
    Xv = rng.normal(5, 3, (10,) + shape[1:]).astype(np.float32)
    a, av = normalize_features(X, Xv, how)
    t, tv = normalize_features(torch.from_numpy(X), torch.from_numpy(Xv), how)
    np.testing.assert_allclose(a, t.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(av, tv.numpy(), rtol=1e-4, atol=1e-5)
    axes = feature_axes(X.ndim)
    if how == "standardize":
        np.testing.assert_allclose(a.mean(axis=axes), 0, atol=1e-4)
        np.testing.assert_allclose(a.std(axis=axes, ddof=1), 1, atol=1e-4)
    else:
        np.testing.assert_allclose(a.min(axis=axes), 0, atol=1e-6)
        np.testing.assert_allclose(a.max(axis=axes), 1, atol=1e-6)
    assert not np.allclose(av.mean(axis=axes), 0, atol=1e-3)   # validation is not re-fitted


def test_constant_feature_and_target_stay_finite():
    X = np.ones((20, 3), dtype=np.float32)
    out, _ = normalize_features(X, None, "standardize")
    assert np.isfinite(out).all() and np.allclose(out, 0)
    y, yv = standardize_target(np.full((20, 1), 7.0), np.full((5, 1), 9.0))
    assert np.allclose(y, 0) and np.allclose(yv, 2.0)
    assert normalize_features(X, None, "none")[0] is X
