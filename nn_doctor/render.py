"""Renderers: the report model -> text (a flutter-doctor checklist), JSON, Markdown and JUnit XML.

Every renderer is a pure function `render_x(report) -> str`: it never prints and imports no torch.
The verdict and the exit code come from the model (report.py), never from what is printed here.

Glyphs and colours are chosen in one place (`status_glyph`, `severity_glyph`). The text renderer
builds every line once, as (text, style) segments, then emits them plain or styled, so colour
never changes the content: strip the ANSI codes from the coloured output and you get the plain one.
"""
from __future__ import annotations

import io
import json
import math
import re
import xml.etree.ElementTree as ET
from typing import Any, Callable

from .catalogue import CATALOGUE, Severity, Step
from . import fmt
from .errors import UsageError
from .report import Finding, Report, StepResult, clean_json

EVIDENCE_KEYS = 4          # evidence entries shown per finding with --verbose (all of it is in the JSON)
EVIDENCE_CHARS = 100       # each evidence line is cut to about one terminal line
MD_EVIDENCE_CHARS = 800    # the Markdown evidence block is cut here (CI summaries have size limits)
CHART_CLIP = 3.0           # loss charts: the y axis stops at 3x the largest initial loss
CHART_MARKERS = "abcdefghijklmnopqrstuvwyz"  # one per series; no 'x': it marks where a curve stops
INIT_ALL_LAYERS = 6        # init table: every layer up to this many, else first / middle / last

Segment = tuple[str, str]  # (text, rich style; "" for none)
Line = list[Segment]


# ---- glyphs: the one place that maps a status or a severity to a mark and a colour ---------

_STATUS_GLYPHS = {"pass": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red"),
                  "skipped": ("-", "dim"), "crashed": ("☠", "magenta")}
_SEVERITY_GLYPHS = {Severity.ERROR: ("✗", "red"), Severity.WARNING: ("!", "yellow"),
                    Severity.INFO: ("•", "blue")}


def status_glyph(status: str) -> tuple[str, str]:
    """A step status (pass | warn | fail | skipped | crashed) -> (glyph, rich style)."""
    return _STATUS_GLYPHS.get(status, ("?", ""))


def severity_glyph(severity: Severity | str) -> tuple[str, str]:
    """A finding severity -> (glyph, rich style): ✗ error, ! warning, • info."""
    return _SEVERITY_GLYPHS[Severity(severity)]


# ---- small formatters ----------------------------------------------------------------------

_finite = fmt.finite


fmt_lr = fmt.lr      # 0.1 -> '1e-01' (nn_doctor/fmt.py)
fmt_num = fmt.cell   # a table cell: 4 significant digits, '-' when missing


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(clean_json(value), ensure_ascii=False)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())  # one line
    return text if len(text) <= limit else text[: limit - 1] + "…"


_plural = fmt.plural


def _inputs_summary(inputs: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {_compact(v)}" for k, v in inputs.items() if v is not None)


def fix_status_label(f: Finding) -> tuple[str, str] | None:
    """The line under a finding's fix: ("verified", style) only when a probe showed the fix helps;
    "not confirmed" when it was probed and did not; "not tested" with the reason otherwise."""
    status = f.fix_status
    if status == "confirmed":
        return "verified", "green"
    if status == "not confirmed":
        return "not confirmed", "yellow"
    if status == "untested" and (f.verified or f.untestable):
        return "not tested", "dim"
    return None


def confirmed_after_text(c: dict[str, Any]) -> str:
    """'H300's fix (treatment path): balanced accuracy 0.46 → 0.97'."""
    before = ", ".join(c.get("after") or [])
    name = METRIC_NAMES.get(c.get("metric") or "", c.get("metric") or "metric")
    nums = (f": {name} {_side(c.get('before'), c.get('before_state'))} → {_side(c.get('value'))}"
            if _finite(c.get("value")) else "")
    return f"{before}'s fix{'es' if len(c.get('after') or []) > 1 else ''} (treatment path){nums}"


def _fix_status_text(f: Finding) -> str:
    if f.verified:
        return _verified_text(f.verified)
    return f.untestable or ""


METRIC_NAMES = {"balanced_accuracy": "balanced accuracy", "accuracy": "accuracy", "r2": "R²"}


def _verified_text(verified: dict[str, Any]) -> str:
    """{'probe': 'data.normalize=standardize', 'metric': 'balanced_accuracy', 'metric_before': 0.33, ...}
    -> 'data.normalize=standardize: balanced accuracy 0.33 → 0.97 (validation loss 1.09 → 0.08)'. Both sides on
    the same basis; a side whose probe broke reads 'diverged'; a note or a result replaces the numbers."""
    probe = verified.get("probe")
    parts = []
    if verified.get("metric") and (_finite(verified.get("metric_before")) or _finite(verified.get("metric_after"))):
        name = METRIC_NAMES.get(verified["metric"], verified["metric"])
        parts.append(f"{name} {_side(verified.get('metric_before'), verified.get('before_state'))} → "
                     f"{_side(verified.get('metric_after'), verified.get('after_state'))}")
    both = _finite(verified.get("loss_before")) and _finite(verified.get("loss_after"))
    if both or (not parts and (_finite(verified.get("loss_before")) or _finite(verified.get("loss_after")))):
        kind = f"{verified['loss']} loss" if verified.get("loss") else "loss"
        text = (f"{kind} {_side(verified.get('loss_before'), verified.get('before_state'))} → "
                f"{_side(verified.get('loss_after'), verified.get('after_state'))}")
        parts.append(f"({text})" if parts else text)
    if not parts and verified.get("before_state") and (verified.get("after_state") or verified.get("improved")):
        parts.append(f"{verified['before_state']} → {verified.get('after_state') or 'works'}")
    detail = " ".join(parts)
    note = verified.get("note") or verified.get("reason") or verified.get("result")
    if note and (not detail or not verified.get("improved", True)):
        detail = f"{detail}; {note}" if detail else str(note)
    if not detail:
        rest = {k: v for k, v in verified.items() if k not in ("probe", "improved", "steps")}
        detail = _compact(rest) if rest else ""
    return f"{probe}: {detail}" if probe and detail else str(probe or detail)


def _side(value: Any, state: str | None = None) -> str:
    return fmt_num(value) if _finite(value) else (state or "-")


def _treatment_lines(t: dict[str, Any]) -> list[Line]:
    """The treatment path: each fix applied (before → after in its probe), then the repaired spec's state."""
    path = t.get("path") or []
    lines: list[Line] = [[("Treatment", "bold"), (" (each confirmed fix applied, then everything diagnosed again)", "dim")]]
    if not path and not t.get("written_without_probe"):
        lines.append([(f"  no fix applied: {t.get('stopped', '')}", "")])
        return lines
    for i, p in enumerate(path, 1):
        v = {"metric": p.get("metric"), "metric_before": p.get("before"), "metric_after": p.get("after"),
             "loss_before": p.get("loss_before"), "loss_after": p.get("loss_after"),
             "before_state": p.get("before_state"), "after_state": p.get("after_state")}
        lines.append([(f"  {i}. {p['code']} ", "bold"), (f"{p['fix']}", ""), (f"  {_verified_text(v)}", "dim")])
    if t.get("written_without_probe"):
        keys = ", ".join(f"{k}" for k in t["written_without_probe"])
        lines.append([("  also written, no probe can test it: ", "dim"), (keys, "")])
    final = t.get("final", {})
    score = ""
    if _finite(final.get("value")):
        score = f", {METRIC_NAMES.get(final.get('metric'), final.get('metric'))} {fmt_num(final['value'])}"
    left = ", ".join(f"{f['code']}" for f in final.get("findings", []))
    lines.append([("  result: ", "bold"), (f"{final.get('verdict', '?')}{score}", ""),
                  (f"; still open: {left}" if left else "", ""), (f" ({t.get('stopped')})", "dim")])
    return lines


# ---- the rows: one per step that ran -------------------------------------------------------

def _status_from(findings: list[Finding]) -> str:
    worst = max((f.severity.rank for f in findings), default=-1)
    return "fail" if worst >= 2 else "warn" if worst == 1 else "pass"


def _rows(report: Report) -> list[tuple[StepResult, list[Finding]]]:
    """(step result, its findings) in step order; findings most severe first.

    A finding whose step the command did not list still gets a row (derived status), so the
    text never hides a finding the JSON has.
    """
    shown = {s: r for s, r in report.steps.items() if r.ran}
    by_step: dict[Step, list[Finding]] = {}
    for f in report.findings:
        by_step.setdefault(f.step, []).append(f)
    for step, mine in by_step.items():
        if step not in shown:
            shown[step] = StepResult(step, status=_status_from(mine), codes=[f.code for f in mine])
    return [(shown[s], sorted(by_step.get(s, []), key=lambda f: -f.severity.rank)) for s in sorted(shown)]


def _issue_steps(report: Report) -> set[Step]:
    return {f.step for f in report.findings if f.severity.rank >= Severity.WARNING.rank}


# ---- text ----------------------------------------------------------------------------------

def render_text(report: Report, color: bool = False, verbose: bool = False) -> str:
    """The flutter-doctor checklist: header, one row per step with its findings, probe sections,
    then a blank line and exactly one summary line."""
    lines: list[Line] = []
    inputs = _inputs_summary(report.inputs)
    lines.append([(f"nn-doctor {report.command}" + (f" — {inputs}" if inputs else ""), "bold")])
    for note in report.notes:
        lines.append([(note, "")])
    if verbose:
        took = f"took {fmt_num(report.timing['total_s'], 3)} s" if _finite(report.timing.get("total_s")) else ""
        env = "; ".join(filter(None, [_inputs_summary(report.environment), took]))
        if env:
            lines.append([(env, "dim")])

    rows = _rows(report)
    for res, findings in rows:  # rows follow each other without blank lines (flutter doctor)
        lines.extend(_step_lines(res, findings, verbose))

    if isinstance(report.probes.get("lr"), dict):
        lines.append([])
        lines.extend(_lr_lines(report.probes["lr"]))
    if isinstance(report.probes.get("init"), dict):
        lines.append([])
        lines.extend(_init_lines(report.probes["init"]))
    if isinstance(report.probes.get("treatment"), dict):
        lines.append([])
        lines.extend(_treatment_lines(report.probes["treatment"]))

    if report.skipped:
        lines.append([])
        lines.append([("Skipped:", "bold")])
        lines.extend([[(f"  - {item}", "")] for item in report.skipped])
    if report.interrupted:
        lines.append([])
        lines.append([("Interrupted: partial report", "bold yellow")])

    lines.append([])
    lines.append([_summary(report, [r for r, _ in rows])])
    return _emit(lines, color)


def _step_lines(res: StepResult, findings: list[Finding], verbose: bool) -> list[Line]:
    glyph, style = status_glyph(res.status)
    row: Line = [(f"[{glyph}]", style), (f" {int(res.step)} {res.step.title}", "bold")]
    if res.summary:
        row.append((f" ({res.summary})", ""))
    out = [row]
    if res.reason:
        label = res.status if res.status in ("skipped", "crashed") else "note"
        out.append([(f"    {label}: ", style if label != "note" else "dim"), (res.reason, "")])
    if verbose and res.checks_run:
        out.append([(f"    checks: {' '.join(c for c in res.checks_run if c not in res.not_run)}", "dim")])
    if verbose:
        out += [[(f"    could not run: {code}: {why}", "dim")] for code, why in res.not_run.items()]
    for f in findings:
        out.extend(_finding_lines(f, verbose))
    return out


def _finding_lines(f: Finding, verbose: bool) -> list[Line]:
    glyph, style = severity_glyph(f.severity)
    out: list[Line] = [[("    ", ""), (glyph, style), (f" {f.code} {f.name}", "bold"), (f": {f.message}", "")]]
    if f.severity == Severity.INFO and not verbose:
        return out  # info is shown always, but as one line
    if f.fix and f.fix.strip() != "-":
        out.append([("      fix: ", "cyan"), (f.fix, "")])
    label = fix_status_label(f)
    if label:
        out.append([(f"      {label[0]}: ", label[1]), (_fix_status_text(f), "")])
    if f.confirmed_after:
        out.append([("      confirmed after ", "green"), (confirmed_after_text(f.confirmed_after), "")])
    if f.explained_by:
        out.append([("      symptom of: ", "dim"), (", ".join(f.explained_by) + " (fix that first)", "dim")])
    if verbose and f.evidence:
        items = list(f.evidence.items())
        for key, value in items[:EVIDENCE_KEYS]:
            out.append([("      " + _cut(f"{key}: {_compact(value)}", EVIDENCE_CHARS), "dim")])
        if len(items) > EVIDENCE_KEYS:
            out.append([(f"      … {len(items) - EVIDENCE_KEYS} more in --format json", "dim")])
    return out


def _summary(report: Report, rows: list[StepResult]) -> Segment:
    n, m = len(_issue_steps(report) & {r.step for r in rows}), len(rows)
    first = report.first_fix_finding()
    if report.verdict == "unhealthy" and first is not None:
        return (f"✗ Unhealthy: issues in {n} of {_plural(m, 'step')} — fix first: {first.code} {first.name}",
                "bold red")
    if report.verdict == "unhealthy":
        return f"✗ Unhealthy: issues in {n} of {_plural(m, 'step')}", "bold red"
    unchecked = sum(r.status in ("skipped", "crashed") for r in rows)
    if report.verdict == "incomplete":
        why = "interrupted" if report.interrupted else f"{unchecked} of {_plural(m, 'step')} skipped or crashed"
        extra = f"; warnings in {n}" if n else ""
        return (f"? Incomplete: not checked in full ({why}{extra}) — not a clean bill of health.", "bold yellow")
    if report.verdict == "warnings":
        first_txt = f" — first: {first.code} {first.name}" if first is not None else ""
        return f"! Warnings in {n} of {_plural(m, 'step')}{first_txt}", "bold yellow"
    return "✓ Healthy: no issues found.", "bold green"


def _table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[Line]:
    """A plain left-aligned table: a bold header line, then one line per row."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return (indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths))).rstrip()
    return [[(line(headers), "bold")]] + [[(line(r), "")] for r in rows]


def _lr_marks(entry: dict[str, Any], probe: dict[str, Any]) -> str:
    def same(a: Any, b: Any) -> bool:
        return _finite(a) and _finite(b) and math.isclose(float(a), float(b), rel_tol=1e-6)
    marks = [name for name, key in (("configured", "configured"), ("recommended", "recommended"))
             if same(entry.get("lr"), probe.get(key))]
    return ", ".join(marks)


def _lr_tried(probe: dict[str, Any]) -> list[dict[str, Any]]:
    tried = [t for t in probe.get("tried") or [] if isinstance(t, dict)]
    return sorted(tried, key=lambda t: -float(t["lr"]) if _finite(t.get("lr")) else math.inf)


def _lr_lines(probe: dict[str, Any]) -> list[Line]:
    title = "Learning-rate probe"
    if _finite(probe.get("configured")):
        title += f" (configured lr {fmt_lr(probe['configured'])})"
    out: list[Line] = [[(title, "bold")]]
    tried = _lr_tried(probe)
    if tried:
        rows = [[fmt_lr(t.get("lr")), str(t.get("status", "-")),
                 f"{fmt_num(t.get('initial_loss'))} → {fmt_num(t.get('final_loss'))}", _lr_marks(t, probe)]
                for t in tried]
        out.extend(_table(["lr", "status", "loss initial → final", ""], rows))
        series: dict[str, list[Any]] = {}
        for t in tried:
            if t.get("curve"):
                series.setdefault(fmt_lr(t.get("lr")), list(t["curve"]))
        if series:
            initials = [float(t["initial_loss"]) for t in tried if _finite(t.get("initial_loss"))]
            cap = CHART_CLIP * max(initials) if initials else None
            stopped = {fmt_lr(t.get("lr")) for t in tried if t.get("status") == "diverged"}
            out.append([])
            out.extend([[("  " + s, "")] for s in ascii_chart(series, y_max=cap, stopped=stopped)])
    else:
        out.append([("  no lr was tried", "")])
    out.append([])
    if _finite(probe.get("recommended")):
        rule = f" (rule: {probe['rule']})" if probe.get("rule") else ""
        out.append([("  recommended lr: ", "bold"), (f"{fmt_lr(probe['recommended'])}{rule}", "green")])
    else:
        out.append([("  no recommendation: ", "bold"), (str(probe.get("reason") or "no reason given"), "yellow")])
    return out


def _init_layer_names(variants: list[dict[str, Any]]) -> list[str]:
    names = next(([str(l.get("layer")) for l in v.get("layers") or []] for v in variants if v.get("layers")), [])
    if len(names) <= INIT_ALL_LAYERS:
        return names
    return [names[0], names[len(names) // 2], names[-1]]


def _init_rows(probe: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    variants = [v for v in probe.get("variants") or [] if isinstance(v, dict)]
    layers = _init_layer_names(variants)
    headers = ["init", "status", "loss initial → final", *layers, ""]
    rows = []
    for v in variants:
        stats = {str(l.get("layer")): l for l in v.get("layers") or []}
        cells = [f"{fmt_num(stats.get(n, {}).get('act_std'), 2)}/{fmt_num(stats.get(n, {}).get('grad_norm'), 2)}"
                 for n in layers]
        marks = [m for m, on in (("best", v.get("init") == probe.get("best")),
                                 ("configured", bool(v.get("configured")))) if on]
        rows.append([str(v.get("init", "?")), str(v.get("status", "-")),
                     f"{fmt_num(v.get('initial_loss'))} → {fmt_num(v.get('final_loss'))}", *cells, ", ".join(marks)])
    return headers, rows


def _init_lines(probe: dict[str, Any]) -> list[Line]:
    headers, rows = _init_rows(probe)
    best = f"best: {probe['best']}" if probe.get("best") else "no clear best"
    out: list[Line] = [[(f"Init probe ({best}; per layer: activation std / gradient norm at init)", "bold")]]
    out.extend(_table(headers, rows) if rows else [[("  no variant was tried", "")]])
    if probe.get("comparison"):
        out.append([(f"  {probe['comparison']}", "")])
    return out


def _emit(lines: list[Line], color: bool) -> str:
    if not color:
        return "".join("".join(text for text, _ in line) + "\n" for line in lines)
    from rich.console import Console  # only here: plain text needs no rich
    from rich.text import Text
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system="standard", width=100, highlight=False,
                      emoji=False, markup=False)
    for line in lines:
        text = Text()
        for part, style in line:
            text.append(part, style=style or None)
        console.print(text, soft_wrap=True)
    return buf.getvalue()


# ---- the loss chart ------------------------------------------------------------------------

def ascii_chart(series: dict[str, list[float | None]], height: int = 10, width: int = 50, *,
                y_max: float | None = None, stopped: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """A text plot of several curves sharing one x grid (point i of the longest series is at
    x = i / (n - 1)); y is log scale when every value is positive, else linear.

    One marker letter per series (legend on the last line). None and non-finite points are not
    drawn; a series that ends in them, or whose label is in `stopped`, has its last drawn point
    marked 'x'. The y axis stops at `y_max` (default CHART_CLIP x the largest first value);
    points above it sit on the top row.
    """
    if not series:
        return []
    points = {label: [(i, float(v)) for i, v in enumerate(vals) if _finite(v)] for label, vals in series.items()}
    values = [v for pts in points.values() for _, v in pts]
    if not values:
        return ["(nothing to plot: no finite values)"]
    if y_max is None or not _finite(y_max):
        firsts = [pts[0][1] for pts in points.values() if pts]
        y_max = CHART_CLIP * max(firsts) if max(firsts) > 0 else max(values)
    bottom, top = min(values), min(max(values), float(y_max))
    if top <= bottom:
        top = max(values)
    if top <= bottom:  # one flat value: centre it
        bottom, top = (bottom / 2, bottom * 2) if bottom > 0 else (bottom - 1, bottom + 1)
    log = bottom > 0

    def scale(v: float) -> float:  # 0 at the bottom of the axis, 1 at the top
        t = (math.log(v / bottom) / math.log(top / bottom)) if log else (v - bottom) / (top - bottom)
        return min(max(t, 0.0), 1.0)

    def unscale(t: float) -> float:
        return bottom * (top / bottom) ** t if log else bottom + t * (top - bottom)

    n = max(len(vals) for vals in series.values())
    grid = [[" "] * width for _ in range(height)]

    def cell(i: int, v: float) -> tuple[int, int]:
        col = round(i * (width - 1) / (n - 1)) if n > 1 else 0
        return height - 1 - round(scale(v) * (height - 1)), col

    legend, stops = [], []
    for k, (label, pts) in enumerate(points.items()):
        marker = CHART_MARKERS[k % len(CHART_MARKERS)]
        legend.append(f"{marker} {label}")
        for i, v in pts:
            r, c = cell(i, v)
            grid[r][c] = marker
        if pts and (label in stopped or pts[-1][0] < len(series[label]) - 1):
            stops.append(cell(*pts[-1]))
    for r, c in stops:  # after every series, so no later curve hides where one stopped
        grid[r][c] = "x"

    mid = (height - 1) // 2
    labels = {0: fmt_num(top, 3), mid: fmt_num(unscale((height - 1 - mid) / (height - 1)), 3),
              height - 1: fmt_num(bottom, 3)}
    w = max(len(s) for s in labels.values())
    out = [(" " * w + "  loss" + (" (log scale)" if log else "")).rstrip()]
    for r in range(height):
        axis = f"{labels[r]:>{w}} ┤" if r in labels else f"{'':>{w}} │"
        out.append((axis + "".join(grid[r])).rstrip())
    out.append(f"{'':>{w}} └" + "─" * width)
    x_title = "step fraction"
    out.append((" " * (w + 2) + "0" + x_title.center(max(width - 2, len(x_title))) + "1").rstrip())
    out.append(" " * (w + 2) + "   ".join(legend) + ("   x where a curve stops" if stops else ""))
    return out


# ---- JSON ----------------------------------------------------------------------------------

def render_json(report: Report) -> str:
    """Schema v1 exactly as spec/report.md (report.to_dict builds it)."""
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"


# ---- Markdown (a CI job summary) -----------------------------------------------------------

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def render_markdown(report: Report) -> str:
    out = [f"## nn-doctor {report.command}: {report.verdict}", ""]
    inputs = _inputs_summary(report.inputs)
    if inputs:
        out += [f"Inputs: {inputs}", ""]
    if report.notes:
        out += [f"> {note}" for note in report.notes] + [""]

    rows = _rows(report)
    out += ["| step | status | findings |", "|---|---|---|"]
    for res, findings in rows:
        glyph = "✗" if res.status == "crashed" else status_glyph(res.status)[0]  # no ☠ in CI summaries
        step = f"{int(res.step)} {res.step.title}" + (f" ({res.summary})" if res.summary else "")
        status = f"{glyph} {res.status}" + (f": {res.reason}" if res.reason else "")
        codes = ", ".join(dict.fromkeys(f"{f.code} {f.name}" for f in findings))
        out.append(f"| {_md_cell(step)} | {_md_cell(status)} | {_md_cell(codes)} |")
    out.append("")

    for _, findings in rows:
        for f in findings:
            out += [f"### {severity_glyph(f.severity)[0]} {f.code} {f.name} ({f.severity.value})", "", f.message, ""]
            if f.fix and f.fix.strip() != "-":
                out += [f"**Fix:** {f.fix}", ""]
            label = fix_status_label(f)
            if label:
                out += [f"**{label[0].capitalize()}:** {_fix_status_text(f)}", ""]
            if f.confirmed_after:
                out += [f"**Confirmed after** {confirmed_after_text(f.confirmed_after)}", ""]
            if f.explained_by:
                out += [f"*Symptom of {', '.join(f.explained_by)}: fix that first.*", ""]
            if f.evidence:
                evidence = json.dumps(clean_json(f.evidence), ensure_ascii=False)
                if len(evidence) > MD_EVIDENCE_CHARS:
                    evidence = evidence[: MD_EVIDENCE_CHARS - 1] + "…"
                out += ["```json", evidence, "```", ""]

    lr = report.probes.get("lr")
    if isinstance(lr, dict):
        title = "### Learning-rate probe"
        if _finite(lr.get("configured")):
            title += f" (configured lr {fmt_lr(lr['configured'])})"
        out += [title, "", "| lr | status | initial loss | final loss | |", "|---|---|---|---|---|"]
        for t in _lr_tried(lr):
            out.append(f"| {fmt_lr(t.get('lr'))} | {_md_cell(str(t.get('status', '-')))} | "
                       f"{fmt_num(t.get('initial_loss'))} | {fmt_num(t.get('final_loss'))} | {_lr_marks(t, lr)} |")
        out.append("")
        if _finite(lr.get("recommended")):
            rule = f" (rule: {lr['rule']})" if lr.get("rule") else ""
            out += [f"**Recommended lr:** {fmt_lr(lr['recommended'])}{rule}", ""]
        else:
            out += [f"**No recommendation:** {lr.get('reason') or 'no reason given'}", ""]
    init = report.probes.get("init")
    if isinstance(init, dict):
        headers, rows_ = _init_rows(init)
        if rows_:
            out += ["### Init probe (per layer: activation std / gradient norm at init)", "",
                    "| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows_]
            out.append("")

    if isinstance(report.probes.get("treatment"), dict):
        out += ["### Treatment", ""] + ["    " + "".join(text for text, _ in line)
                                        for line in _treatment_lines(report.probes["treatment"])[1:]] + [""]
    if report.skipped:
        out += ["**Skipped:**", ""] + [f"- {item}" for item in report.skipped] + [""]
    if report.interrupted:
        out += ["**Interrupted:** partial report", ""]
    first = report.first_fix_finding()
    if first is not None:
        out.append(f"**Fix first:** `{first.code}` {first.name} — {first.fix}")
    elif report.verdict == "incomplete":
        out.append("**Incomplete:** some steps were not checked (skipped, crashed or interrupted).")
    elif report.verdict == "healthy":
        out.append("**No issues found.**")
    return "\n".join(out) + "\n"


# ---- JUnit XML -----------------------------------------------------------------------------

_XML_INVALID = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: Any) -> str:
    return _XML_INVALID.sub("", str(text))


def _finding_body(f: Finding) -> str:
    parts = [f"{f.code} {f.name} ({f.severity.value}): {f.message}"]
    if f.fix and f.fix.strip() != "-":
        parts.append(f"fix: {f.fix}")
    label = fix_status_label(f)
    if label:
        parts.append(f"{label[0]}: {_fix_status_text(f)}")
    if f.confirmed_after:
        parts.append(f"confirmed after {confirmed_after_text(f.confirmed_after)}")
    if f.explained_by:
        parts.append(f"symptom of: {', '.join(f.explained_by)}")
    if f.evidence:
        parts.append("evidence: " + json.dumps(clean_json(f.evidence), indent=2, ensure_ascii=False))
    return _xml("\n".join(parts))


def render_junit(report: Report, fail_on: str = "error") -> str:
    """One <testsuite>, one <testcase> per check that ran (a <failure> for findings at or above
    fail_on; findings below it go to <system-out>), one skipped <testcase> per skipped or
    crashed step. The failures follow the same rule as the exit code."""
    if fail_on not in ("error", "warning", "never"):
        raise UsageError(f"--fail-on must be error, warning or never, not '{fail_on}'")
    threshold = None if fail_on == "never" else Severity(fail_on).rank
    suite = ET.Element("testsuite", name=f"nn-doctor.{report.command}")
    tests = failures = skipped = 0
    for res, findings in _rows(report):
        classname = f"nn-doctor.{res.step.label}"
        for code in dict.fromkeys([*res.checks_run, *(f.code for f in findings)]):
            case = ET.SubElement(suite, "testcase", classname=classname, name=f"{code} {CATALOGUE[code].name}")
            tests += 1
            hits = [f for f in findings if f.code == code]
            if code in res.not_run and not hits:
                ET.SubElement(case, "skipped", message=_xml(f"could not run: {res.not_run[code]}"))
                skipped += 1
                continue
            failing = [f for f in hits if threshold is not None and f.severity.rank >= threshold]
            if failing:
                worst = max(failing, key=lambda f: f.severity.rank)
                failure = ET.SubElement(case, "failure", message=_xml(failing[0].message), type=worst.severity.value)
                failure.text = "\n\n".join(_finding_body(f) for f in failing)
                failures += 1
            below = [f for f in hits if not any(f is g for g in failing)]
            if below:
                ET.SubElement(case, "system-out").text = "\n\n".join(_finding_body(f) for f in below)
        if res.status in ("skipped", "crashed"):
            case = ET.SubElement(suite, "testcase", classname=classname, name=f"step {int(res.step)} {res.step.label}")
            reason = res.reason or "no reason given"
            ET.SubElement(case, "skipped", message=_xml(reason if res.status == "skipped" else f"crashed: {reason}"))
            tests += 1
            skipped += 1
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    if _finite(report.timing.get("total_s")):
        suite.set("time", f"{float(report.timing['total_s']):.3f}")
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


# ---- dispatch ------------------------------------------------------------------------------

RENDERERS: dict[str, Callable[..., str]] = {"text": render_text, "json": render_json, "markdown": render_markdown}


def render(report: Report, fmt: str, color: bool = False, verbose: bool = False) -> str:
    """--format FMT; colour and verbosity only apply to text."""
    if fmt not in RENDERERS:
        raise UsageError(f"unknown format '{fmt}' (choose from {', '.join(RENDERERS)})")
    if fmt == "text":
        return render_text(report, color=color, verbose=verbose)
    return RENDERERS[fmt](report)
