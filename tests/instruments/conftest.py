"""Simulator fixtures: a running ScopeSimulator per test, in both dialects."""

import pytest

from instruments.scope import open_scope
from instruments.sim import ScopeSimulator
from tests.instruments.board import board_source


@pytest.fixture(params=["rigol", "keysight"])
def dialect(request):
    return request.param


@pytest.fixture
def sim(dialect):
    with ScopeSimulator(dialect, board_source(), noise_vrms=0.0, seed=1) as server:
        yield server


@pytest.fixture
def scope(sim):
    with open_scope(sim.resource, timeout_s=2.0) as s:
        yield s


def setup_board_capture(scope, *, shunt_vdiv=0.8e-3, points=20_000, scale=2e-3):
    """CH1 shunt at `shunt_vdiv` centred on 5 mV, CH2 marker, trigger on the marker's rising edge."""
    scope.configure_channel(1, shunt_vdiv, 5e-3)
    scope.configure_channel(2, 1.0, 1.65)
    scope.configure_timebase(scale, record_points=points)
    scope.configure_trigger(2, 1.65, "rising")
