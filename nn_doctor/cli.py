"""The `nn-doctor` command line (typer). Thin: parse options, call doctor.py, render, pick the exit code.

Imports stay light at module level: `--help` and `--version` never import torch or pandas.
Exit codes (report.md): 0 no finding at/above --fail-on, 1 some, 2 usage error / unusable input,
130 interrupted.
"""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="A training doctor for PyTorch: checks the data, runs short probe trainings and prints "
                       "a five-step checklist verdict (data, model, hyperparameters, gradients, resources).")


class Fmt(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"


class FailOn(str, Enum):
    error = "error"
    warning = "warning"
    never = "never"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nn-doctor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


# ---- shared options (typer has no option groups; these are reused by every command) -------------
FORMAT = typer.Option(Fmt.text, "--format", "-f", help="Report format on stdout.")
OUTPUT = typer.Option(None, "--output", "-o", help="Also write the report (in --format) to this file.")
JUNIT = typer.Option(None, "--junit-xml", help="Write a JUnit XML file: one test case per check, failures at --fail-on.")
HTML = typer.Option(None, "--html", help="Also write a self-contained HTML report with plots to this file "
                                         "(needs matplotlib: pip install 'nn-doctor[html]').")
FAIL_ON = typer.Option(FailOn.error, "--fail-on", help="Exit 1 when a finding is at or above this severity.")
SELECT = typer.Option(None, "--select", help="Only these codes or prefixes, comma-separated (D1,G403).")
IGNORE = typer.Option(None, "--ignore", help="Skip these codes or prefixes, comma-separated.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars; the report only.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Show evidence, checks run and timings in text output.")
SEED = typer.Option(None, "--seed", help="Override training.seed.")
DEVICE = typer.Option(None, "--device", help="Override training.device (auto, cpu, cuda, cuda:N, mps).")
BUDGET = typer.Option(None, "--budget", help="Wall-clock budget in seconds; probes stop there and the report names what was skipped.")
CONFIG = typer.Option(None, "--config", "-c", help="The YAML spec (see configs/).")
LR = typer.Option(None, "--lr", help="Override optimizer.lr.")
BATCH = typer.Option(None, "--batch-size", help="Override training.batch_size.")
DATA = typer.Option(None, "--data", help="Override data.path.")
TARGET = typer.Option(None, "--target", help="Override data.target.")
EXECUTOR = typer.Option("local", "--executor", help="Where probes run: local (in-process) or ray.")
RAY_ADDRESS = typer.Option(None, "--ray-address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray).")
GPUS_PER_PROBE = typer.Option(None, "--gpus-per-probe", help="GPUs each Ray probe task asks for (fractions share a GPU).")


def _options(**kw):
    from .catalogue import parse_codes
    from .doctor import Options
    select = parse_codes(kw.pop("select", None))
    ignore = parse_codes(kw.pop("ignore", None))
    quiet = kw.get("quiet", False)
    return Options(select=select, ignore=ignore, progress=not quiet and sys.stderr.isatty(), **kw)


def _emit(report, fmt: Fmt, output: Optional[Path], junit: Optional[Path], fail_on: FailOn, verbose: bool,
          html: Optional[Path] = None) -> None:
    from .render import render, render_junit
    color = fmt == Fmt.text and sys.stdout.isatty()
    text = render(report, fmt.value, color=color, verbose=verbose)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    try:
        if output:
            plain = render(report, fmt.value, color=False, verbose=verbose)
            Path(output).write_text(plain if plain.endswith("\n") else plain + "\n", encoding="utf-8")
        if junit:
            Path(junit).write_text(render_junit(report, fail_on.value), encoding="utf-8")
        if html:
            from .render_html import render_html   # imports matplotlib: only when --html is given
            Path(html).write_text(render_html(report), encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot write {err.filename}: {err.strerror}") from None
    raise typer.Exit(report.exit_code(fail_on.value))


def _check_html(html: Optional[Path]) -> None:
    """--html needs matplotlib: say so before any work, not after minutes of probes."""
    if html is None:
        return
    import importlib.util
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--html needs matplotlib, which is not installed: pip install 'nn-doctor[html]' "
                         "(or pip install matplotlib)")
    if Path(html).is_dir():
        raise UsageError(f"--html {html}: is a directory; give a file name such as report.html")


def _run(build, fmt, output, junit, fail_on, verbose, html: Optional[Path] = None) -> None:
    """Run a command body; map errors to exit codes with one line on stderr, never a traceback."""
    try:
        _check_html(html)
        report = build()
    except UsageError as err:
        typer.echo(f"nn-doctor: error: {err}", err=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        typer.echo("nn-doctor: interrupted before anything could be reported", err=True)
        raise typer.Exit(130)
    try:
        _emit(report, fmt, output, junit, fail_on, verbose, html)
    except UsageError as err:
        typer.echo(f"nn-doctor: error: {err}", err=True)
        raise typer.Exit(2)


@app.command("check-data")
def check_data(
    data: Optional[str] = typer.Argument(None, help="Data file: .csv .tsv .parquet .npz .npy (or use --config)."),
    target: Optional[str] = typer.Option(None, "--target", help="Target column (npz: the y array's key)."),
    task: Optional[str] = typer.Option(None, "--task", help="classification | binary | regression | multilabel (default: inferred)."),
    config: Optional[str] = CONFIG,
    val: Optional[str] = typer.Option(None, "--val", help="A separate validation file."),
    seed: Optional[int] = SEED,
    fmt: Fmt = FORMAT, output: Optional[Path] = OUTPUT, junit_xml: Optional[Path] = JUNIT,
    html: Optional[Path] = HTML,
    fail_on: FailOn = FAIL_ON, select: Optional[str] = SELECT, ignore: Optional[str] = IGNORE,
    quiet: bool = QUIET, verbose: bool = VERBOSE,
) -> None:
    """Step 1 only: load the data and run every D1xx check. No training."""
    def build():
        from .doctor import check_data as run
        _check_task(task)
        if data is None and config is None:
            raise UsageError("pass a data file (nn-doctor check-data data.csv --target label) or --config SPEC")
        return run(_options(config=config, data=data, target=target, task=task, val=val, seed=seed,
                            select=select, ignore=ignore, quiet=quiet))
    _run(build, fmt, output, junit_xml, fail_on, verbose, html)


def _check_task(task: Optional[str]) -> None:
    if task is not None and task not in ("classification", "binary", "regression", "multilabel"):
        raise UsageError(f"--task: expected classification, binary, regression or multilabel, got {task!r}")


@app.command("probe-lr")
def probe_lr(
    config: str = typer.Option(..., "--config", "-c", help="The YAML spec."),
    max_lr: float = typer.Option(0.1, "--max-lr", help="Start of the sweep (seeds/003: 0.1)."),
    min_lr: float = typer.Option(1e-4, "--min-lr", help="End of the sweep (seeds/003: 0.0001)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps per probe (default 150)."),
    lr: Optional[float] = LR, batch_size: Optional[int] = BATCH, data: Optional[str] = DATA,
    target: Optional[str] = TARGET, device: Optional[str] = DEVICE, seed: Optional[int] = SEED,
    budget: Optional[float] = BUDGET, executor: str = EXECUTOR, ray_address: Optional[str] = RAY_ADDRESS,
    gpus_per_probe: Optional[float] = GPUS_PER_PROBE,
    fmt: Fmt = FORMAT, output: Optional[Path] = OUTPUT, junit_xml: Optional[Path] = JUNIT,
    html: Optional[Path] = HTML,
    fail_on: FailOn = FAIL_ON, select: Optional[str] = SELECT, ignore: Optional[str] = IGNORE,
    quiet: bool = QUIET, verbose: bool = VERBOSE,
) -> None:
    """Step 3's lr probe: short trainings from 0.1 down to 1e-4, then a bisection to the edge of stability."""
    def build():
        from .doctor import probe_lr as run
        return run(_options(config=config, max_lr=max_lr, min_lr=min_lr, steps=steps, lr=lr, batch_size=batch_size,
                            data=data, target=target, device=device, seed=seed, budget=budget, executor=executor,
                            ray_address=ray_address, gpus_per_probe=gpus_per_probe, select=select, ignore=ignore,
                            quiet=quiet))
    _run(build, fmt, output, junit_xml, fail_on, verbose, html)


@app.command("probe-init")
def probe_init(
    config: str = typer.Option(..., "--config", "-c", help="The YAML spec."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps per probe (default 150)."),
    lr: Optional[float] = LR, batch_size: Optional[int] = BATCH, data: Optional[str] = DATA,
    target: Optional[str] = TARGET, device: Optional[str] = DEVICE, seed: Optional[int] = SEED,
    budget: Optional[float] = BUDGET, executor: str = EXECUTOR, ray_address: Optional[str] = RAY_ADDRESS,
    gpus_per_probe: Optional[float] = GPUS_PER_PROBE,
    fmt: Fmt = FORMAT, output: Optional[Path] = OUTPUT, junit_xml: Optional[Path] = JUNIT,
    html: Optional[Path] = HTML,
    fail_on: FailOn = FAIL_ON, select: Optional[str] = SELECT, ignore: Optional[str] = IGNORE,
    quiet: bool = QUIET, verbose: bool = VERBOSE,
) -> None:
    """Step 2's init probe: the configured init and default/he/xavier/lecun/orthogonal, with per-layer stats."""
    def build():
        from .doctor import probe_init as run
        return run(_options(config=config, steps=steps, lr=lr, batch_size=batch_size, data=data, target=target,
                            device=device, seed=seed, budget=budget, executor=executor, ray_address=ray_address,
                            gpus_per_probe=gpus_per_probe, select=select, ignore=ignore, quiet=quiet))
    _run(build, fmt, output, junit_xml, fail_on, verbose, html)


@app.command("full-report")
def full_report(
    config: Optional[str] = typer.Option(None, "--config", "-c", help="The YAML spec (default: the bundled example)."),
    write_fixed: Optional[str] = typer.Option(None, "--write-fixed", help="Write the spec with the verified fixes applied."),
    lr: Optional[float] = LR, batch_size: Optional[int] = BATCH, data: Optional[str] = DATA,
    target: Optional[str] = TARGET, device: Optional[str] = DEVICE, seed: Optional[int] = SEED,
    budget: Optional[float] = BUDGET, executor: str = EXECUTOR, ray_address: Optional[str] = RAY_ADDRESS,
    gpus_per_probe: Optional[float] = GPUS_PER_PROBE,
    fmt: Fmt = FORMAT, output: Optional[Path] = OUTPUT, junit_xml: Optional[Path] = JUNIT,
    html: Optional[Path] = HTML,
    fail_on: FailOn = FAIL_ON, select: Optional[str] = SELECT, ignore: Optional[str] = IGNORE,
    quiet: bool = QUIET, verbose: bool = VERBOSE,
) -> None:
    """All five steps in order, the probes they need, verified fixes and the checklist verdict."""
    def build():
        from .doctor import full_report as run
        example = config is None
        cfg = config or str(Path(__file__).parent / "examples" / "example.yaml")
        return run(_options(config=cfg, write_fixed=write_fixed, lr=lr, batch_size=batch_size, data=data,
                            target=target, device=device, seed=seed, budget=budget, executor=executor,
                            ray_address=ray_address, gpus_per_probe=gpus_per_probe, select=select, ignore=ignore,
                            quiet=quiet), example=example)
    _run(build, fmt, output, junit_xml, fail_on, verbose, html)


@app.command("check-curves")
def check_curves(
    log: str = typer.Argument(..., help="A training log CSV (Lightning's or Keras' CSVLogger, or any CSV with loss columns)."),
    train_col: Optional[str] = typer.Option(None, "--train-col", help="The training-loss column (default: detected)."),
    val_col: Optional[str] = typer.Option(None, "--val-col", help="The validation-loss column (default: detected)."),
    step_col: Optional[str] = typer.Option(None, "--step-col", help="The step/epoch column (default: detected)."),
    fmt: Fmt = FORMAT, output: Optional[Path] = OUTPUT, junit_xml: Optional[Path] = JUNIT,
    html: Optional[Path] = HTML,
    fail_on: FailOn = FAIL_ON, select: Optional[str] = SELECT, ignore: Optional[str] = IGNORE,
    quiet: bool = QUIET, verbose: bool = VERBOSE,
) -> None:
    """Read the loss curves of a finished run and name their pattern (seeds/003's five train/val patterns)."""
    def build():
        from .catalogue import parse_codes
        from .curve_report import check_curves as run
        return run(log, train_col, val_col, step_col, select=parse_codes(select), ignore=parse_codes(ignore))
    _run(build, fmt, output, junit_xml, fail_on, verbose, html)


@app.command("explain")
def explain(
    code: Optional[str] = typer.Argument(None, help="A finding code (D104) or name (unscaled-features)."),
    all_: bool = typer.Option(False, "--all", help="Every code in the catalogue."),
    fmt: Fmt = typer.Option(Fmt.text, "--format", "-f"),
) -> None:
    """Print the catalogue entry for a finding code."""
    import json
    from .catalogue import CATALOGUE, close_matches, lookup
    if all_:
        entries = list(CATALOGUE.values())
    else:
        if not code:
            typer.echo("nn-doctor: error: pass a code (nn-doctor explain D104) or --all", err=True)
            raise typer.Exit(2)
        e = lookup(code)
        if e is None:
            hint = close_matches(code)
            typer.echo(f"nn-doctor: error: unknown code {code!r}" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                       + "; nn-doctor explain --all lists them", err=True)
            raise typer.Exit(2)
        entries = [e]
    if fmt == Fmt.json:
        typer.echo(json.dumps([{"code": e.code, "name": e.name, "step": int(e.step), "step_name": e.step.label,
                                "severity": e.severity.value, "detects": e.detects, "fix": e.fix, "why": e.why}
                               for e in entries], indent=2, ensure_ascii=False))
        return
    for e in entries:
        typer.echo(f"{e.code} ({e.name})\n  step {int(e.step)}: {e.step.title} · default severity: {e.severity.value}\n"
                   f"  detects: {e.detects}\n  why: {e.why}\n  fix: {e.fix}\n"
                   f"  silence: --ignore {e.code}\n")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("nn-doctor: interrupted\n")
        sys.exit(130)
