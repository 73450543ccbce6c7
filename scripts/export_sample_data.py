"""Export the small real datasets that ship with scikit-learn into sample_data/.

Run once by a developer (scikit-learn is a dev-only dependency, never a runtime one):

    pip install scikit-learn && python scripts/export_sample_data.py

The files it writes are committed; nn-doctor itself never imports scikit-learn.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn import datasets

OUT = Path(__file__).resolve().parent.parent / "sample_data"


def export_table(name: str, bunch, target: str) -> None:
    frame = bunch.frame.copy()
    frame = frame.rename(columns={"target": target})
    frame.to_csv(OUT / f"{name}.csv", index=False, float_format="%.6g")
    print(f"{name}.csv: {frame.shape[0]} rows x {frame.shape[1]} columns")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    export_table("wine", datasets.load_wine(as_frame=True), "label")
    export_table("breast_cancer", datasets.load_breast_cancer(as_frame=True), "label")
    export_table("diabetes", datasets.load_diabetes(as_frame=True, scaled=False), "progression")
    export_table("iris", datasets.load_iris(as_frame=True), "label")
    digits = datasets.load_digits()
    # Images keep their shape: (N, 1, 8, 8), pixel intensities 0..16 as uint8.
    X = digits.images.astype(np.uint8)[:, None, :, :]
    y = digits.target.astype(np.int64)
    np.savez_compressed(OUT / "digits.npz", X=X, y=y)
    print(f"digits.npz: X {X.shape} {X.dtype}, y {y.shape}")
    # The same digits read as sequences: each image row is one time step of 8 features,
    # (N, T=8, F=8), for the LSTM/GRU examples. Real data, only reshaped.
    np.savez_compressed(OUT / "digits_seq.npz", X=digits.images.astype(np.float32), y=y)
    print(f"digits_seq.npz: X {digits.images.shape}, y {y.shape}")


if __name__ == "__main__":
    main()
