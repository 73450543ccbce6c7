"""The data a PyTorch user already has: an image folder (one subfolder per class) and their own Dataset.

Made in each test: the bundled 8x8 digits written as PNG files into class folders, and a Dataset class
written the way users write them. full-report runs on both and finds the fault seeded in each.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("PIL", reason="image folders are read with Pillow (pip install 'nn-doctor[vision]')")
from PIL import Image  # noqa: E402

from nn_doctor.catalogue import Step  # noqa: E402
from nn_doctor.data import load_dataset, load_from_spec, prepare_arrays  # noqa: E402
from nn_doctor.data_sources import DEFAULT_MAX_ITEMS, read_images  # noqa: E402
from nn_doctor.doctor import Options, check_data, full_report  # noqa: E402
from nn_doctor.errors import DataError, UsageError  # noqa: E402
from nn_doctor.spec import load_spec, parse_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "sample_data" / "digits.npz"

CONV = [{"type": "conv2d", "out": 8, "kernel_size": 3, "padding": 1}, {"type": "relu"},
        {"type": "adaptive_avgpool2d", "output_size": 1}, {"type": "flatten"}, {"type": "linear", "out": 10}]


def write_digit_folder(root: Path, n: int = 300, seed: int = 0, size: int | None = None, rgb: bool = False) -> dict:
    """n digits (pixels 0..16 stretched to 0..255, as an image file holds them) as PNG files in root/digit_<k>/."""
    d = np.load(DIGITS)
    X, y = d["X"], d["y"]
    idx = np.random.default_rng(seed).permutation(len(X))[:n]
    counts: dict[int, int] = {}
    for i in idx:
        img = Image.fromarray((X[i, 0].astype(np.float32) * (255 / 16)).round().astype(np.uint8), mode="L")
        if size:
            img = img.resize((size, size))
        if rgb:
            img = img.convert("RGB")
        path = root / f"digit_{y[i]}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        counts[int(y[i])] = counts.get(int(y[i]), 0) + 1
    return counts


def write_spec(folder: Path, data: dict, layers: list, lr: float = 0.003, **training) -> Path:
    spec = {"data": data, "model": {"layers": layers}, "loss": "cross_entropy",
            "optimizer": {"name": "adam", "lr": lr},
            "training": {"batch_size": 32, "epochs": 2, "seed": 0, **training}}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def codes(report) -> set[str]:
    return {f.code for f in report.findings}


# ---- image folders ---------------------------------------------------------------------------------------

def test_full_report_on_an_image_folder_finds_raw_pixels(tmp_path, one_thread):
    counts = write_digit_folder(tmp_path / "images", n=300)
    spec = write_spec(tmp_path, {"path": "images/", "image_size": 8}, CONV)
    rep = full_report(Options(config=str(spec), budget=60, quiet=True))
    d104 = next(f for f in rep.findings if f.code == "D104")
    assert d104.evidence["pixel_range"] == [0, 255]
    assert "raw uint8" in d104.message and d104.patch == {"data.normalize": "minmax"}
    assert "D109" not in codes(rep)                       # digits are balanced
    summary = rep.steps[Step.DATA].summary
    assert "samples 1×8×8" in summary
    n_train, n_val = int(summary.split()[0]), int(summary.split(", ")[1].split()[0])
    assert n_train + n_val == sum(counts.values())
    assert any("ImageFolder" in n and "0 = digit_0" in n for n in rep.notes)
    assert rep.probes["lr"]["tried"] and rep.probes["baseline"]["layers"]   # the probes trained on the images


def test_image_folder_is_read_like_imagefolder(tmp_path):
    counts = write_digit_folder(tmp_path / "img", n=120, size=12)
    ds = load_dataset(tmp_path / "img", image_size=[6, 8], seed=0, val_fraction=0.0)
    assert ds.kind == "array" and ds.X.dtype == np.uint8 and ds.X.shape == (120, 1, 6, 8)
    # class ids are the sorted folder names' positions, as torchvision's ImageFolder numbers them
    assert sorted(np.unique(ds.y).tolist()) == sorted(counts)
    assert np.bincount(ds.y).tolist() == [counts.get(k, 0) for k in range(max(counts) + 1)]
    assert ds.task == "classification"
    # colour images keep three channels, in torch's (N, C, H, W) layout
    write_digit_folder(tmp_path / "rgb", n=30, rgb=True)
    X, y, n, _ = read_images(tmp_path / "rgb", None, None, 0)
    assert X.shape == (30, 3, 8, 8) and n == 30
    assert np.array_equal(X[:, 0], X[:, 1])              # grey digits written as RGB


def test_image_folder_samples_and_says_so(tmp_path):
    write_digit_folder(tmp_path / "img", n=150)
    a = load_dataset(tmp_path / "img", max_rows=50, seed=3, val_fraction=0.0)
    b = load_dataset(tmp_path / "img", max_rows=50, seed=3, val_fraction=0.0)
    assert a.n_train == 50 and a.n_rows_read == 150 and np.array_equal(a.X, b.X)   # seeded
    assert any("sample of 50 of the 150" in n and "data.max_rows 50" in n for n in a.notes)
    assert DEFAULT_MAX_ITEMS >= 1000


def test_image_folder_problems_are_one_line_data_errors(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="one subfolder per class"):
        load_dataset(tmp_path / "flat")
    write_digit_folder(tmp_path / "mixed" / "a", n=5)      # 8x8 in mixed/a/digit_k/
    Image.new("L", (10, 12)).save(tmp_path / "mixed" / "a" / "odd.png")
    Image.new("L", (10, 12)).save(tmp_path / "mixed" / "b.png")
    (tmp_path / "mixed" / "c").mkdir()
    (tmp_path / "mixed" / "c" / "x.png").write_bytes(b"not a png")
    Image.new("L", (10, 12)).save(tmp_path / "mixed" / "c" / "y.png")
    with pytest.raises(DataError, match="differ in size .*set data.image_size"):
        load_dataset(tmp_path / "mixed", val_fraction=0.0)
    ds = load_dataset(tmp_path / "mixed", image_size=8, val_fraction=0.0)
    assert ds.X.shape[1:] == (1, 8, 8)
    assert any("unreadable image" in n and "x.png" in n for n in ds.notes)
    assert any("outside the class subfolders" in n for n in ds.notes)


def test_check_data_on_an_image_folder_without_a_spec(tmp_path):
    write_digit_folder(tmp_path / "img", n=100)
    rep = check_data(Options(data=str(tmp_path / "img"), quiet=True))
    assert "D104" in codes(rep) and "D107" not in codes(rep)


# ---- the user's own Dataset ------------------------------------------------------------------------------

USER_MODULE = '''
import numpy as np
import torch
from torch.utils.data import Dataset


class Points(Dataset):
    """Two features, three classes drawn around different centres; class sizes as given."""

    def __init__(self, sizes=(300, 300, 15), seed=0, as_dict=False):
        rng = np.random.default_rng(seed)
        self.x = torch.tensor(np.concatenate([rng.normal(2.0 * c, 1.0, size=(n, 2)) for c, n in enumerate(sizes)]),
                              dtype=torch.float32)
        self.y = torch.tensor([c for c, n in enumerate(sizes) for _ in range(n)])
        self.as_dict = as_dict
        self.reads = 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, idx):
        self.reads += 1
        if self.as_dict:
            return {"features": self.x[idx], "label": self.y[idx]}
        return self.x[idx], self.y[idx]


def make_dataset():
    return Points()


def make_balanced():
    return Points(sizes=(200, 200, 200))


def make_dicts():
    return Points(sizes=(50, 50, 50), as_dict=True)


def make_tensors():
    ds = Points(sizes=(100, 100, 100))
    return ds.x, ds.y


def make_split():
    return Points(sizes=(100, 100, 100), seed=1), Points(sizes=(20, 20, 20), seed=2)


def make_broken():
    raise FileNotFoundError("/data/train not found")


BIG = Points(sizes=(2000, 2000, 2000))
'''

MLP = [{"type": "linear", "out": 16}, {"type": "relu"}, {"type": "linear", "out": 3}]


@pytest.fixture()
def user_dir(tmp_path):
    (tmp_path / "my_data.py").write_text(textwrap.dedent(USER_MODULE))
    return tmp_path


def test_full_report_on_a_user_dataset_finds_the_class_imbalance(user_dir, one_thread):
    spec = write_spec(user_dir, {"dataset": "my_data:make_dataset"}, MLP, lr=0.01)
    rep = full_report(Options(config=str(spec), budget=60, quiet=True))
    d109 = next(f for f in rep.findings if f.code == "D109")
    assert "ratio 20" in d109.message and d109.patch == {"loss.class_weights": "balanced"}
    assert rep.inputs["data"] == "my_data:make_dataset"
    assert rep.probes["lr"]["recommended"] is not None    # the probes trained on the Dataset's items


def test_a_balanced_user_dataset_has_no_imbalance_finding(user_dir):
    spec = load_spec(write_spec(user_dir, {"dataset": "my_data:make_balanced"}, MLP))
    rep = check_data(Options(config=str(user_dir / "spec.yaml"), quiet=True))
    assert "D109" not in codes(rep)
    ds = load_from_spec(spec)
    assert ds.X.shape == (480, 2) and ds.n_val == 120 and ds.X.dtype == np.float32


def test_user_dataset_forms(user_dir):
    def load(data: dict):
        return load_from_spec(parse_spec({"data": data, "model": {"layers": MLP}, "loss": "cross_entropy"},
                                         user_dir))
    d = load({"dataset": "my_data:make_dicts", "x_key": "features", "y_key": "label", "val_fraction": 0.0})
    assert d.X.shape == (150, 2) and sorted(set(d.y.tolist())) == [0, 1, 2]
    with pytest.raises(DataError, match="dicts with keys features, label; set data.x_key"):
        load({"dataset": "my_data:make_dicts"})
    t = load({"dataset": "my_data:make_tensors", "val_fraction": 0.0})
    assert t.X.shape == (300, 2) and t.task == "classification"
    s = load({"dataset": "my_data:make_split"})
    assert s.n_train == 300 and s.n_val == 60 and "validation" in s.val_source
    # a Dataset object at module level, bigger than max_rows: a seeded sample, read item by item
    b1 = load({"dataset": "my_data:BIG", "max_rows": 250, "val_fraction": 0.0})
    b2 = load({"dataset": "my_data:BIG", "max_rows": 250, "val_fraction": 0.0})
    assert b1.n_train == 250 and b1.n_rows_read == 6000 and np.array_equal(b1.X, b2.X)
    assert any("sample of 250 of the 6000" in n for n in b1.notes)
    assert len(set(b1.y.tolist())) == 3                    # a random sample, not the first 250 items
    arrays = prepare_arrays(b1)
    assert arrays.X.shape == (250, 2) and arrays.n_classes == 3


def test_user_dataset_errors_are_one_line(user_dir):
    def load(ref: str):
        return load_from_spec(parse_spec({"data": {"dataset": ref}, "model": {"layers": MLP},
                                          "loss": "cross_entropy"}, user_dir))
    with pytest.raises(DataError, match="calling it raised FileNotFoundError: /data/train not found"):
        load("my_data:make_broken")
    with pytest.raises(UsageError, match="has no attribute make_datset; did you mean make_dataset"):
        load("my_data:make_datset")
    with pytest.raises(UsageError, match="cannot import no_such_module"):
        load("no_such_module:make")
    # in full-report an unusable Dataset is D100, and the rest of the report still says what it can
    spec = write_spec(user_dir, {"dataset": "my_data:make_broken"}, MLP)
    rep = full_report(Options(config=str(spec), budget=30, quiet=True))
    assert "D100" in codes(rep) and "FileNotFoundError" in next(f for f in rep.findings if f.code == "D100").message


def test_spec_keys_are_validated(tmp_path):
    base = {"model": {"layers": MLP}, "loss": "cross_entropy"}
    with pytest.raises(UsageError, match="package.module:function"):
        parse_spec({**base, "data": {"dataset": "my_data.make"}})
    with pytest.raises(UsageError, match="not both"):
        parse_spec({**base, "data": {"dataset": "my_data:make", "path": "x.csv"}})
    with pytest.raises(UsageError, match="height, width"):
        parse_spec({**base, "data": {"path": "images/", "image_size": [8, 8, 3]}})
    with pytest.raises(UsageError, match="image_size"):
        parse_spec({**base, "data": {"path": "images/", "image_size": 0}})
    assert parse_spec({**base, "data": {"path": "images/", "image_size": [32, 48]}}).data.image_size == [32, 48]
