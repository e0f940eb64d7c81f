"""pytest-embedded's serial service against the virtual board's pty: `dut.expect` on protocol replies.

pytest-embedded reads the port from its `port` fixture; this module overrides it with the virtual board's
pseudo-terminal, exactly as `--port /dev/ttyUSB0` would name a real board.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hil.sim.board import VirtualBoard


@pytest.fixture
def vboard(sine_model: bytes) -> Iterator[VirtualBoard]:
    b = VirtualBoard(sine_model, boot_s=0.05).start(tcp_port=None)
    yield b
    b.stop()


@pytest.fixture
def port(vboard: VirtualBoard) -> str:
    """pytest-embedded's serial port: the virtual board's pty."""
    assert vboard.pty_path is not None
    return vboard.pty_path


@pytest.mark.parametrize("embedded_services", ["serial"], indirect=True)
def test_dut_expect_on_the_virtual_board(dut, vboard: VirtualBoard) -> None:
    dut.write("version\n")
    dut.expect(r'@hil \{"ok":true,"cmd":"version","protocol":2,', timeout=5)
    dut.write("infer 2 1\n")
    match = dut.expect(r'@hil \{"ok":true,"cmd":"infer".*"latency_us":\[(\d+),(\d+)\]', timeout=5)
    assert int(match.group(1)) > 0 and int(match.group(2)) > 0
    dut.write("frobnicate\n")
    dut.expect(r'"code":"E_UNKNOWN_CMD"', timeout=5)
    dut.write("reset\n")
    dut.expect("hil-ready protocol=2", timeout=5)
