"""docs/protocol-vectors.json run against the firmware's portable core (host build, fake model).

The same vectors run against the virtual board (tests/harness); both must pass the same file.
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import pytest

from hil import firmware

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "docs" / "protocol-vectors.json").read_text())
SINE = ROOT / ".venv/lib/python3.11/site-packages/tflite_micro/python/tflite_micro/sine_float.tflite"
CHUNK = 750


def _subst(text: str, input_bytes: int) -> str:
    return (
        text.replace("{input_bytes}", str(input_bytes))
        .replace("{zeros_crc32}", f"{zlib.crc32(bytes(input_bytes)):08x}")
        .replace("{long_line}", "x" * 1100)
    )


def _check(step: dict, reply: dict, where: str) -> None:
    for key, want in step.get("match", {}).items():
        assert reply.get(key) == want, f"{where}: {key} = {reply.get(key)!r}, want {want!r}; reply {reply}"
    for key in step.get("has", []):
        assert key in reply, f"{where}: reply lacks {key!r}: {reply}"
    for key, n in step.get("len", {}).items():
        assert len(reply[key]) == n, f"{where}: len({key}) = {len(reply[key])}, want {n}"


def run_vectors(device, input_bytes: int) -> int:
    """Run every vector in order on one device; return the number of steps checked."""
    checked = 0
    for vector in VECTORS["vectors"]:
        for number, step in enumerate(vector["steps"], 1):
            where = f"vector {vector['name']!r} step {number}"
            if step.get("upload_zeros") or step.get("upload_chunks_only"):
                if step.get("upload_zeros"):
                    first = device.request(f"input {input_bytes} {zlib.crc32(bytes(input_bytes)):08x}")
                    assert first.get("ok"), f"{where}: {first}"
                reply = None
                for start in range(0, input_bytes, CHUNK):
                    chunk = bytes(min(CHUNK, input_bytes - start))
                    reply = device.request("data " + base64.b64encode(chunk).decode())
                    if not reply.get("ok"):
                        break
            else:
                reply = device.request(_subst(step["send"], input_bytes))
            _check(step, reply, where)
            checked += 1
    return checked


def test_vectors_on_the_builtin_image(core_process):
    device = core_process()
    hello = device.request("hello")
    assert hello["ok"], hello
    steps = run_vectors(device, hello["input"]["bytes"])
    assert steps == sum(len(v["steps"]) for v in VECTORS["vectors"])
    assert any(line.startswith("hil-ready protocol=1") for line in device.log)


def _fake_args_for(model: bytes) -> list[str]:
    from models.tflite_file import read_model

    info = read_model(model)
    tin, tout = info.inputs[0], info.outputs[0]
    return [
        "--input-shape", ",".join(map(str, tin.shape)), "--input-dtype", tin.dtype,
        "--output-shape", ",".join(map(str, tout.shape)), "--output-dtype", tout.dtype,
        "--ops", ",".join(info.ops),
    ]  # fmt: skip


@pytest.mark.parametrize("chunks", [1, 2], ids=["one-chunk", "multi-chunk"])
def test_vectors_on_a_packed_tflite_image(core_process, tmp_path, chunks):
    """A real .tflite packed by hil.firmware, validated by the C++ core, then the whole vector set."""
    model = SINE.read_bytes()
    image = firmware.pack_image(model, firmware.arena_hint(2048))
    part = tmp_path / "model-partition.bin"
    part.write_bytes(image + b"\xff" * 4096)  # the erased rest of the partition
    args = _fake_args_for(model)
    if chunks == 2:  # a 1000-float input: two data chunks of at most 750 bytes
        args[args.index("--input-shape") + 1] = "1,1000"
    device = core_process("--image", str(part), *args)
    hello = device.request("hello")
    assert hello["ok"], hello
    assert hello["model"] == {
        "crc32": f"{zlib.crc32(model):08x}",
        "sha256": __import__("hashlib").sha256(model).hexdigest(),
        "bytes": len(model),
    }
    assert hello["arena"]["configured"] == firmware.arena_hint(2048)
    assert hello["input"]["dtype"] == "float32" and hello["input"]["scale"] == 0
    run_vectors(device, hello["input"]["bytes"])
