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
                  verified={"probe": "normalize=standardize", "loss_before": 1.0986, "loss_after": 0.0812,
                            "improved": True}))
    r.add(Finding("D109", "majority/minority class ratio 12 (class 1: 71, class 3: 6)",
                  "set loss.class_weights: balanced", evidence={"counts": {"1": 71, "2": 59, "3": 6}},
                  verified={"probe": "class_weights=balanced", "note": "minority recall 0 → 0.83", "improved": True}))
    model = r.step(Step.MODEL)
    model.summary, model.checks_run = "MLP 13-64-64-3, 5,251 params", ["M201", "M204"]
    hyper = r.step(Step.HYPERPARAMETERS)
    hyper.summary, hyper.checks_run = "lr 1e-04, batch 32", ["H300", "H301", "H306"]
    r.add(Finding("H301", "lr 1e-04 ends at loss 1.05; 3.2e-03 reaches 0.08 in the same 40 steps",
                  "set optimizer.lr: 0.0032",
                  verified={"probe": "lr=3.2e-03", "loss_before": 1.05, "loss_after": 0.08, "improved": True}))
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
      symptom of: D104 (fix that first)
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


def test_text_colour_only_adds_ansi_codes():
    report = make_report()
    plain, coloured = render_text(report), render_text(report, color=True)
    assert not ANSI.search(plain)
    assert "\x1b[31m[✗]" in coloured                 # red box on the failing row
    assert "\x1b[32m[✓]" in coloured                 # green box on the passing row
    assert "\x1b[33m!" in coloured                   # yellow warning glyph
    assert ANSI.sub("", coloured) == plain          # one code path: same content either way
    report.findings[0].message += " and a tail" * 20   # longer than the console: never re-wrapped
    assert ANSI.sub("", render_text(report, color=True)) == render_text(report)


def test_text_verbose_adds_evidence_truncated():
    report = make_report()
    report.findings[0].evidence["long"] = "y" * 300
    plain, verbose = render_text(report), render_text(report, verbose=True)
    assert "threshold_std" not in plain
    assert '      columns: {"proline": {"mean": 746.9, "std": 314.9}}' in verbose
    assert "      threshold_std: 100" in verbose
    long_line = next(line for line in verbose.splitlines() if "long: yyy" in line)
    assert long_line.endswith("…") and len(long_line.strip()) == 100
    assert "checks: D101 D104 D109" in verbose
    assert "device: cpu, torch: 2.3.0, python: 3.11.7, seed: 0; took 4.2 s" in verbose


def test_text_summary_line_for_each_verdict():
    warn = Report(command="check-data")
    warn.step(Step.DATA).summary = "10 rows"
    warn.add(Finding("D109", "ratio 12", "set loss.class_weights: balanced"))
    warn.finalize()
    text = render_text(warn)
    assert text.endswith("\n\n! Warnings in 1 of 1 step — first: D109 class-imbalance\n")
    assert "[!] 1 Data (10 rows)" in text

    healthy = Report(command="check-data")
    healthy.step(Step.DATA)
    healthy.add(Finding("R503", "12 ms/step", "-"))   # info only: still healthy, shown as one line
    healthy.finalize()
    text = render_text(healthy)
    assert text.endswith("\n\n✓ Healthy: no issues found.\n")
    assert "    • R503 throughput: 12 ms/step\n" in text
    assert "fix:" not in text

    partial = Report(command="full-report", interrupted=True)
    partial.step(Step.DATA)
    partial.skip_step(Step.MODEL, "interrupted")
    partial.finalize()
    text = render_text(partial)
    assert "Interrupted: partial report" in text
    # an interrupted run is never a clean bill of health (it once ended "✓ Healthy"), and never exits 0
    assert "Healthy" not in text and partial.verdict == "incomplete" and partial.to_dict()["verdict"] == "incomplete"
    assert text.endswith("? Incomplete: not checked in full (interrupted) — not a clean bill of health.\n")
    assert partial.exit_code("error") == 130

    crashed = Report(command="check-data")
    crashed.step(Step.DATA).status = "crashed"
    crashed.step(Step.DATA).reason = "check D104 crashed: ValueError: boom"
    crashed.finalize()
    text = render_text(crashed)
    assert "Healthy" not in text and crashed.verdict == "incomplete" and crashed.exit_code("error") == 1
    assert crashed.exit_code("never") == 0


def test_text_steps_not_run_are_hidden_and_other_probes_ignored():
    report = make_report()
    report.step(Step.MODEL).ran = False
    text = render_text(report)
    assert "Model structure" not in text
    assert "issues in 2 of 4 steps" in text
    assert "JSON only" not in text and "batch" not in text.split("Learning-rate probe")[1]


def test_lr_probe_without_recommendation_says_why():
    report = Report(command="probe-lr")
    report.step(Step.HYPERPARAMETERS)
    report.probes["lr"] = {"tried": [{"lr": 0.1, "status": "diverged", "initial_loss": None, "final_loss": None,
                                      "curve": [None, None], "steps": 10}],
                           "recommended": None, "rule": "edge / 3", "reason": "every lr tried diverged",
                           "configured": 0.1}
    text = render_text(report.finalize())
    assert "  no recommendation: every lr tried diverged\n" in text
    assert "recommended lr" not in text
    assert re.search(r"\n  1e-01  diverged  - → - +configured\n", text)


def test_status_glyphs_and_lr_format():
    assert [status_glyph(s)[0] for s in ("pass", "warn", "fail", "skipped", "crashed")] == ["✓", "!", "✗", "-", "☠"]
    assert [fmt_lr(x) for x in (0.1, 0.0032, 1e-4, 0.00316)] == ["1e-01", "3.2e-03", "1e-04", "3.2e-03"]


# ---- JSON ----------------------------------------------------------------------------------

def test_json_schema_v1():
    text = render_json(make_report())
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert doc["schema_version"] == 1
    assert set(doc) == {"schema_version", "tool", "command", "inputs", "environment", "verdict", "first_fix",
                        "steps", "findings", "probes", "timing", "notes", "skipped"}
    assert doc["tool"]["name"] == "nn-doctor"
    assert doc["verdict"] == "unhealthy" and doc["first_fix"] == "D104"
    assert [(s["step"], s["name"], s["status"]) for s in doc["steps"]] == [
        (1, "data", "fail"), (2, "model", "pass"), (3, "hyperparameters", "warn"),
        (4, "gradients", "crashed"), (5, "resources", "skipped")]
    first = doc["findings"][0]
    assert set(first) == {"code", "name", "step", "severity", "message", "evidence", "fix", "verified", "fix_status"}
    assert first["verified"] == {"probe": "normalize=standardize", "loss_before": 1.0986, "loss_after": 0.0812,
                                 "improved": True}
    assert first["fix_status"] == "confirmed"
    assert doc["probes"]["lr"]["recommended"] == 0.0032
    assert doc["probes"]["lr"]["tried"][0]["curve"][-1] is None
    assert "├" not in text and "✓" not in text      # JSON carries data, not the text rendering


# ---- JUnit ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fail_on, failing", [("error", ["D104 unscaled-features"]),
                                              ("warning", ["D104 unscaled-features", "D109 class-imbalance",
                                                           "H301 lr-too-low"]),
                                              ("never", [])])
def test_junit_counts_follow_fail_on(fail_on, failing):
    root = ET.fromstring(render_junit(make_report(), fail_on))
    assert root.tag == "testsuite" and root.get("name") == "nn-doctor.full-report"
    cases = root.findall("testcase")
    # 3 data checks + 2 model + 3 hyperparameters + the crashed and the skipped step
    assert len(cases) == int(root.get("tests")) == 10
    assert int(root.get("failures")) == len(failing)
    assert [c.get("name") for c in cases if c.find("failure") is not None] == failing
    assert int(root.get("skipped")) == 2
    skipped = {c.get("name"): c.find("skipped").get("message") for c in cases if c.find("skipped") is not None}
    assert skipped == {"step 4 gradients": "crashed: RuntimeError: mat1 and mat2 shapes cannot be multiplied "
                                           "(32x13 and 12x64)",
                       "step 5 resources": "budget of 30 s used up"}
    assert {c.get("classname") for c in cases} == {"nn-doctor.data", "nn-doctor.model", "nn-doctor.hyperparameters",
                                                   "nn-doctor.gradients", "nn-doctor.resources"}


def test_junit_failure_carries_message_fix_evidence_and_escapes():
    report = make_report()
    report.findings[0].message = 'std > 100 & "quoted" <tag>\x00'
    root = ET.fromstring(render_junit(report, "error"))
    failure = root.find("testcase[@name='D104 unscaled-features']/failure")
    assert failure.get("type") == "error"
    assert failure.get("message") == 'std > 100 & "quoted" <tag>'   # the NUL, invalid in XML, is dropped
    assert "fix: set data.normalize: standardize" in failure.text
    assert '"threshold_std": 100' in failure.text
    info = root.find("testcase[@name='H306 loss-curve-pattern']")
    assert info.find("failure") is None and "plateau" in info.find("system-out").text
    with pytest.raises(UsageError):
        render_junit(report, "info")


def test_junit_finding_without_a_declared_check_still_gets_a_testcase():
    report = Report(command="check-data")
    report.step(Step.DATA).checks_run = ["D101"]
    report.add(Finding("D106", "2 outliers in alcohol", "clip alcohol"))
    root = ET.fromstring(render_junit(report.finalize(), "warning"))
    assert [c.get("name") for c in root.findall("testcase")] == ["D101 missing-values", "D106 extreme-outliers"]
    assert root.get("failures") == "1"


# ---- Markdown ------------------------------------------------------------------------------

def test_markdown_summary():
    md = render_markdown(make_report())
    assert md.startswith("## nn-doctor full-report: unhealthy\n")
    assert "| step | status | findings |\n|---|---|---|\n" in md
    assert "| 1 Data (178 rows, 13 features) | ✗ fail | D104 unscaled-features, D109 class-imbalance |" in md
    assert "| 4 Code and gradients | ✗ crashed: RuntimeError:" in md
    assert "| 5 Resources | - skipped: budget of 30 s used up |  |" in md
    assert "☠" not in md
    assert "### ✗ D104 unscaled-features (error)" in md
    assert "**Fix:** set data.normalize: standardize" in md
    assert "**Verified:** normalize=standardize: loss 1.099 → 0.0812" in md
    assert '```json\n{"columns": {"proline": {"mean": 746.9, "std": 314.9}}, "threshold_std": 100}\n```' in md
    assert "| 3.2e-03 | converging | 1.1 | 0.08 | recommended |" in md
    assert md.rstrip("\n").splitlines()[-1] == \
        "**Fix first:** `D104` unscaled-features — set data.normalize: standardize"


def test_markdown_escapes_pipes_and_truncates_evidence():
    report = Report(command="check-data")
    report.step(Step.DATA).summary = "a | b"
    report.add(Finding("D101", "x", "impute", evidence={"rows": list(range(1000))}))
    md = render_markdown(report.finalize())
    assert "| 1 Data (a \\| b) |" in md
    block = md.split("```json\n")[1].split("\n```")[0]
    assert block.endswith("…") and len(block) <= 800


# ---- dispatch ------------------------------------------------------------------------------

def test_render_dispatch():
    report = make_report()
    assert set(RENDERERS) == {"text", "json", "markdown"}
    assert render(report, "json") == render_json(report)
    assert render(report, "text", color=True) == render_text(report, color=True)
    assert render(report, "markdown") == render_markdown(report)
    with pytest.raises(UsageError):
        render(report, "yaml")


def test_render_module_does_not_import_torch():
    code = "import sys, nn_doctor.render; print('torch' in sys.modules, 'rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---- the chart -----------------------------------------------------------------------------

def _plot_rows(chart: list[str], width: int) -> list[str]:
    """The plot area of an ascii_chart: the characters right of the y axis, one string per row."""
    rows = [line for line in chart if ("┤" in line or "│" in line)]
    return [re.split("[┤│]", line, maxsplit=1)[1].ljust(width) for line in rows]


def test_ascii_chart_decreasing_series_goes_down_and_stops_at_none():
    chart = ascii_chart({"1e-02": [8.0, 4.0, 2.0, 1.0, 0.5, None, None, None, None, None]}, height=10, width=50)
    grid = _plot_rows(chart, 50)
    assert len(grid) == 10
    points = sorted((col, row) for row, line in enumerate(grid) for col, ch in enumerate(line) if ch != " ")
    assert len(points) == 5
    rows_by_col = [row for _, row in points]
    assert rows_by_col == sorted(rows_by_col) and rows_by_col[0] == 0 and rows_by_col[-1] == 9  # down the chart
    assert [grid[row][col] for col, row in points] == ["a", "a", "a", "a", "x"]  # the last point marks the stop
    assert points[-1][0] < 25                        # nothing drawn after the None (5 of 10 points)
    assert "a 1e-02" in chart[-1] and "x where a curve stops" in chart[-1]
    assert "(log scale)" in chart[0]


def test_ascii_chart_clips_and_shares_the_x_grid():
    chart = ascii_chart({"slow": [1.0, 0.9, 0.8, 0.7], "fast": [1.0, 50.0]}, height=6, width=20,
                        stopped={"fast"})
    grid = _plot_rows(chart, 20)
    assert grid[0][6] == "x"                         # 50 is clipped to the top row (3 x 1.0 = 3)
    assert chart[1].lstrip().startswith("3 ┤")
    assert grid[5][19] == "a" and grid[0][19] == " "  # "slow" ends at the right edge, "fast" a third of the way
    assert ascii_chart({}) == []
    assert ascii_chart({"a": [None, float("nan")]}) == ["(nothing to plot: no finite values)"]
