"""full-report end to end: one seeded fault per step on real data, two faults, healthy configs,
verified fixes that really help when the written spec runs again, unreadable data, bad specs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nn_doctor.doctor import Options, full_report

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"

MLP = [{"type": "linear", "out": 32}, {"type": "relu"}, {"type": "linear", "out": 3}]


def write_spec(tmp_path: Path, name: str = "spec.yaml", **overrides) -> Path:
    spec = {
        "task": "classification",
        "data": {"path": str(SAMPLE / "wine.csv"), "target": "label", "normalize": "standardize"},
        "model": {"layers": MLP, "init": "he"},
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 0.003},
        "training": {"batch_size": 32, "epochs": 30, "seed": 0, "device": "cpu"},
    }
    for dotted, value in overrides.items():
        obj = spec
        *parents, last = dotted.split(".")
        for p in parents:
            obj = obj.setdefault(p, {})
        obj[last] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def run(path: Path, **kw):
    return full_report(Options(config=str(path), quiet=True, **kw))


def codes(report, min_severity: str = "info") -> set[str]:
    rank = {"info": 0, "warning": 1, "error": 2}[min_severity]
    return {f.code for f in report.findings if f.severity.rank >= rank}


# ---- one fault per step, each with the right first_fix -------------------------------------------

def test_step1_unscaled_features_is_first_fix_and_verified(tmp_path):
    rep = run(write_spec(tmp_path, **{"data.normalize": "none", "optimizer.name": "sgd", "optimizer.lr": 0.01}))
    assert rep.first_fix == "D104"
    d104 = next(f for f in rep.findings if f.code == "D104")
    assert d104.verified and d104.verified["improved"], d104.verified
    assert d104.verified["loss_after"] < d104.verified["loss_before"]


def test_step2_softmax_before_cross_entropy(tmp_path):
    layers = MLP + [{"type": "softmax"}]
    rep = run(write_spec(tmp_path, **{"model.layers": layers}))
    assert rep.first_fix == "M202", [f.code for f in rep.findings]


def test_step3_lr_too_high(tmp_path):
    rep = run(write_spec(tmp_path, **{"optimizer.name": "sgd", "optimizer.lr": 5.0}))
    assert "H300" in codes(rep, "error")
    assert rep.first_fix in ("H300",), [f"{f.code}:{f.severity.value}" for f in rep.findings]
    rec = rep.probes["lr"]["recommended"]
    assert rec is not None and 1e-4 <= rec <= 0.1


def test_step4_vanishing_gradients_deep_sigmoid(tmp_path):
    layers = []
    for _ in range(10):
        layers += [{"type": "linear", "out": 32}, {"type": "sigmoid"}]
    layers += [{"type": "linear", "out": 3}]
    rep = run(write_spec(tmp_path, **{"model.layers": layers, "model.init": "xavier", "optimizer.name": "sgd",
                                      "optimizer.lr": 0.01}))
    assert "G401" in codes(rep, "warning")


# ---- two faults in different steps: the earlier step's fix comes first ----------------------------

def test_two_faults_first_fix_is_the_earlier_step(tmp_path):
    rep = run(write_spec(tmp_path, **{"data.normalize": "none", "optimizer.name": "sgd", "optimizer.lr": 5.0}))
    found = codes(rep, "error")
    assert {"D104", "H300"} <= found, found
    assert rep.first_fix == "D104"


# ---- healthy configs: no error-level finding ---------------------------------------------------------

@pytest.mark.parametrize("config", ["wine.yaml", "breast_cancer.yaml", "diabetes.yaml"])
def test_healthy_configs_have_no_errors(config):
    rep = full_report(Options(config=str(ROOT / "configs" / config), quiet=True))
    errors = [f"{f.code}: {f.message}" for f in rep.findings if f.severity.value == "error"]
    assert not errors
    assert rep.verdict in ("healthy", "warnings")


# ---- a verified fix really trains better when the written spec runs again ----------------------------

def test_write_fixed_spec_trains_better(tmp_path):
    bad = write_spec(tmp_path, **{"data.normalize": "none", "optimizer.name": "sgd", "optimizer.lr": 0.01})
    fixed = tmp_path / "fixed.yaml"
    rep = run(bad, write_fixed=str(fixed))
    assert fixed.exists()
    assert "D104" in rep.probes["fixed_spec"]["applied"]
    rep2 = full_report(Options(config=str(fixed), quiet=True))
    assert "D104" not in codes(rep2, "warning")
    assert rep2.probes["lr"] and rep.probes["lr"]
    before = next(f for f in rep.findings if f.code == "D104").verified["loss_before"]
    # the fixed spec's own baseline probe trains to a lower loss than the broken one did
    base_tried = {t["lr"]: t for t in rep2.probes["lr"]["tried"]}
    after = base_tried[rep2.probes["lr"]["configured"]]["final_loss"]
    assert after is not None and after < before


# ---- unreadable data and bad specs --------------------------------------------------------------------

def test_unreadable_data_gives_a_report_with_the_rest_skipped(tmp_path):
    spec = write_spec(tmp_path, **{"data.path": str(tmp_path / "missing.csv")})
    proc = subprocess.run([sys.executable, "-m", "nn_doctor", "full-report", "--config", str(spec), "--format",
                           "json", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["data"]["status"] == "fail" and "D100" in steps["data"]["codes"]
    for name in ("hyperparameters", "gradients", "resources"):
        assert steps[name]["status"] == "skipped" and steps[name]["reason"]
    assert report["first_fix"] == "D100"


def test_bad_spec_exits_2_with_one_line(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("model:\n  layers:\n    - {type: linear, out: -3}\nloss: cross_entropy\n")
    proc = subprocess.run([sys.executable, "-m", "nn_doctor", "full-report", "--config", str(spec)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "model.layers[0].out" in proc.stderr and "positive integer" in proc.stderr


def test_bundled_example_names_its_real_fault():
    rep = full_report(Options(config=str(ROOT / "nn_doctor" / "examples" / "example.yaml"), quiet=True),
                      example=True)
    assert rep.first_fix == "D104"
    assert "H300" in codes(rep, "error")
    assert any("bundled example" in n for n in rep.notes)


def test_tiny_budget_names_what_was_skipped(tmp_path):
    rep = run(write_spec(tmp_path), budget=0.05)
    assert rep.skipped, "a 50 ms budget cannot fit every probe; the report must name what it skipped"
    assert all("budget" in s for s in rep.skipped)
    # the data step never depends on the budget
    assert rep.steps[list(rep.steps)[0]].status in ("pass", "warn", "fail")


def test_select_that_runs_nothing_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nn_doctor", "check-data", str(SAMPLE / "wine.csv"), "--target",
                           "label", "--select", "G4"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no check ran" in proc.stderr


def test_unknown_code_in_select_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "nn_doctor", "check-data", str(SAMPLE / "wine.csv"), "--target",
                           "label", "--select", "D999"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "D999" in proc.stderr


def test_full_report_examines_the_users_training_step(tmp_path):
    (tmp_path / "mytrain.py").write_text(
        "def step(model, batch, optimizer, loss_fn):\n"
        "    x, y = batch\n"
        "    loss = loss_fn(model(x), y)\n"
        "    loss.backward()          # bug: gradients are never zeroed\n"
        "    optimizer.step()\n"
        "    return loss\n")
    rep = run(write_spec(tmp_path, **{"training.step": "mytrain:step"}))
    g408 = [f for f in rep.findings if f.code == "G408"]
    assert g408 and any("zero_grad" in f.fix for f in g408), [f.message for f in g408]
    assert rep.probes["user_step"]["ref"] == "mytrain:step"


def test_full_report_correct_training_step_is_clean(tmp_path):
    (tmp_path / "goodtrain.py").write_text(
        "def step(model, batch, optimizer, loss_fn):\n"
        "    x, y = batch\n"
        "    optimizer.zero_grad()\n"
        "    loss = loss_fn(model(x), y)\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
        "    return loss\n")
    rep = run(write_spec(tmp_path, **{"training.step": "goodtrain:step"}))
    assert not [f for f in rep.findings if f.code == "G408"]


def test_an_init_that_blows_up_to_nan_is_the_first_fix_not_its_symptom(tmp_path):
    # the zoo's g402_init_explodes_to_nan: N(0, 0.5) weights in a 6x64 ReLU net on diabetes go NaN within
    # two steps whatever the lr; M205 (the cause) is an error and comes before G400 (the symptom)
    layers = []
    for _ in range(6):
        layers += [{"type": "linear", "out": 64}, {"type": "relu"}]
    layers.append({"type": "linear", "out": 1})
    rep = run(write_spec(tmp_path, **{"task": "regression", "data.path": str(SAMPLE / "diabetes.csv"),
                                      "data.target": "progression", "data.normalize_target": True,
                                      "loss": "mse", "model.layers": layers, "model.init": {"normal": 0.5},
                                      "optimizer.name": "sgd", "optimizer.lr": 1e-4}))
    m205 = next(f for f in rep.findings if f.code == "M205")
    assert m205.severity.value == "error" and "first_nonfinite" in m205.evidence
    assert "G400" in codes(rep, "error")
    assert rep.first_fix == "M205"
