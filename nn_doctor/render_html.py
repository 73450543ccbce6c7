"""The HTML report (`--html FILE`): one self-contained page, nothing loaded from the network.

A pure function of the report model, `render_html(report) -> str`, like the other renderers. It holds
the checklist, every finding with its evidence and fix, and the plots the probes recorded: the lr
probe's loss curves (log scale, the recommendation marked), the baseline's train/validation curves,
per-layer gradient norms and update ratios, the init variants, the treatment path, and for
check-curves the logged curves.

Plots are drawn by matplotlib and inlined as SVG (CSS inline too; no script at all). Chosen over plotly
with its JavaScript inlined by size and import time, measured here (2-core machine, 7 lines of 40
points): matplotlib imports in 0.7-0.9 s and writes ~25 KiB of SVG per plot; plotly imports in 0.05 s
but inlining plotly.js makes every file 4.7 MB. Here the bundled example's page is ~150 KB with six plots,
drawn in ~1.2 CPU s (fixed margins and plain tick labels: constrained layout and mathtext took 5.8 s for
eight plots). matplotlib is the optional extra `html`; only this
module imports it, and the CLI imports this module only when --html is given (--help stays fast).
"""
from __future__ import annotations

import html
import io
import json
import math
import re
from typing import Any

from . import __version__
from .report import Report, clean_json
from .render import (CHART_CLIP, METRIC_NAMES, confirmed_after_text, fix_status_label, _finite, _init_rows,
                     _lr_marks, _lr_tried, _rows, _summary, _verified_text, fmt_lr, fmt_num, severity_glyph, status_glyph)

FIG_WIDTH_IN = 7.5        # plot width in inches (at 96 px/in about 720 px: the page's content width)
FIG_HEIGHT_IN = 3.4
LOG_SCALE_SPAN = 10.0     # a loss axis is logarithmic when its positive values span more than 10x
MIN_STEPS_FOR_TIME_AXIS = 3  # per-layer plots over fewer recorded steps put the layers on the x axis instead
MINOR_LABEL_DECADES = 2      # log axes spanning fewer decades also label 2x and 5x ticks
MAX_TREATMENT_AXES = 3       # the treatment plot has one axis per measured quantity, at most this many
MAX_LEGEND_ROWS = 12      # legends with more entries go to two columns outside the axes
EVIDENCE_JSON_CHARS = 20_000  # one finding's evidence block is cut here (the JSON report has all of it)

_STATUS_WORDS = {"pass": "passed", "warn": "warnings", "fail": "failed", "skipped": "skipped", "crashed": "crashed"}
_VERDICT_CLASS = {"healthy": "ok", "warnings": "warn", "incomplete": "warn", "unhealthy": "bad"}
_LR_STATUS_COLORS = {"converging": "#2b8a3e", "too-slow": "#868e96", "unstable": "#e67700", "diverged": "#c92a2a",
                     "error": "#862e9c"}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2125}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 10px;border-bottom:1px solid #d0d4d9;padding-bottom:4px}
h3{font-size:16px;margin:18px 0 6px}
.meta{color:#555;font-size:13px}.meta code{font-size:12px}
.verdict{padding:10px 14px;border-radius:6px;font-weight:600;margin:14px 0}
.verdict.ok{background:#e6f4ea;color:#1e6b30}.verdict.warn{background:#fff4d6;color:#7a5200}
.verdict.bad{background:#fde8e8;color:#9b1c1c}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:14px}
th,td{border:1px solid #d9dde2;padding:4px 9px;text-align:left;vertical-align:top}th{background:#eef0f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.st-pass,.sev-info{color:#1e6b30}.st-warn,.sev-warning{color:#946200}.st-fail,.sev-error{color:#b42318}
.st-skipped{color:#777}.st-crashed{color:#862e9c}
.finding{background:#fff;border:1px solid #d9dde2;border-left:5px solid #adb5bd;border-radius:4px;padding:8px 12px;
margin:8px 0}.finding.error{border-left-color:#d64545}.finding.warning{border-left-color:#e0a800}
.finding.info{border-left-color:#4c8bd6}.finding .head{font-weight:600}.finding .fix{margin-top:4px}
.finding .verified{margin-top:2px;color:#1e6b30}.finding .verified.no{color:#946200}
.label{display:inline-block;min-width:62px;color:#555;font-size:13px}
details{margin-top:4px}summary{cursor:pointer;color:#555;font-size:13px}
pre{background:#f1f3f5;padding:8px;overflow:auto;font-size:12px;max-height:360px}
figure.plot{background:#fff;border:1px solid #d9dde2;border-radius:4px;margin:10px 0;padding:6px}
figure.plot svg{width:100%;height:auto;display:block}
figcaption{font-size:13px;color:#444;padding:2px 6px}
ul.plain{padding-left:20px;margin:4px 0}
footer{color:#777;font-size:12px;margin-top:32px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


# ---- plots ------------------------------------------------------------------------------------------

class _Plots:
    """matplotlib figures -> inline SVG. Each SVG's ids get a per-plot prefix (several SVGs share one page)."""

    def __init__(self) -> None:
        import matplotlib   # the `html` extra; imported only when an HTML report is written
        from matplotlib.figure import Figure
        self._mpl, self._Figure = matplotlib, Figure
        self.count = 0

    def figure(self, height: float = FIG_HEIGHT_IN):
        # fixed margins, not constrained layout: that lays the figure out by drawing it once more, and
        # text extents dominate the cost (measured: 0.7 CPU s per plot with it)
        fig = self._Figure(figsize=(FIG_WIDTH_IN, height))
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.9, hspace=0.45)
        return fig

    def svg(self, fig, plot_id: str, caption: str) -> str:
        self.count += 1
        prefix = f"{plot_id}-"
        buf = io.StringIO()
        # fixed hash salt: the same report gives the same file; text stays text (no glyph outlines)
        with self._mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": plot_id}):
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
        text = buf.getvalue()
        text = text[text.index("<svg"):]                       # no XML declaration / DOCTYPE inside HTML
        text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
        text = re.sub(r'(xlink:href="#|href="#|url\(#)', lambda m: m.group(1) + prefix, text)
        text = text.replace("<svg ", f'<svg role="img" aria-label="{_e(caption)}" ', 1)
        return (f'<figure class="plot" id="{_e(plot_id)}" data-plot="{_e(plot_id)}">{text}'
                f'<figcaption>{_e(caption)}</figcaption></figure>')


def _num(v: Any) -> float:
    return float(v) if _finite(v) else math.nan


def _log(ax, which: str) -> None:
    """A log-scale axis labelled with plain numbers (0.01, 0.2, 3, 1e+04): shorter than 10^x mathtext, and
    mathtext layout is most of a plot's drawing time."""
    from matplotlib.ticker import FuncFormatter
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis = ax.yaxis if which == "y" else ax.xaxis
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if _minor_label(axis, v) else ""))


def _minor_label(axis, v: float) -> bool:
    """Minor ticks labelled only at 2x and 5x a power of ten, and only on an axis spanning fewer than
    MINOR_LABEL_DECADES decades (enough to read a value off a short log axis; a long one has its decades)."""
    lo, hi = sorted(axis.get_view_interval())
    if v <= 0 or lo <= 0 or hi / lo > 10 ** MINOR_LABEL_DECADES:
        return False
    mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return any(abs(mantissa - m) < 1e-6 for m in (2.0, 5.0))


def _loss_axis(ax, values: list[float]) -> None:
    pos = [v for v in values if _finite(v) and v > 0]
    if pos and max(pos) / min(pos) > LOG_SCALE_SPAN:
        _log(ax, "y")


def _legend(ax, n: int) -> None:
    if n == 0:
        return
    if n > MAX_LEGEND_ROWS:
        ax.figure.subplots_adjust(right=0.66)
        ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)


def _curve_xy(curve: list[Any], every: int) -> tuple[list[int], list[float]]:
    return [i * every for i in range(len(curve))], [_num(v) for v in curve]


def _lr_plots(plots: _Plots, probe: dict[str, Any]) -> list[str]:
    from matplotlib import colormaps
    tried = [t for t in _lr_tried(probe) if _finite(t.get("lr"))]
    if not tried:
        return []
    out = []
    rec, conf = probe.get("recommended"), probe.get("configured")
    cmap = colormaps["tab10"]     # qualitative: neighbouring lrs must be told apart
    initials = [float(t["initial_loss"]) for t in tried if _finite(t.get("initial_loss"))]
    cap = CHART_CLIP * max(initials) if initials else None

    # 1: the smoothed training-loss curves, log scale, one line per lr
    fig = plots.figure()
    ax = fig.add_subplot()
    all_y: list[float] = []
    for i, t in enumerate(tried):
        curve = t.get("curve") or []
        if not curve:
            continue
        every = int(t.get("curve_every") or max(1, math.ceil((t.get("steps") or len(curve)) / len(curve))))
        x, y = _curve_xy(curve, every)
        if cap is not None:
            y = [min(v, cap) if not math.isnan(v) else v for v in y]
        all_y += y
        marks = _lr_marks(t, probe)
        color = cmap(i % 10)
        is_rec = "recommended" in marks
        label = f"lr {fmt_lr(t['lr'])} {t.get('status', '')}" + (f" ({marks})" if marks else "")
        ax.plot(x, y, color="#111111" if is_rec else color, lw=2.6 if is_rec else 1.3,
                ls="--" if "configured" in marks and not is_rec else "-", label=label, zorder=3 if is_rec else 2)
        if t.get("status") == "diverged":
            last = next(((xx, yy) for xx, yy in zip(reversed(x), reversed(y)) if not math.isnan(yy)), None)
            if last:
                ax.plot([last[0]], [last[1]], marker="x", ms=8, mew=2, color=_LR_STATUS_COLORS["diverged"])
    _log(ax, "y")
    if cap is not None:
        finite = [v for v in all_y if not math.isnan(v) and v > 0]
        if finite:
            ax.set_ylim(min(finite) / 1.5, cap * 1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (smoothed, log scale)")
    ax.set_title("Learning-rate probe: loss curves")
    _legend(ax, len(ax.get_lines()))
    cap_txt = f"; curves are cut at {CHART_CLIP:g}x the largest initial loss, x marks where a diverged probe stopped" \
        if cap is not None else ""
    rec_txt = f"the recommended lr {fmt_lr(rec)} is the thick black line" if _finite(rec) else "no lr was recommended"
    out.append(plots.svg(fig, "plot-lr-curves", f"Smoothed training loss of each probed lr; {rec_txt}{cap_txt}."))

    # 2: the final loss against the lr (log-log), the recommendation and the configured lr marked
    fig = plots.figure()
    ax = fig.add_subplot()
    for t in tried:
        status = str(t.get("status"))
        final = t.get("final_loss") if _finite(t.get("final_loss")) else t.get("loss_at_stop")
        if not _finite(final):
            continue
        ax.plot([float(t["lr"])], [float(final)], marker="o" if _finite(t.get("final_loss")) else "X", ms=8,
                color=_LR_STATUS_COLORS.get(status, "#495057"), ls="none")
    for status, color in _LR_STATUS_COLORS.items():
        if any(t.get("status") == status for t in tried):
            ax.plot([], [], marker="o", ls="none", color=color, label=status)
    if _finite(rec):
        ax.axvline(float(rec), color="#111111", lw=2, label=f"recommended {fmt_lr(rec)}")
    if _finite(conf):
        ax.axvline(float(conf), color="#1c7ed6", lw=1.5, ls="--", label=f"configured {fmt_lr(conf)}")
    if _finite(probe.get("edge_of_stability")):
        ax.axvline(float(probe["edge_of_stability"]), color=_LR_STATUS_COLORS["diverged"], lw=1, ls=":",
                   label=f"edge of stability {fmt_lr(probe['edge_of_stability'])}")
    _log(ax, "x")
    _log(ax, "y")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("final training loss (log scale)")
    ax.set_title("Learning-rate probe: final loss per lr")
    _legend(ax, len(ax.get_legend_handles_labels()[0]))
    out.append(plots.svg(fig, "plot-lr-final", "Full-batch training loss at the end of each lr probe (an X: where a "
                                               "diverged probe stopped); vertical lines mark the recommended and the "
                                               "configured lr."))
    return out


def _baseline_plot(plots: _Plots, base: dict[str, Any]) -> list[str]:
    fig = plots.figure()
    ax = fig.add_subplot()
    values: list[float] = []
    sm = base.get("train_smoothed") or {}
    if sm.get("values"):
        x, y = _curve_xy(sm["values"], int(sm.get("every") or 1))
        ax.plot(x, y, color="#1c7ed6", lw=1, alpha=0.55, label="training loss (minibatch, smoothed)")
        values += y
    ev = [(s, _num(v)) for s, v in base.get("train_eval") or []]
    if ev:
        ax.plot([s for s, _ in ev], [v for _, v in ev], "o", color="#1864ab", ms=7,
                label="training loss (full batch, where evaluated)")
        values += [v for _, v in ev]
    val = [(s, _num(v)) for s, v in base.get("val") or []]
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "s-", color="#e8590c", ms=5, lw=1.8,
                label="validation loss")
        values += [v for _, v in val]
    if not values:
        return []
    _loss_axis(ax, values)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Baseline probe (the configured spec): training and validation loss")
    _legend(ax, len(ax.get_lines()))
    stop = f", stopped: {base['stopped']}" if base.get("stopped") not in (None, "completed") else ""
    return [plots.svg(fig, "plot-baseline", f"The configured spec trained for {base.get('steps')} steps{stop}.")]


def _layer_label(name: str, kind: str | None) -> str:
    return f"{name} ({kind})" if kind and kind not in str(name) else str(name)


def _gradient_plots(plots: _Plots, base: dict[str, Any]) -> list[str]:
    from matplotlib import colormaps
    steps = base.get("layer_steps") or []
    layers = base.get("layers") or {}
    if not steps or not layers:
        return []
    cmap = colormaps["plasma"]
    out = []
    n = len(layers)
    more = f" ({n} of {base.get('n_layers')} layers shown)" if base.get("n_layers", n) > n else ""
    for key, title, ylabel, pid in (
            ("grad_norm", "Gradient norm per layer", "gradient norm (log scale)", "plot-grad-norm"),
            ("update_ratio", "Update/weight ratio per layer", "update / weight norm (log scale)", "plot-update-ratio")):
        fig = plots.figure()
        ax = fig.add_subplot()
        drawn = 0
        names = list(layers)
        if len(steps) >= MIN_STEPS_FOR_TIME_AXIS:     # one line per layer, over the recorded steps
            for i, name in enumerate(names):
                st = layers[name]
                y = [_num(v) for v in st.get(key) or []]
                if not any(v > 0 for v in y if not math.isnan(v)):
                    continue
                ax.plot(steps[:len(y)], [v if v > 0 else math.nan for v in y], "o-", ms=3, lw=1.3,
                        color=cmap(0.85 * i / max(1, n - 1)),
                        label=_layer_label(name, st.get("kind")))
                drawn += 1
            ax.set_xlabel("step")
        else:                                         # too few steps for a time axis: one line per step, over layers
            for j, step in enumerate(steps):
                y = [_num((layers[name].get(key) or [None] * len(steps))[j]) for name in names]
                if not any(v > 0 for v in y if not math.isnan(v)):
                    continue
                ax.plot(range(len(names)), [v if v > 0 else math.nan for v in y], "o-", ms=5, lw=1.5,
                        color=cmap(0.85 * j / max(1, len(steps) - 1)), label=f"step {step}")
                drawn += 1
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels([_layer_label(nm, layers[nm].get("kind")) for nm in names], fontsize=8,
                               rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
            ax.set_xlabel("layer")
        if not drawn:
            continue
        band = base.get("update_ratio_band") if key == "update_ratio" else None
        if band and all(_finite(band.get(k)) for k in ("low", "target", "high")):
            ax.axhspan(band["low"], band["high"], color="#2b8a3e", alpha=0.08, label="healthy band (G406)")
            ax.axhline(band["target"], color="#2b8a3e", lw=1, ls="--", label=f"~{band['target']:g} (rule of thumb)")
            _log(ax, "y")
        else:
            _loss_axis(ax, [_num(v) for st in layers.values() for v in st.get(key) or []])
        ax.set_ylabel(ylabel if ax.get_yscale() == "log" else ylabel.replace(" (log scale)", ""))
        ax.set_title(f"Baseline probe: {title.lower()}")
        _legend(ax, len(ax.get_legend_handles_labels()[0]))
        out.append(plots.svg(fig, pid, f"{title} at the recorded steps of the baseline probe{more}."))
    return out


def _init_plots(plots: _Plots, probe: dict[str, Any]) -> list[str]:
    from matplotlib import colormaps
    variants = [v for v in probe.get("variants") or [] if isinstance(v, dict)]
    out = []
    cmap = colormaps["tab10"]
    with_curves = [v for v in variants if (v.get("curve") or {}).get("values")]
    if with_curves:
        fig = plots.figure()
        ax = fig.add_subplot()
        values: list[float] = []
        for i, v in enumerate(with_curves):
            c = v["curve"]
            x, y = _curve_xy(c["values"], int(c.get("every") or 1))
            values += y
            best = v.get("init") == probe.get("best")
            marks = [m for m, on in (("best", best), ("configured", bool(v.get("configured")))) if on]
            ax.plot(x, y, color=cmap(i % 10), lw=2.6 if best else 1.4, ls="--" if v.get("configured") else "-",
                    label=f"{v.get('init')} ({v.get('status')})" + (f" — {', '.join(marks)}" if marks else ""))
        _loss_axis(ax, values)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (smoothed)")
        ax.set_title("Init variants: loss curves")
        _legend(ax, len(with_curves))
        out.append(plots.svg(fig, "plot-init-curves", "The same short training under each init variant "
                                                      "(dashed: the configured init; thick: the best)."))
    with_layers = [v for v in variants if v.get("layers")]
    if with_layers:
        fig = plots.figure()
        ax = fig.add_subplot()
        names: list[str] = []
        for v in with_layers:
            for layer in v["layers"]:
                if str(layer.get("layer")) not in names:
                    names.append(str(layer.get("layer")))
        for i, v in enumerate(variants):
            stats = {str(layer.get("layer")): layer for layer in v.get("layers") or []}
            y = [_num(stats.get(n, {}).get("act_std")) for n in names]
            if not any(val > 0 for val in y if not math.isnan(val)):
                continue
            ax.plot(range(len(names)), [val if val > 0 else math.nan for val in y], marker="o", color=cmap(i % 10),
                    ls="--" if v.get("configured") else "-", label=str(v.get("init")))
        _log(ax, "y")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30 if len(names) > 6 else 0, fontsize=8, ha="right" if len(names) > 6
                           else "center")
        ax.set_xlabel("layer")
        ax.set_ylabel("activation std at init (log scale)")
        ax.set_title("Init variants: activation scale through the layers at init")
        _legend(ax, len(ax.get_lines()))
        out.append(plots.svg(fig, "plot-init-layers", "Standard deviation of each weight layer's output at init: "
                                                      "a scale that shrinks or grows layer by layer vanishes or "
                                                      "explodes in deeper networks."))
    return out


def _step_values(t: dict[str, Any]) -> tuple[str, Any, Any]:
    """(what was measured, before, after) of one treatment step: its metric when it has one, else its loss."""
    if _finite(t.get("before")) or _finite(t.get("after")):
        name = str(t.get("metric") or "metric")
        return METRIC_NAMES.get(name, name), t.get("before"), t.get("after")
    return "loss", t.get("loss_before"), t.get("loss_after")


def _treatment_plot(plots: _Plots, path: list[dict[str, Any]]) -> list[str]:
    steps = [(i, *_step_values(t)) for i, t in enumerate(path)]
    steps = [st for st in steps if _finite(st[2]) or _finite(st[3])]
    states = {i: (t.get("before_state"), t.get("after_state")) for i, t in enumerate(path)}
    metrics = list(dict.fromkeys(st[1] for st in steps))
    if not metrics:
        return []
    shown = metrics[:MAX_TREATMENT_AXES]
    fig = plots.figure(height=FIG_HEIGHT_IN if len(shown) == 1 else 2.6 * len(shown))
    axes = fig.subplots(len(shown), 1, squeeze=False)[:, 0]
    for ax, metric in zip(axes, shown):
        mine = [st for st in steps if st[1] == metric]
        for i, _, b, a in mine:
            b, a = _num(b), _num(a)
            if not (math.isnan(a) or math.isnan(b)):
                ax.annotate("", xy=(i + 0.8, a), xytext=(i + 0.2, b),
                            arrowprops={"arrowstyle": "->", "color": "#1c7ed6", "lw": 1.6})
            for x, v, state, color in ((i + 0.2, b, states[i][0], "#868e96"), (i + 0.8, a, states[i][1], "#1c7ed6")):
                if not math.isnan(v):
                    ax.plot([x], [v], "o", color=color)
                elif state:   # no value: the probe broke (diverged, ...); say so where the point would be
                    y = a if math.isnan(v) and not math.isnan(a) else b
                    ax.plot([x], [y], "x", ms=9, mew=2, color=_LR_STATUS_COLORS["diverged"])
                    ax.annotate(str(state), (x, y), textcoords="offset points", xytext=(0, 8), ha="center",
                                fontsize=8, color=_LR_STATUS_COLORS["diverged"])
        ax.set_xticks([st[0] + 0.5 for st in mine])
        ax.set_xticklabels([f"{st[0] + 1}. {path[st[0]].get('code', '?')}" for st in mine])
        ax.set_xlim(-0.1, len(path) + 0.1)
        ax.set_ylabel(metric)
    axes[0].set_title("Treatment path: each fix, before → after")
    return [plots.svg(fig, "plot-treatment", "Each fix of the treatment path in the order applied: what its probe "
                                             "measured before (grey) and after (blue) the fix.")]


def _curves_plot(plots: _Plots, c: dict[str, Any]) -> list[str]:
    train = [(x, _num(y)) for x, y in c.get("train") or []]
    if not train:
        return []
    fig = plots.figure()
    ax = fig.add_subplot()
    values = [y for _, y in train]
    ax.plot([x for x, _ in train], values, color="#1c7ed6", lw=1.3, label=f"training ({c.get('train_col')})")
    val = [(x, _num(y)) for x, y in c.get("val") or []]
    if val:
        ax.plot([x for x, _ in val], [y for _, y in val], "s-", ms=3, color="#e8590c", lw=1.6,
                label=f"validation ({c.get('val_col')})")
        values += [y for _, y in val]
    _loss_axis(ax, values)
    ax.set_xlabel(str(c.get("step_col") or "step"))
    ax.set_ylabel("loss (as logged)")
    ax.set_title(f"Logged loss curves: pattern {c.get('pattern')}")
    _legend(ax, len(ax.get_lines()))
    return [plots.svg(fig, "plot-log-curves", f"The losses as logged in {c.get('path')} (not smoothed).")]


# ---- tables and sections ----------------------------------------------------------------------------

def _table(headers: list[str], rows: list[list[str]], num_cols: set[int] | None = None) -> str:
    num_cols = num_cols or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in num_cols else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _checklist(report: Report, anchors: dict[str, str]) -> str:
    rows = []
    for res, findings in _rows(report):
        glyph, _ = status_glyph(res.status)
        codes = ", ".join(f'<a href="#{anchors[c]}">{_e(c)}</a>' if c in anchors else _e(c)
                          for c in dict.fromkeys(f.code for f in findings))
        detail = _e(res.summary)
        if res.reason:
            detail += (" — " if detail else "") + f"<em>{_e(res.reason)}</em>"
        rows.append([f'<span class="st-{_e(res.status)}">{_e(glyph)} {_e(_STATUS_WORDS.get(res.status, res.status))}'
                     f"</span>", f"{int(res.step)} {_e(res.step.title)}", detail, codes])
    return _table(["status", "step", "detail", "findings"], rows)


def _finding_html(f, anchor: str) -> str:
    glyph, _ = severity_glyph(f.severity)
    sev = f.severity.value
    parts = [f'<div class="finding {sev}" id="{anchor}"><div class="head"><span class="sev-{sev}">{_e(glyph)} '
             f"{_e(f.code)}</span> {_e(f.name)} <span class=\"meta\">({_e(sev)})</span></div>",
             f"<div>{_e(f.message)}</div>"]
    if f.fix and f.fix.strip() != "-":
        parts.append(f'<div class="fix"><span class="label">fix</span> {_e(f.fix)}</div>')
    label = fix_status_label(f)
    if f.verified and label:   # "verified" only for a fix a probe confirmed (render.fix_status_label)
        ok = f.fix_status == "confirmed"
        parts.append(f'<div class="verified{"" if ok else " no"}"><span class="label">{_e(label[0])}</span> '
                     f"{_e(_verified_text(f.verified))}</div>")
    if f.confirmed_after:
        parts.append(f'<div class="verified"><span class="label">confirmed after</span> '
                     f"{_e(confirmed_after_text(f.confirmed_after))}</div>")
    if f.evidence:
        text = json.dumps(clean_json(f.evidence), indent=2, ensure_ascii=False)
        if len(text) > EVIDENCE_JSON_CHARS:
            text = text[:EVIDENCE_JSON_CHARS] + "\n… (cut; --format json has all of it)"
        parts.append(f"<details><summary>evidence</summary><pre>{_e(text)}</pre></details>")
    parts.append("</div>")
    return "".join(parts)


def _lr_table(probe: dict[str, Any]) -> str:
    rows = []
    for t in _lr_tried(probe):
        status = str(t.get("status", "-"))
        final = fmt_num(t.get("final_loss")) if _finite(t.get("final_loss")) else \
            (f"- (stopped at {fmt_num(t.get('loss_at_stop'))})" if _finite(t.get("loss_at_stop")) else "-")
        rows.append([_e(fmt_lr(t.get("lr"))), f'<span style="color:{_LR_STATUS_COLORS.get(status, "#333")}">'
                     f"{_e(status)}</span>", _e(fmt_num(t.get("initial_loss"))), _e(final),
                     _e(t.get("steps", "-")), _e(_lr_marks(t, probe))])
    table = _table(["lr", "status", "initial loss", "final loss", "steps", ""], rows, {2, 3, 4})
    if _finite(probe.get("recommended")):
        rule = f" (rule: {probe['rule']})" if probe.get("rule") else ""
        line = f"<p><strong>Recommended lr: {_e(fmt_lr(probe['recommended']))}</strong>{_e(rule)}</p>"
    else:
        line = f"<p><strong>No recommendation:</strong> {_e(probe.get('reason') or 'no reason given')}</p>"
    return line + table


def _treatment_section(t: Any, plots: _Plots, anchors: dict[str, str]) -> list[str]:
    """The treatment loop's record: {"path": [steps], "stopped", "final", "written_without_probe"}; a bare list
    of steps is read as the path."""
    t = {"path": t} if isinstance(t, list) else t
    path = [p for p in t.get("path") or [] if isinstance(p, dict)]
    out = ['<h2 id="treatment">Treatment path</h2>',
           "<p>Each confirmed fix applied in turn to the spec, and the repaired spec diagnosed again.</p>"]
    rows = []
    for i, p in enumerate(path, 1):
        code = str(p.get("code", "?"))
        patch = p.get("patch")
        change = ", ".join(f"{k}={v}" if isinstance(v, str) else f"{k}={json.dumps(clean_json(v))}"
                           for k, v in patch.items()) if isinstance(patch, dict) else str(patch or "-")
        what, b, a = _step_values(p)
        b = b if _finite(b) else p.get("before_state")     # no number: what the probe did ("diverged at step 10")
        a = a if _finite(a) else p.get("after_state")
        link = f'<a href="#{anchors[code]}">{_e(code)}</a>' if code in anchors else _e(code)
        rows.append([str(i), link, _e(change), _e(what), _e(fmt_num(b) if _finite(b) else b or "-"),
                     _e(fmt_num(a) if _finite(a) else a or "-")])
    if rows:
        out.append(_table(["#", "fix for", "change", "measured", "before", "after"], rows, {4, 5}))
        out.extend(_treatment_plot(plots, path))
    elif t.get("stopped"):
        out.append(f"<p>No fix applied: {_e(t['stopped'])}.</p>")
    if t.get("written_without_probe"):
        keys = ", ".join(str(k) for k in t["written_without_probe"])
        out.append(f"<p>Also written, no probe can test it: <code>{_e(keys)}</code></p>")
    final = t.get("final")
    if isinstance(final, dict) and (rows or final.get("verdict")):
        score = ""
        if _finite(final.get("value")):
            score = f", {METRIC_NAMES.get(final.get('metric'), final.get('metric'))} {fmt_num(final['value'])}"
        left = ", ".join(str(f.get("code")) for f in final.get("findings") or [] if isinstance(f, dict))
        out.append(f"<p><strong>Result:</strong> {_e(final.get('verdict', '?'))}{_e(score)}"
                   + (f"; still open: {_e(left)}" if left else "")
                   + (f" <span class=\"meta\">({_e(t.get('stopped'))})</span>" if t.get("stopped") else "") + "</p>")
    return out


# ---- the page -----------------------------------------------------------------------------------------

def render_html(report: Report) -> str:
    """The whole report as one HTML page (inline CSS and SVG; no script, no external resource)."""
    plots = _Plots()
    ids = {id(f): f"finding-{i}" for i, f in enumerate(report.findings)}
    anchors: dict[str, str] = {}          # code -> its first finding's anchor (the checklist links there)
    for f in report.findings:
        anchors.setdefault(f.code, ids[id(f)])
    verdict = report.verdict
    summary_text, _ = _summary(report, [r for r, _ in _rows(report)])
    body: list[str] = []
    inputs = "".join(f"<li>{_e(k)}: <code>{_e(v)}</code></li>" for k, v in report.inputs.items() if v is not None)
    env = ", ".join(f"{k} {v}" for k, v in report.environment.items() if v is not None)
    took = f" · took {fmt_num(report.timing['total_s'], 3)} s" if _finite(report.timing.get("total_s")) else ""
    body.append(f"<h1>nn-doctor {_e(report.command)}</h1>")
    if inputs:
        body.append(f'<ul class="plain meta">{inputs}</ul>')
    if env or took:
        body.append(f'<div class="meta">{_e(env)}{_e(took)}</div>')
    body.append(f'<div class="verdict {_VERDICT_CLASS.get(verdict, "warn")}" id="verdict">{_e(summary_text)}</div>')
    if report.notes:
        body.append('<ul class="plain">' + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")
    if report.interrupted:
        body.append('<p class="sev-warning"><strong>Interrupted: partial report.</strong></p>')

    body.append('<h2 id="checklist">Checklist</h2>')
    body.append(_checklist(report, anchors))

    body.append('<h2 id="findings">Findings</h2>')
    rows = _rows(report)
    if not report.findings:
        body.append("<p>No findings.</p>")
    for res, findings in rows:
        if not findings:
            continue
        body.append(f"<h3>{int(res.step)} {_e(res.step.title)}</h3>")
        for f in findings:
            body.append(_finding_html(f, ids[id(f)]))

    treatment = report.probes.get("treatment")
    if isinstance(treatment, (dict, list)) and treatment:
        body.extend(_treatment_section(treatment, plots, anchors))

    lr = report.probes.get("lr")
    if isinstance(lr, dict):
        conf = f" (configured lr {fmt_lr(lr['configured'])})" if _finite(lr.get("configured")) else ""
        body.append(f'<h2 id="lr-probe">Learning-rate probe{_e(conf)}</h2>')
        body.extend(_lr_plots(plots, lr))
        body.append(_lr_table(lr))

    base = report.probes.get("baseline")
    if isinstance(base, dict):
        body.append('<h2 id="baseline">Baseline training</h2>')
        body.extend(_baseline_plot(plots, base))
        grads = _gradient_plots(plots, base)
        if grads:
            body.append('<h3 id="gradients">Per-layer gradients</h3>')
            body.extend(grads)

    init = report.probes.get("init")
    if isinstance(init, dict):
        best = f"best: {init['best']}" if init.get("best") else "no clear best"
        body.append(f'<h2 id="init-probe">Init variants ({_e(best)})</h2>')
        if init.get("comparison"):
            body.append(f"<p>{_e(init['comparison'])}</p>")
        body.extend(_init_plots(plots, init))
        headers, trows = _init_rows(init)
        if trows:
            body.append("<p class=\"meta\">Per layer: activation std / gradient norm at init.</p>")
            body.append(_table(headers, [[_e(c) for c in r] for r in trows]))

    curves = report.probes.get("curves")
    if isinstance(curves, dict):
        body.append('<h2 id="curves">Logged loss curves</h2>')
        if curves.get("reason"):
            body.append(f"<p>Pattern <strong>{_e(curves.get('pattern'))}</strong>: {_e(curves['reason'])}</p>")
        body.extend(_curves_plot(plots, curves))

    if report.skipped:
        body.append('<h2 id="skipped">Skipped</h2><ul class="plain">' +
                    "".join(f"<li>{_e(s)}</li>" for s in report.skipped) + "</ul>")
    body.append(f"<footer>nn-doctor {_e(__version__)} · {plots.count} plots · this file loads nothing from the "
                f"network; the same report as data: --format json</footer>")
    title = f"nn-doctor {report.command} — {verdict}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")
