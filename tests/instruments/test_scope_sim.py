"""Drivers against the SCPI simulator over real sockets: configure, arm, trigger, fetch, analyse."""

import json

import numpy as np
import pytest

from hil.power import analyze
from instruments.keysight import KeysightInfiniiVision
from instruments.rigol import RigolDS1000Z, RigolMSO5000
from instruments.scope import autorange, open_scope
from instruments.sim import ArraySource, FunctionSource, ScopeSimulator
from instruments.waveform import Waveform
from tests.instruments import board
from tests.instruments.board import board_source
from tests.instruments.conftest import setup_board_capture


def test_open_scope_picks_the_driver_from_idn(sim, scope):
    expected = RigolDS1000Z if sim.dialect == "rigol" else KeysightInfiniiVision
    assert type(scope) is expected
    assert scope.identify() == sim.idn


def test_settings_are_read_back(scope):
    ch = scope.configure_channel(1, 0.02, -0.1, coupling="AC", probe=10, bandwidth_limit=True)
    got = (ch.volts_per_div, ch.offset, ch.coupling, ch.probe, ch.bandwidth_limit)
    assert got == (0.02, -0.1, "AC", 10, True)
    tb = scope.configure_timebase(1e-3, record_points=5000)
    assert tb.record_points == 5000
    assert tb.sample_rate == pytest.approx(5000 / (1e-3 * scope.horizontal_divisions))
    tb = scope.configure_timebase(1e-3, sample_rate=2e6)
    assert tb.sample_rate == pytest.approx(2e6)


def test_capture_two_channels_matches_the_source(sim, scope):
    setup_board_capture(scope)
    shunt, marker = scope.capture(1, 2, timeout_s=3)
    assert sim.unknown == []
    assert len(shunt) == len(marker) == 20_000
    assert shunt.t0 == pytest.approx(-scope.acquisition_time_s() / 2, rel=1e-6)
    # relative to the trigger (marker rising edge) the board is active for [0, WIDTH) of each period
    t = shunt.time
    expected = np.where(np.mod(t, board.PERIOD) < board.WIDTH, board.ACTIVE_A, board.IDLE_A) * board.R
    phase = np.mod(t, board.PERIOD)
    far = np.min([np.abs(phase - e) for e in (0.0, board.WIDTH, board.PERIOD)], axis=0) > 2 * shunt.dt
    np.testing.assert_allclose(shunt.volts[far], expected[far], atol=shunt.step_v / 2 + 1e-12)
    assert not shunt.clipped and not marker.clipped
    i0 = np.searchsorted(t, 0.0)
    assert marker.volts[i0 - 2] < 1.65 < marker.volts[i0 + 1]


def test_word_and_ascii_transfers_agree_with_byte(scope):
    setup_board_capture(scope, points=5000)
    byte, = scope.capture(1, timeout_s=3)
    word, = scope.fetch(1, fmt="WORD")
    asc, = scope.fetch(1, fmt="ASCII")
    np.testing.assert_allclose(word.volts, byte.volts, atol=1e-9)
    np.testing.assert_allclose(asc.volts, byte.volts, atol=1e-9)
    assert word.raw_codes.dtype.itemsize == 2 and byte.raw_codes.dtype.itemsize == 1


def test_long_rigol_record_is_read_in_chunks():
    with ScopeSimulator("rigol", board_source()) as sim, open_scope(sim.resource) as scope:
        setup_board_capture(scope, points=600_000, scale=5e-3)
        shunt, = scope.capture(1, timeout_s=5)
        data_reads = [c for c in sim.commands if c == ":WAV:DATA?"]
        starts = [c for c in sim.commands if c.startswith(":WAV:STAR")]
        assert len(shunt) == 600_000 and len(data_reads) == 3
        assert starts == [":WAV:STAR 1", ":WAV:STAR 250001", ":WAV:STAR 500001"]
        assert np.isfinite(shunt.volts).all() and shunt.volts.min() > 0


def test_badly_scaled_channel_really_clips_and_analysis_refuses(scope):
    setup_board_capture(scope, shunt_vdiv=0.1e-3)  # 1 mV of range for a 2.5..7.5 mV signal
    shunt, marker = scope.capture(1, 2, timeout_s=3)
    assert shunt.clipped
    report = analyze(shunt, marker, shunt_ohms=board.R, supply_volts=board.SUPPLY)
    assert not report.valid and "clipped" in report.reason


def test_end_to_end_power_figures_match_the_source(dialect):
    with ScopeSimulator(dialect, board_source(), noise_vrms=0.1e-3, seed=3) as sim:
        with open_scope(sim.resource) as scope:
            setup_board_capture(scope, points=50_000, scale=5e-3)
            shunt, marker = scope.capture(1, 2, timeout_s=3)
    report = analyze(shunt, marker, shunt_ohms=board.R, supply_volts=board.SUPPLY)
    assert report.valid, report.reason
    assert report.n_inferences >= 4
    assert report.energy_per_inference_mj.mean == pytest.approx(board.true_energy_mj(), rel=0.005)
    assert report.idle_power_mw == pytest.approx(board.true_idle_mw(), rel=0.005)
    assert abs(report.pulse_width_ms.mean - board.WIDTH * 1e3) <= shunt.dt * 1e3
    assert report.provenance["shunt"]["idn"] == sim.idn
    json.dumps(report.to_dict())


@pytest.mark.parametrize(("dialect", "bits", "cls"), [("rigol", 12, RigolMSO5000), ("keysight", 14, None)])
def test_high_resolution_adcs(dialect, bits, cls):
    with ScopeSimulator(dialect, board_source(), adc_bits=bits) as sim, open_scope(sim.resource) as scope:
        if cls:
            assert type(scope) is cls
        assert scope.adc_bits == bits
        setup_board_capture(scope, points=5000)
        scope.capture(1, timeout_s=3)
        word, = scope.fetch(1, fmt="WORD")
        byte, = scope.fetch(1, fmt="BYTE")
        assert word.step_v < byte.step_v / 10
        assert not word.clipped
        assert sim.unknown == []
        if dialect == "rigol":
            assert "*WAI" in sim.commands  # the MSO5000/DHO family waits before :WAV:DATA?


def test_provenance_recomputes_the_figures(tmp_path, scope):
    setup_board_capture(scope, points=4000)
    shunt, = scope.capture(1, timeout_s=3)
    np.testing.assert_array_equal(shunt.recompute(), shunt.volts)
    assert shunt.preamble["text"] and shunt.settings["timebase"]["record_points"] == 4000
    again = Waveform.load(shunt.save(tmp_path / "ch1"))
    np.testing.assert_array_equal(again.recompute(), shunt.volts)
    assert again.idn == shunt.idn and again.settings == shunt.settings


def test_autorange_uses_half_the_adc_range_without_clipping(scope):
    setup_board_capture(scope, shunt_vdiv=1.0, points=4000)
    cfg = autorange(scope, 1, timeout_s=3)
    shunt, = scope.capture(1, timeout_s=3)
    assert not shunt.clipped
    span = shunt.volts.max() - shunt.volts.min()
    assert span >= 0.5 * scope.adc_span_div * cfg.volts_per_div


def test_array_source_single_pulse_after_arm_and_falling_trigger(dialect):
    dt = 1e-6
    pulse = np.concatenate([np.zeros(3000), np.full(2000, 2.0), np.zeros(3000)])
    source = ArraySource({1: pulse}, dt, delay_s=0.005, pad=0.0)
    with ScopeSimulator(dialect, source) as sim, open_scope(sim.resource) as scope:
        scope.configure_channel(1, 0.5, 1.0)
        scope.configure_timebase(1e-3 / scope.horizontal_divisions * 4, record_points=4000)  # 4 ms
        scope.configure_trigger(1, 1.0, "falling")
        wf, = scope.capture(1, timeout_s=3)
    before, after = wf.volts[wf.time < -1e-5], wf.volts[wf.time > 1e-5]
    assert np.all(before[-1000:] > 1.9) and np.all(after[:1000] < 0.1)


def test_horizontal_position_moves_the_window(scope):
    setup_board_capture(scope, points=4000)
    scope.configure_timebase(1e-3, record_points=4000, position_s=2e-3)
    wf, = scope.capture(2, timeout_s=3)
    window = scope.acquisition_time_s()
    assert wf.t0 == pytest.approx(2e-3 - window / 2, rel=1e-6)


def test_function_source_relative_to_arm():
    src = FunctionSource({1: lambda t: np.where(t > 0.004, 1.0, 0.0)}, relative_to_arm=True)
    with ScopeSimulator("keysight", src) as sim, open_scope(sim.resource) as scope:
        scope.configure_channel(1, 0.2, 0.5)
        scope.configure_timebase(2e-4, record_points=2000)
        scope.configure_trigger(1, 0.5)
        wf, = scope.capture(1, timeout_s=3)
    assert wf.volts[0] < 0.05 and wf.volts[-1] > 0.95


class _Clocked:
    """A clocked source: a pulse train in its own time, which moves only when asked (no wall clock)."""

    def __init__(self):
        self.t = 100.0
        self.busy = False

    def now(self):
        return self.t

    def run_until(self, t):
        if not self.busy and t > self.t:
            self.t = t
        return self.t

    def volts(self, channel, t):
        t = np.asarray(t, dtype=float)
        high = ((t >= 100.030) & (t < 100.034)) | ((t >= 100.040) & (t < 100.044))
        return np.where(high, 3.3 if channel == 2 else 0.02, 0.0 if channel == 2 else 0.005)


def test_a_clocked_source_is_acquired_in_its_own_time():
    import time

    src = _Clocked()
    with ScopeSimulator("rigol", src, noise_vrms=0.0, seed=1) as server, open_scope(server.resource) as scope:
        setup_board_capture(scope, scale=2e-3, points=24_000)  # 24 ms record centred on the trigger
        scope.arm()  # the idle source's time runs for the pre-trigger half of the record
        server.sync()  # what the driver sent is handled (the virtual board does this before each command)
        assert server.poll_state() == "WAIT" and src.t == pytest.approx(100.012)
        time.sleep(0.2)  # wall time passes: nothing happens in the source's time
        assert server.poll_state() == "WAIT" and src.t == pytest.approx(100.012)
        src.busy = True
        src.t = 100.035  # the board ran past the first pulse: triggered, record not yet full
        assert server.poll_state() == "TD"
        src.busy = False  # idle: the scope lets the source's time run to the end of its record
        scope.wait_for_trigger(timeout_s=2)
        shunt, marker = scope.fetch(1, 2)
    assert src.t == pytest.approx(100.030 + 0.012, abs=1e-4)
    high = np.asarray(marker.volts) > 1.65
    assert int(np.count_nonzero(high[1:] & ~high[:-1])) == 2
    t_first = float(marker.time[np.argmax(high)])
    assert t_first == pytest.approx(0.0, abs=2e-6)  # the trigger is the source's first edge, not a wall time
