"""Renderer tests: a fake report mixing every step status and finding severity (flutter doctor's
fake validators), rendered to text (golden, colour off), JSON, Markdown and JUnit."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from nn_doctor.catalogue import Severity, Step
from nn_doctor.errors import UsageError
from nn_doctor.render import (RENDERERS, ascii_chart, fmt_lr, render, render_json, render_junit,
                              render_markdown, render_text, status_glyph)
from nn_doctor.report import Finding, Report

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def make_report() -> Report:
    """pass / warn / fail / skipped / crashed steps; error, warning and info findings; verified fixes;
    lr and init probes (and one probe the text renderer must ignore)."""
    r = Report(command="full-report",
               inputs={"config": "configs/wine.yaml", "data": "sample_data/wine.csv"},
               environment={"device": "cpu", "torch": "2.3.0", "python": "3.11.7", "seed": 0},
               notes=["no --val given: 20% of the training data is held out"],
               timing={"total_s": 4.2})
    data = r.step(Step.DATA)
    data.summary, data.checks_run = "178 rows, 13 features", ["D101", "D104", "D109"]
    r.add(Finding("D104", "3 of 13 features have std > 100 (proline: std 315)", "set data.normalize: standardize",
                  severity=Severity.ERROR,
                  evidence={"columns": {"proline": {"mean": 746.9, "std": 314.9}}, "threshold_std": 100},
                  verified={"probe": "normalize=standardize", "loss_before": 1.0986, "loss_after": 0.0812}))
    r.add(Finding("D109", "majority/minority class ratio 12 (class 1: 71, class 3: 6)",
                  "set loss.class_weights: balanced", evidence={"counts": {"1": 71, "2": 59, "3": 6}},
                  verified={"probe": "class_weights=balanced", "note": "minority recall 0 → 0.83"}))
    model = r.step(Step.MODEL)
    model.summary, model.checks_run = "MLP 13-64-64-3, 5,251 params", ["M201", "M204"]
    hyper = r.step(Step.HYPERPARAMETERS)
    hyper.summary, hyper.checks_run = "lr 1e-04, batch 32", ["H300", "H301", "H306"]
    r.add(Finding("H301", "lr 1e-04 ends at loss 1.05; 3.2e-03 reaches 0.08 in the same 40 steps",
                  "set optimizer.lr: 0.0032",
                  verified={"probe": "lr=3.2e-03", "loss_before": 1.05, "loss_after": 0.08}))
    r.add(Finding("H306", "plateau: train and validation loss barely move", "-"))
    grads = r.step(Step.GRADIENTS)
    grads.status, grads.reason = "crashed", "RuntimeError: mat1 and mat2 shapes cannot be multiplied (32x13 and 12x64)"
    r.skip_step(Step.RESOURCES, "budget of 30 s used up")
    r.skipped = ["step 5 resources (budget)"]
    r.probes["lr"] = {
        "tried": [
            {"lr": 0.1, "status": "diverged", "initial_loss": 1.1, "final_loss": None, "best_loss": 1.0,
             "curve": [1.1, 1.3, 2.0, 4.5, None, None, None, None], "steps": 40},
            {"lr": 0.0001, "status": "too-slow", "initial_loss": 1.1, "final_loss": 1.05, "best_loss": 1.05,
             "curve": [1.1, 1.09, 1.08, 1.08, 1.07, 1.06, 1.06, 1.05], "steps": 40},
            {"lr": 0.01, "status": "unstable", "initial_loss": 1.1, "final_loss": 0.5, "best_loss": 0.35,
             "curve": [1.1, 0.6, 0.9, 0.4, 0.7, 0.35, 0.8, 0.5], "steps": 40},
            {"lr": 0.0032, "status": "converging", "initial_loss": 1.1, "final_loss": 0.08, "best_loss": 0.08,
             "curve": [1.1, 0.7, 0.45, 0.3, 0.2, 0.14, 0.1, 0.08], "steps": 40},
        ],
        "recommended": 0.0032, "rule": "edge of stability / 3", "reason": None, "configured": 0.0001}
    r.probes["init"] = {"variants": [
        {"init": "configured", "initial_loss": 1.1, "final_loss": 0.9, "status": "unstable", "configured": True,
         "layers": [{"layer": "fc1", "act_std": 0.91, "grad_norm": 0.012},
                    {"layer": "fc2", "act_std": 0.42, "grad_norm": 0.0031},
                    {"layer": "out", "act_std": 0.2, "grad_norm": 0.0009}]},
        {"init": "he", "initial_loss": 1.1, "final_loss": 0.08, "status": "converging", "configured": False,
         "layers": [{"layer": "fc1", "act_std": 1.02, "grad_norm": 0.031},
                    {"layer": "fc2", "act_std": 0.98, "grad_norm": 0.027},
                    {"layer": "out", "act_std": 0.95, "grad_norm": None}]},
    ], "best": "he"}
    r.probes["batch"] = {"tried": [32, 64], "note": "JSON only"}
    return r.finalize()


GOLDEN = """\
nn-doctor full-report — config: configs/wine.yaml, data: sample_data/wine.csv
no --val given: 20% of the training data is held out
[✗] 1 Data (178 rows, 13 features)
    ✗ D104 unscaled-features: 3 of 13 features have std > 100 (proline: std 315)
      fix: set data.normalize: standardize
      verified: normalize=standardize: loss 1.099 → 0.0812
    ! D109 class-imbalance: majority/minority class ratio 12 (class 1: 71, class 3: 6)
      fix: set loss.class_weights: balanced
      verified: class_weights=balanced: minority recall 0 → 0.83
[✓] 2 Model structure (MLP 13-64-64-3, 5,251 params)
[!] 3 Hyperparameters (lr 1e-04, batch 32)
    ! H301 lr-too-low: lr 1e-04 ends at loss 1.05; 3.2e-03 reaches 0.08 in the same 40 steps
      fix: set optimizer.lr: 0.0032
      verified: lr=3.2e-03: loss 1.05 → 0.08
    • H306 loss-curve-pattern: plateau: train and validation loss barely move
[☠] 4 Code and gradients
    crashed: RuntimeError: mat1 and mat2 shapes cannot be multiplied (32x13 and 12x64)
[-] 5 Resources
    skipped: budget of 30 s used up

Learning-rate probe (configured lr 1e-04)
  lr       status      loss initial → final
  1e-01    diverged    1.1 → -
  1e-02    unstable    1.1 → 0.5
  3.2e-03  converging  1.1 → 0.08            recommended
  1e-04    too-slow    1.1 → 1.05            configured

         loss (log scale)
    3.3 ┤                     x
        │              a
        │       a
        │d      d      d      d      d      d      d      d
  0.632 ┤       c                    b
        │              c      b             b             b
        │                     c
        │                            c
        │                                   c      c
   0.08 ┤                                                 c
        └──────────────────────────────────────────────────
         0                 step fraction                  1
         a 1e-01   b 1e-02   c 3.2e-03   d 1e-04   x where a curve stops

  recommended lr: 3.2e-03 (rule: edge of stability / 3)

Init probe (best: he; per layer: activation std / gradient norm at init)
  init        status      loss initial → final  fc1         fc2          out
  configured  unstable    1.1 → 0.9             0.91/0.012  0.42/0.0031  0.2/0.0009  configured
  he          converging  1.1 → 0.08            1/0.031     0.98/0.027   0.95/-      best

Skipped:
  - step 5 resources (budget)

✗ Unhealthy: issues in 2 of 5 steps — fix first: D104 unscaled-features
"""


def test_text_golden():
    assert render_text(make_report()) == GOLDEN
