import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushwire.common.errors import (
    FrameTooLarge,
    LocalProtocolError,
    MalformedFrame,
    RemoteProtocolError,
)
from hushwire.common.frames import FrameDecoder, encode_frame


def frame_of(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def test_round_trip_in_every_chunking():
    msgs = [{"t": "ping", "id": i, "b": bytes([i]) * i} for i in range(20)]
    data = b"".join(encode_frame(m) for m in msgs)
    for step in (1, 2, 3, 7, 64, len(data)):
        dec = FrameDecoder()
        out = []
        for i in range(0, len(data), step):
            out += dec.feed(data[i : i + step])
        assert out == msgs
        assert dec.buffered == 0


def test_binary_stays_binary_and_text_stays_text():
    (out,) = FrameDecoder().feed(encode_frame({"t": "x", "bin": b"\xff\x00", "s": "é"}))
    assert out["bin"] == b"\xff\x00" and isinstance(out["bin"], bytes)
    assert out["s"] == "é"


def test_oversized_length_prefix_fails_before_payload_arrives():
    dec = FrameDecoder(max_size=1024)
    with pytest.raises(FrameTooLarge):
        dec.feed(struct.pack(">I", 1025))  # only the header: nothing buffered yet
    assert FrameTooLarge("x").code == "frame_too_large"


def test_frame_at_the_limit_is_accepted():
    payload = msgpack.packb({"t": "x", "p": b"a" * 100})
    dec = FrameDecoder(max_size=len(payload))
    assert dec.feed(frame_of(payload)) == [{"t": "x", "p": b"a" * 100}]


def test_encoder_refuses_oversized_frames():
    with pytest.raises(LocalProtocolError):
        encode_frame({"t": "x", "p": b"a" * 2000}, max_size=1024)


def test_truncated_frame_is_held_not_yielded():
    data = encode_frame({"t": "x"})
    dec = FrameDecoder()
    assert dec.feed(data[:-1]) == []
    assert dec.buffered > 0  # a disconnect now is "mid-frame"


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # never-used msgpack byte
        msgpack.packb([1, 2, 3]),  # not a map
        msgpack.packb({"id": 1}),  # no type
        msgpack.packb({"t": 5}),  # type not a string
        msgpack.packb({1: "x", "t": "x"}),  # non-string key
        msgpack.packb({"t": "x"}) + b"\x00",  # trailing bytes
        b"\x91" * 3000 + b"\x80",  # nesting deeper than the unpacker's stack
        b"\x81\xa1t\xd9\x02\xff\xfe",  # invalid UTF-8 in a string
        msgpack.packb({"t": "x", "e": msgpack.ExtType(1, b"x")}),  # extension type
        msgpack.packb({"t": "x", "l": [1]})[:-1],  # truncated inside the payload
    ],
)
def test_malformed_payloads_raise_typed_errors(payload):
    with pytest.raises(MalformedFrame):
        FrameDecoder().feed(frame_of(payload))


def test_empty_frame_is_malformed():
    with pytest.raises(MalformedFrame):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_only_yield_maps_or_typed_errors(data, step):
    dec = FrameDecoder(max_size=1024)
    try:
        for i in range(0, len(data), step):
            for frame in dec.feed(data[i : i + step]):
                assert isinstance(frame, dict) and isinstance(frame["t"], str)
    except RemoteProtocolError:
        pass


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_like, max_size=5), st.text(min_size=1))
def test_round_trip_of_arbitrary_maps(body, t):
    msg = {**body, "t": t}
    assert FrameDecoder(max_size=1 << 20).feed(encode_frame(msg, max_size=1 << 20)) == [msg]
