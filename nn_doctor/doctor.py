"""What each command does, in the five-step order: load, check, plan the probes in rounds, run them on an
executor, run the checks on what they recorded, test the fixes (the treatment loop), and return a Report.

The CLI (cli.py) only parses options and renders; everything here returns data. Where the parts live:
session.py (options, the session, the progress bar), plan.py (which probes, in which rounds), lr_search.py
(the lr search and its decision), treatment.py (counterfactual probes of the fixes, the repair loop and
--write-fixed), checks/ (every finding, one check per code), triage.py (causes before symptoms).
"""
from __future__ import annotations

from typing import Any, Callable

from .catalogue import Step
from .checks import run_checks
from .data import Dataset
from .errors import DataError, UsageError
from .plan import INIT_VARIANTS, LR_PROBE_STEPS, PROBE_HEALTH_CODES, init_variants, model_builds, resources, \
    run_probes
from .report import Report
from .series import record_series
from .session import Options, Session, display_path, steps_per_epoch
from .spec import Spec

DEFAULT_BUDGET_S = 60.0       # full-report's default wall-clock budget: small tables need a few seconds, and no run on
                              # <= 2,000 rows may take longer than a minute (probes and treatment rounds that would
                              # not finish in time are skipped and named)

__all__ = ["DEFAULT_BUDGET_S", "INIT_VARIANTS", "LR_PROBE_STEPS", "Options", "Session", "check_data",
           "display_path", "full_report", "probe_init", "probe_lr", "steps_per_epoch"]


# ---- check-data --------------------------------------------------------------------------------

def check_data(opts: Options) -> Report:
    """Step 1 only. Unreadable data is a usage error here (exit 2): there is nothing to report on."""
    from .checks.data import run_data_checks
    s = Session("check-data", opts)
    spec = s.load_spec(opts.config) if opts.config else None
    ds = s.load_data(spec)
    n_params = loss_name = n_outputs = None
    if spec is not None:
        loss_name = spec.loss.name
        n_params, n_outputs = _model_size(spec, ds)
    for st in Step:
        s.report.step(st).ran = st == Step.DATA
    run_data_checks(ds, s.report, s.select, s.ignore, n_params=n_params, loss_name=loss_name, n_outputs=n_outputs,
                    spec=spec)
    _require_some_check(s.report)
    s.environment(None)
    return s.finish()


def _model_size(spec: Spec, ds: Dataset) -> tuple[int | None, int | None]:
    """Parameter count and output size of the spec's model, for D111/D107 (None when it does not build)."""
    try:
        import torch
        from .model import build_model, count_parameters
        model = build_model(spec.model, ds.sample_shape, spec.base_dir)
        with torch.no_grad():
            out = model.eval()(torch.zeros((2,) + tuple(ds.sample_shape)))
        return count_parameters(model), int(out.shape[-1]) if out.dim() > 1 else 1
    except KeyboardInterrupt:
        raise
    except BaseException:   # the user's model is only sized here: whatever it raises (or exits), no size
        return None, None


def _require_some_check(report: Report) -> None:
    if not any(r.checks_run for r in report.steps.values()):
        raise UsageError("no check ran: --select/--ignore leave nothing to run for this command")


# ---- probe-lr and probe-init ---------------------------------------------------------------------

def _probe_command(command: str, opts: Options, step: Step, probes: Callable[[Session], Any],
                   codes: list[str]) -> Report:
    """A one-step probe command: load, build the model, run its probes, run its checks."""
    s = Session(command, opts)
    spec = s.load_spec(opts.config)
    s.load_data(spec)
    for st in Step:
        s.report.step(st).ran = st == step
    try:
        s.prepare_probes()
        if not model_builds(s):
            return s.finish()
        probes(s)
        run_checks(codes, s.ctx, s.report, s.select, s.ignore)
        _require_some_check(s.report)
        for f in s.report.findings:   # a crash or a NaN is shown under its own step, even in a one-step command
            s.report.step(f.step).ran = True
    except KeyboardInterrupt:
        s.report.interrupted = True
    return s.finish()


def probe_lr(opts: Options) -> Report:
    from .lr_search import run_search
    return _probe_command("probe-lr", opts, Step.HYPERPARAMETERS, run_search, ["H300", "H301", "H310"] + PROBE_HEALTH_CODES)


def probe_init(opts: Options) -> Report:
    return _probe_command("probe-init", opts, Step.MODEL, init_variants, ["M204", "M205", "H300"] + PROBE_HEALTH_CODES)


# ---- full-report -----------------------------------------------------------------------------------

def full_report(opts: Options, example: bool = False) -> Report:
    """All five steps on the configured spec, then the treatment loop: the fixes are probed, the first
    confirmed one is applied and the repaired spec diagnosed again (treatment.py)."""
    from .checks.data import run_data_checks
    from .treatment import treat
    if opts.budget is None:
        opts.budget = DEFAULT_BUDGET_S
    s = Session("full-report", opts)
    spec = s.load_spec(opts.config)
    if example:
        s.report.notes.append("This is nn-doctor's bundled example (wine data with deliberate faults). "
                              "Run it on your own spec: nn-doctor full-report --config my_spec.yaml")
    # Step 1: data. An unreadable file is D100 here, not an exit 2: the rest of the report says what it can.
    try:
        ds = s.load_data(spec)
    except DataError as err:
        from .checks.data import UnreadableData
        run_checks(["D100"], UnreadableData(str(err), str(spec.data.path or spec.data.dataset)), s.report, [], [])
        s.report.inputs.setdefault("data", str(spec.data.path or spec.data.dataset))
        _static_model_checks_without_data(s)
        for st in (Step.HYPERPARAMETERS, Step.GRADIENTS, Step.RESOURCES):
            s.report.skip_step(st, "the data could not be read (D100)")
        s.environment(None)
        return s.finish()
    try:
        try:
            s.prepare_probes()
        except DataError as err:
            run_data_checks(ds, s.report, s.select, s.ignore, loss_name=spec.loss.name, spec=spec)
            s.report.notes.append(f"probes skipped: {err}")
            _static_model_checks_without_data(s)
            for st in (Step.HYPERPARAMETERS, Step.GRADIENTS, Step.RESOURCES):
                s.report.skip_step(st, f"no numeric data to probe: {err}")
            return s.finish()
        step_fn = _load_user_step(s)      # before the probes: an import error is exit 2 at once
        diagnose(s, step_fn)
        treat(s, lambda child: diagnose(child, step_fn))
    except KeyboardInterrupt:
        s.report.interrupted = True
    return s.finish()


def diagnose(s: Session, step_fn: Any = None) -> None:
    """Steps 1-5 on s.spec with the data already loaded: data checks, the model, every probe, the checks.
    The treatment loop runs it again on each repaired spec (a forked session)."""
    from .checks.data import run_data_checks
    spec, ds = s.spec, s.dataset
    n_params, n_outputs = _model_size(spec, ds)
    run_data_checks(ds, s.report, s.select, s.ignore, n_params=n_params, loss_name=spec.loss.name,
                    n_outputs=n_outputs, spec=spec)
    s.report.step(Step.DATA).summary = ds.describe()
    # Step 2: model structure (static), then everything that needs probes.
    s.report.step(Step.MODEL)
    if not model_builds(s):
        from .checks import codes_for_step, run_checks
        # the static checks still say what they can (M200 itself was decided by model_builds)
        run_checks([c for c in codes_for_step("M") if c != "M200"], s.ctx, s.report, s.select, s.ignore)
        s.report.skip_step(Step.RESOURCES, "the model does not build (M200)")
        return
    run_probes(s)
    record_series(s.report, s.ctx)
    from .checks import probes_needed
    if step_fn is not None and "user_step" in probes_needed(s.select, s.ignore):
        from .user_step import diagnose_step
        s.progress.plan(1, "checking your training step")
        s.ctx.user_step = diagnose_step(step_fn, s.spec, s.data, s.seed, ref=s.spec.training.step)
        s.report.probes["user_step"] = s.ctx.user_step.to_dict()
        s.progress.done("your training step")
    for letter in ("M", "H", "G"):
        s.check(letter)
    resources(s)
    s.check("R")


def _load_user_step(s: Session):
    """The spec's training.step (package.module:function): importing it runs the user's code."""
    if not s.spec.training.step:
        return None
    from .user_step import load_step
    return load_step(s.spec.training.step, s.spec.base_dir)


def _static_model_checks_without_data(s: Session) -> None:
    from .checks.context import ProbeContext
    from .model import model_summary
    s.ctx = ProbeContext(spec=s.spec, model_summary=model_summary(s.spec.model))
    s.report.step(Step.MODEL).summary = "static checks only (no data)"
    run_checks(["M202", "M203", "M204", "M206"], s.ctx, s.report, s.select, s.ignore)
