"""Transformer-era scenarios of the fault zoo (issue 14): the two healthy token configs of configs/ and a
faulty twin for each new finding. They go into the holdout part first, and their numbers are reported
separately.

`PART` marks them as holdout. Scenario (scenarios.py) has no `part`/`fix` fields in this branch yet; the
scenarios keep its shape so that they can take `part=PART` once it has.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .scenarios import ALWAYS_INFO, ROOT, SAMPLE, Scenario, write_spec

PART = "holdout"
sys.path.insert(0, str(ROOT / "scripts"))
import make_token_data  # noqa: E402

SENT_LAYERS = [{"type": "embedding", "vocab": 64, "dim": 32, "padding_idx": 0}, {"type": "positional_embedding"},
               {"type": "transformer_encoder", "heads": 2, "ff": 64, "num_layers": 1, "dropout": 0.1, "norm_first": True},
               {"type": "sequence_pool", "mode": "mean"}, {"type": "linear", "out": 2}]
COPY_LAYERS = [{"type": "embedding", "vocab": 18, "dim": 32}, {"type": "positional_embedding"},
               {"type": "transformer_encoder", "heads": 2, "ff": 64, "num_layers": 2, "dropout": 0.0, "norm_first": True},
               {"type": "sequence_pool", "mode": "last"}, {"type": "linear", "out": 8}]


def sentiment_spec(path: str) -> dict[str, Any]:
    return {"task": "binary", "data": {"path": path, "target": "label", "pad_id": 0},
            "model": {"layers": copy.deepcopy(SENT_LAYERS)}, "loss": "cross_entropy",
            "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01, "decay_norm_bias": False,
                          "schedule": {"warmup_steps": 20, "decay": "cosine"}},
            "training": {"batch_size": 32, "epochs": 5}}


def copy_spec(path: str) -> dict[str, Any]:
    return {"task": "classification", "data": {"path": path}, "model": {"layers": copy.deepcopy(COPY_LAYERS)},
            "loss": "cross_entropy",
            "optimizer": {"name": "adamw", "lr": 0.003, "schedule": {"warmup_steps": 20, "decay": "cosine"}},
            "training": {"batch_size": 32, "epochs": 20}}


def sentiment(**over: Any) -> Callable[[Path, int], Path]:
    def build(tmp: Path, seed: int) -> Path:
        p = tmp / "sentiment.parquet"
        make_token_data.sentiment(2000, seed).to_parquet(p, index=False)
        return write_spec(tmp, sentiment_spec(str(p)), seed, **over)
    return build


def copy_task(**over: Any) -> Callable[[Path, int], Path]:
    def build(tmp: Path, seed: int) -> Path:
        X, y = make_token_data.lookup(600, seed)
        p = tmp / "copy.npz"
        np.savez(p, X=X, y=y)
        return write_spec(tmp, copy_spec(str(p)), seed, **over)
    return build


def _layers(base: list, index: int, **changes: Any) -> list:
    out = copy.deepcopy(base)
    out[index].update(changes)
    return [{k: v for k, v in l.items() if v is not None} for l in out]


def wine_raw_fp16(tmp: Path, seed: int) -> Path:
    """Wine standardized, except one column left in raw units x 2e5; fp16 without loss scaling."""
    df = pd.read_csv(SAMPLE / "wine.csv")
    feats = [c for c in df.columns if c != "label"]
    df[feats] = (df[feats] - df[feats].mean()) / df[feats].std()
    df["proline"] = df["proline"] * 2e5
    p = tmp / "wine_raw.csv"
    df.to_csv(p, index=False)
    spec = {"task": "classification", "data": {"path": str(p), "target": "label"},
            "model": {"layers": [{"type": "linear", "out": 32}, {"type": "relu"}, {"type": "linear", "out": 3}],
                      "init": "he"}, "loss": "cross_entropy", "optimizer": {"name": "adam", "lr": 0.003},
            "training": {"batch_size": 32, "epochs": 30, "precision": "fp16", "grad_scaler": False}}
    return write_spec(tmp, spec, seed)


ACC_STEPS = '''
def not_divided(model, batch, optimizer, loss_fn):
    optimizer.zero_grad()
    for x, y in batch:
        loss_fn(model(x), y).backward()
    optimizer.step()
    return 0.0


def zero_every(model, batch, optimizer, loss_fn):
    for x, y in batch:
        optimizer.zero_grad()
        (loss_fn(model(x), y) / len(batch)).backward()
    optimizer.step()
    return 0.0
'''


def wine_step(fn: str) -> Callable[[Path, int], Path]:
    def build(tmp: Path, seed: int) -> Path:
        (tmp / "acc_steps.py").write_text(ACC_STEPS)
        spec = {"task": "classification",
                "data": {"path": str(SAMPLE / "wine.csv"), "target": "label", "normalize": "standardize"},
                "model": {"layers": [{"type": "linear", "out": 32}, {"type": "relu"}, {"type": "linear", "out": 3}],
                          "init": "he"}, "loss": "cross_entropy", "optimizer": {"name": "adam", "lr": 0.003},
                "training": {"batch_size": 32, "epochs": 30, "accumulate": 4, "step": f"acc_steps:{fn}"}}
        return write_spec(tmp, spec, seed)
    return build


def sentiment_rows(edit: Callable[[list, np.random.Generator], list]) -> Callable[[Path, int], Path]:
    """The sentiment twin with its token lists edited (long outliers, near-copies)."""
    def build(tmp: Path, seed: int) -> Path:
        df = make_token_data.sentiment(2000, seed)
        df["tokens"] = edit([list(t) for t in df["tokens"]], np.random.default_rng(seed))
        p = tmp / "sentiment.parquet"
        df.to_parquet(p, index=False)
        return write_spec(tmp, sentiment_spec(str(p)), seed)
    return build


def long_outliers(seqs: list, rng: np.random.Generator) -> list:
    for i in range(len(seqs) // 20):            # 5% of the texts are 200 tokens long (median ~16)
        seqs[i] = rng.integers(22, 64, 200).tolist() + [2]
    return seqs


def near_copies(seqs: list, rng: np.random.Generator) -> list:
    base = rng.integers(2, 64, 16)
    for i in range(len(seqs) // 4):             # a quarter of the texts are one boilerplate with one word changed
        row = base.copy()
        row[rng.integers(16)] = rng.integers(2, 64)
        seqs[i] = row.tolist()
    return seqs


PRETRAINED = '''
import math
import torch
from torch import nn


class Pretrained(nn.Module):
    """fixed-seed features with large weights (what long pretraining leaves) and a small head"""

    def __init__(self, n_in=10, hidden=64, n_out=1, gain=3000.0):
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        self.features = nn.Linear(n_in, hidden)
        self.head = nn.Linear(hidden, n_out)
        with torch.no_grad():
            self.features.weight.copy_(torch.randn(hidden, n_in, generator=g) * gain / math.sqrt(n_in))
            self.features.bias.zero_()
            self.head.weight.copy_(torch.randn(n_out, hidden, generator=g) / (gain * math.sqrt(hidden)))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(torch.relu(self.features(x)))
'''


def fine_tuning(tmp: Path, seed: int) -> Path:
    """A fine-tuning-like model where only lrs near 1e-5 train, configured at 1e-3."""
    (tmp / "ft_model.py").write_text(PRETRAINED)
    spec = {"task": "regression",
            "data": {"path": str(SAMPLE / "diabetes.csv"), "target": "progression", "normalize": "standardize",
                     "normalize_target": True},
            "model": {"class": "ft_model:Pretrained"}, "loss": "mse", "optimizer": {"name": "adam", "lr": 0.001},
            "training": {"batch_size": 32, "epochs": 30}}
    return write_spec(tmp, spec, seed)


POST_LN4 = _layers(COPY_LAYERS, 2, num_layers=4, norm_first=False)
SRC = "issue 14 (transformers, token data, lr schedules, mixed precision)"

MODERN: list[Scenario] = [
    Scenario("tf_sentiment_healthy", sentiment(), ALWAYS_INFO, None, healthy=True, tags=("tokens", "transformer"),
             source=SRC, description="the configs/ text-classification transformer on fresh data"),
    Scenario("tf_copy_healthy", copy_task(), ALWAYS_INFO, None, healthy=True, tags=("tokens", "transformer"),
             source=SRC, description="the configs/ copy task transformer on fresh data"),
    Scenario("d115_ids_past_vocab", sentiment(**{"model.layers": _layers(SENT_LAYERS, 0, vocab=48)}),
             frozenset({"D115"}), "D115", tags=("tokens",), source=SRC,
             description="the embedding's vocab (48) is smaller than the tokenizer's (64)"),
    Scenario("d116_padding_unmasked", sentiment(**{"model.layers": _layers(SENT_LAYERS, 0, padding_idx=None)}),
             frozenset({"D116"}), "D116", tags=("tokens",), allowed=frozenset({"H301", "H302", "H304", "H308"}),
             source=SRC, description="padded with id 0 but the embedding has no padding_idx"),
    # H300 fires too (the configured lr breaks without warmup); the triage reads it as explained by H309
    # the long outliers also make most positions padding (D116, first in code order)
    Scenario("d117_length_outliers", sentiment_rows(long_outliers), frozenset({"D116", "D117"}), "D116", tags=("tokens",),
             allowed=frozenset({"H301", "H302", "H304", "H308"}), source=SRC,
             description="5% of the texts are 200 tokens long, the median 16"),
    # some near-copies collide exactly (D110 duplicates, first in code order)
    Scenario("d118_near_copies", sentiment_rows(near_copies), frozenset({"D110", "D118"}), "D110", tags=("tokens",),
             allowed=frozenset({"D110", "H301", "H302", "H304", "H308", "D113"}), source=SRC,
             description="a quarter of the texts are one boilerplate with one word changed"),
    Scenario("h310_fine_tuning_lr", fine_tuning, frozenset({"H300", "H310"}), "H300", tags=("lr",),
             allowed=frozenset({"G401", "G402", "G406", "H306", "H305", "M207", "G400", "G407", "M208"}), source=SRC,
             description="a pretrained-like model where only ~1e-5 trains; configured at 1e-3"),
    Scenario("h309_post_ln_no_warmup",
             copy_task(**{"model.layers": POST_LN4, "optimizer.name": "adam", "optimizer.lr": 0.01,
                          "optimizer.schedule": None}),
             frozenset({"H309"}), "H309", tags=("transformer",),
             allowed=frozenset({"H300", "H301", "H305", "H308", "G411", "M208"}), source=SRC,
             description="Adam at 1e-2 on a 4-layer post-LN transformer without warmup"),
    # H303 fires too (weaker regularisation fits better); the triage reads it as explained by H311
    Scenario("h311_decay_on_norm_bias",
             copy_task(**{"optimizer.lr": 0.01, "optimizer.weight_decay": 3.0}),
             frozenset({"H311"}), "H311", tags=("transformer",), allowed=frozenset({"H303", "H301", "H308"}),
             source=SRC, description="AdamW weight decay 3.0 at lr 1e-2 on LayerNorm gains and biases"),
    Scenario("g410_fp16_overflow", wine_raw_fp16, frozenset({"D104", "G410"}), "D104", tags=("precision",),
             allowed=frozenset({"G400", "H300", "H301", "H306", "M207", "G402", "G403", "G406", "M205"}), source=SRC,
             description="fp16 without loss scaling; one column in raw units overflows float16"),
    Scenario("g411_attention_collapse", copy_task(**{"model.init": {"normal": 3.0}}),
             frozenset({"G411", "M205"}), "M205", tags=("transformer",),   # the init (M205) explains the collapse
             allowed=frozenset({"M205", "M207", "H300", "H301", "H305", "H308", "G402", "G406", "M208", "G407"}),
             source=SRC, description="init N(0, 3) makes query-key products huge: one-hot attention at init"),
    Scenario("g412_accumulated_loss_not_divided", wine_step("not_divided"), frozenset({"G412"}), "G412",
             tags=("user-step",), source=SRC, description="a user step that sums 4 micro-batch losses"),
    Scenario("g413_zero_grad_every_micro_step", wine_step("zero_every"), frozenset({"G413"}), "G413",
             tags=("user-step",), source=SRC, description="a user step that zeroes the gradients per micro-batch"),
]
