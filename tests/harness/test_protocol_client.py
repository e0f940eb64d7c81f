"""DutClient against the virtual board over a real pty and a real socket: typed results, errors, logs."""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable

import numpy as np
import pytest
import serial

from hil.protocol import (
    DutClient,
    DutError,
    DutTimeout,
    crc32_hex,
    parse_reply,
    reply_deadline_s,
)
from hil.sim.board import VirtualBoard


@pytest.mark.parametrize("transport", ["pty", "socket"])
def test_handshake_describes_the_model_as_loaded(
    board: VirtualBoard, sine_model: bytes, transport: str
) -> None:
    with DutClient(board.pty_path if transport == "pty" else board.url) as c:
        info = c.hello_info
    assert info is not None and info.model_ok and info.simulated
    assert info.model is not None
    assert info.model.crc32 == f"{zlib.crc32(sine_model) & 0xFFFFFFFF:08x}"
    assert info.model.sha256 == hashlib.sha256(sine_model).hexdigest()
    assert info.model.bytes == len(sine_model)
    assert info.input is not None and info.input.shape == (1, 1) and info.input.dtype == "float32"
    assert info.ops == ("FULLY_CONNECTED",) * 3
    assert 0 < info.arena_used <= info.arena_configured
    assert info.cpu_mhz == 240


def test_predict_returns_the_tflm_output(board: VirtualBoard, sine_model: bytes) -> None:
    from models.tflm import TflmModel

    ref = TflmModel(sine_model)
    with DutClient(board.url) as c:
        for x in (0.0, 0.5, 1.57, 3.0):
            xin = np.array([[x]], np.float32)
            got = c.predict(xin)
            np.testing.assert_array_equal(got, ref.invoke(xin))
    assert abs(float(got[0, 0]) - np.sin(3.0)) < 0.2  # and it is the sine model, not zeros


def test_infer_statistics_match_the_latency_list(board: VirtualBoard) -> None:
    with DutClient(board.pty_path) as c:
        r = c.infer(7, 2)
    lat = np.array(r.latency_us)
    assert r.n == 7 and r.warmup == 2 and len(lat) == 7
    assert r.min_us == lat.min() and r.max_us == lat.max()
    assert r.mean_us == pytest.approx(lat.mean(), abs=0.05)
    assert r.std_us == pytest.approx(lat.std(), abs=0.05)  # population std
    assert board.cost is not None
    assert lat.mean() == pytest.approx(board.cost.latency_s * 1e6, rel=0.05)


def test_profile_ops_add_up_to_the_total(board: VirtualBoard) -> None:
    with DutClient(board.url) as c:
        p = c.profile()
    assert [o.op for o in p.ops] == ["FULLY_CONNECTED"] * 3
    assert sum(o.us for o in p.ops) <= p.total_us <= sum(o.us for o in p.ops) + 20  # + invoke overhead


def test_device_log_lines_are_kept_not_parsed(board: VirtualBoard) -> None:
    seen: list[str] = []
    with DutClient(board.pty_path, on_log=seen.append) as c:
        c.infer(2)
        c.reset()
    assert any("hil: infer n=2" in line for line in c.log)
    assert any("hil-ready" in line for line in c.log)
    assert seen == c.log
    assert not any(line.startswith("@hil") for line in c.log)


def test_unknown_command_is_an_error_reply(board: VirtualBoard) -> None:
    with DutClient(board.url) as c:
        with pytest.raises(DutError) as err:
            c.request("frobnicate 1")
        assert err.value.code == "E_UNKNOWN_CMD"
        assert c.version().protocol == 2  # still in sync
        assert c.resyncs == 0


def test_oversized_line_is_rejected_and_the_board_survives(board: VirtualBoard) -> None:
    with DutClient(board.url) as c:
        with pytest.raises(DutError, match="exceeds the protocol limit"):
            c.request("x" * 2000)  # the client refuses to send it
    with serial.serial_for_url(board.url, timeout=2) as raw:
        raw.write(b"y" * 5000 + b"\nversion\n")
        first, second = parse_reply(raw.readline().decode()), parse_reply(raw.readline().decode())
    assert first is not None and first["code"] == "E_LINE_TOO_LONG"
    assert second is not None and second["ok"] and second["cmd"] == "version"


def test_bad_base64_and_crc_mismatch_discard_the_upload(board: VirtualBoard) -> None:
    with DutClient(board.pty_path) as c:
        c.request(f"input 4 {crc32_hex(bytes(4))}")
        with pytest.raises(DutError) as err:
            c.request("data @@@=")
        assert err.value.code == "E_BASE64"
        with pytest.raises(DutError) as err:
            c.request("data AAAAAA==")
        assert err.value.code == "E_STATE"  # the upload was discarded
        c.request("input 4 00000000")
        with pytest.raises(DutError) as err:
            c.request("data AAAAAA==")
        assert err.value.code == "E_CRC"
        with pytest.raises(DutError) as err:
            c.run()
        assert err.value.code == "E_STATE"


def test_input_of_the_wrong_size(board: VirtualBoard) -> None:
    with DutClient(board.url) as c:
        with pytest.raises(DutError) as err:
            c.upload(bytes(8))
        assert err.value.code == "E_LENGTH"
        with pytest.raises(DutError, match="does not match the model input"):
            c.predict(np.zeros((1, 2), np.float32))


def test_model_that_does_not_fit_the_arena(sine_model: bytes) -> None:
    from models.tflm import min_arena_bytes

    need = min_arena_bytes(sine_model)
    with VirtualBoard(sine_model, arena_bytes=1024) as b, DutClient(b.url) as c:
        info = c.hello_info
        assert info is not None and not info.model_ok
        assert info.model_error == f"arena too small: needs {need} bytes, has 1024"
        assert info.model is not None and info.arena_configured == 1024 and info.arena_used is None
        assert info.ops == ("FULLY_CONNECTED",) * 3  # every field that is known
        with pytest.raises(DutError) as err:
            c.infer(1)
        assert err.value.code == "E_MODEL"
        with pytest.raises(DutError, match="no usable model"):
            c.require_model()


def test_corrupt_model_image(sine_model: bytes) -> None:
    with VirtualBoard(b"\x00" * 64) as b, DutClient(b.pty_path) as c:
        assert c.hello_info is not None
        assert c.hello_info.model_error is not None and "corrupt" in c.hello_info.model_error
        assert c.version().board == "virtual-esp32"  # the board itself still answers


def test_client_refuses_another_protocol_version() -> None:
    """A bare device on a socket whose (well-formed, CRC-checked) hello says protocol 9."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(100)
            text = b'{"ok":true,"cmd":"hello","protocol":9}'
            conn.sendall(b"@hil " + text + b"*%08x\r\n" % zlib.crc32(text))
            time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()
    with pytest.raises(DutError, match="speaks protocol 9, this host speaks 1 and 2"):
        DutClient(f"socket://127.0.0.1:{srv.getsockname()[1]}").open()
    srv.close()


def test_unreachable_port_is_a_clear_error() -> None:
    with pytest.raises(DutError, match="cannot open serial port /dev/does-not-exist"):
        DutClient("/dev/does-not-exist").open()


def test_reply_deadlines_follow_the_spec() -> None:
    assert reply_deadline_s("version") == 1.0
    assert reply_deadline_s("run") == 11.0
    assert reply_deadline_s("infer 3 1 5") == pytest.approx(1 + 4 * 10 + 3 * 0.005)
    assert reply_deadline_s("infer 3 1 5", last_latency_s=0.06) == pytest.approx(1 + 4 * 0.12 + 0.015)
    assert isinstance(DutTimeout("x"), DutError)


def _flash_writer(board: VirtualBoard) -> Callable[[str, list[tuple[int, bytes]], int, dict[str, str]], None]:
    """An esptool stand-in that flashes the model of the image into the virtual board."""
    from hil import firmware

    def write(port: str, regions: list[tuple[int, bytes]], baud: int, settings: dict[str, str]) -> None:
        ((_, image),) = regions
        board.flash(image[firmware.IMAGE_HEADER_SIZE :])

    return write


def test_flash_model_asks_hello_over_the_protocol_client_at_the_console_baud(sine_model: bytes) -> None:
    import os
    import termios

    from hil import firmware

    part = firmware.Partition("model", "data", "spiffs", 0x110000, 0x100000)
    with VirtualBoard(b"\x00" * 64, boot_s=0.05).start(tcp_port=None) as b:
        assert b.pty_path is not None
        image = firmware.pack_image(sine_model)
        crc = firmware.flash_model(b.pty_path, image, partition=part, writer=_flash_writer(b), console_baud=921600)
        assert crc == crc32_hex(sine_model)
        fd = os.open(b.pty_path, os.O_RDWR | os.O_NOCTTY)
        try:
            ispeed, ospeed = termios.tcgetattr(fd)[4:6]  # what the host configured on the port
        finally:
            os.close(fd)
        assert ispeed == ospeed == termios.B921600
        assert firmware.query_hello(b.pty_path, baud=115200)["model"]["crc32"] == crc


def test_flash_model_reports_the_crc_and_model_error_the_board_answers(sine_model: bytes) -> None:
    from hil import firmware
    from hil.errors import HilError

    part = firmware.Partition("model", "data", "spiffs", 0x110000, 0x100000)
    with VirtualBoard(b"\x00" * 64, boot_s=0.05).start(tcp_port=None) as b:
        assert b.pty_path is not None
        with pytest.raises(HilError) as err:  # the "flash" never reaches the board: it keeps its corrupt image
            firmware.flash_model(b.pty_path, firmware.pack_image(sine_model), partition=part, writer=lambda *a: None)
    assert f"image CRC32 {crc32_hex(sine_model)}, device reports {crc32_hex(bytes(64))} (model image corrupt" in str(
        err.value
    )


def test_a_virtual_board_at_921600_baud_answers_only_a_host_at_that_baud(sine_model: bytes) -> None:
    """The pty behaves like a UART: a host at the wrong rate gets no reply, and the error names the baud."""
    with VirtualBoard(sine_model, boot_s=0.05, baud=921600).start(tcp_port=None) as b:
        with pytest.raises(DutTimeout, match="at 115200 baud; .* the baud the board's"):
            DutClient(b.pty_path, baudrate=115200, margin_s=0.0).open()
        with DutClient(b.pty_path, baudrate=921600) as c:
            assert c.hello_info is not None and c.hello_info.model_ok


def test_accuracy_streaming_reports_progress_every_100_images_and_on_a_slow_board(board: VirtualBoard,
                                                                                 monkeypatch) -> None:
    import hil.measure as measure

    x = np.linspace(0, 3, 130, dtype=np.float32).reshape(-1, 1)
    y = np.zeros(130, dtype=int)
    said: list[str] = []
    with DutClient(board.url) as c:
        measure.measure_accuracy(c, x, y, progress=said.append)
        assert said == ["accuracy: 100/130 images"]
        said.clear()
        monkeypatch.setattr(measure, "PROGRESS_EVERY_S", 0.0)  # every image is "30 s later" on a slow board
        measure.measure_accuracy(c, x[:3], y[:3], progress=said.append)
    assert said == [f"accuracy: {i}/3 images" for i in (1, 2, 3)]
