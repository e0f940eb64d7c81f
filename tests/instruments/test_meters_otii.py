"""Otii: the JSON requests on the wire, `otii-tcp-client` against the simulator, download faults, energy."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from otii_tcp_client import otii_client

from hil.power import analyze
from instruments.errors import InstrumentError
from instruments.meters import MeterStreamError, open_meter
from instruments.meters.otii import marker_fractions, parse_resource
from instruments.sim.meters import OtiiSimulator
from tests.instruments.meters_conftest import SUPPLY, board, constant, true_energy_mj, true_idle_mw

DEV = "Arc5E0000000000000000000000000001"


@pytest.fixture
def sim():
    with OtiiSimulator(board(), noise_a=0.2e-3, seed=5) as s:
        yield s


def _requests(sim) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "trans_id"} for r in sim.requests]


def test_driver_setup_sends_the_documented_requests(sim):
    with open_meter("otii", f"127.0.0.1:{sim.port}", supply_volts=3.3, sample_rate=50_000, marker_input=1):
        pass
    reqs = _requests(sim)
    dev = {"device_id": DEV}
    expected = [
        {"type": "request", "cmd": "arc_set_main_voltage", "data": {**dev, "value": 3.3}},
        {"type": "request", "cmd": "arc_set_max_current", "data": {**dev, "value": 0.5}},
        {"type": "request", "cmd": "arc_set_range", "data": {**dev, "range": "high"}},
        {"type": "request", "cmd": "arc_enable_channel", "data": {**dev, "channel": "mc", "enable": True}},
        {"type": "request", "cmd": "arc_set_channel_samplerate", "data": {**dev, "channel": "mc", "value": 50000}},
        {"type": "request", "cmd": "arc_enable_exp_port", "data": {**dev, "enable": True}},
        {"type": "request", "cmd": "arc_set_exp_voltage", "data": {**dev, "value": 3.3}},
        {"type": "request", "cmd": "arc_enable_channel", "data": {**dev, "channel": "i1", "enable": True}},
    ]
    start = reqs.index(expected[0])
    assert reqs[start:start + len(expected)] == expected
    assert {"type": "request", "cmd": "arc_set_main", "data": {**dev, "enable": True}} in reqs
    # on close: main output off, then the licence AUTO licensing reserved goes back (no logout: never logged in)
    assert reqs[-2:] == [{"type": "request", "cmd": "arc_set_main", "data": {**dev, "enable": False}},
                         {"type": "request", "cmd": "otii_return_license", "data": {"license_id": 1001}}]
    assert reqs[-1]["cmd"] == "otii_return_license" and sim.licenses[0]["reserved_to"] == ""


def test_each_request_is_one_json_line_with_a_transaction_id(sim):
    with open_meter("otii", f"127.0.0.1:{sim.port}"):
        pass
    for line in sim.raw_requests:
        assert b"\r" not in line and b"\n" not in line  # framing is CRLF, never inside a message
        msg = json.loads(line)
        assert msg["type"] == "request" and re.fullmatch(r"\d+", msg["trans_id"])
    ids = [int(json.loads(x)["trans_id"]) for x in sim.raw_requests]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_otii_tcp_client_talks_to_the_simulator_unchanged(sim):
    sim.source = constant(0.0625, marker_v=3.3)
    client = otii_client.OtiiClient()
    otii = client.connect(host="127.0.0.1", port=sim.port, try_for_seconds=2)
    try:
        assert sim.licenses[0]["reserved_to"] != ""  # AUTO licensing reserved the Automation licence
        (arc,) = otii.get_devices(timeout=1)
        assert arc.type == "Arc" and arc.id == DEV
        project = otii.create_project()
        arc.enable_channel("mc", True)
        arc.set_channel_samplerate("mc", 4000)
        arc.enable_exp_port(True)
        arc.enable_channel("i1", True)
        arc.set_main(True)
        project.start_recording()
        time.sleep(0.2)
        project.stop_recording()
        rec = project.get_last_recording()
        n = rec.get_channel_data_count(arc.id, "mc")
        data = rec.get_channel_data(arc.id, "mc", 0, n)
        info = rec.get_channel_info(arc.id, "mc")
        gpi = rec.get_channel_data(arc.id, "i1", 0, rec.get_channel_data_count(arc.id, "i1"))
    finally:
        client.disconnect()
    assert 0.19 * 4000 <= n <= 0.4 * 4000 and info["sample_rate"] == 4000
    assert data["interval"] == pytest.approx(1 / 4000)
    assert np.median(data["values"]) == pytest.approx(0.0625, abs=1e-3)
    assert gpi["data_type"] == "digital" and gpi["values"] == [{"timestamp": 0.0, "value": True}]
    assert sim.licenses[0]["reserved_to"] == ""


def test_unknown_command_is_an_otii_error(sim):
    with open_meter("otii", f"127.0.0.1:{sim.port}") as m:
        with pytest.raises(InstrumentError, match="Invalid command"):
            m._call("frobnicating", lambda: m.arc.set_0_to_15_voltage(3.0))


@pytest.mark.parametrize("fault, message", [
    ("short_data", "truncated"),
    ("garbage_line", "malformed answer"),
    ("drop_on_data", "closed the connection"),
    ("nan_at", "not a number"),
])
def test_broken_download_raises_one_clear_error(sim, fault, message):
    with open_meter("otii", f"127.0.0.1:{sim.port}", sample_rate=4000) as m:
        setattr(sim.faults, fault, 100 if fault == "nan_at" else True)
        m.arm()
        with pytest.raises(MeterStreamError, match=message):
            m.capture(0.1)
        sim.faults.drop_on_data = False


def test_recording_shorter_than_asked_is_truncated(sim):
    with open_meter("otii", f"127.0.0.1:{sim.port}", sample_rate=4000) as m:
        m.arm()
        m._t_arm -= 1.0  # pretend a second passed: the recording holds far fewer samples than 1.1 s needs
        with pytest.raises(MeterStreamError, match="truncated"):
            m.capture(1.1)


def test_no_server_and_bad_settings():
    with pytest.raises(InstrumentError, match="cannot reach the Otii server"):
        open_meter("otii", "127.0.0.1:1", connect_timeout_s=0)
    with pytest.raises(InstrumentError, match="sample_rate"):
        open_meter("otii", "127.0.0.1:1", sample_rate=3000)
    assert parse_resource("otii://10.0.0.5:1906") == ("10.0.0.5", 1906)
    assert parse_resource("lab-pc") == ("lab-pc", 1905)


def test_marker_fractions_place_edges_inside_samples():
    ev = [{"timestamp": 0.0, "value": False}, {"timestamp": 0.00125, "value": True},
          {"timestamp": 0.0031, "value": False}]
    f = marker_fractions(ev, 0.0, 0.001, 5)  # samples centred on 0, 1, 2, 3, 4 ms
    np.testing.assert_allclose(f, [0.0, 0.25, 1.0, 0.6, 0.0])
    with pytest.raises(MeterStreamError, match="out of order"):
        marker_fractions(ev[::-1], 0.0, 0.001, 5)


def test_energy_per_inference_matches_the_ground_truth(sim):
    with open_meter("otii", f"127.0.0.1:{sim.port}", sample_rate=50_000, supply_volts=SUPPLY) as m:
        current, marker = m.capture(0.25)
    assert current.dt == pytest.approx(2e-5) and len(current) == 12_500
    r = analyze(current=current, marker=marker, supply_volts=SUPPLY)
    assert r.valid, r.reason
    assert r.n_inferences >= 20
    assert r.energy_per_inference_mj.mean == pytest.approx(true_energy_mj(), rel=0.01)
    assert r.idle_power_mw == pytest.approx(true_idle_mw(), rel=0.01)
    assert r.provenance["current"]["settings"]["serial_number"] == DEV


def test_arc_at_4_ksps_is_too_slow_for_short_inferences(sim):
    """A 4 ms inference at 4 kS/s has 16 samples: the analysis says so instead of giving a figure."""
    with open_meter("otii", f"127.0.0.1:{sim.port}", sample_rate=4000) as m:
        current, marker = m.capture(0.25)
    r = analyze(current=current, marker=marker, supply_volts=SUPPLY)
    assert not r.valid and "samples in the shortest inference window" in r.reason
