"""The HTML report (--html FILE): one self-contained page, checked as text and in a real headless browser.

The browser tests need Chromium (or Chrome) from the system packages (`apt-get install chromium`); they
skip, saying so, only where none is installed. The full-report test keeps its screenshot in
benchmarks/out/html_report.png (ignored by git) and prints the path.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the HTML report needs matplotlib (pip install 'nn-doctor[html]')")

import browser  # noqa: E402  (tests/browser.py)
from nn_doctor.report import Finding, Report  # noqa: E402
from nn_doctor.catalogue import Step  # noqa: E402
from nn_doctor.render_html import render_html  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "benchmarks" / "out" / "html_report.png"
FULL_REPORT_PLOTS = {"plot-lr-curves", "plot-lr-final", "plot-baseline", "plot-grad-norm", "plot-update-ratio"}
MIN_PLOT_WIDTH_PX = 300      # a plot laid out in the page is at least this wide (the content column is ~700 px)
MIN_PLOT_HEIGHT_PX = 150
MAX_SCREENSHOT_PX = 16_000  # the screenshot shows the whole page up to this height


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nn_doctor", *args]


def network_refs(page: str) -> list[str]:
    """Everything in the page that would make a browser fetch something: src/href/url() to a scheme,
    <link>, <script src>, @import. (xmlns namespace names are identifiers, not fetches.)"""
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:|//)[^"' >]*""", page, re.I)
    refs += re.findall(r"url\(\s*['\"]?\s*(?:https?:|//)[^)]*\)", page, re.I)
    refs += re.findall(r"<link\b[^>]*>|<script\b[^>]*\bsrc\b[^>]*>|@import", page, re.I)
    return refs


def synthetic_report() -> Report:
    """A report holding every probe section the page can show (shapes as the doctor stores them)."""
    rep = Report("full-report")
    rep.inputs = {"config": "spec.yaml", "data": "data.csv"}
    rep.environment = {"device": "cpu", "torch": "2.13.0"}
    for st in Step:
        rep.step(st)
    for code in ("D104", "H300", "G406"):
        rep.mark_checked(code)
    rep.add(Finding("D104", "scales span 1e3x <b>&amp; more</b>", "set data.normalize: standardize",
                    {"columns": {"proline": {"std": 311.0}}},
                    verified={"probe": "data.normalize=standardize", "loss_before": 1.09, "loss_after": 0.04,
                              "improved": True}))
    rep.add(Finding("H300", "the configured lr 0.1 diverged", "lower optimizer.lr to 0.001"))
    curve = [2.0 * 0.97 ** i for i in range(40)]
    rep.probes["lr"] = {
        "configured": 0.1, "recommended": 0.001, "rule": "the working lr with the lowest training loss",
        "edge_of_stability": 0.01,
        "tried": [{"lr": 0.1, "status": "diverged", "initial_loss": 2.0, "final_loss": None, "loss_at_stop": 90.0,
                   "steps": 10, "curve": [2.0, 9.0, 40.0, 90.0], "curve_every": 3},
                  {"lr": 0.01, "status": "unstable", "initial_loss": 2.0, "final_loss": 1.2, "steps": 150,
                   "curve": [2.0 - 0.02 * i + 0.3 * (i % 3) for i in range(38)], "curve_every": 4},
                  {"lr": 0.001, "status": "converging", "initial_loss": 2.0, "final_loss": 0.6, "steps": 150,
                   "curve": curve[:38], "curve_every": 4},
                  {"lr": 0.0001, "status": "too-slow", "initial_loss": 2.0, "final_loss": 1.9, "steps": 150,
                   "curve": [2.0 - 0.002 * i for i in range(38)], "curve_every": 4}]}
    steps = [0, 15, 30, 45]
    rep.probes["baseline"] = {
        "steps": 60, "stopped": "completed", "train_smoothed": {"every": 1, "values": curve},
        "train_eval": [[0, 2.0], [60, 0.5]], "val": [[0, 2.1], [20, 1.2], [40, 0.9], [60, 0.8]],
        "layer_steps": steps, "n_layers": 2,
        "layers": {"0:linear": {"kind": "linear", "grad_norm": [1.0, 0.5, 0.3, 0.2],
                                "update_ratio": [1e-2, 5e-3, 2e-3, 1e-3]},
                   "2:linear": {"kind": "linear", "grad_norm": [2.0, 0.9, None, 0.4],
                                "update_ratio": [2e-2, 1e-2, 5e-3, 2e-3]}},
        "update_ratio_band": {"low": 1e-5, "target": 1e-3, "high": 1e-1}}
    rep.probes["init"] = {
        "best": "he", "configured": "default", "comparison": "he trains to loss 0.5 vs 0.9",
        "variants": [{"init": name, "configured": name == "default", "status": "converging", "initial_loss": 2.0,
                      "final_loss": fin, "curve": {"every": 5, "values": [2.0 * (fin / 2.0) ** (i / 20)
                                                                          for i in range(21)]},
                      "layers": [{"layer": "0:linear", "act_std": s0, "grad_norm": 1.0},
                                 {"layer": "2:linear", "act_std": s0 * 0.5, "grad_norm": 0.5}]}
                     for name, fin, s0 in (("default", 0.9, 0.6), ("he", 0.5, 1.0), ("xavier", 0.7, 0.8))]}
    rep.probes["treatment"] = {
        "path": [{"code": "D104", "name": "unscaled-features", "fix": "set data.normalize: standardize",
                  "patch": {"data.normalize": "standardize"}, "metric": "balanced_accuracy", "before": 0.33,
                  "after": 0.91, "loss_before": 1.09, "loss_after": 0.2},
                 {"code": "H300", "name": "lr-too-high", "fix": "lower optimizer.lr", "patch": {"optimizer.lr": 0.001},
                  "metric": None, "before": None, "after": None, "loss_before": 0.2, "loss_after": 0.04}],
        "written_without_probe": {}, "stopped": "the spec is healthy",
        "final": {"verdict": "healthy", "first_fix": None, "metric": "balanced_accuracy", "value": 0.97,
                  "findings": []}}
    return rep.finalize()


def test_page_holds_every_section_and_plot_and_loads_nothing():
    page = render_html(synthetic_report())
    for pid in FULL_REPORT_PLOTS | {"plot-init-curves", "plot-init-layers", "plot-treatment"}:
        assert page.count(f'id="{pid}"') == 1, pid
    assert page.count("<svg") == 8
    assert network_refs(page) == []
    assert "<script" not in page
    # user text is escaped, never markup
    assert "scales span 1e3x &lt;b&gt;&amp;amp; more&lt;/b&gt;" in page and "<b>&amp; more</b>" not in page
    # the checklist links each code to its finding; the finding has evidence and the verified fix
    assert re.search(r'<a href="#(finding-\d+)">D104</a>', page)
    anchor = re.search(r'<a href="#(finding-\d+)">D104</a>', page).group(1)
    assert f'id="{anchor}"' in page
    assert "data.normalize=standardize: loss 1.09 → 0.04" in page
    assert "&quot;proline&quot;" in page            # evidence, as JSON
    # the treatment path: each fix with before -> after
    section = page[page.index('id="treatment"'):page.index('id="lr-probe"')]
    assert "data.normalize=standardize" in section and "optimizer.lr=0.001" in section
    assert "balanced accuracy" in section and "0.33" in section and "0.91" in section   # D104: its metric
    assert "<td>loss</td><td class=\"num\">0.2</td><td class=\"num\">0.04</td>" in section   # H300: its loss
    assert "Result:</strong> healthy, balanced accuracy 0.97" in section
    # the recommendation is stated and marked
    assert "Recommended lr: 1e-03" in page and "recommended 1e-03" in page
    # the same report gives the same page (fixed SVG ids: several SVGs share one page without clashes)
    assert render_html(synthetic_report()) == page
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_a_report_without_probes_still_renders():
    rep = Report("check-data")
    rep.step(Step.DATA)
    rep.mark_checked("D104")
    page = render_html(rep.finalize())
    assert "Healthy" in page and "No findings." in page and "<svg" not in page


def test_help_imports_neither_matplotlib_nor_torch():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "nn_doctor", "full-report", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--html" in proc.stdout
    modules = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "matplotlib" not in modules and "torch" not in modules


def test_html_without_matplotlib_is_a_usage_error_before_any_work(tmp_path, monkeypatch):
    import importlib.util
    from typer.testing import CliRunner
    from nn_doctor.cli import app
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["check-curves", str(ROOT / "configs" / "logs" / "wine_noisy_labels.csv"),
                                   "--html", str(out)])
    assert res.exit_code == 2
    assert "--html needs matplotlib" in res.output and "nn-doctor[html]" in res.output
    assert "Traceback" not in res.output and not out.exists()


def test_check_curves_html_plots_the_logged_values(tmp_path):
    out = tmp_path / "curves.html"
    log = ROOT / "configs" / "logs" / "wine_noisy_labels.csv"
    proc = subprocess.run(cli("check-curves", str(log), "--html", str(out)), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    page = out.read_text(encoding="utf-8")
    assert 'id="plot-log-curves"' in page and network_refs(page) == []
    # the plot's data: the values as logged, not smoothed (the last logged validation value is there)
    import pandas as pd
    last_val = pd.read_csv(log)["val_loss"].dropna().iloc[-1]
    probes = json.loads(subprocess.run(cli("check-curves", str(log), "--format", "json"), capture_output=True,
                                       text=True, timeout=120).stdout)["probes"]["curves"]
    assert probes["val"][-1][1] == pytest.approx(last_val, rel=1e-6)


def test_check_data_html_has_the_checklist_and_findings(tmp_path):
    out = tmp_path / "data.html"
    proc = subprocess.run(cli("check-data", str(ROOT / "sample_data" / "wine.csv"), "--target", "label",
                              "--html", str(out), "--quiet"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr      # unscaled wine: D104 is an error
    page = out.read_text(encoding="utf-8")
    assert 'id="checklist"' in page and "D104" in page and "unscaled-features" in page
    assert "set data.normalize: standardize" in page


def test_probe_init_html_shows_the_variants(tmp_path, one_thread):
    out = tmp_path / "init.html"
    proc = subprocess.run(cli("probe-init", "--config", str(ROOT / "configs" / "wine.yaml"), "--steps", "40",
                              "--quiet", "--html", str(out)), capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    page = out.read_text(encoding="utf-8")
    assert 'id="plot-init-curves"' in page and 'id="plot-init-layers"' in page
    for name in ("default", "he", "xavier", "lecun", "orthogonal"):
        assert f"<td>{name}</td>" in page


@pytest.fixture(scope="module")
def chromium():
    path = browser.find_browser()
    if path is None:
        pytest.skip("no headless browser installed (apt-get install chromium): the HTML report was not "
                    "checked in a browser")
    return path


def test_the_browser_probe_sees_errors(chromium, tmp_path):
    """The check below would pass on a broken page if the probe saw nothing: a page with a script error,
    a console error and a missing image must show all three."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head></head><body><img src="missing.png">'
                   '<script>console.error("control");nosuch()</script></body></html>', encoding="utf-8")
    seen = browser.load(chromium, bad, tmp_path)
    assert seen["console"] == ["control"]
    assert any("nosuch" in e for e in seen["errors"]) and any("missing.png" in e for e in seen["errors"])
    assert seen["console_log"]


def test_full_report_html_loads_in_chromium_with_every_plot(chromium, tmp_path):
    out = tmp_path / "report.html"
    proc = subprocess.run(cli("full-report", "--quiet", "--html", str(out)), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]        # the bundled example is unhealthy on purpose
    page = out.read_text(encoding="utf-8")
    assert network_refs(page) == []
    assert not re.search(r"""src\s*=\s*["']?[^"'>]*http""", page, re.I)
    seen = browser.load(chromium, out, tmp_path)
    assert seen["errors"] == [] and seen["console"] == [] and seen["console_log"] == []
    assert seen["resources"] == []                            # nothing fetched, not even from disk
    plots = {p["id"]: p for p in seen["plots"]}
    assert FULL_REPORT_PLOTS <= set(plots), sorted(plots)
    for pid in FULL_REPORT_PLOTS:
        p = plots[pid]
        assert p["width"] >= MIN_PLOT_WIDTH_PX and p["height"] >= MIN_PLOT_HEIGHT_PX, p
        assert p["paths"] > 5 and p["texts"] > 5, p           # axes, lines and labels were drawn
    assert seen["title"].startswith("nn-doctor full-report")
    # the page as laid out 780 px wide is taller than at 1100 px: its height there is enough for the whole page
    browser.screenshot(chromium, out, SCREENSHOT, tmp_path, size=(1100, min(int(seen["height"]), MAX_SCREENSHOT_PX)))
    from PIL import Image
    with Image.open(SCREENSHOT) as im:
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50            # a rendered page, not a blank one
    print(f"\nscreenshot of the HTML report: {SCREENSHOT}")
