"""Double Ratchet: spec behaviour, failure atomicity, limits, persistence, security."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hushwire.common.crypto.dh import FFDHE3072, X25519
from hushwire.common.crypto.ratchet import (
    RatchetConfig,
    RatchetHeader,
    RatchetState,
    kdf_ck,
    kdf_rk,
    message_key_material,
)
from hushwire.common.errors import (
    CryptoError,
    DecryptionError,
    InvalidKey,
    LocalProtocolError,
    ReplayError,
    TooManySkipped,
)

DATA = Path(__file__).parent / "data"


def pair(group, config=None):
    """Alice and Bob as X3DH would leave them (random SK; Bob's SPK as ratchet key)."""
    sk, ad = secrets.token_bytes(32), b"associated data"
    spk = group.generate()
    alice = RatchetState.init_alice(sk, spk.public, ad, group, config)
    bob = RatchetState.init_bob(sk, spk, ad, group, config)
    return alice, bob


def talk(sender, receiver, text: bytes) -> bytes:
    header, ct = sender.encrypt(text)
    return receiver.decrypt(header, ct)


def test_kdf_ck_uses_the_spec_constants():
    import hmac as std_hmac
    from hashlib import sha256

    ck = bytes(range(32))
    next_ck, mk = kdf_ck(ck)
    assert mk == std_hmac.new(ck, b"\x01", sha256).digest()
    assert next_ck == std_hmac.new(ck, b"\x02", sha256).digest()


def test_kdf_rk_splits_64_bytes():
    rk, ck = kdf_rk(bytes(32), b"dh")
    assert len(rk) == len(ck) == 32 and rk != ck


def test_conversation_both_ways(group):
    alice, bob = pair(group)
    assert talk(alice, bob, b"hello") == b"hello"
    assert talk(bob, alice, b"hi") == b"hi"
    for i in range(3):
        assert talk(alice, bob, b"a%d" % i) == b"a%d" % i
        assert talk(bob, alice, b"b%d" % i) == b"b%d" % i


def test_responder_cannot_send_first(group):
    _, bob = pair(group)
    assert not bob.can_send
    with pytest.raises(LocalProtocolError):
        bob.encrypt(b"too early")


def test_responder_rerandomises_before_sending(group):
    # X3DH 4.3: Bob's first sending key pair is fresh, never his signed prekey.
    alice, bob = pair(group)
    spk_public = bob.dhs.public
    talk(alice, bob, b"x")
    header, _ = bob.encrypt(b"y")
    assert header.dh != spk_public


def test_out_of_order_and_lost_messages(group):
    alice, bob = pair(group)
    sent = [alice.encrypt(b"m%d" % i) for i in range(6)]
    for i in (3, 0, 5, 1):
        assert bob.decrypt(*sent[i]) == b"m%d" % i
    assert len(bob.skipped) == 2  # 2 and 4 still decryptable
    assert bob.decrypt(*sent[4]) == b"m4"


def test_skipped_keys_survive_a_ratchet_step(group):
    alice, bob = pair(group)
    early = [alice.encrypt(b"e%d" % i) for i in range(3)]
    bob.decrypt(*early[0])
    talk(bob, alice, b"reply")
    late = alice.encrypt(b"late")
    assert bob.decrypt(*late) == b"late"
    assert bob.decrypt(*early[2]) == b"e2"
    assert bob.decrypt(*early[1]) == b"e1"


def test_replays_are_rejected_and_change_nothing(group):
    alice, bob = pair(group)
    first = alice.encrypt(b"one")
    second = alice.encrypt(b"two")
    bob.decrypt(*first)
    bob.decrypt(*second)
    snapshot = bob.to_bytes()
    for message in (first, second):
        with pytest.raises(ReplayError):
            bob.decrypt(*message)
    assert bob.to_bytes() == snapshot
    # A replay from an earlier chain after a ratchet step is also named as such.
    talk(bob, alice, b"r")
    talk(alice, bob, b"new chain")
    with pytest.raises(ReplayError):
        bob.decrypt(*first)


def test_tampering_is_rejected_and_leaves_state_unchanged(group):
    alice, bob = pair(group)
    header, ct = alice.encrypt(b"secret")
    snapshot = bob.to_bytes()
    tampered = bytearray(ct)
    tampered[0] ^= 1
    with pytest.raises(DecryptionError):
        bob.decrypt(header, bytes(tampered))
    with pytest.raises(DecryptionError):
        bob.decrypt(RatchetHeader(header.dh, header.pn, header.n + 1, header.salt), ct)
    with pytest.raises(DecryptionError):
        bob.decrypt(header, ct, b"other extra ad")
    assert bob.to_bytes() == snapshot
    assert bob.decrypt(header, ct) == b"secret"


def test_invalid_ratchet_key_is_rejected_without_change(group):
    alice, bob = pair(group)
    _, ct = alice.encrypt(b"x")
    snapshot = bob.to_bytes()
    with pytest.raises(InvalidKey):
        bob.decrypt(RatchetHeader(b"\x00" * group.public_size, 0, 0, bytes(32)), ct)
    assert bob.to_bytes() == snapshot


def test_max_skip_is_enforced_per_chain():
    config = RatchetConfig(max_skip=5, max_skipped_keys=100)
    alice, bob = pair(X25519, config)
    sent = [alice.encrypt(b"%d" % i) for i in range(8)]
    snapshot = bob.to_bytes()
    with pytest.raises(TooManySkipped):
        bob.decrypt(*sent[6])  # needs 6 skipped keys
    assert bob.to_bytes() == snapshot
    assert bob.decrypt(*sent[5]) == b"5"  # exactly max_skip is fine


def test_huge_counter_in_a_forged_header_is_refused_cheaply():
    alice, bob = pair(X25519)
    header, ct = alice.encrypt(b"x")
    with pytest.raises(TooManySkipped):
        bob.decrypt(RatchetHeader(header.dh, 2**32 - 1, 2**32 - 1, header.salt), ct)
    assert bob.decrypt(header, ct) == b"x"


def test_skipped_store_evicts_oldest_keys():
    config = RatchetConfig(max_skip=10, max_skipped_keys=4)
    alice, bob = pair(X25519, config)
    sent = [alice.encrypt(b"%d" % i) for i in range(8)]
    bob.decrypt(*sent[7])  # skips 0..6: keeps only the newest four (3..6)
    assert len(bob.skipped) == 4
    assert bob.decrypt(*sent[6]) == b"6"
    assert bob.decrypt(*sent[3]) == b"3"
    with pytest.raises(ReplayError):
        bob.decrypt(*sent[0])


def test_forward_secrecy(group):
    """A state captured later cannot decrypt earlier messages."""
    alice, bob = pair(group)
    old = [alice.encrypt(b"old %d" % i) for i in range(3)]
    for message in old:
        bob.decrypt(*message)
    talk(bob, alice, b"r")
    talk(alice, bob, b"n")
    stolen = RatchetState.from_bytes(bob.to_bytes())
    for message in old:
        with pytest.raises(DecryptionError):
            stolen.decrypt(*message)
    assert b"old" not in stolen.to_bytes()


def test_post_compromise_security(group):
    """After a round trip of fresh ratchet keys, a stolen state decrypts nothing new."""
    alice, bob = pair(group)
    talk(alice, bob, b"1")
    talk(bob, alice, b"2")
    stolen = bob.copy()  # Eve copies Bob's whole state
    # Before healing, the theft is real: Eve reads Alice's next message.
    header, ct = alice.encrypt(b"still exposed")
    assert stolen.decrypt(header, ct) == b"still exposed"
    assert bob.decrypt(header, ct) == b"still exposed"
    talk(bob, alice, b"3")  # Bob's fresh ratchet key reaches Alice
    header, ct = alice.encrypt(b"healed")  # ...and Alice answers with her own fresh one
    with pytest.raises(DecryptionError):
        stolen.decrypt(header, ct)
    assert bob.decrypt(header, ct) == b"healed"


def test_state_round_trip_is_exact(group):
    alice, bob = pair(group)
    sent = [alice.encrypt(b"%d" % i) for i in range(4)]
    bob.decrypt(*sent[3])
    talk(bob, alice, b"x")
    for state in (alice, bob):
        blob = state.to_bytes()
        assert blob[0] == 2  # the message format of new sessions
        restored = RatchetState.from_bytes(blob)
        assert restored.to_bytes() == blob
        assert restored == state
    assert RatchetState.from_bytes(bob.to_bytes()).decrypt(*sent[1]) == b"1"


def test_version_1_state_stays_loadable():
    """A state written by the first release (data/ratchet_v1.json) still works."""
    fixture = json.loads((DATA / "ratchet_v1.json").read_text())
    blob = bytes.fromhex(fixture["bob_state"])
    bob = RatchetState.from_bytes(blob)
    assert bob.to_bytes() == blob
    header = RatchetHeader.from_bytes(bytes.fromhex(fixture["header"]))
    assert bob.decrypt(header, bytes.fromhex(fixture["ciphertext"])) == b"written by v1"


@pytest.mark.parametrize(
    "blob", [b"", b"\x00", b"\x02\x90", b"\x01", b"\x01\x93\x01\x02\x03", b"\x01\xc1"]
)
def test_malformed_states_are_rejected(blob):
    with pytest.raises(CryptoError):
        RatchetState.from_bytes(blob)


def test_state_of_a_disallowed_group_is_rejected():
    alice, _ = pair(FFDHE3072)
    with pytest.raises(CryptoError):
        RatchetState.from_bytes(alice.to_bytes(), RatchetConfig(groups=(X25519,)))


@pytest.mark.parametrize("version", [1, 2])
def test_header_encoding_is_strict(version):
    header = RatchetHeader(b"k" * 32, 3, 4, b"s" * (32 if version == 2 else 0))
    assert RatchetHeader.from_bytes(header.to_bytes(), version) == header
    for bad in (header.to_bytes()[:-1], header.to_bytes() + b"\x00", b""):
        with pytest.raises(ValueError):
            RatchetHeader.from_bytes(bad, version)


def test_a_header_of_the_other_message_format_is_rejected_without_change():
    alice, bob = pair(X25519)
    header, ct = alice.encrypt(b"x")
    snapshot = bob.to_bytes()
    with pytest.raises(DecryptionError):
        bob.decrypt(RatchetHeader(header.dh, header.pn, header.n), ct)  # salt stripped
    assert bob.to_bytes() == snapshot
    assert bob.decrypt(header, ct) == b"x"


# --- rollback: a restored state must not repeat key and nonce (Double Ratchet 5.2) ---


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _sealed_key_nonce(state: RatchetState, plaintext: bytes):
    """Encrypt on `state`, then rebuild the AES key and nonce it used from its chain key."""
    assert state.cks is not None
    _, mk = kdf_ck(state.cks)
    header, ct = state.encrypt(plaintext)
    return header, ct, message_key_material(mk, header.salt)


def test_a_rolled_back_state_no_longer_repeats_key_and_nonce():
    """Snapshot, send, restore the snapshot (a backup, a VM snapshot), send another text:
    the message key repeats, but the AES key and nonce do not, so GCM is not broken."""
    alice, bob = pair(X25519)
    talk(alice, bob, b"warm up")
    snapshot = alice.to_bytes()
    h1, ct1, (key1, nonce1) = _sealed_key_nonce(alice, b"attack at dawn")
    rolled_back = RatchetState.from_bytes(snapshot)
    h2, ct2, (key2, nonce2) = _sealed_key_nonce(rolled_back, b"retreat at six")
    assert (h1.dh, h1.pn, h1.n) == (h2.dh, h2.pn, h2.n)  # the same message key slot
    assert h1.salt != h2.salt
    assert key1 != key2 and nonce1 != nonce2
    # The attack this stops: equal key and nonce make the keystreams equal, so the
    # XOR of the ciphertexts would be the XOR of the plaintexts.
    assert _xor(ct1[:14], ct2[:14]) != _xor(b"attack at dawn", b"retreat at six")
    # The receiver opens the first; the second reuses its message key: a replay.
    assert bob.decrypt(h1, ct1) == b"attack at dawn"
    with pytest.raises(ReplayError):
        bob.decrypt(h2, ct2)


def test_version_1_states_keep_the_old_derivation_and_do_repeat_on_rollback():
    """Why version 2 exists: the same rollback on a version-1 state repeats key and nonce."""
    sk, spk = secrets.token_bytes(32), X25519.generate()
    alice = RatchetState.init_alice(sk, spk.public, b"ad", X25519, version=1)
    bob = RatchetState.init_bob(sk, spk, b"ad", X25519, version=1)
    snapshot = alice.to_bytes()
    assert snapshot[0] == 1
    h1, ct1, (key1, nonce1) = _sealed_key_nonce(alice, b"attack at dawn")
    h2, ct2, (key2, nonce2) = _sealed_key_nonce(
        RatchetState.from_bytes(snapshot), b"retreat at six"
    )
    assert h1 == h2 and (key1, nonce1) == (key2, nonce2)
    assert _xor(ct1[:14], ct2[:14]) == _xor(b"attack at dawn", b"retreat at six")
    assert bob.decrypt(h1, ct1) == b"attack at dawn"


# --- Hypothesis: arbitrary interleavings ----------------------------------------------

actions = st.lists(
    st.tuples(
        st.sampled_from(["send_a", "send_b", "deliver", "drop", "replay", "restore"]),
        st.integers(min_value=0, max_value=1000),
    ),
    min_size=1,
    max_size=40,
)


def run_conversation(group, plan):
    """Send, deliver, drop, reorder, replay and restore; every delivered message must
    decrypt to what was sent, every replay must fail and change nothing."""
    config = RatchetConfig(max_skip=1000)
    states = dict(zip("ab", pair(group, config), strict=True))
    in_flight: list[tuple[str, bytes, RatchetHeader, bytes]] = []  # (to, text, h, ct)
    delivered: list[tuple[str, RatchetHeader, bytes]] = []
    counter = 0
    # Alice always opens (Bob cannot send first).
    plan = [("send_a", 0), *plan]
    for action, pick in plan:
        if action in ("send_a", "send_b"):
            sender, receiver = ("a", "b") if action == "send_a" else ("b", "a")
            if not states[sender].can_send:
                continue
            counter += 1
            text = b"%s-%d" % (sender.encode(), counter)
            header, ct = states[sender].encrypt(text)
            in_flight.append((receiver, text, header, ct))
        elif action in ("deliver", "drop") and in_flight:
            receiver, text, header, ct = in_flight.pop(pick % len(in_flight))
            if action == "deliver":
                assert states[receiver].decrypt(header, ct) == text
                delivered.append((receiver, header, ct))
        elif action == "replay" and delivered:
            receiver, header, ct = delivered[pick % len(delivered)]
            before = states[receiver].to_bytes()
            with pytest.raises(DecryptionError):
                states[receiver].decrypt(header, ct)
            assert states[receiver].to_bytes() == before
        elif action == "restore":
            who = "ab"[pick % 2]
            blob = states[who].to_bytes()
            states[who] = RatchetState.from_bytes(blob, config)
            assert states[who].to_bytes() == blob
    for receiver, text, header, ct in in_flight:  # late delivery of everything left
        assert states[receiver].decrypt(header, ct) == text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=actions)
def test_any_interleaving_x25519(plan):
    run_conversation(X25519, plan)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=actions)
def test_any_interleaving_ffdhe3072(plan):
    run_conversation(FFDHE3072, plan)
