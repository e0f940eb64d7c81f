"""Fault injection on the virtual board: each fault ends in a clear error or a successful recovery."""

from __future__ import annotations

import json
import time
import zlib

import numpy as np
import pytest

from hil.protocol import DutClient, DutError, DutTimeout
from hil.sim.board import VirtualBoard


def test_reset_in_the_middle_of_infer_is_recovered(board: VirtualBoard) -> None:
    with DutClient(board.pty_path, margin_s=0.3) as c:
        board.faults.reset_on["infer"] = 1
        r = c.infer(4, 1)
        assert len(r.latency_us) == 4
        assert c.resyncs == 1
        assert any("hil-ready" in line for line in c.log)
        assert any("rst:0xc" in line for line in c.log)


def test_reset_during_upload_restarts_the_upload(board: VirtualBoard) -> None:
    with DutClient(board.url, margin_s=0.3) as c:
        board.faults.reset_on["data"] = 1
        out = c.predict(np.array([[1.0]], np.float32))
        assert c.resyncs == 1
        assert abs(float(out[0, 0]) - np.sin(1.0)) < 0.2


def test_dropped_reply_is_recovered_by_resync(board: VirtualBoard) -> None:
    with DutClient(board.url, margin_s=0.3) as c:
        board.faults.drop_on["version"] = 1
        t0 = time.monotonic()
        assert c.version().protocol == 2
        assert c.resyncs == 1
        assert 1.2 < time.monotonic() - t0 < 3.0  # waited the spec deadline + margin, not forever


def test_hang_gives_a_timeout_with_the_last_lines_then_power_cycle_recovers(board: VirtualBoard) -> None:
    with DutClient(board.pty_path, margin_s=0.3) as c:
        c.infer(1)
        board.faults.hang_on["version"] = 1
        t0 = time.monotonic()
        with pytest.raises(DutTimeout) as err:
            c.version()
        assert time.monotonic() - t0 < 4.0  # version deadline, one resync hello deadline
        assert any("hil: infer n=1" in line for line in err.value.lines)
        assert "last lines" in str(err.value)
        board.power_cycle()
        assert c.hello().model_ok
        assert c.version().protocol == 2


class _Recorder:
    """Keeps what the device core really printed (before the link garbles it) and the lines it received."""

    def __init__(self, board: VirtualBoard):
        self.received: list[str | None] = []
        self.infer_latencies: list[list[int]] = []
        handle = board.core.handle

        def observed(line, *args, **kw):
            self.received.append(line)
            out = handle(line, *args, **kw)
            for text in out:
                if '"cmd":"infer"' in text and '"ok":true' in text:
                    self.infer_latencies.append(json.loads(text[text.index("{") : text.rindex("}") + 1])["latency_us"])
            return out

        board.core.handle = observed  # an observer around the real core: it answers as before


def _noisy_calls(c: DutClient, ref, rec: _Recorder, calls: int) -> dict[str, int]:
    """Cycle `version`, `infer` and `predict` on a noisy link; check every result that comes back against
    what the board really computed (its unbroken reply, or the reference interpreter)."""
    n = {"ok": 0, "failed": 0, "recovered": 0, "undetected": 0}
    for i in range(calls):
        before = c.resyncs
        try:
            if i % 3 == 0:
                v = c.version()
                n["undetected"] += v.board != "virtual-esp32" or v.protocol != c.protocol
            elif i % 3 == 1:
                r = c.infer(3)
                n["undetected"] += list(r.latency_us) not in rec.infer_latencies
            else:
                x = np.array([[i / 10]], np.float32)
                n["undetected"] += not np.array_equal(c.predict(x), ref.invoke(x))
        except DutError as exc:
            n["failed"] += 1
            assert exc.lines, "a failure must carry the lines seen"
        else:
            n["ok"] += 1
            n["recovered"] += c.resyncs > before
    return n


def test_garbled_bytes_at_one_percent_never_give_a_wrong_result(sine_model: bytes) -> None:
    """1% of the board's bytes get a bit flipped (a ~150-byte infer reply is hit 3 times in 4).

    Protocol 2 puts a CRC32 on every reply line, so every call returns exactly what the board computed or
    raises a DutError carrying the lines seen, within its deadline; resynchronisation is a ~50-byte `sync`,
    so most calls recover; the link works again once the noise stops.
    """
    from models.tflm import TflmModel

    ref = TflmModel(sine_model)
    with VirtualBoard(sine_model, boot_s=0.05, seed=3) as b, DutClient(b.url, margin_s=0.2) as c:
        assert c.protocol == 2
        rec = _Recorder(b)
        b.faults.garble_rate = 0.01
        t0 = time.monotonic()
        n = _noisy_calls(c, ref, rec, 60)
        assert n["undetected"] == 0, n
        assert n["ok"] + n["failed"] == 60 and n["ok"] >= 30 and n["recovered"] > 0 and c.garbage > 0, n
        assert time.monotonic() - t0 < 90
        b.faults.garble_rate = 0.0
        c.hello()
        assert c.infer(3).n == 3
        np.testing.assert_array_equal(c.predict(np.array([[0.5]], np.float32)), ref.invoke(np.array([[0.5]])))


def test_garbled_bytes_at_a_lower_rate_are_recovered(sine_model: bytes) -> None:
    """At 0.2% nearly every call survives, by a `sync` and a re-issue where a reply was hit."""
    from models.tflm import TflmModel

    ref = TflmModel(sine_model)
    with VirtualBoard(sine_model, boot_s=0.05, seed=5) as b, DutClient(b.pty_path, margin_s=0.2) as c:
        rec = _Recorder(b)
        b.faults.garble_rate = 0.002
        n = _noisy_calls(c, ref, rec, 45)
    assert n["recovered"] >= 2 and n["ok"] >= 43 and n["undetected"] == 0, n


def test_the_client_signs_every_command_to_a_version_2_board_and_resyncs_with_sync(board: VirtualBoard) -> None:
    rec = _Recorder(board)
    with DutClient(board.url, margin_s=0.3) as c:
        board.faults.drop_on["version"] = 1
        assert c.version().protocol == 2
    sent = [line for line in rec.received if line]
    assert sent[0] == "hello"  # the first hello is plain: the version is not known yet
    for line in sent[1:]:
        body, _, crc = line.rpartition(" *")
        assert crc == f"{zlib.crc32(body.encode()):08x}", line
    assert [line.split(" ")[0] for line in sent[1:]] == ["version", "sync", "version"]


def test_a_version_1_board_still_works(sine_model: bytes) -> None:
    """Firmware from before protocol 2: no CRCs either way, no `sync`; the client speaks version 1 to it."""
    from models.tflm import TflmModel

    with VirtualBoard(sine_model, boot_s=0.05, protocol=1) as b, DutClient(b.pty_path, margin_s=0.3) as c:
        rec = _Recorder(b)
        assert c.protocol == 1 and c.hello_info.protocol == 1
        assert c.version().protocol == 1
        x = np.array([[0.25]], np.float32)
        np.testing.assert_array_equal(c.predict(x), TflmModel(sine_model).invoke(x))
        b.faults.drop_on["infer"] = 1
        assert c.infer(2).n == 2 and c.resyncs == 1
        assert not any(line and "*" in line for line in rec.received)  # nothing signed
        assert [line.split(" ")[0] for line in rec.received if line][-3:] == ["infer", "hello", "infer"]


def test_a_board_of_an_unknown_protocol_version_is_refused_naming_both(board: VirtualBoard) -> None:
    board.core.protocol = 3  # a newer firmware than this host
    with pytest.raises(DutError) as err:
        DutClient(board.url, margin_s=0.3).open()
    assert "protocol 3" in str(err.value) and "1 and 2" in str(err.value)


def _lines(raw, quiet_s: float = 0.5) -> list[str]:
    """Every line the board sends until it is quiet for `quiet_s`."""
    raw.timeout = quiet_s
    out = []
    while line := raw.readline():
        out.append(line.decode("ascii", errors="replace").rstrip("\r\n"))
    return out


def test_input_sent_to_a_hung_board_is_lost(board: VirtualBoard) -> None:
    import serial

    board.faults.hang_on["version"] = 1
    with serial.serial_for_url(board.url) as raw:
        raw.write(b"version\n")
        assert _lines(raw) == []  # hung
        raw.write(b"hello\n")  # arrives while the board is hung
        assert _lines(raw) == []
        board.power_cycle()
        after = _lines(raw)
        assert "hil-ready" in after[-1] and not any(line.startswith("@hil") for line in after)
        raw.write(b"version\n")
        assert _lines(raw)[0].startswith('@hil {"ok":true,"cmd":"version"')


def test_a_reset_whose_reply_is_lost_still_restarts(board: VirtualBoard) -> None:
    import serial

    board.faults.drop_on["reset"] = 1
    with serial.serial_for_url(board.url) as raw:
        raw.write(b"reset\n")
        lines = _lines(raw)
    assert lines and "hil-ready" in lines[-1] and not any(line.startswith("@hil") for line in lines)
