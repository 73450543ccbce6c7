"""The rules on the user's own training step: G408 training-step-bug, and the parameters it leaves alone
(G405, decided by the G405 check in checks/gradients.py through `params_left_alone`).

The harness (nn_doctor.user_step.diagnose_step) runs the step in a controlled setting and records what
it measured in a StepDiagnosis (ctx.user_step); `step_bugs` reads that record and names each bug of
the source notes' implementation bugs and wrong weight-update rules with its numbers as evidence and a fix that points
at the user's line. The letters (a)-(f) follow the harness's docstring.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..report import Finding
from ..user_step import LR_SCALE
from .. import fmt
from . import NotRun, check
from .context import ProbeContext

# ---- thresholds -------------------------------------------------------------------------------
ACCUM_MATCH = 0.1       # (a) the second gradient is within 10% (relative norm) of first + fresh: accumulated
ACCUM_FRESH_MISS = 0.5  # ... and >= 50% away from the fresh gradient alone. On wine (13-64-3 MLP, adam 1e-3)
                        # a correct step matches fresh to ~1e-7 and a step without zero_grad gives 1.0 / ~1e-7
ASCENT_COS = 0.1        # (b) cosine(update, gradient) > +0.1 is ascent: descent steps give -1 (sgd) or about
                        # -0.5..-0.8 (adam's first step ~ -lr*sign(g)); `p += lr*grad` gives +1
LR_SCALE_MIN = math.sqrt(LR_SCALE)  # (c) a correct step's update grows 10x with the lr (sgd, adam, rmsprop,
                        # weight decay alike); one that ignores the lr 1x: the geometric midpoint separates them

PARAMS_KIND = "params-not-updating"   # the bug kind that is G405's


@dataclass
class StepBug:
    kind: str                     # grads-not-zeroed, zeroed-before-step, ascent, lr-ignored, eval-mode, no-grad,
                                  # no-update, params-not-updating, no-loss, exception
    message: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None   # None: the catalogue's default


def _at(where: str | None) -> str:
    return f" ({where})" if where else ""


_g = fmt.num         # numbers in messages: nn_doctor/fmt.py
_short = fmt.names


def _exception_bug(diag: Any, exc: dict[str, Any]) -> StepBug:
    text, name, where = exc["message"], exc["exception"], exc["where"]
    ev = {k: exc[k] for k in ("exception", "message", "where", "call")}
    if "does not require grad" in text:
        grad_off = exc.get("forward_grad_enabled") is False
        ev["forward_grad_enabled"] = exc.get("forward_grad_enabled")
        why = ("the model's forward ran under torch.no_grad()" if grad_off else
               "the loss was cut from the graph (.detach(), .item() or a new tensor)")
        return StepBug("no-grad", f"the training step raises {name} at backward(): {text} - {why}{_at(where)}",
                       f"compute the forward pass and the loss with gradients enabled: remove the torch.no_grad()/"
                       f".detach() around model(x) and loss_fn(...){_at(diag.lines.get('no_grad'))}", ev)
    return StepBug("exception", f"the training step raises {name}: {text}{_at(where)} ({exc['call']})",
                   f"fix the exception at {where}" if where else "fix the exception the step raises "
                   "(run it once by hand on a batch to see the traceback)", ev)


def _mode_bug(diag: Any) -> StepBug | None:
    """(d): a gradient-enabled forward with model.training False."""
    m = diag.measurements
    fwd, drop_bn = m.get("training_mode_in_forward") or [], m.get("dropout_batchnorm_layers") or []
    if not fwd or all(fwd):
        return None
    line = diag.lines.get("eval")
    ev = {"model_training_in_forward": fwd, "dropout_batchnorm_layers": drop_bn, "where": line}
    if drop_bn:
        msg = (f"the model is in eval mode during the training step (model.training is False in the forward): "
               f"its {len(drop_bn)} dropout/batchnorm layer{'s' if len(drop_bn) > 1 else ''} "
               f"({_short(drop_bn, 3)}) run as at inference (no dropout, frozen batch statistics)")
        sev = None
    else:
        msg = ("the model is in eval mode during the training step (model.training is False in the forward); "
               "no effect on this model (no dropout/batchnorm), but it will matter once such layers are added")
        sev = "info"
    return StepBug("eval-mode", msg, f"call model.train() at the start of the training step (model.eval() only "
                                     f"around evaluation, then switch back){_at(line)}", ev, severity=sev)


def _params_bug(diag: Any, zeroed_before_step: bool) -> StepBug | None:
    """(f): no update at all (G408), or some parameters left alone (G405)."""
    m, lines = diag.measurements, diag.lines
    frozen, not_in_opt = m["params_frozen"], m["params_not_in_optimizer"]
    unchanged = [] if zeroed_before_step else m["params_unchanged_with_grad"]   # explained: no gradient at step()
    if m["params_changed"] == 0 and m["params_with_update_sized_grad"] and m["optimizer_step_calls"] == 0:
        return StepBug("no-update", f"the step never updates the weights: {m['params_with_update_sized_grad']} "
                                    f"parameters get a gradient, none changes, and optimizer.step() is never called",
                       f"call optimizer.step() after loss.backward(){_at(lines.get('backward'))}",
                       {"params_with_grad": m["params_with_update_sized_grad"], "params_changed": 0,
                        "optimizer_step_calls": 0})
    if not (frozen or not_in_opt or unchanged):
        return None
    parts, fixes = [], []
    if frozen:
        parts.append(f"{len(frozen)} frozen (requires_grad=False: {_short(frozen)})")
        fixes.append(f"set requires_grad=True on {_short(frozen, 3)} (or drop them from the model if they are "
                     f"frozen on purpose){_at(lines.get('requires_grad'))}")
    if not_in_opt:
        parts.append(f"{len(not_in_opt)} not in any optimizer param group ({_short(not_in_opt)})")
        fixes.append("build the optimizer over model.parameters()")
    if unchanged:
        parts.append(f"{len(unchanged)} unchanged after the step although they got a gradient ({_short(unchanged)})")
        fixes.append("update every parameter: pass model.parameters() to the optimizer (an optimizer created "
                     "inside the step, or over a part of the model, leaves the rest alone)")
    only_frozen = not not_in_opt and not unchanged
    return StepBug(PARAMS_KIND, f"parameters not updating in the training step: {'; '.join(parts)}", "; ".join(fixes),
                   {"frozen": frozen, "not_in_optimizer": not_in_opt, "unchanged_with_grad": unchanged,
                    "params": m["params"], "params_changed": m["params_changed"]},
                   # freezing is often deliberate (fine-tuning): a warning; a parameter that gets a gradient and
                   # is never applied is the catalogue's error
                   severity="warning" if only_frozen else None)


def step_bugs(diag: Any) -> list[StepBug]:
    """Every bug the harness's record shows, in the order the harness's docstring lists them."""
    if diag is None:
        return []
    m, lines = diag.measurements, diag.lines
    if diag.exceptions and diag.exceptions[0]["call"] == "first call":
        return [_exception_bug(diag, diag.exceptions[0])]   # nothing else was measured
    if "accumulation" in m:   # training.accumulate > 1: the accumulation rules (G412/G413, checks/transformers.py)
        return [_exception_bug(diag, e) for e in diag.exceptions[:1]]
    later = list(diag.exceptions)
    bugs: list[StepBug] = []
    if m.get("no_gradient_reaches_params"):      # (e)
        grad_off = not any(m["forward_grad_enabled"]) and m["forwards_per_call"] > 0
        no_graph = m["loss_has_graph"] is False
        why = ("the model's forward ran with gradients disabled (torch.no_grad)" if grad_off else
               "the returned loss has no graph back to the model (detached)" if no_graph else
               "no parameter has a gradient after the step")
        bugs.append(StepBug("no-grad", f"no gradient reaches the parameters: {why}; {m['params_with_grad']} of "
                                       f"{m['params']} parameters have a gradient after loss.backward()",
                            "compute the forward pass and the loss with gradients enabled: remove the "
                            f"torch.no_grad()/.detach() (and the requires_grad workaround)"
                            f"{_at(lines.get('no_grad_or_requires_grad'))}",
                            {"params_with_grad": m["params_with_grad"], "params": m["params"],
                             "forward_grad_enabled": not grad_off, "loss_has_graph": m["loss_has_graph"],
                             "loss_requires_grad": m["loss_requires_grad"], "update_norm": m["update_norm"]}))
        bugs += [b for b in (_mode_bug(diag),) if b is not None]
        return bugs + [_exception_bug(diag, e) for e in later]
    # (e') zero_grad() between backward() and step(): the optimizer saw no gradient
    zeroed = bool(m["optimizer_step_calls"]) and m["grad_norm"] > 0 and m["grad_norm_at_optimizer_step"] == 0.0
    if zeroed:
        bugs.append(StepBug("zeroed-before-step", f"optimizer.step() sees zero gradients: backward() left a "
                                                  f"gradient of norm {_g(m['grad_norm'])}, cleared before the update",
                            f"call optimizer.zero_grad() before loss.backward(), not between backward() and "
                            f"optimizer.step(){_at(lines.get('zero_grad'))}",
                            {"grad_norm_after_backward": m["grad_norm"],
                             "grad_norm_at_optimizer_step": m["grad_norm_at_optimizer_step"]}))
    # (b) ascent
    cos = m.get("update_grad_cosine")
    if cos is not None and cos > ASCENT_COS:
        before, after, ref = m["batch_loss_before"], m["batch_loss_after"], m["batch_loss_after_descent_step"]
        bugs.append(StepBug("ascent", f"the update climbs the gradient: cosine(update, gradient) = {cos:+.2f} "
                                      f"(descent is < 0); the batch loss goes {_g(before)} -> {_g(after)}, a descent "
                                      f"step of the same size gives {_g(ref)}",
                            f"subtract the gradient: p -= lr * p.grad (w = w - learning_rate * gradient), or call "
                            f"optimizer.step(){_at(lines.get('ascent'))}",
                            {"update_grad_cosine": cos, "threshold": ASCENT_COS, "batch_loss_before": before,
                             "batch_loss_after": after, "batch_loss_after_descent_step": ref,
                             "update_norm": m["update_norm"], "where": lines.get("ascent")}))
    # (f) parameters
    bugs += [b for b in (_params_bug(diag, zeroed), _mode_bug(diag)) if b is not None]
    # (a) gradients not zeroed
    miss_fresh, miss_accum = m.get("second_grad_vs_fresh"), m.get("second_grad_vs_accumulated")
    if miss_fresh is not None and miss_accum <= ACCUM_MATCH and miss_fresh >= ACCUM_FRESH_MISS:
        ratio = m["second_grad_norm_ratio"]
        bugs.append(StepBug("grads-not-zeroed",
                            f"gradients are not zeroed between steps: on a second call with the same batch the "
                            f"gradient is {ratio:.2f}x the gradient of one backward (the previous step's gradient is "
                            f"added to it)",
                            f"call optimizer.zero_grad() before loss.backward(){_at(lines.get('backward'))}",
                            {"second_grad_norm": m["second_grad_norm"], "fresh_grad_norm": m["fresh_grad_norm"],
                             "first_grad_norm": m["first_grad_norm"], "ratio": ratio,
                             "relative_distance_to_fresh": miss_fresh, "relative_distance_to_accumulated": miss_accum,
                             "thresholds": {"accumulated": ACCUM_MATCH, "fresh": ACCUM_FRESH_MISS}}))
    # (c) lr not applied
    scale, lr = m.get("update_scale_at_lr_x10"), m["lr"]
    if scale is not None and math.isfinite(scale) and scale < LR_SCALE_MIN and \
            not any(b.kind == "no-update" for b in bugs):
        bugs.append(StepBug("lr-ignored", f"the update ignores the learning rate: with the optimizer's lr x "
                                          f"{LR_SCALE:g} ({lr:g} -> {lr * LR_SCALE:g}) the weights move {scale:.2f}x as "
                                          f"far (a correct step: {LR_SCALE:g}x)",
                            "apply the optimizer's lr: call optimizer.step(), or update with "
                            f"p -= group['lr'] * p.grad (w = w - learning_rate * gradient){_at(lines.get('update'))}",
                            {"update_norm_lr": m["update_norm"], "update_norm_lr_x10": m["update_norm_lr_x10"],
                             "scale": scale, "lr": lr, "threshold": LR_SCALE_MIN, "where": lines.get("update")}))
    bugs += [_exception_bug(diag, e) for e in later]
    if not m["returned_loss_ok"]:
        bugs.append(StepBug("no-loss", f"the training step returns {m['returned_type']}, not the loss",
                            "end the step with `return loss`", {"returned": m["returned_type"]}, severity="warning"))
    return bugs


def _evidence(diag: Any, bug: StepBug) -> dict[str, Any]:
    ev = {"step_function": diag.ref, "bug": bug.kind, **bug.evidence}
    if diag.source:
        ev.setdefault("defined_at", diag.source)
    return ev


@check("G408", needs=("user_step",))
def check_training_step_bug(ctx: ProbeContext) -> list[Finding] | None:
    """G408 training-step-bug: one finding per bug the harness's record shows in the user's training step."""
    diag = ctx.user_step
    if diag is None:
        raise NotRun("the spec names no training.step: there is no training step of yours to test")
    return [Finding("G408", f"{diag.ref}: {bug.message}", bug.fix, _evidence(diag, bug), severity=bug.severity)
            for bug in step_bugs(diag) if bug.kind != PARAMS_KIND] or None


def params_left_alone(diag: Any) -> tuple[str, str, dict[str, Any], str | None] | None:
    """(message, fix, evidence, severity) for the parameters the user's step freezes, leaves out of the
    optimizer or does not update; None when it updates them all (or there is no user step)."""
    bug = next((b for b in step_bugs(diag) if b.kind == PARAMS_KIND), None)
    if bug is None:
        return None
    return f"{diag.ref}: {bug.message}", bug.fix, _evidence(diag, bug), bug.severity
