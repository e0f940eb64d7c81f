"""The firmware core's operator check (firmware/main/core/model_ops.cpp), on the host build: operators are
read from the flatbuffer, custom operators by their custom code (TFLM_DECODE, the LUT variants' decoder),
and checked against ops.txt."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hil import firmware

from .tflite_builder import CUSTOM, model_with_ops, schema

ROOT = Path(__file__).resolve().parents[2]
NAMES_INC = ROOT / "firmware" / "main" / "core" / "tflite_builtin_names.inc"
SINE = ROOT / ".venv/lib/python3.11/site-packages/tflite_micro/python/tflite_micro/sine_float.tflite"


def _boot(core_process, tmp_path: Path, model: bytes):
    part = tmp_path / "model-partition.bin"
    part.write_bytes(firmware.pack_image(model, firmware.arena_hint(4096)) + b"\xff" * 1024)
    return core_process("--image", str(part), "--check-ops", "1")


def test_builtin_name_table_is_the_schema():
    table = re.findall(r'^"([A-Z0-9_]*)",$', NAMES_INC.read_text(), re.M)
    names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
    assert table == [names[i] for i in range(len(table))]
    assert len(table) == max(names) + 1, "the schema has operators the firmware's table lacks"


def test_a_lut_model_with_tflm_decode_is_accepted(core_process, tmp_path):
    from models.tflite_file import read_model

    model = model_with_ops(["custom:TFLM_DECODE", "CONV_2D", "custom:TFLM_DECODE", "FULLY_CONNECTED", "SOFTMAX"])
    # The project's own reader (models.tflite_file) names the operators the same way.
    assert list(read_model(model).ops) == ["TFLM_DECODE", "CONV_2D", "TFLM_DECODE", "FULLY_CONNECTED", "SOFTMAX"]
    firmware.check_ops(read_model(model).ops, "lut")  # hil's pre-flash check agrees
    hello = _boot(core_process, tmp_path, model).request("hello")
    assert hello["ok"], hello
    assert hello["ops"] == ["TFLM_DECODE", "CONV_2D", "TFLM_DECODE", "FULLY_CONNECTED", "SOFTMAX"]


@pytest.mark.parametrize(
    ("ops", "missing"),
    [
        (["CONV_2D", "custom:MY_OP"], "MY_OP"),
        (["LSTM", "CONV_2D"], "LSTM"),
        ([(CUSTOM, CUSTOM, None)], "CUSTOM"),  # a custom operator without its custom code
        ([(150, 127, None)], None),  # a builtin code above 127: builtin_code, not the saturated deprecated one
    ],
    ids=["custom", "builtin", "custom-without-code", "large-builtin-code"],
)
def test_operators_missing_from_ops_txt_are_refused_by_name(core_process, tmp_path, ops, missing):
    hello = _boot(core_process, tmp_path, model_with_ops(ops)).request("hello")
    assert not hello["ok"] and hello["code"] == "E_MODEL", hello
    if missing is None:
        names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
        missing = names[150]
    assert hello["error"] == f"unsupported operator {missing} (not in the firmware's ops.txt)"
    assert missing in hello["ops"]


def test_deprecated_builtin_code_only(core_process, tmp_path):
    """Old converters wrote only deprecated_builtin_code (builtin_code 0 = ADD by default)."""
    hello = _boot(core_process, tmp_path, model_with_ops([(0, 3, None), (0, 9, None)])).request("hello")
    assert hello["ok"], hello
    assert hello["ops"] == ["CONV_2D", "FULLY_CONNECTED"]


def test_a_real_tflite_goes_through_the_check(core_process, tmp_path):
    from models.tflite_file import read_model

    model = SINE.read_bytes()
    hello = _boot(core_process, tmp_path, model).request("hello")
    assert hello["ok"], hello
    assert hello["ops"] == list(read_model(model).ops)


def test_a_flatbuffer_with_broken_offsets_is_refused(core_process, tmp_path):
    model = bytearray(model_with_ops(["CONV_2D"]))
    model[0:4] = (len(model) + 64).to_bytes(4, "little")  # the root table lies past the end
    hello = _boot(core_process, tmp_path, bytes(model)).request("hello")
    assert not hello["ok"] and hello["code"] == "E_MODEL", hello
    assert hello["error"].startswith("model image holds no valid TFLite flatbuffer")
