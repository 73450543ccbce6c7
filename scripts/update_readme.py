"""Refresh the command output shown in README.md by running the commands for real.

Each block in the README between `<!-- run: COMMAND -->` and `<!-- end -->` is replaced by a fenced
block holding `$ COMMAND` and what it printed (stdout; the exit code is appended). Run from the
repository root with the package installed:

    python scripts/update_readme.py
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- run: (?P<cmd>.+?) -->\n)(?P<body>.*?)(<!-- end -->)", re.S)
MAX_LINES = 80


def run(cmd: str) -> str:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="110", TERM="dumb")
    proc = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout.rstrip("\n")
    if proc.stderr.strip() and proc.returncode == 2:
        out = (out + "\n" if out else "") + proc.stderr.rstrip("\n")
    lines = out.splitlines()
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES] + [f"... ({len(lines) - MAX_LINES} more lines)"]
    return "\n".join(lines) + f"\n# exit code {proc.returncode}"


def main() -> int:
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")

    def replace(m: re.Match) -> str:
        cmd = m.group("cmd")
        print(f"running: {cmd}", file=sys.stderr)
        return f"{m.group(1)}```text\n$ {cmd}\n{run(cmd)}\n```\n{m.group(4)}"

    path.write_text(BLOCK.sub(replace, text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
