"""Fixtures for the firmware tests: the host build of the portable core (cached by source hash) and a
line-by-line driver of its protocol executable."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from hil.errors import HilError
from hil.qemu import ICOUNT_SHIFT, QemuFirmware, build_firmware, qemu_command

ROOT = Path(__file__).resolve().parents[2]
HOST_DIR = ROOT / "firmware" / "host"
CORE_DIR = ROOT / "firmware" / "main" / "core"
OPS_TXT = ROOT / "firmware" / "main" / "ops.txt"
CMAKE_DIR = ROOT / "firmware" / "cmake"
BUILD_DIR = HOST_DIR / "build"


@dataclass(frozen=True)
class HostCore:
    """Paths of the host build: the protocol executable and the C++ unit-test binary."""

    host: Path
    tests: Path


def _sources_hash() -> str:
    h = hashlib.sha256()
    files = [p for p in sorted(HOST_DIR.iterdir()) if p.is_file()] + sorted(CORE_DIR.iterdir())
    files += [OPS_TXT, *sorted(CMAKE_DIR.iterdir())]
    for path in files:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _build() -> HostCore:
    missing = [tool for tool in ("g++", "cmake", "make") if shutil.which(tool) is None]
    if missing:
        message = (
            f"host build of firmware/main/core needs {', '.join(missing)} (apt-get install g++ cmake make)"
        )
        if sys.platform.startswith("linux"):
            pytest.fail(message)
        pytest.skip(message + f"; not available on {sys.platform}")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    result = HostCore(BUILD_DIR / "hil_core_host", BUILD_DIR / "hil_core_tests")
    stamp = BUILD_DIR / ".sources-sha256"
    digest = _sources_hash()
    with open(BUILD_DIR / ".lock", "w") as lock:  # pytest-xdist workers build once, one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == digest and result.host.exists() and result.tests.exists():
            return result
        steps = [
            ["cmake", "-S", str(HOST_DIR), "-B", str(BUILD_DIR), "-DCMAKE_BUILD_TYPE=Debug"],
            ["cmake", "--build", str(BUILD_DIR), "-j", str(os.cpu_count() or 2)],
        ]
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                pytest.fail(
                    f"host build failed: {' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
                )
        stamp.write_text(digest)
    return result


@pytest.fixture(scope="session")
def host_core() -> HostCore:
    """The host build of the firmware's portable core (built once per source change)."""
    return _build()


def parse_reply_line(line: str) -> dict:
    """One protocol version 2 reply line (docs/protocol.md, Transport) -> its JSON object.

    `@hil `, the JSON text, `*` and the CRC32 of the JSON text as 8 lowercase hex digits. A line without that
    suffix, or whose CRC does not match, fails the test (AssertionError): a version 2 device never sends one.
    Checked here with zlib, independently of hil.wire.
    """
    assert line.startswith("@hil "), f"not a reply line: {line!r}"
    body = line[len("@hil ") :]
    assert len(body) > 9 and body[-9] == "*", f"reply line without a `*crc32` suffix: {line!r}"
    text, crc = body[:-9], body[-8:]
    assert all(c in "0123456789abcdef" for c in crc), f"reply CRC is not 8 lowercase hex digits: {line!r}"
    assert text.startswith("{") and text.endswith("}"), f"reply is not one JSON object before its CRC: {line!r}"
    want = f"{zlib.crc32(text.encode('ascii')):08x}"
    assert crc == want, f"reply CRC {crc} does not match its JSON text (CRC32 {want}): {line!r}"
    reply = json.loads(text)
    assert isinstance(reply, dict), f"reply is not a JSON object: {line!r}"
    return reply


class CoreProcess:
    """hil_core_host on pipes: send a line, read the next `@hil` reply (log lines are kept apart). Every
    reply must carry a valid `*crc32` suffix (parse_reply_line)."""

    def __init__(self, exe: Path, *args: str):
        self.proc = subprocess.Popen(
            [str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.buf = b""
        self.log: list[str] = []

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        assert self.proc.stdin is not None
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def _line(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"no line from hil_core_host in {timeout_s} s; log: {self.log[-5:]}")
            chunk = os.read(fd, 65536)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise EOFError(f"hil_core_host exited ({self.proc.wait()}): {err[-2000:]}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("ascii").rstrip("\r")

    def reply_line(self, timeout_s: float = 10.0) -> str:
        """The next reply line as it came (without its line terminator)."""
        while True:
            line = self._line(timeout_s)
            if line.startswith("@hil "):
                return line
            self.log.append(line)

    def reply(self, timeout_s: float = 10.0) -> dict:
        return parse_reply_line(self.reply_line(timeout_s))

    def request_line(self, line: str | bytes) -> str:
        """Send one command line; return the raw reply line."""
        self.send(line)
        return self.reply_line()

    def request(self, line: str | bytes) -> dict:
        return parse_reply_line(self.request_line(line))

    def close(self) -> int:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=10)
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()
        return code


@pytest.fixture
def core_process(host_core: HostCore):
    """Factory: start hil_core_host with arguments; every started process is closed (and must exit 0)."""
    started: list[CoreProcess] = []

    def start(*args: str) -> CoreProcess:
        p = CoreProcess(host_core.host, *args)
        started.append(p)
        return p

    yield start
    for p in started:
        assert p.close() == 0, "hil_core_host exited with an error (sanitizer report on stderr?)"


# -- the STM32F405 port in QEMU -------------------------------------------------------------------------

STM32_DIR = ROOT / "firmware" / "stm32f405"


@pytest.fixture(scope="session")
def stm32_build() -> QemuFirmware:
    """The Cortex-M4F port built with arm-none-eabi-g++ (hil.qemu.build_firmware: cached by source hash)."""
    try:
        return build_firmware()
    except HilError as exc:
        if "needs" in str(exc):
            pytest.skip(str(exc))
        pytest.fail(str(exc))


def need_qemu() -> None:
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm not installed (apt-get install qemu-system-arm)")


class QemuProcess(CoreProcess):
    """The firmware in QEMU, its UART on the process's stdin/stdout: the same line driver as hil_core_host.
    Bytes sent before the firmware has set up its USART are lost (QEMU drops them, as a board would), so
    the driver waits for the `hil-ready` line at boot and after `reset` (a real reboot of the chip), as
    hil.protocol's client does. The firmware
    never exits by itself (a board doesn't), so close() stops QEMU."""

    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""
        self.log = []

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        while True:
            text = self._line(timeout_s)
            self.log.append(text)
            if text.startswith("hil-ready"):
                return

    def request_line(self, line: str | bytes) -> str:
        raw = super().request_line(line)
        if raw.startswith('@hil {"ok":true,"cmd":"reset"}'):
            self.wait_ready()
        return raw

    def close(self) -> int:
        alive = self.proc.poll() is None
        if alive:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=10)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()
        return 0 if alive else code  # stopped by us, or the firmware's own semihosting exit code


@pytest.fixture
def qemu_board(stm32_build: QemuFirmware):
    """Factory: boot the STM32F405 firmware in QEMU with a model image; every board is stopped at the end
    (and must not have exited by itself: a fault ends QEMU through semihosting with code 100)."""
    need_qemu()
    started: list[QemuProcess] = []

    def start(image: Path | None, shift: int = ICOUNT_SHIFT) -> QemuProcess:
        board = QemuProcess(qemu_command(stm32_build.firmware, image, shift=shift))
        started.append(board)
        board.wait_ready()
        return board

    yield start
    for board in started:
        assert board.close() == 0, "the firmware exited in QEMU (fault?)"
