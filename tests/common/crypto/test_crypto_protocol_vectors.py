"""The code against tests/vectors/protocol_v1.json and protocol_v2.json, value by value.

Each check recomputes one recorded value from the recorded inputs through hushwire's
own functions, the way a second implementation would check itself; the last test
replays the whole exchange and requires the generator's output to equal the file.
"""

from __future__ import annotations

import json

import pytest
from Crypto.Hash import HMAC, SHA256
from Crypto.PublicKey import MLKEM

from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.encoding import fields
from hushwire.common.crypto.envelope import Envelope, Session
from hushwire.common.crypto.identity import (
    IdentityKeyPair,
    KemPrekeyPair,
    OneTimePrekeyPair,
    SignedPrekeyPair,
    identity_dh_message,
    kem_prekey_message,
    signed_prekey_message,
)
from hushwire.common.crypto.kem import KemKeyPair, decapsulate
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


@pytest.mark.parametrize("vectors", [V1, V2], ids=["v1", "v2"])
def test_x3dh_outputs_shared_key_and_ad(vectors):
    x = vectors["x3dh"]
    alice, bob = vectors["alice"], vectors["bob"]
    ek = h(x["ephemeral_private"])
    spk, opk = h(bob["signed_prekey"]["public"]), h(bob["one_time_prekey"]["public"])
    dh = [
        X25519.agree(h(alice["dh_private"]), spk),
        X25519.agree(ek, h(bob["dh_public"])),
        X25519.agree(ek, spk),
        X25519.agree(ek, opk),
    ]
    assert [d.hex() for d in dh] == [x["dh1"], x["dh2"], x["dh3"], x["dh4"]]
    ss = h(vectors["kem"]["ss"]) if vectors["version"] == 2 else None
    assert derive_shared_key(X25519, dh, ss).hex() == x["shared_key"]
    # The same through the primitive, as security.md writes it.
    ikm = b"\xff" * 32 + b"".join(dh) + (ss or b"")
    sk = hkdf_sha256(ikm, 32, salt=bytes(32), info=h(x["kdf_info"]))
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
    kem = []
    if "kem_prekey" in bob:
        rec = bob["kem_prekey"]
        pair = KemKeyPair.from_private(h(rec["private_seed"]))
        kem = [KemPrekeyPair(rec["id"], pair, h(rec["signature"]), rec["last_resort"])]
    rand = Scripted("replay", vectors["randomness"]["bob.session"])
    first, reply = vectors["messages"][0], vectors["messages"][1]
    session, message, used = Session.respond(
        identity, "bob", PrekeySet.of([spk], [opk], kem), h(first["envelope"]),
        config=RatchetConfig(rand=rand),
    )  # fmt: skip
    assert (message.plaintext.hex(), used.one_time) == (first["plaintext"], opk_rec["id"])
    assert used.kem == (kem[0].id if kem else None)
    sealed = session.encrypt(h(reply["plaintext"]), reply["sent_at_ms"])
    assert sealed.hex() == reply["envelope"]


def test_kem_prekey_and_its_signature():
    rec = V2["bob"]["kem_prekey"]
    pair = KemKeyPair.from_private(h(rec["private_seed"]))
    assert pair.public.hex() == rec["public"]
    assert pair.private == Scripted("x", V2["randomness"]["bob.kem_prekey"])(64)
    message = kem_prekey_message(rec["id"], pair.public)
    assert message.hex() == rec["signed_message"]
    assert ed25519_sign(h(V2["bob"]["sign_seed"]), message).hex() == rec["signature"]


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes, suite: bytes) -> bytes:
    return HMAC.new(salt, b"HPKE-v1" + suite + label + ikm, SHA256).digest()


def _labeled_expand(prk: bytes, label: bytes, info: bytes, length: int, suite: bytes) -> bytes:
    labeled = length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info
    return HMAC.new(prk, labeled + b"\x01", SHA256).digest()[:length]  # length <= 32


def test_ss_is_the_hpke_export_of_the_ml_kem_secret():
    """security.md, PQXDH: SS from ML-KEM's K by RFC 9180's export-only key schedule,
    written out here independently of pycryptodome's HPKE module."""
    kem = V2["kem"]
    seed = h(V2["bob"]["kem_prekey"]["private_seed"])
    assert decapsulate(seed, h(kem["ciphertext"])).hex() == kem["ss"]
    suite = b"HPKE" + (0x0041).to_bytes(2, "big") + (1).to_bytes(2, "big") + b"\xff\xff"
    context = (
        b"\x00"
        + _labeled_extract(b"", b"psk_id_hash", b"", suite)
        + _labeled_extract(b"", b"info_hash", h(kem["hpke_info"]), suite)
    )
    secret = _labeled_extract(h(kem["ml_kem_shared_secret"]), b"secret", b"", suite)
    exporter = _labeled_expand(secret, b"exp", context, 32, suite)
    ss = _labeled_expand(exporter, b"sec", h(kem["hpke_exporter_context"]), 32, suite)
    assert ss.hex() == kem["ss"]


def test_the_ciphertext_is_ml_kem_encaps_with_the_recorded_coins():
    """FIPS 203 ML-KEM.Encaps with m fixed: pycryptodome's only way to take m is private."""
    kem = V2["kem"]
    public = MLKEM.construct(param_set=MLKEM.ML_KEM_768, ek=h(V2["bob"]["kem_prekey"]["public"]))
    raw, ciphertext = public._encaps(h(kem["encapsulation_coins"]))
    assert (raw.hex(), ciphertext.hex()) == (kem["ml_kem_shared_secret"], kem["ciphertext"])


def test_safety_number():
    rec = V1["safety_number"]
    number = pair_safety_number(b"alice", h(rec["alice_key"]), b"bob", h(rec["bob_key"]))
    assert number.digits == rec["digits"]
    assert number.scannable.hex() == rec["alice_scannable"]


@pytest.mark.parametrize("version", sorted(FILES))
def test_the_generator_reproduces_the_file(version):
    """The whole exchange replayed through the code equals the file, byte for byte."""
    assert render(build(version)) == FILES[version].read_text()
