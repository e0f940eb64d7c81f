"""The cost model: layers read from the flatbuffer, pricing by work, the calibration file's consistency.

The published-figure checks on person_detect are in test_sim_calibration.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from hil.errors import HilError
from hil.sim.calibrate import derive_shapes, derived_scales, kernel_rows, row_layer
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


def test_calibration_file_holds_the_derived_shapes() -> None:
    """Every shape in calibration.yaml is what hil.sim.calibrate derives from the esp-nn rows and assumptions."""
    cal = load_calibration()
    derived = derive_shapes(cal.latency["esp_nn_kernels"]["rows"], cal.latency["shape_assumptions"])
    doc = yaml.safe_load(CALIBRATION_FILE.read_text())
    assert set(doc["shapes"]) == set(derived)
    for name, d in derived.items():
        for key, value in d.items():
            got = doc["shapes"][name][key]
            if isinstance(value, dict):
                for k, v in value.items():
                    assert got[k] == pytest.approx(v, rel=1e-3, abs=1e-6), (name, key, k)
            elif isinstance(value, float):
                assert got == pytest.approx(value, rel=1e-3), (name, key)
            else:
                assert got == value, (name, key)


@needs_shared
def test_calibration_file_holds_the_derived_chip_scales() -> None:
    """One scale per chip, common to its kernel libraries and data types; S3 1.0, others from one figure each."""
    cal = load_calibration()
    scales = derived_scales(cal)
    for chip, scale in scales.items():
        for kernels in ("esp-nn", "reference"):
            p = cal.profile(chip, kernels)
            assert p.by_dtype["int8"].scale == pytest.approx(scale, rel=1e-3), (chip, kernels)
            assert p.by_dtype["float32"].scale == pytest.approx(scale, rel=1e-3), chip


def test_at_most_one_whole_model_figure_per_chip_is_fitted_and_none_on_the_s3() -> None:
    fits = [f["chip"] for f in load_calibration().published if f.get("fit")]
    assert len(fits) == len(set(fits)) and "esp32s3" not in fits
    assert load_calibration().profile("esp32s3").by_dtype["int8"].scale == 1.0


def test_each_esp_nn_kernel_row_is_reproduced_within_15_percent() -> None:
    """The per-operator model against esp-nn's own kernel table (each row priced from its shape facts)."""
    rows = [r for r in kernel_rows(load_calibration()) if r.status == "reproduced"]
    assert len(rows) == 2 * 11  # 11 kernels x (ANSI C, optimized)
    bad = [(r.figure, r.published, round(r.model)) for r in rows if abs(r.error_pct) > 15]
    assert not bad


def test_later_ansi_c_rows_are_predicted_within_15_percent_but_the_fully_connected() -> None:
    """esp-nn v1.2.3's ANSI C rows (same loops, re-measured; not used for the fit) as a held-out kernel check."""
    rows = [r for r in kernel_rows(load_calibration()) if r.status == "cross-check"]
    assert len(rows) == 11
    bad = {r.figure.split()[2] for r in rows if abs(r.error_pct) > 15}
    assert bad == {"fully_connected"}  # 15,853 (13d77d1) vs 8,443 (v1.2.3) ticks for the same row


def test_few_input_channels_defeat_the_s3_vector_units() -> None:
    """3x3 conv over 3 channels: ~2x over ANSI C (scalar C path); 1x1 64->64: ~11x (SIMD path)."""
    cal = load_calibration()
    kern = cal.latency["esp_nn_kernels"]["rows"]
    ansi, s3 = cal.shapes["esp-nn-ansi-c"], cal.shapes["esp-nn-esp32s3"]
    one, three = row_layer(kern["conv_1x1_64"]), row_layer(kern["conv_3x3_in3"])
    assert s3.vector_path(one) and not s3.vector_path(three)
    assert ansi.cycles(one) / s3.cycles(one) == pytest.approx(10.9, rel=0.05)
    assert ansi.cycles(three) / s3.cycles(three) == pytest.approx(2.07, rel=0.05)
    # per MAC, the scalar path costs ~9x the SIMD path (published: 9.2 vs 1.05 ticks per MAC)
    assert (s3.cycles(three) / three.macs) / (s3.cycles(one) / one.macs) == pytest.approx(8.8, rel=0.05)
    # a channel count that is not a multiple of 8 leaves lanes idle on the mult-4 1x1 path
    base = {"op": "CONV_2D", "dtype": "int8", "out_ch": 16, "pixels": 64, "taps": 64}
    c8, c12 = Layer(in_ch=8, macs=64 * 16 * 8, **base), Layer(in_ch=12, macs=64 * 16 * 12, **base)
    assert s3.vector_path(c12)
    mac8 = (s3.cycles(c8) - 64 * 16 * s3.conv["output"]) / c8.macs
    mac12 = (s3.cycles(c12) - 64 * 16 * s3.conv["output"]) / c12.macs
    assert mac12 == pytest.approx(mac8 * 16 / 12)


def test_cost_grows_with_macs_clock_and_kernel_library() -> None:
    cal = load_calibration()
    nn, ref = cal.profile("esp32", "esp-nn"), cal.profile("esp32", "reference")
    small = CostModel.build([Layer("CONV_2D", "int8", macs=1_000_000, elements=1000)], nn)
    big = CostModel.build([Layer("CONV_2D", "int8", macs=2_000_000, elements=1000)], nn)
    assert big.latency_s == pytest.approx(2 * small.latency_s, rel=0.05)
    slow = CostModel.build([Layer("CONV_2D", "int8", macs=1_000_000, elements=1000)], ref)
    assert slow.latency_s > 5 * small.latency_s  # TFLM reference vs esp-nn's generic C
    at_160 = CostModel.build([Layer("CONV_2D", "int8", macs=1_000_000)], nn, cpu_mhz=160)
    base = CostModel.build([Layer("CONV_2D", "int8", macs=1_000_000)], nn)
    assert at_160.latency_s == pytest.approx(base.latency_s * 240 / 160)
    # float32 never uses ESP-NN (it has no float kernels): the library does not change a float model
    f = [Layer("CONV_2D", "float32", macs=1_000_000, elements=1000)]
    assert CostModel.build(f, nn).latency_s == CostModel.build(f, ref).latency_s
    c3 = CostModel.build(f, cal.profile("esp32c3", "esp-nn"))
    assert c3.latency_s > 3 * CostModel.build(f, nn).latency_s  # soft-float, and 160 MHz


def test_per_layer_times_add_up_to_the_latency() -> None:
    cost = CostModel.build(study_cnn_layers("int8"), load_calibration().profile("esp32s3"))
    assert len(cost.op_seconds) == len(cost.layers)
    assert cost.invoke_overhead_s + sum(cost.op_seconds) == pytest.approx(cost.latency_s, rel=1e-12)


def test_unknown_chip_is_refused_by_name() -> None:
    with pytest.raises(HilError, match="no cost model for chip 'esp32c6'"):
        load_calibration().profile("esp32c6")


def test_layers_are_read_from_the_flatbuffer(sine_model: bytes) -> None:
    from models.tflite_file import read_model

    layers = layers_from_model(read_model(sine_model))
    # sine model: FC 1->16, FC 16->16, FC 16->1
    assert [(layer.op, layer.dtype, layer.macs, layer.in_ch, layer.out_ch) for layer in layers] == [
        ("FULLY_CONNECTED", "float32", 16, 1, 16),
        ("FULLY_CONNECTED", "float32", 256, 16, 16),
        ("FULLY_CONNECTED", "float32", 16, 16, 1),
    ]


@needs_shared
def test_person_detect_layers_carry_their_shape_facts() -> None:
    from models.tflite_file import read_model

    layers = layers_from_model(read_model((SHARED / "person_detect.tflite").read_bytes()))
    first, pw = layers[0], layers[2]
    assert (first.op, first.in_ch, first.multiplier, first.kh, first.stride, first.pixels) == (
        "DEPTHWISE_CONV_2D", 1, 8, 3, 2, 48 * 48)
    # SAME padding, stride 2 on 96: pad 0 before, 1 after; the last output row/column sees 2 of 3 taps
    assert first.taps == (47 * 3 + 2) ** 2
    assert (pw.op, pw.in_ch, pw.out_ch, pw.kh, pw.pixels, pw.taps) == ("CONV_2D", 8, 16, 1, 48 * 48, 48 * 48)
    assert sum(x.macs for x in layers) == pytest.approx(7.16e6, rel=0.01)


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
    assert cost.op_seconds[0] * 240e6 >= lstm[0].macs * nn.by_dtype["int8"].shape.sequence_mac * nn.by_dtype[
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
    del doc["shapes"]["esp-nn-ansi-c"]["conv"]
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(HilError, match=r"calibration.yaml: missing or malformed key 'conv'"):
        load_calibration(bad)


def test_every_constant_names_its_source_or_says_it_is_an_assumption() -> None:
    text = CALIBRATION_FILE.read_text()
    chips = text[text.index("\nchips:"):text.index("\npower:")]
    lines = [line for line in chips.splitlines() if "scale:" in line or "cpu_mhz:" in line]
    assert len(lines) == 3 * 4  # three chips: clock, two int8 scales, one float scale
    for line in lines:
        assert any(k in line for k in ("FITTED", "PUBLISHED", "DERIVED", "ASSUMPTION")), line
    shapes = text[text.index("\nshapes:"):text.index("\nchips:")]
    notes = [line for line in shapes.splitlines() if line.startswith("  #")]
    assert len(notes) >= len(yaml.safe_load(text)["shapes"])
    assert all(any(k in n for k in ("DERIVED", "ASSUMPTION")) for n in notes if "DERIVED" in n or "ASSUMPTION" in n)
    assumptions = text[text.index("shape_assumptions:"):text.index("\nshapes:")]
    keys = [line.split(":")[0].strip() for line in assumptions.splitlines()[1:] if line.startswith("    ") and
            not line.strip().startswith("#")]  # fmt: skip
    for key in keys:  # each assumption has its source or ASSUMPTION on its line or the comment above it
        i = assumptions.index(f"    {key}:")
        context = assumptions[max(0, assumptions.rfind("\n    #", 0, i) - 400):i + 200]
        assert "ASSUMPTION" in context or "PUBLISHED" in context, key


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
