"""Data set loaders on small files written in each real format (IDX, gzipped IDX, MATLAB v5) and on digits."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.ndimage

from models import datasets
from models.errors import ModelError

# --------------------------------------------------------------------------------------------- helpers


def write_idx(
    path: Path,
    array: np.ndarray,
    *,
    magic: int | None = None,
    dims: tuple[int, ...] | None = None,
    gz: bool = False,
    cut: int = 0,
) -> Path:
    """Write `array` (uint8) as an IDX file: big-endian magic, dims, raw bytes; `cut` drops tail bytes."""
    array = np.asarray(array, dtype=np.uint8)
    dims = array.shape if dims is None else dims
    magic = (0x0800 | array.ndim) if magic is None else magic
    blob = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + array.tobytes()
    if cut:
        blob = blob[:-cut]
    if gz:
        blob = gzip.compress(blob)
        path = path.with_name(path.name + ".gz")
    path.write_bytes(blob)
    return path


def make_idx_dir(
    directory: Path,
    *,
    n_train: int = 7,
    n_test: int = 5,
    gz: bool | tuple[bool, bool, bool, bool] = False,
    seed: int = 1,
) -> dict[str, np.ndarray]:
    """Write the four standard IDX files of random 28x28 images and labels; return what was written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays["train_images"][0, 0, 0] = 255  # the extremes scale to exactly 1 and 0
    arrays["train_images"][0, 0, 1] = 0
    gzs = (gz,) * 4 if isinstance(gz, bool) else gz
    for (key, arr), zipped in zip(arrays.items(), gzs, strict=True):
        write_idx(directory / datasets.IDX_FILES[key], arr, gz=zipped)
    return arrays


def svhn_arrays(n: int, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Random SVHN-layout arrays: X (32, 32, 3, n) uint8 and y (n, 1) labels cycling through 1..10."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
    return x, y


def expected_gray(x: np.ndarray) -> np.ndarray:
    """Grayscale computed per image with a dot product, independent of the loader's vectorized formula."""
    out = np.empty((x.shape[3], 32, 32, 1))
    for i in range(x.shape[3]):
        out[i, :, :, 0] = x[:, :, :, i].astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140]) / 255.0
    return out


def assert_one_line_error(exc: pytest.ExceptionInfo[ModelError], *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ----------------------------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True, (True, False, False, True)], ids=["plain", "gzip", "mixed"])
def test_mnist_idx_loads_padded_and_scaled(tmp_path: Path, gz: bool | tuple[bool, ...]) -> None:
    arrays = make_idx_dir(tmp_path, gz=gz)
    ds = datasets.load(f"mnist:{tmp_path}")
    assert ds.name == "mnist"
    assert ds.x_train.shape == (7, 32, 32, 1) and ds.x_test.shape == (5, 32, 32, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    for x, images in ((ds.x_train, arrays["train_images"]), (ds.x_test, arrays["test_images"])):
        np.testing.assert_allclose(x[:, 2:30, 2:30, 0], images / 255.0, rtol=1e-6)
        border = np.ones((32, 32), bool)
        border[2:30, 2:30] = False
        assert not x[:, border].any()
    assert ds.x_train[0, 2, 2, 0] == 1.0 and ds.x_train[0, 2, 3, 0] == 0.0
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.class_names == tuple("0123456789")


def test_fashion_has_the_standard_class_names(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, gz=True)
    ds = datasets.load(f"fashion:{tmp_path}")
    assert ds.name == "fashion"
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert len(ds.class_names) == 10 and "Sneaker" in ds.class_names


def test_gzipped_and_plain_files_give_the_same_fingerprint(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "a", gz=False)
    make_idx_dir(tmp_path / "b", gz=True)
    assert (
        datasets.load(f"mnist:{tmp_path / 'a'}").fingerprint
        == datasets.load(f"mnist:{tmp_path / 'b'}").fingerprint
    )
    assert (
        datasets.load(f"mnist:{tmp_path / 'a'}").fingerprint
        != datasets.load(f"fashion:{tmp_path / 'a'}").fingerprint
    )


def _break_idx(directory: Path, case: str) -> tuple[Path, str]:
    """Overwrite one of the four files with a malformed variant; return its path and an expected fragment."""
    images = np.zeros((7, 28, 28), np.uint8)
    target = directory / datasets.IDX_FILES["train_images"]
    if case == "bad magic":
        write_idx(target, images, magic=0x00000801)
        return target, "0x00000803"
    if case == "wrong dims":
        write_idx(target, np.zeros((7, 27, 28), np.uint8))
        return target, "(N, 28, 28)"
    if case == "truncated":
        write_idx(target, images, cut=5)
        return target, "truncated"
    if case == "truncated gzip header":
        target.unlink()
        gz_target = target.with_name(target.name + ".gz")
        gz_target.write_bytes(gzip.compress(struct.pack(">I", 0x803) + b"\x00\x00"))
        return gz_target, "truncated IDX header"
    if case == "corrupt gzip":
        target.unlink()
        gz_target = target.with_name(target.name + ".gz")
        gz_target.write_bytes(gzip.compress(bytes(100))[:20])
        return gz_target, "gzip"
    if case == "empty file":
        target.write_bytes(b"")
        return target, "0x00000803"
    labels = directory / datasets.IDX_FILES["test_labels"]
    if case == "labels out of range":
        write_idx(labels, np.array([0, 1, 2, 3, 10], np.uint8))
        return labels, "0..9"
    if case == "count mismatch":
        write_idx(labels, np.array([0, 1, 2, 3], np.uint8))
        return labels, "expected 5 labels"
    if case == "labels with image dims":
        write_idx(labels, np.zeros((5, 28, 28), np.uint8), magic=0x801, dims=(5,))
        return labels, "trailing data"
    if case == "missing file":
        labels.unlink()
        return directory, "t10k-labels-idx1-ubyte"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "bad magic",
        "wrong dims",
        "truncated",
        "truncated gzip header",
        "corrupt gzip",
        "empty file",
        "labels out of range",
        "count mismatch",
        "labels with image dims",
        "missing file",
    ],
)
def test_malformed_idx_raises_naming_the_path(tmp_path: Path, case: str) -> None:
    make_idx_dir(tmp_path)
    path, fragment = _break_idx(tmp_path, case)
    with pytest.raises(ModelError) as exc:
        datasets.load(f"mnist:{tmp_path}")
    assert_one_line_error(exc, "mnist:", str(path), fragment)


def test_missing_mnist_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as exc:
        datasets.load(f"fashion:{tmp_path / 'nope'}")
    assert_one_line_error(exc, str(tmp_path / "nope"), "train-images-idx3-ubyte")


# ------------------------------------------------------------------------------------------------ SVHN


def test_svhn_directory_converts_to_grayscale_and_maps_label_10_to_0(tmp_path: Path) -> None:
    x_train, y_train = svhn_arrays(12, seed=3)
    x_test, y_test = svhn_arrays(6, seed=4)
    x_train[:, :, :, 0] = 255  # white maps to 0.9999 (the coefficients sum to 0.9999), black to 0
    x_train[:, :, :, 1] = 0
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x_train, "y": y_train})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x_test, "y": y_test})
    ds = datasets.load(f"svhn:{tmp_path}")
    assert ds.name == "svhn" and ds.x_train.shape == (12, 32, 32, 1) and ds.x_test.shape == (6, 32, 32, 1)
    np.testing.assert_allclose(ds.x_train, expected_gray(x_train), rtol=1e-6)
    np.testing.assert_allclose(ds.x_test, expected_gray(x_test), rtol=1e-6)
    np.testing.assert_allclose(ds.x_train[0], 0.9999, rtol=1e-6)
    assert not ds.x_train[1].any()
    # a pixel by hand: the luminance formula, not a plain channel mean
    r, g, b = (int(v) for v in x_test[5, 7, :, 2])
    assert ds.x_test[2, 5, 7, 0] == pytest.approx((0.2989 * r + 0.5870 * g + 0.1140 * b) / 255, rel=1e-6)
    np.testing.assert_array_equal(ds.y_train, [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2])
    np.testing.assert_array_equal(ds.y_test, [1, 2, 3, 4, 5, 6])
    assert ds.y_train.dtype == np.int64


def test_svhn_single_file_is_split_stratified_with_the_seed(tmp_path: Path) -> None:
    x, y = svhn_arrays(50, seed=5)
    path = tmp_path / "test_32x32.mat"
    scipy.io.savemat(path, {"X": x, "y": y})
    ds = datasets.load(f"svhn:{path}", seed=7)
    assert len(ds.x_train) == 40 and len(ds.x_test) == 10
    assert sorted(ds.y_test.tolist()) == list(range(10))  # 5 of each class: one of each in the 20 % test
    # the two parts are exactly the file's images, each once
    gray = expected_gray(x)[:, :, :, 0].reshape(50, -1)
    got = np.concatenate([ds.x_train, ds.x_test])[:, :, :, 0].reshape(50, -1)
    order = [int(np.argmin(np.abs(gray - row).sum(axis=1))) for row in got]
    assert sorted(order) == list(range(50))
    np.testing.assert_allclose(got, gray[order], rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([ds.y_train, ds.y_test]), y[order, 0] % 10)
    assert datasets.load(f"svhn:{path}", seed=7).fingerprint == ds.fingerprint
    assert datasets.load(f"svhn:{path}", seed=8).fingerprint != ds.fingerprint


def _svhn_case(tmp_path: Path, case: str) -> tuple[str, Path, str]:
    """Write a malformed SVHN input; return (spec, path named in the error, expected fragment)."""
    x, y = svhn_arrays(4)
    path = tmp_path / "train_32x32.mat"
    if case == "missing directory":
        return f"svhn:{tmp_path / 'nope'}", tmp_path / "nope", "train_32x32.mat"
    if case == "missing test file":
        scipy.io.savemat(path, {"X": x, "y": y})
        return f"svhn:{tmp_path}", tmp_path / "test_32x32.mat", "no such file"
    contents: dict[str, np.ndarray] = {
        "no X": {"foo": x, "y": y},
        "no y": {"X": x},
        "X wrong shape": {"X": x[:, :, :1, :], "y": y},
        "X float": {"X": x.astype(np.float64), "y": y},
        "y wrong shape": {"X": x, "y": np.ones((5, 1))},
        "label 0": {"X": x, "y": np.array([[1], [0], [3], [4]])},
        "label 11": {"X": x, "y": np.array([[1], [2], [11], [4]])},
    }.get(case)
    if contents is not None:
        scipy.io.savemat(path, contents)
    elif case == "not a mat file":
        path.write_bytes(b"this is not a MATLAB file at all\n" * 10)
    else:
        raise AssertionError(case)
    fragment = {
        "no X": "expected key 'X' of shape (32, 32, 3, N) uint8, found keys ['foo', 'y']",
        "no y": "expected key 'y' of shape (4, 1)",
        "X wrong shape": "found shape (32, 32, 1, 4)",
        "X float": "dtype float64",
        "y wrong shape": "found shape (5, 1)",
        "label 0": "labels 1..10",
        "label 11": "labels 1..10",
        "not a mat file": ".mat",
    }[case]
    return f"svhn:{path}", path, fragment


@pytest.mark.parametrize(
    "case",
    [
        "missing directory",
        "missing test file",
        "no X",
        "no y",
        "X wrong shape",
        "X float",
        "y wrong shape",
        "label 0",
        "label 11",
        "not a mat file",
    ],
)
def test_malformed_svhn_raises_naming_the_path(tmp_path: Path, case: str) -> None:
    spec, path, fragment = _svhn_case(tmp_path, case)
    with pytest.raises(ModelError) as exc:
        datasets.load(spec)
    assert_one_line_error(exc, "svhn:", str(path), fragment)


def test_svhn_single_file_too_small_to_stratify(tmp_path: Path) -> None:
    x, y = svhn_arrays(10)  # one image per class cannot be split stratified
    path = tmp_path / "test_32x32.mat"
    scipy.io.savemat(path, {"X": x, "y": y})
    with pytest.raises(ModelError) as exc:
        datasets.load(f"svhn:{path}")
    assert_one_line_error(exc, str(path), "stratified")


# ---------------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> datasets.Dataset:
    return datasets.load("digits")


def test_digits_split_sizes_and_stratification(digits: datasets.Dataset) -> None:
    from sklearn.datasets import load_digits

    assert digits.name == "digits"
    assert digits.x_train.shape == (1400, 32, 32, 1) and digits.x_test.shape == (397, 32, 32, 1)
    assert digits.y_train.shape == (1400,) and digits.y_test.shape == (397,)
    assert digits.x_train.dtype == np.float32 and digits.y_test.dtype == np.int64
    full = np.bincount(load_digits().target, minlength=10)
    test = np.bincount(digits.y_test, minlength=10)
    assert (test > 0).all()
    # stratified: each class's share of the test set is its share of the whole, to within one image
    assert np.abs(test - full * 397 / 1797).max() < 1.0
    np.testing.assert_array_equal(test + np.bincount(digits.y_train, minlength=10), full)
    for x in (digits.x_train, digits.x_test):
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert digits.x_train.max() == 1.0  # a 16 in the 8x8 source stays 16/16 at a corner-aligned sample


def test_digits_images_are_bilinear_resizes_of_the_sklearn_images(digits: datasets.Dataset) -> None:
    from sklearn.datasets import load_digits

    source = load_digits().images
    reference = np.stack([scipy.ndimage.zoom(img, 4, order=1) for img in source]) / 16.0
    assert reference.shape == (1797, 32, 32)
    got = np.concatenate([digits.x_train, digits.x_test])[..., 0]
    # match each loaded image to its nearest reference (squared distances via one matrix product)
    flat_got = got.reshape(1797, -1).astype(np.float64)
    flat_ref = reference.reshape(1797, -1)
    dist = (flat_got**2).sum(1)[:, None] + (flat_ref**2).sum(1)[None, :] - 2 * flat_got @ flat_ref.T
    index = dist.argmin(axis=1)
    np.testing.assert_allclose(got, reference[index], atol=1e-6)
    np.testing.assert_array_equal(
        np.concatenate([digits.y_train, digits.y_test]), load_digits().target[index]
    )
    assert len(set(index.tolist())) == 1797  # each source image exactly once (the 1,797 are all distinct)
    # bilinear with aligned corners keeps the four corner pixels exactly
    corners = source[:, [0, 0, 7, 7], [0, 7, 0, 7]] / 16.0
    np.testing.assert_allclose(got[:, [0, 0, 31, 31], [0, 31, 0, 31]], corners[index], atol=1e-7)


def test_resize_bilinear_matches_scipy_zoom_on_other_sizes() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((3, 5, 5))
    got = datasets.resize_bilinear(images, 13)
    want = np.stack([scipy.ndimage.zoom(img, 13 / 5, order=1) for img in images])
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_digits_fingerprint_is_stable_across_processes_and_depends_on_seed(digits: datasets.Dataset) -> None:
    code = "from models.datasets import load; print(load('digits').fingerprint)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == digits.fingerprint
    assert len(digits.fingerprint) == 64 and int(digits.fingerprint, 16) >= 0
    other = datasets.load("digits", seed=1)
    assert other.fingerprint != digits.fingerprint
    assert not np.array_equal(other.y_test, digits.y_test)
    assert len(other.x_test) == 397


def test_fingerprint_covers_every_pixel_label_and_name(digits: datasets.Dataset) -> None:
    def rebuilt(**changes: object) -> str:
        fields = dict(
            name=digits.name,
            x_train=digits.x_train,
            y_train=digits.y_train,
            x_test=digits.x_test,
            y_test=digits.y_test,
            class_names=digits.class_names,
        )
        fields.update(changes)
        return datasets.Dataset(**fields).fingerprint

    assert rebuilt() == digits.fingerprint
    x = digits.x_test.copy()
    x[100, 16, 16, 0] = np.nextafter(x[100, 16, 16, 0], np.float32(2))
    assert rebuilt(x_test=x) != digits.fingerprint
    y = digits.y_train.copy()
    y[0] = (y[0] + 1) % 10
    assert rebuilt(y_train=y) != digits.fingerprint
    assert rebuilt(name="other") != digits.fingerprint
    # same bytes, other split point: shapes are hashed too
    assert (
        rebuilt(x_train=digits.x_train[:-1], x_test=np.concatenate([digits.x_train[-1:], digits.x_test]))
        != digits.fingerprint
    )


def test_dataset_arrays_are_read_only(digits: datasets.Dataset) -> None:
    with pytest.raises(ValueError):
        digits.x_train[0, 0, 0, 0] = 0.5
    with pytest.raises(AttributeError):
        digits.name = "x"  # type: ignore[misc]


def test_limits_keep_the_first_samples(digits: datasets.Dataset) -> None:
    small = datasets.load("digits", limit_train=50, limit_test=20)
    assert small.x_train.shape == (50, 32, 32, 1) and small.x_test.shape == (20, 32, 32, 1)
    np.testing.assert_array_equal(small.x_train, digits.x_train[:50])
    np.testing.assert_array_equal(small.y_test, digits.y_test[:20])
    assert small.fingerprint != digits.fingerprint
    only_test = datasets.load("digits", limit_test=10)
    assert len(only_test.x_train) == 1400 and len(only_test.x_test) == 10


def test_limit_on_file_data_sets(tmp_path: Path) -> None:
    arrays = make_idx_dir(tmp_path)
    ds = datasets.load(f"mnist:{tmp_path}", limit_train=3, limit_test=100)
    assert len(ds.x_train) == 3 and len(ds.x_test) == 5
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"][:3])


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_bad_limits_raise(limit: object) -> None:
    with pytest.raises(ModelError) as exc:
        datasets.load("digits", limit_train=limit)  # type: ignore[arg-type]
    assert_one_line_error(exc, "limit_train")


# ----------------------------------------------------------------------------------------------- specs


@pytest.mark.parametrize("spec", ["cifar:/data", "emnist", ""])
def test_unknown_spec_names_the_allowed_ones(spec: str) -> None:
    with pytest.raises(ModelError) as exc:
        datasets.load(spec)
    assert_one_line_error(exc, "'digits'", "'svhn:PATH'", "'mnist:PATH'", "'fashion:PATH'")


@pytest.mark.parametrize("spec", ["mnist:", "svhn", "fashion:  "])
def test_spec_without_a_path(spec: str) -> None:
    with pytest.raises(ModelError) as exc:
        datasets.load(spec)
    assert_one_line_error(exc, "PATH")


def test_digits_takes_no_path() -> None:
    with pytest.raises(ModelError) as exc:
        datasets.load("digits:/tmp")
    assert_one_line_error(exc, "takes no path")


def test_module_does_not_import_tensorflow() -> None:
    code = "import sys, models.datasets, models.objective, models.export; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
