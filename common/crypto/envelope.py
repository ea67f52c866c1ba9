"""The sealed envelope the relay forwards as opaque bytes, and the client-side `Session`.

Wire form (msgpack array, canonical encoding only):

    [version=1, type (1 initial | 2 message), sender, recipient, envelope_id (16 bytes),
     sent_at_ms, ratchet header bytes, X3DH header (initial) or nil (message), ciphertext]

The ratchet header is already in the ratchet's associated data; everything else except
the ciphertext goes into `extra_ad` (the same list with the header and ciphertext left
out), so the AEAD tag covers every field: a flipped bit anywhere, a changed recipient or
a moved timestamp fails authentication. Parsing is strict (typed errors, never asserts)
and rejects non-canonical encodings, so one envelope has exactly one byte form.

Until the responder has answered, the initiator keeps sending `initial` envelopes that
carry the X3DH header (X3DH 3.3, as Signal does), so whichever arrives first can start
the session. The responder cannot send until the first message decrypted; its first
sending chain then comes from a fresh ratchet key (X3DH 4.2-4.3 rerandomisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from hushwire.common.crypto.dh import DHGroup
from hushwire.common.crypto.encoding import (
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
    pack,
    unpack_canonical,
    unpack_strict,
)
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.crypto.kem import Encapsulate, encapsulate
from hushwire.common.crypto.primitives import AEAD_TAG_LEN
from hushwire.common.crypto.ratchet import RatchetConfig, RatchetHeader, RatchetState
from hushwire.common.crypto.x3dh import InitialHeader, PrekeyLookup, initiate, respond
from hushwire.common.errors import CryptoError, DecryptionError, InvalidKey, MalformedEnvelope
from hushwire.common.keys import PQ_BUNDLE_VERSION, IdentityPublic, PrekeyBundle
from hushwire.common.names import is_valid_username

ENVELOPE_VERSIONS: Final = (1, 2)  # equal to the session's ratchet message format
ENVELOPE_ID_LEN: Final = 16
SESSION_VERSION: Final = 1
_MAX_TIMESTAMP: Final = 2**63 - 1


class EnvelopeType(IntEnum):
    INITIAL = 1  # carries the X3DH header; sent until the responder has replied
    MESSAGE = 2


@dataclass(frozen=True, slots=True)
class Envelope:
    """One sealed message as it travels through the relay.

    Version 1: the 9-item canonical msgpack array; the AD is rebuilt by re-encoding.
    Version 2: `[2, head (bin), ratchet header (bin), ciphertext (bin)]`, where head is
    the msgpack array `[type, sender, recipient, envelope_id, sent_at_ms, initial header
    or nil]`; the AD is the head exactly as received, so any msgpack encoder works.
    """

    type: EnvelopeType
    sender: str
    recipient: str
    envelope_id: bytes
    sent_at_ms: int
    header: RatchetHeader
    x3dh: InitialHeader | None
    ciphertext: bytes
    version: int = 1
    raw_head: bytes | None = None  # version 2: the head bytes as received (the AD)

    def _fields(self) -> list[object]:
        """type, sender, recipient, id, time, initial header: what the AD covers."""
        return [
            int(self.type),
            self.sender,
            self.recipient,
            self.envelope_id,
            self.sent_at_ms,
            None if self.x3dh is None else self.x3dh.to_wire(),
        ]

    def associated_data(self) -> bytes:
        """Every field except the ratchet header (already in the ratchet AD) and ciphertext."""
        if self.version == 1:
            return pack([1, *self._fields()])
        return self.raw_head if self.raw_head is not None else pack(self._fields())

    def to_bytes(self) -> bytes:
        header = self.header.to_bytes()
        if self.version == 1:
            fields = self._fields()
            return pack([1, *fields[:5], header, fields[5], self.ciphertext])
        return pack([2, self.associated_data(), header, self.ciphertext])

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Strict parse; MalformedEnvelope (a DecryptionError) for anything off."""
        try:
            return cls._parse(data)
        except ValueError as exc:
            raise MalformedEnvelope(f"malformed envelope: {exc}") from None

    @classmethod
    def _parse(cls, data: bytes) -> Envelope:
        items = unpack_strict(data)
        if not isinstance(items, list) or not items or items[0] not in ENVELOPE_VERSIONS:
            raise ValueError("unsupported envelope version")
        if items[0] == 1:
            if pack(items) != data:  # version 1's AD is a re-encoding: one byte form only
                raise ValueError("non-canonical msgpack encoding")
            _, kind, sender, recipient, env_id, sent_at, header, x3dh, ciphertext = expect_list(
                items, 9
            )
            raw_head = None
        else:
            _, raw_head, header, ciphertext = expect_list(items, 4)
            kind, sender, recipient, env_id, sent_at, x3dh = expect_list(
                unpack_strict(expect_bytes(raw_head)), 6
            )
        env_type = EnvelopeType(expect_int(kind, 1, 2))
        for name in (sender, recipient):
            if not is_valid_username(expect_str(name)):
                raise ValueError("invalid username")
        if (x3dh is None) != (env_type is EnvelopeType.MESSAGE):
            raise ValueError("the X3DH header must be present exactly in initial envelopes")
        sealed = expect_bytes(ciphertext)
        if len(sealed) < AEAD_TAG_LEN:
            raise ValueError("ciphertext shorter than the tag")
        return cls(
            type=env_type,
            sender=sender,
            recipient=recipient,
            envelope_id=expect_bytes(env_id, ENVELOPE_ID_LEN),
            sent_at_ms=expect_int(sent_at, 0, _MAX_TIMESTAMP),
            header=RatchetHeader.from_bytes(expect_bytes(header), items[0]),
            x3dh=None if x3dh is None else InitialHeader.from_wire(x3dh),
            ciphertext=sealed,
            version=items[0],
            raw_head=raw_head,
        )


@dataclass(frozen=True, slots=True)
class UsedPrekeys:
    """Which of the responder's prekeys a session start used: delete the one-time ones
    only after the first message authenticated (a last-resort KEM prekey stays)."""

    one_time: int | None
    kem: int | None = None
    kem_last_resort: bool = False

    @property
    def one_time_kem(self) -> int | None:
        return None if self.kem_last_resort else self.kem


@dataclass(frozen=True, slots=True)
class DecryptedMessage:
    """A message that authenticated: who sent it, its id (for dedup), and when."""

    sender: str
    envelope_id: bytes
    sent_at_ms: int
    plaintext: bytes


def _parse(envelope: bytes | Envelope) -> Envelope:
    return envelope if isinstance(envelope, Envelope) else Envelope.from_bytes(envelope)


class Session:
    """An X3DH start plus a Double Ratchet with one peer: what a client persists."""

    __slots__ = ("initiator", "my_username", "peer_identity", "peer_username", "ratchet", "x3dh")

    def __init__(
        self,
        *,
        my_username: str,
        peer_username: str,
        peer_identity: IdentityPublic,
        ratchet: RatchetState,
        initiator: bool,
        x3dh: InitialHeader | None,
    ) -> None:
        self.my_username = my_username
        self.peer_username = peer_username
        self.peer_identity = peer_identity  # compare with safety numbers, pin on first use
        self.ratchet = ratchet
        self.initiator = initiator
        # Initiator: the header still to attach (None once the peer has replied).
        # Responder: the header the session came from, to accept its repeats.
        self.x3dh = x3dh

    @classmethod
    def initiate(
        cls,
        my_identity: IdentityKeyPair,
        my_username: str,
        bundle: PrekeyBundle,
        group: DHGroup,
        now_ms: int,
        plaintext: bytes,
        *,
        config: RatchetConfig | None = None,
    ) -> tuple[Session, bytes]:
        """Start a session from a fetched bundle and seal the first message.

        Raises InvalidSignature/InvalidKey if the bundle does not verify (before any DH).
        """
        session = cls.start(my_identity, my_username, bundle, group, config=config)
        return session, session.encrypt(plaintext, now_ms)

    @classmethod
    def start(
        cls,
        my_identity: IdentityKeyPair,
        my_username: str,
        bundle: PrekeyBundle,
        group: DHGroup,
        *,
        config: RatchetConfig | None = None,
        encapsulate_to: Encapsulate = encapsulate,
    ) -> Session:
        """`initiate` without sealing a message yet (the next `encrypt` is the first).

        The bundle's version decides: 2 is PQXDH with version-2 envelopes and salted
        message keys, 1 is X3DH with version-1 envelopes. `encapsulate_to` is only
        replaced by tests that need fixed KEM randomness.
        """
        config = config or RatchetConfig()
        version = 2 if bundle.version == PQ_BUNDLE_VERSION else 1
        result = initiate(my_identity, my_username, bundle, group, config.rand, encapsulate_to)
        ratchet = RatchetState.init_alice(
            result.shared_key,
            result.responder_ratchet_key,
            result.associated_data,
            group,
            config,
            version=version,
        )
        return cls(
            my_username=my_username,
            peer_username=bundle.user,
            peer_identity=bundle.identity,
            ratchet=ratchet,
            initiator=True,
            x3dh=result.header,
        )

    @classmethod
    def respond(
        cls,
        my_identity: IdentityKeyPair,
        my_username: str,
        prekeys: PrekeyLookup,
        envelope: bytes | Envelope,
        *,
        config: RatchetConfig | None = None,
    ) -> tuple[Session, DecryptedMessage, UsedPrekeys]:
        """Accept an `initial` envelope: X3DH/PQXDH as responder, then decrypt its message.

        Returns the session, the message and the prekeys it used. Nothing is consumed
        here: delete the one-time ones only now, after the message authenticated; if
        this raises, keep them (a forgery must not burn them).
        """
        env = _parse(envelope)
        if env.type is not EnvelopeType.INITIAL or env.x3dh is None:
            raise DecryptionError("not an initial envelope")
        if env.x3dh.pq != (env.version == 2):
            raise DecryptionError("version 2 envelopes, and only they, start with PQXDH")
        if env.recipient != my_username:
            raise DecryptionError("envelope is for another recipient")
        config = config or RatchetConfig()
        group = config.group(my_identity.group)
        if env.x3dh.identity.group != group.name:
            raise InvalidKey("initiator uses a different DH group")
        result = respond(my_identity, my_username, env.sender, env.x3dh, prekeys, group)
        ratchet = RatchetState.init_bob(
            result.shared_key,
            result.signed_prekey.dh,
            result.associated_data,
            group,
            config,
            version=env.version,
        )
        plaintext = ratchet.decrypt(env.header, env.ciphertext, env.associated_data())
        session = cls(
            my_username=my_username,
            peer_username=env.sender,
            peer_identity=result.initiator,
            ratchet=ratchet,
            initiator=False,
            x3dh=env.x3dh,
        )
        message = DecryptedMessage(env.sender, env.envelope_id, env.sent_at_ms, plaintext)
        kem = result.kem_prekey
        used = UsedPrekeys(
            one_time=result.one_time_prekey_id,
            kem=None if kem is None else kem.id,
            kem_last_resort=kem is not None and kem.last_resort,
        )
        return session, message, used

    @property
    def awaiting_reply(self) -> bool:
        """True while the initiator still attaches the X3DH header to what it sends."""
        return self.initiator and self.x3dh is not None

    def encrypt(self, plaintext: bytes, now_ms: int) -> bytes:
        """Seal one message for the peer; `now_ms` is the sender's clock (ms since epoch)."""
        if type(now_ms) is not int or not 0 <= now_ms <= _MAX_TIMESTAMP:
            raise ValueError("now_ms must be a non-negative integer")
        pending = self.x3dh if self.awaiting_reply else None
        version = self.ratchet.version
        draft = Envelope(
            type=EnvelopeType.MESSAGE if pending is None else EnvelopeType.INITIAL,
            sender=self.my_username,
            recipient=self.peer_username,
            envelope_id=self.ratchet.config.rand(ENVELOPE_ID_LEN),
            sent_at_ms=now_ms,
            header=RatchetHeader(b"", 0, 0),
            x3dh=pending,
            ciphertext=b"",
            version=version,
        )
        ad = draft.associated_data()
        header, ciphertext = self.ratchet.encrypt(plaintext, ad)
        return Envelope(
            type=draft.type,
            sender=draft.sender,
            recipient=draft.recipient,
            envelope_id=draft.envelope_id,
            sent_at_ms=now_ms,
            header=header,
            x3dh=pending,
            ciphertext=ciphertext,
            version=version,
            raw_head=ad if version >= 2 else None,
        ).to_bytes()

    def decrypt(self, envelope: bytes | Envelope) -> DecryptedMessage:
        """Open one envelope from the peer; on any error the session is unchanged.

        Raises MalformedEnvelope, DecryptionError (tampered, wrong recipient or sender,
        an initial envelope of a different session), ReplayError, TooManySkipped or
        InvalidKey. An initial envelope with a new X3DH header means the peer started a
        new session: hand it to `Session.respond` instead.
        """
        env = _parse(envelope)
        if env.recipient != self.my_username:
            raise DecryptionError("envelope is for another recipient")
        if env.sender != self.peer_username:
            raise DecryptionError("envelope is from another sender")
        if env.version != self.ratchet.version:
            raise DecryptionError(
                f"a version {env.version} envelope in a version {self.ratchet.version} session"
            )
        if env.type is EnvelopeType.INITIAL and (self.initiator or env.x3dh != self.x3dh):
            raise DecryptionError("initial envelope of a different session")
        plaintext = self.ratchet.decrypt(env.header, env.ciphertext, env.associated_data())
        if self.initiator:
            self.x3dh = None  # the peer has replied: X3DH 3.3's initial phase is over
        return DecryptedMessage(env.sender, env.envelope_id, env.sent_at_ms, plaintext)

    def to_bytes(self) -> bytes:
        """Version byte, then msgpack (the ratchet state nested as its own bytes)."""
        ik = self.peer_identity
        body = [
            self.my_username,
            self.peer_username,
            self.initiator,
            [ik.group, ik.sign_key, ik.dh_key, ik.dh_sig],
            None if self.x3dh is None else self.x3dh.to_wire(),
            self.ratchet.to_bytes(),
        ]
        return bytes([SESSION_VERSION]) + pack(body)

    @classmethod
    def from_bytes(cls, data: bytes, config: RatchetConfig | None = None) -> Session:
        """Inverse of `to_bytes`; CryptoError if the bytes are not a valid session."""
        if not isinstance(data, bytes) or not data or data[0] != SESSION_VERSION:
            raise CryptoError("unsupported session version")
        try:
            me, peer, initiator, ik, x3dh, ratchet = expect_list(unpack_canonical(data[1:]), 6)
            group, sign_key, dh_key, dh_sig = expect_list(ik, 4)
            if not isinstance(initiator, bool):
                raise ValueError("role must be a boolean")
            identity = IdentityPublic(
                group=expect_str(group),
                sign_key=expect_bytes(sign_key, 32),
                dh_key=expect_bytes(dh_key),
                dh_sig=expect_bytes(dh_sig, 64),
            )
            header = None if x3dh is None else InitialHeader.from_wire(x3dh)
            state_bytes = expect_bytes(ratchet)
            my_username, peer_username = expect_str(me), expect_str(peer)
        except ValueError as exc:
            raise CryptoError(f"malformed session: {exc}") from None
        return cls(
            my_username=my_username,
            peer_username=peer_username,
            peer_identity=identity,
            ratchet=RatchetState.from_bytes(state_bytes, config),
            initiator=initiator,
            x3dh=header,
        )
