"""Step 5: resources (R5xx) — the device, memory, throughput and environment."""
from __future__ import annotations

import math
import platform
import sys

from ..report import Finding
from .. import fmt
from . import NotRun, check
from .context import ProbeContext

HEADROOM_TIGHT = 0.8     # peak > 80% of the GPU's memory: one bigger batch or sequence away from OOM
AMP_WORTH_IT = 0.25      # mixed precision advice when a step uses > 25% of the GPU (halves activation memory)
AMP_MIN_PARAMS = 1_000_000  # ... or the model is big enough that bf16 matmuls pay off


_gib = fmt.gib   # nn_doctor/fmt.py


@check("R500", needs=("env",))
def check_device(ctx: ProbeContext) -> Finding | None:
    """R500: which device ran the probes; a warning when a GPU is present but unused."""
    if "torch" not in sys.modules:
        return None
    import torch
    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    ev = {"device": ctx.device, "cuda_available": has_cuda, "mps_available": has_mps}
    if has_cuda:
        ev["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if ctx.device == "cpu" and (has_cuda or has_mps):
        gpu = "cuda" if has_cuda else "mps"
        return Finding("R500", f"the {_runs(ctx)} ran on the CPU although a GPU ({gpu}) is available",
                       ctx.fix_text(f"set training.device: {gpu} (or auto)",
                                    f"move the model and each batch to the GPU (model.to('{gpu}'), x.to('{gpu}'))"),
                       ev, severity="warning", patch={"training.device": "auto"} if ctx.spec is not None else None)
    what = ev["gpus"][0] if ctx.device.startswith("cuda") and has_cuda else ("the CPU (no GPU found)"
                                                                               if ctx.device == "cpu" else ctx.device)
    return Finding("R500", f"{_runs(ctx)} ran on {ctx.device}: {what}", "-", ev)


def _runs(ctx: ProbeContext) -> str:
    return "probes" if ctx.source == "probe" else "training"


@check("R501", needs=("spec", "memory"))
def check_out_of_memory(ctx: ProbeContext) -> Finding | None:
    """R501: the configured batch size runs out of device memory (tried for real on CUDA)."""
    mem = ctx.memory or {}
    if "oom" not in mem:   # the memory probe tries the batch for real on CUDA only
        raise NotRun(f"the out-of-memory test needs a CUDA device; the probes ran on {ctx.device}")
    if not mem.get("oom"):
        return None
    bs, best = mem.get("batch_size"), mem.get("max_batch")
    if not best:
        return Finding("R501", f"even a batch of 1 runs out of memory on {ctx.device}",
                       "shrink the model or use a device with more memory; mixed precision (bf16) halves activations",
                       mem)
    steps = math.ceil(bs / best)
    return Finding("R501", f"training.batch_size {bs} runs out of memory on {ctx.device}; the largest batch that fits is {best}",
                   f"set training.batch_size: {best} (or accumulate {steps} steps of {math.ceil(bs / steps)} "
                   f"for an effective {bs}); mixed precision (bf16) also cuts activation memory",
                   mem, patch={"training.batch_size": int(best)})


@check("R502", needs=("memory",))
def check_memory_headroom(ctx: ProbeContext) -> Finding | None:
    """R502: peak memory per step vs what the device has; whether mixed precision would help."""
    mem = ctx.memory or {}
    if mem.get("oom"):
        return None
    if "peak_bytes" in mem and mem.get("total_bytes"):
        frac = mem["peak_bytes"] / mem["total_bytes"]
        ev = {"peak_per_step": mem["peak_bytes"], "device_total": mem["total_bytes"], "fraction": frac,
              "batch_size": mem.get("batch_size")}
        advice = []
        if frac > AMP_WORTH_IT or (ctx.n_params or 0) > AMP_MIN_PARAMS:
            advice.append("mixed precision (torch.autocast(dtype=torch.bfloat16)) would cut activation memory "
                          "and speed up matmuls")
        msg = (f"peak {_gib(mem['peak_bytes'])} per training step at batch {mem.get('batch_size')} of "
               f"{_gib(mem['total_bytes'])} on {ctx.device} ({frac:.1%})")
        sev = "warning" if frac > HEADROOM_TIGHT else None
        return Finding("R502", msg, "; ".join(advice) or "-", ev, severity=sev)
    if "peak_rss_bytes" in mem:
        return Finding("R502", f"peak resident memory of the process {_gib(mem['peak_rss_bytes'])} (CPU)",
                       "-", {"peak_rss_bytes": mem["peak_rss_bytes"]})
    return None


@check("R503", needs=("timing",))
def check_throughput(ctx: ProbeContext) -> Finding | None:
    """R503: step time, samples/s, and how long the configured training would take."""
    rec = ctx.baseline
    if rec is None or not rec.step_time_s:
        return None
    if ctx.spec is None:
        return _monitored_throughput(ctx)
    if ctx.arrays is None:
        return None
    spec = ctx.spec
    n = len(ctx.arrays.X)
    bs = min(spec.training.batch_size, n)
    steps = math.ceil(n / bs) * spec.training.epochs
    total = steps * rec.step_time_s
    ev = {"step_time_ms": rec.step_time_s * 1e3, "samples_per_s": bs / rec.step_time_s, "batch_size": bs,
          "steps_per_epoch": math.ceil(n / bs), "epochs": spec.training.epochs, "estimated_training_s": total,
          "note": "probe step time includes the doctor's instrumentation on recorded steps"}
    return Finding("R503", f"{fmt.step_time(rec.step_time_s)} per step ({fmt.count(bs / rec.step_time_s)} samples/s) on "
                   f"{ctx.device}: {spec.training.epochs} epochs x {math.ceil(n / bs)} steps ≈ {duration(total)}",
                   "-", ev)


def _monitored_throughput(ctx: ProbeContext) -> Finding:
    """R503 for the user's own run: its measured step time and how long it took."""
    rec = ctx.baseline
    bs = (rec.settings or {}).get("batch_size")
    ev = {"step_time_ms": rec.step_time_s * 1e3, "steps": rec.steps_run, "batch_size": bs,
          "monitored_s": rec.wall_s, "record_interval": (rec.settings or {}).get("record_interval"),
          "note": "median over windows of the run without a validation pass; includes the monitor's cost"}
    rate = f" ({fmt.count(bs / rec.step_time_s)} samples/s)" if bs else ""
    if bs:
        ev["samples_per_s"] = bs / rec.step_time_s
    return Finding("R503", f"{fmt.step_time(rec.step_time_s)} per training step{rate} on {ctx.device}; the "
                           f"{ctx.run_name} took {duration(rec.wall_s)} for {rec.steps_run} steps", "-", ev)


duration = fmt.duration   # nn_doctor/fmt.py


@check("R504", needs=("env",))
def check_environment(ctx: ProbeContext) -> Finding | None:
    """R504: torch/python versions, deterministic settings, CPU threads."""
    if "torch" not in sys.modules:
        return None
    import torch
    ev = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
          "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
          "cudnn_benchmark": bool(torch.backends.cudnn.benchmark), "cuda": torch.version.cuda}
    return Finding("R504", f"torch {ev['torch']}, python {ev['python']}, {ev['threads']} CPU threads"
                   + (f", CUDA {ev['cuda']}" if ev["cuda"] else ""), "-", ev)
