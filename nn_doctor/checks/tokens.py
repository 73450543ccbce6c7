"""Step 1 checks for token data (integer sequences, X of shape (N, T)): D115-D118.

They run when the data are token sequences (the model starts with an embedding, or data.vocab_size /
data.pad_id is set; data.TokenInfo) and read the Dataset as loaded: ids, the declared vocabulary and
padding id, and the embedding's own vocab and padding_idx. numpy only, no torch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..report import Finding
from . import check

TOKEN_CODES = ["D115", "D116", "D117", "D118"]
# numeric-feature statistics that do not apply to token ids (ids are categories, not magnitudes): scale (D104),
# constant positions (D105, e.g. a position that is always padding), outliers (D106), per-position shift (D113)
NOT_FOR_TOKENS = {"D104", "D105", "D106", "D113"}

PAD_SHARE_HIGH = 0.5        # D116: over half of all positions are padding: most of the compute is spent on it
PAD_GUESS_ROWS = 0.5        # D116: with no pad id declared, an id that ends >= 50% of the rows in runs of >= 2 ...
PAD_GUESS_LENGTHS = 3       # ... of >= 3 different lengths reads as padding
LENGTH_SPREAD = 4.0         # D117: the longest sequence >= 4x the median length (a padded batch is >= 75% padding
                            # for the typical row)
MIN_SEQUENCES = 20          # D117/D118: fewer sequences say nothing about a distribution
CONSTANT_SHARE = 0.01       # D118: >= 1% of the rows are one id repeated (the same floor as D110's duplicates) ...
NEAR_DUP_SHARE = 0.10       # D118: >= 10% of the rows have a near-duplicate (one token apart, not identical) ...
CHANCE_FACTOR = 3.0         # ... and >= 3x the share in the same data with each position shuffled independently
                            # (what per-position id frequencies alone give: random bits of length 10 have many
                            # one-apart neighbours, and parity tasks are built on them)
SAMPLE_ROWS = 20_000        # D118 reads at most this many rows (a seeded sample)
SEED = 0
MAX_EXAMPLES = 5


def _tok(ctx) -> Any:
    return getattr(ctx.ds, "tokens", None)


def _ids(ctx, which: str = "train") -> np.ndarray | None:
    X = ctx.ds.X if which == "train" else ctx.ds.X_val
    if X is None:
        return None
    X = np.asarray(X)
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
        return None
    return X


def _pad_id(tok, X: np.ndarray) -> tuple[int | None, str]:
    """The padding id and where it comes from: data.pad_id, the embedding's padding_idx, or a guess."""
    if tok.pad_id is not None:
        return tok.pad_id, "data.pad_id"
    if tok.model_padding_idx is not None:
        return tok.model_padding_idx, "the embedding's padding_idx"
    if len(X) < MIN_SEQUENCES or X.shape[1] < 2:
        return None, ""
    last = X[:, -1]
    vals, counts = np.unique(last, return_counts=True)
    cand = vals[np.argmax(counts)]
    rows = last == cand
    if rows.mean() < PAD_GUESS_ROWS:
        return None, ""
    runs = _trailing_run(X[rows], cand)
    if (runs >= 2).mean() >= PAD_GUESS_ROWS and len(np.unique(runs)) >= PAD_GUESS_LENGTHS:
        return int(cand), "guessed: it ends most rows in runs of varying length"
    return None, ""


def _trailing_run(X: np.ndarray, pad: int) -> np.ndarray:
    """Per row, how many positions at the end hold `pad`."""
    is_pad = X == pad
    # length of the run of True at the end: position of the last non-pad + 1 -> T - that
    not_pad = ~is_pad
    T = X.shape[1]
    last_real = np.where(not_pad.any(axis=1), T - 1 - np.argmax(not_pad[:, ::-1], axis=1), -1)
    return T - 1 - last_real


@check("D115", needs=("data",))
def check_token_id_out_of_range(ctx) -> Finding | None:
    """D115 token-id-out-of-range: ids outside 0..vocab-1 (or not integers); the probes cannot start."""
    tok = _tok(ctx)
    if tok is None:
        return None
    bad_parts, ev = [], {}
    limit = tok.limit
    for which in ("train", "validation"):
        X = _ids(ctx, "train" if which == "train" else "val")
        if X is None:
            continue
        if not np.issubdtype(X.dtype, np.integer) and not np.all(np.isfinite(X) & (X == np.round(X))):
            nonint = int((~(np.isfinite(X) & (X == np.round(X)))).sum())
            bad_parts.append(f"{nonint} non-integer ids in the {which} data")
            ev[which] = {"non_integer": nonint}
            continue
        low = X < 0
        high = X >= limit if limit is not None else np.zeros_like(low)
        bad = low | high
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            ev[which] = {"ids_below_0": int(low.sum()), "ids_at_or_above_limit": int(high.sum()),
                         "rows": int(len(rows)), "example_rows": rows[:MAX_EXAMPLES].tolist(),
                         "min_id": int(X.min()), "max_id": int(X.max())}
            bad_parts.append(f"{int(bad.sum())} ids in {len(rows)} {which} rows (ids {int(X.min())}..{int(X.max())})")
    if not bad_parts:
        return None
    src = "data.vocab_size" if tok.vocab_declared and (tok.model_vocab is None or tok.vocab_size <= tok.model_vocab) \
        else "the embedding's vocab"
    ev.update({"limit": limit, "limit_from": src, "vocab_size": tok.vocab_size, "embedding_vocab": tok.model_vocab})
    max_id = max((e.get("max_id", -1) for e in ev.values() if isinstance(e, dict)), default=-1)
    if limit is not None and max_id >= limit:
        fix = (f"set the embedding's vocab to at least {max_id + 1} (model.layers[0].vocab: {max_id + 1})"
               + (f" and data.vocab_size to {max_id + 1}" if tok.vocab_declared else "")
               + ", or map unknown ids to an <unk> id below the vocabulary")
    else:
        fix = "token ids must be integers >= 0: check the tokenizer's output"
    return Finding("D115", f"token ids outside 0..{(limit or 0) - 1} ({src}): " + "; ".join(bad_parts)
                   + "; the embedding cannot look them up, so no probe can run on these data", fix, ev)


@check("D116", needs=("data",))
def check_padding_unmasked(ctx) -> Finding | None:
    """D116 padding-unmasked: padding the model cannot mask, or sequences that are mostly padding."""
    tok = _tok(ctx)
    X = _ids(ctx)
    if tok is None or X is None or not len(X):
        return None
    pad, source = _pad_id(tok, X.astype(np.int64, copy=False))
    if pad is None:
        return None
    runs = _trailing_run(X, pad)
    share_rows = runs / X.shape[1]
    share = float((X == pad).mean())
    padded_rows = float((runs > 0).mean())
    ev: dict[str, Any] = {"pad_id": pad, "pad_id_from": source, "padding_share": share,
                          "rows_with_padding": padded_rows, "max_row_share": float(share_rows.max()),
                          "embedding_padding_idx": tok.model_padding_idx, "sequence_length": int(X.shape[1])}
    if padded_rows == 0:
        return None
    unmasked = tok.model_vocab is not None and tok.model_padding_idx != pad
    if unmasked:
        how = "has no padding_idx" if tok.model_padding_idx is None else f"masks id {tok.model_padding_idx} instead"
        patch = None
        spec_layers = getattr(ctx, "spec_layers", None)
        if spec_layers:
            patch = {"model.layers": [{**spec_layers[0], "padding_idx": pad}] + spec_layers[1:]}
        f = Finding("D116", f"{padded_rows:.0%} of the sequences are padded with id {pad} ({source}; {share:.0%} of "
                    f"all positions), but the embedding {how}: attention and pooling read the padding as tokens",
                    f"set padding_idx: {pad} on the embedding (model.layers[0]) so the model masks it", ev)
        f.patch = patch
        return f
    if share > PAD_SHARE_HIGH:
        return Finding("D116", f"{share:.0%} of all positions are padding (id {pad}): most of every batch's "
                       f"compute is spent on it (masked, so it is only waste)",
                       "truncate the longest sequences or pad per batch (bucket by length)", ev)
    return None


@check("D117", needs=("data",))
def check_sequence_length_spread(ctx) -> Finding | None:
    """D117 sequence-length-spread: the longest sequence many times the median one."""
    tok = _tok(ctx)
    X = _ids(ctx)
    if tok is None or X is None or len(X) < MIN_SEQUENCES:
        return None
    pad, source = _pad_id(tok, X.astype(np.int64, copy=False))
    if pad is None:
        return None
    lengths = X.shape[1] - _trailing_run(X, pad)
    med = float(np.median(lengths))
    longest = int(lengths.max())
    if med <= 0 or longest < LENGTH_SPREAD * med:
        return None
    ev = {"median_length": med, "max_length": longest, "min_length": int(lengths.min()),
          "p95_length": float(np.percentile(lengths, 95)), "pad_id": pad, "ratio": longest / med}
    return Finding("D117", f"sequence lengths spread widely: median {med:g}, longest {longest} ({longest / med:.1f}x, "
                   f">= {LENGTH_SPREAD:g}x): padded to the longest, a typical row is "
                   f"{1 - med / longest:.0%} padding", f"truncate at ~{int(np.percentile(lengths, 95))} tokens "
                   f"(the 95th percentile) or bucket the batches by length", ev)


def _near_dup_share(X: np.ndarray) -> tuple[float, np.ndarray]:
    """Share of rows with another row exactly one position apart (not identical), and those rows."""
    n, T = X.shape
    rows = np.ascontiguousarray(X.astype(np.int64))
    full = {r.tobytes() for r in rows}
    _ = full
    hit = np.zeros(n, dtype=bool)
    # rows identical up to position j: group by the row with column j blanked out
    for j in range(T):
        blank = rows.copy()
        blank[:, j] = -1
        keys = np.ascontiguousarray(blank).view(np.dtype((np.void, blank.dtype.itemsize * T))).ravel()
        _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
        multi = counts[inv] > 1
        if not multi.any():
            continue
        # within a group, rows that differ at j (identical rows are D110's duplicates)
        col = rows[:, j]
        order = np.lexsort((col, inv))
        g, c = inv[order], col[order]
        distinct_in_group = np.zeros(len(counts), dtype=np.int64)
        first = np.r_[True, (g[1:] != g[:-1]) | (c[1:] != c[:-1])]
        np.add.at(distinct_in_group, g[first], 1)
        hit |= multi & (distinct_in_group[inv] > 1)
    return float(hit.mean()), np.flatnonzero(hit)


@check("D118", needs=("data",))
def check_degenerate_sequences(ctx) -> Finding | None:
    """D118 degenerate-sequences: constant sequences, or near-duplicates far above chance."""
    tok = _tok(ctx)
    X = _ids(ctx)
    if tok is None or X is None or len(X) < MIN_SEQUENCES or X.shape[1] < 2:
        return None
    X = X.astype(np.int64)
    rng = np.random.default_rng(SEED)
    if len(X) > SAMPLE_ROWS:
        X = X[np.sort(rng.choice(len(X), SAMPLE_ROWS, replace=False))]
    pad, _ = _pad_id(tok, X)
    lengths = X.shape[1] - (_trailing_run(X, pad) if pad is not None else 0)
    shuffled = np.column_stack([rng.permutation(X[:, j]) for j in range(X.shape[1])])

    def constant(A: np.ndarray, lens) -> np.ndarray:
        same = (A == A[:, :1])
        if pad is not None:
            same |= A == pad
        return same.all(axis=1) & (np.asarray(lens) >= 2)

    const = constant(X, lengths)
    const_share = float(const.mean())
    slens = X.shape[1] - (_trailing_run(shuffled, pad) if pad is not None else 0)
    const_null = float(constant(shuffled, slens).mean())
    near, near_rows = _near_dup_share(X)
    near_null, _ = _near_dup_share(shuffled)
    parts, ev = [], {"rows_checked": int(len(X))}
    if const_share >= CONSTANT_SHARE and const_share >= CHANCE_FACTOR * const_null:
        ex = np.flatnonzero(const)[:MAX_EXAMPLES].tolist()
        parts.append(f"{const_share:.1%} of the rows are one id repeated (e.g. rows {ex})")
        ev["constant"] = {"share": const_share, "shuffled_share": const_null, "example_rows": ex}
    if near >= NEAR_DUP_SHARE and near >= CHANCE_FACTOR * max(near_null, 1.0 / len(X)):
        parts.append(f"{near:.0%} of the rows have a near-duplicate one token apart ({near_null:.1%} with the "
                     f"positions shuffled)")
        ev["near_duplicates"] = {"share": near, "shuffled_share": near_null,
                                 "example_rows": near_rows[:MAX_EXAMPLES].tolist()}
    if not parts:
        return None
    return Finding("D118", "degenerate token sequences: " + "; ".join(parts),
                   "deduplicate the near-copies and drop constant sequences; check the tokenizer and how the "
                   "sequences were produced", ev)
