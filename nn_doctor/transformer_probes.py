"""The counterfactual probes full-report adds for the transformer-era settings, planned in the first round
(none depends on another probe):

- "warmup": the configured spec with an lr warmup, when Adam/AdamW trains a transformer without one (H309);
- "bf16" / "grad_scaler": training.precision fp16 with bf16 instead, and with loss scaling when it is off (G410);
- "no_decay_norm_bias": weight decay kept off norm gains and biases (nanoGPT's rule), when it is on them and
  the model has norm layers (H311).

Each probe is the baseline's length and cadence with one change; the checks in checks/transformers.py compare
it with the baseline. Records land in ProbeContext.extra under these names.
"""
from __future__ import annotations

from typing import Any

WARMUP_FRACTION = 0.1     # the warmup probe warms up over the first 10% of its steps (nanoGPT: 2000 of 600k;
WARMUP_MIN_STEPS = 10     # BERT: 10k of 1M = 1%; a 150-300-step probe needs a larger share to show it), >= 10 steps


def warmup_steps_for(base_steps: int) -> int:
    return max(WARMUP_MIN_STEPS, int(round(WARMUP_FRACTION * base_steps)))


def has_attention(spec) -> bool:
    return bool(spec.model.layers) and any(l.type == "transformer_encoder" for l in spec.model.layers)


def has_norm(spec) -> bool:
    """A layers: model with norm layers (a transformer_encoder has its own): where decaying the gains matters."""
    from .model import model_summary
    summary = model_summary(spec.model)
    return bool(summary and summary["has_norm"])


def plans(spec, base_steps: int) -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides) of the extra probes this spec needs."""
    out: list[tuple[str, dict[str, Any]]] = []
    opt = spec.optimizer
    sched = opt.schedule
    if opt.name in ("adam", "adamw") and has_attention(spec) and (sched is None or sched.warmup_steps == 0):
        out.append(("warmup", {"optimizer.schedule": {"warmup_steps": warmup_steps_for(base_steps),
                                                      "decay": sched.decay if sched else "constant"}}))
    if spec.training.precision == "fp16":
        out.append(("bf16", {"training.precision": "bf16"}))
        if not spec.training.loss_scaling:
            out.append(("grad_scaler", {"training.grad_scaler": True}))
    if opt.weight_decay > 0 and opt.decay_norm_bias and has_norm(spec):
        out.append(("no_decay_norm_bias", {"optimizer.decay_norm_bias": False}))
    return out


def extra_tasks(s, base_steps: int, eval_every: int) -> list:
    """The session's probe tasks for plans(); keys ("extra", name)."""
    tasks = []
    for name, overrides in plans(s.spec, base_steps):
        tasks.append(s.task(("extra", name), s.spec.with_overrides(**overrides), f"probe {name.replace('_', ' ')}",
                            overrides, steps=base_steps, eval_every=eval_every, record_every=0, instrument=False))
    return tasks
