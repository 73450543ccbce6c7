"""Generate the small token data sets in sample_data/ (no download is possible, so they are made in code).

    python scripts/make_token_data.py --task sentiment --rows 2000; python scripts/make_token_data.py --task copy   # write sample_data/sentiment_tokens.parquet, copy_tokens.npz
    python scripts/make_token_data.py --task parity --rows 800 --out /tmp/parity.npz

Tasks (all seeded; ids 0 and 1 are reserved: 0 = padding, 1 = a separator/query marker):
- sentiment: a text-classification stand-in. Sequences of 8..24 word ids from a 64-id vocabulary, padded
  with 0 on the right (a Parquet column of integer lists); ids 2..11 are "positive" words, 12..21
  "negative", the rest neutral; the label is 1 when positive words outnumber negative ones (ties redrawn).
- copy: T content tokens (ids 2..2+K-1), then a query id 2+K+q asking for position q; the label is the
  content token at position q (K classes). Solving it needs attention from the query to position q.
- reverse: as copy, but the label is the token at position T-1-q.
- parity: T bits (ids 2 and 3); the label is the parity of the number of 3s.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

PAD, SEP = 0, 1
SENTIMENT_VOCAB = 64
POSITIVE = range(2, 12)
NEGATIVE = range(12, 22)


def sentiment(rows: int, seed: int, min_len: int = 8, max_len: int = 24) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    while len(seqs) < rows:
        n = int(rng.integers(min_len, max_len + 1))
        seq = rng.integers(2, SENTIMENT_VOCAB, size=n)
        pos = int(np.isin(seq, POSITIVE).sum())
        neg = int(np.isin(seq, NEGATIVE).sum())
        if pos == neg:
            continue
        seqs.append(seq.astype(np.int64).tolist())
        labels.append(int(pos > neg))
    return pd.DataFrame({"tokens": seqs, "label": labels})


def lookup(rows: int, seed: int, length: int = 8, symbols: int = 8, reverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    content = rng.integers(0, symbols, size=(rows, length))
    q = rng.integers(0, length, size=rows)
    target = content[np.arange(rows), (length - 1 - q) if reverse else q]
    X = np.concatenate([content + 2, (2 + symbols + q)[:, None]], axis=1)
    return X.astype(np.int64), target.astype(np.int64)


def parity(rows: int, seed: int, length: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(rows, length))
    return (bits + 2).astype(np.int64), (bits.sum(axis=1) % 2).astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["all", "sentiment", "copy", "reverse", "parity"], default="all")
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="output file (one task only)")
    a = ap.parse_args()
    here = Path(__file__).resolve().parent.parent / "sample_data"
    tasks = ["sentiment", "copy"] if a.task == "all" else [a.task]
    for task in tasks:
        if task == "sentiment":
            out = a.out or here / "sentiment_tokens.parquet"
            sentiment(a.rows, a.seed).to_parquet(out, index=False)
        else:
            X, y = parity(a.rows, a.seed) if task == "parity" else lookup(a.rows, a.seed, reverse=task == "reverse")
            out = a.out or here / f"{task}_tokens.npz"
            np.savez_compressed(out, X=X, y=y)
        print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
