"""Diagnosis by intervention: rules propose, probes decide.

1. Every finding whose fix is a spec change gets a counterfactual probe: the baseline probe again (same
   length, same seed) with the fix applied. It is judged on the validation metric (balanced accuracy, R² for
   regression) as well as on the loss, since a fix that changes the loss function cannot be judged on the
   loss alone. The result lands in `finding.verified` ("improved": true/false).
2. The treatment loop: the first confirmed fix (causes before symptoms, earliest step) is applied and the
   repaired spec is diagnosed again from step 1 (so the lr search runs on the standardized data, not on the
   raw data), and so on until the spec is healthy, no fix is confirmed, or the budget ends.
3. `--write-fixed` writes the last spec of that path: a spec that was itself run and checked.

Nothing here decides a finding: checks decide, triage ranks, this module only tests fixes and applies them.
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, Callable

from .catalogue import Severity
from .errors import UsageError
from .report import MATERIAL_GAIN, Finding, Report, best_in_step
from .plan import judged_steps
from .session import Session

METRIC_GAIN = MATERIAL_GAIN  # a fix helps when the validation metric (balanced accuracy, R²) rises by >= 0.03
                             # (report.MATERIAL_GAIN: one validation row of wine's 36 moves it by ~0.028)
METRIC_SLACK = 0.01       # ... or when the loss falls by LOSS_GAIN while the metric stays within 0.01, or within
                          # one binomial standard error sqrt(p(1-p)/n) of the validation accuracy when that is
                          # larger (breast cancer's 113 validation rows at 0.9: 0.028; one row moves it 0.009-0.02)
LOSS_GAIN = 0.10          # the compared loss falls by >= 10% (the same margin the verified fixes always used)
MAX_FIXES = 4             # the loop applies at most 4 fixes: one per step is the most the five steps ask for
ROUND_TIME_FACTOR = 1.2   # start another round only while the budget left exceeds 1.2x the last round's time
LOSS_CHANGING_KEYS = ("loss", "data.normalize_target")   # a patch of these changes what the loss measures


# ---- 1. counterfactual probes ----------------------------------------------------------------------------

def verify_fixes(s: Session) -> None:
    """One round of counterfactual probes: every finding with a testable spec change (info ones too), each
    trained for its own spec's configured length (plan.judged_steps) and compared with the configured spec at
    its configured length (the baseline itself, unless the configured training is shorter than the baseline)."""
    rep, ctx = s.report, s.ctx
    base = ctx.baseline if ctx is not None else None
    if base is None or base.stopped == "skipped":
        return
    n = len(s.arrays.X)
    seen: dict[str, int] = {}
    tasks, owners = [], []
    for f in rep.findings:
        if not f.patch:   # info findings too: a confirmed fix raises them to a warning (triage.py)
            continue
        if f.untestable:
            f.verified = {"probe": patch_text(f.patch), "result": f"not tested: {f.untestable}"}
            continue
        key = repr(sorted(f.patch.items(), key=lambda kv: kv[0]))
        if key in seen:
            owners[seen[key]].append(f)
            continue
        try:
            patched = s.spec.with_overrides(**f.patch)
        except Exception as err:   # pydantic refuses the patched spec: say so, never crash the report
            f.verified = {"probe": patch_text(f.patch), "result": f"not tested: the change does not apply ({err})"}
            continue
        seen[key] = len(owners)
        owners.append([f])
        steps = judged_steps(patched, n)
        tasks.append(s.task(key, patched, f"verify {f.code}", f.patch, steps=steps,
                            eval_every=max(1, steps // 4), record_every=0, instrument=False))
    short = ctx.as_configured   # the configured spec at its configured length (plan.py), when it ran
    before = short if short is not None and short.stopped != "skipped" else base
    records = s.run_round(tasks, "probes: testing the fixes")
    for rec, fs in zip(records, owners):
        for f in fs:
            f.verified = judge(before, rec, f.patch, n_eval=_eval_rows(s))
            if f.probe_only:   # the probe trained a stand-in: say which, since it is not the user's fix itself
                f.verified["probe"] = f.probe_only


def verify_builds(s: Session) -> None:
    """A model that does not build (M200) has no probe to compare with: its shape fix is tested by building the
    changed model and running a forward pass on a batch of the data's shape. The loop then diagnoses the built
    spec in full, so nothing is written that was not trained."""
    from .plan import probe_forward
    ctx = s.ctx
    if ctx is None or ctx.build_error is None:
        return
    for f in s.report.findings:
        if f.code != "M200" or not f.patch:
            continue
        try:
            patched = s.spec.with_overrides(**f.patch)
            probe_forward(patched, s.arrays.sample_shape, s.seed)
        except Exception as err:   # still does not build: not confirmed, and said why
            f.verified = {"probe": patch_text(f.patch), "improved": False,
                          "result": f"the changed model does not build either: {str(err).splitlines()[0]}"}
            continue
        f.verified = {"probe": patch_text(f.patch), "improved": True, "before_state": "does not build",
                      "after_state": "builds", "result": "the changed model builds; the loop diagnoses it"}


def _eval_rows(s: Session) -> int | None:
    """The rows the validation metric is measured on (the probes' evaluation, capped at probe.EVAL_ROWS)."""
    from .probe import EVAL_ROWS
    a = s.arrays
    rows = len(a.y_val) if a is not None and a.y_val is not None else len(a.y) if a is not None else None
    return min(rows, EVAL_ROWS) if rows else None


def metric_slack(before: float | None, metric_name: str | None, n_eval: int | None) -> float:
    """How far the validation metric may fall and still count as unchanged (noise): METRIC_SLACK, or one binomial
    standard error of an accuracy-like metric on n_eval rows."""
    if metric_name == "balanced_accuracy" and before is not None and n_eval:
        p = min(max(before, 0.0), 1.0)
        return max(METRIC_SLACK, math.sqrt(p * (1 - p) / n_eval))
    return METRIC_SLACK


def patch_text(patch: dict[str, Any]) -> str:
    return ", ".join("model.layers changed" if k == "model.layers" else "a stand-in model" if k == "model"
                     else f"{k}={_short_value(v)}" for k, v in patch.items())


def _short_value(v: Any) -> str:
    text = f"{v:g}" if isinstance(v, float) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def outcome(rec) -> dict[str, Any]:
    """What a probe reached: the validation metric and the loss it is compared on (None when it broke)."""
    if rec is None or rec.error or rec.stopped in ("non-finite", "diverged", "skipped"):
        return {"metric": None, "loss": None, "broke": True}
    metric_name = "balanced_accuracy" if "balanced_accuracy" in rec.metrics else "r2" if "r2" in rec.metrics else None
    loss = rec.final_val_loss if rec.final_val_loss is not None else rec.final_loss
    return {"metric_name": metric_name, "metric": rec.metrics.get(metric_name) if metric_name else None,
            "loss": loss, "loss_kind": "validation" if rec.final_val_loss is not None else "training", "broke": False}


def judge(before, after, patch: dict[str, Any], n_eval: int | None = None) -> dict[str, Any]:
    """Did the fix help materially? On the metric, or on the loss when the loss is comparable and the metric
    does not get worse; a fix whose probe broke never helped; a baseline that broke is helped by any fix
    whose probe trains."""
    out: dict[str, Any] = {"probe": patch_text(patch), "steps": after.steps_run}
    if after.stopped == "skipped":
        out["result"] = "not tested: the budget ran out"
        return out
    b, a = outcome(before), outcome(after)
    name = a.get("metric_name") or b.get("metric_name")
    if name:
        out.update({"metric": name, "metric_before": b.get("metric"), "metric_after": a.get("metric")})
    comparable = not any(k.startswith(LOSS_CHANGING_KEYS) for k in patch)
    if comparable:
        out.update({"loss": a.get("loss_kind") or b.get("loss_kind"), "loss_before": b.get("loss"),
                    "loss_after": a.get("loss")})
    if b["broke"]:
        out["before_state"] = _state(before)
    if a["broke"]:
        out["after_state"] = _state(after)
        out["improved"] = False
        out["result"] = f"the fixed spec did not train either: {after.error or after.stopped}"
        return out
    if b["broke"]:
        out["improved"] = True
        out["result"] = f"the configured spec {before.error or before.stopped}; with the fix it trains"
        return out
    mb, ma = b.get("metric"), a.get("metric")
    metric_up = mb is not None and ma is not None and ma >= mb + METRIC_GAIN
    metric_ok = mb is None or ma is None or ma >= mb - metric_slack(mb, name, n_eval)
    lb, la = b.get("loss"), a.get("loss")
    loss_down = comparable and lb is not None and la is not None and math.isfinite(lb) and la <= lb * (1 - LOSS_GAIN)
    out["improved"] = bool(metric_up or (loss_down and metric_ok))
    out["metric_up"] = bool(metric_up)
    if n_eval:
        out["n_eval"] = n_eval
    if not out["improved"]:
        out["result"] = "the fix did not clearly help in a probe of the same length"
    return out


def _value_at(spec, dotted: str) -> Any:
    obj = spec
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _direction(old: Any, new: Any) -> int | None:
    """+1 / -1 when a fix moves a number up / down; None for anything else."""
    if not (_number(old) and _number(new)) or old == new:
        return None
    return 1 if new > old else -1


def _continues(patch: dict[str, Any], applied_keys: set[str], spec, directions: dict[str, int]) -> bool:
    """Whether a patch leaves alone every key an earlier fix set, or moves it further the same way."""
    for key in set(patch) & applied_keys:
        if key not in directions or _direction(_value_at(spec, key), patch[key]) != directions[key]:
            return False
    return True


def _state(rec) -> str:
    if rec.error:
        return "crashed"
    return f"{rec.stopped} at step {rec.steps_run}" if rec.stopped in ("diverged", "non-finite") else str(rec.stopped)


# ---- 2. the treatment loop -------------------------------------------------------------------------------

def pick(report: Report, applied_keys: set[str], spec, directions: dict[str, int]) -> Finding | None:
    """The fix to apply next: a confirmed cause (not a symptom of another finding), earliest step first,
    errors before warnings; never one that would change a key an earlier fix already set, except to move a
    number further the way that fix moved it (batch 512 -> 114 -> 28, lr 0.1 -> 0.01 -> 0.001): never back."""
    confirmed = [f for f in report.findings if f.fix_status == "confirmed" and f.patch and not f.probe_only
                 and _continues(f.patch, applied_keys, spec, directions)]
    causes = [f for f in confirmed if not f.explained_by] or confirmed
    if not causes:
        return None
    return best_in_step(causes)


def treat(s: Session, rediagnose: Callable[[Session], None]) -> None:
    """Test the fixes of the diagnosed spec, then apply them one at a time, re-diagnosing after each. When the
    budget has no room for another diagnosis, the next confirmed fix is still applied (its own probe trained the
    fixed spec), and the report says that spec was not diagnosed again."""
    verify_fixes(s)
    verify_builds(s)
    s.report.finalize()
    if s.ctx is None or (s.ctx.baseline is None and s.ctx.build_error is None):
        return
    written = {k: v for f in s.report.findings if f.untestable and f.patch for k, v in f.patch.items()}
    path: list[dict[str, Any]] = []
    current, applied = s, set(written)
    directions: dict[str, int] = {}     # the way each applied fix moved a number (pick: never back)
    spec = s.spec
    stop = "no fix left that a probe confirmed"
    while True:
        if not _has_issues(current.report):
            stop = "the spec is healthy"
            break
        if len(path) >= MAX_FIXES:
            stop = f"{MAX_FIXES} fixes applied (the most the loop applies)"
            break
        chosen = pick(current.report, applied, current.spec, directions)
        if chosen is None:
            if any(f.probe_only and f.fix_status == "confirmed" for f in current.report.findings):
                stop = "the confirmed fix is a change to the model's own code, which no spec key makes"
            break
        try:
            spec = current.spec.with_overrides(**{**chosen.patch, **written})
        except Exception:
            break
        left = s.clock.left()
        # a round costs about what the first diagnosis and its fix tests cost (or the last round)
        last = path[-1]["round_s"] if path and path[-1]["rediagnosed"] else s.clock.elapsed()
        step = _path_step(chosen)
        path.append(step)
        applied |= set(chosen.patch)
        for key, value in chosen.patch.items():
            way = _direction(_value_at(current.spec, key), value)
            if way is not None:
                directions.setdefault(key, way)
            else:
                directions.pop(key, None)    # not a number moved: never changed again
        if left is not None and left < ROUND_TIME_FACTOR * last:
            step.update(rediagnosed=False, round_s=0.0)
            stop = (f"the budget would run out before the spec with {chosen.code}'s fix is diagnosed again "
                    f"(--budget {s.clock.budget_s:g} s); that fix's own probe trained it")
            break
        t0 = s.clock.elapsed()
        child = s.fork(spec)
        rediagnose(child)
        verify_fixes(child)
        child.report.finalize()
        step["round_s"] = s.clock.elapsed() - t0
        current = child
        if child.ctx is None or child.ctx.baseline is None:
            stop = "the repaired spec could not be probed"
            current = child
            break
    credit_masked_fixes(s.report, path)
    s.report.probes["treatment"] = {"path": path, "written_without_probe": written, "stopped": stop,
                                    "final": _final_state(current, path)}
    s.treated_spec = spec if (path or written) else None
    if s.opts.write_fixed:
        write_fixed(s, s.opts.write_fixed, {**written, **_merged(path)})


def credit_masked_fixes(report: Report, path: list[dict[str, Any]]) -> None:
    """A fix its own probe refuted can be confirmed later on the path, once an earlier fix removed what broke
    that probe: with an lr that diverges, the probe of a loss fix diverges too (mse on class ids plus lr 0.1:
    the lr is the first fix a probe confirms, then the loss fix is confirmed on the repaired spec). Such a
    finding of the diagnosed spec records where it was confirmed, so that first_fix can name the earlier
    step's cause; its own probe's result still reads "not confirmed"."""
    for i, p in enumerate(path[1:], start=1):
        for f in report.findings:
            if f.code == p["code"] and f.fix_status == "not confirmed" and f.confirmed_after is None:
                f.confirmed_after = {"after": [q["code"] for q in path[:i]], "metric": p.get("metric"),
                                     "before": p.get("before"), "value": p.get("after"),
                                     "before_state": p.get("before_state")}
    if any(f.confirmed_after for f in report.findings):
        report.finalize()


def _path_step(chosen: Finding) -> dict[str, Any]:
    v = chosen.verified or {}
    return {"code": chosen.code, "name": chosen.name, "fix": chosen.fix, "patch": chosen.patch,
            "metric": v.get("metric"), "before": v.get("metric_before"), "after": v.get("metric_after"),
            "before_state": v.get("before_state"), "after_state": v.get("after_state"),
            "loss_before": v.get("loss_before"), "loss_after": v.get("loss_after"), "rediagnosed": True}


def _final_state(current: Session, path: list[dict[str, Any]]) -> dict[str, Any]:
    """The last spec of the path: its diagnosis, or, when the last fix was applied without one, what that fix's
    own probe reached."""
    if path and not path[-1]["rediagnosed"]:
        last = path[-1]
        return {"verdict": "not diagnosed again", "first_fix": None, "metric": last.get("metric"),
                "value": last.get("after"), "findings": []}
    final, cctx = current.report, current.ctx
    short = cctx.as_configured if cctx is not None else None
    base = outcome(short if short is not None and short.stopped != "skipped" else cctx.baseline if cctx else None)
    return {"verdict": final.verdict, "first_fix": final.first_fix,
            "metric": base.get("metric_name"), "value": base.get("metric"),
            "findings": [{"code": f.code, "severity": f.severity.value, "message": f.message, "fix": f.fix}
                         for f in final.findings if f.severity.rank >= Severity.WARNING.rank]}


def _has_issues(report: Report) -> bool:
    return any(f.severity.rank >= Severity.WARNING.rank for f in report.findings)


def _merged(path: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in path:
        out.update(p["patch"])
    return out


# ---- 3. --write-fixed -------------------------------------------------------------------------------------

def write_fixed(s: Session, path: str, patch: dict[str, Any]) -> None:
    """The user's own YAML with the treatment's changes applied (only the keys they had, plus the fixes), paths
    kept valid from the new place, and a header saying which fixes and how the result scored."""
    import yaml
    config = s.report.inputs.get("config")
    raw = copy.deepcopy(s.spec.source_raw) if s.spec.source_raw else s.spec.to_yaml_dict()
    for dotted, value in patch.items():
        _set_dotted(raw, dotted, _plain(value))
    out = Path(path).resolve()
    data = raw.get("data") if isinstance(raw.get("data"), dict) else None
    for key in ("path", "val_path"):
        p = data.get(key) if data else None
        if isinstance(p, str) and not Path(p).is_absolute() and s.spec.base_dir:
            data[key] = os.path.relpath(Path(s.spec.base_dir) / p, out.parent)
    t = s.report.probes.get("treatment", {})
    steps = [f"{p['code']} ({_metric_change(p)})" for p in t.get("path", [])]
    final = t.get("final", {})
    score = f"{final.get('metric')} {final['value']:.3g}" if final.get("value") is not None else "no metric"
    header = (f"# written by nn-doctor full-report --write-fixed from {config}\n"
              f"# fixes applied, each confirmed by a probe: {', '.join(steps) if steps else 'none'}\n")
    if t.get("written_without_probe"):
        header += f"# also written (no probe can test them): {', '.join(t['written_without_probe'])}\n"
    if final.get("verdict") == "not diagnosed again":
        header += f"# the last fix's probe trained this spec ({score}); it was not diagnosed again (budget)\n"
    else:
        header += f"# this spec was diagnosed again: verdict {final.get('verdict', 'unknown')}, {score}\n"
    try:
        out.write_text(header + yaml.safe_dump(raw, sort_keys=False))
    except OSError as err:
        raise UsageError(f"--write-fixed {path}: cannot write: {err.strerror}") from None
    s.report.probes["fixed_spec"] = {"path": str(path), "applied": [p["code"] for p in t.get("path", [])],
                                     "written_without_probe": sorted(t.get("written_without_probe", {}))}


def _metric_change(p: dict[str, Any]) -> str:
    if p.get("before_state") == "does not build":
        return "the model builds"
    if p.get("before") is not None and p.get("after") is not None:
        return f"{p['metric']} {p['before']:.3g} -> {p['after']:.3g}"
    if p.get("loss_before") is not None and p.get("loss_after") is not None:
        return f"loss {p['loss_before']:.3g} -> {p['loss_after']:.3g}"
    return "trains where it broke"


def _plain(value: Any) -> Any:
    """Patch values as YAML writes them: pydantic models and tuples become dicts and lists."""
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for p in parents:
        if isinstance(node.get(p), str) and p in ("loss", "optimizer"):   # `loss: mse` -> {name: mse, ...}
            node[p] = {"name": node[p]}
        node = node.setdefault(p, {})
    node[last] = value
