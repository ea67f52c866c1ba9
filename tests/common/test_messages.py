import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushwire.common import codec
from hushwire.common import messages as m
from hushwire.common.errors import (
    ErrorCode,
    LocalProtocolError,
    MalformedFrame,
    RemoteProtocolError,
)
from hushwire.common.frames import FrameDecoder, encode_frame
from hushwire.common.keys import (
    IdentityPublic,
    OneTimePrekey,
    PrekeyBundle,
    SignedDeviceList,
    SignedPrekey,
)
from hushwire.common.states import ConnState, advance, check

ALL = [*m.REQUESTS.values(), *m.PUSHES.values(), *{c.REPLY for c in m.REQUESTS.values()}, m.Error]

uint = st.integers(min_value=0, max_value=2**63 - 1)
names = st.from_regex(r"[a-z][a-z0-9_.-]{0,31}", fullmatch=True)
identity = st.builds(
    IdentityPublic,
    st.sampled_from(["x25519", "ffdhe3072"]),
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=64),
    st.binary(min_size=64, max_size=64),
)
spk = st.builds(SignedPrekey, uint, st.binary(max_size=64), st.binary(max_size=64))
otpk = st.builds(OneTimePrekey, uint, st.binary(max_size=64))

for cls, strat in {
    IdentityPublic: identity,
    SignedPrekey: spk,
    OneTimePrekey: otpk,
    PrekeyBundle: st.builds(PrekeyBundle, names, identity, spk, st.none() | otpk, uint),
    int: uint,
    str: st.text(max_size=40),
    bytes: st.binary(max_size=200),
    float: st.floats(min_value=0, allow_nan=False, allow_infinity=False),
}.items():
    st.register_type_strategy(cls, strat)


def wire_round_trip(msg):
    (raw,) = FrameDecoder().feed(encode_frame(msg.to_wire()))
    if isinstance(msg, m.Request):
        return codec.decode_request(raw)
    expected = {msg.id: type(msg)} if isinstance(msg, m.Reply) else {}
    return codec.decode_from_relay(raw, expected)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_message_round_trips(cls, data):
    msg = data.draw(st.builds(cls))
    assert wire_round_trip(msg) == msg


def test_registry_is_complete():
    assert set(m.REQUESTS) == {
        "hello",
        "login",
        "publish_keys",
        "fetch_bundle",
        "prekey_count",
        "send",
        "ack",
        "who",
        "ping",
        "fetch_devices",
        "publish_devices",
        "send_devices",
        "link_start",
        "link_fetch",
        "link_join",
        "link_accept",
    }
    assert set(m.PUSHES) == {
        "deliver",
        "key_changed",
        "presence",
        "devices_changed",
        "link_request",
    }
    for cls in ALL:
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen


def test_instances_have_no_dict():
    assert not hasattr(m.Ping(id=1), "__dict__")


def test_secrets_are_redacted_from_reprs():
    assert "s3cret" not in repr(m.Login(id=1, user="alice", token="s3cret"))
    assert "PLAINTEXT" not in repr(m.Send(id=1, to=("bob",), body=b"PLAINTEXT"))
    assert "PLAINTEXT" not in repr(m.Deliver(mid=1, sender="a", ts=0, body=b"PLAINTEXT"))


def test_error_code_lookup():
    assert m.Error(id=None, code="mailbox_full", message="").error_code is ErrorCode.MAILBOX_FULL
    assert m.Error(id=None, code="from_the_future", message="").error_code is None


def test_state_table():
    hello = m.Hello(id=1, versions=(1,), client="t")
    login = m.Login(id=2, user="a", token="t")
    send = m.Send(id=3, to=("b",), body=b"x")
    check(ConnState.AWAIT_HELLO, hello, remote=True)
    with pytest.raises(RemoteProtocolError) as exc:
        check(ConnState.AWAIT_HELLO, send, remote=True)
    assert exc.value.code == ErrorCode.OUT_OF_ORDER
    assert "await_hello" in exc.value.message and "send" in exc.value.message
    with pytest.raises(LocalProtocolError):
        check(ConnState.AWAIT_LOGIN, send, remote=False)
    with pytest.raises(RemoteProtocolError):
        check(ConnState.READY, login, remote=True)  # login twice
    assert advance(ConnState.AWAIT_HELLO, hello) is ConnState.AWAIT_LOGIN
    assert advance(ConnState.AWAIT_LOGIN, login) is ConnState.READY
    assert advance(ConnState.READY, send) is ConnState.READY


def test_unrolled_to_wire_matches_the_generic_walk():
    for msg in (
        m.SendOk(id=3, mids=(7, 8), ts=9),
        m.Deliver(mid=1, sender="alice", ts=2, body=b"x", payload=b"p"),
    ):
        generic = m.Message.to_wire(msg)
        assert msg.to_wire() == generic
        assert encode_frame(msg.to_wire()) == encode_frame(generic)


@pytest.mark.parametrize(
    "msg",
    [
        m.Deliver(mid=1, sender="alice", ts=2, body=b"x"),
        m.SendDevices(id=1, envelopes=(m.DeviceEnvelope("bob", 1, b"e"),), lists=()),
    ],
)
def test_a_payload_is_left_out_when_there_is_none_and_round_trips_when_there_is(msg):
    """A plain deliver or send_devices is byte-for-byte what it was before payloads;
    one with a payload carries it as `bin` and decodes to the same message."""
    assert "payload" not in msg.to_wire()
    with_payload = dataclasses.replace(msg, payload=b"\x00payload")
    wire = with_payload.to_wire()
    assert wire["payload"] == b"\x00payload"
    if isinstance(msg, m.Deliver):
        back = codec.decode_from_relay(wire, {})
    else:
        back = codec.decode_request(wire)
    assert back == with_payload
    assert codec._from_wire(type(msg), {**msg.to_wire(), "payload": None}, "t") == msg
    with pytest.raises(MalformedFrame, match="payload"):
        codec._from_wire(type(msg), {**msg.to_wire(), "payload": "text"}, "t")
    if isinstance(msg, m.SendDevices):  # the relay's unrolled decoder keeps the same rule
        with pytest.raises(MalformedFrame, match="payload"):
            codec.decode_request({**wire, "payload": "text"})


def test_an_error_carries_device_lists_only_when_it_has_some():
    plain = m.Error(id=1, code="mailbox_full", message="full")
    assert "device_lists" not in plain.to_wire()
    lists = (SignedDeviceList(body=b"\x95body", sig=bytes(64)),)
    mismatch = m.Error(id=2, code="mismatched_devices", message="stale", device_lists=lists)
    assert wire_round_trip(mismatch) == mismatch
    assert wire_round_trip(mismatch).error_code == ErrorCode.MISMATCHED_DEVICES


def test_tokens_never_reach_a_repr():
    assert "s3cret" not in repr(m.Login(id=1, user="a", token="s3cret", device=2))
    assert "s3cret" not in repr(m.LinkJoinOk(id=1, user="a", device=2, token="s3cret", sealed=b""))
