"""IEEE 488.2 definite-length block reader: exact parsing, every malformed form rejected, round trips."""

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instruments.errors import InstrumentError
from instruments.ieee488 import BlockError, encode_block, parse_block, read_block


def test_rigol_style_block_is_parsed_exactly():
    payload = bytes(range(256)) * 4
    data = b"#9000001024" + payload + b"\n"
    assert parse_block(data) == payload


def test_payload_containing_newlines_is_not_cut():
    payload = b"\n\n#1\n" * 100
    assert parse_block(encode_block(payload)) == payload


def test_block_error_is_an_instrument_error():
    assert issubclass(BlockError, InstrumentError)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "start with '#'"),
        (b"9000000003abc\n", "start with '#'"),
        (b"#", "digit count"),
        (b"#A3abc\n", "digit count"),
        (b"#0abc\n", "indefinite-length"),
        (b"#3", "length field has 0 of 3"),
        (b"#31a3abc\n", "ASCII digits"),
        (b"#15abc\n", "payload has 4 of 5"),
        (b"#210abcdef\n", "payload has 7 of 10"),
        (b"#13abc", "not followed by"),
        (b"#13abcX", "not followed by"),
        (b"#13abc\r\n", "not followed by"),
        (b"#13abc\nextra", "extra bytes"),
        (b"#13abc\n\n", "extra bytes"),
    ],
)
def test_malformed_blocks_raise_clear_errors(data, message):
    with pytest.raises(BlockError, match=message):
        parse_block(data)


def test_stream_reader_reads_one_block_and_leaves_the_rest():
    stream = io.BytesIO(encode_block(b"abc") + encode_block(b"defg"))
    assert read_block(stream.read) == b"abc"
    assert read_block(stream.read) == b"defg"


def test_stream_reader_in_small_chunks():
    payload = bytes(range(200)) * 50
    stream = io.BytesIO(encode_block(payload))
    assert read_block(stream.read, chunk_size=7) == payload


@given(st.binary(max_size=5000))
def test_round_trip(payload):
    assert parse_block(encode_block(payload)) == payload


@given(st.binary(min_size=1, max_size=500), st.data())
def test_any_truncation_raises(payload, data):
    encoded = encode_block(payload)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(BlockError):
        parse_block(encoded[:cut])


@given(st.binary(max_size=300), st.binary(min_size=1, max_size=20))
def test_any_trailing_garbage_raises(payload, junk):
    with pytest.raises(BlockError):
        parse_block(encode_block(payload) + junk)


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=8))
def test_header_may_use_more_digits_than_needed(payload, extra):
    digits = str(len(payload)).zfill(len(str(len(payload))) + extra)
    if len(digits) > 9:
        return
    assert parse_block(b"#" + str(len(digits)).encode() + digits.encode() + payload + b"\n") == payload
