"""hil.firmware: image packing, operator checks, partitions, build caching, flashing plans, size reports."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from hil import firmware
from hil.errors import HilError

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
SINE = ROOT / ".venv/lib/python3.11/site-packages/tflite_micro/python/tflite_micro/sine_float.tflite"


# -- image ------------------------------------------------------------------------------------------
def test_image_round_trip_and_layout():
    fb = SINE.read_bytes()
    image = firmware.pack_image(fb, 4096)
    assert image[:4] == b"HILM" and len(image) == 32 + len(fb)
    assert image[32:] == fb
    assert struct.unpack_from("<I", image, 12)[0] == zlib.crc32(fb)
    head = firmware.parse_image(image)
    assert (head.length, head.arena_hint, head.crc32_hex) == (len(fb), 4096, f"{zlib.crc32(fb):08x}")


@pytest.mark.parametrize(
    ("offset", "message"),
    [(0, "bad magic"), (9, "header CRC"), (32 + 5, "model image CRC mismatch")],
)
def test_image_corruption_is_named(offset, message):
    image = bytearray(firmware.pack_image(b"\x01" * 200, 0))
    image[offset] ^= 0x10
    with pytest.raises(HilError, match=message):
        firmware.parse_image(bytes(image))


def test_image_truncated_and_empty():
    image = firmware.pack_image(b"\x02" * 100)
    with pytest.raises(HilError, match="header says 100 bytes"):
        firmware.parse_image(image[:-1])
    with pytest.raises(HilError, match="empty"):
        firmware.pack_image(b"")


def test_arena_hint_adds_margin_and_aligns():
    assert firmware.arena_hint(0) == 0
    for measured in (1, 2000, 30512, 123457):
        hint = firmware.arena_hint(measured)
        assert hint % 16 == 0 and hint >= measured * 1.2 + 2048


# -- operators ----------------------------------------------------------------------------------------
def test_ops_file_lists_resolver_methods():
    methods = firmware.op_resolver_methods()
    # the factory's reference CNN (conv/pool/dense/softmax, int8 quantize/dequantize) must all be there
    for op in ("CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE", "QUANTIZE", "DEQUANTIZE"):
        assert op in methods
    assert methods["CONV_2D"] == "AddConv2D" and methods["MAX_POOL_2D"] == "AddMaxPool2D"
    assert len(set(methods.values())) == len(methods)


def test_unsupported_operator_named_before_flashing(tmp_path):
    from models.tflite_file import read_model

    ops = read_model(SINE.read_bytes()).ops
    firmware.check_ops(ops, "sine")  # the real list accepts it
    narrow = tmp_path / "ops.txt"
    narrow.write_text("CONV_2D AddConv2D\n")
    with pytest.raises(
        HilError, match=r"sine: operator FULLY_CONNECTED is not in the firmware's op resolver"
    ):
        firmware.check_ops(ops, "sine", path=narrow)


def test_pack_model_checks_ops_and_measures_arena():
    image = firmware.pack_model(SINE)
    head = firmware.parse_image(image)
    from models.tflm import min_arena_bytes

    assert head.arena_hint == firmware.arena_hint(min_arena_bytes(SINE.read_bytes()))
    with pytest.raises(Exception, match="(?i)tflite|flatbuffer|model"):
        firmware.pack_model(b"not a model at all" * 10)


def test_resolve_variant_reads_a_real_factory_folder(tiny_build):
    """`hil models build`'s own output: the factory's arena and bytes, its TFLM verdict, a clear unknown name."""
    from models.artifacts import load_artifacts

    models_dir, _ = tiny_build
    art = load_artifacts(models_dir)["baseline-int8"]
    model, arena, name = firmware.resolve_variant("baseline-int8", models_dir)
    assert (model, arena, name) == (art.tflite.read_bytes(), art.arena_bytes, "baseline-int8") and arena > 0
    hybrid = "'baseline-dynamic' does not run on TFLM: .*(Hybrid|FLOAT32 with filter type: INT8)"
    with pytest.raises(HilError, match=hybrid):
        firmware.resolve_variant("baseline-dynamic", models_dir)
    with pytest.raises(Exception, match="no variant 'nope' built there"):
        firmware.resolve_variant("nope", models_dir)


def test_pack_model_cli_on_a_real_factory_folder(tiny_build, tmp_path, capsys):
    from hil.cli import main

    models_dir, _ = tiny_build
    out = tmp_path / "int8.hilm"
    assert main(["firmware", "pack-model", "baseline-int8", "--models-dir", str(models_dir), "-o", str(out)]) == 0
    head = firmware.parse_image(out.read_bytes())
    from models.artifacts import load_artifacts

    blob = load_artifacts(models_dir)["baseline-int8"].model_bytes()
    assert head.crc32_hex == f"{zlib.crc32(blob):08x}" and f"crc32 {head.crc32_hex}" in capsys.readouterr().out
    assert main(["firmware", "pack-model", "baseline-dynamic", "--models-dir", str(models_dir)]) == 2
    assert "does not run on TFLM" in capsys.readouterr().err


# -- partitions -----------------------------------------------------------------------------------------
def _to_bin(parts: list[firmware.Partition]) -> bytes:
    """Encode entries in ESP-IDF's binary partition table format (as gen_esp32part.py writes it)."""
    types = {"app": 0, "data": 1}
    subtypes = {"nvs": 2, "phy": 1, "factory": 0}
    out = b""
    for p in parts:
        sub = subtypes[p.subtype] if p.subtype in subtypes else int(p.subtype, 0)
        out += struct.pack(
            "<2sBBII16sI", b"\xaa\x50", types[p.type], sub, p.offset, p.size, p.label.encode(), 0
        )
    out += b"\xeb\xeb" + b"\xff" * 14 + bytes(16)  # MD5 entry
    return out + b"\xff" * (0xC00 - len(out) - 0)


def test_model_partition_from_csv_and_from_build(tmp_path):
    csv_parts = firmware.read_partition_csv()
    model = firmware.model_partition()
    assert (model.offset, model.size) == (0x200000, 0x100000)
    assert model.offset % 0x10000 == 0  # esp_partition_mmap maps 64 KB pages
    ends = sorted((p.offset, p.offset + p.size) for p in csv_parts)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(ends, ends[1:], strict=False))
    table = tmp_path / "partition_table" / "partition-table.bin"
    table.parent.mkdir()
    moved = [
        p if p.label != "model" else firmware.Partition("model", "data", "0x40", 0x300000, 0x80000)
        for p in csv_parts
    ]
    table.write_bytes(_to_bin(moved))
    from_build = firmware.model_partition(tmp_path)
    assert (from_build.offset, from_build.size) == (0x300000, 0x80000)
    assert [p.label for p in firmware.read_partition_bin(table.read_bytes())] == [p.label for p in csv_parts]


def test_csv_offsets_filled_in_when_empty(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("nvs,data,nvs,,0x6000\nfactory,app,factory,,1M\nmodel,data,0x40,,512K\n")
    parts = firmware.read_partition_csv(csv)
    assert [(p.offset, p.size) for p in parts] == [(0x9000, 0x6000), (0x10000, 0x100000), (0x110000, 0x80000)]


def test_image_larger_than_partition_names_both_sizes():
    part = firmware.Partition("model", "data", "0x40", 0x200000, 0x100000)
    image = firmware.pack_image(b"\0" * 0x100000)
    with pytest.raises(HilError, match=rf"model image is {len(image)} bytes.*holds {0x100000} bytes"):
        firmware.check_fits(image, part)
    firmware.check_fits(image[:0x100000], part)  # exactly full is fine


def test_missing_port_lists_the_ports_pyserial_sees():
    from serial.tools import list_ports

    seen = sorted(p.device for p in list_ports.comports())
    with pytest.raises(HilError) as err:
        firmware.check_port("/dev/ttyNOPE99")
    assert "/dev/ttyNOPE99 not found" in str(err.value)
    assert ("ports seen: " + (", ".join(seen) if seen else "none")) in str(err.value)


# -- ESP-IDF missing / build caching -------------------------------------------------------------------------
def test_idf_missing_message_says_what_to_install(tmp_path):
    reason = firmware.idf_missing_reason({"PATH": str(tmp_path)})
    assert "IDF_PATH is not set" in reason and "install ESP-IDF" in reason
    reason = firmware.idf_missing_reason({"PATH": str(tmp_path), "IDF_PATH": str(tmp_path)})
    assert "idf.py is not on PATH" in reason
    with pytest.raises(HilError, match="ESP-IDF not found"):
        firmware.require_idf({"PATH": str(tmp_path)})


FAKE_IDF = """#!/bin/sh
# A stand-in idf.py: logs its arguments and writes what a build leaves behind.
echo "$@" >> "$IDF_LOG"
while [ $# -gt 0 ]; do
  if [ "$1" = "-B" ]; then mkdir -p "$2"; echo '{"flash_files": {}}' > "$2/flasher_args.json"; fi
  shift
done
exit ${FAKE_IDF_EXIT:-0}
"""


@pytest.fixture
def fake_idf(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "idf.py"
    script.write_text(FAKE_IDF)
    script.chmod(0o755)
    log = tmp_path / "idf.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("IDF_PATH", str(tmp_path / "esp-idf"))
    monkeypatch.setenv("IDF_LOG", str(log))
    src = tmp_path / "firmware"
    shutil.copytree(firmware.FIRMWARE_DIR, src, ignore=shutil.ignore_patterns("build*", "host"))
    return src, log


def test_build_runs_idf_once_per_source_hash(fake_idf, tmp_path):
    src, log = fake_idf
    root = tmp_path / "build"
    first = firmware.build("esp32", firmware_dir=src, build_root=root)
    assert not first.cached and first.build_dir == (root / "esp32").resolve()
    again = firmware.build("esp32", firmware_dir=src, build_root=root)
    assert again.cached and again.source_hash == first.source_hash
    assert len(log.read_text().splitlines()) == 1

    (src / "main" / "core" / "stats.cpp").write_text("// changed\n", encoding="ascii")
    changed = firmware.build("esp32", firmware_dir=src, build_root=root)
    assert not changed.cached and changed.source_hash != first.source_hash
    other = firmware.build("esp32s3", firmware_dir=src, build_root=root)
    assert not other.cached and other.build_dir.name == "esp32s3"
    calls = log.read_text().splitlines()
    assert len(calls) == 3
    assert (
        f"SDKCONFIG={(root / 'esp32s3').resolve() / 'sdkconfig'}" in calls[-1]
    )  # one sdkconfig per build dir
    assert "IDF_TARGET=esp32s3" in calls[-1] and calls[-1].endswith("build")
    fast = firmware.build("esp32", firmware_dir=src, build_root=root, console_baud=921600)
    assert not fast.cached and fast.build_dir.name == "esp32-921600"
    assert (fast.build_dir / "sdkconfig.baud").read_text() == "CONFIG_ESP_CONSOLE_UART_BAUDRATE=921600\n"
    assert f"sdkconfig.defaults;{fast.build_dir / 'sdkconfig.baud'}" in log.read_text().splitlines()[-1]


def test_build_failure_and_embedded_mode(fake_idf, tmp_path, monkeypatch):
    src, log = fake_idf
    monkeypatch.setenv("FAKE_IDF_EXIT", "1")
    with pytest.raises(HilError, match="build for esp32 failed"):
        firmware.build("esp32", firmware_dir=src, build_root=tmp_path / "b")
    monkeypatch.setenv("FAKE_IDF_EXIT", "0")
    image = firmware.pack_image(b"\x07" * 40, 2048)
    res = firmware.build("esp32", firmware_dir=src, build_root=tmp_path / "b", embed_image=image)
    assert res.build_dir.name == "esp32-embedded"
    cc = (res.build_dir / "embedded" / "hil_model_image.cc").read_text()
    assert "alignas(16) const unsigned char hil_model_image[]" in cc
    assert f"hil_model_image_len = {len(image)};" in cc
    assert f"HIL_EMBEDDED_MODEL={res.build_dir / 'embedded' / 'hil_model_image.cc'}" in log.read_text()


def test_build_command_rejects_unknown_target(tmp_path):
    with pytest.raises(HilError, match="esp32, esp32s3"):
        firmware.build_command("esp8266", tmp_path)
    cmd = firmware.build_command("esp32", tmp_path, ccache=True)
    assert cmd[:2] == ["idf.py", "-C"] and "--ccache" in cmd


# -- flashing ---------------------------------------------------------------------------------------------
def _build_dir(tmp_path) -> Path:
    build = tmp_path / "build-esp32"
    shutil.copytree(DATA, build, ignore=shutil.ignore_patterns("*.json2*", "esp-idf-size*"))
    for name, size in (
        ("bootloader/bootloader.bin", 26000),
        ("hil_bench.bin", 650000),
        ("partition_table/partition-table.bin", 3072),
    ):
        (build / name).parent.mkdir(parents=True, exist_ok=True)
        (build / name).write_bytes(os.urandom(size))
    return build


class FileFlash:
    """A flash chip as a file: writes land at their offsets; a fault can corrupt the next N writes."""

    def __init__(self, path: Path, size: int = 4 * 1024 * 1024):
        self.path = path
        path.write_bytes(b"\xff" * size)
        self.corrupt_next = 0
        self.writes = 0

    def __call__(self, port, regions, baud, settings):
        data = bytearray(self.path.read_bytes())
        for offset, blob in regions:
            blob = bytearray(blob)
            if self.corrupt_next:
                blob[len(blob) // 2] ^= 0xFF
                self.corrupt_next -= 1
            data[offset : offset + len(blob)] = blob
        self.path.write_bytes(bytes(data))
        self.writes += 1


def test_flash_app_writes_flasher_args_files_at_their_offsets(tmp_path):
    build = _build_dir(tmp_path)
    plan = firmware.flash_plan(build)
    assert plan.chip == "esp32" and (plan.flash_mode, plan.flash_size) == ("dio", "4MB")
    flash = FileFlash(tmp_path / "flash.bin")
    pty_master, pty_slave = os.openpty()
    try:
        written = firmware.flash_app(os.ttyname(pty_slave), build, writer=flash)
    finally:
        os.close(pty_master)
        os.close(pty_slave)
    content = flash.path.read_bytes()
    for off, name in json.loads((build / "flasher_args.json").read_text())["flash_files"].items():
        blob = (build / name).read_bytes()
        assert content[int(off, 16) : int(off, 16) + len(blob)] == blob
    assert written == plan.total_bytes == 26000 + 650000 + 3072


def test_flash_plan_missing_build(tmp_path):
    with pytest.raises(HilError, match="build the firmware first"):
        firmware.flash_plan(tmp_path)


@pytest.fixture
def pty_port():
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def _device_hello(core_process, flash: FileFlash, part: firmware.Partition):
    """hello from the firmware core booted on the flash file's model partition."""

    def hello():
        region = flash.path.read_bytes()[part.offset : part.offset + part.size]
        dump = flash.path.with_suffix(".part")
        dump.write_bytes(region)
        return core_process("--image", str(dump)).request("hello")

    return hello


def test_flash_model_verified_by_hello_crc_with_one_retry(core_process, tmp_path, pty_port):
    part = firmware.model_partition()
    flash = FileFlash(tmp_path / "flash.bin")
    image = firmware.pack_image(SINE.read_bytes(), 4096)
    flash.corrupt_next = 1  # the first write arrives damaged; the retry is clean
    crc = firmware.flash_model(
        pty_port, image, partition=part, writer=flash, hello=_device_hello(core_process, flash, part)
    )
    assert crc == f"{zlib.crc32(SINE.read_bytes()):08x}" and flash.writes == 2
    # only the model partition was written
    content = flash.path.read_bytes()
    assert content[: part.offset] == b"\xff" * part.offset
    assert content[part.offset : part.offset + len(image)] == image


def test_flash_model_fails_with_both_crcs(core_process, tmp_path, pty_port):
    part = firmware.model_partition()
    flash = FileFlash(tmp_path / "flash.bin")
    flash.corrupt_next = 2
    image = firmware.pack_image(SINE.read_bytes(), 4096)
    with pytest.raises(HilError) as err:
        firmware.flash_model(
            pty_port, image, partition=part, writer=flash, hello=_device_hello(core_process, flash, part)
        )
    want = f"{zlib.crc32(SINE.read_bytes()):08x}"
    assert f"image CRC32 {want}, device reports none (model image CRC mismatch" in str(err.value)
    assert flash.writes == 2


def test_flash_model_refuses_before_touching_the_board(tmp_path):
    flash = FileFlash(tmp_path / "flash.bin")
    small = firmware.Partition("model", "data", "0x40", 0x200000, 1024)
    with pytest.raises(HilError, match="holds 1024 bytes"):
        firmware.flash_model(
            "/dev/ttyNOPE99", firmware.pack_image(b"\1" * 2000), partition=small, writer=flash
        )
    with pytest.raises(HilError, match="not found"):
        firmware.flash_model("/dev/ttyNOPE99", firmware.pack_image(b"\1" * 20), partition=small, writer=flash)
    assert flash.writes == 0


# -- size report ------------------------------------------------------------------------------------------
def test_size_report_from_committed_json2_sample():
    text = "Not a JSON line from idf.py\n" + (DATA / "esp-idf-size-json2-esp32.json").read_text()
    rep = firmware.parse_size_json2(text)
    raw = {r["name"]: r for r in json.loads((DATA / "esp-idf-size-json2-esp32.json").read_text())["layout"]}
    assert rep.flash_used == raw["Flash Code"]["used"] + raw["Flash Data"]["used"]
    assert rep.dram_used == raw["DRAM"]["used"] and rep.dram_free == raw["DRAM"]["free"]
    assert rep.iram_used == raw["IRAM"]["used"] and rep.iram_free == raw["IRAM"]["free"]
    assert rep.flash_free == raw["Flash Code"]["total"] + raw["Flash Data"]["total"] - rep.flash_used


def test_size_report_flash_total_zero_uses_app_partition():
    report = {
        "layout": [
            {"name": "Flash Code", "total": 0, "used": 500000},
            {"name": "DIRAM", "total": 341760, "used": 100000},
        ]
    }
    rep = firmware.parse_size_json2(report, app_partition_size=0x1F0000)
    assert rep.flash_free == 0x1F0000 - 500000 and rep.dram_free == 241760 and rep.iram_free is None


@pytest.mark.parametrize("bad", ["", "{}", '{"layout": "x"}', '{"layout": [{"name": "DRAM"}]}'])
def test_size_report_rejects_non_json2(bad):
    with pytest.raises(HilError, match="size report"):
        firmware.parse_size_json2(bad)
