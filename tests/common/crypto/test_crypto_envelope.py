"""Envelopes and Sessions: what a client does, including every way it can go wrong."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.envelope import Envelope, EnvelopeType, Session
from hushwire.common.crypto.x3dh import PrekeySet
from hushwire.common.errors import (
    CryptoError,
    DecryptionError,
    LocalProtocolError,
    MalformedEnvelope,
    ReplayError,
    UnknownPrekey,
)

from .conftest import make_user

NOW = 1_700_000_000_000


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def start(alice, bob, *, with_one_time=True):
    session, env = Session.initiate(
        alice.identity, "alice", bob.bundle(with_one_time=with_one_time), alice.group, NOW, b"hi"
    )
    return session, env


def test_full_conversation(alice, bob, group):
    a, env = start(alice, bob)
    parsed = Envelope.from_bytes(env)
    assert parsed.type is EnvelopeType.INITIAL and parsed.x3dh is not None
    assert (parsed.sender, parsed.recipient, parsed.sent_at_ms) == ("alice", "bob", NOW)
    b, msg, used = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    assert msg.plaintext == b"hi" and msg.sender == "alice" and msg.sent_at_ms == NOW
    assert msg.envelope_id == parsed.envelope_id and len(msg.envelope_id) == 16
    assert used.one_time == bob.one_time[0].id and used.kem is None
    assert b.peer_identity == alice.identity.public()
    reply = b.encrypt(b"hello alice", NOW + 1)
    assert Envelope.from_bytes(reply).type is EnvelopeType.MESSAGE
    assert a.decrypt(reply).plaintext == b"hello alice"
    assert not a.awaiting_reply
    follow = a.encrypt(b"after the reply", NOW + 2)
    assert Envelope.from_bytes(follow).type is EnvelopeType.MESSAGE
    assert b.decrypt(follow).plaintext == b"after the reply"


def test_initiator_keeps_sending_initial_until_answered(alice, bob, group):
    a, first = start(alice, bob)
    second = a.encrypt(b"second", NOW + 1)
    assert Envelope.from_bytes(second).type is EnvelopeType.INITIAL
    # The second arrives first: it alone can start the session.
    b, msg, _ = Session.respond(bob.identity, "bob", bob.prekeys(), second)
    assert msg.plaintext == b"second"
    assert b.decrypt(first).plaintext == b"hi"


def test_x3dh_without_one_time_prekey(alice, bob, group):
    a, env = start(alice, bob, with_one_time=False)
    b, msg, used = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    assert used.one_time is None and msg.plaintext == b"hi"
    assert a.decrypt(b.encrypt(b"ok", NOW)).plaintext == b"ok"


def test_failed_first_decryption_does_not_consume_the_one_time_prekey(alice, bob, group):
    _a, env = start(alice, bob)
    prekeys = bob.prekeys()
    tampered = env[:-1] + bytes([env[-1] ^ 1])  # last byte of the GCM tag
    with pytest.raises(DecryptionError):
        Session.respond(bob.identity, "bob", prekeys, tampered)
    assert bob.one_time[0].id in prekeys.one_time  # still there
    _, msg, used = Session.respond(bob.identity, "bob", prekeys, env)
    assert msg.plaintext == b"hi" and used.one_time == bob.one_time[0].id


def test_wrong_recipient_is_rejected(alice, bob, group):
    carol = make_user("carol", group)
    _, env = start(alice, bob)
    with pytest.raises(DecryptionError):
        Session.respond(carol.identity, "carol", carol.prekeys(), env)
    # Even with Bob's keys, claiming to be carol fails the recipient check.
    with pytest.raises(DecryptionError):
        Session.respond(bob.identity, "carol", bob.prekeys(), env)


def test_recipient_field_is_authenticated(alice, bob, group):
    a, env = start(alice, bob)
    b, _, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    reply = Envelope.from_bytes(b.encrypt(b"x", NOW))
    import dataclasses

    moved = dataclasses.replace(reply, recipient="carol", sender="bob").to_bytes()
    a.my_username = "carol"  # a mis-addressed copy cannot be opened by pretending
    with pytest.raises(DecryptionError):
        a.decrypt(moved)


def test_unknown_signed_prekey(alice, bob, group):
    _, env = start(alice, bob)
    with pytest.raises(UnknownPrekey):
        Session.respond(bob.identity, "bob", PrekeySet.of([], bob.one_time), env)


def test_replayed_envelope_is_rejected(alice, bob, group):
    a, env = start(alice, bob)
    b, _, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    before = b.to_bytes()
    with pytest.raises(ReplayError):
        b.decrypt(env)
    assert b.to_bytes() == before
    reply = b.encrypt(b"r", NOW)
    a.decrypt(reply)
    with pytest.raises(ReplayError):
        a.decrypt(reply)


def test_initial_envelope_of_another_session_is_refused(alice, bob, group):
    _, env1 = start(alice, bob)
    _, env2 = start(alice, bob)
    b, _, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env1)
    with pytest.raises(DecryptionError):
        b.decrypt(env2)


def test_envelope_from_another_sender_is_refused(alice, bob, group):
    carol = make_user("carol", group)
    _, env = start(alice, bob)
    b, _, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    _, from_carol = start(carol, bob)
    with pytest.raises(DecryptionError):
        b.decrypt(from_carol)


def test_session_round_trip(alice, bob, group):
    a, env = start(alice, bob)
    a = Session.from_bytes(a.to_bytes())
    b, _, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    b = Session.from_bytes(b.to_bytes())
    assert a.decrypt(b.encrypt(b"1", NOW)).plaintext == b"1"
    blob = a.to_bytes()
    assert blob[0] == 1 and Session.from_bytes(blob).to_bytes() == blob
    with pytest.raises(CryptoError):
        Session.from_bytes(b"\x07" + blob[1:])
    with pytest.raises(CryptoError):
        Session.from_bytes(blob[:-3])


def test_responder_session_cannot_be_asked_to_respond_to_a_message(alice, bob, group):
    a, env = start(alice, bob)
    b, _, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    a.decrypt(b.encrypt(b"x", NOW))
    message = a.encrypt(b"y", NOW)
    with pytest.raises(DecryptionError):
        Session.respond(bob.identity, "bob", bob.prekeys(), message)


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x90", b"\xc1", b"\x99\x02", b"not msgpack at all", b"\x91\x01"],
)
def test_garbage_is_malformed(blob):
    with pytest.raises(MalformedEnvelope):
        Envelope.from_bytes(blob)


def test_non_canonical_encoding_is_malformed(alice, bob, group):
    _, env = start(alice, bob)
    # 0x01 as a positive fixint -> as uint8 (0xcc 0x01): same value, different bytes.
    assert env[1] == 0x01
    with pytest.raises(MalformedEnvelope):
        Envelope.from_bytes(env[:1] + b"\xcc\x01" + env[2:])


def test_bad_timestamp_refused(alice, bob, group):
    a, _ = start(alice, bob)
    with pytest.raises(ValueError):
        a.encrypt(b"x", -1)


def test_responder_cannot_encrypt_before_it_exists():
    # Bob's ratchet alone cannot send: Session.respond always decrypts first.
    from hushwire.common.crypto.ratchet import RatchetState

    group = X25519
    state = RatchetState.init_bob(bytes(32), group.generate(), b"", group)
    with pytest.raises(LocalProtocolError):
        state.encrypt(b"x")


# --- every single-bit flip ------------------------------------------------------------

_X = {}


def _x25519_pair():
    if not _X:
        _X["alice"], _X["bob"] = make_user("alice", X25519), make_user("bob", X25519)
    return _X["alice"], _X["bob"]


def test_every_bit_flip_of_an_initial_envelope_is_rejected():
    alice, bob = _x25519_pair()
    _, env = start(alice, bob)
    prekeys = bob.prekeys()
    for bit in range(len(env) * 8):
        with pytest.raises(CryptoError):
            Session.respond(bob.identity, "bob", prekeys, flip(env, bit))
    _, msg, _ = Session.respond(bob.identity, "bob", prekeys, env)
    assert msg.plaintext == b"hi"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_bit_flip_of_a_message_is_rejected_and_changes_nothing(data):
    alice, bob = _x25519_pair()
    a, env = start(alice, bob)
    b, _, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    message = b.encrypt(b"payload", NOW)
    bit = data.draw(st.integers(min_value=0, max_value=len(message) * 8 - 1))
    before = a.to_bytes()
    with pytest.raises(CryptoError):
        a.decrypt(flip(message, bit))
    assert a.to_bytes() == before
    assert a.decrypt(message).plaintext == b"payload"


def test_every_bit_flip_of_an_ffdhe_message_is_rejected(alice, bob, group):
    a, env = start(alice, bob)
    b, _, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    message = b.encrypt(b"p", NOW)
    before = a.to_bytes()
    # Every bit outside the ratchet key (whose flips each cost a DH for big groups),
    # plus a sample of bits inside it.
    for bit in range(0, len(message) * 8, 1 if group is X25519 else 5):
        with pytest.raises(CryptoError):
            a.decrypt(flip(message, bit))
    assert a.to_bytes() == before
    assert a.decrypt(message).plaintext == b"p"


# --- version 2: the AD is the received bytes, not a re-encoding -----------------------


def start_v2(alice, bob, *, with_one_time=True):
    bundle = bob.bundle(with_one_time=with_one_time, pq=True)
    return Session.initiate(alice.identity, "alice", bundle, alice.group, NOW, b"hi")


def _bin32(data: bytes) -> bytes:
    return b"\xc6" + len(data).to_bytes(4, "big") + data


def test_version_2_conversation(alice, bob, group):
    a, env = start_v2(alice, bob)
    parsed = Envelope.from_bytes(env)
    assert parsed.version == 2 and env[:2] == b"\x94\x02"
    assert len(parsed.header.salt) == 32
    b, msg, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    assert msg.plaintext == b"hi" and b.ratchet.version == 2
    reply = b.encrypt(b"hello alice", NOW + 1)
    assert a.decrypt(reply).plaintext == b"hello alice"
    restored = Session.from_bytes(a.to_bytes())
    assert restored.ratchet.version == 2
    assert b.decrypt(restored.encrypt(b"after", NOW + 2)).plaintext == b"after"


def test_version_2_accepts_another_encoders_outer_array(alice, bob, group):
    """Widest length forms for the outer array's fields: same head bytes, same message."""
    _, env = start_v2(alice, bob)
    parsed = Envelope.from_bytes(env)
    wide = (
        b"\xdd\x00\x00\x00\x04"  # array32 of 4
        + b"\xcf" + (2).to_bytes(8, "big")  # uint64 2
        + _bin32(parsed.associated_data())
        + _bin32(parsed.header.to_bytes())
        + _bin32(parsed.ciphertext)
    )  # fmt: skip
    _, msg, _ = Session.respond(bob.identity, "bob", bob.prekeys(), wide)
    assert msg.plaintext == b"hi"


def test_version_2_head_is_authenticated_as_received(alice, bob, group):
    """Re-encoding the head (same values, other bytes) fails authentication."""
    _, env = start_v2(alice, bob)
    parsed = Envelope.from_bytes(env)
    head = parsed.associated_data()
    assert head[0] == 0x96 and head[1] == 0x01  # [type=1, ...]
    other = head[:1] + b"\xcc\x01" + head[2:]  # type 1 as uint8: same value
    forged = Envelope.from_bytes(
        b"\x94\x02" + _bin32(other) + _bin32(parsed.header.to_bytes()) + _bin32(parsed.ciphertext)
    )
    assert forged.type is parsed.type and forged.x3dh == parsed.x3dh
    with pytest.raises(DecryptionError):
        Session.respond(bob.identity, "bob", bob.prekeys(), forged)


def test_envelope_versions_do_not_mix(alice, bob, group):
    a1, env1 = start(alice, bob)
    a2, env2 = start_v2(alice, bob)
    b1, _, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env1)
    b2, _, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env2)
    with pytest.raises(DecryptionError):
        a1.decrypt(b2.encrypt(b"x", NOW))
    with pytest.raises(DecryptionError):
        a2.decrypt(b1.encrypt(b"x", NOW))


def test_every_bit_flip_of_a_version_2_initial_envelope_is_rejected():
    alice, bob = _x25519_pair()
    _, env = start_v2(alice, bob)
    prekeys = bob.prekeys()
    for bit in range(len(env) * 8):
        with pytest.raises(CryptoError):
            Session.respond(bob.identity, "bob", prekeys, flip(env, bit))


def test_a_session_restored_from_a_copy_does_not_repeat_key_and_nonce(alice, bob, group):
    """A copied profile: the same persisted session sends twice, different texts. The
    envelopes share the message key slot but not the AES key and nonce (salt)."""
    a, env = start_v2(alice, bob)
    b, _, _ = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    a.decrypt(b.encrypt(b"ready", NOW))
    saved = a.to_bytes()
    first = Envelope.from_bytes(a.encrypt(b"attack at dawn", NOW + 1))
    copy = Session.from_bytes(saved)
    second = Envelope.from_bytes(copy.encrypt(b"retreat at six", NOW + 2))
    h1, h2 = first.header, second.header
    assert (h1.dh, h1.pn, h1.n) == (h2.dh, h2.pn, h2.n) and h1.salt != h2.salt
    stream1 = bytes(p ^ c for p, c in zip(b"attack at dawn", first.ciphertext[:14], strict=True))
    stream2 = bytes(p ^ c for p, c in zip(b"retreat at six", second.ciphertext[:14], strict=True))
    assert stream1 != stream2  # different AES keystreams, so no plaintext XOR leaks
    assert b.decrypt(first.to_bytes()).plaintext == b"attack at dawn"
    with pytest.raises(ReplayError):
        b.decrypt(second.to_bytes())
