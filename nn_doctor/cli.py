"""The `nn-doctor` command line (typer). Thin: parse options, call doctor.py, render, pick the exit code.

Imports stay light at module level: `--help` and `--version` never import torch or pandas.
Exit codes (report.md): 0 no finding at/above --fail-on, 1 some, 2 usage error / unusable input,
130 interrupted.
"""
from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
import typer.core

from . import __version__
from .errors import UsageError

class _PlainFlags:
    """Help without a type beside on/off flags: typer prints `--quiet  <bool>`, click's style is `--quiet`."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""
        return params


class _Command(_PlainFlags, typer.core.TyperCommand):
    pass


class _Group(_PlainFlags, typer.core.TyperGroup):
    command_class = _Command


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=_Group,
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
RAY_ADDRESS = typer.Option(None, "--ray-address", help="A running Ray cluster's head, HOST:PORT (default: $RAY_ADDRESS, else a new local Ray); token auth: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN.")
GPUS_PER_PROBE = typer.Option(None, "--gpus-per-probe", help="GPUs each Ray probe task asks for (fractions share a GPU).")


def _check_cluster(executor: str, ray_address: Optional[str]) -> None:
    """--executor ray on a cluster that cannot be used fails first, in seconds, before pandas and torch load."""
    if executor == "ray":
        from .ray_executor import check_cluster
        check_cluster(ray_address)


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


# An error line is cut to this many characters: each message names its key or file and shortens the
# values it echoes; this is the last guard against a path or torch message of thousands of characters.
MAX_ERROR_LINE = 600


def _error(err: BaseException | str) -> None:
    """One line on stderr: 'nn-doctor: error: ...', newlines folded, cut to MAX_ERROR_LINE."""
    text = " ".join(str(err).split())
    if len(text) > MAX_ERROR_LINE:
        text = text[:MAX_ERROR_LINE - 1] + "…"
    typer.echo(f"nn-doctor: error: {text}", err=True)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except (OSError, ValueError):
        return False


def check_output_paths(outputs: dict[str, Optional[str | Path]], inputs: tuple[Optional[str], ...] = ()) -> None:
    """Every file the command will write (option -> path) can be written, before any work is done:
    not a folder, its folder exists and is writable, an existing file is writable, two options do not
    name the same file, and no output overwrites an input (the spec or the data). UsageError otherwise."""
    seen: dict[Path, str] = {}
    for option, raw in outputs.items():
        if raw is None or raw == "":
            if raw == "":
                raise UsageError(f"{option}: an empty path")
            continue
        path = Path(raw)
        shown = str(raw) if len(str(raw)) <= 120 else str(raw)[:119] + "…"
        try:
            is_dir, exists = path.is_dir(), path.exists()
            parent = path.parent if str(path.parent) else Path(".")
            parent_ok = parent.is_dir()
        except (OSError, ValueError) as err:    # a name too long, a NUL byte
            raise UsageError(f"{option} {shown}: not a usable path ({getattr(err, 'strerror', None) or err})") \
                from None
        if is_dir:
            raise UsageError(f"{option} {shown}: is a folder; give a file name (e.g. {shown.rstrip('/')}/report.txt)")
        if not parent_ok:
            raise UsageError(f"{option} {shown}: the folder {parent} does not exist")
        if exists and not path.is_file():
            raise UsageError(f"{option} {shown}: not a regular file")
        for inp in inputs:
            if inp and _same_file(path, Path(inp)):
                raise UsageError(f"{option} {shown}: is an input of this command; writing it would overwrite it")
        key = path.resolve()
        if key in seen:
            raise UsageError(f"{option} and {seen[key]} name the same file {shown}")
        seen[key] = option
        _try_open(option, shown, path, exists)


def _try_open(option: str, shown: str, path: Path, exists: bool) -> None:
    """Open the file as the command later will (append: an existing file is left as it is; a new one is
    removed again). os.access alone is not enough: it says yes to root on a read-only mount or in /proc."""
    try:
        with open(path, "a" if exists else "x", encoding="utf-8"):
            pass
        if not exists:
            path.unlink()
    except OSError as err:
        raise UsageError(f"{option} {shown}: cannot write there: {err.strerror}") from None


MAX_SEED = 2**32 - 1   # spec.MAX_SEED (not imported here: --help stays light)


def _check_seed(seed: Optional[int]) -> None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        shown = str(seed) if abs(seed) < 10**30 else f"an integer of {len(str(abs(seed)))} digits"
        raise UsageError(f"--seed: expected a seed in 0..{MAX_SEED} (2**32-1), got {shown}")


# --steps: a probe is ~150 steps; a million is hours of training on any data, surely a typo.
MAX_PROBE_STEPS = 1_000_000


def _check_numbers(**values: Optional[float]) -> None:
    """Numeric options: finite, and positive where they must be (an infinite --max-lr would make the lr
    decades endless; a negative --budget or --steps would skip every probe and read as a pass)."""
    import math
    for name, v in values.items():
        if v is None:
            continue
        flag = "--" + name.replace("_", "-")
        if not math.isfinite(v):
            raise UsageError(f"{flag}: expected a finite number, got {v}")
        if name == "gpus_per_probe":
            if v < 0:
                raise UsageError(f"{flag}: expected a number >= 0, got {v:g}")
        elif v <= 0:
            raise UsageError(f"{flag}: expected a positive number, got {v:g}")
        if name == "steps" and v > MAX_PROBE_STEPS:
            raise UsageError(f"{flag}: expected at most {MAX_PROBE_STEPS:,} steps per probe, got {v:g}")


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


def _run(build, fmt, output, junit, fail_on, verbose, html: Optional[Path] = None,
         outputs: Optional[dict] = None, inputs: tuple[Optional[str], ...] = ()) -> None:
    """Run a command body; map errors to exit codes with one line on stderr, never a traceback.
    Every file the command writes (-o, --junit-xml, --html and `outputs`, option -> path) is checked
    before the body runs."""
    try:
        _check_html(html)
        check_output_paths({"-o": output, "--junit-xml": junit, "--html": html, **(outputs or {})}, inputs)
        report = build()
    except UsageError as err:
        _error(err)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        typer.echo("nn-doctor: interrupted before anything could be reported", err=True)
        raise typer.Exit(130)
    try:
        _emit(report, fmt, output, junit, fail_on, verbose, html)
    except UsageError as err:
        _error(err)
        raise typer.Exit(2)


@app.command(cls=_Command, name="check-data")
def check_data(
    data: Optional[str] = typer.Argument(None, help="Data file: .csv .tsv .parquet .npz .npy (or use --config)."),
    data_opt: Optional[str] = typer.Option(None, "--data", help="The data file, as the argument (overrides data.path with --config)."),
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
    def build(data=data):
        from .doctor import check_data as run
        _check_task(task)
        if data is not None and data_opt is not None and data != data_opt:
            raise UsageError(f"two data files given ({data} and --data {data_opt}); pass one")
        data = data if data is not None else data_opt
        _check_seed(seed)
        if data is None and config is None:
            raise UsageError("pass a data file (nn-doctor check-data data.csv --target label) or --config SPEC")
        return run(_options(config=config, data=data, target=target, task=task, val=val, seed=seed,
                            select=select, ignore=ignore, quiet=quiet))
    _run(build, fmt, output, junit_xml, fail_on, verbose, html, inputs=(config, data, val))


def _check_task(task: Optional[str]) -> None:
    if task is not None and task not in ("classification", "binary", "regression", "multilabel"):
        raise UsageError(f"--task: expected classification, binary, regression or multilabel, got {task!r}")


@app.command(cls=_Command, name="probe-lr")
def probe_lr(
    config: str = typer.Option(..., "--config", "-c", help="The YAML spec."),
    max_lr: float = typer.Option(0.1, "--max-lr", help="Start of the sweep (the usual first try, 0.1)."),
    min_lr: float = typer.Option(1e-4, "--min-lr", help="End of the sweep."),
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
        _check_cluster(executor, ray_address)
        from .doctor import probe_lr as run
        _check_seed(seed)
        _check_numbers(max_lr=max_lr, min_lr=min_lr, steps=steps, budget=budget, gpus_per_probe=gpus_per_probe)
        return run(_options(config=config, max_lr=max_lr, min_lr=min_lr, steps=steps, lr=lr, batch_size=batch_size,
                            data=data, target=target, device=device, seed=seed, budget=budget, executor=executor,
                            ray_address=ray_address, gpus_per_probe=gpus_per_probe, select=select, ignore=ignore,
                            quiet=quiet))
    _run(build, fmt, output, junit_xml, fail_on, verbose, html, inputs=(config, data))


@app.command(cls=_Command, name="probe-init")
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
        _check_cluster(executor, ray_address)
        from .doctor import probe_init as run
        _check_seed(seed)
        _check_numbers(steps=steps, budget=budget, gpus_per_probe=gpus_per_probe)
        return run(_options(config=config, steps=steps, lr=lr, batch_size=batch_size, data=data, target=target,
                            device=device, seed=seed, budget=budget, executor=executor, ray_address=ray_address,
                            gpus_per_probe=gpus_per_probe, select=select, ignore=ignore, quiet=quiet))
    _run(build, fmt, output, junit_xml, fail_on, verbose, html, inputs=(config, data))


@app.command(cls=_Command, name="full-report")
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
        _check_cluster(executor, ray_address)
        from .doctor import full_report as run
        _check_seed(seed)
        _check_numbers(budget=budget, gpus_per_probe=gpus_per_probe)
        example = config is None
        cfg = config or str(Path(__file__).parent / "examples" / "example.yaml")
        return run(_options(config=cfg, write_fixed=write_fixed, lr=lr, batch_size=batch_size, data=data,
                            target=target, device=device, seed=seed, budget=budget, executor=executor,
                            ray_address=ray_address, gpus_per_probe=gpus_per_probe, select=select, ignore=ignore,
                            quiet=quiet), example=example)
    _run(build, fmt, output, junit_xml, fail_on, verbose, html, outputs={"--write-fixed": write_fixed},
         inputs=(config, data))


@app.command(cls=_Command, name="check-curves")
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
    """Read the loss curves of a finished run and name their pattern (one of five: learning, overfitting, data problem, plateau, diverging)."""
    def build():
        from .catalogue import parse_codes
        from .curve_report import check_curves as run
        return run(log, train_col, val_col, step_col, select=parse_codes(select), ignore=parse_codes(ignore))
    _run(build, fmt, output, junit_xml, fail_on, verbose, html, inputs=(log,))


@app.command(cls=_Command, name="explain")
def explain(
    code: Optional[str] = typer.Argument(None, help="A finding code (D104) or name (unscaled-features)."),
    all_: bool = typer.Option(False, "--all", help="Every code in the catalogue."),
    fmt: Fmt = typer.Option(Fmt.text, "--format", "-f", help="text, or json for machines."),
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
    except BrokenPipeError:          # `nn-doctor ... | head`: the reader left; nothing more to say
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        sys.exit(1)
    except (SystemExit, typer.Exit):
        raise
    except BaseException as err:     # the last resort: real cases are handled where they arise
        _last_resort(err)


def _last_resort(err: BaseException) -> None:
    """An error no handler expected: one line naming it and where it was raised, a request to report
    it, exit 2. Never a traceback (set NN_DOCTOR_TRACEBACK=1 to see one when reporting)."""
    import traceback
    if os.environ.get("NN_DOCTOR_TRACEBACK"):
        traceback.print_exception(err)
    frames = traceback.extract_tb(err.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    msg = " ".join(str(err).split())[:200] if not isinstance(err, RecursionError) else "maximum recursion depth exceeded"
    typer.echo(f"nn-doctor: internal error: {type(err).__name__}: {msg}{where}; please report it "
               f"(NN_DOCTOR_TRACEBACK=1 shows the traceback)", err=True)
    sys.exit(2)
