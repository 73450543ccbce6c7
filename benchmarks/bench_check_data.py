"""Benchmark: step 1's checks on a 1,000,000 x 50 numeric CSV, against the time to read it.

    /work/venv/bin/python benchmarks/bench_check_data.py [--rows 1000000] [--cols 50] [--val-fraction 0.2]

The CSV (seeded) goes to benchmarks/out/ (git-ignored) and is reused when present. It carries a few
faults so that the checks do real work: 1,000 NaNs in f03, an unscaled column f07 (x 1000 + 5000), a
constant column f10, and 2% of the rows duplicated (copied over others). The target `label` is 5
random classes.

One run measures:
- read: `nn_doctor.data.load_dataset(path, "label", val_fraction=...)`, i.e. the CSV parse (pyarrow)
  plus the seeded stratified split that `check-data` does by default (20%);
- checks: `run_data_checks` over all D1xx codes (a fresh Report), timed without tracemalloc;
- memory, two ways:
  * tracemalloc peak during a second checks run: every Python-level and numpy allocation the checks
    make (numpy reports its buffers to tracemalloc), on top of the frame they read; the ratio is
    (frame + that peak) / frame;
  * ru_maxrss (the process's RSS high-water mark) before and after the checks: the delta is how far
    the checks pushed the process peak beyond what reading already reached (0 when they stayed under it).
Goals: checks <= 0.5 x read time; peak <= 3 x the frame's own size.

Both sides use the cores: pyarrow parses on every core, the checks run their chunked passes on
nn_doctor.data_stats.WORKERS threads (at most 8). Timings are the best of --repeat runs, wall and CPU.
The RSS high-water mark also counts what reading left behind (Arrow buffers, the split's copies) and,
with threads, glibc's per-thread malloc arenas, so it is an upper bound on what the checks need.
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from nn_doctor.catalogue import Step  # noqa: E402
from nn_doctor.checks.data import run_data_checks  # noqa: E402
from nn_doctor.data import load_dataset  # noqa: E402
from nn_doctor.report import Report  # noqa: E402

GOAL_TIME_RATIO = 0.5     # checks <= half the read time
GOAL_MEMORY_RATIO = 3.0   # peak <= 3x the frame


def make_csv(path: Path, rows: int, cols: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, cols)).astype(np.float64)
    X = np.round(X, 6)                                   # 6 decimals: a realistic CSV width
    X[rng.choice(rows, 1000, replace=False), 3] = np.nan  # missing values
    X[:, 7] = X[:, 7] * 1000 + 5000                      # an unscaled column
    X[:, 10] = 1.0                                       # a constant column
    label = rng.integers(0, 5, rows)
    n_dup = rows // 50                                   # 2% of the rows are copies of others
    src, dst = rng.choice(rows, n_dup, replace=False), rng.choice(rows, n_dup, replace=False)
    X[dst], label[dst] = X[src], label[src]
    table = pa.table({**{f"f{j:02d}": X[:, j] for j in range(cols)}, "label": label})
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table, path)


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=50)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    args = ap.parse_args()

    path = ROOT / "out" / f"bench_{args.rows}x{args.cols}_v2.csv"
    if not path.exists():
        t = time.perf_counter()
        make_csv(path, args.rows, args.cols)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f}s")

    rss0 = maxrss_mib()
    reads, ds = [], None
    for _ in range(args.repeat):                    # best of N: the machine may be shared
        ds = None
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        ds = load_dataset(path, "label", val_fraction=args.val_fraction)
        reads.append((time.perf_counter() - t, time.process_time() - c))
    rss_read = maxrss_mib()
    frame = sum(int(a.memory_usage(deep=True).sum()) if hasattr(a, "columns") else int(a.memory_usage(deep=True))
                for a in (ds.X, ds.y, ds.X_val, ds.y_val) if a is not None)

    checks = []
    for _ in range(args.repeat):
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        report = Report("check-data")
        findings = run_data_checks(ds, report)
        checks.append((time.perf_counter() - t, time.process_time() - c))
    rss_checks = maxrss_mib()
    crashed = report.step(Step.DATA).reason

    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    run_data_checks(ds, Report("check-data"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    t_read, c_read = min(reads)
    t_checks, c_checks = min(checks)

    mib = 2 ** 20
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (timings: best of {args.repeat})")
    print(f"data: {args.rows:,} x {args.cols} CSV ({path.stat().st_size / mib:.0f} MiB), "
          f"val_fraction {args.val_fraction} -> {ds.describe()}")
    print(f"findings: {', '.join(f.code for f in findings)}" + (f"   CRASHED: {crashed}" if crashed else ""))
    for f in findings:
        print(f"  {f.code} {f.severity.value}: {f.message}")
    print()
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'read (load_dataset, incl. split), wall':<44}{t_read:>11.2f}s   (cpu {c_read:.2f}s, all threads)")
    print(f"{'checks (run_data_checks, all D1xx), wall':<44}{t_checks:>11.2f}s   (cpu {c_checks:.2f}s)")
    print(f"{'checks / read, wall':<44}{t_checks / t_read:>12.2f}   (cpu {c_checks / c_read:.2f})")
    print(f"{'frame size (X, y, X_val, y_val)':<44}{frame / mib:>9.0f} MiB")
    print(f"{'checks peak, tracemalloc':<44}{peak / mib:>9.0f} MiB")
    print(f"{'(frame + checks peak) / frame':<44}{(frame + peak) / frame:>12.2f}")
    print(f"{'ru_maxrss before read / after read':<44}{rss0:>6.0f} / {rss_read:.0f} MiB")
    print(f"{'ru_maxrss after checks (delta)':<44}{rss_checks:>6.0f} MiB (+{rss_checks - rss_read:.0f})")
    print(f"{'process peak RSS / frame':<44}{rss_checks / (frame / mib):>12.2f}")
    print()
    ok_t = t_checks <= GOAL_TIME_RATIO * t_read
    ok_m = (frame + peak) / frame <= GOAL_MEMORY_RATIO
    print(f"goal checks <= {GOAL_TIME_RATIO} x read: {'met' if ok_t else 'NOT met'} ({t_checks / t_read:.2f}x)")
    print(f"goal peak <= {GOAL_MEMORY_RATIO} x frame (tracemalloc): {'met' if ok_m else 'NOT met'} "
          f"({(frame + peak) / frame:.2f}x)")


if __name__ == "__main__":
    main()
