"""Benchmark: the cost of nn_doctor.Monitor on a real training loop, as a ratio to the same loop without it.

    /work/venv/bin/python benchmarks/bench_monitor.py [--steps 1000] [--repeat 7] [--every 10]
                                                      [--device cpu|cuda] [--threads 1] [--only NAME]

Three loops on the sample data, each the plain PyTorch loop a user writes (zero_grad, forward,
cross-entropy, backward, Adam step), over the same precomputed minibatches:

- wine-mlp:   13-64-3 MLP, batch 32 (standardized wine): the smallest realistic step, so the worst case
              for a relative overhead;
- digits-mlp: 64-256-256-10 MLP, batch 64 (digits as 64 features);
- digits-cnn: the configs/digits_cnn.yaml conv net (conv16-relu-pool-conv32-relu-avgpool-linear), batch 64.

One repetition runs the plain loop and the monitored loop (`with Monitor(model, opt, every=E): ...
mon.step(loss)` after optimizer.step()), in alternating order from one repetition to the next so drift on a
busy machine hits both alike, each from the same seeded initialisation. The ratio of a repetition is
monitored wall time / plain wall time; the figure reported is the median ratio over --repeat repetitions
(goal <= 1.10), with the min and max, and the median ratio of process CPU time (on a CPU device with one
thread, what the loop would take on an idle machine: other processes on a busy one move wall times by
+-30%). report() is timed separately (it runs once, after training).
On CUDA the loop ends with a synchronize; the Monitor then reads the losses back every `every` steps.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from nn_doctor.monitor import Monitor  # noqa: E402

SAMPLES = ROOT.parent / "sample_data"
GOAL_RATIO = 1.10


def workloads(device: torch.device):
    wine = pd.read_csv(SAMPLES / "wine.csv")
    X = torch.tensor(wine.drop(columns="label").to_numpy(), dtype=torch.float32)
    X = (X - X.mean(0)) / X.std(0)
    y = torch.tensor(wine["label"].to_numpy())
    d = np.load(SAMPLES / "digits.npz")
    DX = torch.tensor(d["X"], dtype=torch.float32).reshape(len(d["X"]), 1, 8, 8) / 16
    Dy = torch.tensor(d["y"]).long()

    def wine_mlp():
        return nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 3))

    def digits_mlp():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 10))

    def digits_cnn():
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(32, 10))

    return {"wine-mlp": (wine_mlp, X.to(device), y.to(device), 32),
            "digits-mlp": (digits_mlp, DX.to(device), Dy.to(device), 64),
            "digits-cnn": (digits_cnn, DX.to(device), Dy.to(device), 64)}


def run(make, X, y, batches, every: int | None, device: torch.device):
    """One training run over `batches`; returns (wall seconds, CPU seconds, monitor or None)."""
    torch.manual_seed(0)
    model = make().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = Monitor(model, opt, every=every) if every else None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    if mon is not None:
        mon.attach()
    for idx in batches:
        opt.zero_grad()
        loss = F.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
        if mon is not None:
            mon.step(loss)
    if mon is not None:
        mon.detach()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0, mon


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--only", default=None, help="run one workload (wine-mlp, digits-mlp, digits-cnn)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", {torch.get_num_threads()} CPU threads, {a.steps} steps x {a.repeat} repetitions, every={a.every}")
    print(f"{'loop':12s} {'plain ms/step':>14s} {'monitored':>10s} {'ratio (median)':>15s} {'min':>6s} {'max':>6s}"
          f" {'CPU ratio':>10s} {'records':>8s} {'interval':>8s} {'report s':>9s}")
    worst = worst_cpu = 0.0
    for name, (make, X, y, bs) in workloads(device).items():
        if a.only and name != a.only:
            continue
        gen = torch.Generator().manual_seed(0)
        batches = [torch.randint(0, len(X), (bs,), generator=gen).to(device) for _ in range(a.steps)]
        run(make, X, y, batches[:50], None, device)           # warm-up (allocator, kernels, first hooks)
        run(make, X, y, batches[:50], a.every, device)
        plain, monitored, ratios, cpu_ratios = [], [], [], []
        mon = None
        for r in range(a.repeat):
            order = (None, a.every) if r % 2 == 0 else (a.every, None)
            times, cpus = {}, {}
            for every in order:
                t, c, m = run(make, X, y, batches, every, device)
                times[every], cpus[every] = t, c
                mon = m or mon
            plain.append(times[None])
            monitored.append(times[a.every])
            ratios.append(times[a.every] / times[None])
            cpu_ratios.append(cpus[a.every] / cpus[None])
        t0 = time.perf_counter()
        report = mon.report()
        rep_s = time.perf_counter() - t0
        ratio = statistics.median(ratios)
        cpu_ratio = statistics.median(cpu_ratios)
        worst = max(worst, ratio)
        worst_cpu = max(worst_cpu, cpu_ratio)
        rec = report.probes["monitor"]
        print(f"{name:12s} {statistics.median(plain) / a.steps * 1e3:14.3f} "
              f"{statistics.median(monitored) / a.steps * 1e3:10.3f} {ratio:15.3f} {min(ratios):6.3f} "
              f"{max(ratios):6.3f} {cpu_ratio:10.3f} {rec['records']:8d} {rec['record_interval']:8d} {rep_s:9.3f}")
    print(f"worst median wall ratio {worst:.3f}, CPU-time ratio {worst_cpu:.3f} (goal <= {GOAL_RATIO:.2f}): "
          f"{'ok' if worst <= GOAL_RATIO else 'ABOVE GOAL'}")


if __name__ == "__main__":
    main()
