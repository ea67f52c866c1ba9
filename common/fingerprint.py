"""The one format in which relay operators and clients compare certificates."""

from __future__ import annotations

import hashlib

FINGERPRINT_LEN = 32  # SHA-256


def cert_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as "AB:CD:..." (what `openssl x509 -fingerprint` shows)."""
    return show_fingerprint(hashlib.sha256(der).digest())


def show_fingerprint(digest: bytes) -> str:
    """A SHA-256 digest in the "AB:CD:..." form."""
    return ":".join(f"{b:02X}" for b in digest)


def fingerprint_digest(text: str) -> bytes:
    """Inverse of `show_fingerprint` (ValueError if it is not one)."""
    digest = bytes.fromhex(text.replace(":", ""))
    if len(digest) != FINGERPRINT_LEN:
        raise ValueError("a certificate fingerprint is 32 bytes (SHA-256)")
    return digest
