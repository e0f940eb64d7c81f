"""hil.wire: the one definition of the protocol's formats that the client, the virtual board and `hil firmware`
share; values checked against the spec (docs/protocol.md) and the reference CRC, not against themselves."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import pytest

import hil.protocol
from hil import wire


def test_crc32_is_ieee_802_3_as_8_lowercase_hex_digits() -> None:
    assert wire.crc32_hex(b"123456789") == "cbf43926"  # the CRC-32/ISO-HDLC check value
    assert wire.crc32_hex(b"") == "00000000"
    assert wire.crc32_hex(b"\x00" * 4) == "2144df1c"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("CBF43926", "cbf43926"),
        ("0a1b2c3d", "0a1b2c3d"),
        ("0a1b2c3", None),
        ("0a1b2c3d0", None),
        ("0x1b2c3d", None),
        ("0a1b2c3g", None),
        ("", None),
    ],
)
def test_crc32_arguments_are_exactly_8_hex_digits(text: str, want: str | None) -> None:
    assert wire.normalize_crc32(text) == want


DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()


def test_reply_lines_are_the_prefix_compact_json_and_the_crc_of_the_json() -> None:
    example = re.search(r"^  (@hil \{.*\}\*[0-9a-f]{8})\\r\\n$", DOC, re.M).group(1)  # the spec's own line
    obj = {"ok": True, "cmd": "version", "protocol": 2, "firmware": "0.2.0", "board": "esp32"}
    assert wire.format_reply(obj) == example
    assert wire.parse_reply(example, require_crc=True) == obj
    err = wire.format_reply(wire.error_reply("run", wire.E_STATE, "no input"))
    text = '{"ok":false,"cmd":"run","code":"E_STATE","error":"no input"}'
    assert err == f"@hil {text}*{zlib.crc32(text.encode()):08x}"
    v1 = wire.format_reply({"ok": True, "cmd": "version", "protocol": 1}, 1)
    assert v1 == '@hil {"ok":true,"cmd":"version","protocol":1}'


def test_a_reply_whose_crc_does_not_match_is_not_a_reply() -> None:
    good = wire.format_reply({"ok": True, "cmd": "infer", "n": 1, "latency_us": [62811]})
    assert wire.parse_reply(good, require_crc=True) is not None
    flipped = good.replace("62811", "62911")  # one digit of a latency: the v1 failure mode
    assert wire.parse_reply(flipped) is None and wire.parse_reply(flipped, require_crc=True) is None
    assert wire.looks_like_reply(flipped)
    lost_mark = good.replace("}*", "}+")  # the CRC's mark garbled
    assert wire.parse_reply(lost_mark) is None and wire.parse_reply(lost_mark, require_crc=True) is None
    for junk in ("\x0c", "-", "\x0d\x0d"):  # the terminator's '\r' with a bit flipped: the CRC still decides
        assert wire.parse_reply(good + junk, require_crc=True) == wire.parse_reply(good, require_crc=True)
    assert wire.parse_reply(good + "--", require_crc=True) is None  # more than one stray byte: not a reply
    split = good[: good.rindex("*")]  # '*' flipped into a line break: the JSON alone arrives
    assert wire.parse_reply(split, require_crc=True) is None
    assert wire.parse_reply(split) is not None  # before the version is known, a v1 line is readable ...
    v2_unsigned = '@hil {"ok":true,"cmd":"hello","protocol":2}'
    assert wire.parse_reply(v2_unsigned) is None  # ... but never one that claims version 2


def test_command_lines_carry_their_own_crc() -> None:
    example = re.search(r"`(infer 10 2 5 \*[0-9a-f]{8})`", DOC).group(1)
    assert wire.sign_command("infer 10 2 5") == example
    assert wire.strip_command_crc(example) == "infer 10 2 5"
    assert wire.strip_command_crc(example.upper().replace("INFER", "infer") + "  \r") == "infer 10 2 5"
    assert wire.strip_command_crc("infer 10 2 5") == "infer 10 2 5"  # no CRC: as it is
    for bad in ("infer 10 2 6 " + example[-9:], "infer 3 *12", "infer 3 *zzzzzzzz", "*", " *00000000",
                "version *00000000"):
        assert wire.strip_command_crc(bad) is None, bad
    assert wire.strip_command_crc("version*" + example[-8:]) == "version*" + example[-8:]  # no CRC token


@pytest.mark.parametrize(
    "line",
    [
        "hil-ready protocol=1",
        '@hil {"ok":"yes","cmd":"version"}',  # ok must be a bool
        '@hil {"ok":true}',  # cmd is required
        '@hil {"ok":true,"cmd":"version"',  # truncated
        '@hil ["ok"]',
        '@hi {"ok":true,"cmd":"version"}',  # a flipped bit in the prefix
    ],
)
def test_malformed_replies_are_not_replies(line: str) -> None:
    assert wire.parse_reply(line) is None


def test_a_reply_behind_a_log_prefix_is_still_found_and_garbage_is_recognised() -> None:
    assert wire.parse_reply('I (5) x: @hil {"ok":true,"cmd":"hello"}') == {"ok": True, "cmd": "hello"}
    assert wire.looks_like_reply('@hil {"ok":tr') and wire.looks_like_reply('{"ok":true')
    assert not wire.looks_like_reply("I (312) cpu_start: Pro cpu start user code")


def test_command_tokens_and_the_ready_banner() -> None:
    assert wire.split_command("  infer  3 1 \r") == ["infer", "3", "1"]
    assert wire.split_command(" \r") == []
    assert wire.ready_banner() == "hil-ready protocol=2" and wire.ready_banner(1) == "hil-ready protocol=1"
    assert wire.COMMANDS == ("version", "hello", "sync", "infer", "input", "data", "run", "profile", "reset")
    assert set(wire.UPLOAD_ERRORS) < set(wire.ERROR_CODES) and len(wire.ERROR_CODES) == 10
    for code in wire.ERROR_CODES:
        assert f"| `{code}` |" in DOC, code


def test_latency_statistics_use_the_population_std() -> None:
    assert wire.latency_stats([100, 102, 104, 106]) == {
        "mean_us": 103.0,
        "min_us": 100,
        "max_us": 106,
        "std_us": 2.2,  # sqrt(5); the sample std would be 2.6
    }
    assert wire.latency_stats([7])["std_us"] == 0.0


def test_tensor_spec_round_trips_and_float_tensors_carry_no_quantization() -> None:
    f = wire.TensorSpec.of((1, 1), "float32", 0.5, 3, 4)
    assert (f.scale, f.zero_point) == (0.0, 0)
    q = wire.TensorSpec.of((1, 32, 32, 1), "int8", 0.0039, -128, 1024)
    assert q.to_json() == {"shape": [1, 32, 32, 1], "dtype": "int8", "scale": 0.0039, "zero_point": -128, "bytes": 1024}
    assert wire.TensorSpec.from_json(q.to_json()) == q


def test_hello_of_a_board_without_a_usable_model() -> None:
    info = wire.Hello.from_json(
        {
            "ok": False,
            "cmd": "hello",
            "code": "E_MODEL",
            "error": "arena too small",
            "protocol": 1,
            "model": {"crc32": "0a1b2c3d", "sha256": "ab", "bytes": 9},
            "arena": {"configured": 1024, "used": None},
        }
    )
    assert not info.model_ok and info.model_error == "arena too small" and info.model_error_code == "E_MODEL"
    assert info.model == wire.ModelId("0a1b2c3d", "ab", 9) and info.arena_used is None and info.input is None


def test_the_client_uses_the_same_definitions() -> None:
    for name in (
        "TensorSpec",
        "Hello",
        "crc32_hex",
        "parse_reply",
        "reply_deadline_s",
        "latency_stats",
        "PROTOCOL_VERSION",
        "CHUNK_MAX_BYTES",
        "MAX_LINE_BYTES",
    ):
        assert getattr(hil.protocol, name) is getattr(wire, name), name
