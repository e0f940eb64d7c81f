"""Out of memory on the STM32F405 port is never a silent hang (issue 19): the arena is cut to what the heap
holds beside the protocol's reserve, the reserve is checked against the heap's real low-water mark in QEMU, and a
heap exhausted after a load ends the run with one `hil-fatal` line that the host reports at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hil import firmware
from hil.protocol import FATAL, DutClient, DutFatal
from hil.qemu import QemuBoard, build_firmware

from .conftest import need_qemu
from .tflite_builder import model_with_ops

STM32_RAM = 128 * 1024
FAKE_IO = ((1, 32, 32, 1), (1, 10))  # the fake runner's tensors (host/fakes.hpp FakeModelSpec), declared in the model


def _image(tmp_path: Path, model: bytes, arena: int, name: str = "model.hilm") -> Path:
    path = tmp_path / name
    path.write_bytes(firmware.pack_image(model, arena))
    return path


@pytest.mark.parametrize("n_ops", [2, 61])
def test_an_arena_hint_beyond_the_heap_is_cut_to_fit_and_the_protocol_keeps_its_reserve(qemu_board, tmp_path, n_ops):
    """The image asks for all of the chip's RAM: the board loads the model with what the heap holds, says so in
    `hello`, and then the protocol's heaviest commands stay within the reserve it kept (the heap's low-water
    mark after them, measured by the firmware's _sbrk, is at most `reserve` below the free heap at load)."""
    # the longest names of ops.txt (a heap string each, beyond the small-string buffer) make the longest replies
    ops = (["DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "CONCATENATION", "FULLY_CONNECTED"] * 16)[:n_ops - 1]
    ops.append("SOFTMAX")
    model = model_with_ops(ops, io=FAKE_IO)
    board = qemu_board(_image(tmp_path, model, STM32_RAM))
    hello = board.request("hello")
    assert hello["ok"], hello
    arena, heap = hello["arena"], hello["heap"]
    assert arena["requested"] == STM32_RAM and 0 < arena["configured"] < STM32_RAM
    assert heap["at_load"] >= heap["reserve"] > 0
    free_at_load = heap["at_load"]
    data = bytes(range(256)) * 4  # the fake model's 1024-byte input
    for line in ("profile", "infer 20 2 0", "hello", "profile"):
        assert board.request(line)["ok"], line
    _upload(board, data)
    assert board.request("run")["ok"]
    after = board.request("hello")["heap"]
    used = free_at_load - after["min_free"]
    print(f"{n_ops} operators: arena {arena['configured']} of {arena['requested']} B; heap free at load "
          f"{free_at_load} B, reserve {heap['reserve']} B, the protocol's peak use {used} B")
    assert 0 < used <= heap["reserve"], (used, heap)


def _upload(board, data: bytes) -> None:
    import base64
    import zlib

    assert board.request(f"input {len(data)} {zlib.crc32(data):08x}")["ok"]
    for off in range(0, len(data), 750):
        assert board.request("data " + base64.b64encode(data[off:off + 750]).decode())["ok"]


@pytest.fixture(scope="module")
def leaking_build(tmp_path_factory):
    """The port whose fake model leaks 4 KiB of heap per invoke: heap exhaustion after a successful load."""
    need_qemu()
    return build_firmware(tmp_path_factory.mktemp("leak-build"), defines={"HIL_FAKE_LEAK_PER_INVOKE": 4096})


def test_heap_exhaustion_after_a_load_is_one_clear_error_within_the_timeout(leaking_build, tmp_path):
    model = model_with_ops(["FULLY_CONNECTED", "SOFTMAX"])
    board = QemuBoard(leaking_build)
    try:
        board.flash(firmware.pack_image(model, 8192))
        with DutClient(board.port) as dut:
            assert dut.hello_info.model_ok
            t0 = time.monotonic()
            with pytest.raises(DutFatal) as err:
                for _ in range(10):  # 30 x 4 KiB per call: the heap runs out within the first calls
                    dut.infer(30)
            elapsed = time.monotonic() - t0
        assert err.value.code == FATAL
        assert "stopped during 'infer'" in str(err.value) and "out of memory" in str(err.value)
        assert elapsed < 10, elapsed  # the fatal line, not a timeout and a resync
        assert board._proc is not None and board._proc.wait(timeout=10) == 102  # semihosting exit: no hang
    finally:
        board.close()
