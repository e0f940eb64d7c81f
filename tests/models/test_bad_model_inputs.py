"""Issue 20, items 8 and 10: an empty IDX data set and damaged .tflite files are one line naming the file,
exit code 2, no traceback, nothing written as valid."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from models.errors import ModelError
from models.tflite_file import read_model

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
HELLO = SHARED / "hello_world_int8.tflite"  # TFLM's hello_world model: 3 FULLY_CONNECTED, int8 weights


def _idx(path: Path, magic: int, dims: tuple[int, ...], data: bytes = b"") -> None:
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + data)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_an_idx_set_with_valid_headers_and_no_images_is_refused_before_tensorflow(tmp_path: Path) -> None:
    data = tmp_path / "mnist"
    data.mkdir()
    _idx(data / "train-images-idx3-ubyte", 0x803, (0, 28, 28))
    _idx(data / "train-labels-idx1-ubyte", 0x801, (0,))
    _idx(data / "t10k-images-idx3-ubyte", 0x803, (2, 28, 28), bytes(2 * 784))
    _idx(data / "t10k-labels-idx1-ubyte", 0x801, (2,), bytes([1, 2]))
    out, cache = tmp_path / "models", tmp_path / "cache"
    r = _run("import sys\nfrom hil.cli import main\n"
             f"rc = main(['models', 'build', '--data', 'mnist:{data}', '--out', '{out}', '--cache', '{cache}'])\n"
             "print(rc, 'tensorflow' in sys.modules)")
    assert r.stdout.split() == ["2", "False"], (r.stdout, r.stderr[-800:])  # refused before TensorFlow
    assert r.stderr == (f"hil: error: mnist: {data / 'train-images-idx3-ubyte'}: holds no images (its header "
                        "says 0); use the full train-images-idx3-ubyte file\n")
    assert not out.exists()  # no partial artifacts left as if valid


def _mutants(data: bytes, n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        b = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(8, len(b) - 4)
            if rng.random() < 0.5:
                b[i] = rng.randrange(256)
            else:
                b[i:i + 4] = struct.pack("<I", rng.randrange(2**32))
        out.append(bytes(b))
    return out


@pytest.mark.skipif(not HELLO.is_file(), reason=f"{HELLO} (TFLM's hello_world model) is absent")
def test_damaged_flatbuffers_are_named_corrupt_in_tflite_terms() -> None:
    """Every failure of the reader on 1,500 mutants names the file, says it is corrupt and carries no Python
    exception text (`NoneType`, `unpack_from`, `is not a constant`)."""
    seen = set()
    for blob in _mutants(HELLO.read_bytes(), 1500, seed=20):
        try:
            model = read_model(blob, source="m.tflite")
            model.sparsity()
        except ModelError as exc:
            msg = str(exc)
            seen.add(msg.split(":")[1].strip())
            assert msg.startswith("m.tflite: corrupt TFLite "), msg
            assert "the file is damaged" in msg and "\n" not in msg, msg
            for python in ("NoneType", "unpack_from", "subscriptable", "Error:", "is not a constant"):
                assert python not in msg, msg
    assert {"corrupt TFLite flatbuffer", "corrupt TFLite model"} <= seen  # both paths were exercised


@pytest.mark.skipif(not HELLO.is_file(), reason=f"{HELLO} (TFLM's hello_world model) is absent")
def test_a_weight_buffer_of_the_wrong_length_is_named_with_its_tensor(tmp_path: Path) -> None:
    """`hil models inspect` on a model whose weight tensor's buffer no longer fits its shape."""
    data = bytearray(HELLO.read_bytes())
    model = read_model(bytes(data))
    weight = model.weight_tensors()[0]
    values = model.constant(weight).tobytes()
    at = bytes(data).index(values)  # the buffer's bytes; its length is the u32 before them
    (length,) = struct.unpack_from("<I", data, at - 4)
    assert length == len(values)
    struct.pack_into("<I", data, at - 4, length - 1)
    bad = tmp_path / "short-buffer.tflite"
    bad.write_bytes(bytes(data))
    r = subprocess.run([sys.executable, "-m", "hil.cli", "models", "inspect", str(bad)], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (f"hil: error: {bad}: corrupt TFLite model: tensor {weight.index} {weight.name!r} (int8, "
                        f"shape {list(weight.shape)}) needs {length} bytes of data, its buffer holds {length - 1}; "
                        "the file is damaged, export or download it again\n")
