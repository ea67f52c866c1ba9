"""X3DH: both sides agree, every check happens, nothing is consumed on failure."""

from __future__ import annotations

import dataclasses

import pytest

from hushwire.common.crypto.identity import encode_identity
from hushwire.common.crypto.x3dh import InitialHeader, PrekeySet, initiate, respond
from hushwire.common.errors import InvalidKey, InvalidSignature, UnknownPrekey

from .conftest import make_user


def test_both_sides_derive_the_same_key_and_ad(alice, bob, group):
    start = initiate(alice.identity, "alice", bob.bundle(), group)
    answer = respond(bob.identity, "bob", "alice", start.header, bob.prekeys(), group)
    assert start.shared_key == answer.shared_key
    assert len(start.shared_key) == 32
    assert start.associated_data == answer.associated_data
    assert answer.one_time_prekey_id == bob.one_time[0].id
    assert answer.signed_prekey == bob.signed
    assert start.responder_ratchet_key == bob.signed.dh.public


def test_ad_binds_both_identities_and_usernames(alice, bob, group):
    start = initiate(alice.identity, "alice", bob.bundle(), group)
    ad = start.associated_data
    ik_a, ik_b = encode_identity(alice.identity.public()), encode_identity(bob.identity.public())
    assert ad.startswith(ik_a + ik_b)
    assert ad.endswith(b"\x00\x05alice\x00\x03bob")


def test_without_one_time_prekey(alice, bob, group):
    start = initiate(alice.identity, "alice", bob.bundle(with_one_time=False), group)
    assert start.header.one_time_prekey_id is None
    answer = respond(bob.identity, "bob", "alice", start.header, bob.prekeys(), group)
    assert start.shared_key == answer.shared_key
    assert answer.one_time_prekey_id is None


def test_one_time_prekey_changes_the_key(alice, bob, group):
    with_opk = initiate(alice.identity, "alice", bob.bundle(), group)
    header = dataclasses.replace(with_opk.header, one_time_prekey_id=None)
    answer = respond(bob.identity, "bob", "alice", header, bob.prekeys(), group)
    assert answer.shared_key != with_opk.shared_key


def test_wrong_claimed_username_gives_a_different_ad(alice, bob, group):
    start = initiate(alice.identity, "alice", bob.bundle(), group)
    answer = respond(bob.identity, "bob", "carol", start.header, bob.prekeys(), group)
    assert answer.associated_data != start.associated_data


def test_bad_bundle_signature_stops_before_any_dh(alice, bob, group, monkeypatch):
    bundle = bob.bundle()
    sig = bytearray(bundle.signed_prekey.sig)
    sig[0] ^= 1
    bad = dataclasses.replace(
        bundle, signed_prekey=dataclasses.replace(bundle.signed_prekey, sig=bytes(sig))
    )
    calls = []
    monkeypatch.setattr(type(group), "agree", lambda *a: calls.append(a))
    with pytest.raises(InvalidSignature):
        initiate(alice.identity, "alice", bad, group)
    assert calls == []


def test_unknown_prekeys_are_typed_errors(alice, bob, group):
    start = initiate(alice.identity, "alice", bob.bundle(), group)
    with pytest.raises(UnknownPrekey):
        respond(bob.identity, "bob", "alice", start.header, PrekeySet.of([bob.signed], []), group)
    with pytest.raises(UnknownPrekey):
        respond(bob.identity, "bob", "alice", start.header, PrekeySet.of([], bob.one_time), group)


def test_forged_initiator_identity_is_rejected(alice, bob, group):
    start = initiate(alice.identity, "alice", bob.bundle(), group)
    mallory = make_user("mallory", group)
    forged = dataclasses.replace(start.header.identity, dh_key=mallory.identity.dh.public)
    header = dataclasses.replace(start.header, identity=forged)
    with pytest.raises(InvalidSignature):
        respond(bob.identity, "bob", "alice", header, bob.prekeys(), group)


def test_invalid_ephemeral_key_is_rejected(alice, bob, group):
    start = initiate(alice.identity, "alice", bob.bundle(), group)
    header = dataclasses.replace(start.header, ephemeral_key=b"\x00" * group.public_size)
    with pytest.raises(InvalidKey):
        respond(bob.identity, "bob", "alice", header, bob.prekeys(), group)


def test_initial_header_wire_round_trip(alice, bob, group):
    header = initiate(alice.identity, "alice", bob.bundle(), group).header
    assert InitialHeader.from_wire(header.to_wire()) == header
    with pytest.raises(ValueError):
        InitialHeader.from_wire(header.to_wire()[:3])
    wire = header.to_wire()
    wire[2] = -1
    with pytest.raises(ValueError):
        InitialHeader.from_wire(wire)
