"""Model, init, loss and optimizer construction from the spec (config.md `model`, `loss`, `optimizer`).

Everything the probes train is built here, so that a spec that cannot work fails *before* training,
with a message that names the layer and the shapes (M200, raised as ModelBuildError).

Shapes. `input_shape` is the per-sample shape (no batch axis): (F,) tabular, (C, H, W) images,
(T, F) sequences. A `layers:` model is an `nn.Sequential` (children "0", "1", ...) built one layer
at a time: each layer's input size is read from a dummy forward of a zeros batch of 2 samples
through what is built so far (eval mode, no grad, so BatchNorm statistics and the RNG are untouched):

    linear            in_features  = shape[-1]   (out -> out_features); input must be (N, F)
    conv1d / conv2d   in_channels  = shape[1]    (out -> out_channels); kernel_size is required
    batchnorm1d / 2d  num_features = shape[1]
    layernorm         normalized_shape = shape[-1] (unless given)
    lstm / gru        input_size   = shape[-1], out -> hidden_size, batch_first=True; the layer
                      returns the LAST time step's output only, (N, hidden) -- (N, 2*hidden) when
                      bidirectional -- via the RecurrentLast wrapper
    adaptive_*pool    output_size defaults to 1
    softmax / log_softmax / softmin: dim defaults to 1, the class (channel) axis torch's losses use;
                      for the usual (N, C) output this is the same as dim=-1
    residual          {type: residual, layers: [...]}: x + layers(x); the layers must keep the shape

Every other key of a layer is passed to its torch.nn class as a keyword argument. Every activation
class in torch.nn.modules.activation is available by its snake_case name (relu, leaky_relu,
log_softmax, logsigmoid, relu6, ...).

Shape rules checked before torch sees the input (torch would otherwise either fail with a bare
matmul error or, worse, silently broadcast): linear on a >2-D input is an error (almost always a
missing flatten; a per-time-step linear on (N, T, F) is allowed when an lstm/gru follows later in
the same stack), conv1d/pool1d need 3-D, conv2d/pool2d/dropout2d/batchnorm2d need 4-D,
batchnorm1d needs 2-D or 3-D, lstm/gru need 3-D.

`model.class: "package.module:Class"` imports user code (with the spec's folder first on sys.path
while importing) and instantiates Class(**kwargs); a dummy forward on input_shape must succeed and
return a tensor. Import/constructor problems are UsageError (exit 2, one line); a failing forward
is ModelBuildError.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import math
import os
import sys
from typing import Any, Iterable, Optional

import torch
from torch import nn
import torch.nn.modules.activation as _act

from .errors import ModelBuildError, UsageError

__all__ = [
    "resolve_device", "build_model", "apply_init", "build_loss", "build_optimizer", "layer_table",
    "count_parameters", "model_summary", "RecurrentLast", "Residual", "LAYER_TYPES", "ACTIVATIONS",
    "SATURATING",
]

POSITION_INIT_STD = 0.02  # learned position tables start at N(0, 0.02) (GPT-2, BERT)
DUMMY_BATCH = 2          # samples in the shape-inference batch (2, not 1: BatchNorm-style layers need >1)
# One layer's parameters, counted on the meta device before anything is allocated: 2**28 is 1 GiB of
# float32 weights (3 GiB with Adam's moments), several times the largest layer of GPT-2 XL (~66M); beyond it
# the build alone can exhaust memory, and no probe would train it in seconds.
MAX_LAYER_PARAMETERS = 2**28
_MAX_TORCH_MSG = 200     # torch error messages are cut to this many characters in one-line reports


# ---- devices ---------------------------------------------------------------------------------

def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        devs.append("mps")
    return devs


def resolve_device(name: str) -> torch.device:
    """auto -> cuda, then mps, then cpu. An unavailable device is a UsageError naming those that exist."""
    name = (name or "auto").strip().lower()
    have = ", ".join(available_devices())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise UsageError(f"device 'mps' is not available here (available: {have}); use --device auto or cpu")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"device '{name}' is not available here: no CUDA GPU is visible to torch "
                             f"(available: {have}); use --device auto or cpu")
        if name != "cuda":
            idx = name.split(":", 1)[1]
            if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                raise UsageError(f"device '{name}' does not exist (available: {have})")
        return torch.device(name)
    raise UsageError(f"unknown device {name!r}: expected auto, cpu, cuda, cuda:N or mps (available: {have})")


# ---- layer modules ---------------------------------------------------------------------------

class RecurrentLast(nn.Module):
    """An LSTM/GRU (batch_first) that returns only the last time step's output, (N, hidden)."""

    def __init__(self, kind: str, **kwargs: Any):
        super().__init__()
        self.kind = kind
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = cls(batch_first=True, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return out[:, -1, :]


class Residual(nn.Sequential):
    """x + layers(x). A Sequential subclass so that inner layers are named "3.0", "3.1", ..."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = x
        for m in self:
            out = m(out)
        return x + out


class TokenEmbedding(nn.Embedding):
    """nn.Embedding that takes token ids stored as floats (the probes keep every X as float32; ids up to
    2**24 are exact there) or integers: (N, T) -> (N, T, dim)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x.long())


class PositionalEmbedding(nn.Module):
    """A learned positional embedding added to (N, T, D): x + P[:T], P of shape (max_len, D), N(0, 0.02)
    at init (GPT-2's and BERT's init scale for position tables)."""

    def __init__(self, max_len: int, dim: int, std: float = POSITION_INIT_STD):
        super().__init__()
        self.max_len, self.dim = int(max_len), int(dim)
        self.weight = nn.Parameter(torch.randn(self.max_len, self.dim) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.shape[1]].to(x.dtype)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, dim={self.dim}"


class TransformerEncoderBlock(nn.Module):
    """torch.nn.TransformerEncoder of `num_layers` torch.nn.TransformerEncoderLayer (batch_first) on
    (N, T, d_model); takes the padding mask (True = padding) that MaskedSequential computes."""

    takes_mask = True

    def __init__(self, d_model: int, heads: int, ff: int, dropout: float, norm_first: bool, num_layers: int,
                 activation: str = "relu"):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=ff, dropout=dropout, activation=activation,
                                           batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.encoder(x, src_key_padding_mask=mask)


class SequencePool(nn.Module):
    """(N, T, D) -> (N, D): the mean over the non-padding positions, the first token, or the last
    non-padding token."""

    takes_mask = True

    def __init__(self, mode: str = "mean"):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.mode == "first":
            return x[:, 0]
        if mask is None:
            return x.mean(dim=1) if self.mode == "mean" else x[:, -1]
        keep = (~mask).to(x.dtype)
        if self.mode == "mean":
            return (x * keep.unsqueeze(-1)).sum(dim=1) / keep.sum(dim=1, keepdim=True).clamp_min(1.0)
        last = (keep.sum(dim=1).long() - 1).clamp_min(0)   # right padding: the last real token
        return x[torch.arange(x.shape[0], device=x.device), last]

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class MaskedSequential(nn.Sequential):
    """A layer stack that starts with a token embedding: the padding mask (ids == padding_idx) is computed
    from the input once and passed to every layer that takes one (transformer_encoder, sequence_pool).
    A row that is all padding keeps its first position unmasked (attention over no key is NaN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mask = None
        first = self[0] if len(self) else None
        if isinstance(first, TokenEmbedding) and first.padding_idx is not None:
            mask = x.long() == first.padding_idx
            if bool(mask.any()):
                mask[:, 0] &= ~mask.all(dim=1)
            else:
                mask = None
        for m in self:
            x = m(x, mask) if getattr(m, "takes_mask", False) else m(x)
        return x


def _snake(cls_name: str) -> str:
    special = {"LeakyReLU": "leaky_relu", "LogSoftmax": "log_softmax", "LogSigmoid": "logsigmoid"}
    return special.get(cls_name, cls_name.lower())


def _activation_table() -> dict[str, type]:
    table = {}
    for cname, c in vars(_act).items():
        if (inspect.isclass(c) and issubclass(c, nn.Module) and c.__module__ == _act.__name__
                and not cname.startswith("_") and c is not nn.MultiheadAttention):
            table[_snake(cname)] = c
    return dict(sorted(table.items()))


ACTIVATIONS: dict[str, type] = _activation_table()
_ACT_ALIASES = {"leakyrelu": "leaky_relu", "logsoftmax": "log_softmax", "log_sigmoid": "logsigmoid"}
SATURATING = {"sigmoid", "tanh", "hardsigmoid", "hardtanh", "softsign", "logsigmoid"}
_DIM_DEFAULT_1 = {"softmax", "log_softmax", "softmin"}

# type -> torch class, for everything that is not an activation
_STRUCTURAL: dict[str, Any] = {
    "linear": nn.Linear,
    "conv1d": nn.Conv1d,
    "conv2d": nn.Conv2d,
    "maxpool1d": nn.MaxPool1d,
    "maxpool2d": nn.MaxPool2d,
    "avgpool1d": nn.AvgPool1d,
    "avgpool2d": nn.AvgPool2d,
    "adaptive_avgpool1d": nn.AdaptiveAvgPool1d,
    "adaptive_avgpool2d": nn.AdaptiveAvgPool2d,
    "adaptive_maxpool1d": nn.AdaptiveMaxPool1d,
    "adaptive_maxpool2d": nn.AdaptiveMaxPool2d,
    "flatten": nn.Flatten,
    "unflatten": nn.Unflatten,
    "dropout": nn.Dropout,
    "dropout1d": nn.Dropout1d,
    "dropout2d": nn.Dropout2d,
    "alpha_dropout": nn.AlphaDropout,
    "batchnorm1d": nn.BatchNorm1d,
    "batchnorm2d": nn.BatchNorm2d,
    "layernorm": nn.LayerNorm,
    "lstm": nn.LSTM,
    "gru": nn.GRU,
    "identity": nn.Identity,
    "residual": Residual,
    "embedding": TokenEmbedding,
    "positional_embedding": PositionalEmbedding,
    "transformer_encoder": TransformerEncoderBlock,
    "sequence_pool": SequencePool,
}
TOKEN_LAYERS = {"embedding", "positional_embedding", "transformer_encoder", "sequence_pool"}
LAYER_TYPES: list[str] = sorted(set(_STRUCTURAL) | set(ACTIVATIONS))

# class -> canonical type name (for layer_table); first name wins
_CLASS_NAME: dict[type, str] = {}
for _n, _c in list(_STRUCTURAL.items()) + list(ACTIVATIONS.items()):
    _CLASS_NAME.setdefault(_c, _n)

# user-settable keyword arguments where torch's signature is *args/**kwargs or includes inferred ones
_RNN_KEYS = {"num_layers", "bias", "dropout", "bidirectional", "proj_size", "device", "dtype"}
# the keys a layer infers from its input; giving them is allowed only if they match
_INFERRED = {"linear": "in_features", "conv1d": "in_channels", "conv2d": "in_channels",
             "batchnorm1d": "num_features", "batchnorm2d": "num_features", "lstm": "input_size",
             "gru": "input_size"}
# `out` is the native argument ...
_OUT_KEY = {"linear": "out_features", "conv1d": "out_channels", "conv2d": "out_channels",
            "lstm": "hidden_size", "gru": "hidden_size"}

# expected input rank (with the batch axis) and its description
_RANK = {
    "linear": ({2}, "a 2-D input (N, features)"),
    "conv1d": ({3}, "a 3-D input (N, channels, length)"),
    "maxpool1d": ({3}, "a 3-D input (N, channels, length)"),
    "avgpool1d": ({3}, "a 3-D input (N, channels, length)"),
    "adaptive_avgpool1d": ({3}, "a 3-D input (N, channels, length)"),
    "adaptive_maxpool1d": ({3}, "a 3-D input (N, channels, length)"),
    "dropout1d": ({3}, "a 3-D input (N, channels, length)"),
    "conv2d": ({4}, "a 4-D input (N, channels, height, width)"),
    "maxpool2d": ({4}, "a 4-D input (N, channels, height, width)"),
    "avgpool2d": ({4}, "a 4-D input (N, channels, height, width)"),
    "adaptive_avgpool2d": ({4}, "a 4-D input (N, channels, height, width)"),
    "adaptive_maxpool2d": ({4}, "a 4-D input (N, channels, height, width)"),
    "dropout2d": ({4}, "a 4-D input (N, channels, height, width)"),
    "batchnorm2d": ({4}, "a 4-D input (N, channels, height, width)"),
    "batchnorm1d": ({2, 3}, "a 2-D (N, features) or 3-D (N, channels, length) input"),
    "lstm": ({3}, "a 3-D sequence input (N, time, features)"),
    "gru": ({3}, "a 3-D sequence input (N, time, features)"),
    "layernorm": ({2, 3, 4, 5}, "an input with at least 2 dimensions"),
    "embedding": ({2}, "token ids (N, T)"),
    "positional_embedding": ({3}, "a 3-D sequence input (N, T, dim)"),
    "transformer_encoder": ({3}, "a 3-D sequence input (N, T, d_model)"),
    "sequence_pool": ({3}, "a 3-D sequence input (N, T, dim)"),
}


def _fmt(shape: Iterable[int]) -> str:
    """(2, 1, 8, 8) with the batch axis first -> '(N, 1, 8, 8)'."""
    dims = list(shape)
    return "(" + ", ".join(["N"] + [str(d) for d in dims[1:]]) + ")"


def _rank_hint(typ: str, ndim: int, shape: tuple[int, ...]) -> str:
    if typ == "linear":
        if ndim == 3:
            return ("add {type: flatten} before it (or, for sequences, an lstm/gru layer before it; "
                    "a per-time-step linear is allowed only when an lstm/gru follows)")
        return "add {type: flatten} before it"
    if typ.endswith("2d"):
        if ndim == 3 and typ != "batchnorm2d":
            return f"use the 1d version ({typ[:-2]}1d) for (N, channels, length) input"
        if typ == "batchnorm2d":
            return "use batchnorm1d for (N, features) or (N, channels, length) input"
        return ("it needs image data (N, C, H, W), e.g. an npz X of that shape; put it before any "
                "flatten, or use linear layers for tabular data")
    if typ.endswith("1d"):
        if typ == "batchnorm1d":
            return "use batchnorm2d for (N, C, H, W) input"
        if ndim == 4:
            return f"use the 2d version ({typ[:-2]}2d) for (N, C, H, W) input"
        if ndim == 2:
            return (f"for (N, {shape[-1]}) features add {{type: unflatten, dim: 1, unflattened_size: "
                    f"[1, {shape[-1]}]}} before it, or use linear layers")
        return "give it (N, channels, length) input"
    if typ in ("lstm", "gru"):
        if ndim == 2:
            return "sequence data must be (N, T, F), e.g. an npz X of that shape; use linear layers for tabular data"
        return "give it (N, time, features) input"
    if typ == "embedding":
        return ("an embedding takes token ids, one integer sequence per sample: an npz X of shape (N, T) "
                "of integers; put it first")
    if typ in TOKEN_LAYERS:
        return "put an embedding (token ids -> (N, T, dim)) before it"
    return "check the layers before it"


def _layer_err(path: str, typ: str, msg: str, top_index: int, in_shape: tuple[int, ...],
               **extra: Any) -> ModelBuildError:
    evidence = {"layer": top_index, "path": path, "type": typ, "input_shape": list(in_shape[1:])}
    evidence.update(extra)
    return ModelBuildError(f"model.{path} ({typ}): {msg}", layer=f"{path} ({typ})", evidence=evidence)


def _torch_msg(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    msg = text[0] if text else type(err).__name__
    if len(msg) > _MAX_TORCH_MSG:
        msg = msg[:_MAX_TORCH_MSG - 3] + "..."
    return f"{type(err).__name__}: {msg}"


def _allowed_keys(typ: str, cls: type) -> tuple[set[str], set[str]]:
    """(accepted keyword names, required names without defaults) for a torch class."""
    if typ in ("lstm", "gru"):
        return _RNN_KEYS | {"input_size", "hidden_size"}, {"hidden_size"}
    if typ == "identity":
        return set(), set()
    sig = inspect.signature(cls.__init__)
    params = [p for p in list(sig.parameters.values())[1:]
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return {p.name for p in params}, {p.name for p in params if p.default is p.empty}


def _example(typ: str, key: str) -> str:
    return {"kernel_size": "3" if typ.startswith("conv") else "2", "threshold": "0.1",
            "value": "0.0", "unflattened_size": "[1, 8]"}.get(key, "...")


def _construct(typ: str, layer, in_shape: tuple[int, ...], path: str, top: int) -> nn.Module:
    """The torch module for one (non-residual) layer, given its input's shape (batch axis included)."""
    cls = _STRUCTURAL.get(typ) or ACTIVATIONS[typ]
    kw = dict(layer.kwargs)
    err = lambda msg, **ex: _layer_err(path, typ, msg, top, in_shape, **ex)  # noqa: E731

    if layer.layers is not None:
        raise err("'layers' belongs to {type: residual} only")
    # out -> the native output-size argument
    out_key = _OUT_KEY.get(typ)
    if layer.out is not None:
        if out_key is None:
            raise err(f"'out' is not used by {typ} (only linear, conv1d, conv2d, lstm and gru take an output size)")
        if out_key in kw:
            raise err(f"give 'out' or '{out_key}', not both")
        kw[out_key] = layer.out
    if out_key and out_key not in kw:
        what = {"out_features": "the number of output features", "out_channels": "the number of output channels",
                "hidden_size": "the hidden size"}[out_key]
        raise err(f"needs 'out' ({what}), e.g. {{type: {typ}, out: 16}}")

    # the inferred input size
    inferred_key = _INFERRED.get(typ)
    if inferred_key:
        value = in_shape[-1] if typ in ("linear", "lstm", "gru") else in_shape[1]
        if inferred_key in kw and kw[inferred_key] != value:
            raise err(f"{inferred_key} is {kw[inferred_key]} but its input {_fmt(in_shape)} has {value}; "
                      f"remove {inferred_key} (it is inferred from the data)",
                      given=kw[inferred_key], inferred=value)
        kw[inferred_key] = value
    if typ == "layernorm" and "normalized_shape" not in kw:
        kw["normalized_shape"] = in_shape[-1]
    if typ.startswith("adaptive_") and "output_size" not in kw:
        kw["output_size"] = 1
    if typ in _DIM_DEFAULT_1 and "dim" not in kw:
        kw["dim"] = 1
    if typ in ("lstm", "gru") and "batch_first" in kw:
        if kw.pop("batch_first") is not True:
            raise err("batch_first is always true here (inputs are (N, time, features)); remove it")

    allowed, required = _allowed_keys(typ, cls)
    for key in kw:
        if key not in allowed:
            settable = sorted(allowed - {inferred_key, "device", "dtype"} - ({out_key} if out_key else set()))
            close = difflib.get_close_matches(key, settable, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            takes = ", ".join(settable) if settable else "no arguments"
            raise err(f"unknown argument '{key}'; {hint}{typ} takes: {takes}"
                      f"{' (and out, the output size)' if out_key else ''}", bad_key=key)
    for key in sorted(required):
        if key not in kw:
            raise err(f"needs '{key}', e.g. {{type: {typ}, {key}: {_example(typ, key)}}}", missing_key=key)

    try:
        with torch.device("meta"):     # the size first: nothing is allocated on the meta device
            n_params = sum(p.numel() for p in (RecurrentLast(typ, **kw) if typ in ("lstm", "gru")
                                                else cls(**kw)).parameters())
    except Exception:                  # bad values: the real construction below says what is wrong
        n_params = 0
    if n_params > MAX_LAYER_PARAMETERS:
        raise err(f"would hold {n_params:,} parameters ({n_params * 4 / 2**30:.1f} GiB as float32), more than "
                  f"{MAX_LAYER_PARAMETERS:,} (the per-layer parameter limit)", n_params=n_params)
    try:
        if typ in ("lstm", "gru"):
            return RecurrentLast(typ, **kw)
        return cls(**kw)
    except Exception as e:  # torch validates values (p out of [0, 1], negative sizes, ...)
        args = ", ".join(f"{k}={v!r}" for k, v in layer.kwargs.items())
        raise err(f"cannot be built{' with ' + args if args else ''}: {_torch_msg(e)}") from None


_TOKEN_KEYS = {
    "embedding": ({"vocab", "num_embeddings", "dim", "embedding_dim", "padding_idx", "max_norm"}, ),
    "positional_embedding": ({"max_len"}, ),
    "transformer_encoder": ({"d_model", "heads", "nhead", "ff", "dim_feedforward", "dropout", "norm_first",
                             "num_layers", "activation"}, ),
    "sequence_pool": ({"mode"}, ),
}
DEFAULT_FF_FACTOR = 4        # transformer_encoder's feed-forward width defaults to 4 x d_model (Vaswani et al.)
DEFAULT_TRANSFORMER_DROPOUT = 0.1   # torch.nn.TransformerEncoderLayer's own default


def _construct_token_layer(typ: str, layer, in_shape: tuple[int, ...], path: str, top: int) -> nn.Module:
    """embedding, positional_embedding, transformer_encoder, sequence_pool (sizes inferred from the input)."""
    kw = dict(layer.kwargs)
    err = lambda msg, **ex: _layer_err(path, typ, msg, top, in_shape, **ex)  # noqa: E731
    allowed = _TOKEN_KEYS[typ][0]
    for key in kw:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise err(f"unknown argument '{key}'; {hint}{typ} takes: {', '.join(sorted(allowed))}", bad_key=key)
    if layer.layers is not None:
        raise err("'layers' belongs to {type: residual} only")
    if typ == "embedding":
        vocab = kw.get("vocab", kw.get("num_embeddings"))
        dim = layer.out or kw.get("dim") or kw.get("embedding_dim")
        if not isinstance(vocab, int) or vocab <= 0:
            raise err("needs 'vocab' (the number of token ids, a positive integer), e.g. {type: embedding, vocab: 64, dim: 32}")
        if not isinstance(dim, int) or dim <= 0:
            raise err("needs 'dim' (or 'out', the embedding size), e.g. {type: embedding, vocab: 64, dim: 32}")
        pad = kw.get("padding_idx")
        if pad is not None and not (isinstance(pad, int) and 0 <= pad < vocab):
            raise err(f"padding_idx must be an id in 0..{vocab - 1}, got {pad!r}")
        return TokenEmbedding(vocab, dim, padding_idx=pad, max_norm=kw.get("max_norm"))
    if layer.out is not None:
        raise err(f"'out' is not used by {typ} (its size is the input's last dimension)")
    if typ == "positional_embedding":
        max_len = kw.get("max_len", in_shape[1])
        if not isinstance(max_len, int) or max_len < in_shape[1]:
            raise err(f"max_len must be an integer >= the sequence length {in_shape[1]}, got {max_len!r}")
        return PositionalEmbedding(max_len, in_shape[-1])
    if typ == "transformer_encoder":
        d = in_shape[-1]
        if "d_model" in kw and kw["d_model"] != d:
            raise err(f"d_model is {kw['d_model']} but its input {_fmt(in_shape)} has {d}; remove d_model "
                      f"(it is inferred from the input)", given=kw["d_model"], inferred=d)
        heads = kw.get("heads", kw.get("nhead", 1))
        if not isinstance(heads, int) or heads <= 0 or d % heads:
            raise err(f"heads must be a positive integer dividing d_model {d}, got {heads!r}")
        ff = kw.get("ff", kw.get("dim_feedforward", DEFAULT_FF_FACTOR * d))
        layers_n = kw.get("num_layers", 1)
        if not isinstance(ff, int) or ff <= 0 or not isinstance(layers_n, int) or layers_n <= 0:
            raise err(f"ff and num_layers must be positive integers, got ff={ff!r}, num_layers={layers_n!r}")
        drop = kw.get("dropout", DEFAULT_TRANSFORMER_DROPOUT)
        if not isinstance(drop, (int, float)) or not 0 <= drop < 1:
            raise err(f"dropout must be in [0, 1), got {drop!r}")
        act = kw.get("activation", "relu")
        if act not in ("relu", "gelu"):
            raise err(f"activation must be relu or gelu, got {act!r}")
        return TransformerEncoderBlock(d, heads, ff, float(drop), bool(kw.get("norm_first", False)), layers_n, act)
    mode = kw.get("mode", "mean")
    if mode not in ("mean", "first", "last"):
        raise err(f"mode must be mean, first or last, got {mode!r}")
    return SequencePool(mode)


def _build_stack(layers: list, dummy: torch.Tensor, prefix: str,
                 top: Optional[int], container: nn.Sequential) -> torch.Tensor:
    """Append one module per layer spec to `container`, pushing `dummy` through each; return the output."""
    for i, layer in enumerate(layers):
        path = f"{prefix}layers[{i}]"
        t = top if top is not None else i
        typ = layer.type
        in_shape = tuple(dummy.shape)
        if typ in _ACT_ALIASES:
            typ = _ACT_ALIASES[typ]
        if typ not in _STRUCTURAL and typ not in ACTIVATIONS:
            close = difflib.get_close_matches(typ, LAYER_TYPES, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else \
                "supported: linear, conv1d, conv2d, pools, flatten, dropout, batchnorm, layernorm, lstm, gru, " \
                "residual, identity and every torch.nn activation (relu, tanh, ...)"
            raise _layer_err(path, typ, f"unknown layer type '{typ}'; {hint}", t, in_shape,
                             suggestions=close)

        if typ == "residual":
            if not layer.layers:
                raise _layer_err(path, typ, "needs 'layers': the list of layers whose output is added to "
                                            "the input", t, in_shape)
            if layer.out is not None or layer.kwargs:
                extra = ["out"] if layer.out is not None else []
                raise _layer_err(path, typ, f"takes only 'layers' (got {', '.join(extra + list(layer.kwargs))})",
                                 t, in_shape)
            block = Residual()
            inner_out = _build_stack(layer.layers, dummy, f"{path}.", t, block)
            if tuple(inner_out.shape) != in_shape:
                raise _layer_err(path, typ, f"its layers change the shape from {_fmt(in_shape)} to "
                                            f"{_fmt(inner_out.shape)}, so the input cannot be added to their "
                                            f"output; a residual block must keep the shape"
                                            + (f" (e.g. set its last linear's out to {in_shape[-1]})"
                                               if len(in_shape) == 2 else ""),
                                 t, in_shape, output_shape=list(inner_out.shape[1:]))
            container.append(block)
            dummy = dummy + inner_out
            continue

        rank = _RANK.get(typ)
        if rank and len(in_shape) not in rank[0]:
            later = [l.type for l in layers[i + 1:]]
            seq_ok = typ == "linear" and len(in_shape) == 3 and any(
                x in ("lstm", "gru", "transformer_encoder", "sequence_pool") for x in later)
            if not seq_ok:
                raise _layer_err(path, typ, f"expects {rank[1]} but gets {_fmt(in_shape)}; "
                                            f"{_rank_hint(typ, len(in_shape), in_shape)}", t, in_shape)

        module = _construct_token_layer(typ, layer, in_shape, path, t) if typ in TOKEN_LAYERS else \
            _construct(typ, layer, in_shape, path, t)
        if typ == "embedding" and (i > 0 or prefix):
            raise _layer_err(path, typ, "an embedding must be the first layer (it takes the token ids)", t, in_shape)
        module.eval()
        try:
            with torch.no_grad():
                out = module(dummy)
        except Exception as e:
            raise _layer_err(path, typ, f"fails on an input of shape {_fmt(in_shape)}: {_torch_msg(e)}",
                             t, in_shape, torch_error=_torch_msg(e)) from None
        if not isinstance(out, torch.Tensor):
            raise _layer_err(path, typ, f"returns {type(out).__name__}, not a tensor", t, in_shape)
        if out.numel() == 0:
            raise _layer_err(path, typ, f"turns {_fmt(in_shape)} into an empty output {_fmt(out.shape)}; "
                                        f"the input is too small for it (fewer/smaller pools or kernels, "
                                        f"or padding)", t, in_shape, output_shape=list(out.shape[1:]))
        container.append(module)
        dummy = out
    return dummy


def _check_input_shape(input_shape: Iterable[int]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d <= 0 for d in shape):
        raise ModelBuildError(f"model: the data give a per-sample shape {shape}, which no model can take "
                              f"(expected (features,), (C, H, W) or (T, F))", layer=None,
                              evidence={"input_shape": list(shape)})
    return shape


def build_model(model_spec, input_shape: tuple[int, ...], base_dir: str | None = None) -> nn.Module:
    """The model of a ModelSpec for per-sample input_shape, in train mode; shape errors -> ModelBuildError."""
    shape = _check_input_shape(input_shape)
    if model_spec.class_:
        return _build_user_model(model_spec.class_, dict(model_spec.kwargs), shape, base_dir)
    layers = list(model_spec.layers or [])
    model = MaskedSequential() if layers and layers[0].type == "embedding" else nn.Sequential()
    dummy = torch.zeros((DUMMY_BATCH,) + shape)
    _build_stack(layers, dummy, "", None, model)
    model.train()
    return model


# ---- user classes ----------------------------------------------------------------------------

def _under(path: str | None, base_dir: str) -> bool:
    if not path:
        return False
    try:
        return os.path.commonpath([os.path.realpath(path), os.path.realpath(base_dir)]) == os.path.realpath(base_dir)
    except ValueError:
        return False


_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def user_frame(err: BaseException, base_dir: str | None = None) -> str | None:
    """'file.py:LINE' of the innermost traceback frame in the user's code: below base_dir when given,
    else the innermost frame outside nn_doctor, importlib, torch and the standard library; a SyntaxError's
    own file and line. None when there is no such frame."""
    import traceback
    if isinstance(err, SyntaxError) and err.filename:
        return f"{_display(err.filename, base_dir)}:{err.lineno}"
    frames = traceback.extract_tb(err.__traceback__)
    if base_dir:
        mine = [f for f in frames if _under(f.filename, base_dir)]
    else:
        mine = []
    if not mine:
        skip = (_PKG_DIR, os.path.dirname(os.__file__), os.path.dirname(torch.__file__))
        mine = [f for f in frames if not f.filename.startswith("<")
                and not any(os.path.abspath(f.filename).startswith(d + os.sep) for d in skip)]
    if not mine:
        return None
    f = mine[-1]
    return f"{_display(f.filename, base_dir)}:{f.lineno}"


def _display(filename: str, base_dir: str | None) -> str:
    if base_dir and _under(filename, base_dir):
        return os.path.relpath(os.path.realpath(filename), os.path.realpath(base_dir))
    return os.path.basename(filename)


def user_error(err: BaseException, base_dir: str | None) -> str:
    """'SystemExit: 3 (at net.py:12)': the error in one line, and where in the user's code it was raised."""
    if isinstance(err, RecursionError):
        msg = "RecursionError: maximum recursion depth exceeded (infinite recursion?)"
    elif isinstance(err, SyntaxError):
        msg = f"SyntaxError: {err.msg}"
    elif isinstance(err, SystemExit):
        msg = f"it calls sys.exit({err.code!r})" if err.code is not None else "it calls sys.exit()"
    else:
        msg = _torch_msg(err)
    where = user_frame(err, base_dir)
    return f"{msg} (at {where})" if where else msg


def import_object(ref: str, base_dir: str | None, what: str = "model.class") -> Any:
    """'package.module:Name' -> the object, importing with base_dir first on sys.path; UsageError on failure."""
    if ":" not in ref:
        raise UsageError(f"{what} {ref!r}: expected package.module:Name")
    modname, _, attr = ref.partition(":")
    modname, attr = modname.strip(), attr.strip()
    label = f"{what} '{ref}'"
    if not modname or not attr:
        raise UsageError(f"{label}: expected package.module:Name")
    inserted = False
    if base_dir:
        base_dir = os.path.abspath(base_dir)
        sys.path.insert(0, base_dir)
        inserted = True
        cached = sys.modules.get(modname)
        if cached is not None and not _under(getattr(cached, "__file__", None), base_dir) \
                and os.path.exists(os.path.join(base_dir, *modname.split("."))
                                   + ".py"):
            del sys.modules[modname]     # a same-named module from elsewhere: load the spec's own
    try:
        importlib.invalidate_caches()
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name and modname.startswith(e.name) and (e.name == modname or modname[len(e.name)] == "."):
                where = f" (looked in {base_dir} first, then the installed packages)" if base_dir else ""
                raise UsageError(f"{label}: cannot import {modname}: {e}{where}") from None
            # the module exists but itself imports something missing: say where
            raise UsageError(f"{label}: importing {modname} failed: {user_error(e, base_dir)}") from None
        except KeyboardInterrupt:
            raise
        except BaseException as e:   # SystemExit, RecursionError, any error at the module's top level
            raise UsageError(f"{label}: importing {modname} failed: {user_error(e, base_dir)}") from None
    finally:
        if inserted:
            try:
                sys.path.remove(base_dir)
            except ValueError:
                pass
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"{label}: {modname} has no attribute {part}{hint}")
        obj = getattr(obj, part)
    return obj


def _build_user_model(ref: str, kwargs: dict, shape: tuple[int, ...], base_dir: str | None) -> nn.Module:
    cls = import_object(ref, base_dir)
    label = f"model.class '{ref}'"
    if not callable(cls):
        raise UsageError(f"{label}: {type(cls).__name__} object is not a class")
    name = getattr(cls, "__name__", ref.partition(":")[2])
    try:
        model = cls(**kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as e:   # SystemExit and RecursionError too: the user's constructor, not the doctor
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        if len(args) > _MAX_TORCH_MSG:
            args = args[:_MAX_TORCH_MSG - 3] + "..."
        raise UsageError(f"{label}: {name}({args}) failed: {user_error(e, base_dir)}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"{label}: {name}(...) returned {type(model).__name__}, not a torch.nn.Module")

    # a dummy forward, recording the order in which leaf modules run (layer_table uses it)
    order: list[str] = []
    hooks = []
    for mname, m in model.named_modules():
        if _is_unit(m):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, _n=mname: order.append(_n) if _n not in order else None))
    dummy = torch.zeros((DUMMY_BATCH,) + shape)
    model.eval()
    try:
        with torch.no_grad():
            out = model(dummy)
    except KeyboardInterrupt:
        raise
    except BaseException as e:   # SystemExit and RecursionError too: a forward that ends the process is a bug
        raise ModelBuildError(f"{label}: a forward pass on an input of shape {_fmt(dummy.shape)} fails: "
                              f"{user_error(e, base_dir)}", layer="model.class",
                              evidence={"class": ref, "input_shape": list(shape),
                                        "torch_error": _torch_msg(e), "where": user_frame(e, base_dir)}) from None
    finally:
        for h in hooks:
            h.remove()
        model.train()
    if not isinstance(out, torch.Tensor):
        raise ModelBuildError(f"{label}: forward returns {type(out).__name__}; it must return one tensor "
                              f"(the model's output)", layer="model.class",
                              evidence={"class": ref, "input_shape": list(shape)})
    model.__dict__["_nn_doctor_order"] = order
    return model


# ---- layer table -----------------------------------------------------------------------------

_NORM = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
         nn.LocalResponseNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_POOL = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
         nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd)


def _is_unit(m: nn.Module) -> bool:
    """A module layer_table reports: a RecurrentLast wrapper, or a leaf (no children)."""
    return isinstance(m, (RecurrentLast, nn.MultiheadAttention)) or next(m.children(), None) is None


def layer_kind(m: nn.Module) -> str:
    """linear | conv | recurrent | attention | norm | activation | dropout | pool | other."""
    if isinstance(m, (nn.Linear, nn.Bilinear)):
        return "linear"
    if isinstance(m, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(m, (RecurrentLast, nn.RNNBase)):
        return "recurrent"
    if isinstance(m, nn.MultiheadAttention):
        return "attention"
    if isinstance(m, _NORM):
        return "norm"
    if type(m).__module__ == _act.__name__ and not isinstance(m, nn.MultiheadAttention):
        return "activation"
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return "dropout"
    if isinstance(m, _POOL):
        return "pool"
    return "other"


def layer_type_name(m: nn.Module) -> str:
    if isinstance(m, RecurrentLast):
        return m.kind
    if isinstance(m, nn.MultiheadAttention):
        return "attention"
    if isinstance(m, nn.RNNBase):
        return type(m).__name__.lower()
    return _CLASS_NAME.get(type(m)) or _snake(type(m).__name__)


def layer_table(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, kind) for every leaf in forward order; names like "0:linear", "3.1:linear", "fc1:linear".

    Leaves are modules without children, plus the lstm/gru wrapper (its hook sees the (N, hidden) output).
    Forward order: registration order for `layers:` models (an nn.Sequential), the order recorded by
    build_model's dummy forward for user classes (leaves that did not run come last).
    """
    units: list[tuple[str, nn.Module]] = []

    def walk(m: nn.Module, prefix: str) -> None:
        for cname, child in m.named_children():
            full = f"{prefix}{cname}"
            if _is_unit(child):
                units.append((full, child))
            else:
                walk(child, full + ".")

    if _is_unit(model) and not isinstance(model, nn.Sequential):
        units.append(("model", model))
    else:
        walk(model, "")
    order = model.__dict__.get("_nn_doctor_order")
    if order:
        rank = {n: i for i, n in enumerate(order)}
        units.sort(key=lambda u: rank.get(u[0], len(rank)))  # stable: unrun leaves keep registration order
    return [(f"{n}:{layer_type_name(m)}", m, layer_kind(m)) for n, m in units]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once); all of them unless trainable_only."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---- static summary of a spec ----------------------------------------------------------------

_PASSIVE = {"dropout", "dropout1d", "dropout2d", "alpha_dropout", "identity", "flatten", "unflatten"}


def model_summary(model_spec) -> Optional[dict[str, Any]]:
    """Facts read from a `layers:` spec (no torch objects built), for the static checks M202/M206.

    n_layers: layer entries, counting those inside residual blocks (not the block itself);
    n_weight_layers: linear/conv/lstm/gru entries; activations: activation types in order (inner ones
    included); last_activation: the output's activation -- the last top-level layer, skipping trailing
    dropout/identity/flatten, when it is an activation, else None; n_saturating: sigmoid-like/tanh-like
    activations (SATURATING) among the hidden layers (the output activation is not counted).
    None for a user class.
    """
    if model_spec.class_ or not model_spec.layers:
        return None
    flat: list[str] = []
    has_residual = False

    def walk(layers: list) -> None:
        nonlocal has_residual
        for l in layers:
            t = _ACT_ALIASES.get(l.type, l.type)
            if t == "residual":
                has_residual = True
                walk(l.layers or [])
            else:
                flat.append(t)

    walk(model_spec.layers)
    last = None
    for l in reversed(model_spec.layers):
        t = _ACT_ALIASES.get(l.type, l.type)
        if t in _PASSIVE:
            continue
        last = t if t in ACTIVATIONS else None
        break
    activations = [t for t in flat if t in ACTIVATIONS]
    hidden = list(activations)
    if last is not None and hidden:
        hidden.pop()
    return {
        "n_layers": len(flat),
        "n_weight_layers": sum(t in ("linear", "conv1d", "conv2d", "lstm", "gru", "embedding", "transformer_encoder")
                               for t in flat),
        "activations": activations,
        "last_activation": last,
        # a transformer_encoder layer has its own LayerNorms and residual connections
        "has_norm": any(t in ("batchnorm1d", "batchnorm2d", "layernorm", "transformer_encoder") for t in flat),
        "has_residual": has_residual or "transformer_encoder" in flat,
        "has_transformer": "transformer_encoder" in flat,
        "n_saturating": sum(t in SATURATING for t in hidden),
    }


# ---- initialisation --------------------------------------------------------------------------

def _fan_in(w: torch.Tensor) -> int:
    return w.shape[1] * math.prod(w.shape[2:]) if w.dim() >= 2 else w.shape[0]


def _init_weight(w: torch.Tensor, scheme: str, value: Optional[float], nonlin: str, slope: float) -> None:
    """Fill w in place (on CPU first, so that a seed gives the same numbers on every device)."""
    tmp = torch.empty(w.shape, dtype=torch.float32)
    if scheme == "he":
        nn.init.kaiming_normal_(tmp, a=slope, mode="fan_in", nonlinearity=nonlin)
    elif scheme == "xavier":
        nn.init.xavier_uniform_(tmp, gain=1.0)
    elif scheme == "lecun":
        nn.init.normal_(tmp, 0.0, 1.0 / math.sqrt(max(1, _fan_in(tmp))))
    elif scheme == "orthogonal":
        nn.init.orthogonal_(tmp, gain=1.0)
    elif scheme == "zeros":
        nn.init.zeros_(tmp)
    elif scheme == "normal":
        nn.init.normal_(tmp, 0.0, float(value))
    elif scheme == "uniform":
        nn.init.uniform_(tmp, -float(value), float(value))
    elif scheme == "constant":
        nn.init.constant_(tmp, float(value))
    else:
        raise UsageError(f"model.init: unknown scheme {scheme!r}")
    with torch.no_grad():
        w.copy_(tmp.to(dtype=w.dtype))


def apply_init(model: nn.Module, init_spec, generator_seed: int | None = None) -> nn.Module:
    """Re-initialise weights per model.init; returns the model.

    default: torch's own init, untouched. he: kaiming_normal_ (fan_in, relu gain sqrt 2; leaky_relu with
    its slope when the net uses LeakyReLU and no ReLU). xavier: xavier_uniform_ with gain 1 (the
    standard Glorot). lecun: N(0, 1/fan_in). orthogonal: orthogonal_ gain 1. zeros: weights and biases 0.
    normal(std): N(0, std). uniform(a): U(-a, a). constant(v): all weights v.
    Applied to Linear and Conv* weights, to every LSTM/GRU weight matrix (weight_ih/hh, whole matrix,
    all gates together) and to attention's packed q/k/v projection; their biases are set to 0. Norm layers
    get weight 1, bias 0. Token and position embeddings keep their own init (N(0, 1), N(0, 0.02)).
    generator_seed: when given, the draws come from that seed (the global RNG is left as it was).
    """
    scheme = getattr(init_spec, "scheme", init_spec) or "default"
    value = getattr(init_spec, "value", None)
    if scheme == "default":
        return model
    nonlin, slope = "relu", 0.0
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    if leaky and not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules()):
        nonlin, slope = "leaky_relu", float(leaky[0].negative_slope)

    def run() -> None:
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)):
                _init_weight(m.weight, scheme, value, nonlin, slope)
                if m.bias is not None:
                    with torch.no_grad():
                        m.bias.zero_()
            elif isinstance(m, (nn.MultiheadAttention, nn.RNNBase)):
                # attention: the packed query/key/value projection (its out_proj is an nn.Linear, handled above);
                # recurrent layers: weight_ih_l0, weight_hh_l0, bias_ih_l0, ...
                attention = isinstance(m, nn.MultiheadAttention)
                for pname, p in m.named_parameters(recurse=False):
                    if pname.endswith("proj_weight") if attention else pname.startswith("weight"):
                        _init_weight(p, scheme, value, nonlin, slope)
                    elif pname.endswith("proj_bias") if attention else pname.startswith("bias"):
                        with torch.no_grad():
                            p.zero_()
            elif isinstance(m, _NORM):
                with torch.no_grad():
                    if getattr(m, "weight", None) is not None:
                        m.weight.fill_(1.0)
                    if getattr(m, "bias", None) is not None:
                        m.bias.zero_()

    if generator_seed is None:
        run()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(generator_seed))
            run()
    return model


# ---- loss ------------------------------------------------------------------------------------

def _class_ids(y: torch.Tensor, what: str) -> torch.Tensor:
    y = y.detach()
    if y.dim() == 2 and y.shape[1] > 1:
        return y.argmax(dim=1)
    y = y.reshape(-1)
    if y.is_floating_point():
        if not torch.all(y == y.round()):
            raise UsageError(f"loss.class_weights: balanced needs integer class labels for {what}, "
                             f"but the target has non-integer values")
    return y.long()


def _balanced(y: torch.Tensor, n_classes: int, what: str) -> torch.Tensor:
    ids = _class_ids(y, what)
    if ids.numel() and (ids.min() < 0 or ids.max() >= n_classes):
        raise UsageError(f"loss.class_weights: balanced: labels must be 0..{n_classes - 1}, "
                         f"got {int(ids.min())}..{int(ids.max())}")
    counts = torch.bincount(ids.cpu(), minlength=n_classes).double()
    # a class absent from y_train gets the weight of a class seen once (finite; documented)
    w = ids.numel() / (n_classes * counts.clamp_min(1.0))
    return w.float()


def build_loss(loss_spec, task: str | None, y_train: torch.Tensor, n_classes: int | None) -> nn.Module:
    """The loss module for LossSpec (a LossSpec or a bare name).

    class_weights: "balanced" -> n_samples / (n_classes * count_c), counted on y_train (cross_entropy,
    nll); for bce_with_logits, pos_weight = n_neg / n_pos (per column for multilabel). A list gives
    the weights directly (cross_entropy/nll: one per class; bce_with_logits binary: [w_neg, w_pos] ->
    pos_weight = w_pos / w_neg; multilabel: one pos_weight per label). Weights live on y_train's device.
    """
    name = getattr(loss_spec, "name", loss_spec)
    cw = getattr(loss_spec, "class_weights", None)
    smoothing = float(getattr(loss_spec, "label_smoothing", 0.0) or 0.0)
    dev = y_train.device if isinstance(y_train, torch.Tensor) else torch.device("cpu")
    if smoothing and name != "cross_entropy":
        raise UsageError(f"loss.label_smoothing applies to cross_entropy only, not {name}")

    if name in ("cross_entropy", "nll"):
        weight = None
        if cw is not None:
            if n_classes is None:
                ids = _class_ids(y_train, name)
                n_classes = int(ids.max()) + 1 if ids.numel() else 0
            if cw == "balanced":
                weight = _balanced(y_train, n_classes, name)
            else:
                if len(cw) != n_classes:
                    raise UsageError(f"loss.class_weights has {len(cw)} values but the data have "
                                     f"{n_classes} classes; give one weight per class or 'balanced'")
                weight = torch.tensor([float(v) for v in cw], dtype=torch.float32)
            weight = weight.to(dev)
        if name == "cross_entropy":
            return nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)
        return nn.NLLLoss(weight=weight)

    if name == "bce_with_logits":
        pos_weight = None
        if cw is not None:
            y = y_train.detach().float()
            multilabel = task == "multilabel" or (y.dim() == 2 and y.shape[1] > 1)
            if multilabel:
                y2 = y.reshape(y.shape[0], -1)
                k = y2.shape[1]
                if cw == "balanced":
                    n_pos = y2.sum(0)
                    pos_weight = (y2.shape[0] - n_pos) / n_pos.clamp_min(1.0)
                else:
                    if len(cw) != k:
                        raise UsageError(f"loss.class_weights has {len(cw)} values but the target has {k} "
                                         f"labels; give one positive-class weight per label or 'balanced'")
                    pos_weight = torch.tensor([float(v) for v in cw])
            else:
                if cw == "balanced":
                    n_pos = float((y.reshape(-1) > 0.5).sum())
                    n_neg = float(y.numel()) - n_pos
                    pos_weight = torch.tensor([n_neg / max(n_pos, 1.0)])
                else:
                    if len(cw) != 2:
                        raise UsageError(f"loss.class_weights has {len(cw)} values but a binary target has 2 "
                                         f"classes; give [weight_of_0, weight_of_1] or 'balanced'")
                    if float(cw[0]) <= 0:
                        raise UsageError("loss.class_weights: the weight of class 0 must be positive")
                    pos_weight = torch.tensor([float(cw[1]) / float(cw[0])])
            pos_weight = pos_weight.float().to(dev)
        return nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    if cw is not None:
        hint = ("use bce_with_logits (on logits, without the sigmoid layer) for weighted binary classes"
                if name == "bce" else "class weights apply to classification losses")
        raise UsageError(f"loss.class_weights is not supported with {name}; {hint}")
    if name == "bce":
        return nn.BCELoss()
    if name == "mse":
        return nn.MSELoss()
    if name == "l1":
        return nn.L1Loss()
    if name == "huber":
        return nn.HuberLoss()
    raise UsageError(f"loss: unknown loss {name!r}; expected cross_entropy, nll, bce, bce_with_logits, mse, l1 or huber")


# ---- optimizer -------------------------------------------------------------------------------

def build_optimizer(opt_spec, params, lr: float | None = None) -> torch.optim.Optimizer:
    """sgd (momentum), adam, adamw, rmsprop (momentum), each with weight_decay; lr overrides opt_spec.lr.

    weight_decay is passed explicitly, so adamw uses the spec's value (0.0 by default), not torch's 0.01.
    Gradient clipping (opt_spec.grad_clip) is the training loop's job.
    """
    params = list(params)
    if not params:
        raise UsageError("the model has no parameters to train (the optimizer got an empty parameter list)")
    lr = float(opt_spec.lr if lr is None else lr)
    wd = float(opt_spec.weight_decay)
    name = opt_spec.name
    if wd > 0 and not getattr(opt_spec, "decay_norm_bias", True) and all(torch.is_tensor(p) for p in params):
        # nanoGPT's rule: weight decay on the >= 2-D weights (matrices, embeddings) only; biases and norm
        # gains (1-D) are not decayed
        params = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": wd},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        params = [g for g in params if g["params"]]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(opt_spec.momentum), weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=float(opt_spec.momentum), weight_decay=wd)
    raise UsageError(f"optimizer.name: unknown optimizer {name!r}; expected sgd, adam, adamw or rmsprop")


def schedule_factor(schedule, step: int, total_steps: int) -> float:
    """The lr multiplier of `optimizer.schedule` at optimizer step `step` (0-based): a linear warmup from
    1/(warmup+1) to 1 over warmup_steps, then constant, or linear / cosine decay to min_factor at
    total_steps (schedule.total_steps when given)."""
    if schedule is None:
        return 1.0
    warm = int(schedule.warmup_steps)
    if step < warm:
        return (step + 1) / (warm + 1)
    if schedule.decay == "constant":
        return 1.0
    total = int(schedule.total_steps or total_steps)
    span = max(1, total - warm)
    t = min(1.0, (step - warm) / span)
    lo = float(schedule.min_factor)
    if schedule.decay == "linear":
        return lo + (1.0 - lo) * (1.0 - t)
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(opt_spec, optimizer: torch.optim.Optimizer, total_steps: int):
    """A torch LambdaLR for optimizer.schedule (None without one); stepped once per optimizer step."""
    schedule = getattr(opt_spec, "schedule", None)
    if schedule is None:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: schedule_factor(schedule, k, total_steps))
