"""bench.yaml schema: the shipped files validate; mistakes name the file, the key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.bench import load_bench, parse_bench
from hil.errors import HilError

ROOT = Path(__file__).parents[2]


def test_default_bench_is_the_virtual_bench() -> None:
    b = load_bench(ROOT / "bench.yaml")
    assert b.is_virtual and b.scope.is_virtual and b.boards[0].is_virtual
    assert (b.shunt.ohms, b.supply_volts, b.scope.shunt_channel, b.scope.marker_channel) == (0.05, 5.0, 1, 2)


def test_real_bench_example_has_the_same_schema() -> None:
    b = load_bench(ROOT / "examples" / "bench-esp32-rigol.yaml")
    assert not b.is_virtual
    assert b.boards[0].port == "/dev/ttyUSB0" and b.scope.resource.startswith("TCPIP")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"shunt": {"wiring": "lowside"}},
            "f.yaml: shunt.wiring: Input should be 'low_side', 'high_side' or 'amplifier'",
        ),
        ({"scope": {"chanel": 1}}, "f.yaml: scope.chanel: unknown key; allowed keys: resource, driver"),
        (
            {"boards": [{"name": "a", "prot": "x"}]},
            "f.yaml: boards.0.prot: unknown key; allowed keys: name, chip, kernels, port",
        ),
        ({"scope": {"shunt_channel": 2}}, "shunt_channel and marker_channel are both 2"),
        ({"shunt": {"gain": 50}}, "gain 50.0 needs wiring 'amplifier'"),
        ({"boards": [{"name": "a"}, {"name": "a"}]}, "board names must be unique, repeated: a"),
        ({"boards": []}, "f.yaml: boards: List should have at least 1 item"),
        ({"supply_volts": -5}, "f.yaml: supply_volts: Input should be greater than 0 (got -5)"),
        (
            {"scope": {"sim_dialect": "tek"}},
            "scope.sim_dialect: Input should be 'rigol' or 'keysight' (got 'tek')",
        ),
    ],
)
def test_mistakes_are_one_clear_line(data: dict, message: str) -> None:
    with pytest.raises(HilError) as err:
        parse_bench(data, "f.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(HilError, match="bench file not found"):
        load_bench(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("shunt: [1, 2\n")
    with pytest.raises(HilError, match="bad.yaml: not valid YAML"):
        load_bench(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(HilError, match="must be a YAML mapping"):
        load_bench(bad)


def test_amplifier_wiring_with_gain_is_accepted() -> None:
    b = parse_bench({"shunt": {"wiring": "amplifier", "gain": 50, "ohms": 0.01}})
    assert (b.shunt.wiring, b.shunt.gain) == ("amplifier", 50)


def test_a_qemu_board_names_the_tflm_build_it_links(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TFLM", str(tmp_path))
    board = {"name": "q", "chip": "stm32f405", "port": "qemu",
             "tflm": {"dir": "$TFLM", "lib": "$TFLM/gen/lib/libtensorflow-microlite.a"}}
    tflm = parse_bench({"boards": [board]}).boards[0].tflm
    assert tflm is not None and tflm.dir == str(tmp_path) and not tflm.compression
    assert tflm.lib == f"{tmp_path}/gen/lib/libtensorflow-microlite.a"
    with pytest.raises(HilError, match="tflm dir 'tflite-micro' must be an absolute path"):
        parse_bench({"boards": [{**board, "tflm": {"dir": "tflite-micro", "lib": "/x.a"}}]})
    with pytest.raises(HilError, match="tflm: names the TFLM library of the emulated STM32F405 port"):
        parse_bench({"boards": [{"name": "e", "port": "/dev/ttyUSB0", "tflm": {"dir": "/t", "lib": "/t/l.a"}}]})
