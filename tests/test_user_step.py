"""The user's own training step (G408, G405): each bug of seeds/000 "实现代码问题" and seeds/001 "权重更新规则错误"
written the way a user writes it, in a module imported through `training.step`, diagnosed by the harness
on the wine sample (CPU, fixed seeds, well under a second each). The correct step must come out clean.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from nn_doctor.catalogue import Severity
from nn_doctor.checks import REGISTRY, codes_for_step, load_checks, run_checks
from nn_doctor.checks.context import ProbeContext
from nn_doctor.data import load_dataset, prepare_arrays
from nn_doctor.errors import UsageError
from nn_doctor.probe import DeviceData
from nn_doctor.report import Report
from nn_doctor.spec import parse_spec
from nn_doctor.checks.user_step import ACCUM_MATCH, ASCENT_COS, LR_SCALE_MIN, step_bugs
from nn_doctor.user_step import diagnose_step, load_step

WINE = Path(__file__).resolve().parents[1] / "sample_data" / "wine.csv"

USER_CODE = '''
import torch
from torch import nn


def train_step(model, batch, optimizer, loss_fn):
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def step_without_zero_grad(model, batch, optimizer, loss_fn):
    x, y = batch
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def step_gradient_ascent(model, batch, optimizer, loss_fn):
    lr = optimizer.param_groups[0]["lr"]
    x, y = batch
    model.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    for p in model.parameters():
        p.data += lr * p.grad
    return loss


def step_without_lr(model, batch, optimizer, loss_fn):
    x, y = batch
    model.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    for p in model.parameters():
        p.data -= p.grad
    return loss.item()


def step_in_eval_mode(model, batch, optimizer, loss_fn):
    model.eval()
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def step_under_no_grad(model, batch, optimizer, loss_fn):
    x, y = batch
    optimizer.zero_grad()
    with torch.no_grad():
        loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def step_no_grad_workaround(model, batch, optimizer, loss_fn):
    x, y = batch
    optimizer.zero_grad()
    with torch.no_grad():
        out = model(x)
    loss = loss_fn(out, y)
    loss.requires_grad = True      # "fixes" the RuntimeError
    loss.backward()
    optimizer.step()
    return loss


def step_own_optimizer_on_head(model, batch, optimizer, loss_fn):
    head = torch.optim.SGD(model[-1].parameters(), lr=0.01)
    x, y = batch
    head.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    head.step()
    return loss


def step_with_shape_bug(model, batch, optimizer, loss_fn):
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x.t()), y)
    loss.backward()
    optimizer.step()
    return loss


def step_without_update(model, batch, optimizer, loss_fn):
    x, y = batch
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    return loss


def step_zero_grad_too_late(model, batch, optimizer, loss_fn):
    x, y = batch
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return loss


def step_wrong_signature(model, batch):
    return 0.0


class FrozenFirst(nn.Module):
    """A "pretrained" first layer left frozen by mistake."""

    def __init__(self, n_in=13, n_out=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, 64), nn.ReLU(), nn.Linear(64, n_out))
        for p in self.body[0].parameters():
            p.requires_grad = False

    def forward(self, x):
        return self.body(x)
'''


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):   # tests/conftest.py
    yield


@pytest.fixture(scope="module")
def wine():
    return DeviceData(prepare_arrays(load_dataset(WINE, "label", seed=0)), torch.device("cpu"))


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("user_code")
    (d / "nnd_user_steps.py").write_text(textwrap.dedent(USER_CODE))
    return d


def spec(user_dir, opt="adam", lr=1e-3, layers=None, model_class=None, momentum=0.0):
    model = {"class": model_class} if model_class else {"layers": layers or [
        {"type": "linear", "out": 64}, {"type": "relu"}, {"type": "linear", "out": 3}]}
    return parse_spec({"task": "classification", "data": {"normalize": "standardize"}, "model": model,
                       "loss": "cross_entropy", "optimizer": {"name": opt, "lr": lr, "momentum": momentum},
                       "training": {"batch_size": 32, "step": "nnd_user_steps:train_step"}}, base_dir=user_dir)


DROPOUT_BN = [{"type": "linear", "out": 64}, {"type": "batchnorm1d"}, {"type": "relu"}, {"type": "dropout", "p": 0.3},
              {"type": "linear", "out": 3}]


def diagnose(user_dir, wine, name, **spec_kw):
    s = spec(user_dir, **spec_kw)
    fn = load_step(f"nnd_user_steps:{name}", str(user_dir))
    return diagnose_step(fn, s, wine, seed=0, ref=f"nnd_user_steps:{name}")


def only(diag, kind):
    bugs = [b for b in step_bugs(diag) if b.kind == kind]
    assert len(bugs) == 1, [(b.kind, b.message) for b in step_bugs(diag)]
    return bugs[0]


def findings(diag):
    """The findings the G step's checks make of the diagnosis: G405 (parameters left alone) and G408."""
    load_checks("G")
    ctx = ProbeContext(spec=None, user_step=diag)
    return [f for code in ("G405", "G408") for f in (REGISTRY[code].func(ctx) or [])]


# ---- the correct step --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(opt="adam", lr=1e-3), dict(opt="sgd", lr=0.05, momentum=0.9),
                                dict(opt="adam", lr=1e-3, layers=DROPOUT_BN), dict(opt="rmsprop", lr=1e-3)])
def test_correct_step_is_clean(user_dir, wine, kw):
    d = diagnose(user_dir, wine, "train_step", **kw)
    assert step_bugs(d) == [] and findings(d) == []
    m = d.measurements
    assert m["update_grad_cosine"] < -ASCENT_COS               # descent
    assert m["second_grad_vs_fresh"] < 1e-4                   # zeroed: the second gradient is a fresh one
    assert m["update_scale_at_lr_x10"] == pytest.approx(10, rel=0.05)
    assert m["optimizer_step_calls"] == 1 and m["params_changed"] == m["params"]


def test_harness_restores_rng_and_leaves_inputs_alone(user_dir, wine):
    s = spec(user_dir)
    before_spec = s.model_dump_json()
    X_before = wine.view("standardize", False)[0].clone()
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    diagnose_step(load_step("nnd_user_steps:step_without_zero_grad", str(user_dir)), s, wine)
    assert torch.equal(torch.get_rng_state(), state)
    assert s.model_dump_json() == before_spec
    assert torch.equal(wine.view("standardize", False)[0], X_before)


# ---- (a) gradients not zeroed -------------------------------------------------------------------------

@pytest.mark.parametrize("opt,lr", [("adam", 1e-3), ("sgd", 0.01)])
def test_gradients_not_zeroed(user_dir, wine, opt, lr):
    d = diagnose(user_dir, wine, "step_without_zero_grad", opt=opt, lr=lr)
    bug = only(d, "grads-not-zeroed")
    assert [b.kind for b in step_bugs(d)] == ["grads-not-zeroed"]
    ev = bug.evidence
    assert ev["ratio"] == pytest.approx(2.0, rel=0.1)          # ~2x one backward on the same batch
    assert ev["relative_distance_to_accumulated"] <= ACCUM_MATCH
    assert "optimizer.zero_grad() before loss.backward()" in bug.fix
    assert "loss.backward()" in bug.fix and "nnd_user_steps.py:" in bug.fix   # points at the user's line
    f, = findings(d)
    assert f.code == "G408" and f.severity == Severity.ERROR and f.evidence["bug"] == "grads-not-zeroed"


def test_zero_grad_between_backward_and_step(user_dir, wine):
    d = diagnose(user_dir, wine, "step_zero_grad_too_late", opt="sgd", lr=0.01)
    bug = only(d, "zeroed-before-step")
    assert bug.evidence["grad_norm_at_optimizer_step"] == 0.0 and bug.evidence["grad_norm_after_backward"] > 0
    assert not any(b.kind == "params-not-updating" for b in step_bugs(d))   # explained by the bug above


# ---- (b) ascent ----------------------------------------------------------------------------------------

def test_gradient_ascent(user_dir, wine):
    d = diagnose(user_dir, wine, "step_gradient_ascent", opt="sgd", lr=0.05)
    assert [b.kind for b in step_bugs(d)] == ["ascent"]     # uses the optimizer's lr, so only the sign is wrong
    ev = step_bugs(d)[0].evidence
    assert ev["update_grad_cosine"] == pytest.approx(1.0, abs=1e-3)
    assert ev["batch_loss_after"] > ev["batch_loss_before"] > ev["batch_loss_after_descent_step"]
    assert "p -= lr * p.grad" in step_bugs(d)[0].fix and "p.data += lr * p.grad" in step_bugs(d)[0].fix


# ---- (c) lr not applied ----------------------------------------------------------------------------------

def test_lr_not_applied(user_dir, wine):
    d = diagnose(user_dir, wine, "step_without_lr", opt="sgd", lr=0.01)
    bug = only(d, "lr-ignored")
    assert [b.kind for b in step_bugs(d)] == ["lr-ignored"]
    assert bug.evidence["scale"] == pytest.approx(1.0, abs=1e-3) and LR_SCALE_MIN > 3
    assert "p.data -= p.grad" in bug.fix and "group['lr']" in bug.fix
    assert d.measurements["update_grad_cosine"] < 0      # descent, just without the lr


# ---- (d) eval mode -------------------------------------------------------------------------------------

def test_eval_mode_with_dropout_and_batchnorm_is_an_error(user_dir, wine):
    d = diagnose(user_dir, wine, "step_in_eval_mode", layers=DROPOUT_BN)
    bug = only(d, "eval-mode")
    assert bug.severity is None                 # the catalogue's error
    assert bug.evidence["model_training_in_forward"][0] is False
    assert len(bug.evidence["dropout_batchnorm_layers"]) == 2
    assert "model.train()" in bug.fix and "model.eval()" in bug.fix
    f, = findings(d)
    assert f.severity == Severity.ERROR


def test_eval_mode_without_dropout_is_info(user_dir, wine):
    d = diagnose(user_dir, wine, "step_in_eval_mode")
    bug = only(d, "eval-mode")
    assert bug.severity == "info" and bug.evidence["dropout_batchnorm_layers"] == []
    assert [b.kind for b in step_bugs(d)] == ["eval-mode"]


# ---- (e) loss detached / no_grad -------------------------------------------------------------------

def test_loss_under_no_grad_raises_and_is_reported(user_dir, wine):
    d = diagnose(user_dir, wine, "step_under_no_grad")
    bug = only(d, "no-grad")
    assert bug.evidence["exception"] == "RuntimeError" and "does not require grad" in bug.evidence["message"]
    assert bug.evidence["forward_grad_enabled"] is False
    assert "loss.backward()" in bug.evidence["where"]          # the user's line that raised
    assert "with torch.no_grad():" in bug.fix
    assert d.error.startswith("RuntimeError")


def test_loss_under_no_grad_with_workaround(user_dir, wine):
    d = diagnose(user_dir, wine, "step_no_grad_workaround")
    bug = only(d, "no-grad")
    assert bug.evidence["params_with_grad"] == 0 and bug.evidence["forward_grad_enabled"] is False
    assert bug.evidence["update_norm"] == 0.0
    assert "no gradient reaches the parameters" in bug.message


# ---- (f) frozen / missing from the optimizer -----------------------------------------------------

def test_frozen_first_layer_is_g405(user_dir, wine):
    d = diagnose(user_dir, wine, "train_step", model_class="nnd_user_steps:FrozenFirst")
    bug = only(d, "params-not-updating")
    assert bug.evidence["frozen"] == ["body.0.weight", "body.0.bias"]
    assert bug.severity == "warning"            # freezing can be deliberate (fine-tuning)
    f, = findings(d)
    assert f.code == "G405"


def test_optimizer_over_the_last_layer_only(user_dir, wine):
    s = spec(user_dir)
    fn = load_step("nnd_user_steps:train_step", str(user_dir))
    d = diagnose_step(fn, s, wine, make_optimizer=lambda m: torch.optim.Adam(m[-1].parameters(), lr=1e-3))
    bug = only(d, "params-not-updating")
    assert bug.severity is None
    g405 = [f for f in findings(d) if f.code == "G405"]
    assert len(g405) == 1 and g405[0].severity == Severity.ERROR
    assert bug.evidence["not_in_optimizer"] == ["0.weight", "0.bias"]
    assert "model.parameters()" in bug.fix


def test_optimizer_created_inside_the_step(user_dir, wine):
    d = diagnose(user_dir, wine, "step_own_optimizer_on_head")
    bug = only(d, "params-not-updating")
    assert bug.evidence["unchanged_with_grad"] == ["0.weight", "0.bias"]
    assert only(d, "lr-ignored").evidence["scale"] == pytest.approx(1.0, abs=1e-3)   # its own hard-coded lr


def test_step_that_never_updates(user_dir, wine):
    d = diagnose(user_dir, wine, "step_without_update")
    bug = only(d, "no-update")
    assert bug.evidence["optimizer_step_calls"] == 0 and "optimizer.step()" in bug.fix


# ---- exceptions and loading ---------------------------------------------------------------------------

def test_exception_is_a_finding_not_a_crash(user_dir, wine):
    d = diagnose(user_dir, wine, "step_with_shape_bug")
    bug = only(d, "exception")
    assert bug.evidence["exception"] == "RuntimeError" and "x.t()" in bug.evidence["where"]
    f, = findings(d)
    assert f.code == "G408" and "RuntimeError" in f.message


def test_load_step_errors(user_dir):
    with pytest.raises(UsageError, match="model, batch, optimizer, loss_fn"):
        load_step("nnd_user_steps:step_wrong_signature", str(user_dir))
    with pytest.raises(UsageError, match="no attribute"):
        load_step("nnd_user_steps:no_such_step", str(user_dir))
    with pytest.raises(UsageError, match="cannot import"):
        load_step("nnd_no_such_module:step", str(user_dir))


def test_g_step_runs_the_user_step_check(user_dir, wine):
    """The G step's registry loads checks/user_step.py; a context holding only the diagnosis gives G408s."""
    d = diagnose(user_dir, wine, "step_without_lr", opt="sgd", lr=0.01)
    report = Report("full-report")
    found = run_checks(codes_for_step("G"), ProbeContext(spec=spec(user_dir), user_step=d), report, [], [])
    assert [f.code for f in found] == ["G408"]
    assert "G408" in report.steps[found[0].step].checks_run
