"""Never a false Healthy: a crash, a NaN or a diverging configured lr ends not healthy, with exit 1 and the
reason in the text, in probe-lr, probe-init and full-report (the trust issue's "done when").

Each case is a spec a user could write: a user model class (written into tmp_path) or a layer stack with one
fault. Commands run in-process through the CLI (typer's runner), so exit codes and text are what a user sees.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nn_doctor.cli import app

ROOT = Path(__file__).resolve().parents[1]
WINE = ROOT / "sample_data" / "wine.csv"
COMMANDS = ("probe-lr", "probe-init", "full-report")
FAST = ["--quiet", "--budget", "20"]

USER_MODELS = textwrap.dedent('''
    import sys
    import torch
    from torch import nn


    class NanNet(nn.Module):
        """The activation overflows: exp of a large pre-activation."""
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(13, 3)

        def forward(self, x):
            return torch.exp(self.fc(x) * 1e4) * 0 + self.fc(x) / 0.0


    class RaisesInTrain(nn.Module):
        """Works in eval mode (the doctor's shape check), raises in train mode."""
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(13, 3)

        def forward(self, x):
            if self.training:
                raise ValueError("train-mode branch is broken")
            return self.fc(x)


    class SigmoidOut(nn.Module):
        """A binary classifier whose forward ends in a sigmoid (trained with bce_with_logits below)."""
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))

        def forward(self, x):
            return torch.sigmoid(self.body(x))


    class DeadFunctional(nn.Module):
        """ReLUs called as functions (no module to hook), every hidden bias -5: no unit ever fires."""
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.out = nn.Linear(13, 32), nn.Linear(32, 32), nn.Linear(32, 3)
            with torch.no_grad():
                self.fc1.bias.fill_(-5.0)
                self.fc2.bias.fill_(-5.0)

        def forward(self, x):
            return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


    class AffineStack(nn.Module):
        """Three Linear layers, no activation between them: one affine map."""
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(4, 32), nn.Linear(32, 32), nn.Linear(32, 2)

        def forward(self, x):
            return self.fc3(self.fc2(self.fc1(x)))


    class ExitsInForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(13, 3)

        def forward(self, x):
            if self.training:
                sys.exit(0)
            return self.fc(x)
''')


def spec(tmp_path: Path, name: str, model: dict, **changes) -> str:
    raw = {"task": "classification",
           "data": {"path": str(WINE), "target": "label", "normalize": "standardize"},
           "model": model, "loss": "cross_entropy", "optimizer": {"name": "adam", "lr": 0.003},
           "training": {"batch_size": 32, "epochs": 5, "seed": 0}}
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    (tmp_path / "user_models.py").write_text(USER_MODELS)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


MLP = {"layers": [{"type": "linear", "out": 16}, {"type": "relu"}, {"type": "linear", "out": 3}]}


def run(command: str, config: str, *extra: str):
    result = CliRunner().invoke(app, [command, "--config", config, *FAST, *extra])
    return result


def assert_not_healthy(result, *codes: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Healthy" not in result.output, result.output
    assert any(c in result.output for c in codes), result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_forward_yields_nan(tmp_path, command):
    result = run(command, spec(tmp_path, "nan", {"class": "user_models:NanNet"}))
    assert_not_healthy(result, "G400", "G409")
    assert "non-finite" in result.output or "crashed" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_user_forward_raises_in_train_mode(tmp_path, command):
    result = run(command, spec(tmp_path, "raises", {"class": "user_models:RaisesInTrain"}))
    assert_not_healthy(result, "G409")
    assert "ValueError: train-mode branch is broken" in result.output
    assert "user_models.py:" in result.output and "forward" in result.output   # the user's own frame


@pytest.mark.parametrize("command", COMMANDS)
def test_sys_exit_in_forward_is_a_finding_not_a_silent_exit_0(tmp_path, command):
    result = run(command, spec(tmp_path, "exits", {"class": "user_models:ExitsInForward"}))
    assert_not_healthy(result, "G409")
    assert "SystemExit" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_wrong_output_size(tmp_path, command):
    model = {"layers": [{"type": "linear", "out": 16}, {"type": "relu"}, {"type": "linear", "out": 2}]}
    result = run(command, spec(tmp_path, "out2", model))
    assert_not_healthy(result, "G409", "M201")


@pytest.mark.parametrize("command", COMMANDS)
def test_loss_raises_bce_on_three_classes(tmp_path, command):
    result = run(command, spec(tmp_path, "bce", MLP, loss="bce"))
    assert_not_healthy(result, "G409", "M203", "G400")


@pytest.mark.parametrize("command", COMMANDS)
def test_diverging_configured_lr_is_h300_even_when_no_lr_works(tmp_path, command):
    # unscaled wine (proline ~1e3) with momentum SGD at an absurd lr: nothing in 0.1..1e-4 trains well
    # within a probe, and the configured lr blows up
    config = spec(tmp_path, "sgd", MLP, **{"data.normalize": "none", "optimizer": {"name": "sgd", "lr": 5.0,
                                                                                     "momentum": 0.9}})
    result = run(command, config)
    assert_not_healthy(result, "H300", "G400")
    report = json.loads(CliRunner().invoke(app, [command, "--config", config, *FAST, "--format", "json"]).output)
    h300 = [f for f in report["findings"] if f["code"] == "H300"]
    assert h300 and "lower optimizer.lr" in h300[0]["fix"]


def test_crashed_probes_are_shown_in_text_not_only_in_json(tmp_path):
    result = run("probe-lr", spec(tmp_path, "raises", {"class": "user_models:RaisesInTrain"}))
    assert "G409 probe-crashed" in result.output and "every probe crashed" in result.output


# ---- a fix that did not help is never "verified" -------------------------------------------------------

def test_a_fix_that_did_not_help_is_never_printed_as_verified():
    from nn_doctor.catalogue import Step
    from nn_doctor.render import render_junit, render_markdown, render_text
    from nn_doctor.report import Finding, Report
    r = Report("full-report")
    r.step(Step.HYPERPARAMETERS)
    worse = Finding("H302", "batch 256 is far from the probes' best", "set training.batch_size: 32",
                    patch={"training.batch_size": 32},
                    verified={"probe": "training.batch_size=32", "loss": "validation", "loss_before": 0.1,
                              "loss_after": 24.0, "improved": False,
                              "result": "the fix did not clearly help in a probe of the same length"})
    r.add(worse)
    r.finalize()
    assert worse.fix_status == "not confirmed" and r.to_dict()["findings"][0]["fix_status"] == "not confirmed"
    for text in (render_text(r), render_markdown(r), render_junit(r)):
        assert "not confirmed" in text.lower()
        assert "verified" not in text.lower()
    from nn_doctor.render_html import render_html
    html = render_html(r)      # the page's own styles name a "verified" class; its labels never say it
    assert '<span class="label">not confirmed</span>' in html and '<span class="label">verified</span>' not in html
    # a warning whose fix did not help is not the first fix
    assert r.first_fix is None


# ---- the bundled example: the written spec holds up ------------------------------------------------------

@pytest.fixture(scope="module")
def bundled_fixed(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundled") / "fixed.yaml"
    result = CliRunner().invoke(app, ["full-report", "--quiet", "--format", "json", "--write-fixed", str(out)])
    return json.loads(result.output), out


def test_bundled_example_treatment_path_and_written_spec(bundled_fixed):
    report, out = bundled_fixed
    assert report["first_fix"] == "D104"
    t = report["probes"]["treatment"]
    assert [p["code"] for p in t["path"]][0] == "D104"
    assert t["final"]["verdict"] in ("healthy", "warnings") and t["final"]["value"] >= 0.9
    written = yaml.safe_load(out.read_text())
    assert written["data"]["normalize"] == "standardize"
    assert "x_key" not in written["data"] and "y_key" not in written["data"]   # only the user's keys + fixes
    assert "verdict" in out.read_text().splitlines()[2]                       # the header says how it scored


def test_bundled_example_written_spec_runs_again_without_error_or_reversal(bundled_fixed):
    report, out = bundled_fixed
    again = json.loads(CliRunner().invoke(app, ["full-report", "--config", str(out), "--quiet", "--format",
                                                "json"]).output)
    assert not [f for f in again["findings"] if f["severity"] == "error"], again["findings"]
    written = yaml.safe_load(out.read_text())
    # no later finding undoes an earlier fix (the old loop said "raise the lr back to 0.1")
    for f in again["findings"]:
        assert "data.normalize: none" not in f["fix"]
        if f["code"] in ("H300", "H301") and f["severity"] != "info":
            assert False, f"the repaired spec still gets {f['code']}: {f['message']} (lr {written['optimizer']['lr']})"


def test_bundled_example_written_spec_trains_to_90_percent_in_a_plain_loop(bundled_fixed):
    # judged by benchmarks/plain_trainer.py (its own loop, no nn_doctor.probe), seeds 0-2, as the issue asks
    import sys
    sys.path.insert(0, str(ROOT))
    from benchmarks.plain_trainer import train_seeds
    _, out = bundled_fixed
    results = train_seeds(out, seeds=(0, 1, 2))
    accs = [r.accuracy for r in results]
    assert min(accs) >= 0.9, accs


# ---- fixes are judged on the training the user will run ----------------------------------------------------

def test_a_short_configured_training_is_judged_at_its_own_length(tmp_path):
    # the whole table in one batch for 5 epochs = 5 updates; a 100-step baseline alone called it healthy. The
    # spec is also run for exactly its 5 updates, and each fix for its own configured length.
    p = spec(tmp_path, "full_batch", MLP, **{"training.batch_size": 512, "training.epochs": 5,
                                              "optimizer.lr": 0.001})
    result = CliRunner().invoke(app, ["full-report", "--config", p, "--quiet", "--format", "json", "--budget", "60"])
    report = json.loads(result.output)
    assert report["verdict"] != "healthy"
    first = next(f for f in report["findings"] if f["code"] == report["first_fix"])
    assert first["code"] in ("H302", "H308") and first["fix_status"] == "confirmed", first   # batch or epochs
    assert first["verified"]["metric_before"] < 0.8 <= first["verified"]["metric_after"], first["verified"]
    assert report["probes"]["treatment"]["final"]["value"] >= 0.9


def test_a_confirmed_fix_is_written_when_the_budget_leaves_no_room_to_diagnose_again(tmp_path, monkeypatch):
    import nn_doctor.treatment as T
    monkeypatch.setattr(T, "ROUND_TIME_FACTOR", 1e9)   # every further round "would overrun the budget"
    p = spec(tmp_path, "unscaled", MLP, **{"data.normalize": "none", "optimizer.name": "sgd", "optimizer.lr": 0.1})
    out = tmp_path / "fixed.yaml"
    result = CliRunner().invoke(app, ["full-report", "--config", p, "--quiet", "--format", "json",
                                      "--budget", "60", "--write-fixed", str(out)])
    t = json.loads(result.output)["probes"]["treatment"]
    assert len(t["path"]) == 1 and t["path"][0]["rediagnosed"] is False, t
    assert t["final"]["verdict"] == "not diagnosed again" and t["final"]["value"] == t["path"][0]["after"]
    text = out.read_text()
    assert "not diagnosed again" in text and "budget" in t["stopped"]
    patched_key, patched_value = next(iter(t["path"][0]["patch"].items()))
    node = yaml.safe_load(text)
    for part in patched_key.split("."):
        node = node[part]
    assert node == patched_value


def test_a_model_that_does_not_build_gets_a_shape_fix_that_is_built_then_diagnosed(tmp_path):
    # conv2d on a 13-feature table: M200 proposes linear layers of the same width; the treatment builds the
    # changed model, diagnoses it in full, and writes it
    conv = {"layers": [{"type": "conv2d", "out": 16, "kernel_size": 3}, {"type": "relu"}, {"type": "maxpool2d",
                                                                                       "kernel_size": 2},
                       {"type": "flatten"}, {"type": "linear", "out": 3}]}
    p = spec(tmp_path, "conv_on_table", conv, **{"training.epochs": 20})
    out = tmp_path / "fixed.yaml"
    result = CliRunner().invoke(app, ["full-report", "--config", p, "--quiet", "--format", "json",
                                      "--budget", "60", "--write-fixed", str(out)])
    report = json.loads(result.output)
    assert report["first_fix"] == "M200" and result.exit_code == 1
    t = report["probes"]["treatment"]
    assert t["path"][0]["code"] == "M200" and t["final"]["verdict"] in ("healthy", "warnings"), t
    assert t["final"]["value"] >= 0.8, t["final"]
    layers = yaml.safe_load(out.read_text())["model"]["layers"]
    assert [l["type"] for l in layers] == ["linear", "relu", "linear"] and layers[0]["out"] == 16


def _finding(code: str, improved: bool | None, metric_up: bool = False, **kw):
    from nn_doctor.report import Finding
    verified = None if improved is None else {
        "probe": "x=1", "metric": "balanced_accuracy", "metric_before": 0.80, "metric_after": 0.92 if improved else 0.79,
        "improved": improved, "metric_up": metric_up}
    return Finding(code, f"{code} message", f"{code} fix", patch={"training.epochs": 8}, verified=verified, **kw)


def test_probes_decide_the_weight_of_a_finding_and_whether_a_cause_explains():
    from nn_doctor.report import Report
    # an info finding whose fix raised the validation metric materially becomes a warning (and the first fix)
    r = Report("full-report")
    remark = _finding("H308", improved=True, metric_up=True)
    untested = _finding("H307", improved=None)
    r.add(remark), r.add(untested)
    r.finalize()
    assert remark.severity.value == "warning" and "raised_to_warning" in remark.evidence
    assert untested.severity.value == "info" and r.first_fix == "H308"
    # a cause whose own fix a probe refuted explains nothing: its confirmed symptom stays a cause
    r = Report("full-report")
    refuted = _finding("H302", improved=False, severity="warning")
    symptom = _finding("H308", improved=True, metric_up=True)
    r.add(refuted), r.add(symptom)
    r.finalize()
    assert symptom.explained_by == [] and r.first_fix == "H308"
    # ... while a cause nobody refuted still does
    r = Report("full-report")
    cause = _finding("H302", improved=True, metric_up=True, severity="warning")
    symptom = _finding("H308", improved=True, metric_up=True)
    r.add(cause), r.add(symptom)
    r.finalize()
    assert symptom.explained_by == ["H302"] and r.first_fix == "H302"


def test_a_user_model_that_ends_in_a_sigmoid_before_bce_with_logits_is_m202_with_a_loss_fix(tmp_path):
    # nn-doctor cannot read a model class's layers; its outputs at init on real rows, all inside (0, 1), give it away
    p = spec(tmp_path, "sigmoid_out", {"class": "user_models:SigmoidOut"}, task="binary", loss="bce_with_logits",
             **{"data.path": str(ROOT / "sample_data" / "breast_cancer.csv"), "training.epochs": 10})
    report = json.loads(CliRunner().invoke(app, ["full-report", "--config", p, "--quiet", "--format", "json",
                                                 "--budget", "60"]).output)
    m202 = next(f for f in report["findings"] if f["code"] == "M202")
    assert 0 < m202["evidence"]["output_min_at_init"] and m202["evidence"]["output_max_at_init"] < 1
    assert "loss: bce" in m202["fix"] and report["first_fix"] == "M202"
    # the healthy twin (raw logits) is not flagged
    healthy = spec(tmp_path, "logits_out", {"layers": [{"type": "linear", "out": 16}, {"type": "relu"},
                                                       {"type": "linear", "out": 1}]}, task="binary",
                   loss="bce_with_logits", **{"data.path": str(ROOT / "sample_data" / "breast_cancer.csv")})
    again = json.loads(CliRunner().invoke(app, ["full-report", "--config", healthy, "--quiet", "--format", "json",
                                                "--budget", "60", "--select", "M"]).output)
    assert "M202" not in [f["code"] for f in again["findings"]]


def test_a_refuted_error_still_explains_its_symptoms():
    from nn_doctor.report import Report
    r = Report("full-report")
    cause = _finding("M204", improved=False)          # an error: symmetric init, its re-init not confirmed
    symptom = _finding("G407", improved=None)
    symptom.patch = None
    r.add(cause), r.add(symptom)
    r.finalize()
    assert symptom.explained_by == ["M204"] and r.first_fix == "M204"


def test_a_remark_is_raised_only_when_its_gain_is_beyond_the_noise_of_the_validation_rows():
    from nn_doctor.report import Report
    for n_eval, raised in ((20, False), (2000, True)):   # 0.80 -> 0.92: noise on 20 rows, clear on 2,000
        r = Report("full-report")
        remark = _finding("H308", improved=True, metric_up=True)
        remark.verified["n_eval"] = n_eval
        r.add(remark)
        r.finalize()
        assert (remark.severity.value == "warning") is raised, (n_eval, remark.severity)


def _report(config: str, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["full-report", "--config", config, "--quiet", "--format", "json",
                                      "--budget", "60", *extra])
    return json.loads(result.output)


def test_dead_relus_called_as_functions_are_found_at_the_next_layers_input(tmp_path):
    # torch.relu in forward() has no module to hook: a dead unit shows as an input feature of the next linear layer
    # that is exactly 0 on every row
    report = _report(spec(tmp_path, "dead_functional", {"class": "user_models:DeadFunctional"},
                          **{"training.epochs": 20}))
    g403 = next(f for f in report["findings"] if f["code"] == "G403")
    assert "feeding" in g403["message"] and g403["evidence"]["dead_fraction_init"]
    assert report["first_fix"] == "G403" and g403["fix_status"] == "confirmed"
    assert "model.init: he" in g403["fix"]


def _xor_csv(tmp_path: Path) -> str:
    import numpy as np
    import pandas as pd
    r = np.random.default_rng(0)
    X = r.uniform(-1, 1, (1000, 2))
    df = pd.DataFrame(np.c_[X, r.normal(0, 1, (1000, 2))], columns=["x1", "x2", "n1", "n2"])
    df["label"] = (X[:, 0] * X[:, 1] > 0).astype(int)
    path = tmp_path / "xor.csv"
    df.to_csv(path, index=False)
    return str(path)


def test_an_affine_user_model_is_m208_confirmed_by_a_stand_in_and_nothing_is_written(tmp_path):
    config = spec(tmp_path, "affine", {"class": "user_models:AffineStack"},
                  **{"data.path": _xor_csv(tmp_path), "training.epochs": 20})
    written = tmp_path / "fixed.yaml"
    report = _report(config, "--write-fixed", str(written))
    m208 = next(f for f in report["findings"] if f["code"] == "M208")
    assert m208["evidence"]["kind"] == "affine" and m208["evidence"]["affine_error"] < 1e-9
    # the stand-in MLP scored clearly better, so the remark became a warning and the first fix
    assert m208["severity"] == "warning" and m208["fix_status"] == "confirmed"
    assert report["first_fix"] == "M208" and "forward()" in m208["fix"]
    # a stand-in is evidence, never a fix: the user's class stays in the written spec
    assert not report["probes"]["treatment"]["path"]
    assert not written.exists() or yaml.safe_load(written.read_text())["model"]["class"] == "user_models:AffineStack"


def test_a_linear_model_on_separable_data_stays_a_remark(tmp_path):
    # logistic regression on breast cancer is a fair model: the affine remark's probe finds no clear gain
    config = spec(tmp_path, "logreg", {"layers": [{"type": "linear", "out": 1}]}, task="binary",
                  loss="bce_with_logits", **{"data.path": str(ROOT / "sample_data" / "breast_cancer.csv"),
                                             "training.epochs": 20})
    report = _report(config)
    m208 = [f for f in report["findings"] if f["code"] == "M208"]
    assert m208 and all(f["severity"] == "info" for f in m208), m208
    assert report["first_fix"] is None, report["first_fix"]


def test_a_high_loss_that_a_noisy_target_explains_is_a_remark_not_a_warning(tmp_path):
    # L1 on diabetes: the model learns (well below a constant prediction's loss) yet ends at ~60% of its start;
    # wider or longer does not validate better, so the underfitting remark stays a remark and the spec is healthy
    config = spec(tmp_path, "l1", {"layers": [{"type": "linear", "out": 32}, {"type": "elu"},
                                              {"type": "linear", "out": 1}]},
                  task="regression", loss="l1", **{"data.path": str(ROOT / "sample_data" / "diabetes.csv"),
                                                   "data.target": "progression", "data.normalize_target": True,
                                                   "training.epochs": 30})
    report = _report(config)
    h305 = [f for f in report["findings"] if f["code"] == "H305"]
    assert all(f["severity"] == "info" and f["evidence"]["learned_share"] <= 0.8 for f in h305), h305
    assert report["verdict"] == "healthy", [(f["code"], f["severity"]) for f in report["findings"]]


def test_heavy_dropout_whose_fit_is_only_somewhat_lower_is_tested_by_a_probe(tmp_path):
    layers = [{"type": "linear", "out": 12}, {"type": "relu"}, {"type": "dropout", "p": 0.85},
              {"type": "linear", "out": 12}, {"type": "relu"}, {"type": "dropout", "p": 0.85},
              {"type": "linear", "out": 3}]
    report = _report(spec(tmp_path, "dropout", {"layers": layers, "init": "he"}, **{"training.epochs": 30}))
    h303 = next(f for f in report["findings"] if f["code"] == "H303")
    assert h303["severity"] == "warning" and h303["fix_status"] == "confirmed"
    assert report["first_fix"] == "H303"


def test_within_a_step_the_fix_whose_probe_repairs_more_comes_first():
    """The rules' severity orders a step's confirmed fixes until a probe shows another fix of that step reaching a
    validation metric higher by report.MATERIAL_GAIN: an lr that 'diverges' at every lr (an error) under heavy weight
    decay, whose removal (a warning) repairs the training, puts the decay first; within the margin the error stays
    first; an earlier step always comes first."""
    from nn_doctor.report import MATERIAL_GAIN, Report

    def confirmed(code, after, severity):
        f = _finding(code, improved=True, metric_up=True, severity=severity)
        f.verified["metric_after"] = after
        return f

    for lr_after, decay_after, expected in ((0.55, 0.97, "H303"), (0.95, 0.95 + MATERIAL_GAIN / 2, "H300"),
                                            (0.97, 0.55, "H300")):
        r = Report("full-report")
        r.add(confirmed("H300", lr_after, "error")), r.add(confirmed("H303", decay_after, "warning"))
        r.finalize()
        assert r.first_fix == expected, (lr_after, decay_after)
    r = Report("full-report")
    r.add(confirmed("D104", 0.60, "error")), r.add(confirmed("H303", 0.99, "warning"))
    r.finalize()
    assert r.first_fix == "D104"


def test_a_later_fix_moves_an_applied_number_only_further_the_same_way():
    """The treatment never reverses a fix: a key an earlier fix set may change again only as a number moved
    further the way that fix moved it (a full batch 512 -> 114 -> 28; an lr 0.1 -> 0.01 -> 0.001)."""
    from types import SimpleNamespace

    from nn_doctor.treatment import _continues, _direction
    spec = SimpleNamespace(training=SimpleNamespace(batch_size=114, epochs=20), optimizer=SimpleNamespace(lr=0.01))
    moved = {"training.batch_size": _direction(512, 114), "optimizer.lr": _direction(0.1, 0.01)}
    applied = set(moved)
    assert moved == {"training.batch_size": -1, "optimizer.lr": -1}
    assert _continues({"training.batch_size": 28}, applied, spec, moved)
    assert not _continues({"training.batch_size": 256}, applied, spec, moved)     # back up: a reversal
    assert _continues({"optimizer.lr": 0.001}, applied, spec, moved)
    assert not _continues({"optimizer.lr": 0.03}, applied, spec, moved)
    assert _continues({"training.epochs": 40}, applied, spec, moved)              # a key no fix set
    assert not _continues({"training.batch_size": 28}, applied, spec, {})         # set, but not as a number
    assert _direction("sgd", "adam") is None and _direction(True, False) is None


def test_a_fix_its_probe_refuted_but_the_path_confirmed_after_an_earlier_fix_can_come_first(tmp_path):
    """mse on wine's class ids with lr 3: the loss fix's own probe diverges at lr 3 (refuted), the lr fix is the
    first a probe confirms, and on the repaired spec the loss fix is confirmed. The diagnosed spec's first fix is
    then the earlier step's cause (M203), while its own probe's result still reads "not confirmed"."""
    config = spec(tmp_path, "mse_lr3", {"layers": [{"type": "linear", "out": 16}, {"type": "relu"},
                                                   {"type": "linear", "out": 1}]},
                  loss="mse", **{"optimizer.lr": 3.0, "training.epochs": 30})
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["full-report", "--config", config, "--quiet", "--budget", "120",
                                      "--output", str(out), "--format", "json"])
    assert result.exit_code == 1, result.output
    d = json.loads(out.read_text())
    by_code = {f["code"]: f for f in d["findings"]}
    path = [p["code"] for p in d["probes"]["treatment"]["path"]]
    assert path[:2] == ["H300", "M203"], path
    m203 = by_code["M203"]
    assert m203["fix_status"] == "not confirmed" and m203["confirmed_after"]["after"] == ["H300"]
    assert m203["confirmed_after"]["value"] > m203["confirmed_after"]["before"]
    assert d["first_fix"] == "M203"
    text = CliRunner().invoke(app, ["full-report", "--config", config, "--quiet", "--budget", "120"]).output
    block = text[text.index("M203 loss-task-mismatch"):text.index("[✗] 3")]
    assert "not confirmed:" in block and "confirmed after H300's fix" in block and "verified:" not in block
    assert "fix first: M203" in text


def test_a_refuted_fix_alone_is_not_credited_by_the_path():
    """Only a later step of the treatment path credits a refuted fix; the first pick is confirmed on its own."""
    from nn_doctor.report import Report
    from nn_doctor.treatment import credit_masked_fixes
    r = Report("full-report")
    refuted = _finding("M203", improved=False, severity="error")
    r.add(refuted), r.add(_finding("H300", improved=True, metric_up=True, severity="error"))
    r.finalize()
    credit_masked_fixes(r, [{"code": "H300", "metric": "balanced_accuracy", "before": 0.3, "after": 0.6}])
    assert refuted.confirmed_after is None and r.first_fix == "H300"
    credit_masked_fixes(r, [{"code": "H300", "metric": "balanced_accuracy", "before": 0.3, "after": 0.6},
                            {"code": "M203", "metric": "balanced_accuracy", "before": 0.6, "after": 0.97}])
    assert refuted.confirmed_after["after"] == ["H300"] and r.first_fix == "M203"


def test_a_user_model_whose_logits_pass_a_final_relu_is_m202(tmp_path):
    """Outputs exactly 0 and never below on real rows at init: clipped, as by a final ReLU, before a logits loss."""
    (tmp_path / "relu_head.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        class ReluHead(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, 3))

            def forward(self, x):
                return torch.relu(self.body(x))
    '''))
    config = spec(tmp_path, "relu_head", {"class": "relu_head:ReluHead"})
    result = run("full-report", config)
    assert result.exit_code == 1 and "M202 output-activation-mismatch" in result.output, result.output
    assert "never go below 0 at init" in result.output


def test_batch_norm_on_batches_of_one_crashes_every_probe_and_gets_a_batch_size_fix(tmp_path):
    """A batch of 1 in training mode makes batch norm raise: the crash is G409 with a batch-size fix its probe
    confirms, and the fix comes first."""
    config = spec(tmp_path, "bn_b1", {"layers": [{"type": "linear", "out": 32}, {"type": "batchnorm1d"},
                                                 {"type": "relu"}, {"type": "linear", "out": 3}]},
                  **{"training.batch_size": 1})
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["full-report", "--config", config, *FAST, "--output", str(out), "--format", "json"])
    assert result.exit_code == 1, result.output
    d = json.loads(out.read_text())
    g409 = next(f for f in d["findings"] if f["code"] == "G409")
    assert "Expected more than 1 value per channel" in g409["message"]
    assert "set training.batch_size: 32" in g409["fix"] and g409["fix_status"] == "confirmed"
    assert d["first_fix"] == "G409"


def test_labels_that_do_not_belong_to_their_rows_are_never_healthy(tmp_path):
    """wine with its labels shuffled: the training loss falls (the rows are memorised), the validation balanced
    accuracy stays at chance. Once read as 'learning' and called Healthy; now H304 names it and the fix says to
    check the labels' alignment first."""
    import numpy as np
    import pandas as pd
    df = pd.read_csv(WINE)
    df["label"] = np.random.default_rng(0).permutation(df["label"].to_numpy())
    shuffled = tmp_path / "wine_shuffled.csv"
    df.to_csv(shuffled, index=False)
    config = spec(tmp_path, "shuffled", {"layers": [{"type": "linear", "out": 32}, {"type": "relu"},
                                                    {"type": "linear", "out": 3}], "init": "he"},
                  **{"data.path": str(shuffled), "training.epochs": 30})
    result = run("full-report", config)
    assert result.exit_code == 1 and "Healthy" not in result.output, result.output
    assert "H304 overfitting" in result.output and "no better than chance" in result.output
    assert "check that the targets belong to their rows" in result.output


def test_a_loss_at_its_label_smoothing_floor_is_not_underfitting(tmp_path):
    """label_smoothing 0.9 on wine's 3 classes: cross-entropy cannot go below 1.089 (ln 3 = 1.099), and the run
    reaches it while validating at 0.97 in a plain loop. H305 measured 'still 98% of its start' from 0 and told
    the user to grow the model; above the floor the loss fell all the way."""
    config = spec(tmp_path, "smooth", MLP, **{"loss": {"name": "cross_entropy", "label_smoothing": 0.9},
                                              "training.epochs": 30})
    result = run("full-report", config)
    assert "H305" not in result.output, result.output


def test_an_id_column_as_the_target_is_never_healthy(tmp_path):
    """A regression on a patient id: the MLP memorises its training rows, the validation R^2 stays below 0 at
    every lr. An overfitting pattern whose validation never beat chance is the at-chance H304 error."""
    import numpy as np
    import pandas as pd
    df = pd.read_csv(ROOT / "sample_data" / "breast_cancer.csv")
    df.insert(0, "patient_id", np.random.default_rng(0).permutation(len(df)) + 10000)
    df.to_csv(tmp_path / "bc_id.csv", index=False)
    config = spec(tmp_path, "id_target", {"layers": [{"type": "linear", "out": 64}, {"type": "relu"},
                                                     {"type": "linear", "out": 64}, {"type": "relu"},
                                                     {"type": "linear", "out": 1}]},
                  task="regression", loss="mse", **{"data.path": str(tmp_path / "bc_id.csv"),
                                                    "data.target": "patient_id", "data.normalize_target": True,
                                                    "training.epochs": 30})
    result = run("full-report", config)
    assert result.exit_code == 1 and "Healthy" not in result.output, result.output
    assert "H304 overfitting" in result.output and "no better than chance" in result.output
