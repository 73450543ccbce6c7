"""Step 3 checks (H300-H308) on real probes of the wine sample (seconds each, CPU, seed 0).

Every check is run on a configuration that must trigger it and on one that must not; the healthy
configuration (adam 1e-3, standardized wine) must raise no warning at all. ProbeContexts are built by
hand the way the doctor fills them: an lr sweep (lr_search.decades + decide), the configured probe as
the baseline, and the counterfactual probes (batch sizes at equal samples seen, weaker regularisation,
adam against the configured optimizer).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nn_doctor import lr_search
from nn_doctor.checks import REGISTRY, as_list
from nn_doctor.checks.context import ProbeContext
from nn_doctor.checks.hyper import CLEAR_FLOOR, CLEAR_MARGIN, HYPER_CODES, UNDERFIT_FRACTION
from nn_doctor.data import load_dataset, prepare_arrays
from nn_doctor.probe import DeviceData, ProbeRecord, ProbeSettings, run_probe
from nn_doctor.report import Finding
from nn_doctor.spec import Spec

WINE = Path(__file__).resolve().parents[1] / "sample_data" / "wine.csv"
STEPS = 150                                   # the lr probes' length
SWEEP = lr_search.decades(0.1, 1e-4)          # the seeds' descent: 0.1, 0.01, 0.001, 0.0001


@pytest.fixture(scope="module")
def wine():
    arrays = prepare_arrays(load_dataset(WINE, "label", seed=0))
    return arrays, DeviceData(arrays, torch.device("cpu"))


_memo: dict[tuple, ProbeRecord] = {}


def probe(wine, spec: Spec, steps: int = STEPS, overrides: dict | None = None, **settings) -> ProbeRecord:
    """run_probe, memoised: the sweeps of several tests share their probes."""
    key = (spec.model_dump_json(), steps, tuple(sorted(settings.items())), tuple(sorted((overrides or {}).items())))
    if key not in _memo:
        _memo[key] = run_probe(spec, wine[1], ProbeSettings(steps=steps, seed=0, **settings), overrides)
    return _memo[key]


def mlp(opt: str = "adam", lr: float = 1e-3, wd: float = 0.0, bs: int = 32, width: int = 64, depth: int = 1,
        layers: list | None = None, epochs: int = 10) -> Spec:
    if layers is None:
        layers = [{"type": "linear", "out": width}, {"type": "relu"}] * depth + [{"type": "linear", "out": 3}]
    return Spec.model_validate({
        "task": "classification", "data": {"normalize": "standardize"}, "model": {"layers": layers},
        "loss": "cross_entropy", "optimizer": {"name": opt, "lr": lr, "weight_decay": wd},
        "training": {"batch_size": bs, "epochs": epochs}})


def lr_context(wine, spec: Spec) -> ProbeContext:
    """The lr sweep the doctor runs (round 1: every decade plus the configured lr), the configured probe
    doubling as the baseline."""
    lrs = sorted(set(SWEEP + [spec.optimizer.lr]), reverse=True)
    records = {lr: probe(wine, spec.with_overrides(**{"optimizer.lr": lr})) for lr in lrs}
    return ProbeContext(spec=spec, arrays=wine[0], lr=lr_search.decide(records, SWEEP, spec.optimizer.lr),
                        lr_records=records, baseline=records[spec.optimizer.lr])


def findings(ctx: ProbeContext) -> dict[str, Finding]:
    out: dict[str, Finding] = {}
    for code in HYPER_CODES:
        for f in as_list(REGISTRY[code].func(ctx)):
            assert f.code == code and "\n" not in f.message and "\n" not in f.fix
            json.dumps(f.to_dict(), allow_nan=False)     # the evidence serialises
            out[code] = f
    return out


def test_every_code_is_registered():
    import nn_doctor.checks.hyper  # noqa: F401  (registers the checks)
    assert all(code in REGISTRY for code in HYPER_CODES)
    assert HYPER_CODES == [f"H30{i}" for i in range(9)]


# ---- the healthy configuration ----------------------------------------------------------------------

def test_healthy_adam_raises_no_warning(wine):
    spec = mlp()
    ctx = lr_context(wine, spec)
    # batch sizes at equal samples seen (150 steps at 32 = 600 at 8 = 37 at 128)
    ctx.batch = {8: probe(wine, mlp(bs=8), 600), 32: probe(wine, spec), 128: probe(wine, mlp(bs=128), 37)}
    got = findings(ctx)
    assert ctx.lr.configured_status == "converging"
    assert [f"{c} {f.severity.value}: {f.message}" for c, f in got.items() if f.severity.value != "info"] == []
    assert got["H306"].evidence["pattern"] == "learning"
    assert "H308" not in got       # the curve has flattened by the end of its 150 steps


# ---- H300 / H301: the lr ----------------------------------------------------------------------------

@pytest.mark.parametrize("opt,lr", [("adam", 1.0), ("sgd", 10.0)])
def test_h300_lr_too_high(wine, opt, lr):
    ctx = lr_context(wine, mlp(opt=opt, lr=lr))
    got = findings(ctx)
    f = got["H300"]
    assert f.severity.value == "error"
    assert ctx.lr.recommended is not None and ctx.lr.recommended < lr
    assert f.patch == {"optimizer.lr": ctx.lr.recommended}
    assert f"from {lr:g} to {ctx.lr.recommended:g}" in f.fix
    assert f.evidence["configured_probe"]["status"] == "diverged"
    assert f.evidence["recommended_probe"]["final_loss"] < 0.5 * f.evidence["recommended_probe"]["initial_loss"]
    assert {t["lr"] for t in f.evidence["tried"]} == set(SWEEP) | {lr}
    assert "H301" not in got
    assert got["H306"].evidence["pattern"] == "diverging"
    assert "H304" not in got and "H305" not in got


def test_h301_lr_too_low(wine):
    ctx = lr_context(wine, mlp(lr=1e-6))
    got = findings(ctx)
    f = got["H301"]
    assert f.severity.value == "warning" and "H300" not in got
    assert f.evidence["progress_ratio"] < lr_search.TOO_LOW_RATIO
    assert f.patch == {"optimizer.lr": ctx.lr.recommended} and ctx.lr.recommended >= 1e-3
    assert got["H306"].evidence["pattern"] == "plateau"
    assert "H305" not in got       # the lr explains the high loss; H305 stays quiet


# ---- H302: batch size -------------------------------------------------------------------------------

def test_h302_batch_too_large(wine):
    """Configured 128 on 142 rows: at equal samples seen it makes 37 updates where batch 32 makes 150."""
    spec = mlp(bs=128)
    ctx = ProbeContext(spec=spec, arrays=wine[0],
                       batch={32: probe(wine, mlp(bs=32), 150), 128: probe(wine, spec, 37),
                              512: probe(wine, mlp(bs=512), 9)})
    f = findings(ctx)["H302"]
    assert f.patch == {"training.batch_size": 32}
    runs = f.evidence["runs"]
    assert runs[32]["final_val_loss"] < (1 - CLEAR_MARGIN) * runs[128]["final_val_loss"]


def test_h302_out_of_memory_names_the_largest_batch_that_fits(wine):
    ctx = ProbeContext(spec=mlp(bs=4096), memory={"oom": True, "max_batch": 512})
    f = findings(ctx)["H302"]
    assert f.patch == {"training.batch_size": 512} and "4096" in f.message
    ctx.memory = {"oom": False, "max_batch": 8192}
    assert "H302" not in findings(ctx)


# ---- H303: regularisation ---------------------------------------------------------------------------

def test_h303_over_regularized(wine):
    spec = mlp(wd=1.0)      # adam's L2 at 1.0 holds the weights near zero
    weaker = {"optimizer.weight_decay": 0.0}
    ctx = ProbeContext(spec=spec, arrays=wine[0], regularization={
        "configured": probe(wine, spec), "weaker": probe(wine, spec.with_overrides(**weaker), overrides=weaker)})
    f = findings(ctx)["H303"]
    assert f.patch == weaker
    ev = f.evidence
    assert ev["weaker_probe"]["final_loss"] < (1 - CLEAR_MARGIN) * ev["configured_probe"]["final_loss"]
    assert ev["configured"]["weight_decay"] == 1.0


def test_h303_quiet_on_mild_regularization(wine):
    spec = mlp(opt="adamw", wd=1.0)   # decoupled: 1.0 x lr 1e-3 per step is mild (0.115 vs 0.092)
    weaker = {"optimizer.weight_decay": 0.0}
    ctx = ProbeContext(spec=spec, arrays=wine[0], regularization={
        "configured": probe(wine, spec), "weaker": probe(wine, spec.with_overrides(**weaker), overrides=weaker)})
    assert "H303" not in findings(ctx)


# ---- H304 / H305 / H306 / H308: the baseline's curves -----------------------------------------------

def test_h304_overfitting_on_a_tiny_training_set(wine):
    """12 training rows, two 512-unit layers, 300 steps: the training loss goes to ~0 while the validation
    loss bottoms out early and climbs back."""
    spec = mlp(width=512, depth=2, bs=12)
    ctx = ProbeContext(spec=spec, arrays=wine[0], baseline=probe(wine, spec, 300, subset=12))
    got = findings(ctx)
    f = got["H304"]
    assert f.severity.value == "warning"
    v = f.evidence["val"]
    assert v["rise_from_min"] > 0.3 and v["min_position"] < 0.5
    assert f.evidence["final_train_loss"] < 0.01 < f.evidence["generalisation_gap"]
    assert got["H306"].evidence["pattern"] == "overfitting"
    assert "H305" not in got and "H308" not in got


def test_h305_underfitting_one_sigmoid_unit(wine):
    """A one-unit sigmoid bottleneck at a working lr: both losses stay above half their start."""
    layers = [{"type": "linear", "out": 1}, {"type": "sigmoid"}, {"type": "linear", "out": 3}]
    ctx = lr_context(wine, mlp(lr=0.01, layers=layers))
    got = findings(ctx)
    assert ctx.lr.configured_status == "converging" and "H301" not in got
    f = got["H305"]
    assert f.evidence["train_ratio"] > UNDERFIT_FRACTION and f.evidence["val_ratio"] > UNDERFIT_FRACTION
    assert "capacity" in f.fix


def test_h305_defers_to_the_lr(wine):
    """Same bottleneck with ReLU at lr 1e-3: too slow, and a higher lr fixes it - H301, not H305."""
    layers = [{"type": "linear", "out": 1}, {"type": "relu"}, {"type": "linear", "out": 3}]
    got = findings(lr_context(wine, mlp(lr=1e-3, layers=layers)))
    assert "H301" in got and "H305" not in got


def test_h308_not_converged_and_its_coverage_rule(wine):
    spec = mlp(opt="sgd", lr=1e-3)     # plain sgd at 1e-3 falls slowly and steadily
    ctx = ProbeContext(spec=spec, arrays=wine[0], baseline=probe(wine, spec))
    f = findings(ctx)["H308"]
    assert f.patch == {"training.epochs": 20}
    assert f.evidence["last_quarter_drop_fraction"] >= f.evidence["thresholds"]["still_falling_fraction"]
    # 100 epochs of 5 steps = 500 steps: a 150-step probe says nothing about where that training ends
    ctx.spec = mlp(opt="sgd", lr=1e-3, epochs=100)
    assert "H308" not in findings(ctx)


# ---- H307: the optimizer ----------------------------------------------------------------------------

def test_h307_adam_beats_plain_sgd(wine):
    spec = mlp(opt="sgd", lr=1e-3)
    ctx = ProbeContext(spec=spec, arrays=wine[0],
                       optimizers={"configured": probe(wine, spec), "adam": probe(wine, mlp())})
    f = findings(ctx)["H307"]
    assert f.patch == {"optimizer.name": "adam", "optimizer.lr": 0.001}
    assert f.evidence["adam"]["final_loss"] < (1 - CLEAR_MARGIN) * f.evidence["configured"]["final_loss"]


def test_h307_quiet_when_sgd_works(wine):
    spec = mlp(opt="sgd", lr=0.1)      # sgd at 0.1 reaches 0.034, adam 1e-3 0.092
    ctx = ProbeContext(spec=spec, arrays=wine[0],
                       optimizers={"configured": probe(wine, spec), "adam": probe(wine, mlp())})
    assert "H307" not in findings(ctx)


# ---- edge cases on hand-made records ----------------------------------------------------------------

def _record(initial: float, final: float | None, stopped: str = "completed") -> ProbeRecord:
    return ProbeRecord(name="x", settings={}, overrides={}, initial_loss=initial, final_loss=final,
                       stopped=stopped, steps_run=150, losses=[initial] * 150)


def test_h300_without_a_recommendation_has_no_patch():
    res = lr_search.LrResult(configured=1.0, configured_status="diverged", reason="no probed lr worked",
                             tried=[{"lr": 1.0, "status": "diverged", "initial_loss": 1.1, "final_loss": None,
                                     "stopped": "diverged", "steps": 10}])
    f = findings(ProbeContext(spec=mlp(lr=1.0), lr=res))["H300"]
    assert f.patch is None and "no probed lr worked" in f.fix


def test_clearly_lower_needs_margin_and_floor():
    from nn_doctor.checks.hyper import clearly_lower
    assert clearly_lower(0.5, 1.0, 1.1)
    assert not clearly_lower(0.85, 1.0, 1.1)                      # within the 20% margin
    assert not clearly_lower(0.03, 0.06, 1.1)                     # -50%, but 0.03 < 5% of 1.1
    assert clearly_lower(0.03, 0.06, 0.06 / CLEAR_FLOOR / 2)      # ... unless the losses started that low
    assert not clearly_lower(None, 1.0, 1.0) and not clearly_lower(float("nan"), 1.0, 1.0)
