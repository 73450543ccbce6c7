"""What the step 2-5 checks read: the spec, the data and the records of a run, gathered once.

Three producers fill it, and the same checks judge all three (`source` says which):

- "probe": full-report and the probe commands: the spec, the data and nn-doctor's own probe records;
- "monitor": nn_doctor.Monitor on the user's training loop: `baseline` is the monitored run's record
  (its settings hold what the Monitor saw of the optimizer and the inputs); there is no spec;
- "log": check-curves on a finished run's loss log: only `curve` (curves.CurveLog); no spec.

Every field but `source` may be None/empty (the probe was not run, was skipped for the budget, or its
prerequisite failed); a check whose input is missing returns nothing. Records are plain data
(ProbeRecord holds floats only), so checks never touch tensors. A check phrases its message for the
source (`run_name`) and writes its fix for a spec (`optimizer.lr: ...`) only when there is one; for the
user's own code it says what to change in the code (`fix_text`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..curves import CurveLog
    from ..data import ArrayData
    from ..probe import ProbeRecord
    from ..spec import Spec

# the run each source judges, as messages name it
RUN_NAMES = {"probe": "baseline probe", "monitor": "monitored run", "log": "logged run"}
SOURCES = tuple(RUN_NAMES)
INPUT_SCALED_MAX = 20.0  # a monitored input batch with max |x| <= 20 reads as normalised inputs (standardized
                         # data reaches ~5-10 in its tails; unscaled wine reaches 1680, raw pixels 255)


@dataclass
class ProbeContext:
    spec: Spec | None = None                 # None for the user's own run (Monitor, a log): nothing to patch
    arrays: ArrayData | None = None          # the numeric data the probes train on (None: data unusable)
    device: str = "cpu"
    model_summary: dict[str, Any] | None = None   # nn_doctor.model.model_summary(spec.model); None for user classes
    n_params: int | None = None
    n_outputs: int | None = None             # the model's output size, measured by a dummy forward
    output_range: tuple[float, float] | None = None   # min and max of the outputs at init on real training rows
    affine_error: float | None = None         # plan._affine_error: ~1e-7 when the model is one affine map (M208)
    build_error: Any = None                  # ModelBuildError when the model does not build
    # probes (see plan.py for how each is planned and run)
    init: ProbeRecord | None = None          # configured spec, short, per-layer stats at init (init_layers)
    baseline: ProbeRecord | None = None      # configured spec, the train/validation probe (curves, G checks);
                                             # the monitored run's record for the Monitor
    as_configured: ProbeRecord | None = None  # treatment.py: the configured spec trained for exactly its configured
                                             # steps when that is shorter than the baseline (fixes are judged on it)
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
    user_step: Any = None                    # G405/G408: the harness's record of the user's step (user_step.py)
    curve: CurveLog | None = None            # check-curves: the logged run's loss curves
    source: str = "probe"                    # one of SOURCES: who produced the records

    def __post_init__(self) -> None:
        if self.source not in RUN_NAMES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")

    def records(self) -> list[tuple[str, ProbeRecord]]:
        """Every probe record this context holds, each once, with the role it played."""
        out: list[tuple[str, ProbeRecord]] = []
        seen: set[int] = set()

        def add(role: str, rec: ProbeRecord | None) -> None:
            if rec is not None and id(rec) not in seen:
                seen.add(id(rec))
                out.append((role, rec))
        add("baseline", self.baseline)
        add("as configured", self.as_configured)
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
        return self.lr_records.get(self.spec.optimizer.lr) if self.spec is not None else None

    @property
    def task(self) -> str:
        if self.arrays is not None:
            return self.arrays.task
        return (self.spec.task if self.spec is not None else None) or "classification"

    @property
    def run_name(self) -> str:
        """'baseline probe', 'monitored run' or 'logged run': the run the curve and gradient checks judge."""
        return RUN_NAMES[self.source]

    def fix_text(self, for_spec: str, for_code: str) -> str:
        """The fix as a spec change when there is a spec, else as a change to the user's code."""
        return for_spec if self.spec is not None else for_code

    def setting(self, key: str) -> Any:
        """An optimizer setting of the run (lr, name, momentum, weight_decay, grad_clip): the spec's, or what
        the Monitor saw on the user's optimizer (None when unknown)."""
        if self.spec is not None:
            return getattr(self.spec.optimizer, key)
        rec = self.baseline
        return (rec.settings or {}).get(key) if rec is not None else None

    @property
    def inputs_unscaled(self) -> bool:
        """The inputs are raw: the spec does not normalise them, or the monitored batches reach beyond
        INPUT_SCALED_MAX."""
        if self.spec is not None:
            return self.spec.data.normalize == "none"
        top = (self.baseline.settings or {}).get("input_abs_max") if self.baseline is not None else None
        return top is not None and top > INPUT_SCALED_MAX
