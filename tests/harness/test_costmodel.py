"""The cost model: layers read from the flatbuffer, pricing by work, the calibration file's consistency.

The published-figure checks on person_detect are in test_sim_calibration.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from hil.errors import HilError
from hil.sim.calibrate import derive_shape
from hil.sim.costmodel import (
    CALIBRATION_FILE,
    CostModel,
    Layer,
    layers_from_model,
    load_calibration,
    study_cnn_layers,
    study_cnn_parameters,
)
from hil.sim.timeline import ActivityTimeline, ProbeWiring

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (../shared/data) is absent")


def test_shapes_are_what_the_esp_nn_ticks_give() -> None:
    cal = load_calibration()
    kern = cal.latency["esp_nn_kernels"]
    for column, name in (("ansi_c", "esp-nn-ansi-c"), ("optimized", "esp-nn-esp32s3")):
        d, shape = derive_shape(kern, column), cal.shapes[name]
        got = {**shape.mac, "output": shape.output, "max": shape.pool["max"], "avg": shape.pool["avg"],
               "binary": shape.binary, "unary": shape.unary}  # fmt: skip
        for key, value in d.items():
            assert got[key] == pytest.approx(value, rel=1e-3), (name, key)
        # and the shape reproduces the 1x1 rows it was solved from, as ticks
        for row in ("conv_1x1_64", "conv_1x1_16"):
            r = kern[row]
            ticks = shape.cycles(Layer("CONV_2D", "int8", macs=r["macs"], elements=r["outputs"]))
            assert ticks == pytest.approx(r[column], rel=1e-3)


def test_esp32s3_esp_nn_needs_no_fit() -> None:
    """esp-nn's S3 kernel ticks alone give person_detect's published time: the fitted scale is ~1."""
    s3 = load_calibration().profile("esp32s3", "esp-nn").by_dtype["int8"]
    assert s3.shape.name == "esp-nn-esp32s3" and s3.scale == pytest.approx(1.0, abs=0.01)


def test_cost_grows_with_macs_clock_and_kernel_library() -> None:
    cal = load_calibration()
    nn, ref = cal.profile("esp32", "esp-nn"), cal.profile("esp32", "reference")
    small = CostModel.build([Layer("CONV_2D", "int8", macs=1_000_000, elements=1000)], nn)
    big = CostModel.build([Layer("CONV_2D", "int8", macs=2_000_000, elements=1000)], nn)
    assert big.latency_s == pytest.approx(2 * small.latency_s, rel=0.05)
    slow = CostModel.build([Layer("CONV_2D", "int8", macs=1_000_000, elements=1000)], ref)
    assert slow.latency_s / small.latency_s == pytest.approx(ref.by_dtype["int8"].scale / nn.by_dtype["int8"].scale,
                                                             rel=0.01)  # fmt: skip
    at_160 = CostModel.build([Layer("CONV_2D", "int8", macs=1_000_000)], nn, cpu_mhz=160)
    base = CostModel.build([Layer("CONV_2D", "int8", macs=1_000_000)], nn)
    assert at_160.latency_s == pytest.approx(base.latency_s * 240 / 160)
    # float32 never uses ESP-NN (it has no float kernels): the library does not change a float model
    f = [Layer("CONV_2D", "float32", macs=1_000_000, elements=1000)]
    assert CostModel.build(f, nn).latency_s == CostModel.build(f, ref).latency_s
    c3 = CostModel.build(f, cal.profile("esp32c3", "esp-nn"))
    assert c3.latency_s > 10 * CostModel.build(f, nn).latency_s  # no FPU, and 160 MHz


def test_unknown_chip_is_refused_by_name() -> None:
    with pytest.raises(HilError, match="no cost model for chip 'esp32c6'"):
        load_calibration().profile("esp32c6")


def test_layers_are_read_from_the_flatbuffer(sine_model: bytes) -> None:
    from models.tflite_file import read_model

    layers = layers_from_model(read_model(sine_model))
    # sine model: FC 1->16, FC 16->16, FC 16->1
    assert [(layer.op, layer.dtype, layer.macs) for layer in layers] == [
        ("FULLY_CONNECTED", "float32", 16),
        ("FULLY_CONNECTED", "float32", 256),
        ("FULLY_CONNECTED", "float32", 16),
    ]


@needs_shared
def test_lstm_and_svdf_are_priced_by_their_macs() -> None:
    from models.tflite_file import read_model

    lstm = layers_from_model(read_model((SHARED / "trained_lstm_int8.tflite").read_bytes()))
    assert lstm[0].op == "UNIDIRECTIONAL_SEQUENCE_LSTM"
    assert lstm[0].macs == 28 * 4 * 20 * (28 + 20)  # 28 steps x 4 gates x 20 units x (28 inputs + 20 recurrent)
    svdf = [x for x in layers_from_model(read_model((SHARED / "keyword_scrambled_8bit.tflite").read_bytes()))
            if x.op == "SVDF"]  # fmt: skip
    assert svdf[0].macs == 64 * 96 + 64 * 8  # feature weights [64, 96], time weights [64, 8]
    nn = load_calibration().profile("esp32", "esp-nn")
    cost = CostModel.build(lstm, nn)
    # at least the LSTM's MACs at the dense kernel's cycles/MAC: ~107 k MACs cannot take 22 us
    assert cost.op_seconds[0] * 240e6 >= lstm[0].macs * nn.by_dtype["int8"].shape.mac["dense"] * nn.by_dtype[
        "int8"].scale  # fmt: skip
    assert cost.latency_s > 5e-3


def test_study_sized_cnn_has_the_described_size() -> None:
    assert 14_000 <= study_cnn_parameters() <= 15_500  # "about 15 k parameters", 59.5 KB as float32
    assert sum(x.macs for x in study_cnn_layers("int8")) == 32 * 32 * 8 * 9 + 16 * 16 * 16 * 72 + 8 * 8 * 32 * 144 + (
        512 * 16 + 16 * 16 + 16 * 10)  # fmt: skip


def test_power_reproduces_the_study_and_chips_differ() -> None:
    cal = load_calibration()
    for dtype, mw in (("float32", 1946.0), ("int8", 1384.0)):
        cost = CostModel.build(study_cnn_layers(dtype), cal.profile("esp32"))
        assert cal.supply_volts * cost.active_current_a * 1e3 == pytest.approx(mw, rel=0.002)
    assert cal.profile("esp32c3").active_current_a["int8"] < cal.profile("esp32").active_current_a["int8"]


def test_missing_calibration_key_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "calibration.yaml"
    doc = yaml.safe_load(CALIBRATION_FILE.read_text())
    del doc["shapes"]["esp-nn-ansi-c"]["mac"]
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(HilError, match=r"calibration.yaml: missing or malformed key 'mac'"):
        load_calibration(bad)


def test_every_constant_names_its_source_or_says_it_is_an_assumption() -> None:
    text = CALIBRATION_FILE.read_text()
    chips = text[text.index("\nchips:"):text.index("\npower:")]
    lines = [line for line in chips.splitlines() if "scale:" in line or "cpu_mhz:" in line]
    assert len(lines) == 3 * 4  # three chips: clock, two int8 scales, one float scale
    for line in lines:
        assert any(k in line for k in ("FITTED", "PUBLISHED", "ASSUMPTION")), line


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


def test_timeline_clock_runs_only_when_the_board_is_idle() -> None:
    tl = ActivityTimeline()
    assert tl.now() == 0.0 and tl.run_until(1.5) == 1.5  # idle: the scope may let time pass
    with tl.busy():
        tl.advance(0.25)
        assert tl.run_until(10.0) == 1.75  # busy: the board's time is its own
    assert tl.run_until(1.0) == 1.75  # never backwards
