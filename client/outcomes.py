"""What opening a delivered envelope or preparing a send gives back (client/session.py).

Each result says what was stored and what the caller may do next (ack, show, restart a
dead session); `describe` turns a crypto error into a reason safe to show and log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from hushwire.common.chat_groups import ContentType
from hushwire.common.errors import (
    CryptoError,
    DecryptionError,
    InvalidKey,
    InvalidSignature,
    MalformedEnvelope,
    ReplayError,
    TooManySkipped,
    UnknownPrekey,
)
from hushwire.common.messages import DeviceEnvelope, ListVersion


@dataclass(frozen=True, slots=True)
class Received:
    """A message that authenticated and is now stored: safe to ack."""

    contact: str
    uid: str
    envelope_id: bytes
    sent_at_ms: int
    text: str
    key_changed: bool  # this message came with an identity other than the pinned one
    used_one_time_prekey: bool


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Already stored once (a redelivery): ack it again, show nothing."""

    contact: str
    envelope_id: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """Not shown: malformed, tampered, replayed, not for us. Ack it so it stops coming.

    `dead_session`: the messages of the contact's `device` cannot be decrypted any more
    (more than MAX_SKIP lost in one chain, or we hold no session): client/restart.py
    heals that device's session."""

    contact: str
    reason: str
    dead_session: bool = False
    device: int = 1


@dataclass(frozen=True, slots=True)
class SessionReset:
    """The contact could not decrypt what we sent and started a new session (stored)."""

    contact: str
    key_changed: bool
    used_one_time_prekey: bool


@dataclass(frozen=True, slots=True)
class SentCopy:
    """What another device of our account sent to `contact`, now stored as sent."""

    contact: str
    uid: str
    sent_at_ms: int
    text: str
    used_one_time_prekey: bool


@dataclass(frozen=True, slots=True)
class GroupContent:
    """An authenticated envelope carrying group input (a key note, a change or a
    welcome): the ratchet step is stored, the content is for client/group_inbox.py,
    within the same transaction. `contact`/`device` are what the session authenticated."""

    contact: str
    device: int
    kind: int  # ContentType.GROUP_MESSAGE, GROUP_CHANGE or GROUP_WELCOME
    data: bytes  # what follows the content type byte
    envelope_id: bytes
    sent_at_ms: int
    key_changed: bool  # sealed under an identity the user has not accepted (quarantine)
    used_one_time_prekey: bool


# The content types group input starts with (docs/protocol.md, "Plaintext content types").
GROUP_CONTENT: Final = frozenset(
    bytes([kind])
    for kind in (ContentType.GROUP_MESSAGE, ContentType.GROUP_CHANGE, ContentType.GROUP_WELCOME)
)

Outcome = Received | Duplicate | Rejected | SessionReset | SentCopy | GroupContent


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An encrypted, committed message ready for `send`."""

    uid: str
    contact: str
    # For the contact's device 1; empty when its verified list leaves device 1 out (then
    # every envelope is a copy, and `envelope_id` is the first copy's once sealed).
    envelope: bytes
    envelope_id: bytes
    sent_at_ms: int
    # The same message for the other devices (client/copies.py) and the list versions
    # the fan-out used: what `send_devices` carries besides `envelope`.
    copies: tuple[DeviceEnvelope, ...] = ()
    lists: tuple[ListVersion, ...] = ()

    def envelopes(self) -> tuple[DeviceEnvelope, ...]:
        if not self.envelope:
            return self.copies
        return (DeviceEnvelope(self.contact, 1, self.envelope), *self.copies)


def describe(exc: CryptoError) -> str:
    """A short reason for a rejected envelope (never contains key material)."""
    if isinstance(exc, ReplayError):
        return f"replayed message (its key was already used): {exc.message}"
    if isinstance(exc, TooManySkipped):
        return f"too many skipped messages: {exc.message}"
    if isinstance(exc, MalformedEnvelope):
        return f"malformed envelope: {exc.message}"
    if isinstance(exc, UnknownPrekey):
        return f"initial message for a prekey we do not hold: {exc.message}"
    if isinstance(exc, InvalidSignature | InvalidKey):
        return f"invalid sender keys: {exc.message}"
    if isinstance(exc, DecryptionError):
        return f"message failed authentication (tampered or not for us): {exc.message}"
    return f"undecryptable message: {exc.message}"
