"""Decoding raw frame maps into typed messages: every malformed field is a typed error."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushwire.common import codec
from hushwire.common import messages as m
from hushwire.common.errors import ErrorCode, MalformedFrame

uint = st.integers(min_value=0, max_value=2**63 - 1)
names = st.from_regex(r"[a-z][a-z0-9_.-]{0,31}", fullmatch=True)


@pytest.mark.parametrize(
    "raw",
    [
        {"t": "nope", "id": 1},
        {"t": "login", "id": 1, "user": "a"},  # missing token
        {"t": "login", "id": 1, "user": 5, "token": "x"},
        {"t": "ack", "id": 1, "mids": [1, -2]},
        {"t": "ack", "id": 1, "mids": [True]},
        {"t": "ack", "id": 1, "mids": "12"},
        {"t": "send", "id": 1, "to": ["bob"], "body": "text, not bytes"},
        {"t": "ping", "id": 2**64},
        {"t": "error", "id": 1, "code": "x", "message": "m", "retry_after": float("nan")},
        {"t": "error", "id": 1, "code": "x", "message": "m", "retry_after": -1.0},
        {
            "t": "publish_keys",
            "id": 1,
            "identity": [1],
            "signed_prekey": None,
            "one_time_prekeys": [],
        },
        {
            "t": "publish_keys",
            "id": 1,
            "identity": None,
            "signed_prekey": None,
            "one_time_prekeys": [{"id": 1}],
        },
        # protocol.md "Fields": a `T?` field may be nil but never omitted
        {"t": "publish_keys", "id": 1, "identity": None, "one_time_prekeys": []},
        {"t": "publish_keys", "id": 1, "identity": None, "signed_prekey": None},
        {"t": "hello", "id": 1, "versions": [1]},  # `client` is required
    ],
)
def test_bad_requests_are_typed_errors(raw):
    with pytest.raises(MalformedFrame) as exc:
        if raw["t"] == "error":
            codec.decode_from_relay(raw, {})
        else:
            codec.decode_request(raw)
    assert exc.value.code == ErrorCode.BAD_FRAME


def test_request_id_is_recovered_from_a_bad_request():
    assert codec.request_id({"t": "login", "id": 7}) == 7
    assert codec.request_id({"t": "login", "id": True}) is None
    assert codec.request_id({"t": "login", "id": -1}) is None


def test_reply_to_unknown_request_is_rejected():
    with pytest.raises(MalformedFrame):
        codec.decode_from_relay(m.Pong(id=3).to_wire(), {4: m.Pong})


_wire_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-2, max_value=2**64)
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.floats(allow_nan=False)
)


@given(
    id=_wire_values | uint,
    to=st.lists(_wire_values | names, max_size=3) | _wire_values,
    body=_wire_values | st.binary(max_size=20),
    mids=st.lists(_wire_values | uint, max_size=3) | _wire_values,
    drop=st.sampled_from([None, "id", "to", "body", "mids"]),
)
@settings(max_examples=400)
def test_fast_send_and_ack_decoders_agree_with_the_generic_codec(id, to, body, mids, drop):
    for raw in (
        {"t": "send", "id": id, "to": to, "body": body},
        {"t": "ack", "id": id, "mids": mids},
    ):
        raw.pop(drop, None)
        try:
            expected = codec._from_wire(m.REQUESTS[raw["t"]], raw, raw["t"])
        except MalformedFrame as exc:
            with pytest.raises(MalformedFrame) as got:
                codec.decode_request(raw)
            assert str(got.value) == str(exc)
        else:
            assert codec.decode_request(raw) == expected


_envelope = st.fixed_dictionaries({"user": names, "device": uint, "body": st.binary(max_size=20)})
_view = st.fixed_dictionaries({"user": names, "version": uint})


# Values just outside each field's type, then anything.
_junk = st.sampled_from([-1, 2**63, True, None, "x", b"x", []])


@st.composite
def _send_devices(draw):
    """A well-formed `send_devices`, then (mostly) one field replaced by junk or dropped."""
    raw = {
        "t": "send_devices",
        "id": draw(uint),
        "envelopes": draw(st.lists(_envelope, max_size=3)),
        "lists": draw(st.lists(_view, max_size=3)),
    }
    if draw(st.booleans()):  # optional: a session reset sends it true
        raw["partial"] = draw(st.booleans())
    if draw(st.booleans()):  # a group send's payload (v2), or nil
        raw["payload"] = draw(st.one_of(st.none(), st.binary(max_size=8)))
    places = [raw] + raw["envelopes"] + raw["lists"]
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        where = draw(st.sampled_from(places))
        key = draw(st.sampled_from(sorted(k for k in where if k != "t")))
        if draw(st.booleans()):
            del where[key]
        else:
            where[key] = draw(_junk)
    return raw


@given(raw=_send_devices())
@settings(max_examples=1500)
def test_fast_send_devices_decoder_agrees_with_the_generic_codec(raw):
    try:
        expected = codec._from_wire(m.SendDevices, raw, "send_devices")
    except MalformedFrame as exc:
        with pytest.raises(MalformedFrame) as got:
            codec.decode_request(raw)
        assert str(got.value) == str(exc)
    else:
        assert codec.decode_request(raw) == expected


def test_the_fast_send_devices_decoder_takes_a_well_formed_fan_out():
    raw = {
        "t": "send_devices",
        "id": 7,
        "envelopes": [{"user": "bob", "device": 2, "body": b"x"}],
        "lists": [{"user": "alice", "version": 0}, {"user": "bob", "version": 3}],
    }
    assert codec._fast_send_devices(raw) == m.SendDevices(
        id=7,
        envelopes=(m.DeviceEnvelope("bob", 2, b"x"),),
        lists=(m.ListVersion("alice", 0), m.ListVersion("bob", 3)),
    )
    raw["partial"] = True
    assert codec._fast_send_devices(raw).partial is True
    raw["partial"] = 1  # an int is not a bool on the wire
    assert codec._fast_send_devices(raw) is None
    raw["partial"] = False
    raw["payload"] = b"group payload"
    assert codec._fast_send_devices(raw).payload == b"group payload"
    raw["payload"] = "text"  # not bin: the generic codec names the field
    assert codec._fast_send_devices(raw) is None
    with pytest.raises(MalformedFrame, match="payload"):
        codec.decode_request(raw)
    raw["payload"] = None
    assert codec._fast_send_devices(raw).payload is None
    raw["envelopes"][0]["device"] = True  # a bool is not an int on the wire
    assert codec._fast_send_devices(raw) is None


def test_a_deliver_carries_its_payload_only_when_it_has_one():
    plain = m.Deliver(mid=1, sender="alice", ts=2, body=b"x")
    assert "payload" not in plain.to_wire()  # byte-for-byte what it was before payloads
    group = m.Deliver(mid=1, sender="alice", ts=2, body=b"x", payload=b"\x00payload")
    assert group.to_wire()["payload"] == b"\x00payload"
    assert codec.decode_from_relay(group.to_wire(), {}) == group
    assert codec.decode_from_relay({**plain.to_wire(), "payload": None}, {}) == plain
    with pytest.raises(MalformedFrame, match="payload"):
        codec.decode_from_relay({**plain.to_wire(), "payload": "text"}, {})


def test_device_requests_default_to_device_one_for_older_clients():
    """A v1 client's login and fetch_bundle carry no device: they mean device 1."""
    assert codec.decode_request({"t": "login", "id": 1, "user": "a", "token": "t"}).device is None
    assert codec.decode_request({"t": "fetch_bundle", "id": 1, "user": "a"}).device is None
    assert codec.decode_from_relay(
        {"t": "deliver", "mid": 1, "sender": "a", "ts": 1, "body": b"x"}, {}
    ) == m.Deliver(mid=1, sender="a", ts=1, body=b"x", sender_device=1)
