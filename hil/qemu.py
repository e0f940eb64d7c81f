"""The emulated board: the benchmark firmware's Cortex-M4F port (firmware/stm32f405) in qemu-system-arm.

`build_firmware` compiles the port with Debian's arm-none-eabi toolchain (cached by a hash of its sources);
`QemuBoard` boots it on QEMU's netduinoplus2 (an STM32F405) under `-icount`, with the model image written
into the emulated flash's model partition and USART1 on a pseudo-terminal, so `DutClient` talks to it like
to a USB-UART. Latency is SysTick time under `-icount shift=N` (2**N ns per instruction): repeatable, but
an instruction count, not silicon time. Power is not measurable here.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hil.errors import HilError

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE_DIR = ROOT / "firmware"
STM32_DIR = FIRMWARE_DIR / "stm32f405"
DEFAULT_BUILD_DIR = STM32_DIR / "build"
MODEL_PARTITION_ADDR = 0x08080000  # firmware/stm32f405/stm32f405.ld: flash sectors 8-11
MODEL_PARTITION_BYTES = 512 * 1024
ICOUNT_SHIFT = 3  # every emulated instruction takes 2**3 ns of virtual time (125 MIPS)
APT_HINT = ("apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib cmake "
            "qemu-system-arm")
_PTY_LINE = re.compile(r"char device redirected to (/dev/pts/\d+)")


@dataclass(frozen=True)
class QemuFirmware:
    """The port's ELF files: the firmware and the JSON-under-newlib-nano self-test; `seconds` 0 when cached."""

    firmware: Path
    json_selftest: Path
    seconds: float


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sources_hash(extra: str = "", tflm_lib: Path | None = None) -> str:
    """The build's key: the port's sources, the core, the options and the TFLM library's content (not its path:
    a library rebuilt in place is a new library)."""
    h = hashlib.sha256(extra.encode())
    files = [p for p in sorted(STM32_DIR.iterdir()) if p.is_file()]
    files += sorted((FIRMWARE_DIR / "main" / "core").iterdir()) + sorted((FIRMWARE_DIR / "cmake").iterdir())
    files += [FIRMWARE_DIR / "main" / "ops.txt", FIRMWARE_DIR / "main" / "tflm_runner.cpp",
              FIRMWARE_DIR / "main" / "tflm_runner.hpp", FIRMWARE_DIR / "host" / "fakes.hpp"]
    for path in files:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    if tflm_lib is not None:
        h.update(b"tflm-lib\0" + _file_digest(tflm_lib).encode())
    return h.hexdigest()


BUILD_LOG = "build.log"  # in the build folder: every configure and build line with its output


def build_firmware(build_dir: Path = DEFAULT_BUILD_DIR, *, tflm_dir: Path | None = None,
                   tflm_lib: Path | None = None, tflm_compression: bool = False,
                   defines: dict[str, str | int] | None = None) -> QemuFirmware:
    """Compile the STM32F405 port (cached by the hash of its sources and options; safe against concurrent builds).

    Without `tflm_dir` the port links the host tests' fake model runner (no TFLM sources here); with a
    tflite-micro checkout and its `libtensorflow-microlite.a` for cortex-m4+fp it links the real runner.
    `defines` are extra CMake cache entries (tests: `HIL_FAKE_LEAK_PER_INVOKE`). A failed build names its log,
    `build_dir/build.log`, which holds every command and its whole output.
    """
    missing = [t for t in ("arm-none-eabi-g++", "cmake", "make") if shutil.which(t) is None]
    if missing:
        raise HilError(f"the STM32F405 firmware needs {', '.join(missing)}: {APT_HINT}")
    if (tflm_dir is None) != (tflm_lib is None):
        raise HilError("a TFLM build of the STM32F405 port needs both the tflite-micro tree and its library "
                       "(bench file: tflm: {dir: ..., lib: ...}; firmware/README.md)")
    if tflm_lib is not None and not Path(tflm_lib).is_file():
        raise HilError(f"TFLM library {tflm_lib} does not exist; build libtensorflow-microlite.a for cortex-m4+fp "
                       "(firmware/README.md) and name it in the bench file's tflm: lib:")
    build_dir.mkdir(parents=True, exist_ok=True)
    result = QemuFirmware(build_dir / "hil_stm32f405.elf", build_dir / "hil_json_selftest.elf", 0.0)
    options = [f"-DTFLM_DIR={tflm_dir or ''}", f"-DTFLM_LIB={tflm_lib or ''}",
               f"-DHIL_TFLM_COMPRESSION={'ON' if tflm_compression else 'OFF'}"]
    options += [f"-D{key}={value}" for key, value in sorted((defines or {}).items())]
    digest = _sources_hash(" ".join(options), Path(tflm_lib) if tflm_lib is not None else None)
    stamp = build_dir / ".sources-sha256"
    log_path = build_dir / BUILD_LOG
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result.firmware.exists() and result.json_selftest.exists() and stamp.exists() \
                and stamp.read_text() == digest:
            return result
        stamp.unlink(missing_ok=True)
        t0 = time.monotonic()
        steps = [["cmake", "-S", str(STM32_DIR), "-B", str(build_dir),
                  f"-DCMAKE_TOOLCHAIN_FILE={STM32_DIR / 'arm-none-eabi.cmake'}", *options],
                 ["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2)]]
        with open(log_path, "w") as log:
            for cmd in steps:
                log.write("$ " + " ".join(cmd) + "\n")
                log.flush()
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
                if proc.returncode != 0:
                    log.flush()
                    raise HilError(f"STM32F405 firmware build failed ({' '.join(cmd[:2])} ...): "
                                   f"{_first_error(log_path)}; build log in {log_path}")
        stamp.write_text(digest)
        return QemuFirmware(result.firmware, result.json_selftest, time.monotonic() - t0)


def _first_error(log_path: Path) -> str:
    """The line of a build log that says what went wrong first (a compiler error, CMake's error with its wrapped
    message), else its last line."""
    raw = log_path.read_text(errors="replace").splitlines()
    for i, line in enumerate(raw):
        text = line.strip()
        if text.startswith("CMake Error"):
            message = []
            for more in raw[i + 1:]:
                if message and not more.strip():
                    break
                if more.strip():
                    message.append(more.strip())
            return " ".join([text, *message])
        if "error:" in text or "Error:" in text:
            return text
    lines = [line.strip() for line in raw if line.strip()]
    return lines[-1] if lines else "(no output)"


def qemu_command(elf: Path, image: Path | None = None, *, shift: int = ICOUNT_SHIFT,
                 serial: str = "stdio") -> list[str]:
    """QEMU's netduinoplus2 with USART1 on `serial` (stdio, pty, tcp:...), semihosting for the firmware's exit
    code, and the model image written into the model partition's flash."""
    cmd = ["qemu-system-arm", "-M", "netduinoplus2", "-nographic", "-monitor", "none", "-serial", serial,
           "-semihosting-config", "enable=on,target=native", "-icount", f"shift={shift}", "-kernel", str(elf)]
    if image is not None:
        cmd += ["-device", f"loader,file={image},addr={MODEL_PARTITION_ADDR:#x}"]
    return cmd


def qemu_missing_reason() -> str | None:
    """Why the emulated board cannot run here, or None."""
    if shutil.which("qemu-system-arm") is None:
        return f"qemu-system-arm is not installed ({APT_HINT})"
    return None


class QemuBoard:
    """One emulated STM32F405 running the firmware; `flash(image)` reboots it with a new model partition."""

    def __init__(self, firmware: QemuFirmware, *, shift: int = ICOUNT_SHIFT) -> None:
        self.firmware = firmware
        self.shift = shift
        self.port: str | None = None
        self._proc: subprocess.Popen | None = None
        self._image = tempfile.NamedTemporaryFile(suffix=".hilm")  # lives as long as the board

    def flash(self, image: bytes, timeout_s: float = 20.0) -> str:
        """Write the model image into the emulated flash (a power cycle with the new contents); return the pty."""
        reason = qemu_missing_reason()
        if reason is not None:
            raise HilError(reason)
        self.stop()
        self._image.seek(0)
        self._image.truncate()
        self._image.write(image)
        self._image.flush()
        cmd = qemu_command(self.firmware.firmware, Path(self._image.name), shift=self.shift, serial="pty")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        seen = []
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline()
            if not line:
                break
            seen.append(line.strip())
            match = _PTY_LINE.search(line)
            if match:
                self.port = match.group(1)
                return self.port
        self.stop()
        raise HilError(f"qemu-system-arm did not start the emulated board: {' / '.join(seen[-3:]) or 'no output'}")

    def stop(self) -> None:
        """Stop QEMU (a board power-off)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
            self.port = None

    def close(self) -> None:
        self.stop()
        self._image.close()
