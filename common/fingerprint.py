"""The one format in which relay operators and clients compare certificates."""

from __future__ import annotations

import hashlib


def cert_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as "AB:CD:..." (what `openssl x509 -fingerprint` shows)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
