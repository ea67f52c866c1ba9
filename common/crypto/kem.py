"""ML-KEM-768 (FIPS 203) for PQXDH, through pycryptodome's public HPKE interface.

pycryptodome's raw ML-KEM encapsulation is private; `Crypto.Protocol.HPKE` in
export-only mode (RFC 9180 with the ML-KEM-768 KEM of draft-ietf-hpke-pq, KEM id
0x0041, HKDF-SHA256, AEAD id 0xFFFF) is its public KEM interface: the sender gets
`enc` (the ML-KEM ciphertext) and both sides export the same secret. PQXDH's SS is
that exported secret:

    SS = HPKE-Export(ctx, exporter_context = b"hushwire/pqxdh/v2/ss", L = 32)
         with ctx = SetupBase(pkR = the KEM prekey, info = b"hushwire/pqxdh/v2/kem")

which is RFC 9180's LabeledExpand(exporter_secret, "sec", ...) over a key schedule whose
only secret input is ML-KEM's shared secret K. SS is therefore a fixed, public,
pseudorandom function of K (HKDF-SHA256 extract then expands, keyed by K): it is
pseudorandom exactly when K is, so using it where Signal's PQXDH uses K keeps the
hybrid argument (SK is secret unless both X25519 and ML-KEM are broken).
docs/security.md, "PQXDH", writes this down for other implementations.

ML-KEM decapsulation never fails for a well-sized ciphertext (implicit rejection): a
swapped or corrupted ciphertext yields an unrelated SS, so the session's first message
fails authentication instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from Crypto.Protocol import HPKE
from Crypto.PublicKey import MLKEM

from hushwire.common.crypto.primitives import OS_RANDOM, Random
from hushwire.common.errors import InvalidKey
from hushwire.common.keys import KEM_PUBLIC_LEN

KEM_NAME: Final = "ml-kem-768"
KEM_CIPHERTEXT_LEN: Final = 1088
KEM_SEED_LEN: Final = 64  # the private key is FIPS 203's seed d || z
SHARED_SECRET_LEN: Final = 32
HPKE_INFO: Final = b"hushwire/pqxdh/v2/kem"
EXPORT_CONTEXT: Final = b"hushwire/pqxdh/v2/ss"

Encapsulate = Callable[[bytes], tuple[bytes, bytes]]
"""`public key -> (ciphertext, SS)`; `encapsulate` below unless a test scripts it."""


@dataclass(frozen=True, slots=True)
class KemKeyPair:
    """An ML-KEM-768 key pair: the 64-byte seed and the 1,184-byte encapsulation key."""

    private: bytes = field(repr=False)
    public: bytes

    @classmethod
    def generate(cls, rand: Random = OS_RANDOM) -> KemKeyPair:
        key = MLKEM.generate(param_set=MLKEM.ML_KEM_768, randfunc=rand)
        return cls(private=key.seed, public=key.ek)

    @classmethod
    def from_private(cls, seed: bytes) -> KemKeyPair:
        if not isinstance(seed, bytes) or len(seed) != KEM_SEED_LEN:
            raise InvalidKey(f"ML-KEM-768 private key must be a {KEM_SEED_LEN}-byte seed")
        key = MLKEM.construct(param_set=MLKEM.ML_KEM_768, seed=seed)
        return cls(private=seed, public=key.ek)


def _public_key(public: bytes) -> MLKEM.MLKEMKey:
    if not isinstance(public, bytes) or len(public) != KEM_PUBLIC_LEN:
        raise InvalidKey(f"ML-KEM-768 public key must be {KEM_PUBLIC_LEN} bytes")
    try:
        return MLKEM.construct(param_set=MLKEM.ML_KEM_768, ek=public)
    except ValueError:
        raise InvalidKey("not an ML-KEM-768 public key (FIPS 203 modulus check)") from None


def check_public(public: bytes) -> None:
    """InvalidKey unless `public` is a valid ML-KEM-768 encapsulation key."""
    _public_key(public)


def encapsulate(public: bytes) -> tuple[bytes, bytes]:
    """(ML-KEM ciphertext, SS) for `public`, with fresh randomness from the OS."""
    ctx = HPKE.new(receiver_key=_public_key(public), aead_id=HPKE.AEAD.EXPORT_ONLY, info=HPKE_INFO)
    return ctx.enc, ctx.export(EXPORT_CONTEXT, SHARED_SECRET_LEN)


def decapsulate(private: bytes, ciphertext: bytes) -> bytes:
    """SS for `ciphertext` under the key with seed `private`.

    InvalidKey for a ciphertext of the wrong size; any well-sized ciphertext gives some
    SS (ML-KEM's implicit rejection), right only if it is the one that was sent.
    """
    if not isinstance(ciphertext, bytes) or len(ciphertext) != KEM_CIPHERTEXT_LEN:
        raise InvalidKey(f"ML-KEM-768 ciphertext must be {KEM_CIPHERTEXT_LEN} bytes")
    key = MLKEM.construct(param_set=MLKEM.ML_KEM_768, seed=private)
    try:
        ctx = HPKE.new(
            receiver_key=key, enc=ciphertext, aead_id=HPKE.AEAD.EXPORT_ONLY, info=HPKE_INFO
        )
    except ValueError:
        raise InvalidKey("ML-KEM-768 decapsulation failed") from None
    return ctx.export(EXPORT_CONTEXT, SHARED_SECRET_LEN)
