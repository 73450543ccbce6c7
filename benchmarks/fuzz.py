"""The hostile-input fuzz suite, long run: many generated cases, the distinct failures counted.

    PYTHONPATH=. python benchmarks/fuzz.py [--specs 600] [--data 400] [--user 60] [--seed 0] [--out FILE]

The generators and the property are tests/fuzz_cases.py's, the same that tests/test_fuzz.py runs with a
few examples in CI. Here hypothesis only generates (no shrinking, no example database) and every case's
outcome is recorded instead of raised, so the run goes on after a failure. Failures are grouped by
fuzz_cases.signature (the violated properties, the command, and where an exception escaped or which
user behaviour caused it): "distinct failures" counts those groups.

Prints a summary (cases per family, exit codes, time per case, each distinct failure with one example)
and, with --out, writes it as JSON.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fuzz_cases as F  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed as hseed, settings, strategies as st  # noqa: E402


def run(specs: int, data: int, user: int, seed: int) -> dict:
    import torch
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="nn_doctor_fuzz_long_"))
    table = F.tiny_table(folder)
    outcomes: dict[str, list[F.Outcome]] = collections.defaultdict(list)

    def cfg(n: int) -> settings:
        return settings(max_examples=max(1, n), deadline=None, database=None, phases=[Phase.generate],
                        suppress_health_check=list(HealthCheck), derandomize=False)

    @hseed(seed)
    @cfg(specs)
    @given(case=F.spec_cases(table), command=st.sampled_from(["check-data", "probe-lr"]))
    def spec_family(case, command):
        text, label = case
        p = folder / "spec.yaml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        args = [command, "--config", str(p), "-q"] + (list(F.PROBE_ARGS) if command == "probe-lr" else [])
        outcomes["specs"].append(F.check(args, label))

    @hseed(seed + 1)
    @cfg(data)
    @given(case=F.data_cases(folder), report=st.booleans())
    def data_family(case, report):
        import yaml
        path, label = case
        target = "y" if path.suffix == ".npz" else "label"
        if report and path.suffix != ".npz":
            spec = F.base_spec(path)
            spec["data"]["target"] = target
            p = path.with_suffix(".yaml")
            p.write_text(yaml.safe_dump(spec))
            args = ["full-report", "--config", str(p), "-q", *F.REPORT_ARGS]
        else:
            args = ["check-data", str(path), "--target", target, "-q"]
        outcomes["data"].append(F.check(args, label))

    @hseed(seed + 2)
    @cfg(user)
    @given(case=F.user_code_cases(folder))
    def user_family(case):
        spec, mark, command, label = case
        args = [command, "--config", str(spec), "-q", *(F.PROBE_ARGS if command == "probe-lr" else F.REPORT_ARGS)]
        outcomes["user code"].append(F.check(args, label, mark))

    timings = {}
    for name, fn, n in (("specs", spec_family, specs), ("data", data_family, data), ("user code", user_family, user)):
        if n:
            t0 = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - t0
            print(f"{name}: {len(outcomes[name])} cases in {timings[name]:.0f} s", file=sys.stderr, flush=True)

    summary: dict = {"families": {}, "distinct_failures": {}}
    groups: dict[str, list[F.Outcome]] = collections.defaultdict(list)
    for name, outs in outcomes.items():
        codes = collections.Counter(o.code for o in outs)
        secs = sorted(o.seconds for o in outs)
        summary["families"][name] = {
            "cases": len(outs), "exit_codes": dict(sorted(codes.items())),
            "failed": sum(bool(o.violations) for o in outs), "seconds": round(timings.get(name, 0), 1),
            "median_case_s": round(secs[len(secs) // 2], 3) if secs else None,
            "max_case_s": round(secs[-1], 2) if secs else None}
        for o in outs:
            if o.violations:
                groups[F.signature(o)].append(o)
    for sig, outs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        o = outs[0]
        summary["distinct_failures"][sig] = {"count": len(outs), "violations": o.violations, "label": o.label,
                                             "args": o.args, "stderr": o.stderr[-400:], "stdout": o.stdout[-400:]}
    summary["cases"] = sum(f["cases"] for f in summary["families"].values())
    summary["failed_cases"] = sum(f["failed"] for f in summary["families"].values())
    summary["n_distinct_failures"] = len(groups)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", type=int, default=600)
    ap.add_argument("--data", type=int, default=400)
    ap.add_argument("--user", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    s = run(a.specs, a.data, a.user, a.seed)
    print(f"{s['cases']} cases, {s['failed_cases']} failed, {s['n_distinct_failures']} distinct failures")
    for name, f in s["families"].items():
        print(f"  {name:10s} {f['cases']:5d} cases  exit codes {f['exit_codes']}  failed {f['failed']}  "
              f"median {f['median_case_s']} s  max {f['max_case_s']} s")
    for sig, d in s["distinct_failures"].items():
        print(f"- [{d['count']}x] {sig}\n    e.g. {d['label']}: {d['violations']}")
    if a.out:
        a.out.write_text(json.dumps(s, indent=2, default=str))


if __name__ == "__main__":
    main()
