"""The virtual board's device core in-process: one call per command line, no pty, socket or thread.

What the vectors (test_protocol_vectors.py) do not pin down: the order in which the firmware checks
arguments, state and model, the reset and boot cycle, the injected-reset hook, and a board without model.
"""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest

from hil.sim.device import BOOT_BANNER, DeviceCore
from hil.wire import MAX_LINE_BYTES, READY_MARK, Hello, crc32_hex, parse_reply


@pytest.fixture
def core(sine_model: bytes) -> DeviceCore:
    return DeviceCore(sine_model, speed=0.05)


def _reply(core: DeviceCore, line: str | None) -> dict:
    lines = core.handle(line)
    replies = [r for r in map(parse_reply, lines) if r is not None]
    assert len(replies) == 1 and parse_reply(lines[-1]) == replies[0], lines  # one reply, and it comes last
    return replies[0]


def _upload(core: DeviceCore, data: bytes) -> dict:
    assert _reply(core, f"input {len(data)} {crc32_hex(data)}")["ok"]
    return _reply(core, "data " + base64.b64encode(data).decode())


def test_blank_lines_get_no_output_and_tokens_split_on_runs_of_spaces(core: DeviceCore) -> None:
    assert core.handle("") == [] and core.handle("   ") == [] and core.handle("\r") == []
    r = _reply(core, "  infer   2  1 ")  # as split_tokens() in device.cpp
    assert r["ok"] and r["n"] == 2 and r["warmup"] == 1


def test_signed_lines_are_checked_then_executed_and_a_signed_blank_is_blank(core: DeviceCore) -> None:
    body = "version  "  # the CRC covers every byte before the last space, spaces included
    assert _reply(core, f"{body} *{zlib.crc32(body.encode()):08x}")["ok"]
    assert _reply(core, f"version *{zlib.crc32(body.encode()):08x}")["code"] == "E_LINE_CRC"
    blank = "  "
    assert core.handle(f"{blank} *{zlib.crc32(blank.encode()):08x}") == []  # as the firmware: no reply
    marker_windows = len(core.timeline._marker.starts)
    r = _reply(core, "infer 1 *00000000")
    assert (r["cmd"], r["code"]) == ("?", "E_LINE_CRC")
    assert len(core.timeline._marker.starts) == marker_windows  # no inference ran: the marker never rose
    assert _reply(core, "infer 1")["ok"] and len(core.timeline._marker.starts) == marker_windows + 1


def test_over_long_lines_are_refused_whether_discarded_or_whole(core: DeviceCore) -> None:
    for line in (None, "x" * (MAX_LINE_BYTES + 1)):
        r = _reply(core, line)
        assert (r["ok"], r["cmd"], r["code"]) == (False, "?", "E_LINE_TOO_LONG")
    assert _reply(core, "v" * MAX_LINE_BYTES)["code"] == "E_UNKNOWN_CMD"  # at the limit it is a command
    assert _reply(core, "version\r")["ok"]


def test_infer_logs_the_benchmark_before_its_reply(core: DeviceCore) -> None:
    lines = core.handle("infer 3")
    assert len(lines) == 2 and "hil: infer n=3 warmup=0" in lines[0]
    reply = parse_reply(lines[1])
    assert reply is not None and len(reply["latency_us"]) == 3


def test_arguments_are_checked_before_state_and_model_as_the_firmware_does() -> None:
    no_model = DeviceCore(None)
    assert _reply(no_model, "input 4 zz")["code"] == "E_ARGS"
    assert _reply(no_model, "input 4 0000000G")["code"] == "E_ARGS"
    assert _reply(no_model, "infer 0")["code"] == "E_ARGS"
    assert _reply(no_model, "infer ３")["code"] == "E_ARGS"  # a non-ASCII digit is no decimal integer
    assert _reply(no_model, "run 1")["code"] == "E_ARGS"
    assert _reply(no_model, "input 4 00000000")["code"] == "E_MODEL"
    assert _reply(no_model, "infer 1")["code"] == "E_MODEL"
    assert _reply(no_model, "data")["code"] == "E_STATE"  # no pending upload comes first


def test_a_board_without_a_model_says_so_in_hello() -> None:
    r = _reply(DeviceCore(None), "hello")
    assert (r["ok"], r["code"]) == (False, "E_MODEL") and "no model image" in r["error"]
    assert "model" not in r and "input" not in r
    info = Hello.from_json(r)
    assert not info.model_ok and info.model_error_code == "E_MODEL"


def test_hello_describes_the_tensors_as_tflm_sees_them(core: DeviceCore, sine_model: bytes) -> None:
    from models.tflm import TflmModel

    ref = TflmModel(sine_model)
    info = Hello.from_json(_reply(core, "hello"))
    assert info.input is not None and info.output is not None and info.model is not None
    assert info.input.shape == ref.input.shape and info.input.dtype == ref.input.dtype.name
    assert info.input.bytes == ref.input.bytes and info.input.scale == 0.0  # float: no quantization
    assert info.model.crc32 == crc32_hex(sine_model) and info.model.bytes == len(sine_model)
    assert info.arena_used is not None and abs(info.arena_used - ref.arena_used_bytes) <= 16


def test_run_returns_the_tflm_output_of_the_uploaded_input(core: DeviceCore, sine_model: bytes) -> None:
    from models.tflm import TflmModel

    assert _reply(core, "run")["code"] == "E_STATE"
    x = np.array([[1.25]], np.float32)
    done = _upload(core, x.tobytes())
    assert done["complete"] and done["crc32"] == crc32_hex(x.tobytes())
    r = _reply(core, "run")
    out = base64.b64decode(r["output"])
    assert r["output_crc32"] == crc32_hex(out)
    np.testing.assert_array_equal(np.frombuffer(out, np.float32).reshape(1, 1), TflmModel(sine_model).invoke(x))


def test_a_failed_upload_is_discarded(core: DeviceCore) -> None:
    assert _reply(core, "input 4 00000000")["ok"]
    assert _reply(core, "data AAAAAA==")["code"] == "E_CRC"
    assert _reply(core, "data AAAAAA==")["code"] == "E_STATE"
    assert _reply(core, "input 4 00000000")["ok"]
    assert _reply(core, "data AAAAAAAA")["code"] == "E_LENGTH"  # 6 bytes for 4 announced
    assert _reply(core, "run")["code"] == "E_STATE"


def test_reset_replies_then_boot_forgets_the_input(core: DeviceCore) -> None:
    _upload(core, np.array([[0.5]], np.float32).tobytes())
    assert _reply(core, "run")["ok"]
    assert not core.restart_pending
    assert _reply(core, "reset") == {"ok": True, "cmd": "reset"}
    assert core.restart_pending
    log = core.boot()
    assert log[: len(BOOT_BANNER)] == list(BOOT_BANNER) and READY_MARK in log[-1] and "protocol=2" in log[-1]
    assert not core.restart_pending
    assert _reply(core, "run")["code"] == "E_STATE"
    assert _reply(core, "hello")["ok"]  # the model survives a restart


def test_interrupt_strikes_after_each_timed_inference(core: DeviceCore) -> None:
    calls: list[int] = []
    core.handle("infer 3 2", interrupt=lambda: calls.append(1))
    assert len(calls) == 3  # not after the two warm-ups

    class Boom(Exception):
        pass

    def boom() -> None:
        raise Boom

    with pytest.raises(Boom):
        core.handle("infer 2", interrupt=boom)
    assert core.handle("version", interrupt=boom)  # commands without timed inferences never call it


def test_flashing_a_new_image_takes_effect_at_boot(core: DeviceCore) -> None:
    core.image = b"\x00" * 64
    assert _reply(core, "hello")["ok"]  # still the old model until the restart
    core.boot()
    r = _reply(core, "hello")
    assert r["code"] == "E_MODEL" and "corrupt" in r["error"]
    assert r["model"]["crc32"] == crc32_hex(b"\x00" * 64)


def test_infer_publishes_each_timed_inference_with_the_marker(sine_model: bytes) -> None:
    core = DeviceCore(sine_model)
    assert core.model.cost is not None
    t0 = core.timeline.now()
    r = _reply(core, "infer 3 2 4")  # two warm-ups without the marker, three timed ones with 4 ms gaps
    t1 = core.timeline.now()
    t = np.arange(t0, t1, 1e-6)
    high = core.timeline.marker(t) > 0.5
    assert int(np.count_nonzero(high[1:] & ~high[:-1])) + int(high[0]) == 3
    assert core.timeline.current(t).max() == pytest.approx(core.model.cost.active_current_a, rel=0.05)
    assert r["mean_us"] == pytest.approx(core.model.cost.latency_s * 1e6, rel=0.01)
    # simulated time: five inferences and three gaps, whatever the host took
    assert t1 - t0 == pytest.approx(5 * core.model.cost.latency_s + 3 * 0.004, rel=0.01)
