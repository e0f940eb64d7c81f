"""Joulescope: the real `pyjoulescope_driver` without a device, and the driver against the Driver-level simulator."""

from __future__ import annotations

import numpy as np
import pytest

from hil.power import analyze
from instruments.errors import InstrumentError
from instruments.meters import MeterStreamError, open_meter
from instruments.sim.meters import JoulescopeSimulator
from tests.instruments.meters_conftest import SUPPLY, board, true_energy_mj, true_idle_mw

PATH = "u/js220/000415"


def test_real_driver_without_a_device_says_so():
    pytest.importorskip("pyjoulescope_driver")
    with pytest.raises(InstrumentError, match="no Joulescope .*found"):
        open_meter("joulescope", "")


def test_driver_publishes_the_documented_topics():
    sim = JoulescopeSimulator(board())
    with open_meter("joulescope", "000415", sample_rate=100_000, marker_input=2, driver_class=sim.driver_class) as m:
        m.capture(0.02)
    assert sim.published == [
        (PATH, "open:defaults"), (f"{PATH}/s/i/range/mode", "auto"), (f"{PATH}/h/fs", 100_000),
        (f"{PATH}/s/gpi/2/ctrl", 1), (f"{PATH}/s/i/ctrl", 1),
        (f"{PATH}/s/i/ctrl", 0), (f"{PATH}/s/gpi/2/ctrl", 0), (PATH, "close"),
    ]


def test_energy_per_inference_matches_the_ground_truth():
    sim = JoulescopeSimulator(board(), noise_a=0.2e-3, seed=7)
    with open_meter("joulescope", "", sample_rate=200_000, driver_class=sim.driver_class) as m:
        current, marker = m.capture(0.25)
        assert m.idn == "Jetperch,JS220,000415,FW 1.2.1"
    assert len(current) == 50_000 and current.dt == pytest.approx(5e-6)
    assert current.step_v == pytest.approx(0.18 / 2**15)  # the 180 mA range holds 152 mA
    r = analyze(current=current, marker=marker, supply_volts=SUPPLY)
    assert r.valid, r.reason
    assert r.energy_per_inference_mj.mean == pytest.approx(true_energy_mj(), rel=0.01)
    assert r.idle_power_mw == pytest.approx(true_idle_mw(), rel=0.01)


@pytest.mark.parametrize("fault, value, message", [
    ("gap_after_samples", 5_000, "samples lost"),
    ("stop_after_samples", 5_000, "truncated: 5000 of 20000"),
    ("nan_at", 1234, "non-finite current at sample 1234"),
])
def test_broken_stream_raises_one_clear_error(fault, value, message):
    sim = JoulescopeSimulator(board())
    with open_meter("joulescope", PATH, sample_rate=100_000, driver_class=sim.driver_class) as m:
        setattr(sim.faults, fault, value)
        m.arm()
        with pytest.raises(MeterStreamError, match=message):
            m.capture(0.2, timeout_s=1.0)


def test_gpi_bits_are_unpacked_first_sample_lowest():
    sim = JoulescopeSimulator(board())
    with open_meter("joulescope", "", sample_rate=100_000, driver_class=sim.driver_class) as m:
        current, marker = m.capture(0.1)
    # the marker's duty cycle over whole periods is WIDTH / PERIOD; a bit order mix-up would scramble edges
    edges = np.flatnonzero(np.diff(marker.volts) != 0)
    assert edges.size >= 16 and np.all(np.diff(edges)[::2] > 1)
    assert np.corrcoef(marker.volts, current.volts)[0, 1] > 0.99


def test_unknown_device_and_bad_rate():
    sim = JoulescopeSimulator(board())
    with pytest.raises(InstrumentError, match="no Joulescope 999999 found .*u/js220/000415"):
        open_meter("joulescope", "999999", driver_class=sim.driver_class)
    with pytest.raises(InstrumentError, match="sample_rate"):
        open_meter("joulescope", "", sample_rate=300_000, driver_class=sim.driver_class)
