"""Latency/power model: calibration reproduces the reference ESP32 figures; layers come from the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from hil.errors import HilError
from hil.sim.costmodel import (
    CALIBRATION_FILE,
    CostModel,
    Layer,
    layers_from_model,
    load_calibration,
    reference_layers,
)
from hil.sim.timeline import ActivityTimeline, ProbeWiring


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_reference_cnn_reproduces_the_reference_measurements(dtype: str) -> None:
    cal = load_calibration()
    ref = yaml.safe_load(CALIBRATION_FILE.read_text())["reference"]
    cost = CostModel.build(reference_layers(dtype), cal)
    assert cost.latency_s * 1e3 == pytest.approx(ref["latency_ms"][dtype], rel=0.002)
    # back-to-back inference: average power = supply x active current
    assert cal.supply_volts * cost.active_current_a * 1e3 == pytest.approx(ref["power_mw"][dtype], rel=0.002)


def test_reference_cnn_has_the_documented_size() -> None:
    layers = reference_layers("float32")
    assert sum(layer.macs for layer in layers) == 10_290_432
    assert [layer.op for layer in layers].count("CONV_2D") == 3


def test_cost_grows_with_macs_and_int8_is_cheaper() -> None:
    small = CostModel.build([Layer("CONV_2D", "float32", macs=1_000_000, elements=1000)])
    big = CostModel.build([Layer("CONV_2D", "float32", macs=2_000_000, elements=1000)])
    q = CostModel.build([Layer("CONV_2D", "int8", macs=1_000_000, elements=1000)])
    assert big.latency_s > 1.9 * small.latency_s - small.invoke_overhead_s
    assert q.latency_s < small.latency_s
    assert q.active_current_a < small.active_current_a
    at_160 = CostModel.build([Layer("CONV_2D", "float32", macs=1_000_000)], cpu_mhz=160)
    base = CostModel.build([Layer("CONV_2D", "float32", macs=1_000_000)])
    assert at_160.latency_s == pytest.approx(base.latency_s * 240 / 160)


def test_layers_are_read_from_the_flatbuffer(sine_model: bytes) -> None:
    from models.tflite_file import read_model

    layers = layers_from_model(read_model(sine_model))
    # sine model: FC 1->16, FC 16->16, FC 16->1
    assert [(layer.op, layer.dtype, layer.macs) for layer in layers] == [
        ("FULLY_CONNECTED", "float32", 16),
        ("FULLY_CONNECTED", "float32", 256),
        ("FULLY_CONNECTED", "float32", 16),
    ]


def test_missing_calibration_key_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "calibration.yaml"
    doc = yaml.safe_load(CALIBRATION_FILE.read_text())
    del doc["latency"]["mac_cycles"]
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(HilError, match=r"calibration.yaml: missing or malformed key 'mac_cycles'"):
        load_calibration(bad)


def test_timeline_gives_shunt_volts_and_marker_on_the_wired_channels() -> None:
    tl = ActivityTimeline(
        ProbeWiring(shunt_channel=3, marker_channel=1, shunt_ohms=0.1, gain=20), idle_current_a=0.05
    )
    tl.active(10.0, 10.5, 0.3, marker=False)  # warm-up: active, marker low
    tl.active(10.5, 11.0, 0.3, marker=True)
    t = np.array([9.9, 10.2, 10.6, 10.99, 11.0, 12.0])
    np.testing.assert_allclose(tl.volts(3, t), np.array([0.05, 0.3, 0.3, 0.3, 0.05, 0.05]) * 0.1 * 20)
    np.testing.assert_allclose(tl.volts(1, t), [0, 0, 3.3, 3.3, 0, 0])
    np.testing.assert_array_equal(tl.volts(2, t), np.zeros(6))
    tl.cut(10.7)  # a reset at 10.7 s ends the inference there
    np.testing.assert_allclose(tl.volts(1, np.array([10.6, 10.8])), [3.3, 0.0])
