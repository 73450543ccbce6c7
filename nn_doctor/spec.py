"""The YAML spec (../shared/spec/config.md) -> validated, typed objects.

YAML is read with `yaml.safe_load` only. Validation is pydantic's; its errors are turned into one
line naming the key path and what was expected (`model.layers[2].out: expected a positive integer,
got -3`), raised as UsageError (exit 2). No torch import here.
"""
from __future__ import annotations

import copy

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator,
                      model_validator)

from .errors import UsageError

Task = Literal["classification", "binary", "regression", "multilabel"]
Normalize = Literal["none", "standardize", "minmax"]
LossName = Literal["cross_entropy", "nll", "bce", "bce_with_logits", "mse", "l1", "huber"]
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop"]
InitName = Literal["default", "he", "xavier", "lecun", "orthogonal", "zeros"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSpec(_Strict):
    path: Optional[str] = None        # relative to the spec file; resolved by load_spec
    target: Optional[Union[str, list[str]]] = None
    features: Optional[list[str]] = None
    val_path: Optional[str] = None
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    normalize: Normalize = "none"
    normalize_target: bool = False
    max_rows: Optional[PositiveInt] = None
    x_key: str = "X"
    y_key: str = "y"
    # rows with NaN/Inf: keep them (your training sees them), drop them, or impute features with the
    # training median (rows without a target are dropped either way)
    missing: Literal["keep", "drop", "median"] = "keep"
    # explicit raw label -> class index (e.g. {1: 0, 2: 1, 3: 2}); without it labels are sorted and numbered
    label_map: Optional[dict[Union[str, int, float, bool], int]] = None
    # the user's own data: package.module:function (or :Dataset class / object), imported from the spec's folder;
    # it returns a torch.utils.data.Dataset, or arrays/tensors (X, y)
    dataset: Optional[str] = None
    image_size: Optional[Union[PositiveInt, list[PositiveInt]]] = None   # image folders: resize to S x S or [H, W]
    # token data (integer sequences (N, T) in an npz, or a Parquet column of integer lists):
    vocab_size: Optional[PositiveInt] = None   # ids must lie in 0..vocab_size-1; inferred (max id + 1) when absent
    pad_id: Optional[int] = Field(None, ge=0)  # the padding id (shorter Parquet sequences are padded with it)

    @model_validator(mode="after")
    def _source(self) -> "DataSpec":
        if self.dataset is not None and ":" not in self.dataset:
            raise ValueError(f"data.dataset must look like package.module:function, got {self.dataset!r}")
        if self.dataset is not None and self.path is not None:
            raise ValueError("give data.path (a file or an image folder) or data.dataset, not both")
        if isinstance(self.image_size, list) and len(self.image_size) != 2:
            raise ValueError(f"data.image_size: expected one size or [height, width], got {self.image_size}")
        return self


class LayerSpec(BaseModel):
    """One layer: `type` plus the keyword arguments of its torch.nn class (`out` for the output size)."""

    model_config = ConfigDict(extra="allow")
    type: str
    out: Optional[PositiveInt] = None
    layers: Optional[list["LayerSpec"]] = None   # only for `residual`

    @field_validator("type")
    @classmethod
    def _snake(cls, v: str) -> str:
        return v.strip().lower()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class InitSpec(_Strict):
    """`default | he | xavier | lecun | orthogonal | zeros | {normal: std} | {uniform: a} | {constant: v}`."""

    scheme: Literal["default", "he", "xavier", "lecun", "orthogonal", "zeros", "normal", "uniform", "constant"]
    value: Optional[float] = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"scheme": v}
        if isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("normal", "uniform", "constant"):
            (k, val), = v.items()
            return {"scheme": k, "value": val}
        return v

    @model_validator(mode="after")
    def _check(self) -> "InitSpec":
        if self.scheme in ("normal", "uniform") and (self.value is None or self.value <= 0):
            raise ValueError(f"{self.scheme} needs a positive scale, e.g. {{{self.scheme}: 0.05}}")
        if self.scheme == "constant" and self.value is None:
            raise ValueError("constant needs a value, e.g. {constant: 0.1}")
        return self

    def __str__(self) -> str:
        return self.scheme if self.value is None else f"{self.scheme}({self.value:g})"

    def to_yaml(self) -> Any:
        return self.scheme if self.value is None else {self.scheme: self.value}


class ModelSpec(_Strict):
    layers: Optional[list[LayerSpec]] = None
    init: InitSpec = InitSpec(scheme="default")
    class_: Optional[str] = Field(None, alias="class")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    @model_validator(mode="after")
    def _one_of(self) -> "ModelSpec":
        if not self.layers and not self.class_:
            raise ValueError("give either model.layers (a list of layers) or model.class (package.module:Class)")
        if self.layers and self.class_:
            raise ValueError("give model.layers or model.class, not both")
        if self.class_ and ":" not in self.class_:
            raise ValueError(f"model.class must look like package.module:Class, got {self.class_!r}")
        return self


class LossSpec(_Strict):
    name: LossName
    class_weights: Optional[Union[Literal["balanced"], list[float]]] = None
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class ScheduleSpec(_Strict):
    """`optimizer.schedule`: a linear warmup over `warmup_steps`, then constant, linear or cosine decay
    (to `min_factor` x lr) over `total_steps` (default: the configured training's optimizer steps)."""

    warmup_steps: int = Field(0, ge=0)
    decay: Literal["constant", "linear", "cosine"] = "constant"
    total_steps: Optional[PositiveInt] = None
    min_factor: float = Field(0.0, ge=0.0, le=1.0)


class OptimizerSpec(_Strict):
    name: OptimizerName = "adam"
    lr: float = Field(1e-3, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: Optional[float] = Field(None, gt=0.0)
    schedule: Optional[ScheduleSpec] = None
    # false: no weight decay on norm-layer weights and biases (nanoGPT's rule: decay only >= 2-D weights)
    decay_norm_bias: bool = True


class TrainingSpec(_Strict):
    batch_size: PositiveInt = 64
    epochs: PositiveInt = 10
    seed: int = 0
    device: str = "auto"
    step: Optional[str] = None        # package.module:function, a user's training step (runs user code)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"   # autocast dtype of the forward pass
    grad_scaler: Optional[bool] = None  # fp16 loss scaling (torch's GradScaler); None: on for fp16
    accumulate: PositiveInt = 1       # gradient-accumulation micro-batches per optimizer step

    @property
    def loss_scaling(self) -> bool:
        return self.precision == "fp16" and self.grad_scaler is not False

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        import re
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v


class Spec(_Strict):
    task: Optional[Task] = None
    data: DataSpec = DataSpec()
    model: ModelSpec
    loss: LossSpec
    optimizer: OptimizerSpec = OptimizerSpec()
    training: TrainingSpec = TrainingSpec()
    # where the spec came from (not a YAML key): user code is imported relative to it
    base_dir: Optional[str] = Field(None, exclude=True)
    # the mapping the user wrote (not a YAML key): --write-fixed writes it back with only the fixes changed
    source_raw: Optional[dict[str, Any]] = Field(None, exclude=True, repr=False)

    def with_overrides(self, **changes: Any) -> "Spec":
        """A deep copy with dotted-path changes: spec.with_overrides(**{"optimizer.lr": 0.01})."""
        new = self.model_copy(deep=True)
        for dotted, value in changes.items():
            obj = new
            *parents, last = dotted.split(".")
            for p in parents:
                obj = getattr(obj, p)
            setattr(obj, last, value)
        return new

    def to_yaml_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"base_dir"})
        d["model"]["init"] = self.model.init.to_yaml()
        if not d["model"].get("kwargs"):
            d["model"].pop("kwargs", None)
        loss = self.loss
        if loss.class_weights is None and loss.label_smoothing == 0.0:
            d["loss"] = loss.name
        # the transformer-era keys are written only when they differ from their defaults
        for section, key, default in (("training", "precision", "fp32"), ("training", "accumulate", 1),
                                      ("optimizer", "decay_norm_bias", True)):
            if d.get(section, {}).get(key) == default:
                d[section].pop(key)
        return d


# ---- loading --------------------------------------------------------------------------------

def _path_str(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "str", "list[float]", "literal['balanced']",
                      "list[str]", "str-enum") or str(part).startswith(("function-", "literal[", "list[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


_INT_KEYS = {"out", "batch_size", "epochs", "max_rows", "vocab_size", "accumulate", "total_steps"}  # the PositiveInt fields
_EXPECT = {
    "missing": "this key is required",
    "extra_forbidden": "unknown key",
    "greater_than": "expected a number > {gt}",
    "greater_than_equal": "expected a number >= {ge}",
    "less_than": "expected a number < {lt}",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}


def format_validation_error(err: ValidationError) -> str:
    e = err.errors()[0]
    path = _path_str(tuple(e["loc"]))
    typ = e["type"]
    got = e.get("input")
    ctx = e.get("ctx") or {}
    if typ == "greater_than" and ctx.get("gt") == 0 and path.rsplit(".", 1)[-1] in _INT_KEYS:
        expected = "expected a positive integer"
    elif typ in _EXPECT:
        expected = _EXPECT[typ].format(**ctx)
    elif typ == "literal_error":
        expected = f"expected one of {ctx.get('expected', '')}"
    else:
        expected = e["msg"].removeprefix("Value error, ")
    if typ == "extra_forbidden":
        return f"{path}: unknown key (check the spelling; config.md lists the keys)"
    if typ == "missing":
        return f"{path}: this key is required"
    return f"{path}: {expected}, got {got!r}" if got is not None and typ != "value_error" else f"{path}: {expected}"


def parse_spec(raw: Any, base_dir: str | Path | None = None, source: str = "spec") -> Spec:
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: expected a YAML mapping with model, loss, ... at the top level, "
                         f"got {type(raw).__name__}")
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as err:
        raise UsageError(f"{source}: {format_validation_error(err)}") from None
    spec.base_dir = str(Path(base_dir).resolve()) if base_dir else None
    spec.source_raw = copy.deepcopy(raw)
    return spec


def load_spec(path: str | Path) -> Spec:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"spec file not found: {p} (pass --config PATH to a YAML spec; configs/ has examples)")
    if p.is_dir():
        raise UsageError(f"spec path is a directory, not a file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{p}: not a text file (expected a YAML spec)") from None
    except OSError as err:
        raise UsageError(f"{p}: cannot read: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"{p}: malformed YAML{where}: {problem}") from None
    return parse_spec(raw, p.parent, str(p))


def resolve_path(spec: Spec, path: str | None) -> Path | None:
    """Paths in the spec are relative to the spec file."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_absolute() and spec.base_dir:
        p = Path(spec.base_dir) / p
    return p
