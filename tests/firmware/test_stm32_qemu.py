"""The Cortex-M4F port (firmware/stm32f405) built with arm-none-eabi-g++ and newlib-nano, booted in QEMU's
netduinoplus2: the protocol vectors over the emulated USART, SysTick latencies, the operator check with a
TFLM_DECODE model, and JSON numbers under newlib-nano's printf (no float support)."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import time
from pathlib import Path

import pytest

from hil import firmware

from .conftest import ICOUNT_SHIFT, need_qemu, qemu_command
from .test_core_conformance import VECTORS, run_vectors
from .tflite_builder import model_with_ops

ROOT = Path(__file__).resolve().parents[2]
SINE = ROOT / ".venv/lib/python3.11/site-packages/tflite_micro/python/tflite_micro/sine_float.tflite"


def _image(tmp_path: Path, model: bytes, name: str = "model.hilm") -> Path:
    path = tmp_path / name
    path.write_bytes(firmware.pack_image(model, firmware.arena_hint(2048)))
    return path


def _boot(qemu_board, image: Path | None, shift: int = ICOUNT_SHIFT):
    board = qemu_board(image, shift)
    hello = board.request("hello")
    assert any(line.startswith("hil-ready protocol=2") for line in board.log), board.log
    return board, hello


def test_the_port_builds_warning_free_and_fits(stm32_build):
    out = subprocess.run(["arm-none-eabi-size", "-A", str(stm32_build.firmware)], capture_output=True, text=True)
    sizes = {parts[0]: int(parts[1]) for parts in (line.split() for line in out.stdout.splitlines()) if len(parts) >= 3
             and parts[1].isdigit()}  # fmt: skip
    flash = sizes[".isr_vector"] + sizes[".text"] + sizes.get(".data", 0)
    assert flash < 512 * 1024 and sizes[".isr_vector"] == 4 * (16 + 82)


def test_protocol_vectors_over_the_emulated_uart(qemu_board, tmp_path):
    """docs/protocol-vectors.json, the same runner as the host build, on the firmware in QEMU."""
    model = SINE.read_bytes()
    t0 = time.monotonic()
    board, hello = _boot(qemu_board, _image(tmp_path, model))
    assert hello["ok"], hello
    assert hello["board"] == "stm32f405" and hello["cpu_mhz"] == 168
    assert hello["model"]["bytes"] == len(model)
    assert hello["ops"] == ["FULLY_CONNECTED"] * 3  # read from the flatbuffer by the core's operator check
    # The scale went through the JSON writer under newlib-nano: the float32 comes back exactly.
    assert struct.unpack("<f", struct.pack("<f", hello["input"]["scale"]))[0] == pytest.approx(0.00392157, rel=1e-6)
    steps = run_vectors(board, hello["input"]["bytes"])
    assert steps == sum(len(v["steps"]) for v in VECTORS["vectors"])
    print(f"QEMU boot + {steps} vector steps: {time.monotonic() - t0:.2f} s")


def _latencies(qemu_board, image: Path, shift: int) -> tuple[list[int], list[int]]:
    board, hello = _boot(qemu_board, image, shift)
    assert hello["ok"], hello
    first = board.request("infer 5 1 0")
    second = board.request("infer 5 1 0")
    assert first["ok"] and second["ok"], (first, second)
    return first["latency_us"], second["latency_us"]


def test_latency_is_measured_on_systick_and_repeats(qemu_board, tmp_path):
    """-icount makes emulated time a function of the instructions run: the same inference reports the same
    latency twice in a row, and twice the nanoseconds per instruction give twice the latency."""
    image = _image(tmp_path, SINE.read_bytes())
    first, second = _latencies(qemu_board, image, ICOUNT_SHIFT)
    print(f"latency_us at -icount shift={ICOUNT_SHIFT}: {first} then {second}")
    assert first == second
    assert len(set(first)) == 1 and first[0] > 0
    slower, _ = _latencies(qemu_board, image, ICOUNT_SHIFT + 1)
    print(f"latency_us at -icount shift={ICOUNT_SHIFT + 1}: {slower}")
    assert abs(slower[0] - 2 * first[0]) <= 1


def test_a_tflm_decode_model_is_accepted_on_the_port(qemu_board, tmp_path):
    model = model_with_ops(["custom:TFLM_DECODE", "CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"])
    board, hello = _boot(qemu_board, _image(tmp_path, model))
    assert hello["ok"], hello
    assert hello["ops"] == ["TFLM_DECODE", "CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"]
    refused = model_with_ops(["CONV_2D", "custom:NOT_A_KERNEL"])
    board, hello = _boot(qemu_board, _image(tmp_path, refused, "refused.hilm"))
    assert not hello["ok"] and hello["code"] == "E_MODEL"
    assert hello["error"] == "unsupported operator NOT_A_KERNEL (not in the firmware's ops.txt)"


def test_an_erased_partition_is_reported_not_fatal(qemu_board):
    board, hello = _boot(qemu_board, None)
    assert not hello["ok"] and hello["code"] == "E_MODEL", hello
    assert board.request("version")["ok"]


def test_json_numbers_with_newlib_nano_printf(stm32_build):
    """The firmware's printf configuration has no float support (`%.9g` prints nothing); the JSON writer
    does not use it: every line is valid JSON and carries the value."""
    need_qemu()
    proc = subprocess.run(qemu_command(stm32_build.json_selftest), capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    lines = proc.stdout.decode("ascii").splitlines()
    printf_g = [line for line in lines if line.startswith("@printf-g")]
    assert printf_g == ["@printf-g "], "this build's printf has float support: the check below proves nothing"
    rows = [json.loads(line[len("@json "):]) for line in lines if line.startswith("@json ")]
    f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]  # noqa: E731
    want = [0.0, 1e-9, 3.25, -0.5, f32(0.00392156886), 0.00390625, 62801.0, 1e20, -1e-30, 123456789.0,
            1234567890.0, 0.1, None, None, f32(3.4028235e38), f32(1.17549435e-38)]  # fmt: skip
    assert [r["i"] for r in rows] == list(range(len(want)))
    for row, value in zip(rows, want, strict=True):
        if value is None:
            assert row["v"] is None and row["fixed1"] is None
            continue
        assert isinstance(row["v"], float), row
        # 9 significant digits: within half a unit of the 9th digit, and the float32 comes back exactly.
        assert math.isclose(row["v"], value, rel_tol=5e-9, abs_tol=0.0), row
        assert f32(row["v"]) == f32(value), row
        if abs(value) < 1e17:
            assert math.isclose(row["fixed1"], round(value, 1), abs_tol=0.051)
    assert rows[2]["v"] == 3.25 and rows[3]["v"] == -0.5 and rows[1]["v"] == 1e-9
