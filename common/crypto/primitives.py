"""Thin, typed wrappers over the pycryptodome primitives every other module uses.

One place decides the parameters (HKDF-SHA256, HMAC-SHA256, AES-256-GCM with a 96-bit
nonce and a 128-bit tag, Ed25519 per RFC 8032), so the protocol modules cannot drift
apart and the known-answer tests exercise exactly what the protocol runs.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from Crypto.Cipher import AES
from Crypto.Hash import HMAC, SHA256
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC
from Crypto.Random import get_random_bytes
from Crypto.Signature import eddsa

from hushwire.common.errors import DecryptionError, InvalidKey, InvalidSignature

HASH_LEN = 32  # SHA-256 output length; also the X3DH/HKDF zero-salt length
AEAD_KEY_LEN = 32  # AES-256
AEAD_NONCE_LEN = 12  # 96-bit GCM nonce (NIST SP 800-38D 5.2.1.1 recommended length)
AEAD_TAG_LEN = 16  # full 128-bit tag (Double Ratchet 6.6: never truncate below 64 bits)
ED25519_KEY_LEN = 32
ED25519_SIG_LEN = 64
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493  # L, RFC 8032 5.1

Random = Callable[[int], bytes]
"""Where key generation and the protocol draw randomness: `n -> n random bytes`.

The default everywhere is the OS CSPRNG (`Crypto.Random.get_random_bytes`); tests and the
test-vector generator pass a scripted source so every value is reproducible.
"""
OS_RANDOM: Random = get_random_bytes


def hkdf_sha256(ikm: bytes, length: int, *, salt: bytes | None, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869); `salt=None` means HashLen zero bytes, as RFC 5869 2.2 says.

    Raises ValueError for an output length HKDF cannot produce (over 255 * HashLen).
    """
    if not 0 < length <= 255 * HASH_LEN:
        raise ValueError(f"HKDF-SHA256 cannot produce {length} bytes")
    out = HKDF(ikm, length, salt, SHA256, num_keys=1, context=info)
    if not isinstance(out, bytes):
        raise TypeError("HKDF returned several keys")
    return out


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256, the Double Ratchet's recommended KDF_CK (spec 5.2)."""
    return HMAC.new(key, data, digestmod=SHA256).digest()


def ct_equal(a: bytes, b: bytes) -> bool:
    """Constant-time equality for secrets (MACs, fingerprints, keys)."""
    return hmac.compare_digest(a, b)


def _check_aead_params(key: bytes, nonce: bytes) -> None:
    # Only AES-256 with a 96-bit nonce: other sizes are never produced by hushwire, and
    # accepting them would only widen what a bug could silently fall back to.
    if len(key) != AEAD_KEY_LEN:
        raise ValueError("AES-GCM key must be 32 bytes (AES-256)")
    if len(nonce) != AEAD_NONCE_LEN:
        raise ValueError("AES-GCM nonce must be 12 bytes")


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM encrypt; returns ciphertext || 16-byte tag."""
    _check_aead_params(key, nonce)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=AEAD_TAG_LEN)
    cipher.update(associated_data)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return ciphertext + tag


def aead_open(key: bytes, nonce: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM decrypt of ciphertext || tag; DecryptionError if the tag fails."""
    _check_aead_params(key, nonce)
    if len(sealed) < AEAD_TAG_LEN:
        raise DecryptionError("ciphertext shorter than the GCM tag")
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=AEAD_TAG_LEN)
    cipher.update(associated_data)
    try:
        return cipher.decrypt_and_verify(sealed[:-AEAD_TAG_LEN], sealed[-AEAD_TAG_LEN:])
    except ValueError:
        raise DecryptionError("message authentication failed") from None


def ed25519_generate(rand: Random = OS_RANDOM) -> tuple[bytes, bytes]:
    """A fresh Ed25519 key: (32-byte private seed from `rand`, 32-byte public key)."""
    key = ECC.generate(curve="Ed25519", randfunc=rand)
    return key.seed, key.public_key().export_key(format="raw")


def ed25519_public_from_seed(seed: bytes) -> bytes:
    """The public key of a 32-byte RFC 8032 private seed."""
    try:
        key = eddsa.import_private_key(seed)
    except ValueError:
        raise InvalidKey("Ed25519 private seed must be 32 bytes") from None
    return key.public_key().export_key(format="raw")


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """Pure Ed25519 (RFC 8032 5.1.6) signature by the key with this seed."""
    try:
        key = eddsa.import_private_key(seed)
    except ValueError:
        raise InvalidKey("Ed25519 private seed must be 32 bytes") from None
    return eddsa.new(key, "rfc8032").sign(message)


def ed25519_check_public(public: bytes) -> None:
    """InvalidKey unless `public` is a canonical Ed25519 point of prime order L.

    RFC 8032 5.1.3 decoding, plus two checks it leaves to the application: the bytes
    must re-encode identically (one key, one encoding), and [L]A must be the identity,
    which rejects small-order and mixed-order keys (Wycheproof's "acceptable" cases).
    An honest key (RFC 8032 5.1.5, [s]B) always passes; a torsioned one lets a signature
    verify under more than one key, so an identity key must never be one.
    """
    if not isinstance(public, bytes) or len(public) != ED25519_KEY_LEN:
        raise InvalidKey("Ed25519 public key must be 32 bytes")
    try:
        key = eddsa.import_public_key(public)
    except ValueError:
        raise InvalidKey("not an Ed25519 public key") from None
    point = key.pointQ
    in_subgroup = (point * ED25519_ORDER).is_point_at_infinity()
    if not in_subgroup or (point * 8).is_point_at_infinity():
        raise InvalidKey("Ed25519 public key is not in the prime-order subgroup")
    if key.export_key(format="raw") != public:
        raise InvalidKey("non-canonical Ed25519 public key")


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> None:
    """Raise InvalidSignature unless `signature` is a valid RFC 8032 signature.

    pycryptodome's verifier rejects S >= L (RFC 8032 5.1.7 step 1), so signatures are not
    malleable; a malformed key is InvalidKey, everything else InvalidSignature.
    """
    ed25519_check_public(public)
    if len(signature) != ED25519_SIG_LEN:
        raise InvalidSignature("Ed25519 signature must be 64 bytes")
    verifier = eddsa.new(eddsa.import_public_key(public), "rfc8032")
    try:
        verifier.verify(message, signature)
    except ValueError:
        raise InvalidSignature("signature does not verify") from None
