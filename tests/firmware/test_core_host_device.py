"""The portable core as a process: model images from hil.firmware, corrupt images, upload round trips."""

from __future__ import annotations

import base64
import zlib

import numpy as np

from hil import firmware


def _image_file(tmp_path, image: bytes, pad: int = 4096):
    path = tmp_path / "partition.bin"
    path.write_bytes(image + b"\xff" * pad)
    return path


def test_corrupt_image_on_the_device_hello_says_so(core_process, tmp_path):
    image = bytearray(firmware.pack_image(b"TFL3" * 100, 4096))
    image[firmware.IMAGE_HEADER_SIZE + 17] ^= 0x40
    good_crc = f"{zlib.crc32(b'TFL3' * 100):08x}"
    device = core_process("--image", str(_image_file(tmp_path, bytes(image))))
    hello = device.request("hello")
    assert hello["ok"] is False and hello["code"] == "E_MODEL"
    assert hello["error"].startswith("model image CRC mismatch") and good_crc in hello["error"]
    assert device.request("infer 1")["code"] == "E_MODEL"
    assert device.request("version")["ok"] is True


def test_erased_partition_and_truncated_partition(core_process, tmp_path):
    erased = tmp_path / "erased.bin"
    erased.write_bytes(b"\xff" * 8192)
    hello = core_process("--image", str(erased)).request("hello")
    assert hello["code"] == "E_MODEL" and "erased" in hello["error"]

    image = firmware.pack_image(bytes(range(256)) * 8, 0)
    short = _image_file(tmp_path, image, pad=0)
    hello = core_process("--image", str(short), "--partition-size", str(len(image) - 1)).request("hello")
    assert hello["code"] == "E_MODEL" and "exceeds the partition" in hello["error"]


def test_arena_too_small_is_reported_by_hello(core_process, tmp_path):
    image = firmware.pack_image(b"x" * 64, 16384)
    hello = core_process("--image", str(_image_file(tmp_path, image)), "--arena-needs", "30512").request(
        "hello"
    )
    assert hello["ok"] is False
    assert hello["error"] == "arena too small: needs 30512 bytes, has 16384"
    assert hello["ops"] and hello["model"]["bytes"] == 64


def test_upload_round_trip_reaches_the_model(core_process):
    device = core_process()
    n = device.request("hello")["input"]["bytes"]
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    assert device.request(f"input {n} {zlib.crc32(data):08x}")["ok"]
    reply = None
    for start in range(0, n, 750):
        reply = device.request("data " + base64.b64encode(data[start : start + 750]).decode())
    assert reply["complete"] is True and reply["crc32"] == f"{zlib.crc32(data):08x}"
    run = device.request("run")
    out = base64.b64decode(run["output"])
    # the fake model: output[i] = (sum(input) + 31 i) mod 256
    want = bytes((sum(data) + 31 * i) & 0xFF for i in range(len(out)))
    assert out == want
    assert run["output_crc32"] == f"{zlib.crc32(want):08x}"


def test_infer_statistics_match_numpy(core_process):
    device = core_process("--latency-us", "1000")
    reply = device.request("infer 50 3 0")
    lat = np.array(reply["latency_us"])
    assert len(lat) == 50 and lat.min() >= 1000
    assert reply["mean_us"] == round(float(lat.mean()), 1)
    assert reply["std_us"] == round(float(lat.std()), 1)  # population std (ddof=0)
    assert (reply["min_us"], reply["max_us"]) == (int(lat.min()), int(lat.max()))


def test_garbage_bytes_never_kill_the_core(core_process):
    """Random bytes get one well-formed error reply per line (escaped to ASCII JSON), then work resumes."""
    device = core_process()
    rng = np.random.default_rng(3)
    for _ in range(20):
        junk = bytes(b for b in rng.integers(0, 256, 300, dtype=np.uint8).tobytes() if b not in (10, 32))
        reply = device.request(junk)
        assert reply["ok"] is False and reply["code"] == "E_UNKNOWN_CMD", reply
    assert device.request(b"x" * 5000)["code"] == "E_LINE_TOO_LONG"
    assert device.request("version")["ok"] is True
