"""Benchmark: what the probe loop's instruments cost, and `probe-lr` against torch-lr-finder's range test.

    /work/venv/bin/python benchmarks/bench_probe.py [--device auto|cpu|cuda|cpu,cuda] [--steps 1000]
                                                    [--repeat 5] [--epochs 10] [--seeds 0,1,2]

Model and data, the same in every measurement: an MLP 64-64 (ReLU) on the 8x8 digits flattened to 64
features (1,797 images, 10 classes; 20% stratified validation split, seed 0), standardized per feature,
cross-entropy, Adam, batch 64. The flattened copy of sample_data/digits.npz and the spec go to
benchmarks/out/ (git-ignored).

(a) Step time, on the same model (same seed), optimizer, device tensors and batch order:
    - bare: a hand-written loop (forward, loss, zero_grad, backward, step), with the thread count and
      denormal flushing the probe chooses, so that only the probe's own work differs;
    - probe runs (nn_doctor.probe.run_probe) without hooks, with hooks at the default cadence
      (record_every=25) and with hooks on every step (record_every=1), all without validation passes,
      then the probe's defaults (hooks and validation loss every 25 steps).
    Each is the best of --repeat interleaved runs, after one warm-up run of each (the first optimizer
    construction imports torch._dynamo, ~2 s). Goal: hooks at the default cadence <= 1.10 x bare.
(b) `probe-lr` (nn_doctor.doctor.probe_lr, the whole command in-process: spec, data, probes, checks)
    against torch-lr-finder's default range test: LRFinder(model, Adam(lr=1e-7), CrossEntropyLoss())
    .range_test(loader, end_lr=10, num_iter=100) (exp mode, smooth_f 0.05, diverge_th 5) on a shuffled
    DataLoader of the same standardized training rows, suggestion = the lr at the steepest descent of the
    smoothed loss after trimming skip_start=10 and skip_end=5 points (as its plot() does). Reported: the
    optimizer steps each takes, wall time (best of --repeat), and the validation loss and accuracy after
    --epochs epochs of plain training at each tool's lr (and at the spec's lr 1e-3 for reference), from
    the same initial weights and batch order, averaged over --seeds.
    Goals: probe-lr's wall time <= 2 x the range test's; its lr trains at least as well (mean validation
    loss no higher).

Threads: on the CPU the probes of a model this small run on one thread (nn_doctor.probe.SINGLE_THREAD_WORK);
the range test, the bare loop and the trainings here run on that same thread count, so that the figures
compare the work and not OpenMP's fork/join on a busy machine (measured here, 2 cores shared with other
jobs: the same 86-step range test took 0.6 s on one thread and 4.4 s on two).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from nn_doctor import probe as P  # noqa: E402
from nn_doctor.data import load_from_spec, prepare_arrays  # noqa: E402
from nn_doctor.doctor import Options, probe_lr  # noqa: E402
from nn_doctor.spec import load_spec  # noqa: E402

OUT = ROOT / "out"
GOAL_OVERHEAD = 1.10        # (a) instrumented probe step <= 1.10 x the bare loop's, at the default cadence
GOAL_COST = 2.0             # (b) probe-lr wall time <= 2 x the range test's
FINDER_START_LR = 1e-7      # torch-lr-finder's README: the optimizer's lr is the start of the range
FINDER_END_LR, FINDER_ITERS = 10.0, 100
SKIP_START, SKIP_END = 10, 5
try:
    import torch_lr_finder  # noqa: F401
    HAVE_FINDER = True
except ImportError:         # e.g. a GPU machine without it: the same algorithm, inline (see inline_range_test)
    HAVE_FINDER = False


# ---- model and data ---------------------------------------------------------------------------------

def write_inputs(device: str) -> Path:
    """benchmarks/out/digits_flat.npz (N, 64) and a spec for the MLP on it; returns the spec path."""
    OUT.mkdir(parents=True, exist_ok=True)
    npz = OUT / "digits_flat.npz"
    if not npz.exists():
        d = np.load(ROOT.parent / "sample_data" / "digits.npz")
        np.savez(npz, X=d["X"].reshape(len(d["X"]), -1).astype(np.float32), y=d["y"])
    spec = {
        "task": "classification",
        "data": {"path": str(npz), "target": "y", "normalize": "standardize"},
        "model": {"layers": [{"type": "linear", "out": 64}, {"type": "relu"},
                             {"type": "linear", "out": 64}, {"type": "relu"},
                             {"type": "linear", "out": 10}]},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"batch_size": 64, "epochs": 10, "seed": 0, "device": device},
    }
    path = OUT / f"bench_digits_mlp_{device.replace(':', '')}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def probe_threads(spec, data, settings):
    """The thread count and denormal flushing run_probe uses, for the hand-written loops."""
    before = torch.get_num_threads()
    if data.device.type == "cpu" and P._work_per_step(spec, data, settings) < P.SINGLE_THREAD_WORK:
        torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(before)


def batches(n: int, bs: int, seed: int, device: torch.device):
    """The probe's batch order: a permutation per epoch from a generator seeded with the seed."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=gen).to(device)
        for pos in range(0, n - bs + 1, bs):
            yield perm[pos:pos + bs]


def bare_loop(spec, data, steps: int, seed: int = 0) -> float:
    """Seconds per step of the plain loop on the probe's model, optimizer, tensors and batches."""
    with torch.random.fork_rng(devices=[]):
        model, loss_fn, opt = P.build_for_probe(spec, data, seed)
    X, y, _, _ = data.view(spec.data.normalize, spec.data.normalize_target)
    order = batches(len(X), min(spec.training.batch_size, len(X)), seed, data.device)
    model.train()
    sync(data.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = next(order)
        loss = loss_fn(model(X[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(data.device)
    return (time.perf_counter() - t0) / steps


# ---- (a) step time ----------------------------------------------------------------------------------

def step_times(spec, data, steps: int, repeat: int) -> tuple[dict[str, float], int]:
    variants = {
        "probe, no hooks": P.ProbeSettings(steps=steps, instrument=False, record_every=0, eval_every=0),
        "probe, hooks every 25 steps (default)": P.ProbeSettings(steps=steps, instrument=True, eval_every=0),
        "probe, hooks every step": P.ProbeSettings(steps=steps, instrument=True, record_every=1, eval_every=0),
        "probe defaults (+ val loss every 25)": P.ProbeSettings(steps=steps),
    }
    best: dict[str, float] = {}
    with probe_threads(spec, data, variants["probe, no hooks"]) as threads:
        bare_loop(spec, data, 20)                               # warm-up
    for s in variants.values():
        P.run_probe(spec, data, P.ProbeSettings(**{**s.__dict__, "steps": 20}))
    for _ in range(repeat):                                     # interleaved: drift hits every variant alike
        with probe_threads(spec, data, variants["probe, no hooks"]):
            t = bare_loop(spec, data, steps)
        best["bare loop"] = min(best.get("bare loop", math.inf), t)
        for name, s in variants.items():
            rec = P.run_probe(spec, data, s)
            assert rec.error is None and rec.steps_run == steps, (name, rec.error, rec.stopped)
            best[name] = min(best.get(name, math.inf), rec.step_time_s)
    return best, threads


# ---- (b) probe-lr against the range test ------------------------------------------------------------

def finder_suggestion(history: dict) -> float | None:
    """torch-lr-finder's plot(suggest_lr=True): trim, then the lr at the most negative np.gradient."""
    lrs, losses = history["lr"], history["loss"]
    if len(lrs) < SKIP_START + SKIP_END + 2:
        return None
    lrs, losses = lrs[SKIP_START:-SKIP_END], losses[SKIP_START:-SKIP_END]
    return float(lrs[int(np.gradient(np.array(losses)).argmin())])


def inline_range_test(model, opt, criterion, loader, device: torch.device) -> dict:
    """torch-lr-finder's range_test with its defaults, for a machine where the package is not installed:
    lr_i = start * (end / start) ** (i / (num_iter - 1)), one batch per iteration (the loader restarted
    when exhausted), loss smoothed as s_i = 0.05 * loss_i + 0.95 * s_(i-1), stop once s_i > 5 x best."""
    start = opt.param_groups[0]["lr"]
    history: dict[str, list] = {"lr": [], "loss": []}
    it, best = iter(loader), None
    for i in range(FINDER_ITERS):
        lr = start * (FINDER_END_LR / start) ** (i / (FINDER_ITERS - 1))
        for g in opt.param_groups:
            g["lr"] = lr
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        model.train()
        opt.zero_grad()
        loss = criterion(model(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
        loss.backward()
        opt.step()
        value = loss.item()
        if i == 0:
            best = value
        else:
            value = 0.05 * value + 0.95 * history["loss"][-1]
            best = min(best, value)
        history["lr"].append(lr)
        history["loss"].append(value)
        if value > 5 * best:
            break
    return history


def range_test(spec, data, seed: int = 0) -> tuple[float | None, int, float]:
    from torch.utils.data import DataLoader, TensorDataset
    t0 = time.perf_counter()
    X, y, _, _ = data.view(spec.data.normalize, spec.data.normalize_target)
    loader = DataLoader(TensorDataset(X.cpu(), y.cpu()), batch_size=spec.training.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    with torch.random.fork_rng(devices=[]):
        model, _, _ = P.build_for_probe(spec, data, seed)
    opt = torch.optim.Adam(model.parameters(), lr=FINDER_START_LR)
    criterion = torch.nn.CrossEntropyLoss()
    if HAVE_FINDER:
        from torch_lr_finder import LRFinder
        finder = LRFinder(model, opt, criterion, device=data.device)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # tqdm, prints
            finder.range_test(loader, end_lr=FINDER_END_LR, num_iter=FINDER_ITERS)
        history = finder.history
        finder.reset()
    else:
        history = inline_range_test(model, opt, criterion, loader, data.device)
    suggestion = finder_suggestion(history)
    sync(data.device)
    return suggestion, len(history["lr"]), time.perf_counter() - t0


def run_probe_lr(config: Path, device: str) -> tuple[float | None, int, float, list]:
    t0 = time.perf_counter()
    report = probe_lr(Options(config=str(config), quiet=True, device=device))
    wall = time.perf_counter() - t0
    lr = report.probes["lr"]
    steps = sum(t["steps"] for t in lr["tried"])
    return lr["recommended"], steps, wall, [(t["lr"], t["status"]) for t in lr["tried"]]


def train(spec, data, lr: float, epochs: int, seed: int) -> tuple[float, float]:
    """Plain training for `epochs` epochs at `lr` from the probe's seeded weights and batch order; the
    full validation loss and accuracy at the end."""
    spec = spec.with_overrides(**{"optimizer.lr": lr})
    with torch.random.fork_rng(devices=[]):
        model, loss_fn, opt = P.build_for_probe(spec, data, seed)
    X, y, Xv, yv = data.view(spec.data.normalize, spec.data.normalize_target)
    bs = min(spec.training.batch_size, len(X))
    order = batches(len(X), bs, seed, data.device)
    model.train()
    for _ in range(epochs * (len(X) // bs)):
        idx = next(order)
        loss = loss_fn(model(X[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(Xv)
        val = F.cross_entropy(out, yv).item()
        acc = (out.argmax(-1) == yv).float().mean().item()
    return (val if math.isfinite(val) else math.inf), acc


# ---- report -----------------------------------------------------------------------------------------

def bench_device(device: str, args) -> dict:
    config = write_inputs(device)
    spec = load_spec(config)
    data = P.DeviceData(prepare_arrays(load_from_spec(spec)), torch.device(device))
    name = torch.cuda.get_device_name(data.device) if data.device.type == "cuda" else "CPU"
    print(f"\n=== {device} ({name}; torch {torch.__version__}, {torch.get_num_threads()} threads) ===")
    if not HAVE_FINDER:
        print("note: torch-lr-finder is not installed; its range test runs from the inline copy below")
    print(f"data: digits flattened, {len(data.arrays.X)} train / {len(data.arrays.X_val)} validation rows, "
          f"MLP 64-64-10, Adam, batch {spec.training.batch_size}")

    # (a) step time
    times, threads = step_times(spec, data, args.steps, args.repeat)
    bare = times["bare loop"]
    print(f"\n(a) step time, {args.steps} steps, best of {args.repeat}, {threads} thread(s)")
    print(f"  {'loop':40s} {'ms/step':>9s} {'x bare':>7s}")
    for k, v in times.items():
        print(f"  {k:40s} {v * 1e3:9.4f} {v / bare:7.3f}")
    overhead = times["probe, hooks every 25 steps (default)"] / bare

    # (b) probe-lr against the range test, and training at each lr
    with probe_threads(spec, data, P.ProbeSettings()):
        range_test(spec, data)                                         # warm-up (lazy imports)
        ours = min((run_probe_lr(config, device) for _ in range(args.repeat)), key=lambda r: r[2])
        theirs = min((range_test(spec, data) for _ in range(args.repeat)), key=lambda r: r[2])
        rec, rec_steps, rec_wall, tried = ours
        sug, sug_steps, sug_wall = theirs
        print(f"\n(b) lr search, wall time best of {args.repeat}, {threads} thread(s)")
        print(f"  probe-lr tried: {', '.join(f'{lr:g} {st}' for lr, st in tried)}")
        print(f"  {'tool':30s} {'lr':>8s} {'opt. steps':>10s} {'wall s':>7s}   after {args.epochs} epochs, mean "
              f"over seeds {','.join(map(str, args.seeds))}: val loss / val acc")
        rows = [("nn-doctor probe-lr", rec, rec_steps, rec_wall),
                ("torch-lr-finder range test", sug, sug_steps, sug_wall),
                ("configured lr (reference)", spec.optimizer.lr, None, None)]
        val: dict[str, float] = {}
        for tool, lr, steps, wall in rows:
            if lr is None:
                print(f"  {tool:30s} {'none':>8s}")
                continue
            runs = [train(spec, data, lr, args.epochs, seed) for seed in args.seeds]
            v, a = float(np.mean([r[0] for r in runs])), float(np.mean([r[1] for r in runs]))
            val[tool] = v
            print(f"  {tool:30s} {lr:8.3g} {'' if steps is None else steps:>10} "
                  f"{'' if wall is None else f'{wall:7.2f}':>7s}   {v:.4f} / {a:.4f}")

    cost = rec_wall / sug_wall
    ours_val, theirs_val = val.get("nn-doctor probe-lr", math.inf), val.get("torch-lr-finder range test", math.inf)
    goals = {
        f"(a) hooks at the default cadence <= {GOAL_OVERHEAD:.2f} x bare": (overhead <= GOAL_OVERHEAD, f"{overhead:.3f}x"),
        f"(b) probe-lr wall time <= {GOAL_COST:g} x range test": (
            cost <= GOAL_COST, f"{cost:.2f}x ({rec_steps} vs {sug_steps} optimizer steps)"),
        "(b) probe-lr's lr trains at least as well": (
            ours_val <= theirs_val, f"val loss {ours_val:.4f} vs {theirs_val:.4f}"),
    }
    print("\n  goals:")
    for goal, (met, figure) in goals.items():
        print(f"  [{'met' if met else 'NOT met'}] {goal}: {figure}")
    return goals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cpu, plus cuda when available), cpu, cuda, cpu,cuda")
    ap.add_argument("--steps", type=int, default=1000, help="steps per step-time measurement")
    ap.add_argument("--repeat", type=int, default=5, help="timings are the best of this many runs")
    ap.add_argument("--epochs", type=int, default=10, help="training epochs at each recommended lr")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the trainings at each recommended lr")
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "auto" \
        else args.device.split(",")
    for device in devices:
        bench_device(device, args)


if __name__ == "__main__":
    main()
