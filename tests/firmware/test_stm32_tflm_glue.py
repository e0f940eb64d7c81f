"""The glue between the STM32F405 port and a TFLM library the user built (issue 19), tested without TFLM's sources:
the documented configure and build lines work as written, a relative toolchain path is found, a TFLM_DIR or
TFLM_LIB that is not one is refused at configure, USE_TFLM_COMPRESSION must match the library, and hil.qemu
writes the build log it names and rebuilds when the library's content changes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hil.errors import HilError
from hil.qemu import BUILD_LOG, _sources_hash, build_firmware

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "firmware" / "README.md"
pytestmark = pytest.mark.skipif(
    shutil.which("arm-none-eabi-g++") is None or shutil.which("cmake") is None,
    reason="needs arm-none-eabi-g++ and cmake (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
    "libstdc++-arm-none-eabi-newlib cmake)",
)


def _firmware_copy(tmp_path: Path) -> Path:
    """The firmware folder alone in a fresh directory (no build folders), as a clone has it."""
    shutil.copytree(ROOT / "firmware", tmp_path / "firmware",
                    ignore=shutil.ignore_patterns("build", "build-*", "__pycache__"))
    return tmp_path


def _documented_lines() -> list[str]:
    """The fake-runner configure and build lines of the README's STM32F405 section, verbatim."""
    text = README.read_text()
    section = text[text.index("## Bare-metal Cortex-M4F port"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the STM32F405 section lost its build lines"
    lines = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line.startswith("cmake ")]


def test_the_documented_build_lines_work_as_written(tmp_path):
    lines = _documented_lines()
    assert len(lines) == 2 and lines[0].startswith("cmake -S firmware/stm32f405 -B build/stm32f405"), lines
    root = _firmware_copy(tmp_path)
    for line in lines:
        proc = subprocess.run(line, shell=True, cwd=root, capture_output=True, text=True)
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        assert "warning" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    assert (root / "build" / "stm32f405" / "hil_stm32f405.elf").is_file()


def test_a_relative_toolchain_file_is_found_from_where_cmake_runs(tmp_path):
    """CMake alone resolves -DCMAKE_TOOLCHAIN_FILE against the build folder and fails; the port takes it from
    the directory cmake was started in."""
    root = _firmware_copy(tmp_path)
    cmd = ["cmake", "-S", "firmware/stm32f405", "-B", "build/rel",
           "-DCMAKE_TOOLCHAIN_FILE=firmware/stm32f405/arm-none-eabi.cmake"]
    env = {"PATH": "/usr/bin:/bin", "PWD": str(root)}
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cache = (root / "build" / "rel" / "CMakeCache.txt").read_text()
    assert f"CMAKE_TOOLCHAIN_FILE:FILEPATH={root}/firmware/stm32f405/arm-none-eabi.cmake" in cache


def _fake_tflm(tmp_path: Path, *, compressed: bool) -> tuple[Path, Path]:
    """A folder that passes for a tflite-micro tree (the one header the configure step looks for) and a real
    Cortex-M4F static library whose symbols say whether it was built with USE_TFLM_COMPRESSION."""
    tree = tmp_path / "tflite-micro"
    header = tree / "tensorflow" / "lite" / "micro" / "micro_interpreter.h"
    header.parent.mkdir(parents=True)
    header.write_text("// stand-in: only its existence is checked at configure\n")
    method = "AllocateCompressedTensorsList" if compressed else "AllocateTfLiteEvalTensors"
    src = tmp_path / "allocator.cpp"
    src.write_text(f"namespace tflite {{ struct MicroAllocator {{ int {method}(); }};\n"
                   f"int MicroAllocator::{method}() {{ return 0; }} }}\n")
    obj, lib = tmp_path / "allocator.o", tmp_path / "libtensorflow-microlite.a"
    subprocess.run(["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb", "-c", str(src), "-o", str(obj)], check=True)
    subprocess.run(["arm-none-eabi-ar", "rcs", str(lib), str(obj)], check=True)
    return tree, lib


def _configure(tmp_path: Path, tree: Path, lib: Path, compression: str) -> subprocess.CompletedProcess:
    return subprocess.run(["cmake", "-S", str(ROOT / "firmware" / "stm32f405"), "-B", str(tmp_path / "b"),
                           f"-DTFLM_DIR={tree}", f"-DTFLM_LIB={lib}", f"-DHIL_TFLM_COMPRESSION={compression}"],
                          capture_output=True, text=True)


@pytest.mark.parametrize(("compressed", "option", "says"), [
    (True, "OFF", "TFLM_LIB is built with USE_TFLM_COMPRESSION: configure with -DHIL_TFLM_COMPRESSION=ON"),
    (False, "ON", "-DHIL_TFLM_COMPRESSION=ON, but TFLM_LIB is built without USE_TFLM_COMPRESSION"),
])
def test_compression_must_match_the_library(tmp_path, compressed, option, says):
    tree, lib = _fake_tflm(tmp_path, compressed=compressed)
    proc = _configure(tmp_path, tree, lib, option)
    assert proc.returncode != 0
    assert says in " ".join(proc.stderr.split()), proc.stderr


def test_a_matching_library_configures(tmp_path):
    tree, lib = _fake_tflm(tmp_path, compressed=False)
    proc = _configure(tmp_path, tree, lib, "OFF")
    assert proc.returncode == 0, proc.stderr


def test_a_tflm_dir_that_is_not_a_tflite_micro_tree_is_refused(tmp_path):
    _, lib = _fake_tflm(tmp_path, compressed=False)
    proc = _configure(tmp_path, tmp_path / "nowhere", lib, "OFF")
    assert proc.returncode != 0 and "is not a tflite-micro source tree" in " ".join(proc.stderr.split())


def test_a_failed_build_names_the_log_it_wrote(tmp_path):
    """The stand-in tree has no TFLM headers, so the runner does not compile: the error names build.log, which
    exists and holds each command and the compiler's error."""
    tree, lib = _fake_tflm(tmp_path, compressed=False)
    build_dir = tmp_path / "build"
    with pytest.raises(HilError) as err:
        build_firmware(build_dir, tflm_dir=tree, tflm_lib=lib)
    log = build_dir / BUILD_LOG
    assert f"build log in {log}" in str(err.value)
    assert "tflm_runner.cpp" in str(err.value) and "error" in str(err.value)  # the first error, not the last line
    text = log.read_text()
    assert "$ cmake -S" in text and "$ cmake --build" in text and "fatal error:" in text
    assert not (build_dir / ".sources-sha256").exists()  # a failed build is never taken as cached


def test_a_missing_library_is_one_clear_error(tmp_path):
    with pytest.raises(HilError, match="TFLM library .*libnone.a does not exist"):
        build_firmware(tmp_path / "b", tflm_dir=tmp_path, tflm_lib=tmp_path / "libnone.a")


def test_the_build_cache_follows_the_librarys_content_not_its_path(tmp_path):
    lib = tmp_path / "libtensorflow-microlite.a"
    lib.write_bytes(b"!<arch>\nfirst build")
    first = _sources_hash("opts", lib)
    lib.write_bytes(b"!<arch>\nrebuilt in place")
    assert _sources_hash("opts", lib) != first
    lib.write_bytes(b"!<arch>\nfirst build")
    assert _sources_hash("opts", lib) == first
    assert _sources_hash("opts", None) != first


def test_a_configure_error_is_said_whole_with_its_log(tmp_path):
    """CMake wraps its messages over several lines: the HilError carries the whole message, not its first line."""
    tree, lib = _fake_tflm(tmp_path, compressed=True)
    with pytest.raises(HilError) as err:
        build_firmware(tmp_path / "build", tflm_dir=tree, tflm_lib=lib)
    assert ("TFLM_LIB is built with USE_TFLM_COMPRESSION: configure with -DHIL_TFLM_COMPRESSION=ON (TFLM's "
            "classes differ between the two builds); build log in") in str(err.value)
