"""X3DH (Signal, rev. 1) and PQXDH (Signal, rev. 3) key agreement, sans I/O.

    DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)
    DH4 = DH(EK_A, OPK_B)   only when the bundle carried a one-time prekey
    X3DH (bundle version 1):
    SK  = HKDF-SHA256(ikm = F || DH1 || DH2 || DH3 [|| DH4],
                      salt = 32 zero bytes, info = b"hushwire/x3dh/v1/" + group name)
    PQXDH (bundle version 2): (CT, SS) = encapsulate to the bundle's KEM prekey (kem.py)
    SK  = HKDF-SHA256(ikm = F || DH1 || DH2 || DH3 [|| DH4] || SS, salt = 32 zero bytes,
                      info = b"hushwire/pqxdh/v2/" + group name + b"/ml-kem-768")
    AD  = Encode(IK_A) || Encode(IK_B) || fields(username_A, username_B)

PQXDH's initial message also names the KEM prekey and carries CT; both travel in the
initial header, which every initial envelope authenticates as AD.

IK here is the identity DH key certified by the Ed25519 key (see identity.py), and
Encode(IK) covers the group, the Ed25519 key and the DH key. The usernames in AD are
X3DH 4.8's defence against unknown key-share attacks.

The responder never deletes anything itself: `respond` returns which one-time prekey
was used, and the caller deletes it only after the first message has decrypted, so a
forged or corrupted initial message cannot burn a one-time key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from hushwire.common.crypto.dh import DHGroup
from hushwire.common.crypto.encoding import (
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
)
from hushwire.common.crypto.encoding import fields as encode_fields
from hushwire.common.crypto.identity import (
    MAX_PREKEY_ID,
    IdentityKeyPair,
    KemPrekeyPair,
    OneTimePrekeyPair,
    SignedPrekeyPair,
    encode_identity,
    verify_bundle,
    verify_identity,
)
from hushwire.common.crypto.kem import (
    KEM_CIPHERTEXT_LEN,
    KEM_NAME,
    Encapsulate,
    decapsulate,
    encapsulate,
)
from hushwire.common.crypto.primitives import HASH_LEN, OS_RANDOM, Random, hkdf_sha256
from hushwire.common.errors import InvalidKey, UnknownPrekey
from hushwire.common.keys import PQ_BUNDLE_VERSION, IdentityPublic, PrekeyBundle

X3DH_INFO_PREFIX: Final = b"hushwire/x3dh/v1/"
PQXDH_INFO_PREFIX: Final = b"hushwire/pqxdh/v2/"
SHARED_KEY_LEN: Final = 32  # X3DH 2.2: KDF(KM) is 32 bytes


def x3dh_info(group: DHGroup) -> bytes:
    """X3DH 2.1's info: an application string; the group name separates groups."""
    return X3DH_INFO_PREFIX + group.name.encode()


def pqxdh_info(group: DHGroup) -> bytes:
    """PQXDH 2.1's info names the protocol, the curve and the KEM (as Signal's does)."""
    return PQXDH_INFO_PREFIX + group.name.encode() + b"/" + KEM_NAME.encode()


def associated_data(
    initiator: IdentityPublic, initiator_user: str, responder: IdentityPublic, responder_user: str
) -> bytes:
    """X3DH 3.3 AD = Encode(IK_A) || Encode(IK_B), plus both usernames (X3DH 4.8)."""
    return (
        encode_identity(initiator)
        + encode_identity(responder)
        + encode_fields(initiator_user.encode(), responder_user.encode())
    )


def derive_shared_key(
    group: DHGroup, dh_outputs: list[bytes], kem_secret: bytes | None = None
) -> bytes:
    """X3DH 2.2 / PQXDH 2.2: SK = HKDF(ikm = F || DH1 || ... [|| SS], zero salt, info)."""
    ikm = group.kdf_prefix + b"".join(dh_outputs)
    if kem_secret is None:
        return hkdf_sha256(ikm, SHARED_KEY_LEN, salt=bytes(HASH_LEN), info=x3dh_info(group))
    return hkdf_sha256(
        ikm + kem_secret, SHARED_KEY_LEN, salt=bytes(HASH_LEN), info=pqxdh_info(group)
    )


@dataclass(frozen=True, slots=True)
class InitialHeader:
    """What the initiator's first messages carry so the responder can run X3DH (3.3)."""

    identity: IdentityPublic
    ephemeral_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_id: int | None = None  # PQXDH only, with the KEM ciphertext
    kem_ciphertext: bytes | None = None

    @property
    def pq(self) -> bool:
        return self.kem_ciphertext is not None

    def to_wire(self) -> list[Any]:
        """[[group, sign_key, dh_key, dh_sig], ek, spk_id, opk_id (, kem_id, kem_ct)]."""
        ik = self.identity
        out = [
            [ik.group, ik.sign_key, ik.dh_key, ik.dh_sig],
            self.ephemeral_key,
            self.signed_prekey_id,
            self.one_time_prekey_id,
        ]
        if self.pq:
            out += [self.kem_prekey_id, self.kem_ciphertext]
        return out

    @classmethod
    def from_wire(cls, value: Any) -> InitialHeader:
        """Inverse of `to_wire`; ValueError on any shape or type mismatch."""
        if isinstance(value, list) and len(value) == 6:
            kem_id, kem_ct = value[4:]
            head = cls.from_wire(value[:4])
            return cls(
                identity=head.identity,
                ephemeral_key=head.ephemeral_key,
                signed_prekey_id=head.signed_prekey_id,
                one_time_prekey_id=head.one_time_prekey_id,
                kem_prekey_id=expect_int(kem_id, 0, MAX_PREKEY_ID),
                kem_ciphertext=expect_bytes(kem_ct, KEM_CIPHERTEXT_LEN),
            )
        ik, ek, spk_id, opk_id = expect_list(value, 4)
        group, sign_key, dh_key, dh_sig = expect_list(ik, 4)
        identity = IdentityPublic(
            group=expect_str(group),
            sign_key=expect_bytes(sign_key, 32),
            dh_key=expect_bytes(dh_key),
            dh_sig=expect_bytes(dh_sig, 64),
        )
        return cls(
            identity=identity,
            ephemeral_key=expect_bytes(ek),
            signed_prekey_id=expect_int(spk_id, 0, MAX_PREKEY_ID),
            one_time_prekey_id=None if opk_id is None else expect_int(opk_id, 0, MAX_PREKEY_ID),
        )


@dataclass(frozen=True, slots=True)
class InitiatorResult:
    """Alice's side after X3DH: SK and AD for the ratchet, and the header to send."""

    shared_key: bytes = field(repr=False)
    associated_data: bytes
    header: InitialHeader
    responder_ratchet_key: bytes  # SPK_B: Double Ratchet 3.3 initialises Alice with it


@dataclass(frozen=True, slots=True)
class ResponderResult:
    """Bob's side after X3DH. Delete `one_time_prekey_id` once a message decrypts."""

    shared_key: bytes = field(repr=False)
    associated_data: bytes
    signed_prekey: SignedPrekeyPair  # Bob's first ratchet key pair (Double Ratchet 3.3)
    one_time_prekey_id: int | None
    initiator: IdentityPublic
    kem_prekey: KemPrekeyPair | None = None  # PQXDH: delete it after success unless last-resort


class PrekeyLookup(Protocol):
    """Where the responder finds its private prekeys by id (None if it has none)."""

    def signed_prekey(self, prekey_id: int) -> SignedPrekeyPair | None: ...

    def one_time_prekey(self, prekey_id: int) -> OneTimePrekeyPair | None: ...

    def kem_prekey(self, prekey_id: int) -> KemPrekeyPair | None: ...


@dataclass(frozen=True, slots=True)
class PrekeySet:
    """A `PrekeyLookup` over in-memory mappings (tests, or a client's loaded keys)."""

    signed: Mapping[int, SignedPrekeyPair]
    one_time: Mapping[int, OneTimePrekeyPair]
    kem: Mapping[int, KemPrekeyPair]

    @classmethod
    def of(
        cls,
        signed: list[SignedPrekeyPair],
        one_time: list[OneTimePrekeyPair],
        kem: Sequence[KemPrekeyPair] = (),
    ) -> PrekeySet:
        return cls({k.id: k for k in signed}, {k.id: k for k in one_time}, {k.id: k for k in kem})

    def signed_prekey(self, prekey_id: int) -> SignedPrekeyPair | None:
        return self.signed.get(prekey_id)

    def one_time_prekey(self, prekey_id: int) -> OneTimePrekeyPair | None:
        return self.one_time.get(prekey_id)

    def kem_prekey(self, prekey_id: int) -> KemPrekeyPair | None:
        return self.kem.get(prekey_id)


def initiate(
    identity: IdentityKeyPair,
    username: str,
    bundle: PrekeyBundle,
    group: DHGroup,
    rand: Random = OS_RANDOM,
    encapsulate_to: Encapsulate = encapsulate,
) -> InitiatorResult:
    """Run X3DH (bundle version 1) or PQXDH (version 2) as the initiator (3.3).

    Raises InvalidSignature or InvalidKey before any DH if the bundle does not verify.
    `encapsulate_to` is the KEM's encapsulation (tests script it for fixed vectors).
    """
    if identity.group != group.name:
        raise InvalidKey("own identity is for another group")
    # X3DH 3.3: verify the prekey signature (and every public value) before any DH.
    verify_bundle(bundle, group)
    spk = bundle.signed_prekey
    opk = bundle.one_time_prekey
    ek = group.generate(rand)
    outputs = [
        group.agree(identity.dh.private, spk.key),  # DH1 = DH(IK_A, SPK_B)
        group.agree(ek.private, bundle.identity.dh_key),  # DH2 = DH(EK_A, IK_B)
        group.agree(ek.private, spk.key),  # DH3 = DH(EK_A, SPK_B)
    ]
    if opk is not None:
        outputs.append(group.agree(ek.private, opk.key))  # DH4 = DH(EK_A, OPK_B)
    kem_id = kem_ct = kem_secret = None
    if bundle.version == PQ_BUNDLE_VERSION and bundle.kem_prekey is not None:
        # PQXDH 3.3: (CT, SS) = PQKEM-ENC(PQPK_B); SS joins the KDF input after the DHs.
        kem_id = bundle.kem_prekey.id
        kem_ct, kem_secret = encapsulate_to(bundle.kem_prekey.key)
    me = identity.public()
    return InitiatorResult(
        shared_key=derive_shared_key(group, outputs, kem_secret),
        associated_data=associated_data(me, username, bundle.identity, bundle.user),
        header=InitialHeader(
            identity=me,
            ephemeral_key=ek.public,
            signed_prekey_id=spk.id,
            one_time_prekey_id=None if opk is None else opk.id,
            kem_prekey_id=kem_id,
            kem_ciphertext=kem_ct,
        ),
        responder_ratchet_key=spk.key,
    )


def respond(
    identity: IdentityKeyPair,
    username: str,
    initiator_username: str,
    header: InitialHeader,
    prekeys: PrekeyLookup,
    group: DHGroup,
) -> ResponderResult:
    """Run X3DH or PQXDH (as the header says) as the responder (3.4); consumes nothing.

    Raises InvalidSignature/InvalidKey for a bad initiator identity or ephemeral key and
    UnknownPrekey if a named prekey is not held. Whether SK is right is only known when
    the first ratchet message decrypts; only then may the caller delete the one-time
    keys (a swapped KEM ciphertext decapsulates to a wrong SS and fails right there).
    """
    if identity.group != group.name:
        raise InvalidKey("own identity is for another group")
    verify_identity(header.identity, group)
    group.check_public(header.ephemeral_key)
    spk = prekeys.signed_prekey(header.signed_prekey_id)
    if spk is None:
        raise UnknownPrekey(f"no signed prekey with id {header.signed_prekey_id}")
    opk = None
    if header.one_time_prekey_id is not None:
        opk = prekeys.one_time_prekey(header.one_time_prekey_id)
        if opk is None:
            # A reused or forged one-time prekey id: never fall back to a 3-DH session.
            raise UnknownPrekey(f"no one-time prekey with id {header.one_time_prekey_id}")
    outputs = [
        group.agree(spk.dh.private, header.identity.dh_key),  # DH1
        group.agree(identity.dh.private, header.ephemeral_key),  # DH2
        group.agree(spk.dh.private, header.ephemeral_key),  # DH3
    ]
    if opk is not None:
        outputs.append(group.agree(opk.dh.private, header.ephemeral_key))  # DH4
    kem_prekey = kem_secret = None
    if header.kem_prekey_id is not None and header.kem_ciphertext is not None:
        kem_prekey = prekeys.kem_prekey(header.kem_prekey_id)
        if kem_prekey is None:
            raise UnknownPrekey(f"no KEM prekey with id {header.kem_prekey_id}")
        kem_secret = decapsulate(kem_prekey.kem.private, header.kem_ciphertext)
    return ResponderResult(
        shared_key=derive_shared_key(group, outputs, kem_secret),
        associated_data=associated_data(
            header.identity, initiator_username, identity.public(), username
        ),
        signed_prekey=spk,
        one_time_prekey_id=header.one_time_prekey_id,
        initiator=header.identity,
        kem_prekey=kem_prekey,
    )
