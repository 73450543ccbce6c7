"""The holdout part of the fault zoo: faults re-created from sources the dev zoo (scenarios.py) never used.

Nobody tunes nn-doctor's rules or thresholds on these. They were chosen, and their expected codes written,
from what each fault *is* (the catalogue in findings.md), before nn-doctor was run on them; each faulty
scenario's effect on training was then checked with benchmarks/plain_trainer.py (the buggy spec against its
known fix, mean over seeds 0-2; the table is benchmarks/zoo/HOLDOUT.md). A rule change that helps the dev
part and hurts this one is overfitting.

Sources (each scenario's `source` names its origin and the real case in a few words):
- Theia (Manke, Wardat, Khomh, Rajan: "Leveraging Data Characteristics for Bug Localization in Deep Learning
  Programs", TOSEM 2025): structural bugs of 40 Stack Overflow training programs (last-layer activation vs
  loss, output units, missing normalisation, lr, batch size, missing hidden layer, loss vs task).
- defects4ML / Defects4DL (Morovati et al., "Bugs in machine learning-based systems: a faultload benchmark",
  EMSE 2023; github.com/dlfaults/Defects4DL): reproduced bugs from GitHub ML projects (activation before a
  loss that applies it again, constant/zero init, weight decay, deep saturating stacks).
- TrainCheck (Jiang et al., "Training with Confidence: Catching Silent Errors in Deep Learning Training
  with Automated Proactive Checks", OSDI 2025): silent errors in users' training code (missing gradient
  clipping, a detached sub-network, custom init, a sigmoid applied twice).
- Stack Overflow / PyTorch forum questions "loss not decreasing", "accuracy stuck", "loss is NaN"
  (e.g. discuss.pytorch.org "Cross Entropy loss is not decreasing": loss stuck at 2.30 = ln 10).

Data: only what ships with scikit-learn (sample_data/: wine, breast_cancer, diabetes, iris, digits,
digits_seq) and generated tables.
"""
from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .scenarios import (ALWAYS_INFO, LR_SYMPTOMS, SAMPLE, Scenario, _arrays, base, friedman, mlp, moons, rng_for,
                        table, write_csv, write_npz, write_spec)

# ---- builders -------------------------------------------------------------------------------------------


def spec_of(kind: str, data: Callable[[Path, int], dict[str, Any]] | None = None, **overrides: Any):
    """The base spec of `kind` (scenarios.base, or the generated moons/friedman/blobs tables) with dotted
    overrides; `data(tmp, seed)` may return overrides that point at a written data file."""
    def build(tmp: Path, seed: int) -> Path:
        spec = _base(kind)
        extra = data(tmp, seed) if data is not None else {}
        if kind in GENERATED and "data.path" not in extra:
            extra["data.path"] = write_csv(tmp, kind, GENERATED[kind](seed))
        return write_spec(tmp, spec, seed, **{**extra, **overrides})
    return build


def _base(kind: str) -> dict[str, Any]:
    if kind == "moons":
        return {"task": "classification", "data": {"target": "label", "normalize": "standardize"},
                "model": {"layers": mlp([32, 32], "relu", 2), "init": "he"}, "loss": "cross_entropy",
                "optimizer": {"name": "adam", "lr": 0.003}, "training": {"batch_size": 32, "epochs": 20}}
    if kind == "friedman":
        return {"task": "regression", "data": {"target": "y", "normalize": "standardize"},
                "model": {"layers": mlp([64, 64], "gelu", 1)}, "loss": "huber",
                "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
                "training": {"batch_size": 32, "epochs": 30}}
    if kind == "blobs":
        return {"task": "binary", "data": {"target": "label", "normalize": "standardize"},
                "model": {"layers": mlp([32], "relu", 1)}, "loss": "bce_with_logits",
                "optimizer": {"name": "adam", "lr": 0.003}, "training": {"batch_size": 64, "epochs": 20}}
    if kind == "digits_mlp":
        spec = base("digits_cnn")
        spec["model"] = {"layers": [{"type": "flatten"}] + mlp([64], "relu", 10), "init": "he"}
        return spec
    if kind == "digits_gru":
        spec = base("digits_lstm")
        spec["model"] = {"layers": [{"type": "gru", "out": 32}, {"type": "linear", "out": 10}]}
        return spec
    return base(kind)


def imbalanced_blobs(seed: int, n: int = 1500, positive_share: float = 0.03) -> pd.DataFrame:
    """A rare-event table (fraud-like): 3% positives, shifted by 1.5 sd in 3 of 8 gaussian features."""
    r = rng_for(seed, 23)
    y = (r.random(n) < positive_share).astype(int)
    X = r.normal(0, 1, (n, 8))
    X[:, :3] += 1.5 * y[:, None]
    df = pd.DataFrame(X * [3, 1, 0.5, 2, 1, 1, 4, 1] + [10, 0, -2, 5, 0, 1, 0, 3],
                      columns=[f"v{i}" for i in range(8)])
    df["label"] = y
    return df


GENERATED: dict[str, Callable[[int], pd.DataFrame]] = {
    "moons": lambda seed: moons(800, seed),
    "friedman": lambda seed: friedman(1000, seed),
    "blobs": imbalanced_blobs,
}


def table_data(name: str, transform: Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]):
    def data(tmp: Path, seed: int) -> dict[str, Any]:
        return {"data.path": write_csv(tmp, "data", transform(table(name), rng_for(seed, 31)))}
    return data


def user_model(module: str, source: str, cls: str, kwargs: dict[str, Any]):
    """Writes the user's module next to the spec and points model.class at it."""
    def data(tmp: Path, seed: int) -> dict[str, Any]:
        (tmp / f"{module}.py").write_text(textwrap.dedent(source))
        return {"model": {"class": f"{module}:{cls}", "kwargs": kwargs}}
    return data


def both(*parts):
    def data(tmp: Path, seed: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in parts:
            out.update(p(tmp, seed))
        return out
    return data


# ---- data faults ----------------------------------------------------------------------------------------

def bc_string_labels(df, r):
    df["label"] = df["label"].map({0: "M", 1: "B"})      # the UCI file's own diagnosis letters
    return df


def iris_with_nans(df, r):
    for col in ("sepal width (cm)", "petal length (cm)"):
        df.loc[r.choice(len(df), 10, replace=False), col] = np.nan
    return df


def diabetes_log_column(df, r):
    s4 = df["s4"].to_numpy(dtype=float).copy()
    s4[r.choice(len(df), 8, replace=False)] = 0.0     # zeros in the raw column, then log(): -inf
    with np.errstate(divide="ignore"):
        df["s4"] = np.log(s4)
    return df


def wine_sorted_row_id(df, r):
    df = df.sort_values("label", kind="stable").reset_index(drop=True)
    df.insert(0, "sample_id", np.arange(len(df)))     # an export kept the row id of a file sorted by class
    return df.sample(frac=1.0, random_state=int(r.integers(1 << 30))).reset_index(drop=True)


def digits_labels_1_10(tmp: Path, seed: int) -> dict[str, Any]:
    X, y = _arrays("digits")
    return {"data.path": write_npz(tmp, "digits_1_10", X, y.astype(np.int64) + 1)}


def digits_seq_raw_pixels(tmp: Path, seed: int) -> dict[str, Any]:
    X, y = _arrays("digits_seq")
    return {"data.path": write_npz(tmp, "digits_seq_raw", np.clip(X * 16.0, 0, 255).astype(np.float32), y)}


# ---- user code (model.class) ------------------------------------------------------------------------------

LARGE_INIT = """
import torch
from torch import nn

class DeepNet(nn.Module):
    # the author initialises every weight from N(0, 1) "to break symmetry" (TrainCheck: custom init code)
    def __init__(self, n_in=13, hidden=64, n_out=3, depth=4):
        super().__init__()
        layers, d = [], n_in
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        layers.append(nn.Linear(d, n_out))
        self.net = nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0)

    def forward(self, x):
        return self.net(x)
"""

DETACHED_BODY = """
import torch
from torch import nn

class CachedFeatures(nn.Module):
    # features 'cached' with .detach() to save memory: the feature extractor never gets a gradient
    def __init__(self, n_in=30, hidden=8):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.body(x).detach())
"""

SIGMOID_IN_FORWARD = """
import torch
from torch import nn

class ProbNet(nn.Module):
    # forward() returns probabilities; the training script uses BCEWithLogitsLoss (sigmoid twice)
    def __init__(self, n_in=30, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        return torch.sigmoid(self.net(x))
"""

NO_ACTIVATION = """
import torch
from torch import nn

class ThreeLinear(nn.Module):
    # three Linear layers and no activation between them: a linear model in disguise
    def __init__(self, n_in=4, hidden=64, n_out=2):
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.fc3(self.fc2(self.fc1(x)))
"""

NEGATIVE_BIAS_REGRESSION = """
import torch
from torch import nn

class Regressor(nn.Module):
    # hidden biases set to -3 (a copy-pasted 'bias trick' meant for a sparse output layer): ReLUs start dead
    def __init__(self, n_in=10, hidden=64):
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.fc1.bias.fill_(-3.0)
            self.fc2.bias.fill_(-3.0)

    def forward(self, x):
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))
"""


# ---- the holdout -----------------------------------------------------------------------------------------

def H(name: str, build, expected, first_fix, fix, tags=(), allowed=(), source="", description="", healthy=False):
    return Scenario(name=name, build=build, expected=frozenset(expected) | (ALWAYS_INFO if healthy else frozenset()),
                    expected_first_fix=first_fix, healthy=healthy, tags=tuple(tags), allowed=frozenset(allowed),
                    source=source, description=description, fix=fix, part="holdout")


CNN_SOFTMAX = copy.deepcopy(base("digits_cnn")["model"]["layers"]) + [{"type": "softmax"}]
CNN_LOG_SOFTMAX = copy.deepcopy(base("digits_cnn")["model"]["layers"]) + [{"type": "log_softmax"}]
CNN_ONE_OUT = copy.deepcopy(base("digits_cnn")["model"]["layers"][:-1]) + [{"type": "linear", "out": 1}]
CNN = copy.deepcopy(base("digits_cnn")["model"]["layers"])
BC_MLP = mlp([32], "relu", 1)
OUTPUT_SYMPTOMS = ("G404", "G407", "H301", "H305", "M207", "M208", "G406")

HOLDOUT: list[Scenario] = [
    # ---- Theia: structural bugs of Stack Overflow training programs ------------------------------------------
    H("ho_theia_softmax_single_unit", spec_of("bc", **{"model.layers": mlp([32], "relu", 1, last_act="softmax"),
                                                        "loss": "bce"}),
      {"M202"}, "M202", {"model.layers": mlp([32], "relu", 1, last_act="sigmoid")},
      ("model", "table", "binary"), allowed=OUTPUT_SYMPTOMS + ("G405",),
      source="Theia (SO: Dense(1, activation='softmax') with binary_crossentropy, accuracy stuck)",
      description="softmax over a single output unit: the output is always 1"),
    H("ho_theia_unscaled_bc_sgd", spec_of("bc", **{"data.normalize": "none",
                                                    "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}}),
      {"D104"}, "D104", {"data.normalize": "standardize"}, ("data", "table", "binary", "sgd"),
      allowed=LR_SYMPTOMS + ("H300", "H301", "H307"),
      source="Theia (SO: missing input normalisation, features in the thousands, loss jumps)",
      description="breast_cancer unscaled (mean area up to 2500) with momentum sgd"),
    H("ho_theia_one_output_iris_ce", spec_of("iris", **{"model.layers": mlp([16], "relu", 1)}),
      {"M201"}, "M201", {"model.layers": mlp([16], "relu", 3)}, ("model", "table", "multiclass"),
      allowed=OUTPUT_SYMPTOMS + ("G405", "M203"),
      source="Theia (SO: last Dense(1) for a 3-class problem)", description="1 output unit for the 3 iris classes"),
    H("ho_theia_tanh_output_bce", spec_of("bc", **{"model.layers": mlp([32], "relu", 1, last_act="tanh"),
                                                    "loss": "bce"}),
      {"M202"}, "M202", {"model.layers": mlp([32], "relu", 1, last_act="sigmoid")},
      ("model", "table", "binary"), allowed=OUTPUT_SYMPTOMS + ("G400",),
      source="Theia (SO: tanh output layer with binary cross-entropy)",
      description="tanh output (range -1..1) fed to BCE, which needs probabilities"),
    H("ho_theia_sgd_lr_high_digits_cnn", spec_of("digits_cnn", **{"optimizer": {"name": "sgd", "lr": 2.0,
                                                                              "momentum": 0.9}}),
      {"H300"}, "H300", {"optimizer.lr": 0.02}, ("hyper", "image", "conv", "multiclass", "sgd"),
      allowed=LR_SYMPTOMS + ("H307",), source="Theia (SO: SGD learning rate 1.0+ in a CNN, loss NaN)",
      description="the digits conv net with momentum sgd at lr 2"),
    H("ho_theia_full_batch_digits_mlp", spec_of("digits_mlp", **{"training.batch_size": 2048}),
      {"H302"}, "H302", {"training.batch_size": 64}, ("hyper", "image", "multiclass"),
      allowed=("H301", "H305", "H308", "M208"),
      source="Theia (SO: batch_size = len(X_train), 10 epochs, accuracy low)",
      description="the whole training set in one batch: 10 updates in 10 epochs"),
    H("ho_theia_mse_on_digit_ids", spec_of("digits_cnn", **{"model.layers": CNN_ONE_OUT, "loss": "mse"}),
      {"M203"}, "M203", {"model.layers": CNN, "loss": "cross_entropy"}, ("model", "image", "conv", "multiclass"),
      allowed=("G407", "H305", "M207", "M208", "H301"),
      source="Theia (SO: digit classification trained as regression of the digit with MSE)",
      description="one output regressing the digit id 0..9 with MSE"),
    H("ho_theia_no_hidden_layer_moons", spec_of("moons", **{"model.layers": [{"type": "linear", "out": 2}]}),
      {"M208"}, "M208", {"model.layers": mlp([32, 32], "relu", 2)}, ("model", "generated", "binary"),
      allowed=("G407", "H305", "H301"), source="Theia (SO: logistic regression on non-linear data, accuracy ~85%)",
      description="no hidden layer on two interleaving half-moons"),

    # ---- defects4ML: reproduced bugs of GitHub ML projects ------------------------------------------------------
    H("ho_d4ml_log_softmax_before_ce", spec_of("digits_cnn", **{"model.layers": CNN_LOG_SOFTMAX}),
      {"M202"}, "M202", {"model.layers": CNN}, ("model", "image", "conv", "multiclass"), allowed=OUTPUT_SYMPTOMS,
      source="defects4ML (log_softmax output kept when the loss was switched to CrossEntropyLoss)",
      description="log_softmax before cross_entropy (harmless numerically: log_softmax is idempotent)"),
    H("ho_d4ml_softmax_then_nll", spec_of("wine", **{"model.layers": mlp([32], "relu", 3, last_act="softmax"),
                                                      "loss": "nll"}),
      {"M202"}, "M202", {"model.layers": mlp([32], "relu", 3, last_act="log_softmax")},
      ("model", "table", "multiclass"), allowed=OUTPUT_SYMPTOMS,
      source="defects4ML (F.softmax where F.log_softmax was meant, before NLLLoss)",
      description="softmax probabilities fed to nll (which wants log-probabilities)"),
    H("ho_d4ml_constant_init_cnn", spec_of("digits_cnn", **{"model.init": {"constant": 0.01}}),
      {"M204"}, "M204", {"model.init": "he"}, ("model", "image", "conv", "multiclass"),
      allowed=("G401", "G403", "G405", "G406", "G407", "H301", "H305", "M207", "M208", "M205"),
      source="defects4ML (weights filled with a constant by an init helper)",
      description="every conv/linear weight 0.01: the units of a layer stay identical"),
    H("ho_d4ml_zero_init_lstm", spec_of("digits_lstm", **{"model.init": "zeros"}),
      {"M204"}, "M204", {"model.init": "default"}, ("model", "sequence", "lstm", "multiclass"),
      allowed=("G401", "G405", "G406", "G407", "H301", "H305", "M208"),
      source="defects4ML (recurrent weights zero-initialised)", description="an LSTM with every weight 0"),
    H("ho_d4ml_weight_decay_friedman", spec_of("friedman", **{"optimizer.weight_decay": 30.0}),
      {"H303"}, "H303", {"optimizer.weight_decay": 0.01}, ("hyper", "generated", "regression", "adamw"),
      allowed=("H305", "G407", "M208", "G406"),
      source="defects4ML (weight_decay given where a learning-rate decay factor was meant)",
      description="adamw weight_decay 30: the weights shrink faster than they learn"),
    H("ho_d4ml_deep_sigmoid_bc", spec_of("bc", **{"model.layers": mlp([32] * 8, "sigmoid", 1),
                                                   "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}),
      {"M206", "G401"}, "M206", {"model.layers": mlp([32] * 8, "relu", 1), "model.init": "he"},
      ("model", "table", "binary", "deep", "sgd"),
      allowed=("G404", "G406", "G407", "H301", "H305", "H307", "M208", "M205"),
      source="defects4ML (a deep sigmoid MLP kept from a tutorial, training stalls)",
      description="8 sigmoid layers trained by momentum sgd on breast_cancer"),

    # ---- TrainCheck: silent errors in the user's training code -----------------------------------------------
    H("ho_tc_user_large_init", spec_of("wine", data=user_model("ho_large_init", LARGE_INIT, "DeepNet",
                                                               {"n_in": 13, "hidden": 64, "n_out": 3, "depth": 4})),
      {"M205"}, "M205", {"model.init": "he"}, ("model", "table", "multiclass", "user-model", "deep"),
      allowed=("M207", "G402", "G403", "G406", "H300", "H304", "H305", "G400"),
      source="TrainCheck (user init code overriding the framework's init)",
      description="a 5-layer ReLU net whose __init__ draws every weight from N(0, 1)"),
    H("ho_tc_user_detached_body", spec_of("bc", data=user_model("ho_detached", DETACHED_BODY, "CachedFeatures",
                                                                {"n_in": 30, "hidden": 8})),
      {"G405"}, "G405", None, ("gradients", "table", "binary", "user-model"), allowed=("H301", "H305", "M208"),
      source="TrainCheck (a sub-network's output detached: its parameters never update)",
      description="the feature layer's output .detach()ed in forward()"),
    H("ho_tc_user_sigmoid_with_logits_loss", spec_of("bc", data=user_model("ho_prob", SIGMOID_IN_FORWARD, "ProbNet",
                                                                           {"n_in": 30, "hidden": 32})),
      {"M202"}, "M202", {"loss": "bce"}, ("model", "table", "binary", "user-model"), allowed=OUTPUT_SYMPTOMS,
      source="TrainCheck (sigmoid applied in the model and again in the loss)",
      description="forward() returns probabilities, the spec's loss is bce_with_logits"),
    H("ho_tc_gru_missing_grad_clip", spec_of("digits_gru", **{"optimizer": {"name": "sgd", "lr": 1.0,
                                                                          "momentum": 0.9}}),
      {"H300"}, "H300", {"optimizer.grad_clip": 1.0}, ("hyper", "sequence", "gru", "multiclass", "sgd"),
      allowed=LR_SYMPTOMS + ("H307",),
      source="TrainCheck (gradient clipping missing from the training loop, BLOOM-style spikes)",
      description="a GRU with momentum sgd at lr 1 and no gradient clipping"),
    H("ho_tc_user_no_activation", spec_of("moons", data=user_model("ho_linear", NO_ACTIVATION, "ThreeLinear",
                                                                   {"n_in": 4, "hidden": 64, "n_out": 2})),
      {"M208"}, "M208", None, ("model", "generated", "binary", "user-model"), allowed=("G407", "H305", "H301"),
      source="TrainCheck / SO (activation calls forgotten in forward())",
      description="three Linear layers without activations on half-moons"),
    H("ho_tc_user_dead_relu_regression", spec_of("diabetes", data=user_model("ho_dead", NEGATIVE_BIAS_REGRESSION,
                                                                             "Regressor", {"n_in": 10, "hidden": 64})),
      {"G403"}, "G403", {"model.init": "he"}, ("gradients", "table", "regression", "user-model"),
      allowed=("G405", "G407", "H301", "H305", "G406", "M208", "M207"),
      source="TrainCheck (custom bias init in user code; every ReLU inactive)",
      description="hidden biases -3 on standardized inputs: the ReLUs never fire"),

    # ---- Stack Overflow: "loss not decreasing", "accuracy stuck", "loss is NaN" -------------------------------
    H("ho_so_nan_unscaled_target_sgd", spec_of("diabetes", **{"data.normalize_target": False,
                                                               "optimizer": {"name": "sgd", "lr": 0.01}}),
      {"D108"}, "D108", {"data.normalize_target": True}, ("data", "table", "regression", "sgd"),
      allowed=LR_SYMPTOMS + ("H300", "H301", "H307", "H308"),
      source="SO (Keras regression: loss NaN after the first epoch, target in the hundreds)",
      description="diabetes target 25..346 unscaled with sgd lr 0.01"),
    H("ho_so_adam_lr_high_iris", spec_of("iris", **{"optimizer.lr": 1.0}),
      {"H300"}, "H300", {"optimizer.lr": 0.01}, ("hyper", "table", "multiclass"), allowed=LR_SYMPTOMS,
      source="SO (accuracy stuck at 33% with Adam(lr=1))", description="adam at lr 1 on iris"),
    H("ho_so_softmax_ce_stuck_cnn_sgd", spec_of("digits_cnn", **{"model.layers": CNN_SOFTMAX,
                                                                 "optimizer": {"name": "sgd", "lr": 0.01,
                                                                               "momentum": 0.9}}),
      {"M202"}, "M202", {"model.layers": CNN}, ("model", "image", "conv", "multiclass", "sgd"),
      allowed=OUTPUT_SYMPTOMS + ("H307",),
      source="PyTorch forum 'Cross Entropy loss is not decreasing' (stuck at 2.30 = ln 10; softmax before CE)",
      description="softmax before cross_entropy in a conv net trained by momentum sgd"),
    H("ho_so_sgd_lr_low_friedman", spec_of("friedman", **{"optimizer": {"name": "sgd", "lr": 1e-4}}),
      {"H301"}, "H301", {"optimizer.lr": 0.05}, ("hyper", "generated", "regression", "sgd"),
      allowed=("H305", "H307", "H308", "G406", "G407"),
      source="SO (loss decreases far too slowly, SGD lr=1e-4)", description="plain sgd at lr 1e-4 on Friedman #1"),
    H("ho_so_imbalanced_rare_events", spec_of("blobs"),
      {"D109"}, "D109", {"loss": {"name": "bce_with_logits", "class_weights": "balanced"}},
      ("data", "generated", "binary"), allowed=("H304", "H305", "D111"),
      source="SO (accuracy stuck at 97%: the model predicts only the majority class)",
      description="3% positives; unweighted BCE"),
    H("ho_so_string_labels_bc", spec_of("bc", data=table_data("breast_cancer", bc_string_labels)),
      {"D107"}, "D107", {"data.label_map": {"M": 0, "B": 1}}, ("data", "table", "binary"),
      source="SO (could not convert string to float: 'M')", description="diagnosis letters M/B as labels"),
    H("ho_so_nan_in_iris", spec_of("iris", data=table_data("iris", iris_with_nans)),
      {"D101"}, "D101", {"data.missing": "median"}, ("data", "table", "multiclass"),
      allowed=("G400",), source="SO (loss is nan from the first batch: empty cells in the csv)",
      description="20 missing cells in two iris columns"),
    H("ho_so_log_of_zero_feature", spec_of("diabetes", data=table_data("diabetes", diabetes_log_column)),
      {"D102"}, "D102", {"data.missing": "drop"}, ("data", "table", "regression"), allowed=("G400",),
      source="SO (NaN loss: np.log of a column with zeros gave -inf)",
      description="a log-transformed column with -inf in 8 rows"),
    H("ho_so_row_id_leak", spec_of("wine", data=table_data("wine", wine_sorted_row_id)),
      {"D112"}, "D112", {"data.features": [c for c in table("wine").columns if c != "label"]},
      ("data", "table", "multiclass"), allowed=("D104",),
      source="SO (suspiciously perfect validation accuracy: an id column of a class-sorted file)",
      description="a sample_id column numbered after sorting by class"),
    H("ho_so_rmsprop_lr_high_friedman", spec_of("friedman", **{"optimizer": {"name": "rmsprop", "lr": 0.3}}),
      {"H300"}, "H300", {"optimizer.lr": 0.001}, ("hyper", "generated", "regression", "rmsprop"),
      allowed=LR_SYMPTOMS + ("H307",), source="SO (RMSprop loss explodes to 1e+20 then NaN)",
      description="rmsprop at lr 0.3"),
    H("ho_so_heavy_dropout_iris", spec_of("iris", **{"model.layers": mlp([16, 16], "relu", 3, dropout=0.85)}),
      {"H303"}, "H303", {"model.layers": mlp([16, 16], "relu", 3, dropout=0.1)}, ("hyper", "table", "multiclass"),
      allowed=("H305", "G407", "M208", "H301"), source="SO (training accuracy lower than validation, stuck)",
      description="dropout 0.85 after each hidden layer of a small net"),
    H("ho_so_deep_tanh_sgd_diabetes", spec_of("diabetes", **{"model.layers": mlp([32] * 12, "tanh", 1),
                                                              "optimizer": {"name": "sgd", "lr": 0.01}}),
      {"M206", "G401"}, "M206", {"model.layers": mlp([32] * 12, "relu", 1), "model.init": "he"},
      ("model", "table", "regression", "deep", "sgd"),
      allowed=("G404", "G406", "G407", "H301", "H305", "H307", "H308", "M205", "M208"),
      source="SO (deep tanh network: loss flat, gradients of the first layers ~0)",
      description="12 tanh layers with torch's default init, plain sgd"),
    H("ho_so_labels_1_to_10_digits", spec_of("digits_cnn", data=digits_labels_1_10),
      {"D107"}, "D107", {"data.label_map": {i + 1: i for i in range(10)}}, ("data", "image", "conv", "multiclass"),
      allowed=("M201",), source="SO (IndexError: Target 10 is out of bounds: labels 1..10)",
      description="digit labels stored as 1..10"),
    H("ho_so_raw_pixels_lstm", spec_of("digits_lstm", data=digits_seq_raw_pixels, **{"data.normalize": "none"}),
      {"D104"}, "D104", {"data.normalize": "standardize"}, ("data", "sequence", "lstm", "multiclass"),
      allowed=("G404", "H301", "H305", "M207", "G406"),
      source="SO (LSTM on raw 0-255 pixel rows, accuracy stuck ~10%)",
      description="digit rows as 0..255 intensities into an LSTM, unscaled"),

    # ---- healthy controls nobody tuned for -------------------------------------------------------------------
    H("ok_ho_iris_tanh_sgd_momentum", spec_of("iris", **{"model.layers": mlp([16], "tanh", 3), "model.init": "xavier",
                                                           "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                                                           "training.epochs": 50}),
      set(), None, None, ("healthy", "table", "multiclass", "sgd"), healthy=True),
    H("ok_ho_bc_rmsprop_two_layers", spec_of("bc", **{"model.layers": mlp([64, 32], "relu", 1),
                                                       "optimizer": {"name": "rmsprop", "lr": 0.001}}),
      set(), None, None, ("healthy", "table", "binary", "rmsprop"), healthy=True),
    H("ok_ho_diabetes_l1_elu", spec_of("diabetes", **{"model.layers": mlp([32, 16], "elu", 1), "loss": "l1",
                                                       "optimizer": {"name": "adamw", "lr": 0.003,
                                                                     "weight_decay": 0.01}}),
      set(), None, None, ("healthy", "table", "regression", "adamw"), healthy=True),
    H("ok_ho_digits_cnn_batchnorm_sgd", spec_of("digits_cnn", **{
        "model.layers": [{"type": "conv2d", "out": 16, "kernel_size": 3, "padding": 1}, {"type": "batchnorm2d"},
                         {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2}, {"type": "flatten"},
                         {"type": "linear", "out": 10}],
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}),
      set(), None, None, ("healthy", "image", "conv", "multiclass", "sgd", "batchnorm"), healthy=True),
    H("ok_ho_wine_minmax_selu", spec_of("wine", **{"data.normalize": "minmax", "model.layers": mlp([32], "selu", 3),
                                                    "model.init": "lecun", "optimizer.lr": 0.005}),
      set(), None, None, ("healthy", "table", "multiclass"), healthy=True),
    H("ok_ho_moons_leaky_relu", spec_of("moons", **{"model.layers": mlp([32, 32], "leaky_relu", 2)}),
      set(), None, None, ("healthy", "generated", "binary"), healthy=True),
]


def by_name() -> dict[str, Scenario]:
    out = {s.name: s for s in HOLDOUT}
    assert len(out) == len(HOLDOUT), "holdout scenario names must be unique"
    return out
