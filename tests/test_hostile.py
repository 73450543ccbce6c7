"""Hostile and broken input (issue 15): every row of the issue's table, and the neighbours of each.

Each case runs the real command line in-process (typer's runner: the same code as the `nn-doctor` entry
point, without a new interpreter per case) and asserts what a user sees: the exit code, one line on
stderr naming the problem (or the finding), no traceback, and that the answer comes fast.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from nn_doctor import safe_yaml
from nn_doctor.cli import app
from nn_doctor.errors import UsageError
from nn_doctor.spec import MAX_ECHO_CHARS, parse_spec

ROOT = Path(__file__).resolve().parent.parent
WINE = ROOT / "sample_data" / "wine.csv"
FAST_S = 10.0          # "within a few seconds": a refusal never takes longer than this on a busy 2-core box


@pytest.fixture(scope="module", autouse=True)
def _warm_imports():
    """Import what the commands import, once: the time bounds below measure the refusal, not torch's import."""
    import nn_doctor.checks.data  # noqa: F401
    import nn_doctor.doctor  # noqa: F401
    import nn_doctor.model  # noqa: F401


def cli(*args: str):
    """(exit code, stdout, stderr, seconds) of `nn-doctor ARGS`, with the properties every run must have."""
    t0 = time.perf_counter()
    res = CliRunner(env={"COLUMNS": "1000"}).invoke(app, [str(a) for a in args])
    took = time.perf_counter() - t0
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.stdout + res.stderr
    if res.exit_code == 2:
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    return res.exit_code, res.stdout, res.stderr, took


def refused(*args: str, says: str) -> str:
    code, out, err, took = cli(*args)
    assert code == 2, (code, out, err)
    assert says in err, err
    assert took < FAST_S, took
    return err


def spec_dict(data: Path = WINE, **over) -> dict:
    d = {"task": "classification",
         "data": {"path": str(data), "target": "label", "normalize": "standardize"},
         "model": {"layers": [{"type": "linear", "out": 8}, {"type": "relu"}, {"type": "linear", "out": 3}]},
         "loss": "cross_entropy", "optimizer": {"name": "adam", "lr": 0.003},
         "training": {"batch_size": 32, "epochs": 2, "seed": 0, "device": "cpu"}}
    for dotted, value in over.items():
        obj = d
        *parents, last = dotted.split(".")
        for p in parents:
            obj = obj.setdefault(p, {})
        obj[last] = value
    return d


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def good_yaml(**over) -> str:
    return yaml.safe_dump(spec_dict(**over), sort_keys=False)


@pytest.fixture(scope="module")
def table60(tmp_path_factory) -> Path:
    """60 rows, 3 balanced classes, 4 numeric features."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    X = rng.normal(size=(60, 4)) + y[:, None]
    p = tmp_path_factory.mktemp("t60") / "t60.csv"
    pd.DataFrame(X, columns=list("abcd")).assign(label=y).to_csv(p, index=False)
    return p


# ---- 1. bounded input, before parsing ------------------------------------------------------------

@pytest.mark.parametrize("nest", ["[" * 1000 + "]" * 1000, "{a: " * 1000 + "1" + "}" * 1000])
@pytest.mark.parametrize("command", ["check-data", "probe-lr"])
def test_deep_nesting_is_refused_by_the_depth_limit(tmp_path, nest, command):
    p = write(tmp_path, good_yaml() + f"extra: {nest}\n")
    refused(command, "--config", p, says="nesting deeper than 64 levels (the spec depth limit)")


def test_depth_just_inside_the_limit_reaches_validation(tmp_path):
    depth = safe_yaml.MAX_SPEC_DEPTH - 2        # the top mapping and `extra` itself are two levels
    p = write(tmp_path, good_yaml() + "extra: " + "[" * depth + "]" * depth + "\n")
    refused("check-data", "--config", p, says="extra: unknown key")


@pytest.mark.parametrize("command", ["check-data", "probe-lr"])
def test_a_5000_digit_integer_is_refused_by_the_number_length_limit(tmp_path, command):
    p = write(tmp_path, good_yaml().replace("out: 8", "out: " + "9" * 5000))
    err = refused(command, "--config", p, says="the number length limit is 100")
    assert "line " in err


def test_a_self_referencing_anchor_in_kwargs_is_refused(tmp_path):
    text = good_yaml(**{"model.class": "m:Net"}).replace("  layers:", "  kwargs: &r {a: *r}\n  layers:", 1)
    for command in ("check-data", "probe-lr"):
        refused(command, "--config", write(tmp_path, text), says="(a cycle")


def test_kwargs_with_a_cycle_or_an_object_are_refused_by_validation():
    cyclic: dict = {"a": 1}
    cyclic["self"] = cyclic
    d = spec_dict(**{"model.class": "m:Net"})
    del d["model"]["layers"]
    d["model"]["kwargs"] = cyclic
    with pytest.raises(UsageError, match=r"model.kwargs: self(\.self)?: contains itself \(a cycle\)"):
        parse_spec(d)
    d["model"]["kwargs"] = {"when": object()}
    with pytest.raises(UsageError, match=r"plain data"):
        parse_spec(d)
    layers = spec_dict()["model"]["layers"]
    layers[0]["bias"] = {1: 2}
    with pytest.raises(UsageError, match=r"keys must be strings"):
        parse_spec(spec_dict(**{"model.layers": layers}))


@pytest.mark.parametrize("command", ["check-data", "probe-lr"])
def test_a_10_mb_spec_is_refused_unparsed(tmp_path, command):
    p = write(tmp_path, good_yaml() + "extra: [" + ",".join(["1"] * 2_500_000) + "]\n")
    refused(command, "--config", p, says="larger than 256 KiB (the spec size limit)")


def test_a_long_list_under_the_size_limit_stops_at_the_value_count_limit(tmp_path):
    p = write(tmp_path, good_yaml() + "extra: [" + ",".join(["1"] * 60_000) + "]\n")
    refused("check-data", "--config", p, says="the spec value-count limit")


def test_a_billion_laughs_inside_a_layer_is_refused_fast(tmp_path):
    bomb = "  - type: linear\n    out: 8\n    x0: &x0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
    for i in range(1, 9):
        bomb += f"    x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * 9) + "]\n"
    text = good_yaml().replace("  layers:\n", "  layers:\n" + bomb, 1)
    assert yaml.safe_load(text)["model"]["layers"][0]["x8"][0][0] is not None   # a real bomb, loadable by plain PyYAML
    refused("check-data", "--config", write(tmp_path, text), says="an anchor bomb")


def test_aliases_that_stay_small_still_load(tmp_path):
    text = ("defaults: &d {batch_size: 32, epochs: 2, seed: 0, device: cpu}\n"
            + good_yaml().replace("training:\n", "training_unused:\n", 1)
            + "training: {<<: *d, batch_size: 16}\n")
    raw = safe_yaml.load(text)
    assert raw["training"] == {"batch_size": 16, "epochs": 2, "seed": 0, "device": "cpu"}   # merge keys override


def test_duplicate_keys_are_refused_naming_both_lines(tmp_path):
    p = write(tmp_path, good_yaml() + "task: regression\n")
    err = refused("check-data", "--config", p, says="duplicate key 'task'")
    assert "first given at line" in err
    nested = good_yaml().replace("  lr: 0.003\n", "  lr: 0.003\n  lr: 0.1\n")
    refused("probe-lr", "--config", write(tmp_path, nested), says="duplicate key 'lr'")


def test_code_running_tags_are_still_refused(tmp_path):
    text = good_yaml() + "extra: !!python/object/apply:os.system ['echo pwned']\n"
    refused("check-data", "--config", write(tmp_path, text), says="malformed YAML")


# ---- 2. validation of the whole spec -------------------------------------------------------------

def test_a_seed_of_2_to_the_70_is_refused(tmp_path):
    p = write(tmp_path, good_yaml(**{"training.seed": 2**70}))
    refused("probe-lr", "--config", p, says="training.seed: expected a seed in 0..4294967295")
    ok = write(tmp_path, good_yaml(), "ok.yaml")
    refused("probe-lr", "--config", ok, "--seed", str(2**70), says="--seed: expected a seed in 0..4294967295")
    refused("check-data", WINE, "--target", "label", "--seed", "-1", says="--seed: expected a seed")


def test_layer_sizes_beyond_the_limits_are_refused(tmp_path):
    p = write(tmp_path, good_yaml().replace("out: 8", f"out: {2**70}"))
    refused("probe-lr", "--config", p, says="the layer size limit")
    # under the size limit but 4.8e9 parameters in one layer: M200 from a meta-device count, nothing allocated
    big = write(tmp_path, good_yaml().replace("out: 8", "out: 16000000").replace("out: 3", "out: 300"), "big.yaml")
    code, out, err, took = cli("probe-lr", "--config", big, "-q")
    assert code == 1 and "M200" in out and "per-layer parameter limit" in out and took < FAST_S


@pytest.mark.parametrize("option,value,says", [
    ("--max-lr", "inf", "--max-lr: expected a finite number"),      # the lr decades would never end
    ("--budget", "-1", "--budget: expected a positive number"),     # every probe skipped, read as a pass
    ("--budget", "nan", "--budget: expected a finite number"),
    ("--steps", "-5", "--steps: expected a positive number"),
    ("--lr", "nan", "optimizer.lr: expected a finite number"),
    ("--batch-size", "0", "training.batch_size: expected a positive integer"),
])
def test_hostile_numeric_options_are_refused(tmp_path, option, value, says):
    refused("probe-lr", "--config", write(tmp_path, good_yaml()), option, value, says=says)


def test_infinite_floats_are_refused(tmp_path):
    refused("check-data", "--config", write(tmp_path, good_yaml(**{"optimizer.lr": float("inf")})),
            says="optimizer.lr: expected a finite number")


def test_val_fraction_099_on_60_rows_trains_on_what_is_left(tmp_path, table60):
    """Stratifying 0.99 of 20 rows per class leaves none; the plain split keeps a training row."""
    p = write(tmp_path, yaml.safe_dump(spec_dict(table60, **{"data.val_fraction": 0.99})))
    code, out, err, took = cli("probe-lr", "--config", p, "-q", "--steps", "20")
    assert code in (0, 1), err
    assert "validation: split (99%, seed 0)" in out


@pytest.mark.parametrize("fraction,side", [(0.995, "training"), (0.005, "validation")])
def test_a_split_that_empties_a_side_is_refused(tmp_path, table60, fraction, side):
    p = write(tmp_path, yaml.safe_dump(spec_dict(table60, **{"data.val_fraction": fraction})))
    refused("probe-lr", "--config", p, says=f"leaves no {side} rows of 60")
    code, out, _, _ = cli("full-report", "--config", p, "-q")
    assert code == 1 and "D100" in out and "Healthy" not in out


def test_a_5000_character_bad_value_is_echoed_short(tmp_path):
    p = write(tmp_path, good_yaml(**{"optimizer.name": "x" * 5000}))
    err = refused("check-data", "--config", p, says="optimizer.name: expected one of")
    assert len(err) < 2 * MAX_ECHO_CHARS + 120 and "(5,002 characters)" in err
    p = write(tmp_path, good_yaml().replace("type: relu", "type: " + "r" * 5000), "t.yaml")
    err = refused("check-data", "--config", p, says="expected a layer type name")
    assert len(err) < 300


# ---- 3. data types --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    d = tmp_path_factory.mktemp("types")
    base = pd.read_csv(WINE).iloc[::3].reset_index(drop=True)      # 60 rows, all three classes
    out = {}

    def save(name, frame):
        out[name] = d / f"{name}.parquet"
        frame.to_parquet(out[name])
    save("list_target", base.assign(label=[[1, 2]] * len(base)))
    save("dict_target", base.assign(label=[{"a": 1}] * len(base)))
    save("date_target", base.assign(label=pd.date_range("2020-01-01", periods=len(base))))
    save("list_feature", base.assign(alcohol=[[1.0, 2.0]] * len(base)))
    save("dict_feature", base.assign(alcohol=[{"a": 1.0}] * len(base)))
    save("date_feature", base.assign(alcohol=pd.date_range("2020-01-01", periods=len(base))))
    n = len(base)
    np.savez(d / "no_features.npz", X=np.zeros((n, 0)), y=np.arange(n) % 2)
    np.savez(d / "complex_X.npz", X=np.random.default_rng(0).random((n, 3)) + 1j, y=np.arange(n) % 2)
    np.savez(d / "complex_y.npz", X=np.random.default_rng(0).random((n, 3)), y=(np.arange(n) % 2) + 1j)
    np.savez(d / "date_y.npz", X=np.random.default_rng(0).random((n, 3)), y=np.arange(n).astype("datetime64[D]"))
    np.savez(d / "records_X.npz", X=np.zeros((n, 3), dtype=[("a", "f4"), ("b", "i4")]), y=np.arange(n) % 2)
    np.savez(d / "scalar_y.npz", X=np.zeros((n, 3)), y=np.array(3))
    np.savez(d / "empty_y.npz", X=np.zeros((n, 3)), y=np.zeros((n, 0)))
    for name in ("no_features", "complex_X", "complex_y", "date_y", "records_X", "scalar_y", "empty_y"):
        out[name] = d / f"{name}.npz"
    return out


@pytest.mark.parametrize("name,says", [
    ("list_target", "target column 'label' holds ndarrays"),
    ("dict_target", "target column 'label' holds dicts"),
    ("date_target", "target column 'label' holds dates"),
    ("no_features", "X has no features"),
    ("complex_X", "X holds complex numbers"),
    ("complex_y", "the target holds complex numbers"),
    ("date_y", "the target holds dates"),
    ("records_X", "X holds structured records"),
    ("scalar_y", "the target is a single value"),
    ("empty_y", "the target has no columns"),
])
def test_unusable_value_types_are_a_clear_no(frames, name, says):
    refused("check-data", frames[name], "--target", "label", says=says)


def test_a_list_target_is_d100_in_full_report(tmp_path, frames):
    p = write(tmp_path, yaml.safe_dump(spec_dict(frames["list_target"])))
    code, out, err, _ = cli("full-report", "--config", p, "-q", "--budget", "20")
    assert code == 1 and "D100" in out and "holds ndarrays" in out and "Healthy" not in out


@pytest.mark.parametrize("name", ["list_feature", "dict_feature", "date_feature"])
def test_nested_and_date_features_are_d103_with_no_crashed_check(frames, name):
    code, out, err, _ = cli("check-data", frames[name], "--target", "label")
    assert code == 1
    assert "D103 non-numeric-features" in out and "alcohol" in out
    assert "crashed" not in out and "☠" not in out and "Healthy" not in out
    if name != "date_feature":
        assert "read as text for the checks" in out      # the documented conversion is said


# ---- 4. user code ---------------------------------------------------------------------------------

NET = """\
import sys
import torch
from torch import nn
{top}

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        {init}
        self.l = nn.Linear(13, 3)

    def forward(self, x):
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


def user_spec(tmp_path: Path, name: str, with_step: bool = False, **parts: str) -> Path:
    code = NET.format(**{"top": "", "init": "pass", "fwd": "pass", "step": "pass", **parts})
    (tmp_path / f"{name}.py").write_text(code)
    d = spec_dict(**{"model.class": f"{name}:Net"})
    del d["model"]["layers"]
    if with_step:
        d["training"]["step"] = f"{name}:step"
    return write(tmp_path, yaml.safe_dump(d), f"{name}.yaml")


@pytest.mark.parametrize("top,says", [
    ("raise ValueError('boom at import')", "ValueError: boom at import (at hx_imp_raise.py:4)"),
    ("sys.exit(3)", "it calls sys.exit(3) (at hx_imp_exit.py:4)"),
    ("def f(n):\n    return f(n + 1)\nf(0)", "RecursionError: maximum recursion depth exceeded"),
    ("def (:", "SyntaxError: invalid syntax (at hx_imp_syntax.py:4)"),
    ("import not_a_module_xyz", "No module named 'not_a_module_xyz' (at hx_imp_missing.py:4)"),
], ids=["raise", "exit", "recursion", "syntax", "missing"])
def test_user_module_failing_at_import_is_exit_2_naming_its_line(tmp_path, top, says):
    name = "hx_imp_" + {"raise": "raise", "sys.": "exit", "def f": "rec", "def (": "syntax",
                        "impor": "missing"}[next(k for k in ("raise", "sys.", "def f", "def (", "impor")
                                                 if top.startswith(k))]
    p = user_spec(tmp_path, name, top=top)
    err = refused("probe-lr", "--config", p, says=says)
    if "Recursion" in says:
        assert f"{name}.py:5" in err               # the recursing line, not a frame of the importer


def test_a_constructor_calling_sys_exit_is_exit_2(tmp_path):
    p = user_spec(tmp_path, "hx_init_exit", init="sys.exit(0)")
    refused("full-report", "--config", p, "-q", says="Net() failed: it calls sys.exit(0) (at hx_init_exit.py:9)")


@pytest.mark.parametrize("command", ["full-report", "probe-lr"])
def test_a_forward_calling_sys_exit_is_m200_naming_the_line(tmp_path, command):
    p = user_spec(tmp_path, f"hx_fwd_exit_{command[:4]}", fwd="sys.exit(0)")
    code, out, err, took = cli(command, "--config", p, "-q")
    assert code == 1, (out, err)
    assert "M200" in out and "it calls sys.exit(0)" in out and f"hx_fwd_exit_{command[:4]}.py:13" in out
    assert "Healthy" not in out and took < 3 * FAST_S


def test_a_forward_exiting_on_its_second_call_is_m200(tmp_path):
    """The build's shape forward passes; the second (the size check before the probes) exits."""
    p = user_spec(tmp_path, "hx_fwd_nth", fwd="self.calls = getattr(self, 'calls', 0) + 1\n"
                                               "        if self.calls == 2:\n            sys.exit(0)")
    code, out, _, _ = cli("probe-lr", "--config", p, "-q")
    assert code == 1 and "M200" in out and "a second forward pass fails: it calls sys.exit(0)" in out
    code, out, _, _ = cli("check-data", "--config", p, "-q")          # sized for D111 only: no size, no crash
    assert code in (0, 1) and "Traceback" not in out


def test_a_forward_returning_none_on_its_second_call_is_m200(tmp_path):
    p = user_spec(tmp_path, "hx_fwd_none2", fwd="self.calls = getattr(self, 'calls', 0) + 1\n"
                                                 "        if self.calls == 2:\n            return None")
    code, out, _, _ = cli("full-report", "--config", p, "-q")
    assert code == 1 and "M200" in out and "a second forward pass returns NoneType" in out


def test_a_forward_recursing_forever_is_m200(tmp_path):
    p = user_spec(tmp_path, "hx_fwd_rec", fwd="return self.forward(x)")
    code, out, _, _ = cli("probe-lr", "--config", p, "-q")
    assert code == 1 and "M200" in out and "RecursionError" in out and "hx_fwd_rec.py:13" in out


def test_a_training_step_calling_sys_exit_is_g408(tmp_path, one_thread):
    p = user_spec(tmp_path, "hx_step_exit", with_step=True, step="sys.exit(0)")
    code, out, err, _ = cli("full-report", "--config", p, "-q", "--budget", "30")
    assert code == 1, (out, err)
    assert "G408" in out and "SystemExit" in out and "hx_step_exit.py:19" in out


# ---- 5. output paths, before the work -------------------------------------------------------------

def test_o_pointing_at_a_folder_is_refused_before_anything_is_printed(tmp_path):
    code, out, err, took = cli("check-data", WINE, "--target", "label", "-o", tmp_path)
    assert code == 2 and out == "" and "is a folder" in err and took < FAST_S


@pytest.mark.parametrize("option", ["-o", "--junit-xml", "--write-fixed"])
def test_unwritable_outputs_are_refused_before_any_probe(tmp_path, option):
    p = write(tmp_path, good_yaml())
    t0 = time.perf_counter()
    for bad, says in ((tmp_path / "missing" / "x.txt", "does not exist"), (tmp_path, "is a folder"),
                      (Path("/proc/nn_doctor_x.txt"), "cannot write there"), (p, "is an input")):
        code, out, err, _ = cli("full-report", "--config", p, "-q", option, bad)
        assert code == 2 and out == "" and says in err, (bad, err)
    assert time.perf_counter() - t0 < FAST_S        # no probe ran: four refusals in seconds
    assert not (tmp_path / "missing").exists()


def test_two_options_naming_one_file_are_refused(tmp_path):
    refused("check-data", WINE, "--target", "label", "-o", tmp_path / "r.txt", "--junit-xml", tmp_path / "r.txt",
            says="name the same file")
    assert not (tmp_path / "r.txt").exists()        # the writability check leaves no file behind


# ---- the entry point itself -----------------------------------------------------------------------

def test_the_entry_point_answers_hostile_input_in_one_line(tmp_path):
    """The real process (not the in-process runner): exit 2, one stderr line, no traceback."""
    p = write(tmp_path, good_yaml() + "extra: " + "[" * 1000 + "]" * 1000 + "\n")
    res = subprocess.run([sys.executable, "-m", "nn_doctor", "probe-lr", "--config", str(p)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "depth limit" in res.stderr


def test_the_last_resort_handler_says_one_line_and_exit_2(tmp_path):
    script = textwrap.dedent("""
        import nn_doctor.cli as cli
        def boom(*a, **k):
            raise ZeroDivisionError("unexpected")
        cli.app = boom
        cli.main()
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and "internal error: ZeroDivisionError: unexpected" in res.stderr
    assert "please report" in res.stderr


def test_a_model_that_does_not_build_is_reported_once_in_full_report(tmp_path):
    # model_builds decides M200; the static step-2 checks that still run afterwards must not repeat it
    layers = [{"type": "linear", "out": 8, "kernel": 3}, {"type": "relu"}, {"type": "linear", "out": 3}]
    p = write(tmp_path, good_yaml(**{"model.layers": layers}), "kw.yaml")
    code, out, err, took = cli("full-report", "--config", p, "--format", "json")
    import json
    codes = [f["code"] for f in json.loads(out)["findings"]]
    assert code == 1 and codes.count("M200") == 1, codes
