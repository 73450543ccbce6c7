"""Numbers for people: the one set of formatters every message, table and chart uses.

Rules (issue 13, "numbers read well"):
- three significant digits in sentences, four in tables; integers stay integers, thousands get separators
  ("1,390"); a missing value is "n/a"
  in a sentence and "-" in a table cell;
- a percentage never goes past 1,000 %: beyond that a change or a ratio is a factor ("×1.5e+32"), and a
  loss that blew up says so ("blew up to 1.03e+27");
- a learning rate keeps the short exponent form of the lr tables ("3.2e-03") or plain `g` form in prose.
No numpy or torch import: `--help` stays fast, and numpy scalars work through float()/int().
"""
from __future__ import annotations

import math
from typing import Any, Iterable

PERCENT_LIMIT = 10.0    # a ratio above 10 (+900 %, "1,000 % of the start") is written as a factor instead
BLEW_UP = 1e3           # a loss that ended above 1,000x its start "blew up" (the lr probe calls 4x diverged;
                        # 1,000x is far past any noise and reads better as a magnitude than as a ratio)
EXACT_INT_LIMIT = 1e6   # integer-valued floats below this print as integers ("120", not "120.0")


def _as_float(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def finite(x: Any) -> bool:
    v = _as_float(x)
    return v is not None and math.isfinite(v)


def num(x: Any, digits: int = 3, missing: str = "n/a") -> str:
    """A number in a sentence: `digits` significant digits, integers as integers, 'nan'/'inf' spelled out."""
    if x is None or isinstance(x, bool):
        return missing if x is None else str(x)
    if isinstance(x, int) or (hasattr(x, "dtype") and getattr(x.dtype, "kind", "") in "iu"):
        return str(int(x))
    v = _as_float(x)
    if v is None:
        return str(x)
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if v == int(v) and abs(v) < EXACT_INT_LIMIT:
        return str(int(v))
    if 1e3 <= abs(v) < EXACT_INT_LIMIT:   # '1,390', not '1.39e+03'
        return f"{float(f'{v:.{digits}g}'):,.0f}"
    return f"{v:.{digits}g}"


def cell(x: Any, digits: int = 4) -> str:
    """A number in a table cell: four significant digits, '-' when missing or non-finite."""
    return num(x, digits, missing="-") if finite(x) else "-"


def lr(x: Any) -> str:
    """A learning rate in a table: 0.1 -> '1e-01', 0.0032 -> '3.2e-03' (two significant digits)."""
    if not finite(x):
        return "-"
    mantissa, exponent = f"{float(x):.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


def lr_plain(x: Any) -> str:
    """A learning rate in a sentence: 0.001, 3.2e-05."""
    return "n/a" if not finite(x) else f"{float(x):.2g}"


def factor(ratio: Any) -> str:
    """A ratio as a factor: '×50', '×1.5e+32'."""
    return f"×{num(ratio)}" if finite(ratio) else "×n/a"


def change(rel: Any) -> str:
    """A relative change (after / before - 1): '-82%', '+400%', and '×1.2e+10' once past +1,000 %."""
    if not finite(rel):
        return "n/a"
    rel = float(rel)
    if 1 + rel > PERCENT_LIMIT:
        return factor(1 + rel)
    return f"{rel:+.0%}"


def share(part: Any, whole: Any) -> str:
    """part as a percentage of whole ('4% of the start'); a factor past 1,000 % ('×1.5e+32 the start')."""
    p, w = _as_float(part), _as_float(whole)
    if p is None or w is None or w == 0 or not math.isfinite(p) or not math.isfinite(w):
        return "n/a"
    r = p / w
    if abs(r) > PERCENT_LIMIT:
        return factor(r)
    return f"{r:.1%}" if 0 < abs(r) < 0.01 else f"{r:.0%}"


def fraction(x: Any) -> str:
    """A fraction 0..1 as a percentage: 0.5 -> '50%', 0.004 -> '0.4%'."""
    if not finite(x):
        return "n/a"
    x = float(x)
    return f"{x:.1%}" if 0 < abs(x) < 0.01 else f"{x:.0%}"


def loss_path(before: Any, after: Any) -> str:
    """'19.1 → 1.37'; a loss that blew up says so: '19.1 → blew up to 1.03e+27'; '19.1 → diverged' (non-finite)."""
    return f"{_loss(before, None)} → {_loss(after, before)}"


def before_after(before: Any, after: Any, digits: int = 3) -> str:
    """Two results of the same measurement: '1.09 → 0.0382'; a side more than 1,000x the other blew up:
    'blew up to 1.03e+27 → 0.174'."""
    return f"{_loss(before, after, digits)} → {_loss(after, before, digits)}"


def _loss(x: Any, start: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if not finite(x):
        return "diverged (non-finite)"
    if finite(start) and abs(float(start)) > 0 and abs(float(x)) > BLEW_UP * abs(float(start)):
        return f"blew up to {num(x, digits)}"
    return num(x, digits)


def gib(n_bytes: Any) -> str:
    """Memory: '1.25 GiB' from 128 MiB up, else '12.3 MiB'."""
    if not finite(n_bytes):
        return "-"
    n = float(n_bytes)
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def duration(seconds: Any) -> str:
    """'4.2 s', '3.5 min', '2.1 h'."""
    if not finite(seconds):
        return "n/a"
    s = float(seconds)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def step_time(seconds: Any) -> str:
    """A step's duration: '0.73 ms', '211 ms', '1.5 s'."""
    if not finite(seconds):
        return "n/a"
    s = float(seconds)
    return f"{num(s * 1e3)} ms" if s < 1 else f"{num(s)} s"


def count(n: Any) -> str:
    """A large count with thousands separators: 43,769."""
    return f"{float(n):,.0f}" if finite(n) else "n/a"


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 feature', '3 features'."""
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"


def listing(values: Iterable[Any], n: int = 6, quote_strings: bool = True) -> str:
    """'[1, 2.5, 'a', ...]' — at most n items, numbers through num()."""
    values = list(values)
    shown = ", ".join((repr(v) if quote_strings else v) if isinstance(v, str)
                      else num(v) if _as_float(v) is not None and not isinstance(v, bool) else str(v)
                      for v in values[:n])
    return "[" + shown + (", ..." if len(values) > n else "") + "]"


def names(items: Iterable[str], n: int = 6) -> str:
    """'a, b, c, ...' — at most n names."""
    items = list(items)
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")
