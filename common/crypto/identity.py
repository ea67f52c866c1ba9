"""Identity keys and prekeys: the private halves and the public records they sign.

X3DH 2.1 uses one key (XEdDSA) for both signing and DH. pycryptodome has no XEdDSA, so
hushwire splits it the way DESIGN.md says: an Ed25519 identity signing key, and an
identity DH key in the chosen group that the signing key certifies. Every signature is
over a domain-separated message that also names the group, so a signature made for one
purpose or group can never be replayed as another:

    identity DH key:  b"hushwire/identity-dh/v1"   || fields(group, dh_key)
    signed prekey:    b"hushwire/signed-prekey/v1" || fields(group, u32 id, key)
    KEM prekey (v2):  b"hushwire/kem-prekey/v2"    || fields(b"ml-kem-768", u32 id, key)

(`fields` prefixes each part with its 2-byte length.) `verify_bundle` checks both
signatures before anything else happens (X3DH 3.3) and validates every public value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from hushwire.common.crypto.dh import DHGroup, DHKeyPair, group_by_name
from hushwire.common.crypto.encoding import (
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
    pack,
    unpack_canonical,
)
from hushwire.common.crypto.encoding import fields as encode_fields
from hushwire.common.crypto.kem import KEM_NAME, KemKeyPair, check_public
from hushwire.common.crypto.primitives import (
    OS_RANDOM,
    Random,
    ed25519_check_public,
    ed25519_generate,
    ed25519_public_from_seed,
    ed25519_sign,
    ed25519_verify,
)
from hushwire.common.errors import CryptoError, InvalidKey
from hushwire.common.keys import (
    BUNDLE_VERSION,
    PQ_BUNDLE_VERSION,
    IdentityPublic,
    KemPrekey,
    OneTimePrekey,
    PrekeyBundle,
    SignedPrekey,
)

IDENTITY_DH_CONTEXT: Final = b"hushwire/identity-dh/v1"
SIGNED_PREKEY_CONTEXT: Final = b"hushwire/signed-prekey/v1"
KEM_PREKEY_CONTEXT: Final = b"hushwire/kem-prekey/v2"
MAX_PREKEY_ID: Final = 2**32 - 1

_PRIVATE_VERSION: Final = 1
_KIND_IDENTITY: Final = "identity"
_KIND_SIGNED_PREKEY: Final = "signed_prekey"
_KIND_ONE_TIME_PREKEY: Final = "one_time_prekey"
_KIND_KEM_PREKEY: Final = "kem_prekey"


def identity_dh_message(group_name: str, dh_key: bytes) -> bytes:
    """The bytes the identity signing key signs to certify its DH key."""
    return IDENTITY_DH_CONTEXT + encode_fields(group_name.encode(), dh_key)


def signed_prekey_message(group_name: str, prekey_id: int, key: bytes) -> bytes:
    """The bytes the identity signing key signs for a signed prekey (X3DH 2.5 Sig)."""
    _check_id(prekey_id)
    return SIGNED_PREKEY_CONTEXT + encode_fields(
        group_name.encode(), prekey_id.to_bytes(4, "big"), key
    )


def kem_prekey_message(prekey_id: int, key: bytes) -> bytes:
    """The bytes the identity signing key signs for a KEM prekey (PQXDH Sig(IK, PQPK))."""
    _check_id(prekey_id)
    return KEM_PREKEY_CONTEXT + encode_fields(KEM_NAME.encode(), prekey_id.to_bytes(4, "big"), key)


def encode_identity(identity: IdentityPublic) -> bytes:
    """X3DH 2.2's Encode(IK): the group, the Ed25519 key and the identity DH key.

    Used in the X3DH associated data and in safety numbers; the signature is left out
    because it is implied by the two keys.
    """
    return encode_fields(identity.group.encode(), identity.sign_key, identity.dh_key)


def _check_id(prekey_id: int) -> int:
    if type(prekey_id) is not int or not 0 <= prekey_id <= MAX_PREKEY_ID:
        raise InvalidKey("prekey id must be an integer in [0, 2^32)")
    return prekey_id


def _to_bytes(kind: str, body: list[object]) -> bytes:
    return bytes([_PRIVATE_VERSION]) + pack([kind, *body])


def _from_bytes(data: bytes, kind: str, length: int) -> list[object]:
    """Parse a private record; CryptoError if it is not a version-1 `kind` record."""
    if not isinstance(data, bytes) or not data or data[0] != _PRIVATE_VERSION:
        raise CryptoError(f"unsupported {kind} record version")
    try:
        items = expect_list(unpack_canonical(data[1:]), length + 1)
        if items[0] != kind:
            raise ValueError(f"not a {kind} record")
    except ValueError as exc:
        raise CryptoError(f"malformed {kind} record: {exc}") from None
    return items[1:]


@dataclass(frozen=True, slots=True)
class IdentityKeyPair:
    """A user's long-term identity: Ed25519 signing seed and the certified DH key."""

    group: str
    sign_seed: bytes = field(repr=False)
    sign_key: bytes
    dh: DHKeyPair
    dh_sig: bytes

    @classmethod
    def generate(cls, group: DHGroup, rand: Random = OS_RANDOM) -> IdentityKeyPair:
        """A fresh identity whose DH key lives in `group` (signing seed drawn first)."""
        seed, sign_key = ed25519_generate(rand)
        dh = group.generate(rand)
        sig = ed25519_sign(seed, identity_dh_message(group.name, dh.public))
        return cls(group.name, seed, sign_key, dh, sig)

    def public(self) -> IdentityPublic:
        """The record the relay stores and peers fetch."""
        return IdentityPublic(
            group=self.group, sign_key=self.sign_key, dh_key=self.dh.public, dh_sig=self.dh_sig
        )

    def sign(self, message: bytes) -> bytes:
        return ed25519_sign(self.sign_seed, message)

    def to_bytes(self) -> bytes:
        """Versioned private serialisation (keep it encrypted at rest)."""
        return _to_bytes(_KIND_IDENTITY, [self.group, self.sign_seed, self.dh.private])

    @classmethod
    def from_bytes(cls, data: bytes, group: DHGroup | None = None) -> IdentityKeyPair:
        """Inverse of `to_bytes`; public parts are recomputed and the signature redone.

        Ed25519 signing is deterministic, so the rebuilt `dh_sig` equals the original.
        Pass `group` for a custom finite-field group not yet registered by name.
        """
        group_name, seed, dh_private = _from_bytes(data, _KIND_IDENTITY, 3)
        try:
            group_name = expect_str(group_name)
            seed = expect_bytes(seed, 32)
            dh_private = expect_bytes(dh_private)
        except ValueError as exc:
            raise CryptoError(f"malformed identity record: {exc}") from None
        grp = group if group is not None else group_by_name(group_name)
        if grp.name != group_name:
            raise InvalidKey("identity record is for another group")
        dh = grp.keypair_from_private(dh_private)
        sig = ed25519_sign(seed, identity_dh_message(grp.name, dh.public))
        return cls(grp.name, seed, ed25519_public_from_seed(seed), dh, sig)


@dataclass(frozen=True, slots=True)
class SignedPrekeyPair:
    """A signed prekey (X3DH 2.5 SPK) with its id and signature."""

    id: int
    dh: DHKeyPair
    sig: bytes

    @classmethod
    def generate(
        cls, identity: IdentityKeyPair, group: DHGroup, prekey_id: int, rand: Random = OS_RANDOM
    ) -> SignedPrekeyPair:
        """A fresh prekey, signed by `identity` over the group, id and key."""
        if group.name != identity.group:
            raise InvalidKey("signed prekey group differs from the identity's")
        dh = group.generate(rand)
        sig = identity.sign(signed_prekey_message(group.name, _check_id(prekey_id), dh.public))
        return cls(prekey_id, dh, sig)

    def public(self) -> SignedPrekey:
        return SignedPrekey(id=self.id, key=self.dh.public, sig=self.sig)

    def to_bytes(self) -> bytes:
        return _to_bytes(_KIND_SIGNED_PREKEY, [self.id, self.dh.private, self.sig])

    @classmethod
    def from_bytes(cls, data: bytes, group: DHGroup) -> SignedPrekeyPair:
        prekey_id, private, sig = _from_bytes(data, _KIND_SIGNED_PREKEY, 3)
        try:
            prekey_id = expect_int(prekey_id, 0, MAX_PREKEY_ID)
            private = expect_bytes(private)
            sig = expect_bytes(sig, 64)
        except ValueError as exc:
            raise CryptoError(f"malformed signed prekey record: {exc}") from None
        return cls(prekey_id, group.keypair_from_private(private), sig)


@dataclass(frozen=True, slots=True)
class OneTimePrekeyPair:
    """A one-time prekey (X3DH 2.5 OPK): used for at most one session, then deleted."""

    id: int
    dh: DHKeyPair

    @classmethod
    def generate(
        cls, group: DHGroup, prekey_id: int, rand: Random = OS_RANDOM
    ) -> OneTimePrekeyPair:
        return cls(_check_id(prekey_id), group.generate(rand))

    def public(self) -> OneTimePrekey:
        return OneTimePrekey(id=self.id, key=self.dh.public)

    def to_bytes(self) -> bytes:
        return _to_bytes(_KIND_ONE_TIME_PREKEY, [self.id, self.dh.private])

    @classmethod
    def from_bytes(cls, data: bytes, group: DHGroup) -> OneTimePrekeyPair:
        prekey_id, private = _from_bytes(data, _KIND_ONE_TIME_PREKEY, 2)
        try:
            prekey_id = expect_int(prekey_id, 0, MAX_PREKEY_ID)
            private = expect_bytes(private)
        except ValueError as exc:
            raise CryptoError(f"malformed one-time prekey record: {exc}") from None
        return cls(prekey_id, group.keypair_from_private(private))


@dataclass(frozen=True, slots=True)
class KemPrekeyPair:
    """A signed ML-KEM-768 prekey (PQXDH): one-time, or the last-resort one."""

    id: int
    kem: KemKeyPair
    sig: bytes
    last_resort: bool

    @classmethod
    def generate(
        cls,
        identity: IdentityKeyPair,
        prekey_id: int,
        *,
        last_resort: bool,
        rand: Random = OS_RANDOM,
    ) -> KemPrekeyPair:
        kem = KemKeyPair.generate(rand)
        sig = identity.sign(kem_prekey_message(_check_id(prekey_id), kem.public))
        return cls(prekey_id, kem, sig, last_resort)

    def public(self) -> KemPrekey:
        return KemPrekey(id=self.id, key=self.kem.public, sig=self.sig)

    def to_bytes(self) -> bytes:
        return _to_bytes(_KIND_KEM_PREKEY, [self.id, self.kem.private, self.sig, self.last_resort])

    @classmethod
    def from_bytes(cls, data: bytes) -> KemPrekeyPair:
        prekey_id, private, sig, last_resort = _from_bytes(data, _KIND_KEM_PREKEY, 4)
        try:
            prekey_id = expect_int(prekey_id, 0, MAX_PREKEY_ID)
            private = expect_bytes(private)
            sig = expect_bytes(sig, 64)
            if not isinstance(last_resort, bool):
                raise ValueError("last_resort must be a boolean")
        except ValueError as exc:
            raise CryptoError(f"malformed KEM prekey record: {exc}") from None
        return cls(prekey_id, KemKeyPair.from_private(private), sig, last_resort)


def generate_one_time_prekeys(
    group: DHGroup, first_id: int, count: int, rand: Random = OS_RANDOM
) -> list[OneTimePrekeyPair]:
    """`count` fresh one-time prekeys with consecutive ids starting at `first_id`."""
    _check_id(first_id + count - 1 if count > 0 else first_id)
    return [OneTimePrekeyPair.generate(group, first_id + i, rand) for i in range(count)]


def verify_identity(identity: IdentityPublic, group: DHGroup) -> None:
    """Check an identity record: right group, valid keys, DH key signed by the sign key.

    Raises InvalidKey or InvalidSignature. The signature is checked before the DH value
    is parsed, so no arithmetic happens on an uncertified value.
    """
    if identity.group != group.name:
        raise InvalidKey(f"identity is for group {identity.group!r}, expected {group.name!r}")
    ed25519_check_public(identity.sign_key)
    if not isinstance(identity.dh_key, bytes) or not isinstance(identity.dh_sig, bytes):
        raise InvalidKey("identity fields must be bytes")
    ed25519_verify(
        identity.sign_key, identity_dh_message(group.name, identity.dh_key), identity.dh_sig
    )
    group.check_public(identity.dh_key)


def verify_signed_prekey(identity: IdentityPublic, prekey: SignedPrekey, group: DHGroup) -> None:
    """Check the signed prekey's signature (X3DH 3.3) and then its public value."""
    _check_id(prekey.id)
    if not isinstance(prekey.key, bytes) or not isinstance(prekey.sig, bytes):
        raise InvalidKey("signed prekey fields must be bytes")
    ed25519_verify(
        identity.sign_key, signed_prekey_message(group.name, prekey.id, prekey.key), prekey.sig
    )
    group.check_public(prekey.key)


def verify_kem_prekey(identity: IdentityPublic, prekey: KemPrekey) -> None:
    """Check a KEM prekey's signature (PQXDH 3.3, before any DH or KEM), then the key."""
    _check_id(prekey.id)
    if not isinstance(prekey.key, bytes) or not isinstance(prekey.sig, bytes):
        raise InvalidKey("KEM prekey fields must be bytes")
    ed25519_verify(identity.sign_key, kem_prekey_message(prekey.id, prekey.key), prekey.sig)
    check_public(prekey.key)


def verify_bundle(bundle: PrekeyBundle, group: DHGroup) -> None:
    """Everything an X3DH/PQXDH initiator must check before any DH (X3DH 3.3, 4.5).

    Every signature first (identity DH key, signed prekey, KEM prekey for version 2),
    then every public value. Raises InvalidSignature or InvalidKey (also for an
    unsupported bundle version, or a version that does not match the KEM prekey).
    """
    if bundle.version not in (BUNDLE_VERSION, PQ_BUNDLE_VERSION):
        raise InvalidKey(f"unsupported bundle version {bundle.version}")
    if (bundle.kem_prekey is not None) != (bundle.version == PQ_BUNDLE_VERSION):
        raise InvalidKey("a version 2 bundle, and only that, carries a KEM prekey")
    verify_identity(bundle.identity, group)
    verify_signed_prekey(bundle.identity, bundle.signed_prekey, group)
    if bundle.kem_prekey is not None:
        verify_kem_prekey(bundle.identity, bundle.kem_prekey)
    opk = bundle.one_time_prekey
    if opk is not None:
        _check_id(opk.id)
        if not isinstance(opk.key, bytes):
            raise InvalidKey("one-time prekey must be bytes")
        group.check_public(opk.key)


__all__ = [
    "IDENTITY_DH_CONTEXT",
    "KEM_PREKEY_CONTEXT",
    "SIGNED_PREKEY_CONTEXT",
    "IdentityKeyPair",
    "KemPrekeyPair",
    "OneTimePrekeyPair",
    "SignedPrekeyPair",
    "encode_identity",
    "generate_one_time_prekeys",
    "identity_dh_message",
    "kem_prekey_message",
    "signed_prekey_message",
    "verify_bundle",
    "verify_identity",
    "verify_kem_prekey",
    "verify_signed_prekey",
]
