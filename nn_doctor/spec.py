"""The YAML spec (docs/spec.md) -> validated, typed objects.

YAML is read with a bounded safe loader (safe_yaml.py: SafeLoader plus limits on size, depth, value
count with aliases expanded, number length, alias cycles and duplicate keys). Validation is pydantic's;
its errors are turned into one line naming the key path and what was expected
(`model.layers[2].out: expected a positive integer, got -3`), raised as UsageError (exit 2). Values
echoed in those lines are cut to MAX_ECHO_CHARS. No torch import here.
"""
from __future__ import annotations

import copy

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator,
                      model_validator)

from . import safe_yaml
from .errors import UsageError

# ---- ranges (each a named limit with its reason) ------------------------------------------------
# Seeds: numpy's RandomState and most seeding helpers take 0..2**32-1; torch.manual_seed overflows past
# 2**64 (a traceback without this bound). The doctor seeds numpy, torch and the splits with one value.
MAX_SEED = 2**32 - 1
# A layer's output size (`out`). The widest real layers (vocabulary-sized outputs) have ~2.6e5 units; at
# 2**24 (16.7 million) one sample's activations are already 64 MiB and the weights GiBs, nothing a probe
# trains in seconds, and far below the int64 sizes past which torch overflows with a traceback. A larger
# value is a typo. model.py also bounds the parameters one layer may hold (MAX_LAYER_PARAMETERS).
MAX_LAYER_SIZE = 2**24
# User keyword arguments (model.kwargs, a layer's extra keys) must be plain data, nested at most this
# deep (the loader allows 64 levels for the whole spec; kwargs sit a few levels down).
MAX_KWARGS_DEPTH = 32
# A value echoed in a one-line error is cut to this many characters (a 5,000-character bad value would
# otherwise fill the terminal).
MAX_ECHO_CHARS = 80
# A layer type is a torch.nn class's snake_case name: the longest is ~30 characters.
MAX_LAYER_TYPE_CHARS = 64

_PLAIN_SCALARS = (type(None), bool, int, float, str)


def plain_data_problem(value: Any, depth: int = 0, _open: tuple[int, ...] = ()) -> str | None:
    """Why `value` is not plain data (None, bool, int, float, str, and lists/mappings of them with string
    keys, no cycles, at most MAX_KWARGS_DEPTH deep), or None when it is. The path of the bad part leads."""
    if isinstance(value, _PLAIN_SCALARS):
        return None
    if depth >= MAX_KWARGS_DEPTH:
        return f"nested deeper than {MAX_KWARGS_DEPTH} levels (the kwargs depth limit)"
    if id(value) in _open:
        return "contains itself (a cycle); keyword arguments must be plain data"
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            problem = plain_data_problem(item, depth + 1, _open + (id(value),))
            if problem:
                return f"[{i}]: {problem}" if not problem.startswith(("[", ".")) else f"[{i}]{problem}"
        return None
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                return f"key {shorten(repr(k))} is a {type(k).__name__}; keys must be strings"
            problem = plain_data_problem(item, depth + 1, _open + (id(value),))
            if problem:
                return f".{k}: {problem}" if not problem.startswith(("[", ".")) else f".{k}{problem}"
        return None
    return (f"a {type(value).__name__} value ({shorten(repr(value))}); keyword arguments must be plain data "
            f"(numbers, strings, true/false, null, lists and mappings)")


def shorten(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` cut to `limit` characters, the cut marked and the full length given."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit - 1]}… ({len(text):,} characters)"

Task = Literal["classification", "binary", "regression", "multilabel"]
Normalize = Literal["none", "standardize", "minmax"]
LossName = Literal["cross_entropy", "nll", "bce", "bce_with_logits", "mse", "l1", "huber"]
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop"]
InitName = Literal["default", "he", "xavier", "lecun", "orthogonal", "zeros"]


class _Strict(BaseModel):
    # allow_inf_nan=False: an lr, fraction or momentum of .inf/.nan is always a mistake
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
    out: Optional[PositiveInt] = Field(None, le=MAX_LAYER_SIZE)
    layers: Optional[list["LayerSpec"]] = None   # only for `residual`

    @field_validator("type")
    @classmethod
    def _snake(cls, v: str) -> str:
        v = v.strip().lower()
        if not v or len(v) > MAX_LAYER_TYPE_CHARS or not v.replace("_", "a").isalnum() or not v.isascii():
            raise ValueError(f"expected a layer type name such as linear, relu or conv2d, got {shorten(repr(v))}")
        return v

    @model_validator(mode="after")
    def _plain_kwargs(self) -> "LayerSpec":
        for k, v in (self.model_extra or {}).items():
            problem = plain_data_problem(v)
            if problem:
                raise ValueError(f"argument {shorten(k, 40)}{problem if problem[0] in '[.' else ': ' + problem}")
        return self

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
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True,
                              allow_inf_nan=False)

    @field_validator("kwargs")
    @classmethod
    def _plain(cls, v: dict[str, Any]) -> dict[str, Any]:
        problem = plain_data_problem(v)
        if problem:
            raise ValueError(problem.lstrip(".") if problem[0] == "." else problem)
        return v

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
    seed: int = Field(0, ge=0, le=MAX_SEED)
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
            try:
                setattr(obj, last, value)
            except ValidationError as err:   # one line naming the key, like a spec error
                raise UsageError(format_validation_error(err, prefix=dotted)) from None
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
    "less_than_equal": "expected a number <= {le}",
    "finite_number": "expected a finite number",
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


def _did_you_mean(loc: tuple) -> str:
    """'did you mean data.normalize? ' for loc ('data', 'normalise'): the closest key of the same mapping."""
    import difflib
    import typing
    cls: Any = Spec
    for part in loc[:-1]:
        fields = getattr(cls, "model_fields", {})
        if not isinstance(part, str) or part not in fields:
            continue   # a list index or a validator's name in the location
        ann, nxt = fields[part].annotation, None
        stack = [ann]
        while stack:   # Optional[list[LayerSpec]] -> LayerSpec
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                nxt = t
                break
            stack.extend(typing.get_args(t))
        if nxt is None:
            return ""
        cls = nxt
    keys = [f.alias or name for name, f in getattr(cls, "model_fields", {}).items() if not f.exclude]  # not YAML keys
    hit = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
    if not hit:
        return ""
    parent = _path_str(tuple(loc[:-1]))
    return f"did you mean {hit[0] if parent == '(top level)' else parent + '.' + hit[0]}? "


def format_validation_error(err: ValidationError, prefix: str | None = None) -> str:
    """One line for the first error: the key path, what was expected, the value given (shortened).
    `prefix`: the dotted path of an assignment (with_overrides), whose own errors carry only the last key."""
    e = err.errors(include_url=False)[0]
    loc = tuple(e["loc"])
    if prefix:
        loc = tuple(prefix.split(".")) + loc[1:]
    path = _path_str(loc)
    typ = e["type"]
    got = e.get("input")
    ctx = e.get("ctx") or {}
    key = path.rsplit(".", 1)[-1]
    if typ == "greater_than" and ctx.get("gt") == 0 and key in _INT_KEYS:
        expected = "expected a positive integer"
    elif typ == "less_than_equal" and key == "seed":
        expected = f"expected a seed in 0..{MAX_SEED} (2**32-1)"
    elif typ == "greater_than_equal" and key == "seed":
        expected = f"expected a seed in 0..{MAX_SEED} (2**32-1)"
    elif typ == "less_than_equal" and key == "out":
        expected = f"expected a layer size <= {MAX_LAYER_SIZE:,} (the layer size limit)"
    elif typ in _EXPECT:
        expected = _EXPECT[typ].format(**ctx)
    elif typ == "literal_error":
        expected = f"expected one of {ctx.get('expected', '')}"
    else:
        expected = e["msg"].removeprefix("Value error, ")
    if typ == "extra_forbidden":
        return f"{path}: unknown key ({_did_you_mean(loc)}docs/spec.md lists the keys)"
    if typ == "missing":
        return f"{path}: this key is required"
    if typ != "value_error" and got is not None:
        return f"{path}: {expected}, got {_echo(got)}"
    return f"{path}: {shorten(expected, 4 * MAX_ECHO_CHARS)}"


def _echo(value: Any) -> str:
    """A value as the user wrote it, for an error line: short, never a huge or self-referencing repr."""
    if isinstance(value, (dict, list, tuple)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} of {len(value)} item{'s' * (len(value) != 1)}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**MAX_ECHO_CHARS:
        return f"an integer of {len(str(abs(value))):,} digits"   # str() of a huge int is slow and refused past 4,300 digits
    return shorten(repr(value))


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


def read_spec_text(p: Path) -> str:
    """The spec file's text, refused past safe_yaml.MAX_SPEC_BYTES before more than that is read (a FIFO
    or /dev/zero given as --config is read no further either)."""
    limit = safe_yaml.MAX_SPEC_BYTES
    try:
        with open(p, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as err:
        raise UsageError(f"{p}: cannot read: {err.strerror}") from None
    if len(data) > limit:
        raise UsageError(f"{p}: the spec is larger than {limit // 1024} KiB (the spec size limit); "
                         f"a spec is a short YAML file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{p}: not a text file (expected a YAML spec)") from None


def parse_yaml(text: str, source: str) -> Any:
    """safe_yaml.load with every error as one UsageError line naming the line and the limit or problem."""
    try:
        return safe_yaml.load(text)
    except safe_yaml.SpecLimitError as err:
        mark = err.problem_mark
        where = f" line {mark.line + 1}:" if mark else ""
        raise UsageError(f"{source}:{where} {err.problem}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"{source}: malformed YAML{where}: {shorten(problem, 4 * MAX_ECHO_CHARS)}") from None
    except RecursionError:   # cannot happen within MAX_SPEC_DEPTH; kept so no traceback ever escapes
        raise UsageError(f"{source}: nesting too deep to read (the spec depth limit)") from None


def load_spec(path: str | Path) -> Spec:
    p = Path(path)
    try:
        exists = p.exists()
    except (OSError, ValueError) as err:   # a name too long for the file system, a NUL byte
        raise UsageError(f"spec path {shorten(repr(str(p)))}: {getattr(err, 'strerror', None) or err}") from None
    if not exists:
        raise UsageError(f"spec file not found: {shorten(str(p), 4 * MAX_ECHO_CHARS)} "
                         f"(pass --config PATH to a YAML spec; configs/ has examples)")
    if p.is_dir():
        raise UsageError(f"spec path is a directory, not a file: {p}")
    raw = parse_yaml(read_spec_text(p), str(p))
    return parse_spec(raw, p.parent, str(p))


def resolve_path(spec: Spec, path: str | None) -> Path | None:
    """Paths in the spec are relative to the spec file."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_absolute() and spec.base_dir:
        p = Path(spec.base_dir) / p
    return p
