"""What the step 2-5 checks read: the spec, the data and the probe records, gathered once.

Every field but `spec` may be None/empty (the probe was not run, was skipped for the budget, or its
prerequisite failed); a check whose input is missing returns nothing. Records are plain data
(ProbeRecord holds floats only), so checks never touch tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data import ArrayData
from ..probe import ProbeRecord
from ..spec import Spec


@dataclass
class ProbeContext:
    spec: Spec
    arrays: ArrayData | None = None          # the numeric data the probes train on (None: data unusable)
    device: str = "cpu"
    model_summary: dict[str, Any] | None = None   # nn_doctor.model.model_summary(spec.model); None for user classes
    n_params: int | None = None
    n_outputs: int | None = None             # the model's output size, measured by a dummy forward
    build_error: Any = None                  # ModelBuildError when the model does not build
    # probes (see doctor.py for how each is run)
    init: ProbeRecord | None = None          # configured spec, short, per-layer stats at init (init_layers)
    baseline: ProbeRecord | None = None      # configured spec, the train/validation probe (curves, G checks)
    lr: Any = None                           # lr_search.LrResult
    lr_records: dict[float, ProbeRecord] = field(default_factory=dict)
    batch: dict[int, ProbeRecord] = field(default_factory=dict)        # batch size -> probe at equal samples seen
    regularization: dict[str, ProbeRecord] = field(default_factory=dict)  # "configured" / "weaker"
    optimizers: dict[str, ProbeRecord] = field(default_factory=dict)      # "configured" / "adam"
    subset_fit: ProbeRecord | None = None    # M208: fit a small training subset at a working lr
    tiny: ProbeRecord | None = None          # G407: ~10 samples at a working lr
    init_variants: dict[str, ProbeRecord] = field(default_factory=dict)   # probe-init: init name -> record
    memory: dict[str, Any] | None = None     # R501/R502: {"oom": bool, "max_batch": int, "peak_bytes": ..., ...}
    env: dict[str, Any] = field(default_factory=dict)
    working_lr: float | None = None          # the lr used for M208/G407: recommended, else configured
    extra: dict[str, ProbeRecord] = field(default_factory=dict)   # transformer_probes.py: "warmup", "bf16", ...
    user_step: Any = None                    # G408: the diagnosis of the user's training step (user_step.py)
    source: str = "probe"                    # "probe" (nn-doctor's own loop) or "monitor" (the user's real run)

    def records(self) -> list[tuple[str, ProbeRecord]]:
        """Every probe record this context holds, each once, with the role it played."""
        out: list[tuple[str, ProbeRecord]] = []
        seen: set[int] = set()

        def add(role: str, rec: ProbeRecord | None) -> None:
            if rec is not None and id(rec) not in seen:
                seen.add(id(rec))
                out.append((role, rec))
        add("baseline", self.baseline)
        add("init", self.init)
        for lr, rec in sorted(self.lr_records.items(), reverse=True):
            add(f"lr {lr:g}", rec)
        for b, rec in sorted(self.batch.items()):
            add(f"batch {b}", rec)
        for k, rec in self.regularization.items():
            add(f"{k} regularisation", rec)
        for k, rec in self.optimizers.items():
            add(f"optimizer {k}", rec)
        add("capacity subset", self.subset_fit)
        add("tiny batch", self.tiny)
        for k, rec in self.init_variants.items():
            add(f"init {k}", rec)
        return out

    def configured_record(self) -> ProbeRecord | None:
        """The probe of the spec exactly as configured: the baseline, else the init probe, else the lr probe at
        the configured lr (probe-lr has only those)."""
        for rec in (self.baseline, self.init):
            if rec is not None:
                return rec
        return self.lr_records.get(self.spec.optimizer.lr)

    @property
    def task(self) -> str:
        return self.arrays.task if self.arrays is not None else (self.spec.task or "classification")
