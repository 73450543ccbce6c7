"""The README runs: every bash and python block is executed, every command whose output the README shows
is run again, and every YAML block is checked against what it stands for.

Block kinds (the fence's language decides):
  ```text    output; never run (`<!-- run: CMD -->` ... `<!-- end -->` marks output that
             scripts/update_readme.py regenerates by running CMD: the command is run here, see below)
  ```bash    shell commands, run with bash -e from the repository root; must exit 0
  ```python  a script, run with this Python from the repository root; must exit 0
  ```yaml    a spec (has `model:`) must validate; a CI excerpt must be a verbatim part of docs/ci/
A block right after `<!-- readme-test: skip (REASON) -->` is not run; the reason is required (the set-up
commands, which build a virtual environment and which .ci/run runs anyway, and commands that need a Ray
cluster). Any other fence language fails the test, so a new block cannot slip through unclassified.

The commands of the `<!-- run: -->` blocks run as written, except that the probe commands get a small
`--budget` (SLOW_BUDGET_S) so the file stays near a minute on two cores; for those the exit code and the
header line must match the README, for the others also the finding codes listed, and for explain every line.

`nn-doctor` resolves to this checkout: a shim on PATH runs `python -m nn_doctor` with the repository on
PYTHONPATH.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

SLOW_BUDGET_S = 20         # a cap for the probe commands shown in the README: on an idle 2-core machine they finish
                           # sooner (6-10 s of CPU each, measured); on a loaded one (load 11: 12-45 s wall) it bounds them
BLOCK_TIMEOUT_S = 240      # a block that hangs fails instead of stalling the suite
PROBE_COMMANDS = ("nn-doctor full-report", "nn-doctor probe-lr", "nn-doctor probe-init")

FENCE = re.compile(r"^```(?P<lang>[A-Za-z]*)\n(?P<body>.*?)^```\n", re.S | re.M)
SKIP = re.compile(r"<!-- readme-test: skip \((?P<reason>[^)]+)\) -->\n$")
RUN = re.compile(r"<!-- run: (?P<cmd>.+?) -->\n```text\n\$ (?P=cmd)\n(?P<out>.*?)```\n<!-- end -->", re.S)
CODE_LINE = re.compile(r"^\s+[✗!•] ([DMHGR]\d{3}) ", re.M)


def _blocks() -> list[tuple[int, str, str, str | None]]:
    """(line, language, body, skip reason) of every fenced block."""
    out = []
    for m in FENCE.finditer(README):
        line = README.count("\n", 0, m.start()) + 1
        before = README[max(0, m.start() - 200):m.start()]
        skip = SKIP.search(before)
        out.append((line, m.group("lang"), m.group("body"), skip.group("reason") if skip else None))
    return out


BLOCKS = _blocks()


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    bin_dir = tmp_path_factory.mktemp("bin")
    shim = bin_dir / "nn-doctor"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m nn_doctor "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    e = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                              f"{os.environ.get('PATH', '')}",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHON=sys.executable,
             NO_COLOR="1", COLUMNS="110", TERM="dumb")
    return e


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)


def test_every_block_is_classified():
    kinds = {lang for _, lang, _, _ in BLOCKS}
    assert kinds <= {"text", "bash", "python", "yaml"}, kinds
    assert sum(1 for _, lang, _, skip in BLOCKS if lang in ("bash", "python") and not skip) >= 3
    for line, lang, _, skip in BLOCKS:
        if skip is not None:
            assert skip.strip() and lang != "text", f"README line {line}: a skip needs a reason"


@pytest.mark.parametrize("line, body", [(l, b) for l, lang, b, s in BLOCKS if lang == "bash" and s is None],
                         ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_bash_block_runs(line, body, env):
    res = _run(["bash", "-e", "-c", body], env)
    assert res.returncode == 0, f"README line {line}: exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"


@pytest.mark.parametrize("line, body", [(l, b) for l, lang, b, s in BLOCKS if lang == "python" and s is None],
                         ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_python_block_runs(line, body, env):
    res = _run([sys.executable, "-c", body], env)
    assert res.returncode == 0, f"README line {line}: exit {res.returncode}\n{res.stderr[-3000:]}"


def test_yaml_blocks_are_true():
    from nn_doctor.spec import parse_spec
    ci = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs" / "ci").glob("*.yml")))
    yamls = [(l, b) for l, lang, b, s in BLOCKS if lang == "yaml" and s is None]
    assert yamls
    for line, body in yamls:
        raw = yaml.safe_load(body)
        if isinstance(raw, dict) and "model" in raw:
            parse_spec(raw, ROOT / "configs", f"README line {line}")
        else:
            assert body in ci, f"README line {line}: the CI excerpt is not a verbatim part of docs/ci/*.yml"


RUNS = [(m.group("cmd"), m.group("out")) for m in RUN.finditer(README)]


def test_output_blocks_are_well_formed():
    assert len(RUNS) == README.count("<!-- run: ") >= 5
    for cmd, out in RUNS:
        assert re.search(r"^# exit code \d+$", out, re.M), cmd


@pytest.mark.parametrize("cmd, out", RUNS, ids=[c for c, _ in RUNS])
def test_shown_command_still_gives_the_shown_output(cmd, out, env):
    expected_rc = int(re.search(r"^# exit code (\d+)$", out, re.M).group(1))
    slow = cmd.startswith(PROBE_COMMANDS)
    run_cmd = cmd
    if slow:
        head, sep, tail = cmd.partition(" |")
        run_cmd = f"{head} --budget {SLOW_BUDGET_S}{sep}{tail}"
    res = _run(["bash", "-c", run_cmd], env)
    assert res.returncode == expected_rc, f"{run_cmd}: exit {res.returncode}, README shows {expected_rc}\n" \
                                          f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    shown_first = out.splitlines()[0]
    assert res.stdout.splitlines()[0] == shown_first
    if not slow:
        assert CODE_LINE.findall(res.stdout) == CODE_LINE.findall(out), \
            f"{cmd}: the findings changed; run python scripts/update_readme.py"
    if cmd.startswith("nn-doctor explain"):   # the catalogue text is deterministic: all of it must match
        shown = out.rsplit("# exit code", 1)[0]
        assert res.stdout.rstrip("\n") == shown.rstrip("\n"), "run python scripts/update_readme.py"
