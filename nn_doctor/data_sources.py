"""The data a PyTorch user already has: a folder of images with one subfolder per class, or their own
`torch.utils.data.Dataset` (`data.dataset: my_module:make_dataset`).

Both become the in-memory array Dataset (data.py) that every D check and every probe reads: a seeded
sample of at most `data.max_rows` items (DEFAULT_MAX_ITEMS when unset), so the probes stay fast on a data
set of any size. Nothing is converted on the way: pixels stay the integers they are in the files (so D104
sees raw 0-255 pixels), class folders become class labels (so D109 sees the class balance).

Image folders follow torchvision's ImageFolder layout (root/class_name/**/image.ext, classes in sorted
order, the same extensions) and are read with Pillow: torchvision's wheels on PyPI are built against the
CUDA torch and do not import next to the CPU build this project is tested with (checked with
torchvision 0.28.0 and torch 2.13.0+cpu: "operator torchvision::nms does not exist"). Pillow is the
optional extra `vision`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset, build_dataset
from .errors import DataError, UsageError

DEFAULT_MAX_ITEMS = 2000          # items read when data.max_rows is unset: ~150-step probes at batch 64 see each
                                  # item ~5 times; a larger sample costs reading time, not diagnostic power
MAX_SAMPLE_BYTES = 512 * 2 ** 20  # ... and fewer when the sample would pass 512 MiB as float32 (what the probes
                                  # train on): 2000 RGB images of 224 x 224 would be 1.2 GB
# torchvision.datasets.folder.IMG_EXTENSIONS
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
GRAY_MODES = {"1", "L", "LA", "P;L"}   # Pillow modes read as one channel; every other mode is read as RGB
MAX_BAD_FILES_NAMED = 3          # unreadable files named in a note (the count says how many)
MAX_CLASSES_NAMED = 5            # class folders named in the class-numbering note


def _cap(max_rows: int | None, item_bytes: int) -> int:
    by_memory = max(1, MAX_SAMPLE_BYTES // max(1, item_bytes))
    return min(max_rows or DEFAULT_MAX_ITEMS, by_memory)


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def _sample_note(what: str, taken: int, total: int, max_rows: int | None) -> str | None:
    if taken >= total:
        return None
    why = f"data.max_rows {max_rows}" if max_rows and taken == max_rows else \
        f"at most {DEFAULT_MAX_ITEMS} items unless data.max_rows is set" if taken == DEFAULT_MAX_ITEMS else \
        f"{MAX_SAMPLE_BYTES // 2 ** 20} MiB of memory at most"
    return f"checked a seeded sample of {taken} of the {total} {what} ({why})"


# ---- image folders -----------------------------------------------------------------------------------

def _pil():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise UsageError("reading an image folder needs Pillow: pip install 'nn-doctor[vision]' "
                         "(or pip install pillow)") from None
    return Image, UnidentifiedImageError


def _size(image_size: Any) -> tuple[int, int] | None:
    """data.image_size -> (height, width); None keeps the files' own size."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def image_files(root: Path) -> tuple[list[str], list[tuple[Path, str]], list[str]]:
    """(classes, [(file, class)], notes): ImageFolder's layout, classes sorted by name."""
    if not root.exists():
        raise DataError(f"image folder not found: {root}")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not subdirs:
        if loose:
            raise DataError(f"{root}: the images lie directly in the folder; put them in one subfolder per class "
                            f"({root}/cat/..., {root}/dog/...)")
        raise DataError(f"{root}: no class subfolders (expected {root}/<class name>/<image files>)")
    files: list[tuple[Path, str]] = []
    classes, empty = [], []
    for d in subdirs:
        mine = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not mine:
            empty.append(d.name)
            continue
        classes.append(d.name)
        files += [(p, d.name) for p in mine]
    notes = []
    if empty:
        notes.append(f"{root}: class folder(s) without images left out: {', '.join(empty[:5])}"
                     + (" ..." if len(empty) > 5 else ""))
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class subfolders")
    if loose:
        notes.append(f"{root}: {len(loose)} image file(s) outside the class subfolders were left out")
    return classes, files, notes


def read_images(root: Path, image_size: Any, max_rows: int | None, seed: int
                ) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """A seeded sample of an image folder as (X uint8 (N, C, H, W), y class names, files in all, notes)."""
    Image, Unidentified = _pil()
    classes, files, notes = image_files(root)
    size = _size(image_size)
    bad: list[str] = []

    def header(p: Path):
        try:
            with Image.open(p) as im:
                return im.mode, im.size
        except (Unidentified, OSError, ValueError) as err:
            bad.append(f"{p.name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
            return None

    # the memory cap needs the item size: from data.image_size, else from the first readable file
    first = next((h for h in (header(p) for p, _ in files[:20]) if h is not None), None)
    if first is None:
        raise DataError(f"{root}: none of the first image files could be read ({'; '.join(bad[:3])})")
    hw = size or (first[1][1], first[1][0])
    channels = 1 if first[0] in GRAY_MODES else 3
    take = _sample(len(files), _cap(max_rows, channels * hw[0] * hw[1] * 4), seed)
    bad.clear()
    picked = [files[i] for i in take]
    modes = [header(p) for p, _ in picked]
    keep = [(p, c) for (p, c), h in zip(picked, modes) if h is not None]
    if not keep:
        raise DataError(f"{root}: no image could be read ({'; '.join(bad[:MAX_BAD_FILES_NAMED])})")
    gray = all(h[0] in GRAY_MODES for h in modes if h is not None)
    mode = "L" if gray else "RGB"
    if size is None:
        sizes = {h[1] for h in modes if h is not None}
        if len(sizes) > 1:
            a, b = sorted(sizes)[:2]
            raise DataError(f"{root}: the images differ in size ({a[1]}x{a[0]} and {b[1]}x{b[0]}, height x width); "
                            f"set data.image_size to resize them (e.g. data.image_size: 64)")
    arrays, labels = [], []
    for p, c in keep:
        try:
            with Image.open(p) as im:
                im = im.convert(mode)
                if size is not None and im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(im, dtype=np.uint8))
                labels.append(c)
        except (Unidentified, OSError, ValueError) as err:
            bad.append(f"{p.name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    if not arrays:
        raise DataError(f"{root}: no image could be read ({'; '.join(bad[:MAX_BAD_FILES_NAMED])})")
    X = np.stack(arrays)
    X = X[:, None, :, :] if gray else np.ascontiguousarray(X.transpose(0, 3, 1, 2))   # (N, C, H, W), torch's layout
    index = {c: i for i, c in enumerate(classes)}        # ImageFolder's class_to_idx: sorted folder names
    y = np.array([index[c] for c in labels], dtype=np.int64)
    shown = ", ".join(f"{i} = {c}" for i, c in enumerate(classes[:MAX_CLASSES_NAMED]))
    notes.append(f"{root}: {len(classes)} classes from the folder names, numbered in sorted order as torchvision's "
                 f"ImageFolder does ({shown}{', ...' if len(classes) > MAX_CLASSES_NAMED else ''})")
    if bad:
        notes.append(f"{root}: {len(bad)} unreadable image file(s) left out ({'; '.join(bad[:MAX_BAD_FILES_NAMED])}"
                     + (" ..." if len(bad) > MAX_BAD_FILES_NAMED else "") + ")")
    note = _sample_note(f"images of {root}", len(keep) + len(bad), len(files), max_rows)
    if note:
        notes.append(note)
    missing = sorted(set(classes) - set(labels))
    if missing:
        notes.append(f"{root}: the sample holds no image of class(es) {', '.join(missing[:5])}")
    return X, y, len(files), notes


def load_image_folder(root: Path, *, val_path: Any = None, val_fraction: float = 0.2, task: str | None = None,
                      max_rows: int | None = None, seed: int = 0, image_size: Any = None) -> Dataset:
    """An image folder (one subfolder per class) as an array Dataset; `val_path`: a second folder laid out alike."""
    X, y, n_files, notes = read_images(Path(root), image_size, max_rows, seed)
    val = None
    if val_path is not None:
        vroot = Path(val_path)
        if not vroot.is_dir():
            raise DataError(f"the validation data of an image folder must be an image folder too: {vroot}")
        if image_size is None:   # the validation images must match the training images' size
            image_size = list(X.shape[2:])
        Xv, yv, _, vnotes = read_images(vroot, image_size, max_rows, seed)
        if Xv.shape[1] != X.shape[1]:   # grey in one folder, colour in the other: read both as RGB
            X, Xv = (np.repeat(a, 3, axis=1) if a.shape[1] == 1 else a for a in (X, Xv))
        val, notes = (Xv, yv, str(vroot)), notes + vnotes
    return build_dataset(X, y, source=str(root), kind="array", target=["class folder"], n_rows_read=n_files,
                         task=task, val=val, val_fraction=val_fraction, seed=seed, notes=notes)


# ---- the user's Dataset -------------------------------------------------------------------------------

def _is_array(v: Any) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype")


def _is_dataset(v: Any) -> bool:
    return not _is_array(v) and not isinstance(v, (str, bytes, dict)) and \
        (hasattr(v, "__getitem__") or hasattr(v, "__iter__"))


def _numpy(v: Any) -> np.ndarray:
    """A tensor, an array, a PIL image or a number -> ndarray (a PIL image as (C, H, W), torch's layout)."""
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        return v.detach().cpu().numpy()
    if hasattr(v, "getbands") and hasattr(v, "size"):      # a PIL image: no ToTensor() in the transform
        a = np.asarray(v)
        return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))
    return np.asarray(v)


def _pair(item: Any, x_key: str, y_key: str, ref: str) -> tuple[Any, Any]:
    if isinstance(item, dict):
        if x_key in item and y_key in item:
            return item[x_key], item[y_key]
        raise DataError(f"data.dataset '{ref}': its items are dicts with keys {', '.join(map(str, list(item)[:8]))}; "
                        f"set data.x_key and data.y_key to the input's and the target's keys")
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise DataError(f"data.dataset '{ref}': an item must be an (input, target) pair or a dict, got "
                    f"{type(item).__name__}")


def _stack(values: list[np.ndarray], what: str, ref: str) -> np.ndarray:
    shapes = {v.shape for v in values}
    if len(shapes) > 1:
        a, b = sorted(shapes, key=str)[:2]
        raise DataError(f"data.dataset '{ref}': the {what}s differ in shape ({a} and {b}); make them one size "
                        f"in the Dataset (e.g. a Resize in its transform)")
    return np.stack(values)


def _items(ds: Any, max_rows: int | None, seed: int, x_key: str, y_key: str, ref: str,
           what: str) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """A seeded sample of a map-style Dataset (len + indexing), or the first items of an iterable one."""
    notes: list[str] = []

    def get(i: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            item = ds[int(i)]
        except Exception as err:   # the user's __getitem__: one line, not their traceback
            raise DataError(f"data.dataset '{ref}': reading item {i} raised {type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}") from None
        x, y = _pair(item, x_key, y_key, ref)
        return _numpy(x), _numpy(y)

    try:
        n = len(ds)
    except TypeError:
        n = None
    if n is not None and hasattr(ds, "__getitem__"):
        if n == 0:
            raise DataError(f"data.dataset '{ref}': the {what} Dataset is empty")
        x0, y0 = get(0)
        take = _sample(n, _cap(max_rows, x0.size * 4), seed)
        pairs = [(x0, y0) if i == 0 else get(i) for i in take]
        note = _sample_note(f"items of the {what} Dataset", len(take), n, max_rows)
    else:   # an IterableDataset: no length, no indexing; its first items
        cap = max_rows or DEFAULT_MAX_ITEMS
        pairs = []
        try:
            for item in ds:
                x, y = _pair(item, x_key, y_key, ref)
                pairs.append((_numpy(x), _numpy(y)))
                if len(pairs) == 1:
                    cap = _cap(max_rows, pairs[0][0].size * 4)
                if len(pairs) >= cap:
                    break
        except DataError:
            raise
        except Exception as err:
            raise DataError(f"data.dataset '{ref}': iterating it raised {type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}") from None
        if not pairs:
            raise DataError(f"data.dataset '{ref}': the {what} Dataset yielded no items")
        n = len(pairs)
        note = (f"an iterable {what} Dataset has no length: checked its first {len(pairs)} items "
                f"(not a random sample)") if len(pairs) >= cap else None
    if note:
        notes.append(note)
    X = _stack([p[0] for p in pairs], "input", ref)
    y = _stack([p[1] for p in pairs], "target", ref)
    return X, y, int(n), notes


def _arrays(X: Any, y: Any, max_rows: int | None, seed: int, ref: str) -> tuple[np.ndarray, np.ndarray, int, list]:
    X, y = _numpy(X), _numpy(y)
    if X.ndim < 2:
        raise DataError(f"data.dataset '{ref}': X must have a sample axis and a feature axis, got shape {X.shape}")
    if len(X) != len(y):
        raise DataError(f"data.dataset '{ref}': X has {len(X)} samples but y has {len(y)}")
    take = _sample(len(X), _cap(max_rows, int(np.prod(X.shape[1:])) * 4), seed)
    note = _sample_note("rows", len(take), len(X), max_rows)
    return X[take], y[take], len(X), [note] if note else []


def load_user_dataset(spec: Any, *, task: str | None = None, seed: int = 0) -> Dataset:
    """`data.dataset`: import it from the spec's folder, call it when it is a function or a class, and take a
    seeded sample of what it gives: a Dataset, (train Dataset, validation Dataset), or arrays/tensors (X, y)."""
    from .model import import_object   # imports torch: a user Dataset needs it anyway
    d = spec.data
    ref = d.dataset
    obj = import_object(ref, spec.base_dir, "data.dataset")
    made = obj
    if isinstance(obj, type) or (callable(obj) and not _is_dataset(obj) and not _is_array(obj)):
        try:
            made = obj()
        except Exception as err:   # the user's code: its error in one line, as an unreadable-data problem
            raise DataError(f"data.dataset '{ref}': calling it raised {type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}") from None
    mr, notes = d.max_rows, []
    val = None
    if isinstance(made, (tuple, list)) and len(made) == 2 and all(_is_array(v) for v in made):
        X, y, n, notes = _arrays(made[0], made[1], mr, seed, ref)
    elif isinstance(made, (tuple, list)) and len(made) == 2 and all(_is_dataset(v) for v in made):
        X, y, n, notes = _items(made[0], mr, seed, d.x_key, d.y_key, ref, "training")
        Xv, yv, _, vnotes = _items(made[1], mr, seed, d.x_key, d.y_key, ref, "validation")
        val, notes = (Xv, yv, f"{ref} (validation)"), notes + vnotes
    elif _is_dataset(made):
        X, y, n, notes = _items(made, mr, seed, d.x_key, d.y_key, ref, "training")
    else:
        raise DataError(f"data.dataset '{ref}': expected a torch.utils.data.Dataset, (train, validation) Datasets "
                        f"or arrays (X, y); got {type(made).__name__}")
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise DataError(f"data.dataset '{ref}': the inputs are {X.dtype}, not numbers")
    if y.ndim == 2 and y.shape[1] == 1 and task != "multilabel":
        y = y[:, 0]   # (N, 1) targets, as some Datasets return them
    if val is not None and val[1].ndim == 2 and val[1].shape[1] == 1 and task != "multilabel":
        val = (val[0], val[1][:, 0], val[2])
    return build_dataset(X, y, source=ref, kind="array", target=["target"],
                         n_rows_read=n, task=task, val=val, val_fraction=d.val_fraction, seed=seed, notes=notes)

