"""Power analysis against synthetic captures with known ground truth (8-bit quantisation, noise)."""

import json
import math

import numpy as np
import pytest

from hil.errors import HilError
from hil.power import analyze, differential
from instruments.waveform import Waveform
from tests.harness.power_synth import SUPPLY, R, make_capture, quantize

PHASE = 1.30371e-3  # edges between samples


@pytest.mark.parametrize("shape", ["rect", "shaped"])
@pytest.mark.parametrize("use_marker", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_energy_and_width_match_ground_truth(shape, use_marker, seed):
    shunt, marker, truth = make_capture(shape=shape, phase=PHASE, vdiv=0.8e-3, seed=seed)
    span = np.ptp(shunt.raw_codes)
    assert span >= 128  # the channel uses at least half of the 8-bit range
    r = analyze(shunt, marker if use_marker else None, shunt_ohms=R, supply_volts=SUPPLY)
    assert r.valid, r.reason
    assert r.window_source == ("marker" if use_marker else "current")
    assert r.n_inferences == truth.n
    assert r.energy_per_inference_mj.mean == pytest.approx(truth.energy_mj, rel=0.005)
    assert r.dynamic_energy_per_inference_mj.mean == pytest.approx(truth.dynamic_energy_mj, rel=0.005)
    assert r.idle_power_mw == pytest.approx(truth.idle_power_mw, rel=0.005)
    assert abs(r.pulse_width_ms.mean - truth.width_ms) <= shunt.dt * 1e3
    assert abs(r.pulse_width_ms.max - truth.width_ms) <= shunt.dt * 1e3
    assert abs(r.pulse_width_ms.min - truth.width_ms) <= shunt.dt * 1e3
    assert r.dynamic_power_mw == pytest.approx(r.active_power_mw - r.idle_power_mw)
    assert r.current_resolution_ma == pytest.approx(0.8e-3 / 25 / R * 1e3)
    assert 0 < r.energy_uncertainty_mj < 0.01 * truth.energy_mj


def test_windows_are_reported_for_plots():
    shunt, marker, truth = make_capture(phase=PHASE)
    r = analyze(shunt, marker, shunt_ohms=R, supply_volts=SUPPLY)
    starts = np.array([w.start_s for w in r.windows])
    np.testing.assert_allclose(np.diff(starts), 10e-3, atol=shunt.dt)
    assert all(abs(w.width_ms - 4.0) <= shunt.dt * 1e3 for w in r.windows)
    d = r.to_dict()
    json.dumps(d)
    assert d["energy_per_inference_mj"]["mean"] == r.energy_per_inference_mj.mean
    assert d["windows"][0]["start_s"] == r.windows[0].start_s


def test_burden_correction_changes_power_by_the_shunt_drop():
    shunt, marker, _ = make_capture(phase=PHASE, noise_v=0.0)
    on = analyze(shunt, marker, shunt_ohms=R, supply_volts=SUPPLY)
    off = analyze(shunt, marker, shunt_ohms=R, supply_volts=SUPPLY, burden_correction=False)
    i_idle = off.idle_power_mw / 1e3 / SUPPLY
    assert off.idle_power_mw - on.idle_power_mw == pytest.approx(i_idle**2 * R * 1e3, rel=0.02)


def test_clipped_capture_is_invalid():
    shunt, marker, _ = make_capture(phase=PHASE, vdiv=0.15e-3)
    assert shunt.clipped
    r = analyze(shunt, marker, shunt_ohms=R, supply_volts=SUPPLY)
    assert not r.valid and "clipped" in r.reason


def test_too_few_samples_per_window_is_invalid():
    shunt, marker, _ = make_capture(phase=PHASE, dt=250e-6, width=4e-3)  # 16 samples per window
    r = analyze(shunt, marker, shunt_ohms=R, supply_volts=SUPPLY)
    assert not r.valid and "samples" in r.reason and r.samples_per_window < 20


def test_no_window_is_invalid_not_a_number():
    shunt, marker, _ = make_capture(phase=PHASE, active_a=0.05)  # no activity at all
    flat = Waveform(t0=marker.t0, dt=marker.dt, volts=np.zeros(len(marker)), channel=2, volts_per_div=1.0)
    for m in (flat, None):
        r = analyze(shunt, m, shunt_ohms=R, supply_volts=SUPPLY)
        assert not r.valid and "no inference window" in r.reason and r.n_inferences == 0
        assert math.isnan(r.energy_per_inference_mj.mean)
        json.dumps(r.to_dict())


def test_coarse_resolution_warns():
    shunt, marker, _ = make_capture(phase=PHASE, vdiv=20e-3, offset=0.0)
    r = analyze(shunt, marker, shunt_ohms=R, supply_volts=SUPPLY)
    assert r.current_resolution_ma == pytest.approx(20e-3 / 25 / R * 1e3)
    assert any("coarse" in w for w in r.warnings)


def test_amplifier_wiring_divides_by_gain():
    shunt, marker, truth = make_capture(phase=PHASE, noise_v=0.0, vdiv=0.8e-3)
    gain = 50.0
    amplified = Waveform(t0=shunt.t0, dt=shunt.dt, volts=shunt.volts * gain, channel=1,
                         volts_per_div=shunt.volts_per_div * gain, adc_step_v=shunt.step_v * gain)
    a = analyze(amplified, marker, shunt_ohms=R, supply_volts=SUPPLY, wiring="amplifier", amplifier_gain=gain)
    b = analyze(shunt, marker, shunt_ohms=R, supply_volts=SUPPLY)
    assert a.energy_per_inference_mj.mean == pytest.approx(b.energy_per_inference_mj.mean, rel=1e-9)
    assert a.current_resolution_ma == pytest.approx(b.current_resolution_ma)


def test_high_side_two_channels_subtracts_and_warns_about_common_mode():
    shunt, marker, truth = make_capture(phase=PHASE, noise_v=0.2e-3, vdiv=0.8e-3)
    n = len(shunt)
    rng = np.random.default_rng(5)
    # CH1 at the supply side (5 V + Vs), CH2 at the board side (5 V): each needs 1 V/div -> 40 mV steps
    _, hi, _ = quantize(SUPPLY + shunt.volts + rng.normal(0, 0.02, n), 1.0, SUPPLY)
    _, lo, _ = quantize(np.full(n, SUPPLY) + rng.normal(0, 0.02, n), 1.0, SUPPLY)
    ch1 = Waveform(t0=shunt.t0, dt=shunt.dt, volts=hi, channel=1, volts_per_div=1.0, offset=SUPPLY)
    ch2 = Waveform(t0=shunt.t0, dt=shunt.dt, volts=lo, channel=3, volts_per_div=1.0, offset=SUPPLY)
    r = analyze(ch1, marker, shunt_ohms=R, supply_volts=SUPPLY, wiring="high_side", shunt_ref=ch2)
    assert r.current_resolution_ma > 500  # 40 mV steps over 0.05 ohm
    assert any("common mode" in w for w in r.warnings) and any("coarse" in w for w in r.warnings)
    np.testing.assert_allclose(differential(ch1, ch2).volts, hi - lo)


def test_user_mistakes_raise_hil_errors():
    shunt, marker, _ = make_capture(phase=PHASE)
    with pytest.raises(HilError, match="wiring"):
        analyze(shunt, marker, shunt_ohms=R, supply_volts=SUPPLY, wiring="sideways")
    with pytest.raises(HilError, match="shunt_ohms"):
        analyze(shunt, marker, shunt_ohms=0, supply_volts=SUPPLY)
    short = Waveform(t0=marker.t0, dt=marker.dt, volts=marker.volts[:100], channel=2, volts_per_div=1.0)
    with pytest.raises(HilError, match="not sampled like"):
        analyze(shunt, short, shunt_ohms=R, supply_volts=SUPPLY)
    with pytest.raises(HilError, match="shunt_ref"):
        analyze(shunt, marker, shunt_ohms=R, supply_volts=SUPPLY, shunt_ref=shunt)


# -- MLPerf Tiny energy mode: the window between the DUT's two timestamp edges -----------------------------------

def _timestamp_capture(edges_s: tuple[float, ...], *, active_from: float, active_to: float, dt: float = 1e-5,
                       duration: float = 0.2, pulse_s: float = 5e-4, idle_a: float = 0.045, active_a: float = 0.12,
                       seed: int = 0):
    """A capture of an energy-mode `infer`: the timestamp GPIO high with a low pulse at each edge, the current
    active from `active_from` to `active_to` (s), CH1 a low-side shunt with noise, CH2 the GPIO."""
    from instruments.waveform import Waveform

    rng = np.random.default_rng(seed)
    n = int(round(duration / dt))
    t = dt * np.arange(n)
    current = np.where((t >= active_from) & (t < active_to), active_a, idle_a)
    shunt_v = current * R + rng.normal(0, 0.05e-3, n)
    gpio = np.full(n, 3.3)
    for edge in edges_s:
        gpio[(t >= edge) & (t < edge + pulse_s)] = 0.0
    gpio += rng.normal(0, 0.01, n)
    shunt = Waveform(t0=0.0, dt=dt, volts=shunt_v, channel=1, volts_per_div=1e-3, adc_step_v=1e-6)
    marker = Waveform(t0=0.0, dt=dt, volts=gpio, channel=2, volts_per_div=1.0)
    return shunt, marker


def test_energy_between_the_timestamp_edges_is_the_runners_definition() -> None:
    from hil.power import analyze_timestamps

    shunt, marker = _timestamp_capture((0.02, 0.17), active_from=0.02, active_to=0.17)
    w = analyze_timestamps(shunt, marker, iterations=10, shunt_ohms=R, supply_volts=SUPPLY)
    p_active = 0.12 * (SUPPLY - 0.12 * R)
    assert w.valid and w.edges == 2, w
    assert w.window_s == pytest.approx(0.15, abs=2e-5)
    assert w.latency_ms == pytest.approx(15.0, rel=1e-3)
    assert w.avg_power_mw == pytest.approx(p_active * 1e3, rel=2e-3)
    assert w.energy_per_inference_mj == pytest.approx(p_active * 0.15 / 10 * 1e3, rel=2e-3)


@pytest.mark.parametrize(("edges", "seen"), [((0.02,), 1), ((0.02, 0.09, 0.17), 3)])
def test_timestamp_edges_that_do_not_match_the_iterations_void_the_capture(edges, seen) -> None:
    from hil.power import analyze_timestamps

    shunt, marker = _timestamp_capture(edges, active_from=0.02, active_to=0.17)
    w = analyze_timestamps(shunt, marker, iterations=10, shunt_ohms=R, supply_volts=SUPPLY)
    assert not w.valid and w.edges == seen and math.isnan(w.energy_per_inference_mj)
    assert f"the scope saw {seen} timestamp edges where one 'infer 10' makes 2" in w.reason


def test_a_window_that_disagrees_with_the_dut_timer_voids_the_capture() -> None:
    from hil.power import analyze_timestamps

    shunt, marker = _timestamp_capture((0.02, 0.17), active_from=0.02, active_to=0.17)
    w = analyze_timestamps(shunt, marker, iterations=10, shunt_ohms=R, supply_volts=SUPPLY,
                           expected_latency_s=0.010)  # the window says 15 ms an inference
    assert not w.valid and "the edges do not match the iterations" in w.reason
    flat = _timestamp_capture((), active_from=0.02, active_to=0.17)
    w = analyze_timestamps(*flat, iterations=10, shunt_ohms=R, supply_volts=SUPPLY)
    assert not w.valid and "no timestamp edge" in w.reason
