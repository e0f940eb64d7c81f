"""firmware/main/core cross-compiles without a warning (-Wall -Wextra -Wconversion -Werror) for the
Cortex-M4F, Xtensa (lx106) and RISC-V rv32imc, with Debian's cross compilers (CI installs them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "firmware" / "main" / "core"
# Debian ships libstdc++ (and newlib) only for arm-none-eabi; xtensa-lx106-elf-g++ and riscv64-unknown-elf-g++
# come without C++ headers, so those two compile against arm-none-eabi's target-neutral libstdc++ and newlib
# headers (their own compiler's predefined types, e.g. int32_t = long int, still apply). Compile only: no
# C++ runtime is linked for them.
ARM_CXX = Path("/usr/lib/arm-none-eabi/include/c++")
ARM_NEWLIB = Path("/usr/lib/arm-none-eabi/include")
WARNINGS = ["-Wall", "-Wextra", "-Wconversion", "-Wno-sign-conversion", "-Werror"]
TARGETS = {
    "cortex-m4f": (
        ["arm-none-eabi-g++"], ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"], False
    ),
    "xtensa-lx106": (["xtensa-lx106-elf-g++"], ["-mlongcalls"], True),
    "rv32imc": (["riscv64-unknown-elf-g++"], ["-march=rv32imc", "-mabi=ilp32"], True),
}  # fmt: skip


def _foreign_headers() -> list[str]:
    versions = sorted(ARM_CXX.iterdir()) if ARM_CXX.is_dir() else []
    if not versions:
        pytest.skip("libstdc++ headers for bare metal missing (apt-get install libstdc++-arm-none-eabi-newlib)")
    v = versions[-1]
    return ["-nostdinc++", "-isystem", str(v), "-isystem", str(v / "arm-none-eabi"), "-isystem", str(ARM_NEWLIB)]


def _compiler(target: str) -> list[str]:
    (cxx, flags, foreign) = TARGETS[target]
    if shutil.which(cxx[0]) is None:
        pytest.skip(
            f"{cxx[0]} not installed (apt-get install gcc-arm-none-eabi gcc-xtensa-lx106 gcc-riscv64-unknown-elf)"
        )
    return [*cxx, "-std=c++17", "-Os", *flags, *(_foreign_headers() if foreign else []), *WARNINGS]


@pytest.fixture(scope="module")
def ops_inc(tmp_path_factory) -> Path:
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed (apt-get install cmake)")
    out = tmp_path_factory.mktemp("ops")
    subprocess.run(["cmake", f"-DOPS_FILE={ROOT / 'firmware/main/ops.txt'}", f"-DOUT={out / 'hil_ops.inc'}",
                    "-P", str(ROOT / "firmware/cmake/hil_ops.cmake")], check=True)  # fmt: skip
    return out


@pytest.mark.parametrize("target", list(TARGETS))
def test_core_compiles_without_warnings(target, ops_inc, tmp_path):
    cmd = _compiler(target)
    sources = sorted(CORE.glob("*.cpp"))
    assert len(sources) >= 8
    for src in sources:
        proc = subprocess.run([*cmd, "-I", str(ROOT / "firmware/main"), "-I", str(ops_inc), "-c", str(src),
                               "-o", str(tmp_path / (src.stem + ".o"))], capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0 and not proc.stderr, f"{target}: {src.name}\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("target", list(TARGETS))
def test_the_flags_do_catch_a_narrowing_conversion(target, tmp_path):
    """The same command refuses code the host's 64-bit types would hide (so the check above is a check)."""
    src = tmp_path / "narrow.cpp"
    src.write_text("#include <cstdint>\n#include <string>\nuint16_t f(long v) { return v; }\n"
                   "std::string g() { return std::to_string(1); }\n")  # fmt: skip
    proc = subprocess.run([*_compiler(target), "-c", str(src), "-o", str(tmp_path / "n.o")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode != 0 and "-Werror=conversion" in proc.stderr, proc.stderr
