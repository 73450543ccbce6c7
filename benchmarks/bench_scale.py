"""Benchmark: the Ray executor (--executor ray) against the local one, measured in one run.

    /work/venv/bin/python benchmarks/bench_scale.py [--cases overhead,report,gpu,long] [--tiny 200]
        [--repeat 3] [--workers 1,2,4,8,16] [--long-workers 1,2] [--long-width 512] [--long-depth 3] [--long-steps 2400]
        [--long-device cpu] [--gpu-shares 1,0.5,0.25]

    # only the long-probe case, as on a 2-core machine (the default), or on a 16-core GPU machine:
    /work/venv/bin/python benchmarks/bench_scale.py --cases long
    /work/venv/bin/python benchmarks/bench_scale.py --cases long --long-workers 1,4,16 --gpu-shares 1,0.5,0.25

Needs the `ray` extra (pip install 'nn-doctor[ray]'). Cases 1-3 use a fresh local Ray per figure,
started with num_cpus = the worker count (a probe task asks for 1 CPU, so that many probes run at
once); case 4 uses a persistent cluster, as a user who outgrew one machine runs it.

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

4. Long probes on a persistent cluster (--cases long): full-report on a 30-512-512-512-2 MLP on
   breast_cancer (batch 64: 1.0e8 multiply-adds a step, 4.2e8 at the batch probe's 256, all under
   probe.SINGLE_THREAD_WORK, so every probe runs on one thread, locally and on a worker: a probe above
   it uses every core locally, and fanning out cannot pay on 2 cores) with its lr probes lengthened to
   --long-steps (2400:
   Options.steps, probe-lr's --steps), so that one lr probe takes >= 10 s on one thread of a 2-core
   machine; the baseline, batch, capacity and tiny-batch probes keep their own lengths (1-3 s). Two
   specs (--long-specs): `healthy` (standardized inputs: one diagnosis) and `unscaled` (D104: the
   treatment loop standardizes the inputs and diagnoses again). A diagnosis's rounds: the lr decades
   (their baseline, batch and regularisation probes go out with them in the background), the bisection,
   the recommended lr with the capacity and tiny-batch probes, the fix verifications; the background
   probes' round comes last and counts only the time still waited for them. Of the decades, 0.01, 0.001
   and 1e-4 train to the end and 0.1 diverges at once: on 2 workers two waves of long probes, then the
   lone recommendation, against four long probes locally (about 4/3 at best for the search itself).
   For each --long-workers count W a cluster is started
   the way a user runs one, `ray start --head --block --num-cpus W` with token authentication
   (RAY_AUTH_MODE=token and a fresh RAY_AUTH_TOKEN), on 127.0.0.1 and its own ports and temp dir; the
   command joins it with --ray-address, as a second command would, and the cluster is stopped after
   it. Its start is not counted (it is up before the command); joining it and warming its workers
   are. Local runs before the clusters and again after them (--no-long-bracket: before only), and the
   ratios are against the mean of the two, as a shared machine's load drifts over the ~10 minutes.
   Printed: wall, local wall / Ray wall, each round (probes, wall, Σ probe time), the critical
   path (Σ round walls), and whether the findings are the local ones (codes and messages, except the
   measured time/memory of R502/R503). With --gpu-shares (CUDA), the same report on the GPU
   (--long-device cuda is implied), on a cluster of all CPUs and GPUs, at each --gpus-per-probe share:
   1 runs one probe per GPU at a time, 0.5 two, 0.25 four.
   On a 16-core GPU machine: --long-workers 1,4,16 --gpu-shares 1,0.5,0.25 compares local with 1, 4
   and 16 CPU workers (the first round has 8-9 probes: beyond ~9 workers only the later, narrower
   rounds can gain, so 16 shows where it flattens) and the GPU shared by 1, 2 and 4 probes.

Timings are wall clock on a shared machine: run it on an idle one for stable figures (the load
average is printed with the machine line and again with case 4).
"""
from __future__ import annotations

import argparse
import math
import os
import secrets
import signal
import socket
import subprocess
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
CASES = ("overhead", "report", "gpu", "long")
LONG_WORKERS = (1, 2)           # the comparison on a 2-core machine
LONG_WIDTH, LONG_DEPTH = 512, 3  # 1.0e8 multiply-adds a step at batch 64 and 4.2e8 at 256, the largest batch the batch
                                # probe (x4) or an H302 fix tries: every probe stays under probe.SINGLE_THREAD_WORK, so it
                                # runs on one thread locally as on a worker. At width 768, batch 256 (9e8) ran on both
                                # cores locally but on one in a worker, and the Ray probes of the treated spec looked
                                # 1.45x slower: that was the local side using two threads, not Ray
LONG_STEPS = 2400               # lr probe length: 2400 steps of that MLP take >= 10 s on one thread of this 2-core
                                # machine when idle (1200 steps took 6.0-6.9 s; 150 steps, full-report's default, <1 s)
LONG_PROBE_S = 10.0             # issue 16: "one probe takes >= 10 s on one CPU thread"
CLUSTER_START_S = 180.0         # `ray start --head` on a busy machine (10 s idle on 2 cores)
TIMED_FINDINGS = {"R502", "R503"}   # their messages state a measured time / memory, not a result

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

        def run_round(ex, tasks, *args, **kwargs):
            t0 = time.perf_counter()
            recs = log.real(ex, tasks, *args, **kwargs)
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


class KeptRounds:
    """The executors' own per-round timing (executor.rounds) and every probe's record, kept when the
    command closes its executor."""

    def __init__(self, *classes):
        self.saved, self.rounds, self.records = [], [], []
        for cls in classes:
            close, run_round, collect = cls.close, cls.run_round, cls.collect_background
            self.saved.append((cls, close, run_round, collect))

            def closing(ex, _close=close):
                self.rounds.extend(getattr(ex, "rounds", []))
                return _close(ex)

            def running(ex, tasks, *args, _run=run_round, **kwargs):
                recs = _run(ex, tasks, *args, **kwargs)
                self.records.extend(r for r in recs if r.stopped != "skipped")
                return recs

            def collecting(ex, _collect=collect):
                done = _collect(ex)
                self.records.extend(r for _, r in done if r.stopped != "skipped")
                return done
            cls.close, cls.run_round, cls.collect_background = closing, running, collecting

    def restore(self) -> None:
        for cls, close, run_round, collect in self.saved:
            cls.close, cls.run_round, cls.collect_background = close, run_round, collect


def long_run(config: str, steps: int, executor: str, address: str | None = None, gpus: float | None = None):
    """full-report on one executor: (wall, report, the executor's rounds, the probes' records)."""
    from nn_doctor.ray_executor import RayExecutor
    kept = KeptRounds(LocalExecutor, RayExecutor)
    t0 = time.perf_counter()
    try:
        rep = full_report(Options(config=config, steps=steps, executor=executor, ray_address=address,
                                  gpus_per_probe=gpus, budget=7200, quiet=True))
    finally:
        kept.restore()
    return time.perf_counter() - t0, rep, kept.rounds, kept.records


def findings(rep) -> list:
    """What must be identical across executors: first_fix, the recommended lr, every finding's code and
    message (R502/R503's messages state a measured time or memory: their codes only)."""
    return [rep.first_fix, rep.probes.get("lr", {}).get("recommended")] + \
        [(f.code, None if f.code in TIMED_FINDINGS else f.message) for f in rep.findings]


def load() -> str:
    if not hasattr(os, "getloadavg"):
        return "load n/a"
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f} on {os.cpu_count()} CPUs"


# ---- a persistent cluster, as a user runs one -------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """`ray start --head --block` with token authentication on 127.0.0.1, its own ports and temp dir.
    stop() ends exactly it (SIGTERM to `ray start`, then SIGKILL to its process group): not `ray stop`,
    which would end every Ray on the machine."""

    def __init__(self, cpus: int, gpus: int = 0):
        self.temp = tempfile.mkdtemp(prefix="nnd-bench-", dir="/tmp")
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        env = {**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
               "PYTHONPATH": os.pathsep.join([str(ROOT.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        env.pop("RAY_ADDRESS", None)
        ray_bin = Path(sys.executable).with_name("ray")
        cmd = [str(ray_bin) if ray_bin.exists() else "ray", "start", "--head", "--block", "--port", str(port),
               "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--num-gpus", str(gpus),
               "--include-dashboard", "false", "--dashboard-port", str(_free_port()),
               "--dashboard-agent-listen-port", str(_free_port()), "--temp-dir", self.temp, "--disable-usage-stats"]
        self.log = os.path.join(self.temp, "ray_start.log")
        t0 = time.perf_counter()
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while "Ray runtime started" not in Path(self.log).read_text(errors="replace"):
            if self.proc.poll() is not None or time.perf_counter() - t0 > CLUSTER_START_S:
                tail = Path(self.log).read_text(errors="replace").strip().splitlines()[-1:]
                self.stop()
                sys.exit(f"bench_scale: `ray start --head` failed: {tail[0] if tail else 'no output'}")
            time.sleep(0.5)
        self.start_s = time.perf_counter() - t0

    def stop(self) -> None:
        import shutil
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(10)
        shutil.rmtree(self.temp, ignore_errors=True)


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


def overhead_case(args, cpus: int) -> None:
    """1. per-probe overhead."""
    from nn_doctor.ray_executor import RayExecutor
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


def report_case(tmp: str, run_counts: list[int]) -> None:
    """2. a full report with probes of seconds, a fresh local Ray per worker count."""
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


def gpu_case(tmp: str, cpus: int) -> None:
    """3. GPU sharing, a fresh local Ray per share."""
    if not torch.cuda.is_available():
        print("\n3. GPU sharing (--gpus-per-probe 1, 0.5, 0.25): skipped, no CUDA here")
        return
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


def _rounds_text(rounds: list[dict]) -> str:
    return ", ".join(f"{r['probes']}p {r['wall_s']:.1f}/{r['probe_s']:.1f} s" for r in rounds)


LONG_SPECS = {   # the long case's specs: a healthy one (one diagnosis), and a faulty one, whose treatment loop
                 # diagnoses the repaired spec again (twice the rounds: the work issue 16 asks to fan out)
    "healthy": "standardized inputs: healthy, one diagnosis",
    "unscaled": "unscaled inputs (D104): the treatment loop standardizes them and diagnoses again",
}


def long_case(args, tmp: str, cpus: int, variant: str = "healthy") -> None:
    """4. long probes: local against a persistent cluster of each --long-workers size (and GPU shares)."""
    shares = [float(x) for x in args.gpu_shares.split(",")] if args.gpu_shares else []
    device = "cuda" if shares else args.long_device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_scale: --gpu-shares / --long-device cuda need CUDA")
    raw = heavy_spec(args.long_width, args.long_depth, device)
    if variant == "unscaled":
        raw["data"]["normalize"] = "none"
    config = write_spec(raw, tmp, f"long_{variant}.yaml")
    counts = [int(w) for w in args.long_workers.split(",")]
    over = [w for w in counts if w > cpus]
    print(f"\n4. long probes: full-report, 30-{args.long_width}x{args.long_depth}-2 MLP on breast_cancer "
          f"(batch 64), {LONG_SPECS[variant]}; lr probes of {args.long_steps} steps, on {device}; persistent clusters "
          f"(`ray start --head`, token auth), joined by address")
    if over:
        print(f"   worker counts {', '.join(map(str, over))} run on {cpus} CPUs: oversubscribed")
    print(f"   {load()} before the local run")
    lwall, ref, lrounds, lrecs = long_run(config, args.long_steps, "local")
    walls = sorted(r.wall_s for r in lrecs)
    lr_walls = [r.wall_s for r in lrecs if r.name.startswith("lr ") and r.stopped == "completed"]  # not diverged
    short = min(lr_walls or walls)
    print(f"   {len(lrecs)} probes in {len(lrounds)} rounds; one probe {walls[0]:.1f}-{walls[-1]:.1f} s; an lr "
          f"probe run to its end ({args.long_steps} steps) {short:.1f}-{max(lr_walls or walls):.1f} s"
          f"{'' if short >= LONG_PROBE_S else f', under the {LONG_PROBE_S:.0f} s aimed at: raise --long-steps'}"
          f"; probe time {sum(walls):.1f} s in all")
    runs = [(w, None) for w in counts] + [(cpus, share) for share in shares]
    rows = []
    for w, share in runs:
        n_gpus = torch.cuda.device_count() if share else 0
        cluster = Cluster(w, n_gpus)
        try:
            print(f"   {load()} before the cluster of {w} CPU{'s' if w > 1 else ''}"
                  f"{f' and {n_gpus} GPU(s)' if n_gpus else ''} (started in {cluster.start_s:.1f} s, not counted)")
            rwall, rep, rrounds, _ = long_run(config, args.long_steps, "ray", cluster.address, share)
        finally:
            cluster.stop()
        name = f"ray, {w} worker{'s' if w > 1 else ''}" if share is None else f"ray, {share:g} GPU/probe"
        rows.append((name, rwall, None, sum(r["wall_s"] for r in rrounds), findings(rep) == findings(ref),
                     rrounds, ""))
    local_walls = [lwall]
    if args.long_bracket:       # the load of a shared machine drifts: local again, after the Ray runs
        print(f"   {load()} before local again")
        lwall2, rep2, lrounds2, _ = long_run(config, args.long_steps, "local")
        local_walls.append(lwall2)
        rows.append(("local, again", lwall2, None, sum(r["wall_s"] for r in lrounds2), findings(rep2) == findings(ref),
                     lrounds2, ""))
    base = sum(local_walls) / len(local_walls)
    rows.insert(0, ("local", lwall, None, sum(r["wall_s"] for r in lrounds), True, lrounds, ""))
    rows = [(n, w, base / w, c, same, rr, x) for n, w, _, c, same, rr, x in rows]
    if len(local_walls) > 1:
        print(f"   vs local = the mean local wall ({base:.1f} s, of {' and '.join(f'{w:.1f}' for w in local_walls)}) "
              f"/ the row's wall")
    print(f"   {'executor':<20}{'wall s':>8}{'vs local':>10}{'critical path s':>17}  same findings  rounds "
          f"(probes, wall / Σ probe s)")
    for name, wl, ratio, crit, same, rounds, _ in rows:
        print(f"   {name:<20}{wl:>8.1f}{ratio:>9.2f}x{crit:>17.1f}  {'yes' if same else 'NO':<13}  "
              f"{_rounds_text(rounds)}")
    print(f"   {load()} after")
    print("   wall - critical path = the command's own work (data, checks) plus, on Ray, joining the cluster "
          "and warming its workers")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"which cases, of {','.join(CASES)}")
    ap.add_argument("--tiny", type=int, default=200, help="tiny probes for the overhead figure")
    ap.add_argument("--repeat", type=int, default=3, help="overhead rounds (the best counts)")
    ap.add_argument("--workers", default=",".join(map(str, WORKERS)), help="Ray worker counts to try (case 2)")
    ap.add_argument("--long-workers", default=",".join(map(str, LONG_WORKERS)),
                    help="CPUs of the persistent clusters of case 4 (one probe per CPU)")
    ap.add_argument("--long-width", type=int, default=LONG_WIDTH, help="case 4's MLP width")
    ap.add_argument("--long-depth", type=int, default=LONG_DEPTH, help="case 4's hidden layers")
    ap.add_argument("--long-specs", default=",".join(LONG_SPECS),
                    help=f"case 4's specs, comma-separated ({', '.join(LONG_SPECS)}; default both)")
    ap.add_argument("--long-steps", type=int, default=LONG_STEPS, help="case 4's lr probe length (steps)")
    ap.add_argument("--long-device", default="cpu", choices=("cpu", "cuda"), help="case 4's device")
    ap.add_argument("--long-bracket", action=argparse.BooleanOptionalAction, default=True,
                    help="case 4: run local again after the Ray runs and compare with the mean (a shared "
                         "machine's load drifts)")
    ap.add_argument("--gpu-shares", default="",
                    help="case 4 on CUDA: --gpus-per-probe values to try on a cluster of all CPUs and GPUs "
                         "(e.g. 1,0.5,0.25)")
    args = ap.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if "long" in cases:
        if os.environ.get("RAY_ADDRESS"):
            sys.exit("bench_scale --cases long starts its own clusters: unset RAY_ADDRESS")
        # case 4's clusters and this process share a fresh token; set before Ray is imported (it keeps
        # RAY_AUTH_* from its first use)
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    try:
        import ray  # noqa: F401
    except ImportError:
        sys.exit("bench_scale needs Ray: pip install 'nn-doctor[ray]'")

    cpus = os.cpu_count() or 1
    counts = [int(w) for w in args.workers.split(",")]
    run_counts = [w for w in counts if w <= cpus]
    print(f"machine: {cpus} CPUs ({load()}), torch {torch.__version__}, ray {ray.__version__}, "
          f"CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    skipped = [w for w in counts if w > cpus]
    if skipped and "report" in cases:
        print(f"worker counts {', '.join(map(str, skipped))} skipped: this machine has {cpus} CPUs")

    with tempfile.TemporaryDirectory() as tmp:
        if "overhead" in cases:
            overhead_case(args, cpus)
        if "report" in cases:
            report_case(tmp, run_counts)
        if "gpu" in cases:
            gpu_case(tmp, cpus)
        if "long" in cases:
            for variant in args.long_specs.split(","):
                if variant not in LONG_SPECS:
                    sys.exit(f"bench_scale: --long-specs: {variant!r} is not one of {', '.join(LONG_SPECS)}")
                long_case(args, tmp, cpus, variant)


if __name__ == "__main__":
    main()
