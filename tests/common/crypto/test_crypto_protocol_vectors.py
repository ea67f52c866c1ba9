"""The code against tests/vectors/protocol_v1.json and protocol_v2.json, value by value.

Each check recomputes one recorded value from the recorded inputs through hushwire's
own functions, the way a second implementation would check itself; the last test
replays the whole exchange and requires the generator's output to equal the file.
"""

from __future__ import annotations

import json

import pytest

from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.encoding import fields
from hushwire.common.crypto.envelope import Envelope, Session
from hushwire.common.crypto.identity import (
    IdentityKeyPair,
    OneTimePrekeyPair,
    SignedPrekeyPair,
    identity_dh_message,
    signed_prekey_message,
)
from hushwire.common.crypto.primitives import (
    aead_open,
    ed25519_public_from_seed,
    ed25519_sign,
    hkdf_sha256,
)
from hushwire.common.crypto.ratchet import RatchetConfig, message_key_material
from hushwire.common.crypto.safety import pair_safety_number
from hushwire.common.crypto.x3dh import PrekeySet, associated_data, derive_shared_key
from hushwire.common.errors import DecryptionError
from tests.vectors.generate import FILES, Scripted, build, render

h = bytes.fromhex
V1 = json.loads(FILES[1].read_text())
V2 = json.loads(FILES[2].read_text())


def _identity(rec: dict) -> IdentityKeyPair:
    return IdentityKeyPair.generate(
        X25519, Scripted("replay", [rec["sign_seed"], rec["dh_private"]])
    )


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_identity_keys_and_signature(who):
    rec = V1[who]
    assert ed25519_public_from_seed(h(rec["sign_seed"])).hex() == rec["sign_key"]
    assert X25519.keypair_from_private(h(rec["dh_private"])).public.hex() == rec["dh_public"]
    message = identity_dh_message("x25519", h(rec["dh_public"]))
    assert message.hex() == rec["dh_signed_message"]
    assert ed25519_sign(h(rec["sign_seed"]), message).hex() == rec["dh_signature"]


def test_signed_prekey_signature():
    spk = V1["bob"]["signed_prekey"]
    message = signed_prekey_message("x25519", spk["id"], h(spk["public"]))
    assert message.hex() == spk["signed_message"]
    assert ed25519_sign(h(V1["bob"]["sign_seed"]), message).hex() == spk["signature"]


def test_x3dh_outputs_shared_key_and_ad():
    x = V1["x3dh"]
    alice, bob = V1["alice"], V1["bob"]
    ek = h(x["ephemeral_private"])
    spk, opk = h(bob["signed_prekey"]["public"]), h(bob["one_time_prekey"]["public"])
    dh = [
        X25519.agree(h(alice["dh_private"]), spk),
        X25519.agree(ek, h(bob["dh_public"])),
        X25519.agree(ek, spk),
        X25519.agree(ek, opk),
    ]
    assert [d.hex() for d in dh] == [x["dh1"], x["dh2"], x["dh3"], x["dh4"]]
    assert derive_shared_key(X25519, dh).hex() == x["shared_key"]
    # The same through the primitive, as security.md writes it.
    sk = hkdf_sha256(b"\xff" * 32 + b"".join(dh), 32, salt=bytes(32), info=h(x["kdf_info"]))
    assert sk.hex() == x["shared_key"]
    ad = associated_data(_identity(alice).public(), "alice", _identity(bob).public(), "bob")
    assert ad.hex() == x["associated_data"]


@pytest.mark.parametrize("vectors", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_each_message_opens_with_its_recorded_key_nonce_and_ad(vectors, index):
    msg = vectors["messages"][index]
    assert len(h(msg["salt"])) == (32 if vectors["version"] == 2 else 0)
    key, nonce = message_key_material(h(msg["message_key"]), h(msg["salt"]))
    assert (key.hex(), nonce.hex()) == (msg["aes_key"], msg["nonce"])
    x3dh_ad = h(vectors["x3dh"]["associated_data"])
    ad = fields(x3dh_ad, h(msg["ratchet_header"]), h(msg["extra_ad"]))
    assert ad.hex() == msg["message_ad"]
    assert aead_open(key, nonce, h(msg["ciphertext"]), ad).hex() == msg["plaintext"]
    env = Envelope.from_bytes(h(msg["envelope"]))
    assert env.associated_data().hex() == msg["extra_ad"]
    assert env.ciphertext.hex() == msg["ciphertext"]
    flipped = bytearray(h(msg["ciphertext"]))
    flipped[-1] ^= 1
    with pytest.raises(DecryptionError):
        aead_open(key, nonce, bytes(flipped), ad)


@pytest.mark.parametrize("vectors", [V1, V2], ids=["v1", "v2"])
def test_bob_opens_the_first_message_and_seals_the_recorded_reply(vectors):
    bob = vectors["bob"]
    identity = _identity(bob)
    spk_rec, opk_rec = bob["signed_prekey"], bob["one_time_prekey"]
    spk = SignedPrekeyPair.generate(
        identity, X25519, spk_rec["id"], Scripted("replay", [spk_rec["private"]])
    )
    opk = OneTimePrekeyPair(opk_rec["id"], X25519.keypair_from_private(h(opk_rec["private"])))
    assert spk.sig.hex() == spk_rec["signature"]
    rand = Scripted("replay", vectors["randomness"]["bob.session"])
    first, reply = vectors["messages"][0], vectors["messages"][1]
    session, message, used = Session.respond(
        identity, "bob", PrekeySet.of([spk], [opk]), h(first["envelope"]),
        config=RatchetConfig(rand=rand),
    )  # fmt: skip
    assert (message.plaintext.hex(), used) == (first["plaintext"], opk_rec["id"])
    sealed = session.encrypt(h(reply["plaintext"]), reply["sent_at_ms"])
    assert sealed.hex() == reply["envelope"]


def test_safety_number():
    rec = V1["safety_number"]
    number = pair_safety_number(b"alice", h(rec["alice_key"]), b"bob", h(rec["bob_key"]))
    assert number.digits == rec["digits"]
    assert number.scannable.hex() == rec["alice_scannable"]


@pytest.mark.parametrize("version", sorted(FILES))
def test_the_generator_reproduces_the_file(version):
    """The whole exchange replayed through the code equals the file, byte for byte."""
    assert render(build(version)) == FILES[version].read_text()
