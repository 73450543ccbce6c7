"""Benchmark: what the probe's instruments cost on the transformer config (configs/copy_transformer.yaml).

    /work/venv/bin/python benchmarks/bench_transformer.py [--device cpu|cuda] [--steps 300] [--repeat 5]

Same model (same seed), optimizer, lr schedule, device tensors and batch order in every run:
    - bare: a hand-written loop (forward, loss, zero_grad, backward, step, scheduler step) with the thread
      count and denormal flushing the probe chooses;
    - probe without hooks (instrument=False);
    - probe with hooks at the default cadence (record_every=25: per-layer statistics and the per-head
      attention entropy of every attention module on recorded steps), no validation passes.
Each figure is the best of --repeat interleaved runs after a warm-up run of each. Goal: hooks at the
default cadence <= 1.10 x bare.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from nn_doctor.data import load_from_spec, prepare_arrays
from nn_doctor.model import build_scheduler, resolve_device
from nn_doctor.probe import (SINGLE_THREAD_WORK, DeviceData, ProbeSettings, _work_per_step, build_for_probe, run_probe,
                             targets_for_loss)
from nn_doctor.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.10


def bare(spec, dd, steps: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model, loss_fn, opt = build_for_probe(spec, dd, seed)
    X, y, _, _ = dd.view(spec.data.normalize, spec.data.normalize_target)
    n, bs = len(X), min(spec.training.batch_size, len(X))
    sched = build_scheduler(spec.optimizer, opt, spec.training.epochs * math.ceil(n / bs))
    gen = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=gen).to(dd.device), 0
    model.train()
    if dd.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen).to(dd.device), 0
        idx = perm[pos:pos + bs]
        pos += bs
        out = model(X[idx])
        loss = loss_fn(out, targets_for_loss(y[idx], spec.loss.name, dd.task, out.shape[-1]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    if dd.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def probe(spec, dd, steps: int, instrument: bool) -> float:
    rec = run_probe(spec, dd, ProbeSettings(steps=steps, eval_every=0, record_every=25, instrument=instrument,
                                            stop_on_divergence=False))
    assert rec.error is None, rec.error
    return rec.step_time_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--config", default=str(ROOT / "configs" / "copy_transformer.yaml"))
    a = ap.parse_args()
    spec = load_spec(a.config)
    dd = DeviceData(prepare_arrays(load_from_spec(spec)), resolve_device(a.device))
    threads = torch.get_num_threads()
    single = dd.device.type == "cpu" and _work_per_step(spec, dd, ProbeSettings()) < SINGLE_THREAD_WORK
    runs = {"bare": [], "probe, no hooks": [], "probe, hooks every 25": []}
    for r in range(a.repeat + 1):
        if single:
            torch.set_num_threads(1)
        torch.set_flush_denormal(True)
        b = bare(spec, dd, a.steps)
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
        p0 = probe(spec, dd, a.steps, False)
        p1 = probe(spec, dd, a.steps, True)
        if r:   # the first round warms up
            runs["bare"].append(b)
            runs["probe, no hooks"].append(p0)
            runs["probe, hooks every 25"].append(p1)
    best = {k: min(v) for k, v in runs.items()}
    print(f"{Path(a.config).name} on {dd.device}, {a.steps} steps, best of {a.repeat}")
    for k, v in best.items():
        print(f"  {k:24s} {v * 1e3:7.2f} ms/step  {v / best['bare']:.3f}x bare")
    ratio = best["probe, hooks every 25"] / best["bare"]
    print(f"hooks at the default cadence: {ratio:.3f}x bare (goal <= {GOAL:.2f}x): {'met' if ratio <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
