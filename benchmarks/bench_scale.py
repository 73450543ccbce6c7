"""Benchmark: the Ray executor (--executor ray) against the local one, measured in one run.

    /work/venv/bin/python benchmarks/bench_scale.py [--tiny 200] [--repeat 3] [--workers 1,2,4,8,16]

Needs the `ray` extra (pip install 'nn-doctor[ray]'). Each Ray figure uses a fresh local Ray started
with num_cpus = the worker count (a probe task asks for 1 CPU, so that many probes run at once).

1. Per-probe overhead: --tiny probes of a 13-32-3 MLP on wine, 5 steps each (a few ms of training), as one
   round, local vs Ray with 1 worker: (Ray wall - local wall) / n is what the executor adds per probe
   (submit, scheduling, pickling the spec and the record, result fetch). With 2+ workers the same round
   also runs in parallel. Fixed costs, paid once per command, are listed apart: starting a local Ray,
   making the executor (the data's ray.put, and a warm-up task per worker: a fresh worker imports torch
   and nn_doctor, seconds), the first round, and ray.shutdown.
2. Full report on a model whose probes take seconds: a 30-768-768-768-2 MLP on breast_cancer (adam;
   each 150-step lr probe ~1-3 s, the 300-step baseline ~3-5 s on one core of a 2-core machine), local
   vs Ray with 1, 2, 4, 8 and 16 workers, those above os.cpu_count() skipped (and said so). Probes this size run on
   one thread in both (probe.SINGLE_THREAD_WORK), so local is the serial sum and Ray packs them into
   its workers. The report is checked to be the local one (same first_fix and finding codes).
   A command's probes come in rounds that depend on each other, so
       wall ≈ Σ over rounds of ceil(probes in the round / workers) × probe time,
   at best Σ over rounds of the slowest probe of the round (printed as the "critical path").
3. With CUDA: the same report on the GPU, --gpus-per-probe 1, 0.5 and 0.25 (probes sharing a GPU).

Timings are wall clock on a shared machine: run it on an idle one for stable figures.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

import torch  # noqa: E402

from nn_doctor.data import load_dataset, prepare_arrays  # noqa: E402
from nn_doctor.doctor import Options, full_report  # noqa: E402
from nn_doctor.executor import LocalExecutor, ProbeTask  # noqa: E402
from nn_doctor.probe import DeviceData, ProbeSettings  # noqa: E402
from nn_doctor.spec import parse_spec  # noqa: E402

SAMPLES = ROOT.parent / "sample_data"
WORKERS = (1, 2, 4, 8, 16)
GPU_SHARES = (1.0, 0.5, 0.25)

TINY = {"task": "classification", "data": {"path": str(SAMPLES / "wine.csv"), "target": "label",
                                           "normalize": "standardize"},
        "model": {"layers": [{"type": "linear", "out": 32}, {"type": "relu"}, {"type": "linear", "out": 3}]},
        "loss": "cross_entropy", "optimizer": {"name": "adam", "lr": 0.003},
        "training": {"batch_size": 32, "epochs": 30, "seed": 0}}


def heavy_spec(width: int = 768, depth: int = 3, device: str = "cpu") -> dict:
    layers: list[dict] = []
    for _ in range(depth):
        layers += [{"type": "linear", "out": width}, {"type": "relu"}]
    layers.append({"type": "linear", "out": 2})
    return {"task": "classification",
            "data": {"path": str(SAMPLES / "breast_cancer.csv"), "target": "label", "normalize": "standardize"},
            "model": {"layers": layers, "init": "he"}, "loss": "cross_entropy",
            "optimizer": {"name": "adam", "lr": 0.001},
            "training": {"batch_size": 64, "epochs": 20, "seed": 0, "device": device}}


def write_spec(raw: dict, folder: str, name: str) -> str:
    import yaml
    path = os.path.join(folder, name)
    with open(path, "w") as fh:
        yaml.safe_dump(raw, fh)
    return path


# ---- rounds, as the doctor plans them --------------------------------------------------------------------
class RoundLog:
    """Wraps an executor class's run_round to log, per round: (probes, the slowest probe's wall, the sum of
    the probes' walls, the round's wall)."""

    def __init__(self, cls):
        self.cls, self.rounds = cls, []
        self.real = cls.run_round
        log = self

        def run_round(ex, tasks):
            t0 = time.perf_counter()
            recs = log.real(ex, tasks)
            wall = time.perf_counter() - t0
            walls = [r.wall_s for r in recs if r.stopped != "skipped"]
            if walls:
                log.rounds.append((len(walls), max(walls), sum(walls), wall))
            return recs
        cls.run_round = run_round

    def restore(self):
        self.cls.run_round = self.real


def report_run(config: str, executor: str, gpus: float | None = None):
    from nn_doctor.ray_executor import RayExecutor
    cls = RayExecutor if executor == "ray" else LocalExecutor
    log = RoundLog(cls)
    t0 = time.perf_counter()
    try:
        rep = full_report(Options(config=config, executor=executor, gpus_per_probe=gpus, budget=3600, quiet=True))
    finally:
        log.restore()
    return time.perf_counter() - t0, rep, log.rounds


def signature(rep) -> tuple:
    return rep.first_fix, tuple(f.code for f in rep.findings), rep.probes.get("lr", {}).get("recommended")


# ---- Ray -------------------------------------------------------------------------------------------------
def start_ray(num_cpus: int, num_gpus: int | None = None) -> float:
    import ray
    t0 = time.perf_counter()
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    return time.perf_counter() - t0


def stop_ray() -> float:
    import ray
    t0 = time.perf_counter()
    ray.shutdown()
    return time.perf_counter() - t0


def tiny_round(executor, spec, n: int, repeat: int = 1) -> float:
    """Wall of a round of n tiny probes: the best of `repeat` rounds."""
    best = math.inf
    for _ in range(repeat):
        tasks = [ProbeTask(key=i, spec=spec, settings=ProbeSettings(name=f"t{i}", steps=5, seed=0, eval_every=0,
                                                                    record_every=0, instrument=False))
                 for i in range(n)]
        t0 = time.perf_counter()
        recs = executor.run_round(tasks)
        best = min(best, time.perf_counter() - t0)
        assert all(r.stopped == "completed" for r in recs), [r.error for r in recs]
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", type=int, default=200, help="tiny probes for the overhead figure")
    ap.add_argument("--repeat", type=int, default=3, help="overhead rounds (the best counts)")
    ap.add_argument("--workers", default=",".join(map(str, WORKERS)), help="Ray worker counts to try")
    args = ap.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        sys.exit("bench_scale needs Ray: pip install 'nn-doctor[ray]'")
    from nn_doctor.ray_executor import RayExecutor

    cpus = os.cpu_count() or 1
    counts = [int(w) for w in args.workers.split(",")]
    run_counts = [w for w in counts if w <= cpus]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {cpus} CPUs (load {load:.1f}), torch {torch.__version__}, ray {ray.__version__}, "
          f"CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    skipped = [w for w in counts if w > cpus]
    if skipped:
        print(f"worker counts {', '.join(map(str, skipped))} skipped: this machine has {cpus} CPUs")

    # 1. per-probe overhead
    tiny_spec = parse_spec(TINY, SAMPLES)
    arrays = prepare_arrays(load_dataset(SAMPLES / "wine.csv", "label", seed=0))
    data = DeviceData(arrays, torch.device("cpu"))
    local = LocalExecutor(data)
    tiny_round(local, tiny_spec, 4)                       # warm up torch in this process
    local_wall = tiny_round(local, tiny_spec, args.tiny, args.repeat)
    print(f"\n1. per-probe overhead: {args.tiny} tiny probes (5 steps of a 13-32-3 MLP) in one round, "
          f"best of {args.repeat}")
    print(f"   local: {local_wall:.2f} s = {1e3 * local_wall / args.tiny:.1f} ms/probe")
    fixed = {}
    for w in [w for w in (1, 2) if w <= cpus]:
        fixed["start a local Ray"] = start_ray(w)
        t0 = time.perf_counter()
        ex = RayExecutor(data)
        fixed["make the executor (ray.put of the data, a warm-up task per worker)"] = time.perf_counter() - t0
        fixed["first round (4 probes)"] = tiny_round(ex, tiny_spec, 4)
        wall = tiny_round(ex, tiny_spec, args.tiny, args.repeat)
        ex.close()
        fixed["ray.shutdown"] = stop_ray()
        per = 1e3 * (wall - local_wall) / args.tiny
        note = "(serial: the executor's own cost)" if w == 1 else "(probes also run in parallel)"
        print(f"   ray, {w} worker{'s' if w > 1 else ''}: {wall:.2f} s = {1e3 * wall / args.tiny:.1f} ms/probe; "
              f"(ray - local) / n = {per:+.1f} ms/probe {note}")
    print("   fixed costs, once per command: " + "; ".join(f"{k} {v:.1f} s" for k, v in fixed.items()))

    # 2. a full report with probes of seconds
    with tempfile.TemporaryDirectory() as tmp:
        config = write_spec(heavy_spec(), tmp, "heavy.yaml")
        print("\n2. full-report, 30-768-768-768-2 MLP on breast_cancer (adam 1e-3), CPU")
        wall, ref, rounds = report_run(config, "local")
        crit = sum(r[1] for r in rounds)
        n_probes = sum(r[0] for r in rounds)
        probe_s = sum(r[2] for r in rounds)
        print(f"   {n_probes} probes in {len(rounds)} rounds of {[r[0] for r in rounds]}; "
              f"probe time {probe_s:.1f} s in all ({probe_s / n_probes:.2f} s mean); critical path "
              f"(Σ slowest probe of each round) {crit:.1f} s")
        rows = [("local", wall, 1.0, f"rounds {sum(r[3] for r in rounds):.1f} s", None)]
        for w in run_counts:
            init = start_ray(w)
            try:
                rwall, rep, rrounds = report_run(config, "ray")
            finally:
                stop_ray()
            # what packing the rounds into w workers predicts from the local probe times
            pred = sum(math.ceil(r[0] / w) * (r[2] / r[0]) for r in rounds)
            in_rounds = sum(r[3] for r in rrounds)
            rows.append((f"ray, {w} worker{'s' if w > 1 else ''}", rwall, wall / rwall,
                         f"rounds {in_rounds:.1f} s (Σ ceil(n/{w}) × local mean probe = {pred:.1f} s), "
                         f"the rest {rwall - in_rounds:.1f} s; ray.init {init:.1f} s not counted",
                         signature(rep) == signature(ref)))
        print(f"   {'executor':<16}{'wall s':>8}{'speed-up':>10}  same report  notes")
        for name, wl, sp, note, same in rows:
            print(f"   {name:<16}{wl:>8.1f}{sp:>9.2f}x  {'-' if same is None else 'yes' if same else 'NO':<11}  {note}")
        print("   wall ≈ rounds × slowest probe of a round (once every round fits the workers); the "
              "rounds are sequential, so more workers than the widest round buy nothing")

        # 3. GPU sharing
        if torch.cuda.is_available():
            gconfig = write_spec(heavy_spec(1024, 4, "cuda"), tmp, "heavy_cuda.yaml")
            print("\n3. full-report on CUDA, 30-1024x4-2 MLP: probes sharing one GPU")
            gwall, gref, grounds = report_run(gconfig, "local")
            print(f"   local (one probe at a time on the GPU): {gwall:.1f} s; {sum(r[0] for r in grounds)} probes")
            n_gpus = torch.cuda.device_count()
            for share in GPU_SHARES:
                start_ray(cpus, n_gpus)
                try:
                    swall, srep, _ = report_run(gconfig, "ray", gpus=share)
                finally:
                    stop_ray()
                at_once = min(int(n_gpus / share), cpus)
                print(f"   --gpus-per-probe {share:g}: {swall:.1f} s ({gwall / swall:.2f}x local; up to {at_once} "
                      f"probes at once); same report: {'yes' if signature(srep) == signature(gref) else 'NO'}")
        else:
            print("\n3. GPU sharing (--gpus-per-probe 1, 0.5, 0.25): skipped, no CUDA here")


if __name__ == "__main__":
    main()
