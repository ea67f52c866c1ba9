"""Known-answer tests (RFC 7748, RFC 8032, RFC 5869) and Project Wycheproof, all run
through hushwire's own wrappers so the test covers what the protocol actually calls."""

from __future__ import annotations

import pytest

from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.primitives import (
    aead_open,
    aead_seal,
    ed25519_check_public,
    ed25519_public_from_seed,
    ed25519_sign,
    ed25519_verify,
    hkdf_sha256,
)
from hushwire.common.errors import CryptoError, DecryptionError, InvalidKey, InvalidSignature

from .conftest import wycheproof

h = bytes.fromhex

# RFC 7748 section 6.1.
RFC7748_A_PRIV = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC7748_A_PUB = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
RFC7748_B_PRIV = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
RFC7748_B_PUB = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
RFC7748_SHARED = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_rfc7748_x25519_key_agreement():
    assert X25519.keypair_from_private(RFC7748_A_PRIV).public == RFC7748_A_PUB
    assert X25519.keypair_from_private(RFC7748_B_PRIV).public == RFC7748_B_PUB
    assert X25519.agree(RFC7748_A_PRIV, RFC7748_B_PUB) == RFC7748_SHARED
    assert X25519.agree(RFC7748_B_PRIV, RFC7748_A_PUB) == RFC7748_SHARED


@pytest.mark.parametrize(
    ("seed", "public", "message", "signature"),
    [
        (  # RFC 8032 7.1 TEST 1
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (  # RFC 8032 7.1 TEST 2
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
            "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
    ],
)
def test_rfc8032_ed25519(seed, public, message, signature):
    assert ed25519_public_from_seed(h(seed)) == h(public)
    assert ed25519_sign(h(seed), h(message)) == h(signature)
    ed25519_verify(h(public), h(message), h(signature))
    with pytest.raises(InvalidSignature):
        ed25519_verify(h(public), h(message) + b"x", h(signature))


@pytest.mark.parametrize(
    ("ikm", "salt", "info", "length", "okm"),
    [
        (  # RFC 5869 A.1
            "0b" * 22,
            "000102030405060708090a0b0c",
            "f0f1f2f3f4f5f6f7f8f9",
            42,
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (  # RFC 5869 A.3: empty salt and info
            "0b" * 22,
            "",
            "",
            42,
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ],
)
def test_rfc5869_hkdf(ikm, salt, info, length, okm):
    assert hkdf_sha256(h(ikm), length, salt=h(salt), info=h(info)) == h(okm)


def test_hkdf_none_salt_is_hash_length_zeros():
    assert hkdf_sha256(b"k", 32, salt=None, info=b"i") == hkdf_sha256(
        b"k", 32, salt=bytes(32), info=b"i"
    )


# --- Project Wycheproof ---------------------------------------------------------------

X25519_REJECTED_FLAGS = {"LowOrderPublic", "ZeroSharedSecret", "NonCanonicalPublic"}


def _x25519_cases():
    data = wycheproof("Protocol/wycheproof/x25519_test.json")
    for grp in data["testGroups"]:
        for case in grp["tests"]:
            yield pytest.param(case, id=f"tc{case['tcId']}")


@pytest.mark.parametrize("case", list(_x25519_cases()))
def test_wycheproof_x25519(case):
    """valid: agrees. Low-order, zero-result and non-canonical publics: rejected (our
    documented decision). Other "acceptable" cases (twist points): accepted, since
    X25519 is twist-secure and RFC 7748 requires accepting every canonical u."""
    private, public = h(case["private"]), h(case["public"])
    if case["result"] == "invalid":
        pytest.fail("this file has no invalid cases; re-check the classification")
    if X25519_REJECTED_FLAGS & set(case["flags"]):
        with pytest.raises(InvalidKey):
            X25519.agree(private, public)
        with pytest.raises(InvalidKey):
            X25519.decode_public(public)
    else:
        assert X25519.agree(private, public) == h(case["shared"])


def test_wycheproof_x25519_counts_match_the_notes():
    cases = [
        c
        for g in wycheproof("Protocol/wycheproof/x25519_test.json")["testGroups"]
        for c in g["tests"]
    ]
    assert len(cases) == 518
    assert sum("LowOrderPublic" in c["flags"] for c in cases) == 31
    assert sum("NonCanonicalPublic" in c["flags"] for c in cases) == 19


def _ed25519_cases():
    data = wycheproof("Signature/wycheproof/ed25519_test.json")
    for grp in data["testGroups"]:
        for case in grp["tests"]:
            yield pytest.param(grp["publicKey"]["pk"], case, id=f"tc{case['tcId']}")


@pytest.mark.parametrize(("pk", "case"), list(_ed25519_cases()))
def test_wycheproof_ed25519(pk, case):
    """valid: verifies. invalid: rejected. "acceptable" (small- or mixed-order public
    keys): hushwire rejects the key itself (documented in primitives.ed25519_check_public)."""
    public, msg, sig = h(pk), h(case["msg"]), h(case["sig"])
    if case["result"] == "valid":
        ed25519_verify(public, msg, sig)
    elif case["result"] == "acceptable":
        assert {"SmallOrderPublicKey", "MixedOrderPublicKey"} & set(case["flags"])
        with pytest.raises(InvalidKey):
            ed25519_check_public(public)
        with pytest.raises(InvalidKey):
            ed25519_verify(public, msg, sig)
    else:
        with pytest.raises(CryptoError):
            ed25519_verify(public, msg, sig)


def _gcm_cases():
    data = wycheproof("Cipher/wycheproof/aes_gcm_test.json")
    for grp in data["testGroups"]:
        for case in grp["tests"]:
            yield pytest.param(grp, case, id=f"tc{case['tcId']}")


@pytest.mark.parametrize(("grp", "case"), list(_gcm_cases()))
def test_wycheproof_aes_gcm(grp, case):
    """AES-256 / 96-bit nonce / 128-bit tag (the only parameters hushwire uses): valid
    cases agree both ways, invalid ones fail authentication. Any other key or nonce size
    is refused by the wrapper (documented decision), valid or not."""
    key, iv, aad = h(case["key"]), h(case["iv"]), h(case["aad"])
    msg, sealed = h(case["msg"]), h(case["ct"]) + h(case["tag"])
    if (grp["keySize"], grp["ivSize"], grp["tagSize"]) != (256, 96, 128):
        with pytest.raises(ValueError):
            aead_open(key, iv, sealed, aad)
        with pytest.raises(ValueError):
            aead_seal(key, iv, msg, aad)
    elif case["result"] == "valid":
        assert aead_seal(key, iv, msg, aad) == sealed
        assert aead_open(key, iv, sealed, aad) == msg
    else:
        with pytest.raises(DecryptionError):
            aead_open(key, iv, sealed, aad)


def _hkdf_cases():
    data = wycheproof("Protocol/wycheproof/hkdf_sha256_test.json")
    for grp in data["testGroups"]:
        for case in grp["tests"]:
            yield pytest.param(case, id=f"tc{case['tcId']}")


@pytest.mark.parametrize("case", list(_hkdf_cases()))
def test_wycheproof_hkdf_sha256(case):
    ikm, salt, info = h(case["ikm"]), h(case["salt"]), h(case["info"])
    if case["result"] == "valid":
        assert hkdf_sha256(ikm, case["size"], salt=salt, info=info) == h(case["okm"])
    else:
        with pytest.raises(ValueError):
            hkdf_sha256(ikm, case["size"], salt=salt, info=info)
