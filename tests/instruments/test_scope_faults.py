"""Bad input and injected faults: one clear error (or one successful retry), never a short array."""

import socket
import time

import numpy as np
import pytest

from instruments.errors import InstrumentError
from instruments.scope import TriggerTimeout, open_scope
from instruments.sim import ScopeSimulator
from instruments.sim.scripted import ScriptedInstrument
from tests.instruments.board import board_source
from tests.instruments.conftest import setup_board_capture


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_resource_names_resource_and_backend():
    resource = f"TCPIP0::127.0.0.1::{_closed_port()}::SOCKET"
    with pytest.raises(InstrumentError) as info:
        open_scope(resource, timeout_s=0.5)
    assert resource in str(info.value) and "@py" in str(info.value)


def test_unsupported_idn_and_forced_driver_mismatch():
    with ScopeSimulator("rigol", board_source()) as sim:
        sim.faults.idn_override = "ACME INSTRUMENTS,SCOPE9000,1,1.0"
        with pytest.raises(InstrumentError, match="unsupported oscilloscope 'ACME"):
            open_scope(sim.resource, timeout_s=1)
        sim.faults.idn_override = None
        with pytest.raises(InstrumentError, match="does not match"):
            open_scope(sim.resource, driver="keysight", timeout_s=1)
        with pytest.raises(InstrumentError, match="unknown oscilloscope driver"):
            open_scope(sim.resource, driver="lecroy", timeout_s=1)
        with open_scope(sim.resource, driver="rigol", timeout_s=1) as scope:
            assert scope.vendor == "rigol"


def test_trigger_timeout_names_channel_level_and_slope(dialect):
    with ScopeSimulator(dialect, board_source()) as sim, open_scope(sim.resource, timeout_s=1) as scope:
        setup_board_capture(scope, points=2000)
        scope.configure_trigger(2, 1.2, "falling")
        sim.faults.never_trigger = True
        with pytest.raises(TriggerTimeout) as info:
            scope.capture(1, 2, timeout_s=0.3)
        msg = str(info.value)
        assert "channel 2" in msg and "1.2 V" in msg and "falling" in msg
        sim.faults.never_trigger = False  # the session is usable again afterwards
        shunt, = scope.capture(1, timeout_s=3)
        assert len(shunt) == 2000


def test_one_truncated_block_is_retried_after_reconnecting(dialect):
    with ScopeSimulator(dialect, board_source()) as sim, open_scope(sim.resource, timeout_s=0.4) as scope:
        setup_board_capture(scope, points=2000)
        good, = scope.capture(1, timeout_s=3)
        sim.faults.truncate_next_block = True
        again, = scope.fetch(1)
        np.testing.assert_array_equal(again.volts, good.volts)
        assert not sim.faults.truncate_next_block


def test_persistently_truncated_block_is_an_error_not_a_short_array(dialect):
    with ScopeSimulator(dialect, board_source()) as sim, open_scope(sim.resource, timeout_s=0.4) as scope:
        setup_board_capture(scope, points=2000)
        scope.capture(1, timeout_s=3)
        sim.faults.truncate_all_blocks = True
        with pytest.raises(InstrumentError, match="failed twice.*truncated IEEE 488.2 block") as err:
            scope.fetch(1)
    # the VISA library drops a timed-out read's bytes: the message says the count is a lower bound
    assert "may have arrived before the data stopped" in str(err.value)


def test_dropped_connection_mid_transfer_reconnects_once(dialect):
    with ScopeSimulator(dialect, board_source()) as sim, open_scope(sim.resource, timeout_s=0.4) as scope:
        setup_board_capture(scope, points=4000)
        good, = scope.capture(1, timeout_s=3)
        sim.faults.drop_connection_after_bytes, sim.faults.drops = 1000, 1
        again, = scope.fetch(1)
        np.testing.assert_array_equal(again.volts, good.volts)
        sim.faults.drop_connection_after_bytes, sim.faults.drops = 1000, 2
        with pytest.raises(InstrumentError, match="failed twice"):
            scope.fetch(1)


def test_delayed_responses_still_work(dialect):
    with ScopeSimulator(dialect, board_source()) as sim, open_scope(sim.resource, timeout_s=1) as scope:
        setup_board_capture(scope, points=2000)
        sim.faults.delay_s = 0.02
        shunt, marker = scope.capture(1, 2, timeout_s=3)
        assert len(shunt) == len(marker) == 2000


def test_zero_increment_in_a_preamble_is_an_error():
    script = [
        ("*IDN?", "RIGOL TECHNOLOGIES,DS1104Z,X,1"),
        (":CHAN1:SCAL?", "1.0"), (":CHAN1:OFFS?", "0"), (":CHAN1:PROB?", "1"),
        (":WAV:SOUR CHAN1", None), (":WAV:MODE RAW", None), (":WAV:FORM BYTE", None),
        (":WAV:PRE?", "0,2,1000,1,1e-6,-5e-4,0,0,0,127"),
    ]
    with ScriptedInstrument(script) as inst, open_scope(inst.resource, timeout_s=1) as scope:
        with pytest.raises(InstrumentError, match="yincrement must be positive"):
            scope.fetch(1)
    assert inst.mismatch is None


def test_bad_arguments_are_instrument_errors(scope):
    with pytest.raises(InstrumentError, match="channel must be an integer"):
        scope.configure_channel(7, 1.0)
    with pytest.raises(InstrumentError, match="volts_per_div"):
        scope.configure_channel(1, 0)
    with pytest.raises(InstrumentError, match="slope"):
        scope.configure_trigger(1, 0.5, "up")
    with pytest.raises(InstrumentError, match="format"):
        scope.fetch(1, fmt="FLOAT")


@pytest.mark.parametrize("mangle", [lambda r: r.replace("::SOCKET", "::SOCK"),  # a typo in a real resource
                                    lambda r: r.split("::")[1],                  # a bare host
                                    lambda r: r.replace("TCPIP0::", "TCPIP0:")]) # a lost colon
def test_malformed_resource_is_one_error_naming_it_and_the_expected_forms(mangle):
    with ScopeSimulator("rigol", board_source()) as sim:
        resource = mangle(sim.resource)
        with pytest.raises(InstrumentError) as info:
            open_scope(resource, timeout_s=1)
        assert not sim.commands  # refused before any connection
    msg = str(info.value)
    assert f"malformed VISA resource {resource!r}" in msg and "read_termination" not in msg
    assert all(form in msg for form in ("TCPIP0::<host>::INSTR", "TCPIP0::<host>::5025::SOCKET", "USB0::"))


def test_binary_garbage_answer_to_idn_says_what_was_received_at_once():
    garbage = b"\x89PNG\r\n\x1a\n\x00\xff"
    with ScriptedInstrument([("*IDN?", garbage)]) as inst:
        start = time.monotonic()
        with pytest.raises(InstrumentError) as info:
            open_scope(inst.resource, timeout_s=5)
        elapsed = time.monotonic() - start
    msg = str(info.value)
    assert elapsed < 2.5 and "within" not in msg and "'*IDN?'" in msg
    assert "not ASCII text" in msg and repr(garbage[:6]) in msg  # up to the first line end: b'\x89PNG\r\n'


def test_connection_dropped_mid_transfer_names_the_closed_connection(dialect):
    with ScopeSimulator(dialect, board_source()) as sim, open_scope(sim.resource, timeout_s=0.4) as scope:
        setup_board_capture(scope, points=4000)
        scope.capture(1, timeout_s=3)
        sim.faults.drop_connection_after_bytes, sim.faults.drops = 1000, 2
        with pytest.raises(InstrumentError) as info:
            scope.fetch(1)
        resource = sim.resource
    msg = str(info.value)
    assert "failed twice" in msg and "truncated" not in msg
    closed = f"connection to {resource} (VISA backend @py) closed by the instrument during the answer to "
    assert msg.count(closed) == 2 and ("':WAV:DATA?'" in msg or "':WAVeform:DATA?'" in msg)
