"""Data sets for the model factory: 32x32x1 float32 digit images in [0, 1] with int64 labels 0..9.

Specs accepted by `load`:

- ``digits`` (default): scikit-learn's bundled 1,797 real 8x8 handwritten digits (values 0..16), resized to
  32x32 by bilinear interpolation with aligned corners (the grid of `scipy.ndimage.zoom(order=1)`) and
  split, stratified with `seed`, into exactly 1,400 train and 397 test images. Needs no file or network.
- ``svhn:PATH``: SVHN cropped digits, MATLAB v5 ``.mat`` files (``X`` uint8 of shape (32, 32, 3, N),
  ``y`` of shape (N, 1) with labels 1..10 where 10 means digit 0). PATH is either a directory holding
  ``train_32x32.mat`` and ``test_32x32.mat`` (the official splits), or ONE of those ``.mat`` files, which
  is then split, stratified with `seed`, into 80 % train and 20 % test (handy when only the smaller
  ``test_32x32.mat`` is at hand). RGB becomes grayscale with the luminance formula of the reference study,
  ``0.2989 R + 0.5870 G + 0.1140 B``, then is divided by 255.
- ``mnist:PATH`` and ``fashion:PATH``: MNIST / Fashion-MNIST in IDX format. PATH is a directory holding
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
  ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz`` suffix; gzip is detected by its magic bytes).
  The 28x28 images are zero-padded by 2 pixels on each side to 32x32 (exact, no interpolation; the
  classic LeNet-5 input) and divided by 255.

`limit_train` / `limit_test` keep the first N samples of each split (the official files are not sorted by
class; the digits splits are shuffled). `seed` only matters where this module makes a split.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.errors import ModelError

IMAGE_SIZE = 32
DIGITS_TEST_SIZE = 397
SVHN_SINGLE_FILE_TEST_FRACTION = 0.2
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
LUMINANCE = (0.2989, 0.5870, 0.1140)

DIGIT_CLASS_NAMES = tuple(str(d) for d in range(10))
FASHION_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FINGERPRINT_VERSION = b"tinyml-hil dataset v1"


def _frozen(array: np.ndarray, dtype: str) -> np.ndarray:
    """A contiguous little-endian read-only copy, so the fingerprint keeps describing the arrays."""
    out = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split of 32x32x1 float32 images in [0, 1] and int64 labels; arrays are read-only."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        for attr, dtype in (("x_train", "f4"), ("y_train", "i8"), ("x_test", "f4"), ("y_test", "i8")):
            object.__setattr__(self, attr, _frozen(getattr(self, attr), dtype))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "fingerprint", _fingerprint(self))


def _fingerprint(ds: Dataset) -> str:
    """SHA-256 over the name, class names and each array's dtype, shape and bytes (a cache key)."""
    h = hashlib.sha256(_FINGERPRINT_VERSION)
    h.update(repr((ds.name, ds.class_names)).encode())
    for attr in ("x_train", "y_train", "x_test", "y_test"):
        arr = getattr(ds, attr)
        h.update(f"{attr}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def load(
    spec: str = "digits",
    *,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Dataset:
    """Load the data set named by `spec` (``digits``, ``svhn:PATH``, ``mnist:PATH``, ``fashion:PATH``)."""
    kind, sep, raw_path = spec.partition(":")
    kind = kind.strip().lower()
    if kind != "digits" and kind not in _LOADERS:
        raise ModelError(f"unknown data set spec {spec!r}; use one of {_ALLOWED}")
    for limit_name, limit in (("limit_train", limit_train), ("limit_test", limit_test)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ModelError(f"{limit_name} must be a positive integer or None, got {limit!r}")
    if kind == "digits":
        if sep:
            raise ModelError(f"data set spec {spec!r}: 'digits' is embedded and takes no path; use 'digits'")
        ds = _load_digits(seed)
    else:
        if not raw_path.strip():
            raise ModelError(f"data set spec {spec!r} has no path; use '{kind}:PATH'")
        ds = _LOADERS[kind](Path(raw_path.strip()).expanduser(), seed)
    if limit_train is None and limit_test is None:
        return ds
    return Dataset(
        name=ds.name,
        x_train=ds.x_train[:limit_train],
        y_train=ds.y_train[:limit_train],
        x_test=ds.x_test[:limit_test],
        y_test=ds.y_test[:limit_test],
        class_names=ds.class_names,
    )


# ----------------------------------------------------------------------------------------------- digits


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize [N, H, W] images to [N, size, size], bilinear with aligned corners (scipy zoom order 1 grid).

    Element-wise float64 arithmetic only (no BLAS), so the result is bit-identical on every machine.
    """
    out = np.asarray(images, dtype=np.float64)
    for axis in (1, 2):
        n_in = out.shape[axis]
        coords = np.arange(size, dtype=np.float64) * ((n_in - 1) / (size - 1)) if size > 1 else np.zeros(1)
        lo = np.minimum(np.floor(coords).astype(np.intp), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = coords - lo
        shape = [1, 1, 1]
        shape[axis] = size
        frac = frac.reshape(shape)
        out = np.take(out, lo, axis=axis) * (1.0 - frac) + np.take(out, hi, axis=axis) * frac
    return out


def _stratified_split(
    x: np.ndarray, y: np.ndarray, test_size: int | float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split into (x_train, x_test, y_train, y_test), stratified by label, reproducible with `seed`."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    except ValueError as exc:
        reason = str(exc).splitlines()[0]
        raise ModelError(
            f"{what}: cannot make a stratified train/test split ({reason}); supply more images"
        ) from None


def _load_digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = resize_bilinear(bunch.images, IMAGE_SIZE) / 16.0
    x = images[..., np.newaxis].astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = _stratified_split(x, y, DIGITS_TEST_SIZE, seed, "digits")
    return Dataset("digits", x_train, y_train, x_test, y_test, DIGIT_CLASS_NAMES)


# ------------------------------------------------------------------------------------------------- SVHN


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one SVHN .mat file into ([N, 32, 32, 1] float32 grayscale in [0, 1], [N] int64 labels 0..9)."""
    import scipy.io

    if not path.is_file():
        raise ModelError(f"svhn: {path}: no such file; expected an SVHN cropped-digits .mat file")
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise ModelError(f"svhn: {path}: MATLAB v7.3 (HDF5) file; expected a MATLAB v5 .mat file") from None
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... for non-.mat input
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"svhn: {path}: not a readable MATLAB .mat file ({reason})") from None
    found = sorted(k for k in mat if not k.startswith("__"))
    x = mat.get("X")
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        got = f"shape {x.shape} dtype {x.dtype}" if isinstance(x, np.ndarray) else f"keys {found}"
        raise ModelError(f"svhn: {path}: expected key 'X' of shape (32, 32, 3, N) uint8, found {got}")
    n = x.shape[3]
    if n == 0:
        raise ModelError(f"svhn: {path}: key 'X' holds no images; use the full SVHN file")
    y = mat.get("y")
    if not isinstance(y, np.ndarray) or y.shape not in ((n, 1), (n,)):
        got = f"shape {y.shape}" if isinstance(y, np.ndarray) else f"keys {found}"
        raise ModelError(f"svhn: {path}: expected key 'y' of shape ({n}, 1) to match X, found {got}")
    labels = y.reshape(-1)
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ModelError(f"svhn: {path}: expected numeric labels 1..10 in 'y', found dtype {labels.dtype}")
    bad = (labels < 1) | (labels > 10) | (labels != np.round(labels))
    if bad.any():
        raise ModelError(
            f"svhn: {path}: expected integer labels 1..10 in 'y' (10 means digit 0), "
            f"found {labels[bad][0].item()!r} at index {int(np.argmax(bad))}"
        )
    rgb = np.transpose(x, (3, 0, 1, 2)).astype(np.float64)
    gray = (LUMINANCE[0] * rgb[..., 0] + LUMINANCE[1] * rgb[..., 1] + LUMINANCE[2] * rgb[..., 2]) / 255.0
    return gray[..., np.newaxis].astype(np.float32), (labels.astype(np.int64) % 10)


def _load_svhn(path: Path, seed: int) -> Dataset:
    if path.is_dir():
        x_train, y_train = _read_svhn_mat(path / SVHN_FILES[0])
        x_test, y_test = _read_svhn_mat(path / SVHN_FILES[1])
    elif path.is_file():
        x, y = _read_svhn_mat(path)
        x_train, x_test, y_train, y_test = _stratified_split(
            x, y, SVHN_SINGLE_FILE_TEST_FRACTION, seed, f"svhn: {path}"
        )
    else:
        raise ModelError(
            f"svhn: {path}: no such file or directory; expected a directory holding "
            f"{' and '.join(SVHN_FILES)}, or one of those files"
        )
    return Dataset("svhn", x_train, y_train, x_test, y_test, DIGIT_CLASS_NAMES)


# -------------------------------------------------------------------------------------- MNIST / Fashion


def _read_idx(path: Path, kind: str, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) of unsigned bytes into an array [N, *item_shape]."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ModelError(f"{kind}: {path}: corrupt gzip data ({exc}); re-download the file") from None
    ndim = 1 + len(item_shape)
    header_len = 4 + 4 * ndim
    if len(raw) < 4:
        raise ModelError(f"{kind}: {path}: expected IDX magic 0x{magic:08x}, file is {len(raw)} bytes")
    (found_magic,) = struct.unpack(">I", raw[:4])
    if found_magic != magic:
        raise ModelError(
            f"{kind}: {path}: expected IDX magic 0x{magic:08x} (unsigned bytes, {ndim} dims), "
            f"found 0x{found_magic:08x}"
        )
    if len(raw) < header_len:
        raise ModelError(f"{kind}: {path}: truncated IDX header; expected {header_len} bytes, got {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    if tuple(dims[1:]) != item_shape:
        wanted = "(N" + "".join(f", {d}" for d in item_shape) + ")"
        raise ModelError(f"{kind}: {path}: expected IDX dims {wanted}, found {dims}")
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(raw) - header_len
    if found != expected:
        state = "truncated" if found < expected else "trailing data"
        raise ModelError(
            f"{kind}: {path}: {state}; expected {expected} data bytes for dims {dims}, got {found}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def _idx_path(directory: Path, kind: str, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise ModelError(f"{kind}: {directory}: missing {stem} (or {stem}.gz); expected the 4 standard IDX files")


def _load_idx_split(directory: Path, kind: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _idx_path(directory, kind, IDX_FILES[f"{split}_images"])
    labels_path = _idx_path(directory, kind, IDX_FILES[f"{split}_labels"])
    images = _read_idx(images_path, kind, IDX_IMAGES_MAGIC, (28, 28))
    labels = _read_idx(labels_path, kind, IDX_LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise ModelError(
            f"{kind}: {labels_path}: expected {len(images)} labels to match {images_path.name}, "
            f"found {len(labels)}"
        )
    if len(images) == 0:  # caught here, before TensorFlow is imported and Keras fails on an empty array
        raise ModelError(f"{kind}: {images_path}: holds no images (its header says 0); use the full "
                         f"{IDX_FILES[f'{split}_images']} file")
    if labels.size and labels.max() > 9:
        raise ModelError(f"{kind}: {labels_path}: expected labels 0..9, found {int(labels.max())}")
    pad = (IMAGE_SIZE - 28) // 2
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    return (padded[..., np.newaxis] / np.float32(255.0)).astype(np.float32), labels.astype(np.int64)


def _load_idx_dataset(kind: str, class_names: tuple[str, ...]) -> Callable[[Path, int], Dataset]:
    def loader(path: Path, seed: int) -> Dataset:
        if not path.is_dir():
            raise ModelError(
                f"{kind}: {path}: no such directory; expected a directory holding "
                f"the four IDX files ({', '.join(IDX_FILES.values())}, optionally .gz)"
            )
        x_train, y_train = _load_idx_split(path, kind, "train")
        x_test, y_test = _load_idx_split(path, kind, "test")
        return Dataset(kind, x_train, y_train, x_test, y_test, class_names)

    return loader


_LOADERS: dict[str, Callable[[Path, int], Dataset]] = {
    "svhn": _load_svhn,
    "mnist": _load_idx_dataset("mnist", DIGIT_CLASS_NAMES),
    "fashion": _load_idx_dataset("fashion", FASHION_CLASS_NAMES),
}
_ALLOWED = "'digits', 'svhn:PATH', 'mnist:PATH', 'fashion:PATH'"
