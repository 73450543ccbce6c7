"""The Monitor on real training loops, and `check-curves` on logs written by real short trainings.

Every loop here is the plain PyTorch loop a user writes (CPU, one thread, fixed seeds, about a second).
The NaN case is checked against an independent trace of the same loop: step by step, every layer's
output, the loss, every gradient and every weight are tested for NaN/Inf, and the first place one shows
must be where the Monitor says.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nn_doctor import Monitor
from nn_doctor.catalogue import Severity
from nn_doctor.curve_report import check_curves
from nn_doctor.errors import UsageError
from nn_doctor.model import layer_table
from nn_doctor.render import render_json, render_text

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):   # tests/conftest.py
    yield


@pytest.fixture(scope="module")
def wine():
    df = pd.read_csv(SAMPLES / "wine.csv")
    X = torch.tensor(df.drop(columns="label").to_numpy(), dtype=torch.float32)
    y = torch.tensor(df["label"].to_numpy())
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    tr, va = perm[:142], perm[142:]
    mu, sd = X[tr].mean(0), X[tr].std(0)
    return {"raw": (X[tr], y[tr], X[va], y[va]), "std": ((X[tr] - mu) / sd, y[tr], (X[va] - mu) / sd, y[va])}


def mlp(act=nn.ReLU, n_in=13, hidden=64, n_out=3):
    return nn.Sequential(nn.Linear(n_in, hidden), act(), nn.Linear(hidden, n_out))


def train_loop(model, opt, data, steps, mon=None, bs=32, val_every=25, seed=0, poison_step=None):
    """The user's loop: minibatch SGD-style training with a validation pass every `val_every` steps."""
    Xtr, ytr, Xv, yv = data
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(Xtr), (bs,), generator=gen)
        x = Xtr[idx].clone()
        if step == poison_step:
            x[3, 2] = float("nan")          # a corrupt row reaches the model
        opt.zero_grad()
        loss = F.cross_entropy(model(x), ytr[idx])
        loss.backward()
        opt.step()
        if mon is not None:
            mon.step(loss)
        if mon is not None and val_every and (step + 1) % val_every == 0:
            model.eval()
            with torch.no_grad():
                mon.val(F.cross_entropy(model(Xv), yv))
            model.train()


def first_nonfinite_trace(make_model, make_opt, data, steps, bs=32, seed=0):
    """Independent of the Monitor: the first (step, where, layer) a NaN/Inf shows in this loop."""
    torch.manual_seed(seed)
    model = make_model()
    opt = make_opt(model)
    Xtr, ytr, _, _ = data
    gen = torch.Generator().manual_seed(seed)
    table = layer_table(model)
    by_module = {id(m): name for name, m, _ in table}
    prefix = {name.split(":")[0]: name for name, _, _ in table}
    bad: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: bad.append(by_module[id(mod)])
                                     if not torch.isfinite(o).all() else None) for _, m, _ in table]
    try:
        for step in range(steps):
            idx = torch.randint(0, len(Xtr), (bs,), generator=gen)
            bad.clear()
            opt.zero_grad()
            loss = F.cross_entropy(model(Xtr[idx]), ytr[idx])
            if bad:
                return step, "forward", bad[0]
            if not torch.isfinite(loss):
                return step, "loss", None
            loss.backward()
            for where, get in (("gradient", lambda p: p.grad), ("weights", lambda p: p.detach())):
                if where == "weights":
                    opt.step()
                for name, p in model.named_parameters():
                    t = get(p)
                    if t is not None and not torch.isfinite(t).all():
                        return step, where, prefix[name.rsplit(".", 1)[0]]
    finally:
        for h in hooks:
            h.remove()
    return None


def hook_counts(model, opt):
    mods = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return mods, len(opt._optimizer_step_pre_hooks), len(opt._optimizer_step_post_hooks)


def by_code(report):
    return {f.code: f for f in report.findings}


# ---- the Monitor: NaN origin ----------------------------------------------------------------------------

LEAKY_SGD10 = (lambda: mlp(lambda: nn.LeakyReLU(0.1)), lambda m: torch.optim.SGD(m.parameters(), lr=10.0))


@pytest.mark.parametrize("watch_first", [10, 0])
def test_diverging_loop_reports_first_nonfinite_step_and_layer(wine, watch_first):
    """Unscaled wine, SGD lr 10: the loss grows ~1e6x per step and overflows at step 6. watch_first=0 relies
    on the suspicion rule alone (the loss jumps 102 -> 1e9 at step 1, which arms the watch)."""
    make_model, make_opt = LEAKY_SGD10
    expected = first_nonfinite_trace(make_model, make_opt, wine["raw"], 60)
    assert expected is not None
    torch.manual_seed(0)
    model = make_model()
    opt = make_opt(model)
    with Monitor(model, opt, every=10, watch_first=watch_first) as mon:
        train_loop(model, opt, wine["raw"], 60, mon)
    report = mon.report()
    g400 = by_code(report)["G400"]
    assert g400.severity == Severity.ERROR
    ev = g400.evidence
    assert (ev["step"], ev["where"], ev["layer"]) == expected
    assert f"step {expected[0]}" in g400.message and expected[2] in g400.message
    assert report.first_fix == "G400" and report.verdict == "unhealthy"
    assert report.probes["monitor"]["first_nonfinite"]["watched"] is True
    assert by_code(report)["H306"].evidence["pattern"] == "diverging"
    assert all(v is None or math.isfinite(v) for v in ev["last_finite_losses"])
    # the user has no spec: the fixes say what to change in the code, and nothing is a spec patch
    assert "clip_grad_norm_" in g400.fix and "standardize the inputs" in g400.fix and "(now 10)" in g400.fix
    spec_words = ("optimizer.lr", "optimizer.grad_clip", "optimizer.weight_decay", "data.normalize", "model.layers",
                  "model.init", "training.epochs", "training.batch_size", "training.device")
    assert not [f.fix for f in report.findings if any(w in f.fix for w in spec_words)]
    assert all(f.patch is None for f in report.findings)


def test_nan_in_an_unwatched_step_is_dated_and_blamed_on_the_input(wine):
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with Monitor(model, opt, every=10) as mon:
        train_loop(model, opt, wine["std"], 80, mon, poison_step=47)
    nf = mon.record().first_nonfinite
    assert {k: nf[k] for k in ("step", "where", "layer", "watched")} == \
        {"step": 47, "where": "input", "layer": None, "watched": False}
    assert nf["nonfinite_weights_now"] == "0:linear"     # the NaN input reached the first layer's weights
    assert by_code(mon.report())["G400"].evidence["step"] == 47


# ---- the Monitor: healthy and overfitting runs --------------------------------------------------------------

def test_healthy_run_has_no_error_and_leaves_nothing_attached(wine):
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = hook_counts(model, opt)
    probe_x = wine["std"][0][:5]
    with Monitor(model, opt, every=10) as mon:
        assert hook_counts(model, opt) != before
        train_loop(model, opt, wine["std"], 300, mon)
    assert hook_counts(model, opt) == before
    with torch.no_grad():
        out_after_exit = model(probe_x)
    report = mon.report()
    assert report.command == "monitor"
    assert report.verdict != "unhealthy", [(f.code, f.message) for f in report.findings]
    # no warning either (R500 warns on a machine with an unused GPU: that is about the machine, not the run)
    assert not [f for f in report.findings if f.severity.rank >= Severity.WARNING.rank and f.code != "R500"]
    codes = by_code(report)
    assert codes["H306"].evidence["pattern"] == "learning"
    assert "monitored run" in codes["H306"].message
    assert codes["R503"].evidence["step_time_ms"] > 0 and codes["R503"].evidence["batch_size"] == 32
    rec = mon.record()
    assert rec.steps_run == 300 and len(rec.losses) == 300 and len(rec.val_losses) == 12
    assert rec.init_layers and rec.layers[0]["step"] == 0
    assert {"grad_norm", "act_std"} <= set(rec.init_layers["0:linear"])
    assert any("update_ratio" in st for r in rec.layers[1:] for st in r["stats"].values())
    assert rec.params_without_grad == [] and rec.params_unchanged == []
    with torch.no_grad():
        assert torch.equal(model(probe_x), out_after_exit)   # report() changed nothing
    for step in report.steps.values():
        assert step.ran == (int(step.step) in (3, 4, 5))
    render_text(report)
    render_json(report)


def test_monitor_without_optimizer(wine):
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Monitor(model, every=5) as mon:
        train_loop(model, opt, wine["std"], 60, mon, val_every=0)
    rec = mon.record()
    ratios = [st.get("update_ratio") for r in rec.layers[1:] for st in r["stats"].values() if "update_ratio" in st]
    assert ratios and all(0 < v < 1 for v in ratios)
    assert all("grad_norm" in rec.layers[1]["stats"][n] for n in ("0:linear", "2:linear"))
    assert mon.report().verdict != "unhealthy"


def test_frozen_layer_and_optimizer_gap_are_g405(wine):
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(model[2].parameters(), lr=1e-3)     # the first layer was left out
    with Monitor(model, opt, every=10) as mon:
        train_loop(model, opt, wine["std"], 40, mon, val_every=0)
    g405 = by_code(mon.report())["G405"]
    assert set(g405.evidence["params_without_grad"]) == {"0.weight", "0.bias"}


def test_overfitting_run_is_h304(wine):
    """20 digits, a 256-unit MLP, adam 1e-2 on the full batch: the validation loss bottoms out early."""
    d = np.load(SAMPLES / "digits.npz")
    X = torch.tensor(d["X"], dtype=torch.float32).reshape(len(d["X"]), -1) / 16
    y = torch.tensor(d["y"]).long()
    torch.manual_seed(0)
    model = mlp(n_in=64, hidden=256, n_out=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with Monitor(model, opt, every=10) as mon:
        for step in range(300):
            opt.zero_grad()
            loss = F.cross_entropy(model(X[:20]), y[:20])
            loss.backward()
            opt.step()
            mon.step(loss)
            if (step + 1) % 10 == 0:
                with torch.no_grad():
                    mon.val(F.cross_entropy(model(X[1000:1400]), y[1000:1400]))
    codes = by_code(mon.report())
    assert codes["H306"].evidence["pattern"] == "overfitting"
    assert codes["H304"].severity == Severity.WARNING


def test_monitor_rejects_misuse():
    with pytest.raises(TypeError):
        Monitor("not a model")
    with pytest.raises(ValueError):
        Monitor(mlp(), every=0)
    mon = Monitor(mlp())
    with pytest.raises(RuntimeError, match="outside the monitor"):
        mon.step(1.0)


# ---- Lightning -------------------------------------------------------------------------------------------

def test_lightning_callback(wine):
    L = pytest.importorskip("lightning")
    from nn_doctor.monitor import DoctorCallback

    Xtr, ytr, Xv, yv = wine["std"]

    class Wine(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, i):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def validation_step(self, batch, i):
            x, y = batch
            self.log("val_loss", F.cross_entropy(self(x), y))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    torch.manual_seed(0)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(Xtr, ytr), batch_size=32, shuffle=True,
                                        generator=torch.Generator().manual_seed(0))
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(Xv, yv), batch_size=64)
    cb = DoctorCallback(every=5)
    module = Wine()
    trainer = L.Trainer(max_epochs=12, callbacks=[cb], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, train, val)
    report = cb.report
    assert report is not None and report.command == "monitor"
    assert report.probes["monitor"]["steps"] == 12 * len(train)
    assert report.probes["monitor"]["validation_points"] == 12
    assert report.verdict != "unhealthy", [(f.code, f.message) for f in report.findings]
    rec = cb.monitor.record()
    assert rec.init_layers["net.0:linear"]["grad_norm"] > 0    # gradients seen through Lightning's closure
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()) == 0


# ---- check-curves: logs of real trainings -----------------------------------------------------------------

def write_lightning_log(path: Path, train: list[tuple[int, float]], val: list[tuple[int, float]], per_epoch: int):
    """Lightning CSVLogger's shape: train and validation metrics on separate rows, the other cell empty."""
    rows = [{"epoch": s // per_epoch, "step": s, "train_loss": v, "val_loss": ""} for s, v in train]
    rows += [{"epoch": s // per_epoch, "step": s, "train_loss": "", "val_loss": v} for s, v in val]
    rows.sort(key=lambda r: (r["step"], r["val_loss"] != ""))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["epoch", "step", "train_loss", "val_loss"])
        w.writeheader()
        w.writerows(rows)
    return path


def write_keras_log(path: Path, train: list[tuple[int, float]], val: list[tuple[int, float]], per_epoch: int):
    """Keras CSVLogger's shape: one row per epoch, `loss` and `val_loss` (train averaged over the epoch)."""
    vals = dict((s // per_epoch, v) for s, v in val)
    epochs: dict[int, list[float]] = {}
    for s, v in train:
        epochs.setdefault(s // per_epoch, []).append(v)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "loss", "val_loss"])
        for e, vs in sorted(epochs.items()):
            w.writerow([e, sum(vs) / len(vs), vals.get(e, "")])
    return path


def record_training(model, opt, Xtr, ytr, Xv, yv, steps, loss_fn=F.cross_entropy, bs=None, val_every=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for s in range(steps):
        idx = torch.randint(0, len(Xtr), (bs,), generator=gen) if bs else slice(None)
        opt.zero_grad()
        loss = loss_fn(model(Xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
        train.append((s, float(loss)))
        if (s + 1) % val_every == 0:
            model.eval()
            with torch.no_grad():
                val.append((s, float(loss_fn(model(Xv), yv))))
            model.train()
    return train, val


def test_check_curves_learning(wine, tmp_path):
    torch.manual_seed(0)
    model = mlp()
    train, val = record_training(model, torch.optim.Adam(model.parameters(), 1e-3), *wine["std"], 300, bs=32)
    report = check_curves(write_lightning_log(tmp_path / "metrics.csv", train, val, per_epoch=5))
    codes = by_code(report)
    assert report.command == "check-curves" and codes["H306"].evidence["pattern"] == "learning"
    assert report.verdict != "unhealthy" and "H304" not in codes and "G400" not in codes
    assert report.inputs["train_col"] == "train_loss" and report.inputs["x"] == "step"


def test_check_curves_overfitting(tmp_path):
    d = np.load(SAMPLES / "digits.npz")
    X = torch.tensor(d["X"], dtype=torch.float32).reshape(len(d["X"]), -1) / 16
    y = torch.tensor(d["y"]).long()
    torch.manual_seed(0)
    model = mlp(n_in=64, hidden=256, n_out=10)
    train, val = record_training(model, torch.optim.Adam(model.parameters(), 1e-2), X[:20], y[:20],
                                 X[1000:1400], y[1000:1400], 300)
    report = check_curves(write_lightning_log(tmp_path / "metrics.csv", train, val, per_epoch=10))
    codes = by_code(report)
    assert codes["H306"].evidence["pattern"] == "overfitting"
    assert codes["H304"].severity == Severity.WARNING and "lowest at step" in codes["H304"].fix


def test_check_curves_data_problem(tmp_path):
    """Regression on the diabetes table whose training targets carry heavy noise (sigma = 4 target stds)
    while the validation targets are clean: the training loss barely moves, the validation loss halves."""
    df = pd.read_csv(SAMPLES / "diabetes.csv")
    X = torch.tensor(df.drop(columns="progression").to_numpy(), dtype=torch.float32)
    y = torch.tensor(df["progression"].to_numpy(), dtype=torch.float32)[:, None]
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    tr, va = perm[:350], perm[350:]
    X = (X - X[tr].mean(0)) / X[tr].std(0)
    y = (y - y[tr].mean()) / y[tr].std()
    noisy = y[tr] + 4.0 * torch.randn(len(tr), 1, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = nn.Linear(10, 1)
    train, val = record_training(model, torch.optim.Adam(model.parameters(), 3e-3), X[tr], noisy, X[va], y[va],
                                 300, loss_fn=F.mse_loss)
    report = check_curves(write_lightning_log(tmp_path / "metrics.csv", train, val, per_epoch=1))
    h306 = by_code(report)["H306"]
    assert h306.evidence["pattern"] == "data-problem"
    assert h306.severity == Severity.WARNING and "data set" in h306.fix
    assert abs(h306.evidence["train"]["change"]) < 0.05 and h306.evidence["val"]["change"] <= -0.2


def test_check_curves_plateau_keras_log(wine, tmp_path):
    torch.manual_seed(0)
    model = mlp()
    train, val = record_training(model, torch.optim.Adam(model.parameters(), 1e-6), *wine["std"], 300, bs=32,
                                 val_every=10)
    report = check_curves(write_keras_log(tmp_path / "training.log", train, val, per_epoch=10))
    codes = by_code(report)
    assert report.inputs["x"] == "epoch" and report.inputs["train_col"] == "loss"
    assert codes["H306"].evidence["pattern"] == "plateau"
    assert codes["H305"].severity == Severity.WARNING and codes["H305"].evidence["train_ratio"] > 0.9


def test_check_curves_diverging_finite(wine, tmp_path):
    """Unscaled wine, SGD lr 0.01: the loss climbs by orders of magnitude without overflowing."""
    torch.manual_seed(0)
    model = mlp(lambda: nn.LeakyReLU(0.1))
    train, val = record_training(model, torch.optim.SGD(model.parameters(), 0.01), *wine["raw"], 100, bs=32)
    report = check_curves(write_lightning_log(tmp_path / "metrics.csv", train, val, per_epoch=5))
    h306 = by_code(report)["H306"]
    assert h306.evidence["pattern"] == "diverging" and h306.severity == Severity.WARNING
    assert "G400" not in by_code(report)


def test_check_curves_diverging_to_nan(wine, tmp_path):
    torch.manual_seed(0)
    model = mlp(lambda: nn.LeakyReLU(0.1))
    train, val = record_training(model, torch.optim.SGD(model.parameters(), 10.0), *wine["raw"], 30, bs=32,
                                 val_every=5)
    first_bad = next(s for s, v in train if not math.isfinite(v))
    report = check_curves(write_lightning_log(tmp_path / "metrics.csv", train, val, per_epoch=5))
    codes = by_code(report)
    assert codes["G400"].severity == Severity.ERROR and codes["G400"].evidence["step"] == first_bad
    assert f"step {first_bad}" in codes["G400"].message and "Monitor" in codes["G400"].fix
    assert codes["H306"].evidence["pattern"] == "diverging"
    assert report.verdict == "unhealthy" and report.first_fix == "G400"


def test_check_curves_still_falling_and_errors(wine, tmp_path):
    torch.manual_seed(0)
    model = mlp()
    train, val = record_training(model, torch.optim.SGD(model.parameters(), 0.01), *wine["std"], 150, bs=32)
    report = check_curves(write_lightning_log(tmp_path / "metrics.csv", train, val, per_epoch=5),
                          ignore=["H305"])
    assert by_code(report)["H308"].evidence["last_quarter_drop_fraction"] >= 0.1
    with pytest.raises(UsageError):
        check_curves(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("epoch,accuracy\n0,0.5\n1,0.6\n")
    with pytest.raises(UsageError, match="no training loss column"):
        check_curves(tmp_path / "bad.csv")
