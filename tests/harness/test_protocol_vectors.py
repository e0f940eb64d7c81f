"""Run docs/protocol-vectors.json in order against the virtual board, over a real pty and a real socket,
and against its device core in-process (no pty, no socket, no thread): one runner for all three."""

from __future__ import annotations

import base64
import collections
import json
import re
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import serial

from hil.sim.board import VirtualBoard
from hil.sim.device import DeviceCore
from hil.wire import CHUNK_MAX_BYTES, READY_MARK, crc32_hex, parse_reply

VECTORS = json.loads((Path(__file__).parents[2] / "docs" / "protocol-vectors.json").read_text())


class LinePort:
    """What the vector runner drives: `send` a command line, read the device's next `line`."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def send(self, line: str) -> None:
        raise NotImplementedError

    def line(self, timeout: float = 5.0) -> str:
        raise NotImplementedError

    def reply(self) -> dict[str, Any]:
        """The next reply, its CRC checked here with zlib (not with the code under test); log lines go to `log`."""
        while True:
            text = self.line()
            if "@hil" in text:
                m = re.fullmatch(r"@hil (\{.*\})\*([0-9a-f]{8})", text)
                assert m, f"a reply line must be '@hil ', JSON, '*' and 8 lowercase hex digits: {text!r}"
                assert f"{zlib.crc32(m.group(1).encode()):08x}" == m.group(2), f"reply CRC does not match: {text!r}"
                obj = json.loads(m.group(1))
                assert obj == parse_reply(text, require_crc=True), text
                return obj
            self.log.append(text)

    def wait_ready(self) -> None:
        while READY_MARK not in self.line():
            pass


class RawPort(LinePort):
    """A bare line reader on a pyserial port: no client logic, so the device's own behaviour is tested."""

    def __init__(self, url: str):
        super().__init__()
        self.ser = serial.serial_for_url(url, baudrate=115200, timeout=0.05)
        self.ser.reset_input_buffer()

    def send(self, line: str) -> None:
        self.ser.write(line.encode("ascii") + b"\n")

    def line(self, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            buf += self.ser.read_until(b"\n")
            if buf.endswith(b"\n"):
                return buf.rstrip(b"\r\n").decode("utf-8", errors="replace")
        raise AssertionError(f"no line within {timeout} s (partial {buf!r}; log {self.log[-3:]})")


class CorePort(LinePort):
    """The device core called directly: each command's output lines, and the boot log after a `reset`."""

    def __init__(self, core: DeviceCore):
        super().__init__()
        self.core = core
        self.out: collections.deque[str] = collections.deque()

    def send(self, line: str) -> None:
        self.out.extend(self.core.handle(line))
        if self.core.restart_pending:
            self.out.extend(self.core.boot())

    def line(self, timeout: float = 5.0) -> str:
        if not self.out:
            raise AssertionError(f"the device core printed no further line (log {self.log[-3:]})")
        return self.out.popleft()


def _subst(text: str, input_bytes: int) -> str:
    return (
        text.replace("{input_bytes}", str(input_bytes))
        .replace("{zeros_crc32}", crc32_hex(bytes(input_bytes)))
        .replace("{long_line}", "x" * 1100)
    )


def _chunks(input_bytes: int) -> list[str]:
    return [
        f"data {base64.b64encode(bytes(min(CHUNK_MAX_BYTES, input_bytes - off))).decode()}"
        for off in range(0, input_bytes, CHUNK_MAX_BYTES)
    ]


def _check(step: dict[str, Any], reply: dict[str, Any], where: str) -> None:
    for key, want in step.get("match", {}).items():
        assert reply.get(key) == want, f"{where}: {key}={reply.get(key)!r}, want {want!r} in {reply}"
    for key in step.get("has", []):
        assert key in reply, f"{where}: reply lacks {key!r}: {reply}"
    for key, n in step.get("len", {}).items():
        assert len(reply[key]) == n, f"{where}: len({key})={len(reply[key])}, want {n}"


def run_vectors(port: LinePort, input_bytes: int) -> int:
    """Run every vector in order on one device; return the number of steps checked."""
    steps = 0
    for vector in VECTORS["vectors"]:
        for i, step in enumerate(vector["steps"]):
            where = f"vector {vector['name']!r} step {i}"
            if step.get("upload_zeros") or step.get("upload_chunks_only"):
                lines = _chunks(input_bytes)
                if step.get("upload_zeros"):
                    lines.insert(0, _subst("input {input_bytes} {zeros_crc32}", input_bytes))
                for line in lines[:-1]:
                    port.send(line)
                    assert port.reply()["ok"], where
                port.send(lines[-1])
            else:
                line = _subst(step["send"], input_bytes)
                if step.get("sign"):
                    line += f" *{zlib.crc32(line.encode()):08x}"
                port.send(line)
            reply = port.reply()
            _check(step, reply, where)
            if step.get("send") == "reset" and reply.get("ok"):
                port.wait_ready()
            steps += 1
    return steps


@pytest.mark.parametrize("transport", ["pty", "socket"])
def test_vectors_pass_on_the_virtual_board(board: VirtualBoard, transport: str) -> None:
    port = RawPort(board.pty_path if transport == "pty" else board.url)
    try:
        steps = run_vectors(port, input_bytes=4)
    finally:
        port.ser.close()
    assert steps == sum(len(v["steps"]) for v in VECTORS["vectors"])


def test_vectors_pass_on_the_device_core_in_process(sine_model: bytes) -> None:
    threads = threading.active_count()
    port = CorePort(DeviceCore(sine_model, speed=0.05))
    steps = run_vectors(port, input_bytes=4)
    assert steps == sum(len(v["steps"]) for v in VECTORS["vectors"])
    assert not port.out, f"lines left over after the last reply: {list(port.out)}"
    assert threading.active_count() == threads  # nothing served in the background


def test_every_vector_reply_is_one_line_and_carries_code_on_error(board: VirtualBoard) -> None:
    port = RawPort(board.url)
    try:
        for line in ("frobnicate", "infer 0", "version", "run", "data AAAA"):
            port.send(line)
            reply = port.reply()
            assert ("code" in reply and "error" in reply) == (not reply["ok"]), reply
        assert port.log == []  # no stray lines between replies
    finally:
        port.ser.close()
