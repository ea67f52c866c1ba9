"""Login tokens: generation, salted hashing, constant-time verification.

Why HMAC-SHA256 and not scrypt/argon2: a password-hashing function is slow on purpose
to make guessing a *low-entropy* secret expensive after a db leak. Our tokens are 256
random bits from `secrets`, so there is nothing to guess: a single salted hash is
already out of reach of any brute force, and a slow KDF would only cap the relay's
login rate (scrypt at ~50 ms would allow ~20 logins/s per core; we need 500+/s). The
per-user salt keys the HMAC so two users' hashes never coincide and a leaked db offers
no precomputation target.
"""

from __future__ import annotations

import hmac
import secrets

from Crypto.Hash import HMAC, SHA256

TOKEN_PREFIX = "hw_"  # noqa: S105 - a public prefix, not a secret
TOKEN_BYTES = 32  # 256 bits of randomness; at least 128 are required
SALT_BYTES = 16
HASH_BYTES = 32
# Longer inputs are rejected before hashing: no token we issue is near this long.
MAX_TOKEN_LEN = 256


def new_token() -> str:
    """A fresh random token; the prefix lets secret scanners and humans recognise it."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_BYTES)


def hash_token(token: str, salt: bytes) -> bytes:
    """HMAC-SHA256 keyed by the per-user salt (see module docstring for why not scrypt)."""
    return HMAC.new(salt, token.encode("utf-8"), digestmod=SHA256).digest()


def verify_token(token: str, salt: bytes, expected_hash: bytes) -> bool:
    """Constant-time check of `token` against a stored (salt, hash)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN:
        # Still spend one hash so over-long input does not answer measurably faster.
        hash_token("", salt)
        return False
    return hmac.compare_digest(hash_token(token, salt), expected_hash)


def _dummy() -> tuple[bytes, bytes]:
    salt = new_salt()
    return salt, hash_token(new_token(), salt)


# Verified against when the user does not exist, so an unknown name costs the same hash
# and comparison as a known one (no user enumeration by timing). Nothing can match it:
# its token was discarded at import.
DUMMY: tuple[bytes, bytes] = _dummy()
