"""Safety numbers, computed exactly as libsignal's NumericFingerprintGenerator does.

Per party:  h = SHA-512(0x0000 || key || id || key); then 5199 times h = SHA-512(h || key)
            (5200 iterations in all); display part = the first 30 bytes read as six 5-byte
            big-endian integers, each mod 100000, as five digits.
Pair:       the two 30-digit parts, smaller string first, so both sides see the same 60
            digits (shown as 12 groups of 5).
Scannable:  libsignal's CombinedFingerprints protobuf: version, then the first 32 bytes
            of the local and of the remote hash; a scan matches when the other side's
            local is our remote and vice versa (compared in constant time).

hushwire's `key` is the account's Ed25519 identity key (32 bytes) and `id` the UTF-8
username, so a new identity key or a different user changes the number. Not the device's
identity DH key: every device of an account has its own, bound to the Ed25519 key by the
signed device list and its signed identity record, so one comparison verifies a person
on all their devices (libsignal likewise covers the identity key alone). Without
comparing these, X3DH gives no guarantee about who the peer is (X3DH 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from Crypto.Hash import SHA512

from hushwire.common.crypto.primitives import ct_equal
from hushwire.common.errors import CryptoError
from hushwire.common.keys import IdentityPublic

ITERATIONS: Final = 5200  # libsignal: "5200 > 112 bits"
FINGERPRINT_VERSION: Final = b"\x00\x00"  # libsignal's 2-byte hash-input version
SCANNABLE_VERSION: Final = 1
_FINGERPRINT_LEN: Final = 32  # bytes of each hash in the scannable form


def fingerprint_hash(stable_id: bytes, key: bytes, iterations: int = ITERATIONS) -> bytes:
    """libsignal `get_fingerprint`: iterated SHA-512 over the key and stable identifier."""
    if not 1 < iterations <= 1_000_000:
        raise ValueError("iterations must be in (1, 1000000]")
    digest = SHA512.new(FINGERPRINT_VERSION + key + stable_id + key).digest()
    for _ in range(iterations - 1):
        digest = SHA512.new(digest + key).digest()
    return digest


def _display_part(fingerprint: bytes) -> str:
    # libsignal get_encoded_string: six 5-byte chunks, each mod 100000, zero-padded.
    return "".join(
        f"{int.from_bytes(fingerprint[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5)
    )


def _scannable(version: int, local: bytes, remote: bytes) -> bytes:
    # CombinedFingerprints { 1: version, 2: { 1: local[:32] }, 3: { 1: remote[:32] } }.
    if not 0 <= version < 128:
        raise ValueError("scannable version must fit one varint byte")
    inner = b"\x0a\x20"  # LogicalFingerprint.content, 32 bytes
    return (
        bytes([0x08, version])
        + b"\x12\x22"
        + inner
        + local[:_FINGERPRINT_LEN]
        + b"\x1a\x22"
        + inner
        + remote[:_FINGERPRINT_LEN]
    )


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    """What `/verify` shows: 60 digits (same on both sides) and a scannable byte form."""

    digits: str
    scannable: bytes  # this side's view: our hash first; put it in a QR code

    def groups(self) -> list[str]:
        """The 12 groups of 5 digits, in display order."""
        return [self.digits[i : i + 5] for i in range(0, 60, 5)]

    def __str__(self) -> str:
        groups = self.groups()
        return "\n".join(" ".join(groups[row : row + 4]) for row in range(0, 12, 4))

    def matches_scan(self, scanned: bytes) -> bool:
        """True if `scanned` is the peer's scannable form for the same two identities.

        CryptoError if it is not a scannable fingerprint of this version.
        """
        if not isinstance(scanned, bytes) or len(scanned) != len(self.scannable):
            raise CryptoError("not a scannable safety number")
        if scanned[:2] != self.scannable[:2]:
            raise CryptoError("scanned safety number has another version")
        if scanned[2:6] != self.scannable[2:6] or scanned[38:42] != self.scannable[38:42]:
            raise CryptoError("not a scannable safety number")
        mine_local, mine_remote = self.scannable[6:38], self.scannable[42:74]
        their_local, their_remote = scanned[6:38], scanned[42:74]
        same_1 = ct_equal(their_local, mine_remote)
        same_2 = ct_equal(their_remote, mine_local)
        return same_1 and same_2


def pair_safety_number(
    local_id: bytes,
    local_key: bytes,
    remote_id: bytes,
    remote_key: bytes,
    *,
    iterations: int = ITERATIONS,
    version: int = SCANNABLE_VERSION,
) -> SafetyNumber:
    """libsignal `Fingerprint::new` over raw identifiers and serialised keys."""
    local = fingerprint_hash(local_id, local_key, iterations)
    remote = fingerprint_hash(remote_id, remote_key, iterations)
    parts = sorted([_display_part(local), _display_part(remote)])
    return SafetyNumber(digits=parts[0] + parts[1], scannable=_scannable(version, local, remote))


def safety_number(
    my_username: str,
    my_identity: IdentityPublic,
    peer_username: str,
    peer_identity: IdentityPublic,
) -> SafetyNumber:
    """The safety number for a conversation: identical digits on both sides, and on
    every device of either account."""
    return pair_safety_number(
        my_username.encode(), my_identity.sign_key, peer_username.encode(), peer_identity.sign_key
    )
