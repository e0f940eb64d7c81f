"""C source export: compiled with the system g++ and run, so the embedded bytes are checked end to end."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from models.errors import ModelError
from models.export import to_c_source, write_c_source

MAIN_CC = r"""
#include <cstdint>
#include <cstdio>
#include "NAME.h"

int main() {
  uint32_t hash = 2166136261u;  // FNV-1a, 32 bit
  for (unsigned int i = 0; i < NAME_len; ++i) {
    hash ^= NAME[i];
    hash *= 16777619u;
  }
  std::printf("%u %u %u\n", NAME_len, hash, static_cast<unsigned>(reinterpret_cast<uintptr_t>(NAME) % 16));
  return 0;
}
"""


def fnv1a32(data: bytes) -> int:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


@pytest.mark.parametrize("size", [1200, random.Random(4).randint(1024, 5 * 1024)])
def test_generated_source_compiles_and_holds_the_exact_bytes(tmp_path: Path, size: int) -> None:
    gxx = shutil.which("g++")
    assert gxx, "g++ is needed to check the generated C++ (apt-get install g++)"
    rng = random.Random(size)
    blob = bytes([0x00, 0xFF]) + rng.randbytes(size - 2)
    header_path, source_path = write_c_source(blob, tmp_path / "out", "g_model")
    assert (header_path.name, source_path.name) == ("g_model.h", "g_model.cc")
    (tmp_path / "main.cc").write_text(MAIN_CC.replace("NAME", "g_model"))
    exe = tmp_path / "check"
    build = subprocess.run(
        [gxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(header_path.parent),
         str(tmp_path / "main.cc"), str(source_path), "-o", str(exe)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=30).stdout.split()
    length, checksum, misalign = (int(v) for v in out)
    assert length == len(blob)
    assert checksum == fnv1a32(blob)
    assert misalign == 0


def test_header_and_source_layout() -> None:
    blob = bytes(range(30))
    header, source = to_c_source(blob, "model_data")
    assert "#ifndef MODEL_DATA_H_" in header and "#define MODEL_DATA_H_" in header and "#endif" in header
    assert "extern const unsigned char model_data[];" in header
    assert "extern const unsigned int model_data_len;" in header
    assert '#include "model_data.h"' in source
    assert "alignas(16) const unsigned char model_data[] = {" in source
    assert "const unsigned int model_data_len = 30;" in source
    rows = [line for line in source.splitlines() if line.lstrip().startswith("0x")]
    assert [len(re.findall(r"0x[0-9a-f]{2}", row)) for row in rows] == [12, 12, 6]
    assert rows[0].split(", ")[:2] == ["  0x00", "0x01"] and rows[-1].endswith("0x1d,")
    assert [int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", "".join(rows))] == list(blob)


def test_accepts_bytearray_and_memoryview() -> None:
    blob = bytes([1, 2, 3])
    assert to_c_source(bytearray(blob), "m") == to_c_source(memoryview(blob), "m") == to_c_source(blob, "m")


@pytest.mark.parametrize(
    "name", ["", "1model", "my-model", "model.tflite", "int", "class", "__x", "_Model", "_model", "mödel"]
)
def test_invalid_names_raise(name: str) -> None:
    with pytest.raises(ModelError) as exc:
        to_c_source(b"\x01", name)
    assert repr(name) in str(exc.value) and "\n" not in str(exc.value)


def test_empty_model_raises() -> None:
    with pytest.raises(ModelError, match="empty"):
        to_c_source(b"", "model")


def test_unwritable_output_directory_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ModelError, match=re.escape(str(blocker))):
        write_c_source(b"\x01\x02", blocker, "model")
