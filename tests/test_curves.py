"""nn_doctor.curves: the five train/validation patterns of seeds/003 on synthetic curves, and the CSV
log readers (Lightning's and Keras' CSVLogger)."""
from __future__ import annotations


import numpy as np
import pytest

from nn_doctor import curves
from nn_doctor.curves import SEEDS_ADVICE, classify_curves, read_curve_log
from nn_doctor.errors import UsageError

STEPS = 300
VAL_EVERY = 25


def noisy(values: np.ndarray, rel: float, seed: int) -> np.ndarray:
    """Multiplicative noise, like minibatch losses (rel = relative std)."""
    rng = np.random.default_rng(seed)
    return values * (1 + rel * rng.standard_normal(len(values)))


def curve(fn, noise: float, seed: int, every: int = 1) -> list[tuple[float, float]]:
    """[(step, loss)] of fn(step) on 0..STEPS, every `every` steps, with noise."""
    steps = np.arange(0, STEPS + 1, every, dtype=float)
    return list(zip(steps.tolist(), noisy(fn(steps), noise, seed).tolist()))


def falling(start: float, floor: float, tau: float):
    return lambda s: floor + (start - floor) * np.exp(-s / tau)


def flat(level: float):
    return lambda s: np.full_like(s, level)


def rising(start: float, end: float):
    return lambda s: start + (end - start) * s / STEPS


def train_of(fn, seed: int = 0):
    return curve(fn, 0.08, seed)          # per-step minibatch losses: 8% noise


def val_of(fn, seed: int = 1):
    return curve(fn, 0.01, seed, VAL_EVERY)   # full-batch evaluations every 25 steps: 1% noise


# ---- the five patterns ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pattern,train_fn,val_fn", [
    ("learning", falling(1.1, 0.2, 120), falling(1.1, 0.25, 120)),
    ("overfitting", falling(1.1, 0.05, 80), flat(0.9)),                  # train falls, val flat
    ("data-problem", flat(1.0), falling(1.0, 0.5, 100)),                 # train flat, val falls
    ("plateau", flat(1.0), flat(1.05)),                                  # both flat
    ("diverging", rising(1.0, 3.0), rising(1.0, 3.2)),                   # both rising
])
def test_five_patterns(pattern, train_fn, val_fn, seed):
    v = classify_curves(train_of(train_fn, seed), val_of(val_fn, seed + 10))
    assert v.pattern == pattern, v.reason
    assert v.seeds_advice == SEEDS_ADVICE[pattern]
    assert v.evidence["thresholds"]["trend_band"] == curves.TREND_BAND


def test_trends_and_evidence_of_the_learning_pattern():
    v = classify_curves(train_of(falling(1.1, 0.2, 120)), val_of(falling(1.1, 0.25, 120)))
    assert (v.train_trend, v.val_trend) == ("falling", "falling")
    t, va = v.evidence["train"], v.evidence["val"]
    assert t["points"] == STEPS + 1 and va["points"] == STEPS // VAL_EVERY + 1
    assert t["change"] < -0.5 and va["change"] < -0.5
    assert va["min_step"] == STEPS


def test_overfitting_onset_val_falls_then_rises():
    """Validation bottoms out at step 100 and climbs back 40% while the training loss keeps falling."""
    def val_fn(s):
        return np.where(s <= 100, 1.1 - 0.6 * s / 100, 0.5 + 0.2 * (s - 100) / 200)
    v = classify_curves(train_of(falling(1.1, 0.02, 60)), val_of(val_fn))
    assert v.pattern == "overfitting"
    assert v.evidence["val"]["min_step"] == 100
    assert v.evidence["val"]["rise_from_min"] == pytest.approx(0.4, abs=0.05)
    assert "rose" in v.reason


def test_small_rise_near_zero_is_not_overfitting():
    """A converged run whose validation loss drifts 0.030 -> 0.036 (+20%, but 0.5% of its start of 1.1)."""
    def val_fn(s):
        return np.where(s < 50, 1.1 - (1.1 - 0.03) * s / 50, 0.03 + 0.006 * (s - 50) / 250)
    v = classify_curves(train_of(falling(1.1, 0.005, 20)), val_of(val_fn))
    assert v.pattern == "learning", v.reason


def test_no_validation_curve():
    assert classify_curves(train_of(falling(1.1, 0.2, 100)), None).pattern == "learning"
    assert classify_curves(train_of(flat(1.0)), []).pattern == "plateau"
    assert classify_curves(train_of(rising(1.0, 2.0)), None).pattern == "diverging"


def test_training_loss_rising_is_diverging_whatever_val_does():
    v = classify_curves(train_of(rising(0.5, 1.5)), val_of(falling(1.0, 0.5, 100)))
    assert v.pattern == "diverging" and v.train_trend == "rising"


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_non_finite_is_diverging_with_its_step(bad):
    train = train_of(falling(1.1, 0.2, 100))
    train[57] = (57.0, bad)
    v = classify_curves(train, val_of(falling(1.1, 0.25, 100)))
    assert v.pattern == "diverging"
    assert v.evidence["first_nonfinite"] == {"curve": "train", "step": 57.0}
    assert "57" in v.reason


def test_non_finite_validation_is_diverging():
    val = val_of(falling(1.1, 0.25, 100))
    val[4] = (100.0, float("nan"))
    v = classify_curves(train_of(falling(1.1, 0.2, 100)), val)
    assert v.pattern == "diverging" and v.evidence["first_nonfinite"] == {"curve": "val", "step": 100.0}


def test_still_falling():
    steady = classify_curves(train_of(rising(1.1, 0.4)), None)         # a straight line down: 25% per quarter
    assert steady.still_falling
    assert steady.evidence["train"]["last_quarter_drop_fraction"] == pytest.approx(0.25, abs=0.05)
    done = classify_curves(train_of(falling(1.1, 0.1, 30)), None)      # converged within the first third
    assert not done.still_falling
    assert done.evidence["train"]["last_quarter_drop_fraction"] < curves.STILL_FALLING_FRACTION


def test_long_curves_are_binned_and_unsorted_input_is_sorted():
    steps = np.arange(100_000, dtype=float)
    losses = noisy(falling(2.0, 0.1, 20_000)(steps), 0.1, 3)
    pairs = list(zip(steps.tolist(), losses.tolist()))[::-1]
    v = classify_curves(pairs, None)
    assert v.pattern == "learning" and v.evidence["train"]["points"] == curves.MAX_POINTS


def test_too_short_a_curve_is_an_error():
    with pytest.raises(ValueError):
        classify_curves([(0, 1.0)], None)


# ---- reading logs -----------------------------------------------------------------------------------

LIGHTNING = """epoch,step,train_loss_epoch,train_loss_step,val_loss
0,9,,1.05,
0,19,,0.98,
0,19,,,0.97
0,19,1.01,,
1,29,,0.83,
1,39,,0.80,
1,39,,,0.82
1,39,0.81,,
2,49,,0.65,
2,59,,0.61,
2,59,,,0.70
2,59,0.63,,
3,69,,0.52,
3,79,,0.50,
3,79,,,0.64
3,79,0.51,,
"""

KERAS = """epoch,accuracy,loss,val_accuracy,val_loss
0,0.41,1.08,0.45,1.05
1,0.62,0.91,0.60,0.93
2,0.75,0.74,0.70,0.85
3,0.83,0.60,0.72,0.84
4,0.88,0.48,0.72,0.85
5,0.91,0.37,0.71,0.86
"""


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_lightning_log_merges_rows_by_epoch(tmp_path):
    train, val, info = read_curve_log(write(tmp_path, "metrics.csv", LIGHTNING))
    assert info["train_col"] == "train_loss_epoch"       # epoch-level preferred over step-level
    assert info["val_col"] == "val_loss" and info["step_col"] == "epoch"
    assert train == [(0.0, 1.01), (1.0, 0.81), (2.0, 0.63), (3.0, 0.51)]
    assert val == [(0.0, 0.97), (1.0, 0.82), (2.0, 0.70), (3.0, 0.64)]
    assert classify_curves(train, val).pattern == "learning"


def test_lightning_step_level_loss_uses_the_step_column(tmp_path):
    text = "\n".join(",".join(row.split(",")[:2] + row.split(",")[3:]) for row in LIGHTNING.strip().splitlines())
    text = text.replace("train_loss_step", "train_loss")
    train, val, info = read_curve_log(write(tmp_path, "metrics.csv", text + "\n"))
    assert info["train_col"] == "train_loss" and info["step_col"] == "step"
    assert train[:3] == [(9.0, 1.05), (19.0, 0.98), (29.0, 0.83)]
    assert val == [(19.0, 0.97), (39.0, 0.82), (59.0, 0.70), (79.0, 0.64)]


def test_explicit_columns(tmp_path):
    p = write(tmp_path, "metrics.csv", LIGHTNING)
    train, val, info = read_curve_log(p, train_col="train_loss_step", step_col="step")
    assert info["train_col"] == "train_loss_step" and len(train) == 8
    with pytest.raises(UsageError, match="no column 'nope'"):
        read_curve_log(p, val_col="nope")


def test_keras_log_and_its_overfitting(tmp_path):
    train, val, info = read_curve_log(write(tmp_path, "training.log", KERAS))
    assert (info["train_col"], info["val_col"], info["step_col"]) == ("loss", "val_loss", "epoch")
    assert train[0] == (0.0, 1.08) and val[-1] == (5.0, 0.86)
    v = classify_curves(train, val)
    assert v.pattern == "overfitting"       # val flattens from epoch 2 while the loss keeps falling
    assert "keeps falling" in v.reason


def test_nan_cell_is_a_non_finite_loss(tmp_path):
    text = KERAS.replace("0.74,0.70", "nan,0.70")
    train, val, _ = read_curve_log(write(tmp_path, "training.log", text))
    assert train[2] == (2.0, None)
    v = classify_curves(train, val)
    assert v.pattern == "diverging" and v.evidence["first_nonfinite"]["step"] == 2.0


def test_no_loss_column_is_a_usage_error_listing_the_columns(tmp_path):
    p = write(tmp_path, "acc.csv", "epoch,accuracy,val_accuracy\n0,0.4,0.4\n1,0.6,0.5\n")
    with pytest.raises(UsageError) as err:
        read_curve_log(p)
    msg = str(err.value)
    assert "no training loss column" in msg and "epoch, accuracy, val_accuracy" in msg and "\n" not in msg


def test_missing_and_empty_logs(tmp_path):
    with pytest.raises(UsageError, match="no such log file"):
        read_curve_log(tmp_path / "absent.csv")
    with pytest.raises(UsageError, match="no rows"):
        read_curve_log(write(tmp_path, "empty.csv", "epoch,loss\n"))
