"""Step 2 (M200-M208) and step 4 (G400-G407) checks on real short trainings of the sample data.

Each case builds a ProbeContext the way the doctor does (spec -> arrays -> probes with fixed seeds on the
CPU) and runs one check function from the registry, asserting both that it fires on the faulty spec and
that it stays silent on the healthy one (ruff's trigger / non-trigger fixtures). Where a finding carries
a patch, the patched spec is checked again to show the patch removes the cause.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from nn_doctor.report import Finding
import torch

from nn_doctor.catalogue import CATALOGUE
from nn_doctor.checks import REGISTRY, NotRun, as_list
from nn_doctor.checks import gradients as G
from nn_doctor.checks import model as M
from nn_doctor.checks.context import ProbeContext
from nn_doctor.plan import tiny_settings
from nn_doctor.data import load_dataset, prepare_arrays
from nn_doctor.errors import ModelBuildError
from nn_doctor.lr_search import LrResult
from nn_doctor.model import build_model, count_parameters, model_summary
from nn_doctor.probe import DeviceData, ProbeRecord, ProbeSettings, run_probe
from nn_doctor.spec import parse_spec

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
CPU = torch.device("cpu")


# ---- building contexts -------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):   # tests/conftest.py
    yield


_DATA: dict[str, tuple] = {}


def dataset(name: str = "wine"):
    """(ArrayData, DeviceData) of a sample file, loaded once per test session."""
    if name not in _DATA:
        target = {"wine": "label", "breast_cancer": "label", "diabetes": "progression"}[name]
        arrays = prepare_arrays(load_dataset(SAMPLES / f"{name}.csv", target))
        _DATA[name] = (arrays, DeviceData(arrays, CPU))
    return _DATA[name]


def mlp(hidden: int = 64, n_out: int = 3, act: str = "relu", depth: int = 1) -> list[dict]:
    layers: list[dict] = []
    for _ in range(depth):
        layers += [{"type": "linear", "out": hidden}, {"type": act}]
    return layers + [{"type": "linear", "out": n_out}]


def make_spec(layers, loss="cross_entropy", init="default", normalize="standardize", opt="adam", lr=1e-3,
              normalize_target=False, **optimizer):
    return parse_spec({"data": {"normalize": normalize, "normalize_target": normalize_target},
                       "model": {"layers": layers, "init": init}, "loss": loss,
                       "optimizer": {"name": opt, "lr": lr, **optimizer}})


def context(spec, data: str = "wine", probes: tuple[str, ...] = (), *, working_lr: float | None = None,
            baseline: dict | None = None) -> ProbeContext:
    """What the doctor gathers: static facts, then the probes named in `probes` (init, baseline, subset, tiny)."""
    arrays, dev = dataset(data)
    ctx = ProbeContext(spec=spec, arrays=arrays, model_summary=model_summary(spec.model))
    try:
        model = build_model(spec.model, arrays.sample_shape, spec.base_dir)
        ctx.n_params = count_parameters(model)
        with torch.no_grad():
            ctx.n_outputs = int(model.eval()(torch.zeros((2,) + arrays.sample_shape)).shape[-1])
    except ModelBuildError as err:
        ctx.build_error = err
        return ctx
    ctx.working_lr = working_lr or spec.optimizer.lr
    at_working = spec.with_overrides(**{"optimizer.lr": ctx.working_lr})
    if "init" in probes:
        ctx.init = run_probe(spec, dev, ProbeSettings(name="init", steps=1, record_every=0, seed=0))
    if "baseline" in probes:
        ctx.baseline = run_probe(spec, dev, ProbeSettings(name="baseline", steps=150, seed=0, **(baseline or {})))
    if "subset" in probes:
        ctx.subset_fit = run_probe(at_working, dev, ProbeSettings(name="subset", steps=300, subset=256, seed=0),
                                   {"optimizer.lr": ctx.working_lr})
    if "tiny" in probes:
        ctx.tiny = run_probe(at_working, dev, ProbeSettings(name="tiny", seed=0, **tiny_settings()),
                             {"optimizer.lr": ctx.working_lr})
    return ctx


def run(code: str, ctx: ProbeContext):
    """The findings of one check (only that code enabled); a check that cannot run on this context (G408
    without a user step raises NotRun, which the report shows as not run) finds nothing."""
    try:
        return as_list(REGISTRY[code].func(ctx))
    except NotRun:
        return []


def one(code: str, ctx: ProbeContext):
    found = run(code, ctx)
    assert len(found) == 1, f"{code}: expected one finding, got {[f.message for f in found]}"
    return found[0]


def patched(ctx: ProbeContext, patch: dict, data: str = "wine", probes: tuple[str, ...] = ()) -> ProbeContext:
    return context(ctx.spec.with_overrides(**patch), data, probes)


# ---- the registry ------------------------------------------------------------------------------

def test_every_code_has_a_check_named_after_it():
    for code in M.MODEL_CODES + G.GRADIENT_CODES:
        assert code in REGISTRY, code
        assert REGISTRY[code].func.__name__ == "check_" + CATALOGUE[code].name.replace("-", "_")
        assert REGISTRY[code].func.__doc__.startswith(code)


# ---- the healthy baseline: nothing at warning or above -------------------------------------------

@pytest.fixture(scope="module")
def healthy() -> ProbeContext:
    return context(make_spec(mlp(64)), probes=("init", "baseline", "subset", "tiny"))


def test_healthy_two_layer_relu_mlp_has_no_model_or_gradient_findings(healthy):
    found = [f for code in M.MODEL_CODES + G.GRADIENT_CODES for f in run(code, healthy)]
    assert [f"{f.code} {f.severity.value}: {f.message}" for f in found if f.severity.rank >= 1] == []
    # the measurements the thresholds were set from
    assert healthy.init.initial_loss == pytest.approx(math.log(3), rel=0.1)
    assert healthy.tiny.final_loss < G.TINY_FRACTION * healthy.tiny.initial_loss


@pytest.mark.parametrize("code, constants", [
    ("G401", {"VANISH_RATIO": 10.0}),        # first/last grad norm measured ~0.46
    ("G402", {"EXPLODE_NORM": 0.0}),
    ("G403", {"DEAD_FRACTION": 0.0}),
    ("G406", {"UPDATE_RATIO_HIGH": 0.0}),
    ("G407", {"TINY_FRACTION": 0.0, "TINY_FLOOR": -1.0, "TINY_PLATEAU": 0.0}),   # near zero needs both; a plateau
])
def test_forced_thresholds_fire_on_the_healthy_records(healthy, monkeypatch, code, constants):
    """smdebug's trick: with the thresholds forced, the same records fire, so the thresholds decide."""
    assert run(code, healthy) == []
    for name, value in constants.items():
        monkeypatch.setattr(G, name, value)
    assert one(code, healthy).evidence      # the numbers and thresholds travel with the finding


def test_G407_near_zero_means_below_both_the_fraction_and_the_floor(healthy, monkeypatch):
    monkeypatch.setattr(G, "TINY_FRACTION", 0.0)     # healthy: 1.3% of the start, 0.014 < floor 0.05
    assert run("G407", healthy) == []
    monkeypatch.setattr(G, "TINY_FRACTION", 0.1)
    monkeypatch.setattr(G, "TINY_FLOOR", -1.0)       # 1.3% < 10%
    assert run("G407", healthy) == []


def test_forced_model_thresholds_fire_on_the_healthy_records(healthy, monkeypatch):
    monkeypatch.setattr(M, "STD_MIN_WEIGHT_LAYERS", 2)
    monkeypatch.setattr(M, "STD_RATIO_LOW", 1.0)       # measured last/first 0.33
    assert one("M205", healthy).evidence["std_ratio_last_first"] < 1.0
    monkeypatch.setattr(M, "INIT_LOSS_FACTOR", 1.01)   # measured 1.064 vs ln 3
    assert run("M207", healthy) == [] or one("M207", healthy).evidence["ratio"] < 1 / 1.01
    monkeypatch.setattr(M, "SMALL_PARAMS_PER_ROW", 100.0)
    monkeypatch.setattr(M, "SUBSET_FIT_FRACTION", 0.0)
    assert "too small" in one("M208", healthy).message


# ---- M200 ------------------------------------------------------------------------------------

def test_M200_reports_the_build_error_with_the_layer():
    ctx = context(make_spec([{"type": "linear", "out": 8, "in_features": 5}, {"type": "linear", "out": 3}]))
    f = one("M200", ctx)
    assert f.severity.value == "error" and "layers[0]" in f.message and "13" in f.message
    assert f.evidence["inferred"] == 13 and f.evidence["given"] == 5
    ctx.build_error = RuntimeError("boom")
    assert one("M200", ctx).message == "RuntimeError: boom"
    assert run("M200", context(make_spec(mlp()))) == []


# ---- M201 ------------------------------------------------------------------------------------

def test_M201_two_outputs_for_three_wine_classes():
    ctx = context(make_spec(mlp(64, n_out=2)))
    f = one("M201", ctx)
    assert f.evidence["outputs"] == 2 and f.evidence["expected"] == 3
    assert f.patch["model.layers"][-1] == {"type": "linear", "out": 3}
    assert run("M201", patched(ctx, f.patch)) == []


def test_M201_binary_cross_entropy_with_one_output():
    ctx = context(make_spec(mlp(16, n_out=1)), data="breast_cancer")
    f = one("M201", ctx)
    assert f.evidence["expected"] == 2 and "bce_with_logits" in f.fix
    # one logit is right for bce_with_logits
    assert run("M201", context(make_spec(mlp(16, n_out=1), loss="bce_with_logits"), data="breast_cancer")) == []


# ---- M202 ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def softmax_ctx() -> ProbeContext:
    return context(make_spec(mlp(64) + [{"type": "softmax"}]), probes=("tiny",))


def test_M202_softmax_before_cross_entropy_and_its_patch(softmax_ctx):
    f = one("M202", softmax_ctx)
    assert f.severity.value == "error" and "softmax" in f.message
    fixed = patched(softmax_ctx, f.patch)
    assert fixed.model_summary["last_activation"] is None
    assert [l.type for l in fixed.spec.model.layers] == ["linear", "relu", "linear"]
    assert run("M202", fixed) == []


def test_M202_log_softmax_before_cross_entropy_is_only_info():
    # log_softmax is idempotent: CE on log-probabilities equals CE on logits, so this is redundant, not wrong
    f = one("M202", context(make_spec(mlp() + [{"type": "log_softmax"}])))
    assert f.severity.value == "info"


def test_M202_nll_and_bce_want_log_probabilities_and_probabilities():
    f = one("M202", context(make_spec(mlp(), loss="nll")))
    assert f.patch == {"loss": "cross_entropy"}
    f = one("M202", context(make_spec(mlp() + [{"type": "softmax"}], loss="nll")))
    assert f.patch["model.layers"][-1]["type"] == "log_softmax"
    assert run("M202", context(make_spec(mlp() + [{"type": "log_softmax"}], loss="nll"))) == []
    f = one("M202", context(make_spec(mlp(16, n_out=1), loss="bce"), data="breast_cancer"))
    assert f.patch == {"loss": "bce_with_logits"}
    assert run("M202", context(make_spec(mlp(16, n_out=1) + [{"type": "sigmoid"}], loss="bce"),
                               data="breast_cancer")) == []
    f = one("M202", context(make_spec(mlp(16, n_out=1) + [{"type": "sigmoid"}], loss="bce_with_logits"),
                            data="breast_cancer"))
    assert f.patch["model.layers"][-1]["type"] == "linear"


@pytest.mark.parametrize("last, data, loss, n_out", [
    ("relu", "wine", "cross_entropy", 3), ("tanh", "wine", "cross_entropy", 3),
    ("relu", "breast_cancer", "bce_with_logits", 1), ("tanh", "breast_cancer", "bce_with_logits", 1),
])
def test_M202_a_final_activation_that_clips_the_logits(last, data, loss, n_out):
    """A ReLU or tanh on the logits (Theia / DeepLocalize: the wrong last-layer activation): found by
    checking new-user specs by hand; the healthy stack (no final activation) stays silent."""
    f = one("M202", context(make_spec(mlp(16, n_out=n_out) + [{"type": last}], loss=loss), data=data))
    assert f.severity.value == "error" and f"ends in {last}, which clips the logits" in f.message
    assert f.patch["model.layers"][-1]["type"] == "linear"
    assert run("M202", context(make_spec(mlp(16, n_out=n_out), loss=loss), data=data)) == []


def test_M202_relu_output_on_a_standardized_regression_target():
    layers = mlp(32, n_out=1) + [{"type": "relu"}]
    f = one("M202", context(make_spec(layers, loss="mse", normalize_target=True), data="diabetes"))
    assert 0.3 < f.evidence["fraction_outside"] < 0.7 and f.evidence["target_min"] < 0
    assert f.patch["model.layers"][-1]["type"] == "linear"
    # the raw progression score is positive: a relu output can produce it
    assert run("M202", context(make_spec(layers, loss="mse"), data="diabetes")) == []
    # a sigmoid cannot (values up to ~346)
    f = one("M202", context(make_spec(mlp(32, n_out=1) + [{"type": "sigmoid"}], loss="mse"), data="diabetes"))
    assert f.evidence["fraction_outside"] == 1.0


# ---- M203 ------------------------------------------------------------------------------------

def test_M203_mse_on_wine_labels():
    ctx = context(make_spec(mlp(), loss="mse"))
    f = one("M203", ctx)
    assert f.severity.value == "error" and f.patch == {"loss": "cross_entropy"}
    assert run("M203", patched(ctx, f.patch)) == []
    assert run("M203", context(make_spec(mlp()))) == []


def test_M203_bce_on_three_classes_and_cross_entropy_on_regression():
    ctx = context(make_spec(mlp(n_out=1), loss="bce_with_logits"))
    f = one("M203", ctx)
    assert f.patch["loss"] == "cross_entropy" and f.patch["model.layers"][-1]["out"] == 3
    fixed = patched(ctx, f.patch)
    assert run("M203", fixed) == [] and run("M201", fixed) == []
    f = one("M203", context(make_spec(mlp(n_out=1)), data="diabetes"))
    assert f.patch == {"loss": "mse"}


# ---- M204 / G405 -------------------------------------------------------------------------------

def test_M204_zero_init_and_what_it_does_to_the_gradients():
    ctx = context(make_spec(mlp(), init="zeros"), probes=("init", "baseline"))
    f = one("M204", ctx)
    assert f.severity.value == "error" and f.patch == {"model.init": "he"}
    assert f.evidence["zero_std_at_init"] == ["0:linear"]
    # Zero weights: relu(0) = 0 for every hidden unit, so the output layer's weights see zero inputs and
    # the first layer gets W2^T delta = 0 -- exactly zero gradients, so Adam never moves them. Only the
    # output bias learns. G405 names them; every hidden unit is dead (G403, an error: no signal passes).
    g = one("G405", ctx)
    assert g.evidence["params_unchanged"] == ["0.weight", "0.bias", "2.weight"]
    assert g.patch == {"model.init": "he"}
    assert one("G403", ctx).severity.value == "error"
    assert run("G401", ctx) == []        # zero gradients of a zero init are M204's, not "vanishing"
    fixed = patched(ctx, f.patch, probes=("baseline",))
    assert run("M204", fixed) == [] and run("G405", fixed) == []
    assert one("M204", context(make_spec(mlp(act="tanh"), init={"constant": 0.1}))).patch == {"model.init": "xavier"}
    assert run("M204", context(make_spec(mlp(), init="he"))) == []


def test_M204_measures_a_user_class_with_constant_weights(tmp_path):
    (tmp_path / "constnet.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class ConstNet(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc1, self.act, self.fc2 = nn.Linear(13, 16), nn.Tanh(), nn.Linear(16, 3)\n"
        "        nn.init.constant_(self.fc1.weight, 0.1)\n"
        "    def forward(self, x):\n"
        "        return self.fc2(self.act(self.fc1(x)))\n")
    spec = parse_spec({"model": {"class": "constnet:ConstNet"}, "loss": "cross_entropy"}, base_dir=tmp_path)
    ctx = ProbeContext(spec=spec, arrays=dataset()[0], n_outputs=3)
    f = one("M204", ctx)
    assert f.evidence["identical_unit_layers"] == ["fc1:linear"]
    assert run("M201", ctx) == []


# ---- M205 / M206 / G401 -------------------------------------------------------------------------

def test_M206_and_G401_ten_layer_sigmoid_net_and_the_relu_patch():
    ctx = context(make_spec(mlp(32, act="sigmoid", depth=10), init="xavier"), probes=("init", "baseline"))
    f = one("M206", ctx)
    assert f.evidence["n_saturating"] == 10
    g = one("G401", ctx)
    grads = g.evidence["grad_norm_init"]
    assert list(grads)[0] == "0:linear" and len(grads) == 11      # every weight layer, first to last
    assert g.evidence["ratio_first_last"] < G.VANISH_RATIO and g.severity.value == "warning"
    assert g.patch == f.patch and g.patch["model.init"] == "he"
    fixed = patched(ctx, g.patch, probes=("init", "baseline"))
    assert {l.type for l in fixed.spec.model.layers} == {"linear", "relu"}
    assert run("M206", fixed) == [] and run("G401", fixed) == []


def test_M206_not_with_normalisation_or_residual_connections():
    sig = mlp(32, act="sigmoid", depth=5)
    assert one("M206", context(make_spec(sig))).evidence["n_saturating"] == 5
    with_bn = [l for pair in zip(sig[0::2], [{"type": "batchnorm1d"}] * 6, sig[1::2]) for l in pair] + sig[-1:]
    assert run("M206", context(make_spec(with_bn))) == []
    block = [{"type": "linear", "out": 32}, {"type": "sigmoid"}]
    residual = block + [{"type": "residual", "layers": block}] * 4 + [{"type": "linear", "out": 3}]
    assert run("M206", context(make_spec(residual))) == []


def test_G401_is_an_error_when_the_first_layer_gets_about_zero():
    ctx = context(make_spec(mlp(32, act="sigmoid", depth=10)), probes=("baseline",))   # torch default init
    g = one("G401", ctx)
    assert g.severity.value == "error" and g.evidence["grad_norm_init"]["0:linear"] < G.VANISH_ZERO


def test_M205_activation_std_profile_xavier_vs_he_in_a_sigmoid_net():
    ratios = {}
    for init in ("xavier", "he"):
        ctx = context(make_spec(mlp(32, act="sigmoid", depth=10), init=init), probes=("init",))
        ratios[init] = M.std_ratio(ctx.init)
        assert len(M.activation_std_profile(ctx.init)) == 11
        assert run("M205", ctx) == []                 # neither leaves [0.1, 10]: M206/G401 report this net
    assert ratios["xavier"] == pytest.approx(1.0, abs=0.3)
    assert ratios["xavier"] / ratios["he"] > 3        # he's gain sqrt(2) over-drives sigmoids: 0.22


@pytest.mark.parametrize("init, fires, direction", [
    ({"normal": 3.0}, True, "grows"),
    ("xavier", True, "shrinks"),        # the spec's example: xavier in a deep ReLU net (measured 0.026)
    ("he", False, None),                # he matches ReLU (0.40)
    ("default", False, None),           # torch's default (0.15)
])
def test_M205_deep_relu_net(init, fires, direction):
    ctx = context(make_spec(mlp(32, depth=8), init=init), probes=("init",))
    found = run("M205", ctx)
    assert bool(found) == fires
    if fires:
        assert direction in found[0].message and found[0].patch == {"model.init": "he"}


# ---- M207 ------------------------------------------------------------------------------------

def test_M207_initial_loss_far_from_ln_C_on_unscaled_wine():
    f = one("M207", context(make_spec(mlp(), normalize="none"), probes=("init",)))
    assert f.evidence["expected"] == pytest.approx(math.log(3)) and f.evidence["ratio"] > 10
    assert f.patch == {"data.normalize": "standardize"}
    f = one("M207", context(make_spec(mlp(32, depth=8), init={"normal": 3.0}), probes=("init",)))
    assert f.patch == {"model.init": "he"}


def test_M207_mse_expects_mean_square_of_the_target():
    # untrained outputs are ~0, so the MSE at init is ~mean(y^2) (= variance + mean^2); the raw diabetes
    # target (mean 152) gives 28,851 vs 28,860 expected: no finding (its scale is D108's business)
    for nt in (False, True):
        ctx = context(make_spec(mlp(32, n_out=1), loss="mse", normalize_target=nt), data="diabetes",
                      probes=("init",))
        assert run("M207", ctx) == []
    assert M.expected_initial_loss(ctx)[0] == pytest.approx(1.0, abs=0.01)


# ---- M208 ------------------------------------------------------------------------------------

def test_M208_a_width_one_mlp_is_too_small():
    ctx = context(make_spec(mlp(1)), probes=("subset",), working_lr=1e-2)
    f = one("M208", ctx)
    assert "too small" in f.message and f.evidence["n_params"] == 20
    assert f.evidence["fraction"] > M.SUBSET_FIT_FRACTION
    assert f.patch["model.layers"][0]["out"] == 6           # max(2 x 1, 2 x 3 outputs)
    assert f.fix == "widen the hidden layers: out [1] -> [6]"


def test_M208_far_more_parameters_than_rows_is_too_big():
    f = one("M208", context(make_spec(mlp(512, depth=2))))
    assert "too big" in f.message and f.evidence["params_per_row"] > M.BIG_PARAMS_PER_ROW


# ---- G400 / G402 -------------------------------------------------------------------------------

def test_G400_sgd_lr_10_on_unscaled_wine_goes_non_finite():
    ctx = context(make_spec(mlp(32, depth=4), normalize="none", opt="sgd", lr=10.0), probes=("baseline",))
    f = one("G400", ctx)
    assert isinstance(f.evidence["step"], int) and f.evidence["where"] in ("forward", "loss", "gradient", "weights")
    assert f"step {f.evidence['step']}" in f.message and f.evidence["where"] in f.message
    assert f.patch == {"optimizer.grad_clip": 1.0} and "data.normalize: standardize" in f.fix
    ctx.lr = LrResult(recommended=0.01)
    assert one("G400", ctx).patch == {"optimizer.lr": 0.01}


def test_G402_large_normal_init_explodes_the_gradients():
    ctx = context(make_spec(mlp(32, depth=8), init={"normal": 3.0}), probes=("baseline",))
    f = one("G402", ctx)
    assert max(v for v in f.evidence["total_grad_norm"].values()) > G.EXPLODE_NORM
    assert f.patch == {"optimizer.grad_clip": 1.0}


# ---- G403 / G404 -------------------------------------------------------------------------------

def test_G403_sgd_at_lr_5_kills_the_second_relu_layer():
    ctx = context(make_spec(mlp(16, depth=2), opt="sgd", lr=5.0), probes=("baseline",))
    f = one("G403", ctx)
    assert f.evidence["dead_fraction"]["3:relu"] == 1.0 and f.evidence["dead_fraction"]["1:relu"] < 0.5
    assert f.severity.value == "error"           # a fully dead layer passes no signal
    assert [l["type"] for l in f.patch["model.layers"]].count("leaky_relu") == 2
    # the updates before a dead layer are ~0; that is the dead layer's doing, not a too-low lr
    assert run("G406", ctx) == []
    fixed = patched(ctx, f.patch, probes=("baseline",))   # the patch works: leaky units recover
    assert fixed.baseline.layers[-1]["stats"]["3:leaky_relu"]["dead_frac"] < 0.5 and run("G403", fixed) == []


def test_G403_counts_only_relu_units_as_dead():
    """A leaky/elu/gelu unit that is <= 0 on every sample still has a gradient: not dead (synthetic record)."""
    def ctx_with(kind_name: str) -> ProbeContext:
        stats = {kind_name: {"act_mean": 0.0, "act_std": 1.0, "dead_frac": 1.0}}
        rec = ProbeRecord(name="baseline", settings={}, overrides={}, init_layers=stats,
                          layers=[{"step": 0, "stats": stats}], layer_kinds={kind_name: "activation"})
        return ProbeContext(spec=make_spec(mlp()), arrays=dataset()[0], baseline=rec)
    assert one("G403", ctx_with("1:relu")).evidence["dead_fraction"] == {"1:relu": 1.0}
    assert run("G403", ctx_with("1:leaky_relu")) == [] and run("G403", ctx_with("1:gelu")) == []


def test_G404_tanh_on_unscaled_wine_saturates():
    f = one("G404", context(make_spec(mlp(64, act="tanh"), normalize="none"), probes=("baseline",)))
    assert f.evidence["saturated_fraction"]["1:tanh"] > 0.9
    assert f.patch == {"data.normalize": "standardize"}
    assert run("G404", context(make_spec(mlp(64, act="tanh")), probes=("baseline",))) == []


# ---- G406 ------------------------------------------------------------------------------------

def test_G406_update_ratio_too_small_and_too_big():
    ctx = context(make_spec(mlp(), lr=1e-7), probes=("baseline",))
    f = one("G406", ctx)
    assert f.evidence["median"] < G.UPDATE_RATIO_LOW and "raise" in f.fix and f.patch["optimizer.lr"] > 1e-7
    ctx.lr = LrResult(recommended=3e-3)
    assert one("G406", ctx).patch == {"optimizer.lr": 3e-3}
    f = one("G406", context(make_spec(mlp(), lr=1.0), probes=("baseline",)))
    assert f.evidence["median"] > G.UPDATE_RATIO_HIGH and f.patch["optimizer.lr"] < 1.0


# ---- G407 ------------------------------------------------------------------------------------

def _triaged(ctx: ProbeContext, codes: list[str]) -> dict[str, Finding]:
    """The codes' findings after the triage pass links each symptom to its found causes."""
    from nn_doctor.checks import load_checks
    from nn_doctor.triage import triage
    for letter in {c[0] for c in codes}:
        load_checks(letter)
    found = [f for c in codes for f in run(c, ctx)]
    triage(found)
    return {f.code: f for f in found}


def test_G407_softmax_before_cross_entropy_cannot_overfit_ten_samples(softmax_ctx):
    # the double softmax bounds the loss below by -ln(e / (e + 2)) = 0.55 for 3 classes
    f = one("G407", softmax_ctx)
    assert f.evidence["samples"] == 10 and f.evidence["final_loss"] > 0.5
    found = _triaged(softmax_ctx, ["M202", "G407"])
    assert found["G407"].explained_by == ["M202"] and not found["M202"].explained_by


def test_G407_one_unit_bottleneck_cannot_overfit_ten_samples():
    ctx = context(make_spec(mlp(1)), probes=("tiny",), working_lr=1e-2)
    f = one("G407", ctx)
    assert f.evidence["fraction"] > G.TINY_FRACTION and f.patch is None
    assert _triaged(ctx, ["M208", "G407"])["G407"].explained_by == []   # no capacity probe: nothing explains it
    ctx.subset_fit = context(make_spec(mlp(1)), probes=("subset",), working_lr=1e-2).subset_fit
    assert _triaged(ctx, ["M208", "G407"])["G407"].explained_by == ["M208"]   # the capacity probe: M208 does


def test_G407_a_slow_net_that_memorises_before_the_cap_is_not_cannot():
    """zoo m208_too_narrow and m208_user_affine_stack read G407 (an error) on one seed of three: at 200 steps
    their loss was still falling fast. A 2-unit tanh net on wine at lr 3e-3 is 36% of its start at step 200,
    and memorises its 10 rows by step ~700; the probe then stops early, as a healthy net does much sooner."""
    from nn_doctor.plan import TINY_STEPS
    ctx = context(make_spec(mlp(2, act="tanh")), probes=("tiny",), working_lr=3e-3)
    assert ctx.tiny.stopped == "fitted" and 200 < ctx.tiny.steps_run < TINY_STEPS
    assert run("G407", ctx) == []
    healthy = context(make_spec(mlp(32)), probes=("tiny",), working_lr=1e-2)
    assert healthy.tiny.stopped == "fitted" and healthy.tiny.steps_run <= 200


def test_G407_needs_a_plateau():
    """Still falling by more than 10% over the last quarter of the cap is slow (the lr's findings), not cannot:
    a 32-unit sigmoid net at lr 3e-4 ends at 12% of its start, falling."""
    ctx = context(make_spec(mlp(32, act="sigmoid")), probes=("tiny",), working_lr=3e-4)
    assert ctx.tiny.final_loss > G.TINY_FRACTION * ctx.tiny.initial_loss
    assert run("G407", ctx) == []


def test_G407_ten_layer_sigmoid_net_points_at_M206():
    ctx = context(make_spec(mlp(32, act="sigmoid", depth=10), init="xavier"), probes=("tiny",))
    assert "M206" in _triaged(ctx, ["M206", "G407"])["G407"].explained_by


def test_G407_label_smoothing_floor():
    spec = parse_spec({"model": {"layers": mlp()}, "loss": {"name": "cross_entropy", "label_smoothing": 0.1},
                       "data": {"normalize": "standardize"}})
    ctx = context(spec, probes=("tiny",))
    assert G.loss_floor(ctx) == pytest.approx(0.2907, abs=1e-3)
    assert ctx.tiny.final_loss > G.TINY_FRACTION * ctx.tiny.initial_loss   # would fire without the floor
    assert run("G407", ctx) == []


# ---- fault zoo regressions (benchmarks/zoo): wrong or extra diagnoses the zoo found ------------------

def _user_spec(tmp_path: Path, module: str, source: str, cls: str, data: str = "wine", **spec) -> ProbeContext:
    (tmp_path / f"{module}.py").write_text(source)
    raw = {"model": {"class": f"{module}:{cls}"}, "loss": "cross_entropy" if data == "wine" else "mse",
           "data": {"normalize": "standardize", "normalize_target": data == "diabetes"}, **spec}
    return parse_spec(raw, base_dir=tmp_path)


UNUSED_HEAD = """
import torch
from torch import nn
class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(13, 32), nn.ReLU())
        self.head = nn.Linear(32, 3)
        self.aux_head = nn.Linear(32, 3)      # built, never called
    def forward(self, x):
        return self.head(self.body(x))
"""


def test_M205_ignores_a_layer_that_never_runs_and_needs_four_weight_layers(tmp_path):
    """zoo g405_unused_layer: the unused head has no output statistics and read as an overflow (M205 'grows
    to n/a'); zoo ok_friedman_gelu_adamw: a 3-layer GELU MLP with torch's default init shrinks 0.069x and
    trains fine -- two layer-to-layer steps, one into the output layer, are no trend."""
    spec = _user_spec(tmp_path, "zoo_two_heads", UNUSED_HEAD, "TwoHeads")
    ctx = context(spec, probes=("init", "baseline"))
    assert "aux_head:linear" in ctx.init.init_layers and "act_std" not in ctx.init.init_layers["aux_head:linear"]
    assert [n for n, _ in M.activation_std_profile(ctx.init)] == ["body.0:linear", "head:linear"]
    assert run("M205", ctx) == []
    assert one("G405", ctx).evidence["params_without_grad"] == ["aux_head.weight", "aux_head.bias"]
    stats = {f"{i}:linear": {"act_std": s} for i, s in zip((0, 2, 4), (0.64, 0.22, 0.045))}
    rec = ProbeRecord(name="init", settings={}, overrides={}, init_layers=stats,
                      layer_kinds={n: "linear" for n in stats})
    gelu = ProbeContext(spec=make_spec(mlp(64, act="gelu", depth=2)), arrays=dataset()[0], init=rec)
    assert M.std_ratio(rec) < M.STD_RATIO_LOW and run("M205", gelu) == []


def test_M207_compares_mse_on_the_error_scale():
    """zoo ok_diabetes_tanh_xavier (seed 2): a xavier tanh regression head starts at MSE 3.45 for a
    standardized target (RMSE 1.86x): normal, not 'abnormal'. 12x (RMSE 3.5x) still is."""
    spec = make_spec(mlp(32, n_out=1, act="tanh"), loss="mse", init="xavier", normalize_target=True)
    ctx = ProbeContext(spec=spec, arrays=dataset("diabetes")[0], model_summary=model_summary(spec.model))
    expected, _ = M.expected_initial_loss(ctx)
    for loss, fires in ((3.45 * expected, False), (12.0 * expected, True), (expected / 12.0, True)):
        ctx.init = ProbeRecord(name="init", settings={}, overrides={}, initial_loss=loss, losses=[loss])
        found = run("M207", ctx)
        assert bool(found) == fires, loss
        if found:
            assert "error scale" in found[0].message and found[0].evidence["compared_on"].startswith("the error")


NEGATIVE_BIAS = """
import torch
from torch import nn
class NegativeBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, 3)
        with torch.no_grad():
            self.fc1.bias.fill_(-5.0)         # every ReLU starts (and stays) dead
    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))
"""


def test_G401_not_when_a_fully_dead_relu_layer_cuts_the_gradient(tmp_path):
    """zoo g403_dead_relu_bias: a dead layer passes no gradient back, so the first layer's is 0 -- G403 (an
    error) names the cause; G401 'vanishing' (also an error) came first in the report and was wrong."""
    ctx = context(_user_spec(tmp_path, "zoo_negative_bias", NEGATIVE_BIAS, "NegativeBias"), probes=("baseline",))
    assert one("G403", ctx).severity.value == "error"
    assert run("G401", ctx) == []


LOG_FEATURES = """
import torch
from torch import nn
class LogFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    def forward(self, x):
        return self.net(torch.log(x + 1.0))   # standardized inputs below -1: NaN
"""


def test_G402_not_when_the_forward_pass_was_never_finite(tmp_path):
    """zoo g400_log_of_negative: NaN from the first forward pass is G400's; G402 read the NaN gradient
    norm as an 'overflow' (an error) though no gradient ever grew."""
    ctx = context(_user_spec(tmp_path, "zoo_log_features", LOG_FEATURES, "LogFeatures", data="diabetes"),
                  data="diabetes", probes=("baseline",))
    assert one("G400", ctx).evidence["where"] in ("forward", "loss")
    assert run("G402", ctx) == []
    # a real explosion (finite, then huge) still fires
    ctx = context(make_spec(mlp(32, depth=8), init={"normal": 3.0}), probes=("baseline",))
    assert one("G402", ctx)


def test_G407_never_comes_before_the_earlier_step_that_explains_it():
    """zoo m206_deep_sigmoid, m208_too_narrow, h303_weight_decay, h307_sgd_no_momentum: an explained G407
    (error) became the report's first fix over its cause (a step 2 or 3 warning). The triage pass now links
    it to its cause and the report names the cause first; unexplained (a bug) it stays first."""
    from nn_doctor.report import Report
    ctx = context(make_spec(mlp(32, act="sigmoid", depth=10), init="xavier"), probes=("tiny",))
    found = _triaged(ctx, ["M206", "G407"])
    report = Report("full-report", findings=list(found.values()))
    assert found["G407"].explained_by == ["M206"] and report.finalize().first_fix == "M206"
    ctx = context(make_spec(mlp(1)), probes=("tiny",), working_lr=1e-2)      # nothing explains it
    report = Report("full-report", findings=run("G407", ctx))
    assert report.finalize().first_fix == "G407" and report.findings[0].severity.value == "error"
    # weight decay 1.0 (the tiny probe drops dropout, not weight decay): H303 explains it
    spec = make_spec(mlp(32), lr=3e-3, weight_decay=1.0)
    ctx = context(spec, probes=("baseline", "tiny"), working_lr=3e-3)
    weaker = context(spec.with_overrides(**{"optimizer.weight_decay": 0.0}), probes=("baseline",)).baseline
    weaker.overrides = {"optimizer.weight_decay": 0.0}
    ctx.regularization = {"configured": ctx.baseline, "weaker": weaker}
    found = _triaged(ctx, ["H303", "G407"])
    assert found["G407"].explained_by == ["H303"]
    assert Report("full-report", findings=list(found.values())).finalize().first_fix == "H303"

# ---- M205 on nets too shallow for the depth trend ---------------------------------------------------------

@pytest.mark.parametrize("init, act, fires", [
    ({"normal": 3.0}, "tanh", True),      # fresh zoo (DeepDiagnosis): N(0, 3) weights saturate every tanh unit
    ({"normal": 1.0}, "relu", True),      # torch.randn-style weights: gain 8 in the 64 -> 64 layer
    ("default", "tanh", False), ("xavier", "tanh", False), ("lecun", "tanh", False), ("orthogonal", "tanh", False),
    ("he", "relu", False), ("default", "relu", False),
])
def test_M205_a_shallow_net_whose_weights_are_drawn_far_too_wide(init, act, fires):
    ctx = context(make_spec(mlp(64, act=act, depth=2), init=init), probes=("init",))
    assert len(M.activation_std_profile(ctx.init)) < M.STD_MIN_WEIGHT_LAYERS     # no depth trend to read
    gains = {n: s["w_gain"] for n, s in ctx.init.init_layers.items() if "w_gain" in s}
    assert len(gains) == 3
    found = run("M205", ctx)
    assert bool(found) == fires, (init, act, gains)
    if fires:
        f = found[0]
        assert "too wide" in f.message and f.patch == {"model.init": "xavier" if act == "tanh" else "he"}
        assert max(f.evidence["weight_gain"].values()) > M.INIT_GAIN_FACTOR * M.INIT_GAIN_REF
        fixed = patched(ctx, f.patch, probes=("init",))
        assert run("M205", fixed) == []
    else:
        assert max(gains.values()) < M.INIT_GAIN_FACTOR * M.INIT_GAIN_REF / 2   # healthy schemes: far below the bar


def test_M205_shallow_rule_leaves_normalised_nets_alone():
    layers = [{"type": "linear", "out": 64}, {"type": "batchnorm1d"}, {"type": "tanh"}, {"type": "linear", "out": 3}]
    ctx = context(make_spec(layers, init={"normal": 3.0}), probes=("init",))
    assert run("M205", ctx) == []       # batch norm rescales the pre-activations whatever the weights' scale


# ---- M208's widening patch reaches recurrent and conv layers ---------------------------------------------

def test_M208_widening_covers_recurrent_and_conv_hidden_layers():
    lstm = [{"type": "lstm", "out": 2}, {"type": "linear", "out": 10}]
    assert M.widened(lstm, 10) == [{"type": "lstm", "out": 20}, {"type": "linear", "out": 10}]
    assert M.widths(lstm) == [2]
    cnn = [{"type": "conv2d", "out": 4, "kernel_size": 3}, {"type": "relu"}, {"type": "flatten"},
           {"type": "linear", "out": 16}, {"type": "relu"}, {"type": "linear", "out": 10}]
    assert M.widths(M.widened(cnn, 10)) == [20, 32]
    assert M.widened([{"type": "linear", "out": 3}], 3)[0] == {"type": "linear", "out": M.HIDDEN_WIDTH}
