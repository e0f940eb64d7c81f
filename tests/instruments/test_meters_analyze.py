"""`analyze(current=...)`, the scope behind the meter interface, and a scope and a meter on one board at once."""

from __future__ import annotations

import numpy as np
import pytest

from hil.errors import HilError
from hil.power import analyze
from instruments.meters import CurrentSource, ScopeCurrentSource, current_waveform, logic_waveform, open_meter
from instruments.scope import open_scope
from instruments.sim import FunctionSource, ScopeSimulator
from instruments.sim.meters import MeterProbe, PPK2Simulator
from instruments.waveform import Waveform
from tests.instruments.meters_conftest import ACTIVE_A, IDLE_A, MARKER_V, SUPPLY, active, true_energy_mj

R = 0.05


def _synthetic(dt: float = 1e-5, n: int = 30_000):
    t = np.arange(n) * dt
    amps = np.where(active(t), ACTIVE_A, IDLE_A)
    marker = active(t).astype(float)
    cur = current_waveform(amps, dt, channel="I", resolution_a=1e-6, full_scale_a=1.0, idn="test", settings={})
    return cur, logic_waveform(marker, dt, channel="D0", idn="test", settings={})


def test_current_input_and_its_checks():
    cur, mk = _synthetic()
    r = analyze(current=cur, marker=mk, supply_volts=SUPPLY, marker_threshold=1.65)  # volts: ignored for logic
    assert r.valid and r.wiring == "current" and r.parameters["threshold_used"] == 0.5
    assert r.energy_per_inference_mj.mean == pytest.approx(true_energy_mj(), rel=2e-3)
    burdened = analyze(current=cur, marker=mk, supply_volts=SUPPLY, burden_ohms=R)
    assert burdened.energy_per_inference_mj.mean == pytest.approx(true_energy_mj(burden_ohms=R), rel=2e-3)
    with pytest.raises(HilError, match="not both"):
        analyze(cur, current=cur, supply_volts=SUPPLY)
    with pytest.raises(HilError, match="holds current in A"):
        analyze(cur, mk, shunt_ohms=R, supply_volts=SUPPLY)
    volts = Waveform(t0=0, dt=1e-5, volts=cur.volts * R, channel=1, volts_per_div=1e-3)
    with pytest.raises(HilError, match="not marked as amperes"):
        analyze(current=volts, supply_volts=SUPPLY)
    with pytest.raises(HilError, match="shunt_ohms is required"):
        analyze(volts, supply_volts=SUPPLY)


def test_over_range_current_is_invalid_with_a_meter_reason():
    cur, mk = _synthetic()
    cur.clipped = True
    r = analyze(current=cur, marker=mk, supply_volts=SUPPLY)
    assert not r.valid and "over range" in r.reason and "volts/div" not in r.reason


def _shunt_board() -> FunctionSource:
    """The same board seen through a 0.05 ohm low-side shunt: CH1 shunt volts, CH2 marker volts."""
    return FunctionSource({1: lambda t: np.where(active(t), ACTIVE_A, IDLE_A) * R,
                           2: lambda t: np.where(active(t), MARKER_V, 0.0)})


def _setup_scope(scope) -> None:
    scope.configure_channel(1, 1.0e-3, 5e-3)
    scope.configure_channel(2, 1.0, 1.65)
    scope.configure_timebase(20e-3, record_points=100_000)  # 200 ms at 500 kS/s
    scope.configure_trigger(2, 1.65, "rising")


def test_scope_behind_the_meter_interface_matches_the_shunt_analysis():
    with ScopeSimulator("rigol", _shunt_board(), adc_bits=12, seed=2) as sim, open_scope(sim.resource) as scope:
        _setup_scope(scope)
        source = ScopeCurrentSource(scope, shunt_ohms=R)
        assert isinstance(source, CurrentSource)
        source.arm()
        current, marker = source.capture(timeout_s=5)
        scope.arm()
        scope.wait_for_trigger(5)
        shunt, mvolts = scope.fetch(1, 2)
    via_current = analyze(current=current, marker=marker, supply_volts=SUPPLY, burden_ohms=R)
    via_shunt = analyze(shunt, mvolts, shunt_ohms=R, supply_volts=SUPPLY)
    assert via_current.valid and via_shunt.valid
    assert via_current.current_resolution_ma == pytest.approx(via_shunt.current_resolution_ma)
    assert via_current.energy_per_inference_mj.mean == pytest.approx(via_shunt.energy_per_inference_mj.mean,
                                                                     rel=2e-3)
    assert via_current.provenance["current"]["settings"]["scope"]["idn"].startswith("RIGOL")


def test_scope_and_meter_measure_one_board_at_once_and_agree():
    board = _shunt_board()
    with ScopeSimulator("rigol", board, adc_bits=12, seed=4) as ssim, open_scope(ssim.resource) as scope, \
            PPK2Simulator(board, MeterProbe.for_shunt_source(R)) as psim, open_meter("ppk2", psim.port) as meter:
        _setup_scope(scope)
        meter.arm()
        scope.arm()
        scope.wait_for_trigger(5)
        current, marker = meter.capture(0.25)
        shunt, mvolts = scope.fetch(1, 2)
    by_scope = analyze(shunt, mvolts, shunt_ohms=R, supply_volts=SUPPLY)
    by_meter = analyze(current=current, marker=marker, supply_volts=SUPPLY, burden_ohms=R)  # same shunt in series
    assert by_scope.valid and by_meter.valid, (by_scope.reason, by_meter.reason)
    e_scope, e_meter = by_scope.energy_per_inference_mj.mean, by_meter.energy_per_inference_mj.mean
    assert e_meter == pytest.approx(e_scope, rel=0.01)
    assert e_meter == pytest.approx(true_energy_mj(burden_ohms=R), rel=0.01)
