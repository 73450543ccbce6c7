"""Step 1's data checks (D100..D114) on faults seeded into the real sample data.

Each code gets a trigger case and a non-trigger case, run with only that code selected (ruff's
`for_rule`); tables go through CSV files and `load_dataset`, arrays through .npz files. The clean
sample data fire nothing beyond what is true of them, listed explicitly in CLEAN_EXPECTED/RAW_EXPECTED.
The statistics themselves are compared with an independent pandas/numpy computation.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nn_doctor.catalogue import Severity, Step
from nn_doctor.checks import REGISTRY
from nn_doctor import data_stats
from nn_doctor.checks import data as D
from nn_doctor.checks.data import DATA_CODES, DataContext, run_data_checks
from nn_doctor.data import Dataset, load_dataset
from nn_doctor.report import Finding, Report

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TARGET = {"wine": "label", "breast_cancer": "label", "iris": "label", "diabetes": "progression"}


# ---- helpers -------------------------------------------------------------------------------------

def raw(name: str) -> pd.DataFrame:
    return pd.read_csv(SAMPLE / f"{name}.csv")


def standardized(name: str, target_too: bool = False) -> pd.DataFrame:
    """The sample table with every feature (and optionally the target) scaled to mean 0, std 1."""
    df = raw(name)
    cols = [c for c in df.columns if c != TARGET[name] or target_too]
    df[cols] = (df[cols] - df[cols].mean()) / df[cols].std()
    return df


def load_frame(tmp_path: Path, df: pd.DataFrame, target: str = "label", name: str = "data.csv", **kw) -> Dataset:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return load_dataset(path, target, **kw)


def digits() -> tuple[np.ndarray, np.ndarray]:
    with np.load(SAMPLE / "digits.npz") as z:
        return z["X"], z["y"]


def load_arrays(tmp_path: Path, X: np.ndarray, y: np.ndarray, name: str = "arrays.npz", **kw) -> Dataset:
    path = tmp_path / name
    np.savez(path, X=X, y=y)
    return load_dataset(path, None, **kw)


def run(ds: Dataset, select: list[str] | None = None, **kw) -> list[Finding]:
    report = Report("check-data")
    found = run_data_checks(ds, report, select or [], [], **kw)
    res = report.step(Step.DATA)
    assert res.reason == "", f"a check crashed: {res.reason}"
    for f in found:                         # every finding: one line, JSON-safe evidence
        assert "\n" not in f.message and f.message and f.fix
        json.dumps(f.to_dict())
    return found


def codes(found: list[Finding]) -> set[str]:
    return {f.code for f in found}


def one(found: list[Finding], code: str) -> Finding:
    hits = [f for f in found if f.code == code]
    assert len(hits) == 1, f"expected one {code}, got {[(f.code, f.message) for f in found]}"
    return hits[0]


# ---- the registry --------------------------------------------------------------------------------

def test_every_data_code_has_a_check_named_after_it():
    assert DATA_CODES == [f"D1{i:02d}" for i in range(19)]   # D115-D118: token data (checks/tokens.py)
    from nn_doctor.checks import load_checks
    load_checks("D")
    for code in DATA_CODES:
        func = REGISTRY[code].func
        assert func.__name__ == "check_" + REGISTRY[code].spec.name.replace("-", "_")
        assert func.__doc__.splitlines()[0].startswith(f"{code} {REGISTRY[code].spec.name}:")


# ---- clean and raw sample data --------------------------------------------------------------------

# standardized features: nothing fires, except what is true of the data
CLEAN_EXPECTED = {
    "wine": set(),
    "breast_cancer": set(),
    "iris": set(),
    "diabetes": {"D108"},          # the target (progression, ~152 +- 77) is left raw: it is unscaled
}

# the files as shipped
RAW_EXPECTED = {
    "wine": {"D104"},              # proline ~750 +- 315, magnesium ~100: unscaled (an error: max |x| 1680 > 1e3)
    "breast_cancer": {"D104"},     # area ~650, smoothness ~0.1: scales span 5 orders (error: max |x| 4254)
    "iris": {"D104"},              # sepal length ~5.8 cm: |mean| > 3
    "diabetes": {"D104", "D108"},  # raw age/bmi/bp/s1..s6, and the raw target
}


@pytest.mark.parametrize("name", sorted(CLEAN_EXPECTED))
def test_standardized_sample_tables_fire_only_what_is_true(tmp_path, name):
    ds = load_frame(tmp_path, standardized(name), TARGET[name])
    assert codes(run(ds)) == CLEAN_EXPECTED[name]


@pytest.mark.parametrize("name", sorted(RAW_EXPECTED))
def test_raw_sample_tables(name):
    ds = load_dataset(SAMPLE / f"{name}.csv", TARGET[name])
    found = run(ds)
    assert codes(found) == RAW_EXPECTED[name]
    d104 = one(found, "D104")
    assert d104.severity == (Severity.ERROR if name in ("wine", "breast_cancer") else Severity.WARNING)


def test_raw_sample_arrays():
    found = run(load_dataset(SAMPLE / "digits.npz", None))
    assert codes(found) == {"D104"}                     # uint8 pixels 0..16
    assert "pixel" in one(found, "D104").message
    found = run(load_dataset(SAMPLE / "digits_seq.npz", None))
    assert codes(found) == {"D104"}                     # float32 0..16 per feature: |mean| > 3


def test_scaled_digits_fire_nothing(tmp_path):
    X, y = digits()
    assert run(load_arrays(tmp_path, X.astype(np.float32) / 16, y)) == []
    Xs = (X[:, 0].astype(np.float32) / 16)              # (N, 8, 8) as a sequence
    assert run(load_arrays(tmp_path, Xs, y, name="seq.npz")) == []


@pytest.mark.parametrize("name", sorted(CLEAN_EXPECTED))
def test_no_shift_on_seeded_random_splits(tmp_path, name):
    df = standardized(name)
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    for seed in range(10):
        ds = load_dataset(path, TARGET[name], seed=seed)
        assert run(ds, ["D113"]) == [], f"seed {seed}"


def test_summary_line(tmp_path):
    report = Report("check-data")
    run_data_checks(load_dataset(SAMPLE / "wine.csv", "label"), report)
    assert report.step(Step.DATA).summary == "142 train rows, 36 validation, 13 features, classification"


# ---- the statistics against an independent computation --------------------------------------------

def test_table_stats_match_pandas(tmp_path):
    df = raw("wine")
    df.loc[[3, 50, 100], "magnesium"] = np.nan
    df.loc[[7], "hue"] = np.inf
    ds = load_frame(tmp_path, df, val_fraction=0)
    st = DataContext.build(ds).train_stats
    X = ds.X.replace([np.inf, -np.inf], np.nan)
    np.testing.assert_allclose(st.mean, X.mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(st.std, X.std().to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(st.min, X.min().to_numpy())
    np.testing.assert_allclose(st.max, X.max().to_numpy())
    np.testing.assert_allclose(st.median, X.median().to_numpy())
    np.testing.assert_allclose(st.mad, (X - X.median()).abs().median().to_numpy())
    assert dict(zip(st.names, st.n_nan))["magnesium"] == 3
    assert dict(zip(st.names, st.n_inf))["hue"] == 1 and st.n_inf.sum() == 1


def test_image_stats_are_per_channel(tmp_path):
    X, y = digits()
    X3 = np.concatenate([X / 16.0, X * 10.0, np.full_like(X, 2.0, dtype=float)], axis=1)   # (N, 3, 8, 8)
    ds = load_arrays(tmp_path, X3, y, val_fraction=0)
    st = DataContext.build(ds).train_stats
    flat = np.moveaxis(X3, 1, -1).reshape(-1, 3)
    assert st.names == ["channel 0", "channel 1", "channel 2"]
    np.testing.assert_allclose(st.mean, flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(st.std, flat.std(axis=0, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(st.median, np.median(flat, axis=0))


def test_chunking_and_sampling_do_not_change_the_numbers(tmp_path, monkeypatch):
    df = raw("wine")
    df.loc[[3, 50], "magnesium"] = np.nan
    df = pd.concat([df, df.iloc[:6]], ignore_index=True)        # 6 duplicates
    ds = load_frame(tmp_path, df, val_fraction=0)
    big = DataContext.build(ds)
    monkeypatch.setattr(data_stats, "CHUNK_ELEMENTS", 40)                 # 3 rows per chunk
    small = DataContext.build(ds)
    monkeypatch.setattr(data_stats, "WORKERS", 1)                         # the same on one thread
    serial = DataContext.build(ds)
    for field in ("mean", "std", "min", "max", "n_nan", "median", "mad"):
        np.testing.assert_array_equal(getattr(serial.train_stats, field), getattr(small.train_stats, field))
    np.testing.assert_array_equal(serial.row_hashes.train, small.row_hashes.train)
    for field in ("mean", "std", "min", "max", "n_nan", "median"):
        np.testing.assert_allclose(getattr(small.train_stats, field), getattr(big.train_stats, field), rtol=1e-9)
    np.testing.assert_array_equal(small.row_hashes.train, big.row_hashes.train)
    assert one(run(ds, ["D110"]), "D110").evidence["duplicates"]["count"] == 6
    monkeypatch.setattr(data_stats, "MEDIAN_SAMPLE_ROWS", 50)             # medians from a 50-row sample
    sampled = DataContext.build(ds)
    assert sampled.train_sample.shape == (13, 50)
    np.testing.assert_allclose(sampled.train_stats.mean, big.train_stats.mean, rtol=1e-9)   # still every row


def test_statistics_are_computed_once(tmp_path, monkeypatch):
    calls = []
    real = data_stats._scan
    monkeypatch.setattr(data_stats, "_scan", lambda *a, **k: calls.append(1) or real(*a, **k))
    ds = load_dataset(SAMPLE / "wine.csv", "label")
    run(ds)
    assert len(calls) == 2                                       # one pass over train, one over validation


# ---- D100 data-unreadable ----------------------------------------------------------------------------

def test_d100_row_counts_differ():
    df = standardized("wine")
    X, y = df.drop(columns="label"), df["label"]
    ds = Dataset(source="wine.csv", kind="table", X=X.iloc[:20], y=y.iloc[:19], task="classification")
    found = run(ds)
    assert codes(found) == {"D100"}                              # the other checks do not run
    assert "20 rows but the target has 19" in one(found, "D100").message
    ok = Dataset(source="wine.csv", kind="table", X=X, y=y, task="classification")
    assert run(ok, ["D100"]) == []


def test_d100_zero_rows():
    ds = Dataset(source="empty.npz", kind="array", X=np.zeros((0, 4)), y=np.zeros(0), task="regression")
    assert "no training rows" in one(run(ds), "D100").message


# ---- D101 missing-values --------------------------------------------------------------------------

def test_d101_missing_feature_values(tmp_path):
    df = standardized("wine")
    assert run(load_frame(tmp_path, df), ["D101"]) == []
    df.loc[[2, 30, 60, 90, 120], "magnesium"] = np.nan
    f = one(run(load_frame(tmp_path, df), ["D101"]), "D101")
    assert f.evidence["features"] == {"magnesium": 5}
    assert "magnesium: 5" in f.message and f.severity == Severity.ERROR
    assert "magnesium" in f.fix


def test_d101_missing_target(tmp_path):
    df = standardized("wine")
    df["label"] = df["label"].astype(float)
    df.loc[[1, 2, 3], "label"] = np.nan
    # val_fraction 0: the loader's stratified split cannot group NaN labels yet (pandas 3 keeps NaN through astype(str))
    f = one(run(load_frame(tmp_path, df, val_fraction=0), ["D101"]), "D101")
    assert f.evidence["target"] == {"label": 3} and f.evidence["features"] == {}
    assert "target" in f.fix


def test_d101_arrays(tmp_path):
    X, y = digits()
    Xf = X.astype(np.float32) / 16
    Xf[[0, 5, 9], 0, 3, 3] = np.nan
    Xf[[11, 12, 13, 14], 0, 1, 1] = np.nan
    f = one(run(load_arrays(tmp_path, Xf, y), ["D101"]), "D101")
    assert f.evidence["features"] == {"channel 0": 7}


# ---- D102 non-finite-values ------------------------------------------------------------------------

def test_d102_infinite_values(tmp_path):
    df = standardized("wine")
    df.loc[[4, 44, 144], "hue"] = np.inf
    df.loc[[8], "hue"] = -np.inf
    f = one(run(load_frame(tmp_path, df), ["D102"]), "D102")
    assert f.evidence["features"] == {"hue": 4}
    assert run(load_frame(tmp_path, standardized("wine")), ["D102"]) == []


def test_d102_arrays_and_target(tmp_path):
    X, y = digits()
    Xf = X.astype(np.float32) / 16
    Xf[3, 0, 4, 4] = -np.inf
    f = one(run(load_arrays(tmp_path, Xf, y), ["D102"]), "D102")
    assert f.evidence["features"] == {"channel 0": 1}
    df = standardized("diabetes", target_too=True)
    df.loc[[0, 1], "progression"] = np.inf
    f = one(run(load_frame(tmp_path, df, "progression"), ["D102"]), "D102")
    assert f.evidence["target"] == {"progression": 2}


# ---- D103 non-numeric-features ---------------------------------------------------------------------

def test_d103_string_and_date_columns(tmp_path):
    df = standardized("wine")
    assert run(load_frame(tmp_path, df), ["D103"]) == []
    df.insert(0, "colour", np.where(df["label"] == 0, "red", "white"))
    f = one(run(load_frame(tmp_path, df), ["D103"]), "D103")
    cols = {c["column"]: c for c in f.evidence["columns"]}
    assert list(cols) == ["colour"] and cols["colour"]["example"] == "red"
    assert "colour" in f.message and "'red'" in f.message and "colour" in f.fix
    X = df.drop(columns="label").assign(harvest=pd.Timestamp("2020-09-01"), organic=df["label"] == 1)
    ds = Dataset(source="mem", kind="table", X=X, y=df["label"], task="classification")
    f = one(run(ds, ["D103"]), "D103")
    assert {c["column"] for c in f.evidence["columns"]} == {"colour", "harvest", "organic"}
    assert any("datetime" in c["dtype"] for c in f.evidence["columns"])


def test_d103_arrays():
    X = np.array([["a", "b"], ["c", "d"]] * 10)
    ds = Dataset(source="mem", kind="array", X=X, y=np.arange(20) % 2, task="binary")
    f = one(run(ds, ["D103"]), "D103")
    assert "<U1" in f.message


# ---- D104 unscaled-features ------------------------------------------------------------------------

def test_d104_standardized_wine_does_not_fire_raw_wine_does(tmp_path):
    assert run(load_frame(tmp_path, standardized("wine")), ["D104"]) == []
    f = one(run(load_dataset(SAMPLE / "wine.csv", "label"), ["D104"]), "D104")
    assert "proline" in f.message and "proline" in f.evidence["columns"]
    assert f.fix == "set data.normalize: standardize" and f.patch == {"data.normalize": "standardize"}
    assert f.evidence["thresholds"]["std_high"] == D.FEATURE_STD_HIGH


def test_d104_severity_follows_max_abs(tmp_path):
    df = standardized("wine")
    df["ash"] *= 1e4
    f = one(run(load_frame(tmp_path, df), ["D104"]), "D104")
    assert f.severity == Severity.ERROR and f.evidence["max_abs"] > 1e3
    assert "(ash: mean" in f.message and list(f.evidence["columns"])[0] == "ash"
    df = standardized("wine")
    df["ash"] *= 20                       # std 20, max |x| ~ 80: off scale, not huge
    f = one(run(load_frame(tmp_path, df), ["D104"]), "D104")
    assert f.severity == Severity.WARNING and "ash" in f.message


def test_d104_offset_and_tiny_scale(tmp_path):
    df = standardized("wine")
    df["alcohol"] += 10                   # |mean| 10
    f = one(run(load_frame(tmp_path, df), ["D104"]), "D104")
    assert "|mean| > 3" in f.message and "alcohol" in f.message
    df = standardized("wine")
    df["hue"] = df["hue"] * 0.01 + 1.5     # std 0.01 around 1.5
    f = one(run(load_frame(tmp_path, df), ["D104"]), "D104")
    assert "std < 0.1" in f.message and "hue" in f.evidence["columns"]
    df["hue"] = (df["hue"] - 1.5) * 0.1    # std 0.001 but within [-1, 1]: min-max-like, left alone
    assert run(load_frame(tmp_path, df), ["D104"]) == []
    df = standardized("wine")
    df["flag"] = (df["label"] == 2).astype(int) * (np.arange(len(df)) % 30 == 0)  # rare 0/1 indicator
    assert run(load_frame(tmp_path, df), ["D104"]) == []


def test_d104_forced_threshold(tmp_path, monkeypatch):
    ds = load_frame(tmp_path, standardized("wine"))
    monkeypatch.setattr(D, "FEATURE_STD_HIGH", 0.5)     # every standardized column now "too wide"
    f = one(run(ds, ["D104"]), "D104")
    assert f.evidence["n_flagged"] == 13 and f.evidence["thresholds"]["std_high"] == 0.5


def test_d104_pixels_and_channels(tmp_path):
    X, y = digits()
    f = one(run(load_arrays(tmp_path, X, y), ["D104"]), "D104")
    assert f.evidence["pixel_range"] == [0, 16] and "minmax" in f.fix and "[0, 1]" in f.fix
    assert f.patch == {"data.normalize": "minmax"}
    assert run(load_arrays(tmp_path, X.astype(np.float32) / 16, y), ["D104"]) == []
    X2 = np.concatenate([X / 16.0, X * 100.0], axis=1)   # channel 1 a hundred times wider
    f = one(run(load_arrays(tmp_path, X2, y), ["D104"]), "D104")
    assert list(f.evidence["columns"])[0] == "channel 1" and f.severity == Severity.ERROR


# ---- D105 constant-features ------------------------------------------------------------------------

def test_d105_constant_column(tmp_path):
    df = standardized("wine")
    assert run(load_frame(tmp_path, df), ["D105"]) == []
    df["batch"] = 7.0
    f = one(run(load_frame(tmp_path, df), ["D105"]), "D105")
    assert f.evidence["columns"] == {"batch": 7.0} and "batch" in f.fix


def test_d105_constant_channel(tmp_path):
    X, y = digits()
    X2 = np.concatenate([X / 16.0, np.zeros_like(X, dtype=float)], axis=1)
    f = one(run(load_arrays(tmp_path, X2, y), ["D105"]), "D105")
    assert list(f.evidence["columns"]) == ["channel 1"]
    assert run(load_arrays(tmp_path, X / 16.0, y), ["D105"]) == []   # constant border pixels are not flagged


# ---- D106 extreme-outliers -------------------------------------------------------------------------

def test_d106_injected_outliers(tmp_path):
    df = standardized("wine")
    assert run(load_frame(tmp_path, df, val_fraction=0), ["D106"]) == []
    df.loc[[10, 70, 170], "malic_acid"] = 1e6
    f = one(run(load_frame(tmp_path, df, val_fraction=0), ["D106"]), "D106")
    col = f.evidence["columns"]["malic_acid"]
    assert list(f.evidence["columns"]) == ["malic_acid"] and col["n_outliers"] == 3 and col["max_robust_z"] > 1e5
    assert "malic_acid" in f.message and f.evidence["thresholds"]["robust_z"] == D.ROBUST_Z_LIMIT


def test_d106_column_with_zero_mad(tmp_path):
    df = standardized("wine")
    rng = np.random.default_rng(0)
    sparse = np.where(np.arange(len(df)) % 10 == 0, rng.standard_normal(len(df)) + 3, 0.0)   # 90% zeros: MAD 0
    df["sparse"] = sparse
    assert run(load_frame(tmp_path, df, val_fraction=0), ["D106"]) == []
    df.loc[[5, 6], "sparse"] = 1e6
    f = one(run(load_frame(tmp_path, df, val_fraction=0), ["D106"]), "D106")
    assert f.evidence["columns"]["sparse"]["n_outliers"] == 2 and f.evidence["columns"]["sparse"]["mad"] > 0


def test_d106_breast_cancer_heavy_tail_is_below_the_limit(tmp_path):
    ds = load_frame(tmp_path, standardized("breast_cancer"), val_fraction=0)
    st = DataContext.build(ds).train_stats
    assert 30 < np.nanmax(st.max_robust_z) < D.ROBUST_Z_LIMIT       # 'area error' reaches ~38


def test_d106_judges_a_labelled_table_within_each_class(tmp_path):
    """Fault zoo (d109_imbalanced, seed 2): 20 malignant rows among 357 benign; a malignant 'area error' of
    526 is robust z 68 against the (benign) column but ~7 within its class: no outlier. A unit error in
    one benign row is extreme within its class too."""
    df = raw("breast_cancer")
    malignant = df[df["label"] == 0].sort_values("area error", ascending=False).iloc[:20]
    sub = pd.concat([df[df["label"] == 1], malignant])
    ds = load_frame(tmp_path, sub, val_fraction=0)
    st = DataContext.build(ds).train_stats
    assert np.nanmax(st.max_robust_z) > D.ROBUST_Z_LIMIT            # the column-wide z fires ...
    assert run(ds, ["D106"]) == []                                    # ... the within-class one does not
    bad = sub.copy()
    bad.loc[bad.index[3], "mean radius"] *= 1000.0                   # a benign row in the wrong unit
    f = one(run(load_frame(tmp_path, bad, val_fraction=0), ["D106"]), "D106")
    assert list(f.evidence["columns"]) == ["mean radius"] and f.evidence["within_class"] is True
    assert f.evidence["columns"]["mean radius"]["n_outliers"] == 1


def test_d106_arrays(tmp_path):
    X, y = digits()
    Xf = X.astype(np.float64) / 16
    Xf[[1, 2, 3], 0, 4, 4] = 1e6
    f = one(run(load_arrays(tmp_path, Xf, y, val_fraction=0), ["D106"]), "D106")
    assert f.evidence["columns"]["channel 0"]["n_outliers"] == 3


# ---- D107 bad-label-format -------------------------------------------------------------------------

def test_d107_offset_labels(tmp_path):
    df = standardized("wine")
    assert run(load_frame(tmp_path, df), ["D107"], loss_name="cross_entropy") == []
    df["label"] += 1
    f = one(run(load_frame(tmp_path, df), ["D107"]), "D107")
    assert "offset by 1" in f.message and f.fix.startswith("map labels [1, 2, 3] to 0..2")
    assert f.patch == {"data.label_map": {1: 0, 2: 1, 3: 2}} and "data.label_map: {1: 0, 2: 1, 3: 2}" in f.fix
    assert f.severity == Severity.ERROR


def test_d107_labels_0_to_C_minus_1_with_too_few_outputs_are_the_model_s_fault(tmp_path):
    """Fault zoo (m201_wrong_output_size): wine's labels 0..2 with a 2-output model are M201, not D107;
    labels 1..3 with 3 outputs are a label problem and say that label 3 is out of range."""
    df = standardized("wine")
    assert run(load_frame(tmp_path, df), ["D107"], loss_name="cross_entropy", n_outputs=2) == []
    df["label"] += 1
    f = one(run(load_frame(tmp_path, df), ["D107"], loss_name="cross_entropy", n_outputs=3), "D107")
    assert "offset by 1" in f.message and "label 3 is out of range for 3 outputs" in f.message


def test_d107_string_float_and_gap_labels(tmp_path):
    df = standardized("wine")
    df["label"] = "class_" + df["label"].astype(str)
    f = one(run(load_frame(tmp_path, df), ["D107"]), "D107")
    assert "strings" in f.message and f.fix.startswith("map labels ['class_0', 'class_1', 'class_2'] to 0..2")
    df = standardized("wine")
    df["label"] = df["label"].astype(float)
    f = one(run(load_frame(tmp_path, df), ["D107"]), "D107")
    assert "floats" in f.message and "int64" in f.fix
    df = standardized("wine")
    df["label"] = df["label"].replace({2: 5})
    f = one(run(load_frame(tmp_path, df), ["D107"]), "D107")
    assert "gaps" in f.message and f.fix.startswith("map labels [0, 1, 5] to 0..2")


def test_d107_binary_labels_outside_0_1(tmp_path):
    df = standardized("breast_cancer")
    assert run(load_frame(tmp_path, df), ["D107"], loss_name="bce_with_logits") == []
    df["label"] = df["label"].map({0: -1, 1: 1})
    f = one(run(load_frame(tmp_path, df), ["D107"]), "D107")
    assert "not {0, 1}" in f.message and f.fix.startswith("map labels [-1, 1] to [0, 1]") and f.patch == {"data.label_map": {-1: 0, 1: 1}}


def test_d107_loss_format(tmp_path):
    df = standardized("wine")
    # well-formed class ids 0..2 under bce: the loss does not fit the task (M203), the labels are fine (fresh
    # zoo fr_deepfd_bce_logits_on_3_classes: D107 came first and told the user to change the labels)
    assert run(load_frame(tmp_path, df), ["D107"], loss_name="bce") == []
    df["label"] += 1                    # malformed ids under bce: D107 names both the offset and the loss
    f = one(run(load_frame(tmp_path, df), ["D107"], loss_name="bce"), "D107")
    assert "offset by 1" in f.message and "bce wants 0/1" in f.message and "cross_entropy" in f.fix
    df["label"] -= 1
    onehot = pd.get_dummies(df["label"], prefix="is").astype(int)
    X = df.drop(columns="label")
    ds = Dataset(source="mem", kind="table", X=X, y=onehot, task="multilabel", target=list(onehot.columns))
    f = one(run(ds, ["D107"], loss_name="cross_entropy"), "D107")
    assert "one-hot" in f.message and "argmax" in f.fix
    assert run(ds, ["D107"], loss_name="bce_with_logits") == []   # 0/1 columns are what bce wants


def test_d107_arrays(tmp_path):
    X, y = digits()
    f = one(run(load_arrays(tmp_path, X / 16.0, y + 1), ["D107"]), "D107")
    assert f.fix.startswith("map labels [1, 2, 3, 4, 5, 6, ...] to 0..9")
    assert run(load_arrays(tmp_path, X / 16.0, y), ["D107"]) == []


# ---- D108 unscaled-target --------------------------------------------------------------------------

def test_d108_raw_diabetes_target(tmp_path):
    f = one(run(load_frame(tmp_path, standardized("diabetes"), "progression"), ["D108"]), "D108")
    col = f.evidence["columns"]["progression"]
    assert 140 < col["mean"] < 165 and 70 < col["std"] < 85
    assert f.fix == "set data.normalize_target: true" and f.patch == {"data.normalize_target": True}
    assert run(load_frame(tmp_path, standardized("diabetes", target_too=True), "progression"), ["D108"]) == []


# ---- D109 class-imbalance --------------------------------------------------------------------------

def test_d109_subsampled_class(tmp_path):
    df = standardized("breast_cancer")
    assert run(load_frame(tmp_path, df), ["D109"]) == []
    zeros = df[df["label"] == 0]
    df = pd.concat([zeros.iloc[::20], df[df["label"] == 1]])          # 212 -> 11 rows of class 0
    f = one(run(load_frame(tmp_path, df), ["D109"]), "D109")
    assert f.evidence["counts"] == {"0": 9, "1": 286} and f.evidence["ratio"] >= 10
    assert f.fix.startswith("set loss.class_weights: balanced") and f.patch == {"loss.class_weights": "balanced"}


def test_d109_arrays(tmp_path):
    X, y = digits()
    keep = (y != 0) | (np.cumsum(y == 0) % 20 == 1)
    f = one(run(load_arrays(tmp_path, X / 16.0, y[keep] if False else y[keep]) if False else
                load_arrays(tmp_path, X[keep] / 16.0, y[keep]), ["D109"]), "D109")
    assert f.evidence["counts"]["0"] < 10


# ---- D110 duplicates-or-conflicts ------------------------------------------------------------------

def test_d110_duplicate_rows(tmp_path):
    df = standardized("wine")
    assert run(load_frame(tmp_path, df, val_fraction=0), ["D110"]) == []
    dup = pd.concat([df, df.iloc[[3, 30, 60, 90, 120, 150, 160, 170, 175, 177]]], ignore_index=True)
    f = one(run(load_frame(tmp_path, dup, val_fraction=0), ["D110"]), "D110")
    assert f.evidence["duplicates"]["count"] == 10 and f.evidence["duplicates"]["examples"][0] == 178
    assert f.evidence["conflicts"]["groups"] == 0 and "drop_duplicates" in f.fix


def test_d110_conflicting_labels(tmp_path):
    df = standardized("wine")
    clash = df.iloc[[5, 80, 140]].copy()
    clash["label"] = (clash["label"] + 1) % 3
    f = one(run(load_frame(tmp_path, pd.concat([df, clash], ignore_index=True), val_fraction=0), ["D110"]), "D110")
    assert f.evidence["conflicts"]["groups"] == 3 and f.evidence["conflicts"]["rows"] == 6
    assert f.evidence["conflicts"]["examples"] == [5, 80, 140, 178, 179]
    assert f.evidence["duplicates"]["count"] == 0


def test_d110_rows_shared_with_validation(tmp_path):
    df = standardized("wine")
    train, val = df.iloc[:150], df.iloc[150:]
    train.to_csv(tmp_path / "train.csv", index=False)
    val.to_csv(tmp_path / "val.csv", index=False)
    assert run(load_dataset(tmp_path / "train.csv", "label", val_path=tmp_path / "val.csv"), ["D110"]) == []
    pd.concat([val, train.iloc[:4]]).to_csv(tmp_path / "val.csv", index=False)
    f = one(run(load_dataset(tmp_path / "train.csv", "label", val_path=tmp_path / "val.csv"), ["D110"]), "D110")
    assert f.evidence["shared_with_validation"]["count"] == 4
    assert f.evidence["shared_with_validation"]["examples"] == [28, 29, 30, 31]   # rows of the validation file


def test_d110_one_duplicate_pair_split_across_train_and_validation_is_noise(tmp_path):
    """Fault zoo (ok_iris_mlp, seeds 1 and 2): iris's one known duplicate pair (rows 101 and 142, 1 of 150)
    fired as '1 of 30 validation rows also appear in training' whenever the split separated the copies."""
    apart = 0
    for seed in range(4):
        ds = load_dataset(SAMPLE / "iris.csv", "label", seed=seed)
        apart += (101 in ds.X.index) != (142 in ds.X.index)
        assert run(ds, ["D110"]) == []
    assert apart >= 1                      # the case happened
    # 4 leaked rows (2% of all the rows) still fire: test_d110_rows_shared_with_validation


def test_d110_iris_single_duplicate(tmp_path, monkeypatch):
    ds = load_dataset(SAMPLE / "iris.csv", "label", val_fraction=0)
    assert run(ds, ["D110"]) == []                                   # 1 of 150 rows: below 1%
    monkeypatch.setattr(D, "DUPLICATE_FRACTION", 0.0)
    f = one(run(ds, ["D110"]), "D110")
    assert f.evidence["duplicates"] == {"count": 1, "examples": [142]}   # the known copy of row 101


def test_d110_arrays(tmp_path):
    X, y = digits()
    Xd = np.concatenate([X, X[:20]]) / 16.0
    yd = np.concatenate([y, y[:20]])
    f = one(run(load_arrays(tmp_path, Xd, yd, val_fraction=0), ["D110"]), "D110")
    assert f.evidence["duplicates"]["count"] == 20
    yc = np.concatenate([y, (y[:5] + 1) % 10])
    f = one(run(load_arrays(tmp_path, np.concatenate([X, X[:5]]) / 16.0, yc, val_fraction=0), ["D110"]), "D110")
    assert f.evidence["conflicts"]["groups"] == 5


# ---- D111 too-little-data --------------------------------------------------------------------------

def test_d111_small_class(tmp_path):
    df = standardized("wine")
    assert run(load_frame(tmp_path, df), ["D111"]) == []
    df = pd.concat([df[df["label"] != 2], df[df["label"] == 2].iloc[:5]])
    f = one(run(load_frame(tmp_path, df), ["D111"]), "D111")
    assert f.evidence["small_classes"] == {"2": 4}                   # 5 rows, 1 went to validation
    assert f.evidence["thresholds"]["min_class_samples"] == 10


def test_d111_parameters_per_sample(tmp_path):
    ds = load_frame(tmp_path, standardized("wine"))
    assert run(ds, ["D111"], n_params=1_000) == []                   # 142 rows x 10 > 1,000
    f = one(run(ds, ["D111"], n_params=100_000), "D111")
    assert "100000 parameters for 142 training rows" in f.message


def test_d111_parameters_per_sample_cut_is_m208_s(tmp_path):
    """Fault zoo (ok_wine_residual_layernorm): a residual MLP with 34 parameters per wine row trains and
    validates fine; "far fewer samples than parameters" is the 100x of M208's "too big"."""
    ds = load_frame(tmp_path, standardized("wine"))
    assert D.PARAMS_PER_SAMPLE_LIMIT == 100.0
    assert run(ds, ["D111"], n_params=34 * 142) == []
    f = one(run(ds, ["D111"], n_params=101 * 142), "D111")
    assert f.evidence["thresholds"]["params_per_sample"] == 100.0


def test_d111_arrays(tmp_path):
    X, y = digits()
    keep = (y != 3) | (np.cumsum(y == 3) <= 5)
    f = one(run(load_arrays(tmp_path, X[keep] / 16.0, y[keep]), ["D111"]), "D111")
    assert f.evidence["small_classes"] == {"3": 4}


# ---- D112 target-leakage ---------------------------------------------------------------------------

def test_d112_label_copy(tmp_path):
    df = standardized("wine")
    rng = np.random.default_rng(1)
    df.insert(3, "grade", df["label"] * 1.0 + rng.normal(0, 0.01, len(df)))
    f = one(run(load_frame(tmp_path, df), ["D112"]), "D112")
    assert list(f.evidence["columns"]) == ["grade"] and f.evidence["columns"]["grade"]["accuracy"] == 1.0
    assert "grade" in f.fix


def test_d112_non_monotone_code(tmp_path):
    df = standardized("iris")
    rng = np.random.default_rng(2)
    df["code"] = df["label"].map({0: 5.0, 1: -3.0, 2: 0.0}) + rng.normal(0, 0.1, len(df))
    f = one(run(load_frame(tmp_path, df), ["D112"]), "D112")
    assert list(f.evidence["columns"]) == ["code"]


def test_d112_strong_but_honest_feature_does_not_fire(tmp_path):
    df = standardized("iris")                     # petal width separates setosa, not the other two
    ctx = DataContext.build(load_frame(tmp_path, df))
    scores, _ = ctx.leakage_screen
    assert scores.max() > D.LEAK_SCREEN_ETA2       # it is screened ...
    assert run(load_frame(tmp_path, df), ["D112"]) == []   # ... and rejected by the sorted-neighbour test


def test_d112_not_on_too_few_rows_to_measure_99_percent(tmp_path):
    """Fault zoo (d111_few_samples): 8 iris flowers per class (19 training rows) let petal width split the
    classes perfectly by luck; with fewer than LEAK_MIN_ROWS rows D112 says nothing (D111 speaks)."""
    df = standardized("iris")
    rng = np.random.default_rng(0)
    small = pd.concat([g.iloc[rng.choice(len(g), 8, replace=False)] for _, g in df.groupby("label")])
    ds = load_frame(tmp_path, small)
    assert ds.n_train < D.LEAK_MIN_ROWS
    assert run(ds, ["D112"]) == [] and "D111" in codes(run(ds, ["D111"]))
    leak = small.assign(code=small["label"] * 10.0)                # a real copy of the label: still too few rows
    assert run(load_frame(tmp_path, leak), ["D112"]) == []
    big = df.assign(code=df["label"] * 10.0 + rng.normal(0, 0.5, len(df)))   # 120 rows: found
    assert list(one(run(load_frame(tmp_path, big), ["D112"]), "D112").evidence["columns"]) == ["code"]


def test_d112_regression(tmp_path):
    df = standardized("diabetes", target_too=True)
    assert run(load_frame(tmp_path, df, "progression"), ["D112"]) == []
    df["lab_value"] = df["progression"] * 3 + np.random.default_rng(3).normal(0, 0.05, len(df))
    f = one(run(load_frame(tmp_path, df, "progression"), ["D112"]), "D112")
    assert f.evidence["columns"]["lab_value"]["abs_r"] >= 0.99


def test_d112_arrays(tmp_path):
    X, y = digits()
    Xf = X.astype(np.float64) / 16
    Xf[:, 0, 0, 0] = y / 9.0                       # the corner pixel (always 0) now carries the label
    f = one(run(load_arrays(tmp_path, Xf, y), ["D112"]), "D112")
    assert list(f.evidence["columns"]) == ["x[0,0,0]"]


# ---- D113 train-validation-shift ---------------------------------------------------------------------

def test_d113_shifted_feature(tmp_path):
    ds = load_frame(tmp_path, standardized("wine"))
    assert run(ds, ["D113"]) == []
    ds.X_val = ds.X_val.assign(alcohol=ds.X_val["alcohol"] + 2.0)    # +2 std
    f = one(run(ds, ["D113"]), "D113")
    assert list(f.evidence["features"]) == ["alcohol"] and f.evidence["features"]["alcohol"]["smd"] > 1.5
    assert f.evidence["thresholds"]["smd"] == D.SHIFT_SMD


def test_d113_label_shift(tmp_path):
    df = standardized("breast_cancer")
    train, val = df.iloc[::2], df.iloc[1::2]
    val = val[val["label"] == 1]                   # validation holds one class only
    train.to_csv(tmp_path / "train.csv", index=False)
    val.to_csv(tmp_path / "val.csv", index=False)
    f = one(run(load_dataset(tmp_path / "train.csv", "label", val_path=tmp_path / "val.csv"), ["D113"]), "D113")
    assert "class frequencies differ" in f.message and f.evidence["labels"]["tvd"] > 0.3
    assert "re-split" in f.fix


def test_d113_arrays(tmp_path):
    X, y = digits()
    ds = load_arrays(tmp_path, X / 16.0, y)
    assert run(ds, ["D113"]) == []
    ds.X_val = ds.X_val + 2 * ds.X.std()
    f = one(run(ds, ["D113"]), "D113")
    assert list(f.evidence["features"]) == ["channel 0"]


# ---- D114 degenerate-target ------------------------------------------------------------------------

def test_d114_single_class(tmp_path):
    df = standardized("wine")
    assert run(load_frame(tmp_path, df), ["D114"]) == []
    df["label"] = 1
    f = one(run(load_frame(tmp_path, df), ["D114"]), "D114")
    assert f.severity == Severity.ERROR and "every training label is 1" in f.message


def test_d114_constant_regression_target(tmp_path):
    df = standardized("diabetes")
    df["progression"] = 100.0
    f = one(run(load_frame(tmp_path, df, "progression", task="regression"), ["D114"]), "D114")
    assert f.evidence["columns"] == {"progression": 100.0}


def test_d114_arrays(tmp_path):
    X, _ = digits()
    f = one(run(load_arrays(tmp_path, X / 16.0, np.full(len(X), 3))), "D114")
    assert "every training label is 3" in f.message


# ---- what the spec already fixes -------------------------------------------------------------------

def test_spec_settings_silence_what_they_fix(tmp_path):
    from types import SimpleNamespace as NS
    raw_wine = load_dataset(SAMPLE / "wine.csv", "label")
    spec = NS(data=NS(normalize="standardize", normalize_target=False), loss=NS(name="cross_entropy",
                                                                                   class_weights=None))
    assert "D104" not in codes(run(raw_wine, spec=spec))               # the probes standardize
    spec.data.normalize = "none"
    assert "D104" in codes(run(raw_wine, spec=spec))
    diabetes = load_dataset(SAMPLE / "diabetes.csv", "progression")
    spec = NS(data=NS(normalize="standardize", normalize_target=True), loss=NS(name="mse", class_weights=None))
    assert codes(run(diabetes, spec=spec)) == set()
    df = standardized("breast_cancer")
    df = pd.concat([df[df["label"] == 0].iloc[::20], df[df["label"] == 1]])
    ds = load_frame(tmp_path, df)
    spec = NS(data=NS(normalize="standardize", normalize_target=False),
              loss=NS(name="cross_entropy", class_weights="balanced"))
    assert "D109" not in codes(run(ds, ["D109"], spec=spec)) and run(ds, ["D109"]) != []


def test_a_validation_table_is_read_by_column_name(tmp_path):
    """The same columns in another order are the same table (a user re-exported the file); a missing column is
    an error that names it."""
    import pandas as pd
    import pytest as _pytest
    from nn_doctor.data import load_dataset
    from nn_doctor.errors import DataError
    df = pd.read_csv(Path(__file__).resolve().parents[1] / "sample_data" / "wine.csv").sample(frac=1, random_state=0)
    df.iloc[:140].to_csv(tmp_path / "tr.csv", index=False)
    df.iloc[140:][list(reversed(df.columns))].to_csv(tmp_path / "va.csv", index=False)
    ds = load_dataset(tmp_path / "tr.csv", "label", val_path=tmp_path / "va.csv")
    assert list(ds.X_val.columns) == list(ds.X.columns) and len(ds.X_val) == len(df) - 140
    assert ds.X_val.iloc[0].to_dict() == df.iloc[140].drop("label").to_dict()
    df.iloc[140:].drop(columns=["ash"]).to_csv(tmp_path / "va_missing.csv", index=False)
    with _pytest.raises(DataError, match="missing 'ash'"):
        load_dataset(tmp_path / "tr.csv", "label", val_path=tmp_path / "va_missing.csv")
