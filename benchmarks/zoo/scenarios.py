"""The fault zoo: seeded training faults (and healthy controls) with the diagnosis nn-doctor owes them.

Each Scenario writes its spec and data into a temporary folder (`build(tmpdir, seed) -> spec path`), so
the faults are code, not checked-in files: wine with labels 1..3, with NaNs, with a leaking column, an
imbalanced subsample of breast_cancer, a validation file from another "scanner", digits with raw 0..255
pixels, a user model that forgets to use a layer, ... `seed` is the run's seed (full-report's --seed); a
fault that needs randomness (which rows get NaN, which labels flip) draws it from that seed.

What a scenario promises:

- `expected`: the codes that must be found (any severity). The info codes every report carries (R500,
  R502-R504, H306) count as found when present; healthy controls list them.
- `expected_first_fix`: the report's `first_fix` (the first error in step order, else the first warning;
  None for a healthy control). With two faults in different steps it is the earlier step's.
- `allowed`: symptoms that may legitimately appear too (a diverging lr also kills ReLUs); a
  warning/error-level code outside expected | allowed counts against that code's precision.

Where the faults come from: the seed documents (seeds/000-004, the five-step procedure and the
problems of each step), DeepCrime's mutation operators (Humbatova et al., ISSTA 2021: change lr,
activation, loss, weight init, optimizer, batch size, remove bias, add/remove dropout, change labels,
...), the taxonomy of real faults of Humbatova et al. (ICSE 2020) and AUTOTRAINER's training problems
(vanishing/exploding gradients, dying ReLU, oscillating loss, slow convergence). Each scenario's
`source` names its origin.

Besides the fault, the scenarios vary what is not the fault: task (multi-class, binary, regression),
data (wine, breast_cancer, diabetes, iris, digits images, digits sequences, generated tables),
architecture (MLP, conv net, LSTM/GRU, residual, normalised) and optimizer (adam, adamw, sgd, rmsprop).
"""
from __future__ import annotations

import copy
import textwrap
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"

# Info codes every full report on CPU carries (findings.md: R500 device, R502 memory, R503 throughput,
# R504 environment; H306 the loss-curve pattern). Healthy controls expect exactly these.
ALWAYS_INFO = frozenset({"H306", "R500", "R502", "R503", "R504"})


@dataclass(frozen=True)
class Scenario:
    name: str
    build: Callable[[Path, int], Path]
    expected: frozenset[str]
    expected_first_fix: str | None
    healthy: bool = False
    tags: tuple[str, ...] = ()
    allowed: frozenset[str] = frozenset()
    source: str = ""
    description: str = ""
    # What a competent engineer would change in the spec to repair the fault: dotted-path overrides applied
    # to the built spec ({"data.normalize": "standardize"}; a top-level key such as "loss" is replaced whole).
    # None where no spec change repairs it (a missing file, duplicated rows, a bug in the user's own code):
    # such scenarios are left out of the repair rate (benchmarks/run_zoo.py).
    fix: dict[str, Any] | None = None
    part: str = "dev"               # dev: the rules may be tuned on it; holdout: never (benchmarks/zoo/holdout.py)

    @property
    def step(self) -> int | None:
        """The step of the first fix (1-5), None for a healthy control."""
        return None if self.expected_first_fix is None else "DMHGR".index(self.expected_first_fix[0]) + 1


# ---- data ------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _table(name: str) -> pd.DataFrame:
    return pd.read_csv(SAMPLE / f"{name}.csv")


def table(name: str) -> pd.DataFrame:
    return _table(name).copy()


@lru_cache(maxsize=None)
def _arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(SAMPLE / f"{name}.npz") as z:
        return z["X"], z["y"]


def write_csv(tmp: Path, name: str, df: pd.DataFrame) -> str:
    p = tmp / f"{name}.csv"
    df.to_csv(p, index=False)
    return str(p)


def write_npz(tmp: Path, name: str, X: np.ndarray, y: np.ndarray) -> str:
    p = tmp / f"{name}.npz"
    np.savez(p, X=X, y=y)
    return str(p)


def rng_for(seed: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng(1000 * seed + salt)


def moons(n: int, seed: int, noise: float = 0.15) -> pd.DataFrame:
    """Two interleaving half circles (sklearn's make_moons, re-implemented), plus 2 noise features."""
    r = rng_for(seed, 7)
    n0 = n // 2
    t0, t1 = np.pi * r.random(n0), np.pi * r.random(n - n0)
    x = np.r_[np.cos(t0), 1 - np.cos(t1)]
    y = np.r_[np.sin(t0), 0.5 - np.sin(t1)]
    X = np.c_[x, y] + r.normal(0, noise, (n, 2))
    df = pd.DataFrame(np.c_[X, r.normal(0, 1, (n, 2))], columns=["x1", "x2", "n1", "n2"])
    df["label"] = np.r_[np.zeros(n0, int), np.ones(n - n0, int)]
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def friedman(n: int, seed: int) -> pd.DataFrame:
    """Friedman #1 regression (sklearn's make_friedman1): 5 informative + 3 noise features in [0, 1]."""
    r = rng_for(seed, 11)
    X = r.random((n, 8))
    y = 10 * np.sin(np.pi * X[:, 0] * X[:, 1]) + 20 * (X[:, 2] - 0.5) ** 2 + 10 * X[:, 3] + 5 * X[:, 4]
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)])
    df["y"] = (y - 14.4) / 4.9 + r.normal(0, 0.1, n)   # roughly standardized already
    return df


# ---- specs ---------------------------------------------------------------------------------------

MLP3 = [{"type": "linear", "out": 32}, {"type": "relu"}, {"type": "linear", "out": 3}]


def base(kind: str) -> dict[str, Any]:
    """The healthy spec of each data set (the configs/ examples and their siblings)."""
    if kind == "wine":
        return {"task": "classification",
                "data": {"path": str(SAMPLE / "wine.csv"), "target": "label", "normalize": "standardize"},
                "model": {"layers": copy.deepcopy(MLP3), "init": "he"}, "loss": "cross_entropy",
                "optimizer": {"name": "adam", "lr": 0.003}, "training": {"batch_size": 32, "epochs": 30}}
    if kind == "iris":
        return {"task": "classification",
                "data": {"path": str(SAMPLE / "iris.csv"), "target": "label", "normalize": "standardize"},
                "model": {"layers": [{"type": "linear", "out": 16}, {"type": "relu"}, {"type": "linear", "out": 3}],
                          "init": "he"}, "loss": "cross_entropy",
                "optimizer": {"name": "adam", "lr": 0.01}, "training": {"batch_size": 16, "epochs": 30}}
    if kind == "bc":
        return {"task": "binary",
                "data": {"path": str(SAMPLE / "breast_cancer.csv"), "target": "label", "normalize": "standardize"},
                "model": {"layers": [{"type": "linear", "out": 32}, {"type": "relu"}, {"type": "dropout", "p": 0.1},
                                     {"type": "linear", "out": 1}]},
                "loss": "bce_with_logits", "optimizer": {"name": "adam", "lr": 0.001, "weight_decay": 0.0001},
                "training": {"batch_size": 32, "epochs": 20}}
    if kind == "diabetes":
        return {"task": "regression",
                "data": {"path": str(SAMPLE / "diabetes.csv"), "target": "progression", "normalize": "standardize",
                         "normalize_target": True},
                "model": {"layers": [{"type": "linear", "out": 32}, {"type": "relu"}, {"type": "linear", "out": 1}]},
                "loss": "mse", "optimizer": {"name": "adam", "lr": 0.003}, "training": {"batch_size": 32, "epochs": 30}}
    if kind == "digits_cnn":
        return {"task": "classification",
                "data": {"path": str(SAMPLE / "digits.npz"), "target": "y", "normalize": "minmax"},
                "model": {"layers": [{"type": "conv2d", "out": 16, "kernel_size": 3, "padding": 1}, {"type": "relu"},
                                     {"type": "maxpool2d", "kernel_size": 2},
                                     {"type": "conv2d", "out": 32, "kernel_size": 3, "padding": 1}, {"type": "relu"},
                                     {"type": "adaptive_avgpool2d", "output_size": 1}, {"type": "flatten"},
                                     {"type": "linear", "out": 10}], "init": "he"},
                "loss": "cross_entropy", "optimizer": {"name": "adam", "lr": 0.003},
                "training": {"batch_size": 64, "epochs": 10}}
    if kind == "digits_lstm":
        return {"task": "classification",
                "data": {"path": str(SAMPLE / "digits_seq.npz"), "target": "y", "normalize": "standardize"},
                "model": {"layers": [{"type": "lstm", "out": 32}, {"type": "linear", "out": 10}]},
                "loss": "cross_entropy", "optimizer": {"name": "adam", "lr": 0.003, "grad_clip": 1.0},
                "training": {"batch_size": 64, "epochs": 10}}
    raise KeyError(kind)


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def write_spec(tmp: Path, spec: dict[str, Any], seed: int, **overrides: Any) -> Path:
    spec = copy.deepcopy(spec)
    for dotted, value in overrides.items():
        set_path(spec, dotted.replace("__", "."), value)
    spec.setdefault("training", {})["seed"] = seed
    spec["training"].setdefault("device", "cpu")
    p = tmp / "spec.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p


def apply_fix(spec_path: Path, fix: dict[str, Any], out: Path | None = None) -> Path:
    """Write the spec at `spec_path` with the dotted overrides of `fix` applied (next to it by default)."""
    spec = yaml.safe_load(Path(spec_path).read_text())
    for dotted, value in fix.items():
        set_path(spec, dotted, copy.deepcopy(value))
    out = out or Path(spec_path).with_name(Path(spec_path).stem + "_known_fix.yaml")
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def simple(kind: str, **overrides: Any) -> Callable[[Path, int], Path]:
    """A builder: the base spec of `kind` with dotted overrides ("optimizer.lr" or optimizer__lr)."""
    def build(tmp: Path, seed: int) -> Path:
        return write_spec(tmp, base(kind), seed, **overrides)
    return build


def with_table(kind: str, table_name: str, transform: Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame],
               **overrides: Any) -> Callable[[Path, int], Path]:
    """A builder: `transform` the sample table (seeded), write it, and point the base spec at it."""
    def build(tmp: Path, seed: int) -> Path:
        df = transform(table(table_name), rng_for(seed))
        return write_spec(tmp, base(kind), seed, **{"data.path": write_csv(tmp, "data", df), **overrides})
    return build


def user_model(module_name: str, source: str, kind: str, class_name: str, kwargs: dict[str, Any],
               transform: Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame] | None = None,
               table_name: str | None = None, **overrides: Any) -> Callable[[Path, int], Path]:
    """A builder with `model.class`: the user's module written next to the spec."""
    def build(tmp: Path, seed: int) -> Path:
        (tmp / f"{module_name}.py").write_text(textwrap.dedent(source))
        extra: dict[str, Any] = {}
        if transform is not None:
            extra["data.path"] = write_csv(tmp, "data", transform(table(table_name or kind), rng_for(seed)))
        spec = base(kind)
        spec["model"] = {"class": f"{module_name}:{class_name}", "kwargs": kwargs}
        return write_spec(tmp, spec, seed, **{**extra, **overrides})
    return build


# ---- data faults (transforms) ------------------------------------------------------------------------

def labels_plus_one(df, r):
    df["label"] = df["label"] + 1
    return df


def with_nans(df, r):
    for col in ("magnesium", "ash", "hue"):
        df.loc[r.choice(len(df), 12, replace=False), col] = np.nan
    return df


def with_infs(df, r):
    rows = r.choice(len(df), 6, replace=False)
    df.loc[rows[:3], "mean area"] = np.inf          # a ratio computed with a zero denominator upstream
    df.loc[rows[3:], "worst concavity"] = -np.inf
    return df


def with_string_column(df, r):
    df.insert(3, "region", r.choice(["north", "south", "east", "west"], len(df)))
    return df


def with_constant_columns(df, r):
    df.insert(5, "scanner_id", 3.0)
    df.insert(9, "protocol_version", 2)
    return df


def with_outliers(df, r):
    rows = r.choice(len(df), 4, replace=False)
    df.loc[rows, "bmi"] = df.loc[rows, "bmi"] * 1000.0     # a unit error in 4 records
    return df


def string_labels(df, r):
    df["label"] = df["label"].map({0: "setosa", 1: "versicolor", 2: "virginica"})
    return df


def labels_one_two(df, r):
    df["label"] = df["label"] + 1                 # 1 = benign, 2 = malignant: not {0, 1}
    return df


def imbalanced(df, r):
    minority = df[df["label"] == 0]
    keep = minority.iloc[r.choice(len(minority), 20, replace=False)]
    return pd.concat([df[df["label"] == 1], keep]).sample(frac=1.0, random_state=int(r.integers(1 << 30)))


def duplicated_rows(df, r):
    dup = df.iloc[r.choice(len(df), 45, replace=False)]
    return pd.concat([df, dup]).sample(frac=1.0, random_state=int(r.integers(1 << 30))).reset_index(drop=True)


def conflicting_labels(df, r):
    rows = df.iloc[r.choice(len(df), 15, replace=False)].copy()
    rows["label"] = (rows["label"] + 1) % 3       # the same flowers labelled twice, differently
    return pd.concat([df, rows]).sample(frac=1.0, random_state=int(r.integers(1 << 30))).reset_index(drop=True)


def few_samples(df, r):
    return pd.concat([g.iloc[r.choice(len(g), 8, replace=False)] for _, g in df.groupby("label")]
                     ).reset_index(drop=True)


def leaking_column(df, r):
    df.insert(4, "grade", df["label"] * 10 + r.normal(0, 0.5, len(df)))   # the label, re-encoded
    return df


def leaking_regression(df, r):
    df.insert(2, "followup_score", df["progression"] * 2.0 + r.normal(0, 1.0, len(df)))
    return df


def single_class(df, r):
    return df[df["label"] == 0].reset_index(drop=True)


def constant_target(df, r):
    df["progression"] = 100.0
    return df


def unscaled_target(df, r):
    return df


def nan_regression(df, r):
    for col in ("bmi", "s5"):
        df.loc[r.choice(len(df), 15, replace=False), col] = np.nan
    return df


def noisy_labels(df, r):
    flip = r.random(len(df)) < 0.3
    df.loc[flip, "label"] = 1 - df.loc[flip, "label"]
    return df


def xor_table(df, r):
    n = 1200
    X = r.uniform(-1, 1, (n, 2))
    out = pd.DataFrame(np.c_[X, r.normal(0, 1, (n, 2))], columns=["x1", "x2", "n1", "n2"])
    out["label"] = ((X[:, 0] * X[:, 1]) > 0).astype(int)
    return out


def friedman_classes(n: int, seed: int) -> pd.DataFrame:
    """Friedman #1 thresholded at its median: a curved class boundary a linear model only approximates."""
    df = friedman(n, seed)
    y = df.pop("y")
    df["label"] = (y > y.median()).astype(int)
    return df


# ---- builders with several files -----------------------------------------------------------------

def shifted_validation(tmp: Path, seed: int) -> Path:
    """breast_cancer's validation rows come from another scanner: the 'mean *' features 1.6x larger."""
    df = table("breast_cancer").sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n_val = len(df) // 5
    tr, va = df.iloc[n_val:], df.iloc[:n_val].copy()
    cols = [c for c in df.columns if c.startswith("mean ")]
    va[cols] = va[cols] * 1.6
    return write_spec(tmp, base("bc"), seed, **{"data.path": write_csv(tmp, "train", tr),
                                                 "data.val_path": write_csv(tmp, "val", va)})


def sorted_split(tmp: Path, seed: int) -> Path:
    """wine split without shuffling after sorting by alcohol: validation = the strongest 25%."""
    df = table("wine").sort_values("alcohol", kind="stable").reset_index(drop=True)
    cut = int(len(df) * 0.75)
    return write_spec(tmp, base("wine"), seed, **{"data.path": write_csv(tmp, "train", df.iloc[:cut]),
                                                   "data.val_path": write_csv(tmp, "val", df.iloc[cut:])})


def raw_pixels(tmp: Path, seed: int) -> Path:
    """digits as 8-bit images 0..255 (the 0..16 scale times 16), fed without scaling."""
    X, y = _arrays("digits")
    X = np.clip(X.astype(np.int32) * 16, 0, 255).astype(np.uint8)
    return write_spec(tmp, base("digits_cnn"), seed, **{"data.path": write_npz(tmp, "digits_raw", X, y),
                                                         "data.normalize": "none"})


def generated(kind: str, make: Callable[[int, int], pd.DataFrame], n: int, **overrides: Any):
    def build(tmp: Path, seed: int) -> Path:
        return write_spec(tmp, base(kind), seed, **{"data.path": write_csv(tmp, "data", make(n, seed)), **overrides})
    return build


def moons_spec(**overrides: Any):
    def build(tmp: Path, seed: int) -> Path:
        spec = base("bc")
        spec["data"]["target"] = "label"
        spec["model"] = {"layers": [{"type": "linear", "out": 32}, {"type": "relu"}, {"type": "linear", "out": 32},
                                    {"type": "relu"}, {"type": "linear", "out": 2}], "init": "he"}
        spec["loss"] = "cross_entropy"
        spec["task"] = "classification"
        spec["optimizer"] = {"name": "adam", "lr": 0.003}
        return write_spec(tmp, spec, seed, **{"data.path": write_csv(tmp, "moons", moons(800, seed)), **overrides})
    return build


def friedman_spec(**overrides: Any):
    def build(tmp: Path, seed: int) -> Path:
        spec = base("diabetes")
        spec["data"]["target"] = "y"
        spec["data"]["normalize_target"] = False
        spec["model"] = {"layers": [{"type": "linear", "out": 64}, {"type": "gelu"}, {"type": "linear", "out": 64},
                                    {"type": "gelu"}, {"type": "linear", "out": 1}]}
        spec["loss"] = "huber"
        spec["optimizer"] = {"name": "adamw", "lr": 0.003, "weight_decay": 0.01}
        return write_spec(tmp, spec, seed, **{"data.path": write_csv(tmp, "friedman", friedman(1000, seed)),
                                               **overrides})
    return build


def xor_spec(layers: list[dict[str, Any]], **overrides: Any):
    """The XOR of two features (plus two noise features), 1200 rows: no linear model separates it."""
    def build(tmp: Path, seed: int) -> Path:
        spec = base("bc")
        spec.update(task="classification", loss="cross_entropy", model={"layers": layers},
                    optimizer={"name": "adam", "lr": 0.003})
        df = xor_table(None, rng_for(seed))
        return write_spec(tmp, spec, seed, **{"data.path": write_csv(tmp, "xor", df), **overrides})
    return build


def digits_mlp(**overrides: Any):
    def build(tmp: Path, seed: int) -> Path:
        spec = base("digits_cnn")
        spec["model"] = {"layers": [{"type": "flatten"}, {"type": "linear", "out": 64}, {"type": "relu"},
                                    {"type": "linear", "out": 10}], "init": "he"}
        return write_spec(tmp, spec, seed, **overrides)
    return build


def digits_gru(**overrides: Any):
    def build(tmp: Path, seed: int) -> Path:
        spec = base("digits_lstm")
        spec["model"] = {"layers": [{"type": "gru", "out": 32}, {"type": "linear", "out": 10}]}
        spec["optimizer"] = {"name": "rmsprop", "lr": 0.003}
        return write_spec(tmp, spec, seed, **overrides)
    return build


# ---- layer lists ---------------------------------------------------------------------------------------

def mlp(widths: list[int], act: str, n_out: int, last_act: str | None = None, norm: str | None = None,
        dropout: float | None = None) -> list[dict[str, Any]]:
    layers: list[dict[str, Any]] = []
    for w in widths:
        layers.append({"type": "linear", "out": w})
        if norm:
            layers.append({"type": norm})
        layers.append({"type": act})
        if dropout:
            layers.append({"type": "dropout", "p": dropout})
    layers.append({"type": "linear", "out": n_out})
    if last_act:
        layers.append({"type": last_act})
    return layers


RESIDUAL_MLP = [{"type": "linear", "out": 32}, {"type": "relu"},
                {"type": "residual", "layers": [{"type": "layernorm"}, {"type": "linear", "out": 32},
                                                {"type": "relu"}, {"type": "linear", "out": 32}]},
                {"type": "residual", "layers": [{"type": "layernorm"}, {"type": "linear", "out": 32},
                                                {"type": "relu"}, {"type": "linear", "out": 32}]},
                {"type": "linear", "out": 3}]


# ---- user model code (model.class) ---------------------------------------------------------------------

UNUSED_LAYER = """
import torch
from torch import nn

class TwoHeads(nn.Module):
    # a refactoring left the auxiliary head in __init__ but forward() never calls it
    def __init__(self, n_in=13, hidden=32, n_out=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_out)
        self.aux_head = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.head(self.body(x))
"""

FROZEN_LAYER = """
import torch
from torch import nn

class FrozenEncoder(nn.Module):
    # the encoder was frozen for fine-tuning and never unfrozen
    def __init__(self, n_in=30, hidden=32):
        super().__init__()
        self.encoder = nn.Linear(n_in, hidden)
        for p in self.encoder.parameters():
            p.requires_grad = False
        self.act = nn.ReLU()
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.act(self.encoder(x)))
"""

CLAMPED_LOGITS = """
import torch
from torch import nn

class ClampedLogits(nn.Module):
    # the logits are clamped to [-1, 1] 'for stability': cross-entropy can never get near 0
    def __init__(self, n_in=13, hidden=32, n_out=3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x):
        return torch.clamp(self.net(x), -1.0, 1.0)
"""

LOG_FEATURES = """
import torch
from torch import nn

class LogFeatures(nn.Module):
    # log-transforms its (already standardized, so partly negative) inputs: NaN from the first step
    def __init__(self, n_in=10, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(torch.log(x + 1.0))
"""

NEGATIVE_BIAS = """
import torch
from torch import nn

class NegativeBias(nn.Module):
    # the hidden layer's bias initialised to -5 (a 'bias init' mutation): every ReLU starts dead
    def __init__(self, n_in=13, hidden=32, n_out=3):
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, n_out)
        with torch.no_grad():
            self.fc1.bias.fill_(-5.0)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))
"""


AFFINE_STACK = """
import torch
from torch import nn

class AffineStack(nn.Module):
    # three Linear layers and no activation between them: the whole network is one affine map
    def __init__(self, n_in=4, hidden=32, n_out=2):
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.fc3(self.fc2(self.fc1(x)))
"""


DEAD_RELU_REGRESSION = """
import torch
from torch import nn

class DeadRegressor(nn.Module):
    # both hidden biases set to -4 after the default init: on standardized inputs no ReLU ever fires
    def __init__(self, n_in=8, hidden=48):
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.fc1.bias.fill_(-4.0)
            self.fc2.bias.fill_(-4.0)

    def forward(self, x):
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))
"""


RAISES_IN_TRAIN_MODE = """
import torch
from torch import nn

class TrainOnlyBug(nn.Module):
    # a debugging branch left in forward(): in train mode it indexes a feature that does not exist
    def __init__(self, n_in=13, hidden=32, n_out=3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x):
        if self.training:
            x = x + x[:, 13:14]          # IndexError in every training step; eval mode is fine
        return self.net(x)
"""


# ---- the zoo -------------------------------------------------------------------------------------------

def S(name: str, build, expected, first_fix, tags=(), allowed=(), source="", description="", healthy=False):
    return Scenario(name=name, build=build, expected=frozenset(expected) | (ALWAYS_INFO if healthy else frozenset()),
                    expected_first_fix=first_fix, healthy=healthy, tags=tuple(tags), allowed=frozenset(allowed),
                    source=source, description=description)


# symptoms of a learning rate that breaks training: the gradient checks see the same run
LR_SYMPTOMS = ("G400", "G402", "G403", "G404", "G405", "G406", "G407", "H304", "H305", "H306", "M207")

SCENARIOS: list[Scenario] = [
    # ---- step 1: data ------------------------------------------------------------------------------
    S("d100_missing_file", simple("wine", **{"data.path": "/nonexistent/wine_v2.csv"}), {"D100"}, "D100",
      ("data", "table", "multiclass"), source="seeds/001 一.1 (data not loaded)",
      description="the data path points at a file that does not exist"),
    S("d100_target_absent", simple("wine", **{"data.target": "class"}), {"D100"}, "D100",
      ("data", "table", "multiclass"), source="seeds/001 一.1; Humbatova 2020 (wrong input format)",
      description="data.target names a column the table does not have"),
    S("d101_nan_wine", with_table("wine", "wine", with_nans), {"D101"}, "D101", ("data", "table", "multiclass"),
      source="seeds/000 数据损坏 (NaN)", description="36 missing cells in 3 wine columns"),
    S("d102_inf_breast_cancer", with_table("bc", "breast_cancer", with_infs), {"D102"}, "D102",
      ("data", "table", "binary"), source="seeds/000 数据损坏; Humbatova 2020 (corrupt data)",
      description="+inf/-inf in two breast_cancer columns (a division by zero upstream)"),
    S("d103_string_column", with_table("wine", "wine", with_string_column), {"D103"}, "D103",
      ("data", "table", "multiclass"), source="Humbatova 2020 (wrong type of input data)",
      description="a categorical 'region' column left as strings"),
    S("d104_unscaled_wine", simple("wine", **{"data.normalize": "none"}), {"D104"}, "D104",
      ("data", "table", "multiclass"), allowed=("M207", "G402", "G403", "G404", "G406", "H300", "H301", "H305", "G407"),
      source="seeds/000 数据预处理错误; seeds/002 一.2",
      description="wine without standardisation (proline up to 1680)"),
    S("d104_raw_pixels_digits", raw_pixels, {"D104"}, "D104", ("data", "image", "conv", "multiclass"),
      allowed=("M207", "G402", "G403", "G406", "H300", "H301", "H305", "G407"),
      source="seeds/000 示例 (pixels in [0,255] not normalised)",
      description="digits as raw 0..255 pixels into a conv net, normalize: none"),
    S("d105_constant_columns", with_table("bc", "breast_cancer", with_constant_columns), {"D105"}, "D105",
      ("data", "table", "binary"), source="Humbatova 2020 (redundant features)",
      description="two constant columns (scanner id, protocol version)"),
    S("d106_unit_error_outliers", with_table("diabetes", "diabetes", with_outliers), {"D106"}, "D106",
      ("data", "table", "regression"), allowed=("H304",), source="seeds/000 异常值; seeds/001 一.3",
      description="4 bmi values recorded in the wrong unit (x1000)"),
    S("d107_labels_offset", with_table("wine", "wine", labels_plus_one), {"D107"}, "D107",
      ("data", "table", "multiclass"), source="seeds/000 标签格式错误; DeepCrime change labels",
      description="wine labels 1..3 instead of 0..2"),
    S("d107_string_labels", with_table("iris", "iris", string_labels), {"D107"}, "D107",
      ("data", "table", "multiclass"), source="seeds/000 标签格式错误",
      description="iris labels as species names"),
    S("d107_binary_labels_1_2", with_table("bc", "breast_cancer", labels_one_two), {"D107"}, "D107",
      ("data", "table", "binary"), source="seeds/000 标签格式错误",
      description="binary labels {1, 2} with bce_with_logits"),
    S("d108_unscaled_target", simple("diabetes", **{"data.normalize_target": False}), {"D108"}, "D108",
      ("data", "table", "regression"), allowed=("H301", "H305", "H308", "G402", "G406"),
      source="seeds/002 一.2 (输入输出在0附近)", description="diabetes target 25..346 not standardized"),
    S("d109_imbalanced", with_table("bc", "breast_cancer", imbalanced), {"D109"}, "D109",
      ("data", "table", "binary"), allowed=("H304",), source="seeds/000 数据分布不均衡; seeds/001 7",
      description="breast_cancer with 20 malignant vs 357 benign rows"),
    S("d110_duplicates", with_table("wine", "wine", duplicated_rows), {"D110"}, "D110",
      ("data", "table", "multiclass"), source="Humbatova 2020 (duplicated data)",
      description="45 wine rows appended twice (also across the split)"),
    S("d110_conflicting_labels", with_table("iris", "iris", conflicting_labels), {"D110"}, "D110",
      ("data", "table", "multiclass"), allowed=("H304", "H305", "G407", "M208"), source="seeds/002 一.4 (标签的设置是否正确)",
      description="15 iris rows appear twice with different labels"),
    S("d111_few_samples", with_table("iris", "iris", few_samples), {"D111"}, "D111",
      ("data", "table", "multiclass"), allowed=("H304", "H308"), source="seeds/002 一.3; findings D111",
      description="8 iris flowers per class"),
    S("d112_leaking_column", with_table("wine", "wine", leaking_column), {"D112"}, "D112",
      ("data", "table", "multiclass"), source="Humbatova 2020 (data leakage)",
      description="a 'grade' column that is the label re-encoded"),
    S("d112_leaking_regression", with_table("diabetes", "diabetes", leaking_regression), {"D112"}, "D112",
      ("data", "table", "regression"), source="Humbatova 2020 (data leakage)",
      description="a follow-up score computed from the target"),
    S("d113_shifted_validation", shifted_validation, {"D113"}, "D113", ("data", "table", "binary"),
      allowed=("H304", "H305"), source="seeds/003 pattern 3 (data problem); Humbatova 2020 (train/test mismatch)",
      description="validation rows from another scanner: 'mean *' features x1.6"),
    S("d113_sorted_split", sorted_split, {"D113"}, "D113", ("data", "table", "multiclass"),
      allowed=("H304", "H305", "D111"), source="seeds/003 pattern 3; Humbatova 2020 (wrong split)",
      description="validation = the 25% of wines with the most alcohol (no shuffle before the split)"),
    S("d114_single_class", with_table("wine", "wine", single_class), {"D114"}, "D114",
      ("data", "table", "multiclass"), allowed=("M201", "M207", "D111", "G407", "H305", "H301"),
      source="findings D114", description="a filter kept only class 0; the model still has 3 outputs"),
    S("d114_constant_target", with_table("diabetes", "diabetes", constant_target), {"D114"}, "D114",
      ("data", "table", "regression"), allowed=("M207", "G407", "H305", "H301"), source="findings D114",
      description="the regression target is 100 for every row"),

    # ---- step 2: model structure ------------------------------------------------------------------------
    S("m200_conv_on_table", simple("wine", **{"model.layers": [{"type": "conv2d", "out": 8, "kernel_size": 3},
                                                                {"type": "relu"}, {"type": "flatten"},
                                                                {"type": "linear", "out": 3}]}),
      {"M200"}, "M200", ("model", "table", "conv"), source="Humbatova 2020 (wrong layer type / shapes)",
      description="a conv2d layer on 13 tabular features"),
    S("m200_missing_flatten", digits_mlp(**{"model.layers": [{"type": "linear", "out": 64}, {"type": "relu"},
                                                            {"type": "linear", "out": 10}]}),
      {"M200"}, "M200", ("model", "image"), source="Humbatova 2020 (missing flatten)",
      description="a linear layer straight on (1, 8, 8) images"),
    S("m201_wrong_output_size", simple("wine", **{"model.layers": mlp([32], "relu", 2)}), {"M201"}, "M201",
      ("model", "table", "multiclass"), allowed=("G409",), source="seeds/000 输出层与任务不匹配",
      description="2 output units for the 3 wine classes"),
    S("m201_two_logits_bce", simple("bc", **{"model.layers": mlp([32], "relu", 2)}), {"M201"}, "M201",
      ("model", "table", "binary"), source="seeds/000 输出层节点数",
      description="2 outputs with bce_with_logits on a binary target"),
    S("m202_softmax_before_ce", simple("wine", **{"model.layers": mlp([32], "relu", 3, last_act="softmax")}),
      {"M202"}, "M202", ("model", "table", "multiclass"), allowed=("G407", "H305", "H301", "M208"),
      source="seeds/002 二.8; Humbatova 2020 (wrong activation of the last layer)",
      description="softmax before cross_entropy"),
    S("m202_relu_regression_output", simple("diabetes", **{"model.layers": mlp([32], "relu", 1, last_act="relu")}),
      {"M202"}, "M202", ("model", "table", "regression"), allowed=("G403", "G407", "H305"),
      source="seeds/002 二.8 (最后一层使用Relu)", description="ReLU on the output of a standardized regression"),
    S("m202_sigmoid_before_bce_logits", simple("bc", **{"model.layers": mlp([32], "relu", 1, last_act="sigmoid")}),
      {"M202"}, "M202", ("model", "table", "binary"), allowed=("G404", "G407", "H305", "H301"),
      source="DeepCrime change activation (last layer)", description="sigmoid before bce_with_logits"),
    S("m203_mse_on_classes", simple("wine", **{"loss": "mse", "model.layers": mlp([32], "relu", 1)}), {"M203"},
      "M203", ("model", "table", "multiclass"), allowed=("G407", "H305", "M207"),
      source="DeepCrime change loss; seeds/001 三.3", description="MSE regressing the class id 0..2"),
    S("m203_ce_on_regression", simple("diabetes", **{"loss": "cross_entropy"}), {"M203"}, "M203",
      ("model", "table", "regression"), allowed=("G405", "G407", "H305", "M207", "H300", "G400"),
      source="seeds/000 回归任务使用交叉熵损失", description="cross_entropy on the diabetes target"),
    S("m204_zero_init", simple("wine", **{"model.init": "zeros"}), {"M204"}, "M204",
      ("model", "table", "multiclass"), allowed=("G403", "G405", "G407", "H305", "M208", "H301", "G406"),
      source="seeds/000 权重初始化为全0; DeepCrime change weights initialisation",
      description="model.init: zeros"),
    S("m204_constant_init_regression", simple("diabetes", **{"model.init": {"constant": 0.05}}), {"M204"}, "M204",
      ("model", "table", "regression"), allowed=("G405", "G407", "H305", "M208", "H301", "G406", "M207"),
      source="seeds/000 权重初始化 (constant)", description="model.init: {constant: 0.05}"),
    S("m205_deep_relu_xavier", simple("wine", **{"model.layers": mlp([16] * 7, "relu", 3), "model.init": "xavier"}),
      {"M205"}, "M205", ("model", "table", "multiclass", "deep"), allowed=("G401", "H304"),
      source="seeds/004 3.1 (Xavier in a ReLU net); DeepCrime change weights initialisation",
      description="8-layer ReLU MLP (width 16) with xavier init"),
    S("m205_large_normal_init", simple("bc", **{"model.layers": mlp([64] * 5, "relu", 1), "model.init": {"normal": 0.5}}),
      {"M205"}, "M205", ("model", "table", "binary", "deep"),
      allowed=("M207", "G402", "G403", "G406", "H300", "H304", "G400", "H305"),
      source="seeds/004 2 (过大的权重初始值)", description="6-layer ReLU MLP with N(0, 0.5) weights"),
    S("m206_deep_sigmoid", simple("wine", **{"model.layers": mlp([32] * 6, "sigmoid", 3), "model.init": "xavier"}),
      {"M206"}, "M206", ("model", "table", "multiclass", "deep"),
      allowed=("G401", "G404", "G407", "H301", "H305", "M208", "G406"),
      source="seeds/000 网络层数过深 (Sigmoid); AUTOTRAINER vanishing gradients",
      description="6 sigmoid layers, no normalisation"),
    # M207 is the symptom, the init scale (M205) its cause (catalogue: M207 <- M205); M205 reads a net this shallow
    # since its per-layer gain rule (hidden weights 2 sqrt(13) = 7.2 > 4x He's sqrt(2))
    S("m207_large_output_init", simple("wine", **{"model.init": {"normal": 2.0}}), {"M207", "M205"}, "M205",
      ("model", "table", "multiclass"), allowed=("G402", "G406", "H304"),
      source="seeds/002 二.4 (错误初始化网络参数)", description="2-layer MLP with N(0, 2) weights: huge logits at init"),
    S("m208_too_narrow", digits_mlp(**{"model.layers": [{"type": "flatten"}, {"type": "linear", "out": 2},
                                                        {"type": "tanh"}, {"type": "linear", "out": 10}]}),
      {"M208"}, "M208", ("model", "image", "multiclass"), allowed=("G407", "H301", "H305", "H308"),
      source="seeds/002 二.3 (隐层神经元数量错误); DeepCrime change number of neurons",
      description="a 2-unit hidden layer for 10 digit classes"),
    S("m208_linear_model_on_xor", xor_spec([{"type": "linear", "out": 2}]), {"M208", "H305"}, "M208",
      ("model", "generated", "binary"), allowed=("G407",),
      source="seeds/002 二.1 (网络设定不合理: 很浅的网络); DeepCrime remove layer",
      description="a linear model (no hidden layer) on XOR data: train and validation stay at chance"),
    S("m208_too_big", simple("wine", **{"model.layers": mlp([512, 512], "relu", 3)}), {"D111", "M208"}, "D111",
      ("model", "table", "multiclass"), allowed=("H304",), source="seeds/002 一.3 / 二.3",
      description="270k parameters for 142 training rows"),

    # ---- step 3: hyperparameters ------------------------------------------------------------------------
    S("h300_adam_lr_high", simple("wine", **{"optimizer.lr": 3.0}), {"H300"}, "H300",
      ("hyper", "table", "multiclass"), allowed=LR_SYMPTOMS,
      source="seeds/000 学习率过高→NaN; DeepCrime change learning rate", description="adam at lr 3 (diverges)"),
    S("h300_adam_lr_oscillates", simple("bc", **{"optimizer.lr": 0.5}), {"H300"}, "H300",
      ("hyper", "table", "binary"), allowed=LR_SYMPTOMS + ("H302",),
      source="seeds/000 学习率过高→损失震荡; AUTOTRAINER oscillating loss", description="adam at lr 0.5 (oscillates)"),
    S("h300_sgd_lr_high", simple("wine", **{"optimizer": {"name": "sgd", "lr": 5.0}}), {"H300"}, "H300",
      ("hyper", "table", "multiclass", "sgd"), allowed=LR_SYMPTOMS + ("H307",),
      source="seeds/002 二.2 (从0.1开始尝试); DeepCrime change learning rate", description="plain sgd at lr 5"),
    S("h300_digits_mlp_lr_high", digits_mlp(**{"optimizer.lr": 0.3}), {"H300"}, "H300",
      ("hyper", "image", "multiclass"), allowed=LR_SYMPTOMS,
      source="AUTOTRAINER dying ReLU after a too-high lr", description="digits MLP with adam at lr 0.3 (ReLUs die)"),
    S("h300_sgd_lr_nan_regression", simple("diabetes", **{"optimizer": {"name": "sgd", "lr": 1.0, "momentum": 0.9}}),
      {"H300", "G400"}, "H300", ("hyper", "table", "regression"), allowed=LR_SYMPTOMS,
      source="seeds/002 二.2 (跑飞, NaN)", description="sgd lr 1.0 momentum 0.9 goes NaN"),
    S("h300_lstm_lr_high", simple("digits_lstm", **{"optimizer.lr": 0.5, "optimizer.grad_clip": None}), {"H300"},
      "H300", ("hyper", "sequence", "lstm", "multiclass"), allowed=LR_SYMPTOMS,
      source="AUTOTRAINER oscillating loss", description="LSTM with adam at lr 0.5, no clipping"),
    S("h301_adam_lr_low", simple("bc", **{"optimizer.lr": 1e-5}), {"H301"}, "H301", ("hyper", "table", "binary"),
      allowed=("G406", "H305", "H308"), source="seeds/000 过低→损失不变; AUTOTRAINER slow convergence",
      description="adam at lr 1e-5"),
    S("h301_sgd_lr_low", simple("wine", **{"optimizer": {"name": "sgd", "lr": 0.001}}), {"H301"}, "H301",
      ("hyper", "table", "multiclass", "sgd"), allowed=("H305", "H307", "H308", "G406"),
      source="DeepCrime change optimizer + learning rate", description="plain sgd at lr 1e-3"),
    S("h302_full_batch", simple("bc", **{"training.batch_size": 512, "training.epochs": 20}), {"H302"}, "H302",
      ("hyper", "table", "binary"), allowed=("H301", "H305", "H308"),
      source="seeds/002 二.6 (Batch Size 过大); DeepCrime change batch size",
      description="one full batch of 455 rows per step"),
    S("h303_weight_decay", simple("wine", **{"optimizer.weight_decay": 1.0}), {"H303"}, "H303",
      ("hyper", "table", "multiclass"), allowed=("H305", "G407", "H306"), source="seeds/000 正则化过强→欠拟合",
      description="adam weight_decay 1.0"),
    S("h303_heavy_dropout", simple("bc", **{"model.layers": mlp([32, 32], "relu", 1, dropout=0.9)}), {"H303"}, "H303",
      ("hyper", "table", "binary"), allowed=("H305",), source="seeds/003 欠拟合 降低Dropout率; DeepCrime add dropout",
      description="dropout 0.9 after each hidden layer"),
    S("h304_noisy_labels_overfit", with_table("bc", "breast_cancer", noisy_labels,
                                              **{"model.layers": mlp([128], "relu", 1), "optimizer.lr": 0.01,
                                                 "optimizer.weight_decay": 0.0, "training.epochs": 100}),
      {"H304"}, "H304", ("hyper", "table", "binary"), allowed=("H308",),
      source="seeds/003 过拟合; seeds/002 pattern 2", description="30% flipped labels, a wide MLP, 100 epochs"),
    S("h307_sgd_no_momentum", simple("digits_cnn", **{"optimizer": {"name": "sgd", "lr": 0.01}}), {"H307"}, "H307",
      ("hyper", "image", "conv", "multiclass", "sgd"), allowed=("H301", "H305", "G406", "H308", "G407"),
      source="seeds/000 示例 (SGD → Adam); DeepCrime change optimizer",
      description="the digits conv net with plain sgd 0.01"),
    # first fix H308 (was None while H308 was only a remark): its fix is probed now, and 4 -> 8 epochs raises
    # balanced accuracy ~0.84 -> ~0.92 (the plain trainer: 0.839 -> 0.931 at 10 epochs), so it is worth a warning
    S("h308_too_few_epochs", digits_mlp(**{"optimizer.lr": 1e-3, "training.epochs": 4}), {"H308"}, "H308",
      ("hyper", "image", "multiclass"), source="seeds/002 (首先要保证训练的次数够多)",
      description="the digits MLP stopped after 4 epochs, loss still falling"),

    # ---- step 4: code and gradients ---------------------------------------------------------------------
    S("g400_log_of_negative", user_model("zoo_log_features", LOG_FEATURES, "diabetes", "LogFeatures",
                                         {"n_in": 10, "hidden": 32}),
      {"G400"}, "G400", ("gradients", "table", "regression", "user-model"), allowed=("M207", "G407", "G405"),
      source="seeds/002 二.2 (exp/log overflow → NaN)", description="forward takes log of standardized inputs"),
    S("g401_deep_sigmoid_sgd", simple("wine", **{"model.layers": mlp([32] * 8, "sigmoid", 3), "model.init": "xavier",
                                                 "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}}),
      {"G401", "M206"}, "M206", ("gradients", "table", "multiclass", "deep", "sgd"),
      allowed=("H301", "H305", "H307", "G404", "G406", "G407", "M208"),
      source="seeds/004 (梯度消失); AUTOTRAINER vanishing gradients", description="8 sigmoid layers trained by sgd"),
    S("g401_tanh_small_init_sgd", simple("diabetes", **{"model.layers": mlp([32] * 10, "tanh", 1),
                                                        "model.init": {"normal": 0.05},
                                                        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}}),
      {"G401", "M205", "M206"}, "M205", ("gradients", "table", "regression", "deep", "sgd"),
      allowed=("H301", "H305", "H307", "G406", "G407", "M208"),
      source="seeds/004 3.1 (权重初始化); AUTOTRAINER vanishing gradients",
      description="10 tanh layers with N(0, 0.05) weights, sgd: the signal and the gradients vanish"),
    S("g402_exploding_deep_relu", simple("diabetes", **{"model.layers": mlp([64] * 6, "relu", 1),
                                                        "model.init": {"normal": 0.5}}),
      {"G402", "M205"}, "M205", ("gradients", "table", "regression", "deep"),
      allowed=("M207", "G403", "G406", "H304", "H305"),
      source="seeds/004 (梯度爆炸, 过大的权重初始值); AUTOTRAINER exploding gradients",
      description="7-layer ReLU net with N(0, 0.5) weights"),
    S("g402_init_explodes_to_nan", simple("diabetes", **{"model.layers": mlp([64] * 6, "relu", 1),
                                                         "model.init": {"normal": 0.5},
                                                         "optimizer": {"name": "sgd", "lr": 1e-4}}),
      {"G400", "G402", "M205"}, "M205", ("gradients", "table", "regression", "deep", "sgd"),
      allowed=("M207", "G403", "G406", "H304", "H305", "H307"),
      source="seeds/004 (梯度爆炸 → 数值溢出)",
      description="the same net with sgd: NaN after two steps whatever the lr"),
    S("g403_dead_relu_bias", user_model("zoo_negative_bias", NEGATIVE_BIAS, "wine", "NegativeBias",
                                        {"n_in": 13, "hidden": 32, "n_out": 3}),
      {"G403"}, "G403", ("gradients", "table", "multiclass", "user-model"),
      allowed=("G405", "G407", "H305", "H301", "G406", "M208"),
      source="seeds/002 二.9 (dead ReLU); AUTOTRAINER dying ReLU; DeepCrime change bias",
      description="the hidden bias initialised to -5: every ReLU dead"),
    S("g404_tanh_unscaled", simple("wine", **{"data.normalize": "none", "model.layers": mlp([32], "tanh", 3)}),
      {"D104", "G404"}, "D104", ("gradients", "table", "multiclass"),
      allowed=("M207", "H301", "H305", "G406", "G407", "H300"),
      source="seeds/000 示例 (Sigmoid + unnormalised inputs)", description="tanh on unscaled wine"),
    S("g405_unused_layer", user_model("zoo_unused_layer", UNUSED_LAYER, "wine", "TwoHeads",
                                      {"n_in": 13, "hidden": 32, "n_out": 3}),
      {"G405"}, "G405", ("gradients", "table", "multiclass", "user-model"),
      source="Humbatova 2020 (missing/unused layer)", description="an auxiliary head built but never called"),
    S("g405_frozen_encoder", user_model("zoo_frozen_encoder", FROZEN_LAYER, "bc", "FrozenEncoder",
                                        {"n_in": 30, "hidden": 32}),
      {"G405"}, "G405", ("gradients", "table", "binary", "user-model"), allowed=("H301", "H305"),
      source="seeds/000 (验证是否禁用了梯度计算)", description="the encoder left frozen (requires_grad False)"),
    S("g406_update_ratio_sgd", simple("diabetes", **{"optimizer": {"name": "sgd", "lr": 1e-6}}),
      {"G406", "H301"}, "H301", ("gradients", "table", "regression", "sgd"), allowed=("H305", "H307", "H308"),
      source="DeepCrime change learning rate; Karpathy update ratio", description="plain sgd at 1e-6"),
    S("g409_raises_in_train_mode", user_model("zoo_train_only_bug", RAISES_IN_TRAIN_MODE, "wine", "TrainOnlyBug",
                                              {"n_in": 13, "hidden": 32, "n_out": 3}),
      {"G409"}, "G409", ("gradients", "table", "multiclass", "user-model"),
      allowed=("G400", "G405", "G407", "H300", "H305", "M208"),
      source="issue 11 (a user model that raises only in train mode ended 'Healthy')",
      description="forward() raises IndexError in train mode only"),
    S("g407_clamped_logits", user_model("zoo_clamped_logits", CLAMPED_LOGITS, "wine", "ClampedLogits",
                                        {"n_in": 13, "hidden": 32, "n_out": 3}),
      {"G407"}, "G407", ("gradients", "table", "multiclass", "user-model"), allowed=("H305",),
      source="seeds/000 Q2 (仅10条样本); Humbatova 2020 (wrong output)", description="logits clamped to [-1, 1]"),

    # ---- two faults in different steps: the earlier step's error is the first fix ------------------------
    S("two_nan_and_lr_high", with_table("diabetes", "diabetes", nan_regression,
                                        **{"optimizer": {"name": "sgd", "lr": 1.0, "momentum": 0.9}}),
      {"D101", "H300"}, "D101", ("two-faults", "table", "regression", "sgd"), allowed=LR_SYMPTOMS + ("H307",),
      source="seeds/000 数据损坏 + 学习率过高", description="NaNs in 2 diabetes columns and sgd at lr 1.0"),
    S("two_labels_offset_and_softmax", with_table("wine", "wine", labels_plus_one,
                                                  **{"model.layers": mlp([32], "relu", 3, last_act="softmax")}),
      {"D107", "M202"}, "D107", ("two-faults", "table", "multiclass"), allowed=("G407", "H305", "H301", "M208"),
      source="seeds/000 标签 + 输出层", description="labels 1..3 and softmax before cross_entropy"),
    S("two_nan_and_zero_init", with_table("wine", "wine", with_nans, **{"model.init": "zeros"}),
      {"D101", "M204"}, "D101", ("two-faults", "table", "multiclass"),
      allowed=("G403", "G405", "G407", "H305", "M208", "H301", "G406"), source="seeds/000 数据损坏 + 初始化",
      description="NaNs in 3 columns and model.init: zeros"),
    S("two_inf_and_output_size", with_table("bc", "breast_cancer", with_infs,
                                            **{"model.layers": mlp([32], "relu", 3)}),
      {"D102", "M201"}, "D102", ("two-faults", "table", "binary"), source="seeds/000 数据 + 输出层",
      description="infinite values and 3 outputs for a binary target"),
    S("two_mse_on_classes_and_lr_high", simple("wine", **{"loss": "mse", "model.layers": mlp([32], "relu", 1),
                                                          "optimizer.lr": 3.0}),
      {"M203", "H300"}, "M203", ("two-faults", "table", "multiclass"), allowed=LR_SYMPTOMS,
      source="DeepCrime change loss + change learning rate", description="MSE on class ids and adam at lr 3"),
    S("two_labels_offset_and_dead_relu", user_model("zoo_negative_bias2", NEGATIVE_BIAS, "wine", "NegativeBias",
                                                {"n_in": 13, "hidden": 32, "n_out": 3},
                                                transform=labels_plus_one, table_name="wine"),
      {"D107", "G403"}, "D107", ("two-faults", "table", "multiclass", "user-model"),
      allowed=("G405", "G407", "H305", "H301", "G406", "M208"), source="seeds/000 标签 + dead ReLU",
      description="labels 1..3 and every ReLU dead"),

    # ---- healthy controls --------------------------------------------------------------------------------
    S("ok_wine_mlp", simple("wine"), set(), None, ("healthy", "table", "multiclass"), healthy=True,
      source="configs/wine.yaml"),
    S("ok_breast_cancer", simple("bc"), set(), None, ("healthy", "table", "binary"), healthy=True,
      source="configs/breast_cancer.yaml"),
    S("ok_diabetes", simple("diabetes"), set(), None, ("healthy", "table", "regression"), healthy=True,
      source="configs/diabetes.yaml"),
    S("ok_digits_cnn", simple("digits_cnn"), set(), None, ("healthy", "image", "conv", "multiclass"), healthy=True,
      source="configs/digits_cnn.yaml"),
    S("ok_digits_lstm", simple("digits_lstm"), set(), None, ("healthy", "sequence", "lstm", "multiclass"),
      healthy=True, source="configs/digits_lstm.yaml"),
    S("ok_iris_mlp", simple("iris"), set(), None, ("healthy", "table", "multiclass"), healthy=True),
    S("ok_wine_residual_layernorm", simple("wine", **{"model.layers": RESIDUAL_MLP, "model.init": "default",
                                                      "optimizer": {"name": "adamw", "lr": 0.001,
                                                                    "weight_decay": 0.05},
                                                      "training.epochs": 10}), set(),
      None,
      ("healthy", "table", "multiclass", "residual"), healthy=True),
    S("ok_breast_cancer_sgd_momentum", simple("bc", **{"optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}}),
      set(), None, ("healthy", "table", "binary", "sgd"), healthy=True),
    S("ok_diabetes_tanh_xavier", simple("diabetes", **{"model.layers": mlp([32], "tanh", 1), "model.init": "xavier",
                                                       "training.epochs": 15}),
      set(), None, ("healthy", "table", "regression"), healthy=True),
    S("ok_digits_mlp", digits_mlp(), set(), None, ("healthy", "image", "multiclass"), healthy=True),
    S("ok_digits_gru_rmsprop", digits_gru(), set(), None, ("healthy", "sequence", "gru", "multiclass", "rmsprop"),
      healthy=True),
    S("ok_moons_two_logits", moons_spec(), set(), None, ("healthy", "generated", "binary"), healthy=True),
    S("ok_friedman_gelu_adamw", friedman_spec(), set(), None, ("healthy", "generated", "regression", "adamw"),
      healthy=True),
    S("ok_wine_batchnorm_dropout", simple("wine", **{"model.layers": mlp([64, 32], "relu", 3, norm="batchnorm1d",
                                                                          dropout=0.2),
                                                     "optimizer": {"name": "adamw", "lr": 0.003,
                                                                   "weight_decay": 0.01}}),
      set(), None, ("healthy", "table", "multiclass", "batchnorm"), healthy=True),

    # ---- added 2026-12-04: fault classes of the catalogue on data and architectures the rest of dev lacks ----
    S("m208_linear_on_curved_boundary", generated("bc", friedman_classes, 1000, **{
        "data.target": "label", "task": "classification", "loss": "cross_entropy",
        "model.layers": [{"type": "linear", "out": 2}], "optimizer": {"name": "adam", "lr": 0.003}}),
      {"M208"}, "M208", ("model", "generated", "binary"), allowed=("H305", "H301", "G407"),
      source="catalogue M208 (a linear model where the boundary is curved)",
      description="logistic regression on Friedman #1 thresholded at its median"),
    S("m208_user_affine_stack", user_model("zoo_affine", AFFINE_STACK, "bc", "AffineStack",
                                           {"n_in": 4, "hidden": 32, "n_out": 2},
                                           transform=xor_table, table_name="breast_cancer", **{"data.target": "label", "task": "classification",
                                                                   "loss": "cross_entropy"}),
      {"M208"}, "M208", ("model", "generated", "binary", "user-model"), allowed=("H305", "H301", "G407"),
      source="catalogue M208; activation calls left out of a user's forward()",
      description="three Linear layers with no activation (one affine map) on XOR"),
    S("g403_user_dead_relu_friedman", user_model("zoo_dead_regressor", DEAD_RELU_REGRESSION, "diabetes",
                                                 "DeadRegressor", {"n_in": 8, "hidden": 48},
                                                 transform=lambda df, r: friedman(1000, int(r.integers(1 << 30))),
                                                 table_name="diabetes",
                                                 **{"data.target": "y", "data.normalize_target": False}),
      {"G403"}, "G403", ("gradients", "generated", "regression", "user-model"),
      allowed=("G401", "G405", "G406", "G407", "H301", "H305", "M207", "M208"),
      source="catalogue G403 (a bias init that leaves every ReLU inactive), in a regression",
      description="a 2-hidden-layer ReLU regressor whose biases are -4: no unit fires"),
    S("h303_heavy_dropout_wine", simple("wine", **{"model.layers": mlp([12, 12], "relu", 3, dropout=0.85)}),
      {"H303"}, "H303", ("hyper", "table", "multiclass"), allowed=("H305", "G407", "M208", "H301", "H308"),
      source="catalogue H303 (dropout far above 0.5 on a small table)",
      description="dropout 0.85 after each 12-unit hidden layer on 178 rows"),
    S("ok_friedman_l1_relu", friedman_spec(**{"loss": "l1", "model.layers": mlp([64, 32], "relu", 1)}),
      set(), None, ("healthy", "generated", "regression"), healthy=True),
    S("ok_wine_rmsprop_tanh", simple("wine", **{"model.layers": mlp([32], "tanh", 3), "model.init": "xavier",
                                                "optimizer": {"name": "rmsprop", "lr": 0.001}}),
      set(), None, ("healthy", "table", "multiclass", "rmsprop"), healthy=True),
]

# ---- the known fix of each dev scenario (what a competent engineer would change in the spec) -----------------

def features_of(table_name: str, target: str) -> list[str]:
    """The sample table's feature columns (a fix that selects them drops a column a fault added)."""
    return [c for c in _table(table_name).columns if c != target]


MLP3_FIX = mlp([32], "relu", 3)
DEV_FIXES: dict[str, dict[str, Any] | None] = {
    "d100_missing_file": None,                       # the data cannot be read: nothing trains, no spec key helps
    "d100_target_absent": None,                      # idem (naming the right column is the user's knowledge)
    "d101_nan_wine": {"data.missing": "median"},
    "d102_inf_breast_cancer": {"data.missing": "drop"},
    "d103_string_column": {"data.features": features_of("wine", "label")},
    "d104_unscaled_wine": {"data.normalize": "standardize"},
    "d104_raw_pixels_digits": {"data.normalize": "minmax"},
    "d105_constant_columns": {"data.features": features_of("breast_cancer", "label")},
    "d106_unit_error_outliers": None,                # clipping 4 records is a data edit no spec key expresses
    "d107_labels_offset": {"data.label_map": {1: 0, 2: 1, 3: 2}},
    "d107_string_labels": {"data.label_map": {"setosa": 0, "versicolor": 1, "virginica": 2}},
    "d107_binary_labels_1_2": {"data.label_map": {1: 0, 2: 1}},
    "d108_unscaled_target": {"data.normalize_target": True},
    "d109_imbalanced": {"loss": {"name": "bce_with_logits", "class_weights": "balanced"}},
    "d110_duplicates": None,                         # deduplicating is a data edit
    "d110_conflicting_labels": None,                 # relabelling is a data edit
    "d111_few_samples": None,                        # more data
    "d112_leaking_column": {"data.features": features_of("wine", "label")},
    "d112_leaking_regression": {"data.features": features_of("diabetes", "progression")},
    "d113_shifted_validation": None,                 # the validation file itself is wrong
    "d113_sorted_split": None,                       # re-splitting needs the rows back in one file
    "d114_single_class": None,                       # the other classes were never collected
    "d114_constant_target": None,
    "m200_conv_on_table": {"model.layers": MLP3_FIX},
    "m200_missing_flatten": {"model.layers": [{"type": "flatten"}, {"type": "linear", "out": 64}, {"type": "relu"},
                                              {"type": "linear", "out": 10}]},
    "m201_wrong_output_size": {"model.layers": MLP3_FIX},
    "m201_two_logits_bce": {"model.layers": mlp([32], "relu", 1)},
    "m202_softmax_before_ce": {"model.layers": MLP3_FIX},
    "m202_relu_regression_output": {"model.layers": mlp([32], "relu", 1)},
    "m202_sigmoid_before_bce_logits": {"model.layers": mlp([32], "relu", 1)},
    "m203_mse_on_classes": {"loss": "cross_entropy", "model.layers": MLP3_FIX},
    "m203_ce_on_regression": {"loss": "mse"},
    "m204_zero_init": {"model.init": "he"},
    "m204_constant_init_regression": {"model.init": "he"},
    "m205_deep_relu_xavier": {"model.init": "he"},
    "m205_large_normal_init": {"model.init": "he"},
    "m206_deep_sigmoid": {"model.layers": mlp([32] * 6, "relu", 3), "model.init": "he"},
    "m207_large_output_init": {"model.init": "he"},
    "m208_too_narrow": {"model.layers": [{"type": "flatten"}, {"type": "linear", "out": 64}, {"type": "tanh"},
                                         {"type": "linear", "out": 10}]},
    "m208_linear_model_on_xor": {"model.layers": mlp([32], "relu", 2)},
    "m208_too_big": {"model.layers": MLP3_FIX},
    "h300_adam_lr_high": {"optimizer.lr": 0.003},
    "h300_adam_lr_oscillates": {"optimizer.lr": 0.001},
    "h300_sgd_lr_high": {"optimizer.lr": 0.1},
    "h300_digits_mlp_lr_high": {"optimizer.lr": 0.003},
    "h300_sgd_lr_nan_regression": {"optimizer.lr": 0.01},
    "h300_lstm_lr_high": {"optimizer.lr": 0.003, "optimizer.grad_clip": 1.0},
    "h301_adam_lr_low": {"optimizer.lr": 0.001},
    "h301_sgd_lr_low": {"optimizer.lr": 0.1},
    "h302_full_batch": {"training.batch_size": 32},
    "h303_weight_decay": {"optimizer.weight_decay": 0.0},
    "h303_heavy_dropout": {"model.layers": mlp([32, 32], "relu", 1, dropout=0.1)},
    "h304_noisy_labels_overfit": {"optimizer.weight_decay": 0.01, "training.epochs": 20},
    "h307_sgd_no_momentum": {"optimizer": {"name": "adam", "lr": 0.003}},
    "h308_too_few_epochs": {"training.epochs": 10},
    "g400_log_of_negative": {"data.normalize": "minmax"},
    "g401_deep_sigmoid_sgd": {"model.layers": mlp([32] * 8, "relu", 3), "model.init": "he"},
    "g401_tanh_small_init_sgd": {"model.init": "xavier"},
    "g402_exploding_deep_relu": {"model.init": "he"},
    "g402_init_explodes_to_nan": {"model.init": "he"},
    "g403_dead_relu_bias": {"model.init": "he"},     # re-initialising zeroes the user model's -5 biases
    "g404_tanh_unscaled": {"data.normalize": "standardize"},
    "g405_unused_layer": None,                       # the user's forward() must change
    "g405_frozen_encoder": None,                     # idem (requires_grad set in user code)
    "g406_update_ratio_sgd": {"optimizer.lr": 0.01},
    "g407_clamped_logits": None,                     # the clamp is in the user's forward()
    "g409_raises_in_train_mode": None,               # the bug is in the user's forward()
    "two_nan_and_lr_high": {"data.missing": "median", "optimizer.lr": 0.01},
    "two_labels_offset_and_softmax": {"data.label_map": {1: 0, 2: 1, 3: 2}, "model.layers": MLP3_FIX},
    "two_nan_and_zero_init": {"data.missing": "median", "model.init": "he"},
    "two_inf_and_output_size": {"data.missing": "drop", "model.layers": mlp([32], "relu", 1)},
    "two_mse_on_classes_and_lr_high": {"loss": "cross_entropy", "model.layers": MLP3_FIX, "optimizer.lr": 0.003},
    "two_labels_offset_and_dead_relu": {"data.label_map": {1: 0, 2: 1, 3: 2}, "model.init": "he"},
    "m208_linear_on_curved_boundary": {"model.layers": mlp([32], "relu", 2)},
    "m208_user_affine_stack": None,                  # the activations belong in the user's forward()
    "g403_user_dead_relu_friedman": {"model.init": "he"},
    "h303_heavy_dropout_wine": {"model.layers": mlp([12, 12], "relu", 3, dropout=0.1)},
}
assert {s.name for s in SCENARIOS if not s.healthy} == set(DEV_FIXES), "every dev fault needs a known fix (or None)"
SCENARIOS = [replace(s, fix=None if s.healthy else DEV_FIXES[s.name], part="dev") for s in SCENARIOS]

# One scenario per step plus two healthy ones: tests/test_zoo_quick.py runs these on every test run.
QUICK = ["d107_labels_offset", "m202_softmax_before_ce", "h300_adam_lr_high", "g405_unused_layer",
         "two_labels_offset_and_softmax", "ok_wine_mlp", "ok_diabetes"]


def by_name() -> dict[str, Scenario]:
    out = {s.name: s for s in SCENARIOS}
    assert len(out) == len(SCENARIOS), "scenario names must be unique"
    return out
