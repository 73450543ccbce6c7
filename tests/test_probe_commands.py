"""probe-lr and probe-init end to end: the issue's "done when", through nn_doctor.doctor (in-process) and
through the CLI (subprocess, for exit codes and Ctrl-C).

Specs are the bundled configs/ with one change each, written to a temporary YAML; every probe runs on the
CPU with the spec's seed, so each case is reproducible.
"""
from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from nn_doctor import lr_search as L
from nn_doctor.data import load_from_spec, prepare_arrays
from nn_doctor.doctor import LR_PROBE_STEPS, Options, probe_init, probe_lr
from nn_doctor.probe import DeviceData, ProbeSettings, run_probe
from nn_doctor.render import render
from nn_doctor.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TIMING_KEYS = {"timing", "wall_s", "step_time_s", "total_s"}


def write_spec(tmp_path: Path, name: str, base: str = "wine", **changes) -> str:
    """configs/<base>.yaml with dotted changes ("optimizer.lr": 1.0), data path made absolute."""
    raw = yaml.safe_load((CONFIGS / f"{base}.yaml").read_text())
    raw["data"]["path"] = str((CONFIGS / raw["data"]["path"]).resolve())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def lr_of(tmp_path, lr: float, **options):
    return probe_lr(Options(config=write_spec(tmp_path, f"lr{lr:g}", **{"optimizer.lr": lr}), quiet=True, **options))


def codes(report) -> list[str]:
    return [f.code for f in report.findings]


def probe_at(config: str, lr: float, seed: int = 0, steps: int = LR_PROBE_STEPS):
    """One probe of the spec at `lr`, as the doctor runs it (same data split, same seed)."""
    spec = load_spec(config).with_overrides(**{"optimizer.lr": lr, "training.seed": seed})
    data = DeviceData(prepare_arrays(load_from_spec(spec, seed=seed)), torch.device("cpu"))
    return run_probe(spec, data, ProbeSettings(steps=steps, seed=seed, eval_every=0, record_every=0))


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


# ---- the lr ---------------------------------------------------------------------------------------

def test_lr_too_high_is_h300_with_a_recommendation_that_converges(tmp_path):
    report = lr_of(tmp_path, 1.0)
    assert "H300" in codes(report) and "H301" not in codes(report)
    lr = report.probes["lr"]
    assert lr["configured_status"] == "diverged"
    rec = lr["recommended"]
    assert rec is not None and 1e-4 <= rec <= 0.1, lr
    h300 = next(f for f in report.findings if f.code == "H300")
    assert h300.patch == {"optimizer.lr": rec}
    assert report.exit_code("error") == 1
    # the recommendation really trains: an independent probe at it converges
    assert L.classify(probe_at(report.inputs["config"], rec)) == L.WORKING


def test_lr_too_low_is_h301(tmp_path):
    report = lr_of(tmp_path, 1e-6)
    assert "H301" in codes(report) and "H300" not in codes(report)
    lr = report.probes["lr"]
    assert lr["configured_status"] == "too-slow"
    assert lr["recommended"] >= 1e-3
    assert next(f for f in report.findings if f.code == "H301").patch == {"optimizer.lr": lr["recommended"]}


def test_healthy_wine_raises_no_lr_or_init_finding():
    cfg = str(CONFIGS / "wine.yaml")
    lr = probe_lr(Options(config=cfg, quiet=True))
    init = probe_init(Options(config=cfg, quiet=True, steps=60))
    assert not {"H300", "H301"} & set(codes(lr)), [f.message for f in lr.findings]
    assert "M204" not in codes(init)
    assert lr.probes["lr"]["configured_status"] == L.WORKING
    assert lr.exit_code("error") == 0 and init.exit_code("error") == 0


# ---- init -------------------------------------------------------------------------------------------

def test_zero_init_is_m204(tmp_path):
    report = probe_init(Options(config=write_spec(tmp_path, "zeros", **{"model.init": "zeros"}), quiet=True,
                                steps=60))
    assert "M204" in codes(report)
    variants = {v["init"]: v for v in report.probes["init"]["variants"]}
    assert variants["zeros"]["configured"] and report.probes["init"]["best"] != "zeros"


def test_deep_sigmoid_net_measures_xavier_against_he(tmp_path):
    """Ten linear layers with sigmoids between them. He's weights are sqrt(2) larger than Xavier's
    (square layers), so at init every layer's output spreads more and less of the gradient vanishes on
    the way back to the first layer."""
    layers = [{"type": "linear", "out": 32}, {"type": "sigmoid"}] * 9 + [{"type": "linear", "out": 3}]
    cfg = write_spec(tmp_path, "sigmoid10", **{"model.layers": layers, "model.init": "xavier"})
    report = probe_init(Options(config=cfg, quiet=True, steps=40))
    variants = {v["init"]: v for v in report.probes["init"]["variants"]}
    assert {"xavier", "he"} <= set(variants) and variants["xavier"]["configured"]
    xavier, he = variants["xavier"]["layers"], variants["he"]["layers"]
    assert [x["layer"] for x in xavier] == [h["layer"] for h in he] and len(he) == 10
    for x, h in zip(xavier, he):
        assert h["act_std"] > x["act_std"], (x, h)
        assert h["grad_norm"] > x["grad_norm"], (x, h)
    # the gradient vanishes towards the input under both (sigmoid' <= 1/4 per layer), less under he
    assert xavier[0]["grad_norm"] < 1e-3 * xavier[-1]["grad_norm"]
    assert he[0]["grad_norm"] / he[-1]["grad_norm"] > xavier[0]["grad_norm"] / xavier[-1]["grad_norm"]


# ---- determinism and other architectures -----------------------------------------------------------

def test_same_seed_gives_the_same_json_apart_from_timings(tmp_path):
    cfg = write_spec(tmp_path, "lr1", **{"optimizer.lr": 1.0})
    a, b = (json.loads(render(probe_lr(Options(config=cfg, quiet=True, steps=80)), "json")) for _ in range(2))
    assert "timing" in a
    assert without_timings(a) == without_timings(b)


@pytest.mark.parametrize("config", ["digits_cnn", "digits_lstm"])
def test_conv_and_lstm_specs_build_and_probe(config):
    report = probe_lr(Options(config=str(CONFIGS / f"{config}.yaml"), quiet=True, steps=40))
    assert "M200" not in codes(report)
    tried = report.probes["lr"]["tried"]
    assert len(tried) >= 4 and all(t["error"] is None for t in tried), tried
    assert all(t["steps"] == 40 for t in tried if t["stopped"] == "completed")
    assert any(t["status"] == L.WORKING for t in tried)
    assert report.probes["lr"]["recommended"] is not None


# ---- the recommendation is stable (report.md guarantee) --------------------------------------------

def test_recommendation_is_stable_across_seeds_and_beats_a_tenth_of_it():
    cfg = str(CONFIGS / "wine.yaml")
    recs = {}
    for seed in (0, 1, 2):
        rec = probe_lr(Options(config=cfg, quiet=True, seed=seed)).probes["lr"]["recommended"]
        assert rec is not None
        recs[seed] = rec
        at, tenth = probe_at(cfg, rec, seed), probe_at(cfg, rec / 10, seed)
        assert at.final_loss <= tenth.final_loss, (seed, rec, at.final_loss, tenth.final_loss)
        assert at.metrics["accuracy"] >= tenth.metrics["accuracy"], (seed, rec, at.metrics, tenth.metrics)
    assert max(recs.values()) <= 2 * min(recs.values()), recs


# ---- the command line: exit codes and Ctrl-C ---------------------------------------------------------

SCRIPT = Path(sys.executable).with_name("nn-doctor")    # the installed console script (editable install)


def cli(*args: str) -> list[str]:
    """The `nn-doctor` command as a user runs it (python -m nn_doctor when no script is installed)."""
    return [str(SCRIPT), *args] if SCRIPT.exists() else [sys.executable, "-m", "nn_doctor", *args]


def test_cli_exit_codes(tmp_path):
    cfg = write_spec(tmp_path, "lr1", **{"optimizer.lr": 1.0})
    run = subprocess.run(cli("probe-lr", "--config", cfg, "--format", "json", "--quiet", "--steps", "60"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    out = json.loads(run.stdout)
    assert [f["code"] for f in out["findings"]] == ["H300"] and out["verdict"] == "unhealthy"
    assert out["probes"]["lr"]["recommended"] is not None
    bad = subprocess.run(cli("probe-lr", "--config", str(tmp_path / "missing.yaml")), capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def _default_sigint() -> None:
    """A child of a suite started in the background (`pytest &`) inherits SIGINT ignored, as POSIX shells set
    it for asynchronous commands: the test sends the signal, so the child must hear it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_with_a_partial_report(tmp_path):
    """SIGINT while the probes run: exit 130, the report on stdout, no traceback.

    The signal is sent once the first probe has finished (the progress bar, on a pseudo-terminal, shows
    1/N). Earlier, the first optimizer's lazy import of torch._dynamo runs ~4,000 exec()'d snippets, and a
    KeyboardInterrupt passing through exec'd code leaves CPython's "unhandled KeyboardInterrupt" flag set
    even after nn-doctor catches it; under `python -m nn_doctor` the interpreter then ends by SIGINT
    (returncode -2, shell status still 130) after printing the report (CPython gh-128130)."""
    cfg = write_spec(tmp_path, "long", **{"optimizer.lr": 1e-3})
    master, slave = pty.openpty()          # stderr on a terminal: the progress bar shows how far the probes got
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    proc = subprocess.Popen(cli("probe-lr", "--config", cfg, "--format", "json", "--steps", "5000"),
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env,
                            preexec_fn=_default_sigint)
    os.close(slave)
    seen = bytearray()

    def drain() -> None:                   # keep reading, so the child never blocks on a full terminal
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    first_done = re.compile(rb"(?<![\d/])[1-9]\d*/[1-9]\d*")      # "1/5": a probe has finished
    try:
        deadline = time.monotonic() + 180
        while not (b"lr probes" in seen and first_done.search(bytes(seen))):
            assert proc.poll() is None, f"exited before a probe finished: {bytes(seen)[-500:]!r}"
            assert time.monotonic() < deadline, f"no progress: {bytes(seen)[-500:]!r}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        os.close(master)
    err = bytes(seen).decode("utf-8", "replace")
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    report = json.loads(stdout)
    assert report["interrupted"] is True and report["command"] == "probe-lr"
    assert report["steps"] and report["environment"]["device"]   # cpu here, cuda on a GPU machine
