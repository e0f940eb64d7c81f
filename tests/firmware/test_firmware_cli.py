"""`hil firmware ...` through hil.cli.main: outputs, files written and one-line errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil import cli, firmware

ROOT = Path(__file__).resolve().parents[2]
SINE = ROOT / ".venv/lib/python3.11/site-packages/tflite_micro/python/tflite_micro/sine_float.tflite"
DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _only_firmware_commands(monkeypatch):
    """Load only `hil firmware` (other subcommand modules are written in parallel), then the real main()."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("firmware",))


def main(argv: list[str]) -> int:
    return cli.main(argv)


def test_pack_model_writes_a_valid_image(tmp_path, capsys):
    out = tmp_path / "sine.hilm"
    assert main(["firmware", "pack-model", str(SINE), "-o", str(out), "--arena-bytes", "2000"]) == 0
    head = firmware.parse_image(out.read_bytes())
    assert head.arena_hint == firmware.arena_hint(2000)
    assert head.crc32_hex in capsys.readouterr().out


def test_missing_variant_is_one_line_exit_2(tmp_path, capsys):
    assert main(["firmware", "pack-model", "nope", "--models-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hil: error: variant 'nope'") and err.count("\n") == 1


def test_build_without_esp_idf_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("IDF_PATH", raising=False)
    assert main(["firmware", "build", "--build-root", str(tmp_path)]) == 2
    assert "ESP-IDF not found: IDF_PATH is not set; install ESP-IDF >= 5.1" in capsys.readouterr().err


def test_size_from_json2_file(capsys):
    assert main(["firmware", "size", "--json2", str(DATA / "esp-idf-size-json2-esp32.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["dram", "used", "24585", "free", "156151"]


def test_flash_model_missing_port(tmp_path, capsys):
    image = tmp_path / "m.hilm"
    image.write_bytes(firmware.pack_image(b"\1" * 100))
    assert (
        main(
            ["firmware", "flash-model", str(image), "--port", "/dev/ttyNOPE1", "--build-root", str(tmp_path)]
        )
        == 2
    )
    assert "serial port /dev/ttyNOPE1 not found (ports seen:" in capsys.readouterr().err
