"""Public key records as the relay stores them and clients fetch them.

Pure data: the crypto core signs and checks them, the relay stores and hands them out
without trusting or interpreting them (the relay's say-so never binds a key to a user;
the Ed25519 signature and the safety number do). `version` is the bundle format: 1 for
X3DH, 2 for PQXDH (adds a signed ML-KEM-768 prekey).
"""

from __future__ import annotations

from dataclasses import dataclass

BUNDLE_VERSION = 1  # X3DH
PQ_BUNDLE_VERSION = 2  # PQXDH: the bundle carries `kem_prekey`
KEM_PUBLIC_LEN = 1184  # an ML-KEM-768 encapsulation key (FIPS 203), what the relay checks


@dataclass(frozen=True, slots=True)
class IdentityPublic:
    """A user's long-term public identity: Ed25519 key, DH key, and the signature."""

    group: str  # DH group name, e.g. "x25519" or "ffdhe3072"
    sign_key: bytes  # Ed25519 public key, 32 bytes
    dh_key: bytes  # identity DH public value, encoded by the group
    dh_sig: bytes  # Ed25519 signature by sign_key over the DH key (see crypto.identity)


@dataclass(frozen=True, slots=True)
class SignedPrekey:
    id: int
    key: bytes
    sig: bytes


@dataclass(frozen=True, slots=True)
class OneTimePrekey:
    id: int
    key: bytes


@dataclass(frozen=True, slots=True)
class KemPrekey:
    """A signed ML-KEM-768 prekey (PQXDH PQSPK or PQOPK): one-time or last-resort."""

    id: int
    key: bytes
    sig: bytes


@dataclass(frozen=True, slots=True)
class PrekeyBundle:
    """What `fetch_bundle` returns: enough for an X3DH (v1) or PQXDH (v2) initiator."""

    user: str
    identity: IdentityPublic
    signed_prekey: SignedPrekey
    one_time_prekey: OneTimePrekey | None
    version: int = BUNDLE_VERSION
    kem_prekey: KemPrekey | None = None  # version 2: one-time if any was left, else last-resort


@dataclass(frozen=True, slots=True)
class SignedDeviceList:
    """An account's device list as it travels: the canonical body and the account
    identity's Ed25519 signature over it (format and checks: common/crypto/devices.py).

    The relay stores and hands it out; only a client that knows the account's identity
    can tell whether it is genuine.
    """

    body: bytes
    sig: bytes
