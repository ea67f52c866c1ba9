"""Identity keys, signed and one-time prekeys, bundle verification, serialisation."""

from __future__ import annotations

import dataclasses

import pytest

from hushwire.common.crypto.dh import FFDHE3072, X25519
from hushwire.common.crypto.identity import (
    IdentityKeyPair,
    OneTimePrekeyPair,
    SignedPrekeyPair,
    identity_dh_message,
    signed_prekey_message,
    verify_bundle,
    verify_identity,
)
from hushwire.common.errors import CryptoError, InvalidKey, InvalidSignature

from .conftest import make_user


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_bundle_verifies(bob, group):
    verify_bundle(bob.bundle(), group)
    verify_bundle(bob.bundle(with_one_time=False), group)


def test_every_bit_flip_of_the_signed_prekey_signature_is_rejected(bob, group):
    bundle = bob.bundle()
    sig = bundle.signed_prekey.sig
    for bit in range(len(sig) * 8):
        spk = dataclasses.replace(bundle.signed_prekey, sig=_flip(sig, bit))
        with pytest.raises(InvalidSignature):
            verify_bundle(dataclasses.replace(bundle, signed_prekey=spk), group)


def test_every_bit_flip_of_the_identity_dh_signature_is_rejected(bob, group):
    identity = bob.identity.public()
    for bit in range(0, 512, 7):
        bad = dataclasses.replace(identity, dh_sig=_flip(identity.dh_sig, bit))
        with pytest.raises(InvalidSignature):
            verify_identity(bad, group)


def test_substituted_prekey_or_id_is_rejected(bob, group):
    bundle = bob.bundle()
    other = group.generate().public
    with pytest.raises(InvalidSignature):
        verify_bundle(
            dataclasses.replace(
                bundle, signed_prekey=dataclasses.replace(bundle.signed_prekey, key=other)
            ),
            group,
        )
    with pytest.raises(InvalidSignature):
        verify_bundle(
            dataclasses.replace(
                bundle, signed_prekey=dataclasses.replace(bundle.signed_prekey, id=8)
            ),
            group,
        )


def test_identity_dh_key_substitution_is_rejected(bob, group):
    bundle = bob.bundle()
    swapped = dataclasses.replace(bundle.identity, dh_key=group.generate().public)
    with pytest.raises(InvalidSignature):
        verify_bundle(dataclasses.replace(bundle, identity=swapped), group)


def test_signature_from_another_identity_is_rejected(bob, group):
    mallory = make_user("mallory", group)
    bundle = bob.bundle()
    forged = dataclasses.replace(bundle, signed_prekey=mallory.signed.public())
    with pytest.raises(InvalidSignature):
        verify_bundle(forged, group)


def test_signatures_are_domain_separated():
    assert identity_dh_message("x25519", b"k") != signed_prekey_message("x25519", 0, b"k")
    assert identity_dh_message("x25519", b"k") != identity_dh_message("ffdhe3072", b"k")
    assert signed_prekey_message("x25519", 1, b"k") != signed_prekey_message("x25519", 2, b"k")


def test_bundle_for_another_group_is_rejected(bob, group):
    other = FFDHE3072 if group is X25519 else X25519
    with pytest.raises(InvalidKey):
        verify_bundle(bob.bundle(), other)


def test_invalid_one_time_prekey_is_rejected(bob, group):
    bundle = bob.bundle()
    bad = dataclasses.replace(bundle.one_time_prekey, key=b"\x00" * group.public_size)
    with pytest.raises(InvalidKey):
        verify_bundle(dataclasses.replace(bundle, one_time_prekey=bad), group)


def test_unknown_bundle_version_is_rejected(bob, group):
    with pytest.raises(InvalidKey):
        verify_bundle(dataclasses.replace(bob.bundle(), version=2), group)


def test_low_order_ed25519_identity_key_is_rejected(bob, group):
    identity = dataclasses.replace(bob.identity.public(), sign_key=bytes(32))
    with pytest.raises(InvalidKey):
        verify_identity(identity, group)


def test_private_records_round_trip(bob, group):
    identity = IdentityKeyPair.from_bytes(bob.identity.to_bytes())
    assert identity == bob.identity
    assert identity.to_bytes()[0] == 1
    assert SignedPrekeyPair.from_bytes(bob.signed.to_bytes(), group) == bob.signed
    opk = bob.one_time[0]
    assert OneTimePrekeyPair.from_bytes(opk.to_bytes(), group) == opk


def test_private_record_kinds_and_versions_are_checked(bob, group):
    with pytest.raises(CryptoError):
        SignedPrekeyPair.from_bytes(bob.one_time[0].to_bytes(), group)
    with pytest.raises(CryptoError):
        IdentityKeyPair.from_bytes(b"\x02" + bob.identity.to_bytes()[1:])
    with pytest.raises(CryptoError):
        IdentityKeyPair.from_bytes(bob.identity.to_bytes()[:-1])
    with pytest.raises(CryptoError):
        IdentityKeyPair.from_bytes(b"")


def test_prekey_ids_are_bounded(bob, group):
    with pytest.raises(InvalidKey):
        SignedPrekeyPair.generate(bob.identity, group, 2**32)
    with pytest.raises(InvalidKey):
        OneTimePrekeyPair.generate(group, -1)


def test_signed_prekey_must_match_identity_group(bob, group):
    other = FFDHE3072 if group is X25519 else X25519
    with pytest.raises(InvalidKey):
        SignedPrekeyPair.generate(bob.identity, other, 1)
