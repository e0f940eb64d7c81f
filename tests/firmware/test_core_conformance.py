"""docs/protocol-vectors.json run against the firmware's portable core (host build, fake model).

The same vectors run against the virtual board (tests/harness); both must pass the same file. The runner
checks every reply line's `*crc32` suffix itself, with zlib (not hil.wire's framing), and fails the step of
a reply without a valid one.
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


def _signed(line: str) -> str:
    """A step with "sign": true: the line, one space, `*` and the CRC32 of the line."""
    return f"{line} *{zlib.crc32(line.encode('ascii')):08x}"


def _reply_of(raw: str, where: str) -> dict:
    """The JSON object of a version 2 reply line; fails the step when its `*crc32` suffix is missing or wrong."""
    if not raw.startswith("@hil "):
        pytest.fail(f"{where}: not a reply line: {raw!r}")
    body = raw[len("@hil ") :]
    if len(body) < 11 or body[-9] != "*":
        pytest.fail(f"{where}: reply line without a `*crc32` suffix: {raw!r}")
    text, crc = body[:-9], body[-8:]
    if any(c not in "0123456789abcdef" for c in crc) or not (text.startswith("{") and text.endswith("}")):
        pytest.fail(f"{where}: reply line is not `@hil {{json}}*` and 8 lowercase hex digits: {raw!r}")
    want = f"{zlib.crc32(text.encode('ascii')):08x}"
    if crc != want:
        pytest.fail(f"{where}: reply CRC {crc}, but the CRC32 of its JSON text is {want}: {raw!r}")
    reply = json.loads(text)
    if not isinstance(reply, dict):
        pytest.fail(f"{where}: reply is not a JSON object: {raw!r}")
    return reply


def _check(step: dict, reply: dict, where: str) -> None:
    for key, want in step.get("match", {}).items():
        assert reply.get(key) == want, f"{where}: {key} = {reply.get(key)!r}, want {want!r}; reply {reply}"
    for key in step.get("has", []):
        assert key in reply, f"{where}: reply lacks {key!r}: {reply}"
    for key, n in step.get("len", {}).items():
        assert len(reply[key]) == n, f"{where}: len({key}) = {len(reply[key])}, want {n}"


def run_vectors(device, input_bytes: int, vectors: dict = VECTORS) -> int:
    """Run every vector in order on one device; return the number of steps checked.

    `device.request_line(line)` sends one command line and returns the raw reply line (conftest's CoreProcess
    and QemuProcess); every reply line's CRC is checked here.
    """
    checked = 0
    for vector in vectors["vectors"]:
        for number, step in enumerate(vector["steps"], 1):
            where = f"vector {vector['name']!r} step {number}"

            def request(line: str, step=step, where=where) -> dict:
                return _reply_of(device.request_line(_signed(line) if step.get("sign") else line), where)

            if step.get("upload_zeros") or step.get("upload_chunks_only"):
                if step.get("upload_zeros"):
                    first = request(f"input {input_bytes} {zlib.crc32(bytes(input_bytes)):08x}")
                    assert first.get("ok"), f"{where}: {first}"
                reply = None
                for start in range(0, input_bytes, CHUNK):
                    chunk = bytes(min(CHUNK, input_bytes - start))
                    reply = request("data " + base64.b64encode(chunk).decode())
                    if not reply.get("ok"):
                        break
            else:
                reply = request(_subst(step["send"], input_bytes))
            _check(step, reply, where)
            checked += 1
    return checked


def test_vectors_on_the_builtin_image(core_process):
    device = core_process()
    hello = device.request("hello")
    assert hello["ok"], hello
    steps = run_vectors(device, hello["input"]["bytes"])
    assert steps == sum(len(v["steps"]) for v in VECTORS["vectors"])
    assert any(line.startswith("hil-ready protocol=2") for line in device.log)


class _ScriptedDevice:
    """A stand-in device for the runner's own checks: answers every line with a canned reply line."""

    def __init__(self, make_line):
        self.make_line = make_line
        self.sent: list[str] = []

    def request_line(self, line: str) -> str:
        self.sent.append(line)
        return self.make_line(line)


def _version_vectors(sign: bool = False) -> dict:
    step = {"send": "version", "match": {"ok": True, "cmd": "version", "protocol": 2}}
    return {"vectors": [{"name": "v", "steps": [dict(step, sign=True) if sign else step]}]}


GOOD_TEXT = '{"ok":true,"cmd":"version","protocol":2,"firmware":"0.2.0","board":"esp32"}'


@pytest.mark.parametrize(
    "line",
    [
        f"@hil {GOOD_TEXT}",  # version 1 framing: no CRC
        f"@hil {GOOD_TEXT}*",
        f"@hil {GOOD_TEXT}*2747703",
        f"@hil {GOOD_TEXT}*2747703D",  # uppercase hex: the device writes lowercase
        f"@hil {GOOD_TEXT}*00000000",  # wrong CRC
        f"@hil {GOOD_TEXT.replace('esp32', 'esp33')}*2747703d",  # a corrupted field under the old CRC
        f"@hil {GOOD_TEXT} *2747703d",
        f"@hil {GOOD_TEXT}*2747703d ",
    ],
    ids=["no-crc", "empty-crc", "short-crc", "uppercase-crc", "wrong-crc", "corrupted", "space", "trailing"],
)
def test_the_runner_fails_a_reply_without_a_valid_crc(line):
    """The runner's CRC check is a check: the reply of docs/protocol.md's example passes, every damaged
    framing of it fails the step (with the step named)."""
    assert run_vectors(_ScriptedDevice(lambda _: f"@hil {GOOD_TEXT}*2747703d"), 0, _version_vectors()) == 1
    with pytest.raises(pytest.fail.Exception, match="vector 'v' step 1"):
        run_vectors(_ScriptedDevice(lambda _: line), 0, _version_vectors())


def test_the_runner_signs_lines_of_sign_steps():
    device = _ScriptedDevice(lambda _: f"@hil {GOOD_TEXT}*2747703d")
    run_vectors(device, 0, _version_vectors(sign=True))
    run_vectors(device, 0, _version_vectors())
    assert device.sent == [f"version *{zlib.crc32(b'version'):08x}", "version"]
    assert _signed("sync 17") == "sync 17 *25fd3c5d"  # docs/protocol.md's example


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
