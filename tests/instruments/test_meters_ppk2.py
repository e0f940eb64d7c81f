"""PPK2: the serial protocol on the wire, `ppk2-api` against the simulator, stream faults, energy."""

from __future__ import annotations

import time

import numpy as np
import pytest
import serial
from ppk2_api.ppk2_api import PPK2_API

from hil.power import analyze
from instruments.errors import InstrumentError
from instruments.meters import MeterStreamError, open_meter
from instruments.meters.ppk2 import decode
from instruments.sim.meters import MeterProbe, PPK2Calibration, PPK2Simulator
from tests.instruments.meters_conftest import ACTIVE_A, SUPPLY, board, constant, true_energy_mj, true_idle_mw


@pytest.fixture
def sim():
    with PPK2Simulator(board(), noise_a=0.2e-3, seed=3) as s:
        yield s


def eventually(check, timeout_s: float = 2.0) -> None:
    """Wait for the simulator thread to have read what the host wrote (the pty is asynchronous)."""
    end = time.monotonic() + timeout_s
    while not check() and time.monotonic() < end:
        time.sleep(0.01)
    assert check()


def _read(port: serial.Serial, nbytes: int, timeout_s: float = 3.0) -> bytes:
    out = b""
    end = time.monotonic() + timeout_s
    while len(out) < nbytes and time.monotonic() < end:
        out += port.read(nbytes - len(out))
    return out


# ---- bytes on the wire ----------------------------------------------------------------------------
def test_driver_open_sends_the_documented_commands(sim):
    with open_meter("ppk2", sim.port, mode="ampere", supply_mv=3300):
        eventually(lambda: len(sim.commands) >= 4)
    eventually(lambda: len(sim.commands) >= 5)
    # stop, metadata, ampere mode (0x11 1), regulator 3300 mV = (0x0c, 0xe4), then stop again on close
    assert sim.commands[:4] == [b"\x07", b"\x19", b"\x11\x01", b"\x0d\x0c\xe4"]
    assert sim.commands[-1] == b"\x07"
    assert sim.unknown == []


def test_source_mode_powers_the_board_and_turns_it_off(sim):
    with open_meter("ppk2", sim.port, mode="source", supply_mv=5000) as m:
        eventually(lambda: sim.state.dut_power)
        assert sim.state.mode == "source" and sim.state.dut_power and sim.state.vdd_mv == 5000
        assert m.provenance()["mode"] == "source"
    eventually(lambda: not sim.state.dut_power)
    assert b"\x11\x02" in sim.commands and b"\x0d\x13\x88" in sim.commands  # 5000 mV -> 0x13 0x88
    assert sim.commands[-2:] == [b"\x07", b"\x0c\x00"] and not sim.state.dut_power


def test_stream_words_carry_code_range_counter_and_logic(sim):
    """Read the raw stream with pyserial only: every word decodes to the source's current and marker."""
    sim.source = constant(0.0251, marker_v=3.3)
    sim.front.noise_a = 0.0
    with serial.Serial(sim.port, timeout=0.2) as port:
        port.write(bytes([0x11, 0x01, 0x0D, 0x0C, 0xE4, 0x06]))
        raw = _read(port, 4 * 2000)
        port.write(b"\x07")
    words = np.frombuffer(raw[: 4 * 2000], "<u4")
    ranges = (words >> 14) & 7
    assert set(ranges.tolist()) == {2}  # 25 mA: range 2 (R ~ 10 ohm) is the most sensitive that holds it
    counters = (words >> 18) & 0x3F
    assert np.all((np.diff(counters.astype(int)) % 64) == 1)
    assert np.all((words >> 24) == 0x01)  # D0 high, D1-D7 low
    cal = PPK2Calibration()
    amps = cal.current(words & 0x3FFF, ranges, 3300)
    step = 4 * 1.8 / 163840 / cal.r[2]
    assert np.max(np.abs(amps - 0.0251)) <= step / 2 * 1.001  # quantization only


def test_metadata_answer_format(sim):
    with serial.Serial(sim.port, timeout=0.2) as port:
        port.write(b"\x19")
        text = _read(port, 10_000, timeout_s=0.5).decode()
    lines = text.strip().splitlines()
    assert lines[0] == "Calibrated: 1" and lines[-1] == "END"
    assert "R3: 0.934635" in lines and "GS3: 0.004" in lines and "HW: 9173" in lines


# ---- the user's library, unchanged -----------------------------------------------------------------
def test_ppk2_api_reads_the_simulator_unchanged(sim):
    sim.source = constant(0.0734, marker_v=3.3)
    api = PPK2_API(sim.port, timeout=1)
    try:
        assert api.get_modifiers()
        assert api.modifiers["R"]["3"] == pytest.approx(0.934635)
        assert api.modifiers["O"]["0"] == pytest.approx(112.3)
        api.use_ampere_meter()
        api.set_source_voltage(3300)
        api.start_measuring()
        samples, bits = [], []
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            data = api.get_data()
            if data:
                s, b = api.get_samples(data)
                samples += s
                bits += b
            time.sleep(0.01)
        api.stop_measuring()
    finally:
        api.ser.close()
    assert len(samples) > 10_000
    ua = np.array(samples[100:])
    assert np.median(ua) == pytest.approx(73_400, rel=2e-3)  # ppk2-api reports microamperes
    assert set(api.digital_channels(bits)[0]) == {1} and set(api.digital_channels(bits)[1]) == {0}


# ---- faults: one clear error, never a figure -------------------------------------------------------
@pytest.mark.parametrize("fault, message", [
    ({"stop_after_samples": 5_000}, "truncated"),
    ({"skip_samples_at": 3_000}, "counter went"),
    ({"bad_range_at": 4_000}, "range field 7"),
    ({"extra_byte_at": 2_500}, "counter went|range field"),  # misaligned words
])
def test_broken_stream_raises_one_clear_error(sim, fault, message):
    with open_meter("ppk2", sim.port) as m:
        for key, value in fault.items():
            setattr(sim.faults, key, value)
        m.arm()
        with pytest.raises(MeterStreamError, match=message):
            m.capture(0.1, timeout_s=1.0)


def test_decode_rejects_a_partial_word():
    good = (np.arange(10, dtype=np.uint32) << 18).astype("<u4").tobytes()
    codes, *_ = decode(good, 10)
    assert codes.size == 10
    with pytest.raises(MeterStreamError, match="9 of 10"):
        decode(good[:-1], 10)


def test_no_metadata_is_not_a_ppk2(sim):
    sim.faults.no_metadata = True
    with pytest.raises(InstrumentError, match="no PPK2 calibration metadata"):
        open_meter("ppk2", sim.port, timeout_s=0.5)


def test_bad_settings_are_refused(sim):
    with pytest.raises(InstrumentError, match="D0-D7"):
        open_meter("ppk2", sim.port, marker_input=9)
    with pytest.raises(InstrumentError, match="800-5000"):
        open_meter("ppk2", sim.port, supply_mv=6000)


# ---- figures ------------------------------------------------------------------------------------------
def test_energy_per_inference_matches_the_ground_truth(sim):
    with open_meter("ppk2", sim.port, marker_input=0) as m:
        current, marker = m.capture(0.25)
        prov = m.provenance()
    assert current.dt == pytest.approx(1e-5) and len(current) == 25_000
    assert prov["calibration"]["modifiers"]["R"]["3"] == pytest.approx(0.934635)
    assert prov["range_switches"] > 0 and prov["ranges_used"] == [2, 3]  # 48 mA in R2, 152 mA in R3
    r = analyze(current=current, marker=marker, supply_volts=SUPPLY)
    assert r.valid, r.reason
    assert r.window_source == "marker" and r.n_inferences >= 20
    assert r.energy_per_inference_mj.mean == pytest.approx(true_energy_mj(), rel=0.01)
    assert r.idle_power_mw == pytest.approx(true_idle_mw(), rel=0.01)
    assert r.current_resolution_ma < 0.1  # range 3: ~47 uA per step
    assert r.parameters["input"] == "current" and r.provenance["current"]["settings"]["kind"] == "ppk2"


def test_marker_on_another_input(sim):
    sim.marker_input = 5
    with open_meter("ppk2", sim.port, marker_input=5) as m:
        current, marker = m.capture(0.1)
    assert 0 < marker.volts.mean() < 1 and marker.channel == "D5"
    with open_meter("ppk2", sim.port, marker_input=0) as m:
        _, wrong = m.capture(0.05)
    assert wrong.volts.max() == 0  # nothing wired to D0 now


def test_shunt_source_probe_scales_shunt_volts():
    """A scope-oriented source (shunt volts on CH1) drives the meter through MeterProbe.for_shunt_source."""
    shunt = board(IDLE := 0.05 * 0.05, ACTIVE_A * 0.05)  # volts across 0.05 ohm
    with PPK2Simulator(shunt, MeterProbe.for_shunt_source(0.05)) as s, open_meter("ppk2", s.port) as m:
        current, _ = m.capture(0.05)
    assert np.max(current.volts) == pytest.approx(ACTIVE_A, rel=2e-3)
    assert np.min(current.volts) == pytest.approx(IDLE / 0.05, rel=2e-3)
