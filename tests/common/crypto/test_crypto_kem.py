"""ML-KEM-768 through HPKE export-only, signed KEM prekeys, and PQXDH under attack."""

from __future__ import annotations

import pytest

from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.encoding import pack
from hushwire.common.crypto.envelope import Envelope, Session
from hushwire.common.crypto.identity import KemPrekeyPair, verify_bundle
from hushwire.common.crypto.kem import (
    KEM_CIPHERTEXT_LEN,
    KEM_PUBLIC_LEN,
    KemKeyPair,
    check_public,
    decapsulate,
    encapsulate,
)
from hushwire.common.crypto.x3dh import InitialHeader, initiate, respond
from hushwire.common.errors import CryptoError, DecryptionError, InvalidKey, InvalidSignature
from hushwire.common.keys import KemPrekey, PrekeyBundle

from .conftest import make_user

NOW = 1_700_000_000_000


@pytest.fixture(scope="module")
def users():
    return make_user("alice", X25519), make_user("bob", X25519)


def test_encapsulation_and_decapsulation_agree():
    pair = KemKeyPair.generate()
    assert len(pair.public) == KEM_PUBLIC_LEN and len(pair.private) == 64
    ct, ss = encapsulate(pair.public)
    assert len(ct) == KEM_CIPHERTEXT_LEN and len(ss) == 32
    assert decapsulate(pair.private, ct) == ss
    assert KemKeyPair.from_private(pair.private) == pair
    ct2, ss2 = encapsulate(pair.public)
    assert ct2 != ct and ss2 != ss  # fresh randomness each time


def test_a_changed_ciphertext_decapsulates_to_an_unrelated_secret():
    """ML-KEM's implicit rejection: no error, just a secret the sender never had."""
    pair = KemKeyPair.generate()
    ct, ss = encapsulate(pair.public)
    tampered = bytes([ct[0] ^ 1]) + ct[1:]
    assert decapsulate(pair.private, tampered) != ss


@pytest.mark.parametrize("size", [0, KEM_CIPHERTEXT_LEN - 1, KEM_CIPHERTEXT_LEN + 1])
def test_a_ciphertext_of_the_wrong_size_is_invalid(size):
    with pytest.raises(InvalidKey):
        decapsulate(KemKeyPair.generate().private, bytes(size))


def test_public_keys_are_checked():
    with pytest.raises(InvalidKey):
        check_public(b"\xff" * KEM_PUBLIC_LEN)  # coefficients >= q: FIPS 203 modulus check
    with pytest.raises(InvalidKey):
        check_public(KemKeyPair.generate().public[:-1])


def test_kem_prekey_record_round_trips(users):
    _, bob = users
    for pair in bob.kem:
        assert KemPrekeyPair.from_bytes(pair.to_bytes()) == pair
    with pytest.raises(CryptoError):
        KemPrekeyPair.from_bytes(bob.signed.to_bytes())


# --- PQXDH -----------------------------------------------------------------------------


@pytest.mark.parametrize("last_resort", [False, True])
def test_pqxdh_session_and_which_prekeys_it_used(users, last_resort):
    alice, bob = users
    bundle = bob.bundle(pq=True, kem_last_resort=last_resort)
    a, env = Session.initiate(alice.identity, "alice", bundle, X25519, NOW, b"pq hello")
    header = Envelope.from_bytes(env).x3dh
    assert header is not None and header.pq and header.kem_prekey_id == bundle.kem_prekey.id
    b, msg, used = Session.respond(bob.identity, "bob", bob.prekeys(), env)
    assert msg.plaintext == b"pq hello"
    assert used.kem == bundle.kem_prekey.id and used.kem_last_resort is last_resort
    assert used.one_time_kem == (None if last_resort else bundle.kem_prekey.id)
    assert a.decrypt(b.encrypt(b"back", NOW)).plaintext == b"back"


def test_the_kem_secret_is_part_of_sk(users):
    """Hybrid: with the same DH values, X3DH and PQXDH give different keys."""
    alice, bob = users
    result = initiate(alice.identity, "alice", bob.bundle(pq=True), X25519)
    header = result.header
    stripped = InitialHeader(
        header.identity, header.ephemeral_key, header.signed_prekey_id, header.one_time_prekey_id
    )
    classic = respond(bob.identity, "bob", "alice", stripped, bob.prekeys(), X25519)
    full = respond(bob.identity, "bob", "alice", header, bob.prekeys(), X25519)
    assert full.shared_key == result.shared_key
    assert classic.shared_key != result.shared_key


def test_kem_ciphertext_swapped_by_the_relay_is_rejected_and_burns_nothing(users):
    """The relay re-encapsulates to bob's KEM prekey (so it knows that SS) and swaps it in."""
    alice, bob = users
    bundle = bob.bundle(pq=True)
    _, env = Session.initiate(alice.identity, "alice", bundle, X25519, NOW, b"secret")
    parsed = Envelope.from_bytes(env)
    assert parsed.x3dh is not None
    relay_ct, _relay_ss = encapsulate(bundle.kem_prekey.key)
    swapped_header = InitialHeader(
        parsed.x3dh.identity,
        parsed.x3dh.ephemeral_key,
        parsed.x3dh.signed_prekey_id,
        parsed.x3dh.one_time_prekey_id,
        parsed.x3dh.kem_prekey_id,
        relay_ct,
    )
    # Even if the head were not authenticated, the swapped ciphertext alone changes SK:
    result = respond(bob.identity, "bob", "alice", swapped_header, bob.prekeys(), X25519)
    original = respond(bob.identity, "bob", "alice", parsed.x3dh, bob.prekeys(), X25519)
    assert result.shared_key != original.shared_key
    head = [1, "alice", "bob", parsed.envelope_id, NOW, swapped_header.to_wire()]
    forged = pack([2, pack(head), parsed.header.to_bytes(), parsed.ciphertext])
    prekeys = bob.prekeys()
    with pytest.raises(DecryptionError):
        Session.respond(bob.identity, "bob", prekeys, forged)
    # Nothing was consumed: the genuine envelope still starts the session.
    _, msg, used = Session.respond(bob.identity, "bob", prekeys, env)
    assert msg.plaintext == b"secret" and used.kem == bundle.kem_prekey.id


def test_every_bit_of_a_kem_prekey_signature_matters(users):
    alice, bob = users
    bundle = bob.bundle(pq=True)
    sig = bundle.kem_prekey.sig
    calls = []

    def encapsulate_spy(public: bytes) -> tuple[bytes, bytes]:
        calls.append(public)
        return encapsulate(public)

    for bit in range(len(sig) * 8):
        bad_sig = bytearray(sig)
        bad_sig[bit // 8] ^= 1 << (bit % 8)
        kem = KemPrekey(bundle.kem_prekey.id, bundle.kem_prekey.key, bytes(bad_sig))
        bad = PrekeyBundle(
            "bob", bundle.identity, bundle.signed_prekey, bundle.one_time_prekey, 2, kem
        )
        with pytest.raises(InvalidSignature):
            Session.start(alice.identity, "alice", bad, X25519, encapsulate_to=encapsulate_spy)
    assert calls == []  # rejected before any encapsulation (PQXDH 3.3)


def test_a_kem_prekey_signed_for_another_id_is_rejected(users):
    _, bob = users
    bundle = bob.bundle(pq=True)
    kem = bundle.kem_prekey
    moved = PrekeyBundle(
        "bob",
        bundle.identity,
        bundle.signed_prekey,
        None,
        2,
        KemPrekey(kem.id + 1, kem.key, kem.sig),
    )
    with pytest.raises(InvalidSignature):
        verify_bundle(moved, X25519)


def test_bundle_version_and_kem_prekey_must_agree(users):
    """A relay cannot pass a KEM prekey off in a v1 bundle, or a v2 bundle without one."""
    _, bob = users
    v2 = bob.bundle(pq=True)
    for bad in (
        PrekeyBundle("bob", v2.identity, v2.signed_prekey, None, 2, None),
        PrekeyBundle("bob", v2.identity, v2.signed_prekey, None, 1, v2.kem_prekey),
        PrekeyBundle("bob", v2.identity, v2.signed_prekey, None, 3, v2.kem_prekey),
    ):
        with pytest.raises(InvalidKey):
            verify_bundle(bad, X25519)


def test_downgrade_by_stripping_the_kem_part_of_an_initial_envelope_fails(users):
    """The relay turns a PQXDH start into an X3DH one (v2 envelope without the KEM
    fields, or re-labelled as v1): both are refused, and the one-time keys survive."""
    alice, bob = users
    _, env = Session.initiate(alice.identity, "alice", bob.bundle(pq=True), X25519, NOW, b"x")
    parsed = Envelope.from_bytes(env)
    assert parsed.x3dh is not None
    classic = InitialHeader(
        parsed.x3dh.identity,
        parsed.x3dh.ephemeral_key,
        parsed.x3dh.signed_prekey_id,
        parsed.x3dh.one_time_prekey_id,
    )
    head = [1, "alice", "bob", parsed.envelope_id, NOW, classic.to_wire()]
    as_v2 = pack([2, pack(head), parsed.header.to_bytes(), parsed.ciphertext])
    as_v1 = pack(
        [1, *head[:5], parsed.header.to_bytes()[:-32], classic.to_wire(), parsed.ciphertext]
    )
    prekeys = bob.prekeys()
    for forged in (as_v2, as_v1):
        with pytest.raises(DecryptionError):
            Session.respond(bob.identity, "bob", prekeys, forged)
    _, msg, _ = Session.respond(bob.identity, "bob", prekeys, env)
    assert msg.plaintext == b"x"
