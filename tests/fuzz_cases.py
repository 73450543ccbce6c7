"""Generators and the property for the hostile-input fuzz suite (tests/test_fuzz.py runs a few examples in
CI; benchmarks/fuzz.py runs many and counts the distinct failures).

Three families of cases, each written to a fresh folder and run through the real command line in-process
(typer's runner; the same code as the `nn-doctor` entry point):

- specs: a valid spec on tiny data, mutated as a careless user or an attacker would: a leaf replaced by a
  hostile value, a key dropped or invented, then YAML-level damage (duplicate keys, deep nesting, anchors,
  anchor bombs, alias cycles, tags, huge numbers, truncation, garbage, binary bytes, a huge file);
- data: CSV/TSV/Parquet tables and NPZ arrays with hostile shapes and value types;
- user code: a model class (and training step) that raises, calls sys.exit, recurses forever, or returns
  nonsense, at import, in __init__, in forward (eval, train, or only on the n-th call) or in the step.

The property (issue 15): exit code in {0, 1, 2, 130}; no traceback; on exit 2 a short stderr (at most
MAX_ERROR_LINES lines); on 0/1 a verdict on stdout; never "Healthy" when a check crashed or the user's code
misbehaved while the command ran; and at most MAX_CASE_S seconds per case.
"""
from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from hypothesis import strategies as st
from typer.testing import CliRunner

EXIT_CODES = {0, 1, 2, 130}
MAX_ERROR_LINES = 3          # "stderr of at most a few lines on exit 2"
MAX_CASE_S = 60.0            # a case (tiny data, short probes, --budget below) must answer within this
PROBE_ARGS = ("--steps", "10", "--budget", "15")   # probe-lr: short probes, bounded
REPORT_ARGS = ("--budget", "10")                    # full-report: bounded
_uid = itertools.count()


# ---- the base spec and data -----------------------------------------------------------------------

def tiny_table(folder: Path) -> Path:
    """60 rows, 3 classes, 4 numeric features: the data every spec case points at."""
    p = folder / "base.csv"
    if not p.exists():
        rng = np.random.default_rng(0)
        y = np.repeat([0, 1, 2], 20)
        X = rng.normal(size=(60, 4)) + y[:, None]
        pd.DataFrame(X, columns=list("abcd")).assign(label=y).to_csv(p, index=False)
    return p


def base_spec(data: Path) -> dict:
    return {"task": "classification",
            "data": {"path": str(data), "target": "label", "normalize": "standardize", "val_fraction": 0.2},
            "model": {"layers": [{"type": "linear", "out": 8}, {"type": "relu"}, {"type": "linear", "out": 3}],
                      "init": "he"},
            "loss": "cross_entropy", "optimizer": {"name": "adam", "lr": 0.003, "weight_decay": 0.0},
            "training": {"batch_size": 16, "epochs": 2, "seed": 0, "device": "cpu"}}


# Floats are drawn without subnormals: a library that turns on flush-to-zero (some do, process-wide) makes
# hypothesis refuse to draw them.

# ---- specs ------------------------------------------------------------------------------------------

HOSTILE_VALUES = st.one_of(
    st.integers(min_value=-2**80, max_value=2**80),
    st.sampled_from([0, -1, 1, 2, 2**31, 2**32, 2**32 - 1, 2**63, 2**64, 10**30, 100_000]),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
    st.text(max_size=30),
    st.sampled_from(["", "x" * 5000, "cuda:99", "mps", "..", "/dev/zero", "relu", "linear", "balanced",
                     "adam", "none", "standardize", "a:b", "os:system", "label", "2020-01-01"]),
    st.none(), st.booleans(),
    st.lists(st.one_of(st.integers(-5, 5), st.floats(allow_nan=True, allow_subnormal=False), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(-3, 3), st.text(max_size=3)), max_size=3),
)
EXTRA_PATHS = ["model.kwargs", "model.class", "model.init", "data.features", "data.max_rows", "data.val_path",
               "data.x_key", "data.normalize_target", "loss.class_weights", "loss.label_smoothing",
               "optimizer.momentum", "optimizer.grad_clip", "training.step", "model.layers.0.p",
               "model.layers.1.type", "model.layers.0.bias", "model.layers.2.layers", "data.target"]
TAGS = ["!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!!binary aGVsbG8=",
        "!!set {a, b}", "!!timestamp 2020-01-01", "!!float nan", "!!int '0x10'", "!custom x", "!!str 1",
        "!!map {a: 1}", "!!omap [a: 1]"]


def _paths(obj: Any, prefix: str = "") -> list[str]:
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in items:
        p = f"{prefix}.{k}" if prefix else str(k)
        out.append(p)
        out += _paths(v, p)
    return out


def _set(obj: dict, path: str, value: Any, delete: bool = False) -> None:
    *parents, last = path.split(".")
    cur: Any = obj
    for p in parents:
        if isinstance(cur, list):
            i = int(p)
            if i >= len(cur):
                return
            cur = cur[i]
        elif isinstance(cur, dict):
            if p not in cur or not isinstance(cur[p], (dict, list)):
                cur[p] = {}
            cur = cur[p]
        else:
            return
    if isinstance(cur, list):
        i = int(last) if last.isdigit() else None
        if i is not None and i < len(cur):
            if delete:
                del cur[i]
            else:
                cur[i] = value
    elif isinstance(cur, dict):
        if delete:
            cur.pop(last, None)
        else:
            cur[last] = value


@st.composite
def spec_cases(draw, data: Path) -> tuple[str | bytes, str]:
    """(spec text or bytes, a label of what was done)."""
    spec = base_spec(data)
    done = []
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["set", "set", "delete", "unknown"]))
        paths = _paths(spec) + EXTRA_PATHS
        path = draw(st.sampled_from(paths))
        if op == "set":
            _set(spec, path, draw(HOSTILE_VALUES))
        elif op == "delete":
            _set(spec, path, None, delete=True)
        else:
            _set(spec, path.rsplit(".", 1)[0] + "." + draw(st.text("abcxyz_", min_size=1, max_size=8))
                 if "." in path else draw(st.text("abcxyz_", min_size=1, max_size=8)), 1)
        done.append(f"{op} {path}")
    try:
        text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    except Exception:                      # an unrepresentable value: use the base spec's text
        text = yaml.safe_dump(base_spec(data), sort_keys=False)
    damage = draw(st.sampled_from(["none", "none", "dup", "deep", "cycle", "bomb", "anchors", "tag", "number",
                                   "truncate", "garbage", "bytes", "big", "empty", "multi", "scalar"]))
    done.append(damage)
    if damage == "dup":
        line = draw(st.sampled_from([l for l in text.splitlines() if l and not l.startswith(" ")] or ["task: x"]))
        text += line + "\n"
    elif damage == "deep":
        d = draw(st.integers(1, 3000))
        text += "extra: " + draw(st.sampled_from(["[" * d + "]" * d, "{a: " * d + "1" + "}" * d])) + "\n"
    elif damage == "cycle":
        text = text.replace("model:\n", "model:\n  kwargs: &r {a: [*r]}\n", 1)
    elif damage == "bomb":
        levels, width = draw(st.integers(2, 9)), draw(st.integers(2, 12))
        bomb = "x0: &x0 [" + ",".join(["lol"] * width) + "]\n"
        for i in range(1, levels):
            bomb += f"x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * width) + "]\n"
        text = bomb + text
    elif damage == "anchors":
        text = "defaults: &d {batch_size: 8, epochs: 1}\n" + text + "extra_training: {<<: *d, seed: 1}\n"
    elif damage == "tag":
        text += f"extra: {draw(st.sampled_from(TAGS))}\n"
    elif damage == "number":
        digits = draw(st.integers(20, 6000))
        text = re.sub(r"out: \d+", "out: " + "9" * digits, text, count=1) if "out: " in text else \
            text + "extra: " + "1" * digits + "\n"
    elif damage == "truncate":
        text = text[:draw(st.integers(0, max(0, len(text) - 1)))]
    elif damage == "garbage":
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.text(min_size=1, max_size=20)) + text[i:]
    elif damage == "bytes":
        return draw(st.binary(min_size=1, max_size=200)), " / ".join(done)
    elif damage == "big":
        text += "extra: [" + ",".join(["1"] * draw(st.integers(20_000, 200_000))) + "]\n"
    elif damage == "empty":
        text = draw(st.sampled_from(["", "\n", "# only a comment\n", "---\n", "null\n", "~\n"]))
    elif damage == "multi":
        text = text + "---\n" + text
    elif damage == "scalar":
        text = draw(st.sampled_from(["42\n", "[1, 2]\n", "'a string'\n", "!!binary aGVsbG8=\n"]))
    return text, " / ".join(done)


# ---- data files ---------------------------------------------------------------------------------------

COLUMN_KINDS = ["float", "int", "bool", "str", "list", "dict", "date", "nan", "inf", "const", "huge", "empty_str",
                "mixed", "category", "duration", "bytes"]


def _column(kind: str, n: int, rng: np.random.Generator) -> Any:
    if kind == "float":
        return rng.normal(size=n)
    if kind == "int":
        return rng.integers(0, 3, size=n)
    if kind == "bool":
        return rng.random(n) > 0.5
    if kind == "str":
        return np.array(["a", "b", "c"])[rng.integers(0, 3, size=n)].astype(object)
    if kind == "list":
        return pd.Series([[float(i), 1.0] for i in range(n)], dtype=object)
    if kind == "dict":
        return pd.Series([{"k": i % 3} for i in range(n)], dtype=object)
    if kind == "date":
        return pd.date_range("2020-01-01", periods=n)
    if kind == "nan":
        return np.full(n, np.nan)
    if kind == "inf":
        return np.where(rng.random(n) > 0.5, np.inf, -np.inf)
    if kind == "const":
        return np.ones(n)
    if kind == "huge":
        return rng.normal(size=n) * 1e300
    if kind == "empty_str":
        return pd.Series([""] * n, dtype=object)
    if kind == "mixed":
        return pd.Series([1 if i % 2 else "x" for i in range(n)], dtype=object)
    if kind == "category":
        return pd.Categorical(np.array(["u", "v"])[rng.integers(0, 2, size=n)])
    if kind == "duration":
        return pd.to_timedelta(np.arange(n), unit="s")
    if kind == "bytes":
        return pd.Series([b"xy"] * n, dtype=object)
    raise ValueError(kind)


ARRAY_DTYPES = ["f4", "f8", "f2", "i8", "u1", "bool", "c16", "M8[D]", "m8[s]", "U3", "S2", "V4", "struct"]


def _array(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype == "struct":
        return np.zeros(shape, dtype=[("a", "f4"), ("b", "i4")])
    if dtype in ("U3", "S2"):
        return np.array(["ab", "cd"])[rng.integers(0, 2, size=shape)].astype(dtype)
    if dtype in ("M8[D]", "m8[s]", "V4"):
        return np.zeros(shape, dtype=dtype)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith(("i", "u")):
        return rng.integers(0, 3, size=shape).astype(dtype)
    if dtype == "c16":
        return (rng.normal(size=shape) + 1j).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


@st.composite
def data_cases(draw, folder: Path) -> tuple[Path, str]:
    """(a data file with hostile shapes or types, a label); the target is `label` (tables) / `y` (npz)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = draw(st.sampled_from([0, 1, 2, 5, 11, 60]))
    fmt = draw(st.sampled_from(["csv", "tsv", "parquet", "parquet", "npz", "npz"]))
    path = folder / f"data{next(_uid)}.{fmt}"
    if fmt == "npz":
        k = draw(st.sampled_from([0, 1, 3]))
        xshape = draw(st.sampled_from([(n,), (n, k), (n, k), (n, 2, k), (n, 1, 2, 2), ()]))
        yshape = draw(st.sampled_from([(n,), (n,), (n, 1), (n, 0), (n + 1,), (), (n, 2, 2)]))
        xd, yd = draw(st.sampled_from(ARRAY_DTYPES)), draw(st.sampled_from(ARRAY_DTYPES[:9]))
        np.savez(path, X=_array(xd, xshape, rng), y=_array(yd, yshape, rng))
        return path, f"npz X {xd}{xshape} y {yd}{yshape}"
    kinds = draw(st.lists(st.sampled_from(COLUMN_KINDS), min_size=0, max_size=4))
    target = draw(st.sampled_from(COLUMN_KINDS + ["int", "int", "float"]))
    frame = pd.DataFrame({f"c{i}_{kind}": _column(kind, n, rng) for i, kind in enumerate(kinds)})
    frame["label"] = _column(target, n, rng)
    try:
        if fmt == "parquet":
            frame.to_parquet(path)
        else:
            frame.to_csv(path, index=False, sep="\t" if fmt == "tsv" else ",")
    except Exception:       # pyarrow cannot store some mixes (ints and strings in one column): a CSV then
        path = path.with_suffix(".csv")
        frame.to_csv(path, index=False)
    return path, f"{path.suffix[1:]} n={n} features {kinds} target {target}"


# ---- user code ----------------------------------------------------------------------------------------

BEHAVIOURS = {
    "raise": "raise ValueError('user bug')",
    "runtime": "raise RuntimeError('CUDA error: an illegal memory access (user)')",
    "exit0": "sys.exit(0)",
    "exit1": "sys.exit(1)",
    "exit_str": "sys.exit('bye')",
    "recursion": "_recurse(0)",
    "none": "return None",
    "nan": "return self.l(x) * float('nan')",
    "shape": "return self.l(x)[:, :1]",
    "tuple": "return (self.l(x), 1)",
    "int_tensor": "return self.l(x).long()",
}
PLACES = ["import", "init", "forward", "forward_train", "forward_nth", "step"]

_MODULE = """\
import sys
import torch
from torch import nn

MARK = {mark!r}


def _mark():
    with open(MARK, "a") as fh:
        fh.write("ran\\n")


def _recurse(n):
    return _recurse(n + 1)

{top}

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 3)
        self.calls = 0
{init}

    def forward(self, x):
        self.calls += 1
{fwd}
        return self.l(x)


def step(model, batch, optimizer, loss_fn):
    x, y = batch
{step}
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss
"""


def _block(code: str, indent: int, cond: str | None = None) -> str:
    pad = " " * indent
    if code.startswith("return") and indent == 0:
        code = "raise SystemExit(0)"          # a top-level 'return' is a SyntaxError, not a behaviour
    lines = ["_mark()", code]
    if cond:
        return f"{pad}if {cond}:\n" + "".join(f"{pad}    {l}\n" for l in lines)
    return "".join(f"{pad}{l}\n" for l in lines)


@st.composite
def user_code_cases(draw, folder: Path) -> tuple[Path, Path, str, str]:
    """(spec path, marker path, command, label): a spec whose model.class (and training.step) misbehave."""
    place, behaviour = draw(st.sampled_from(PLACES)), draw(st.sampled_from(sorted(BEHAVIOURS)))
    code = BEHAVIOURS[behaviour]
    name = f"fuzz_user_{next(_uid)}"
    mark = folder / f"{name}.mark"
    parts = {"top": "", "init": "        pass\n", "fwd": "", "step": "    pass\n"}
    if place == "import":
        parts["top"] = _block(code, 0)
    elif place == "init":
        parts["init"] = _block(code if not code.startswith("return") else "return None", 8)
    elif place == "forward":
        parts["fwd"] = _block(code, 8)
    elif place == "forward_train":
        parts["fwd"] = _block(code, 8, "self.training and torch.is_grad_enabled()")
    elif place == "forward_nth":
        parts["fwd"] = _block(code, 8, f"self.calls == {draw(st.integers(2, 40))}")
    else:
        parts["step"] = _block(code if not code.startswith("return self") else "return None", 4)
    (folder / f"{name}.py").write_text(_MODULE.format(mark=str(mark), **parts))
    spec = base_spec(tiny_table(folder))
    spec["model"] = {"class": f"{name}:Net"}
    if place == "step":
        spec["training"]["step"] = f"{name}:step"
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    command = "full-report" if place == "step" else draw(st.sampled_from(["probe-lr", "full-report"]))
    return path, mark, command, f"{behaviour} in {place} ({command})"


# ---- running a case and the property --------------------------------------------------------------------

@dataclass
class Outcome:
    args: list[str]
    label: str
    code: int
    stdout: str
    stderr: str
    seconds: float
    misbehaved: bool = False
    violations: list[str] = field(default_factory=list)


def run_cli(args: list[str]) -> tuple[int, str, str, float, BaseException | None]:
    t0 = time.perf_counter()
    res = CliRunner(env={"COLUMNS": "1000"}).invoke(__import__("nn_doctor.cli", fromlist=["app"]).app,
                                                    [str(a) for a in args])
    exc = res.exception if res.exception is not None and not isinstance(res.exception, SystemExit) else None
    return res.exit_code, res.stdout, res.stderr, time.perf_counter() - t0, exc


HEALTHY = re.compile(r"^✓ Healthy", re.M)
VERDICT = re.compile(r"^(✓ Healthy|✗ Unhealthy|! Warnings)", re.M)


def check(args: list[str], label: str, marker: Path | None = None) -> Outcome:
    """Run `nn-doctor ARGS` and list the property's violations (empty: the case passed)."""
    code, out, err, took, exc = run_cli(args)
    o = Outcome(args, label, code, out, err, took)
    o.misbehaved = marker is not None and marker.exists()
    v = o.violations
    if exc is not None:
        import traceback
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        v.append(f"exception escaped: {type(exc).__name__} at {where}: {str(exc)[:120]}")
    if code not in EXIT_CODES:
        v.append(f"exit code {code}")
    if "Traceback (most recent call last)" in out + err:
        v.append("traceback printed")
    if code == 2:
        lines = err.strip().splitlines()
        if not lines:
            v.append("exit 2 without a message")
        elif len(lines) > MAX_ERROR_LINES:
            v.append(f"exit 2 with {len(lines)} stderr lines")
    if code in (0, 1) and exc is None and not VERDICT.search(out):
        v.append(f"exit {code} without a verdict on stdout")
    if HEALTHY.search(out):
        if "☠" in out or "crashed" in out:
            v.append("Healthy although a check crashed")
        if o.misbehaved:
            v.append("Healthy although the user's code misbehaved during the run")
    if took > MAX_CASE_S:
        v.append(f"took {took:.0f} s")
    return o


def signature(o: Outcome) -> str:
    """What identifies a failure as distinct: the violation kinds and the command, plus the escaped
    exception's place or the user behaviour's label."""
    kinds = sorted({re.sub(r"\d+", "N", x.split(":")[0]) for x in o.violations})
    detail = next((x for x in o.violations if x.startswith("exception escaped")), "")
    return f"{o.args[0]} | {'; '.join(kinds)} | {detail[:100] or o.label}"
