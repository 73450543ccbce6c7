"""A fresh batch of fault scenarios (written 2026-12-07), from sources neither zoo part had used, split between
dev and holdout when they were written.

How this batch was made, so that its holdout half measures what a holdout should:
- Every scenario, its expected codes, its first fix and its known fix were written from what the fault *is*
  (the catalogue), before nn-doctor had run on any of them.
- The split was fixed at writing time, by alternation in the order written (1st holdout, 2nd dev, 3rd
  holdout, ...), not by how nn-doctor does on them. Its `part` says which.
- The dev half may be tuned on, like scenarios.py; the holdout half never (the rules of HOLDOUT.md).
- Each known fix is checked by the plain trainer (`run_zoo.py --confirm`), and a fault whose fix does not
  beat it by CONFIRM_MIN_GAP is reported as unconfirmed, whatever nn-doctor says about it.

Sources:
- DeepDiagnosis (Wardat, Cruz, Le, Rajan, ICSE 2022): symptoms mapped to fixes (saturated activation ->
  change the init or activation; unchanged weights -> change the lr; exploding tensors -> lower the lr).
- DeepFD (Cao et al., ICSE 2022): fault types of its Stack Overflow / GitHub benchmark (wrong loss, wrong
  last activation, lr, epochs, optimizer, weight decay).
- UMLAUT (Schoop, Huang, Hartmann, CHI 2021): its heuristics (inputs not normalised, last-layer activation vs
  loss, lr too high).
- NeuraLint (Nikanjam et al., TOSEM 2021): graph rules on model structure (loss vs last layer, a layer too
  narrow to carry the signal).
- DeepLocalize (Wardat, Le, Rajan, ICSE 2021): Stack Overflow programs whose fix was the last activation.
- Stack Overflow / PyTorch-forum questions ("NLL loss negative", "regression predicts one value",
  "loss flat with RMSprop").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .holdout import LR_SYMPTOMS, OUTPUT_SYMPTOMS, spec_of
from .scenarios import ALWAYS_INFO, Scenario, friedman, mlp, write_csv

FEATURE_UNITS = np.array([1000.0, 1.0, 0.01, 250.0, 5.0, 1e4, 0.1, 40.0])   # mixed units, as read from a sensor log


def friedman_mixed_units(tmp: Path, seed: int) -> dict[str, Any]:
    df = friedman(1000, seed)
    cols = [c for c in df.columns if c != "y"]
    df[cols] = df[cols].to_numpy() * FEATURE_UNITS
    return {"data.path": write_csv(tmp, "friedman_units", df)}


def friedman_big_target(tmp: Path, seed: int) -> dict[str, Any]:
    df = friedman(1000, seed)
    df["y"] = 1000.0 + 100.0 * df["y"]          # the target in its raw unit (a price, a count)
    return {"data.path": write_csv(tmp, "friedman_target", df)}


def F(part: str, name: str, build, expected, first_fix, fix, tags=(), allowed=(), source="", description="",
      healthy=False) -> Scenario:
    return Scenario(name=name, build=build, expected=frozenset(expected) | (ALWAYS_INFO if healthy else frozenset()),
                    expected_first_fix=first_fix, healthy=healthy, tags=tuple(tags), allowed=frozenset(allowed),
                    source=source, description=description, fix=fix, part=part)


FRESH: list[Scenario] = [
    # 1 (holdout)
    F("holdout", "fr_deepfd_bce_logits_on_3_classes",
      spec_of("iris", **{"loss": "bce_with_logits"}),
      {"M203"}, "M203", {"loss": "cross_entropy"}, ("model", "table", "multiclass"),
      allowed=OUTPUT_SYMPTOMS + ("G409", "M201"),
      source="DeepFD (wrong loss: binary cross-entropy kept for a 3-class problem)",
      description="bce_with_logits on iris' 3 classes (3 logits)"),
    # 2 (dev)
    F("dev", "fr_umlaut_unscaled_friedman_sgd",
      spec_of("friedman", **{"data.normalize": "none", "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}},
              data=friedman_mixed_units),
      {"D104"}, "D104", {"data.normalize": "standardize"}, ("data", "generated", "regression", "sgd"),
      allowed=LR_SYMPTOMS + ("H300", "H301", "H307"),
      source="UMLAUT (heuristic: inputs not normalised; features in mixed units)",
      description="Friedman #1 with features scaled by 1000, 1, 0.01, ... and momentum sgd, no normalisation"),
    # 3 (holdout)
    F("holdout", "fr_deeplocalize_sigmoid_regression_output",
      spec_of("diabetes", **{"model.layers": mlp([32], "relu", 1, last_act="sigmoid")}),
      {"M202"}, "M202", {"model.layers": mlp([32], "relu", 1)}, ("model", "table", "regression"),
      allowed=OUTPUT_SYMPTOMS + ("G403",),
      source="DeepLocalize (SO: sigmoid on a regression output, predictions stuck in (0, 1))",
      description="a sigmoid after the output of a regression on a standardized target"),
    # 4 (dev)
    F("dev", "fr_so_nll_on_raw_logits",
      spec_of("wine", **{"loss": "nll"}),
      {"M202"}, "M202", {"loss": "cross_entropy"}, ("model", "table", "multiclass"),
      allowed=OUTPUT_SYMPTOMS + ("G400", "G402", "H300", "H306"),
      source="SO ('NLLLoss is negative': nll_loss on raw linear outputs, no log_softmax)",
      description="nll on the raw logits of wine's MLP (the loss is unbounded below)"),
    # 5 (holdout)
    F("holdout", "fr_deeplocalize_sigmoid_before_ce_digits",
      spec_of("digits_mlp", **{"model.layers": [{"type": "flatten"}] + mlp([64], "relu", 10, last_act="sigmoid")}),
      {"M202"}, "M202", {"model.layers": [{"type": "flatten"}] + mlp([64], "relu", 10)},
      ("model", "image", "multiclass"), allowed=OUTPUT_SYMPTOMS + ("H301", "H308"),
      source="DeepLocalize (SO: sigmoid output layer with categorical cross-entropy, accuracy stays low)",
      description="a sigmoid over the 10 logits before cross_entropy"),
    # 6 (dev)
    F("dev", "fr_deepdiagnosis_rmsprop_lr_tiny_bc",
      spec_of("bc", **{"optimizer": {"name": "rmsprop", "lr": 1e-6}}),
      {"H301"}, "H301", {"optimizer.lr": 0.001}, ("hyper", "table", "binary", "rmsprop"),
      allowed=("H305", "H308", "H310", "G406", "G407"),
      source="DeepDiagnosis (unchanged weights -> raise the lr; RMSprop at 1e-6)",
      description="rmsprop at lr 1e-6 on breast_cancer: the weights barely move"),
    # 7 (holdout)
    F("holdout", "fr_deepdiagnosis_tanh_saturated_init_wine",
      spec_of("wine", **{"model.layers": mlp([64, 64], "tanh", 3), "model.init": {"normal": 3.0}}),
      {"M205"}, "M205", {"model.init": "xavier"}, ("model", "table", "multiclass"),
      allowed=("G404", "G401", "G406", "G407", "H300", "H305", "M207", "M206"),
      source="DeepDiagnosis (saturated activation -> change the initialisation; weights N(0, 3) into tanh)",
      description="tanh MLP whose weights are drawn from N(0, 3): every unit saturates at +-1"),
    # 8 (dev)
    F("dev", "fr_so_sgd_momentum_099_friedman",
      spec_of("friedman", **{"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.99}}),
      {"H300"}, "H300", {"optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}},
      ("hyper", "generated", "regression", "sgd"), allowed=LR_SYMPTOMS + ("H307",),
      source="SO (loss oscillates then explodes: SGD lr 0.1 with momentum 0.99)",
      description="sgd lr 0.1 with momentum 0.99 on Friedman #1"),
    # 9 (holdout)
    F("holdout", "fr_deepfd_plain_sgd_lstm",
      spec_of("digits_lstm", **{"optimizer": {"name": "sgd", "lr": 0.001}}),
      {"H301"}, "H301", {"optimizer": {"name": "adam", "lr": 0.003, "grad_clip": 1.0}},
      ("hyper", "sequence", "lstm", "multiclass", "sgd"), allowed=("H305", "H307", "H308", "G406", "G407", "G401"),
      source="DeepFD (wrong optimizer / lr: plain SGD at 1e-3 for an LSTM, accuracy near chance)",
      description="plain sgd at lr 0.001 training the digits LSTM for 10 epochs"),
    # 10 (dev)
    F("dev", "fr_deepfd_adam_unscaled_target_friedman",
      spec_of("friedman", data=friedman_big_target, **{"data.normalize_target": False}),
      {"D108"}, "D108", {"data.normalize_target": True}, ("data", "generated", "regression"),
      allowed=("H301", "H305", "H308", "M207", "G407"),
      source="DeepFD (regression target in the thousands, loss stays huge)",
      description="Friedman #1's target as 1000 + 100 y, unscaled, adamw at 0.003"),
    # 11 (holdout)
    F("holdout", "fr_umlaut_adam_lr_high_digits_cnn",
      spec_of("digits_cnn", **{"optimizer.lr": 0.1}),
      {"H300"}, "H300", {"optimizer.lr": 0.003}, ("hyper", "image", "conv", "multiclass"),
      allowed=LR_SYMPTOMS + ("H307",),
      source="UMLAUT (heuristic: learning rate too high; Adam at 0.1 on a conv net)",
      description="the digits conv net with adam at lr 0.1"),
    # 12 (dev)
    F("dev", "fr_so_sgd_weight_decay_wine",
      spec_of("wine", **{"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1.0}}),
      {"H303"}, "H303", {"optimizer.weight_decay": 0.0}, ("hyper", "table", "multiclass", "sgd"),
      allowed=("H305", "H300", "G407", "M208", "G406", "G403", "H306"),
      source="SO ('model outputs the same class for every input': weight_decay=1 in SGD)",
      description="momentum sgd with weight_decay 1.0 on wine"),
    # 13 (holdout)
    F("holdout", "fr_neuralint_lstm_two_units",
      spec_of("digits_lstm", **{"model.layers": [{"type": "lstm", "out": 2}, {"type": "linear", "out": 10}]}),
      {"M208"}, "M208", {"model.layers": [{"type": "lstm", "out": 32}, {"type": "linear", "out": 10}]},
      ("model", "sequence", "lstm", "multiclass"), allowed=("H305", "G407", "H301", "H308"),
      source="NeuraLint (a layer too narrow for the signal: an LSTM of 2 units before 10 classes)",
      description="an LSTM with 2 hidden units for the 10 digit classes"),
    # 14 (dev)
    F("dev", "fr_deepfd_one_epoch_sgd_digits",
      spec_of("digits_mlp", **{"optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}, "training.epochs": 1}),
      {"H308"}, "H308", {"training.epochs": 20}, ("hyper", "image", "multiclass", "sgd"),
      allowed=("H301", "H305", "H307", "G407"),
      source="DeepFD (too few epochs: training stopped after one pass)",
      description="the digits MLP trained by momentum sgd for 1 epoch"),

    # ---- healthy controls of this batch ----------------------------------------------------------------------
    F("holdout", "ok_fr_friedman_tanh_sgd_xavier",
      spec_of("friedman", **{"model.layers": mlp([64, 32], "tanh", 1), "model.init": "xavier",
                             "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}, "training.epochs": 40}),
      set(), None, None, ("healthy", "generated", "regression", "sgd"), healthy=True),
    F("dev", "ok_fr_digits_gru_adam",
      spec_of("digits_gru", **{"optimizer": {"name": "adam", "lr": 0.003, "grad_clip": 1.0}}),
      set(), None, None, ("healthy", "sequence", "gru", "multiclass"), healthy=True),
    F("holdout", "ok_fr_bc_leaky_batchnorm_adamw",
      spec_of("bc", **{"model.layers": mlp([32, 16], "leaky_relu", 1, norm="batchnorm1d"),
                       "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01}}),
      set(), None, None, ("healthy", "table", "binary", "adamw", "batchnorm"), healthy=True),
]

FRESH_DEV = [s for s in FRESH if s.part == "dev"]
FRESH_HOLDOUT = [s for s in FRESH if s.part == "holdout"]
