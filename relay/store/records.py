"""What the store hands out and the limits it enforces, the same for every backend."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# One-time prekeys kept per user; more is a client bug or an attempt to fill the disk.
MAX_ONE_TIME_PREKEYS = 500
# Largest key or signature field accepted (ML-KEM-768 public keys are 1,184 bytes).
MAX_KEY_BYTES = 4096
MAX_PREKEY_ID = 2**31 - 1
MAX_PENDING_LIMIT = 1000
# Envelope ids are signed 64-bit in every backend; larger ids cannot exist and must not
# reach a query.
MAX_ROWID = 2**63 - 1
# user_events rows kept: a relay polling every second is never this far behind.
USER_EVENTS_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    token_hash: bytes
    token_salt: bytes
    disabled: bool
    created_at: int
    last_login_at: int | None


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    mid: int
    sender: str
    created_at: int
    body: bytes
    payload: bytes | None = None  # a group send's payload, stored once for all its rows


@dataclass(frozen=True, slots=True)
class PublishResult:
    identity_changed: bool
    watchers: list[str]
    prekeys_left: int
    kem_prekeys_left: int = 0


@dataclass(frozen=True, slots=True)
class KemUpload:
    """Checked KEM prekeys of one upload (protocol version 2): (id, key, sig) each."""

    last_resort: tuple[int, bytes, bytes] | None = None
    one_time: tuple[tuple[int, bytes, bytes], ...] = ()

    def __bool__(self) -> bool:
        return self.last_resort is not None or bool(self.one_time)


class UserEventKind(StrEnum):
    ADDED = "added"
    DISABLED = "disabled"
    ENABLED = "enabled"
    TOKEN_RESET = "token_reset"  # noqa: S105 - an event name, not a secret
    REMOVED = "removed"


# Events after which a live session of that user must be closed.
DISCONNECTING_EVENTS = frozenset(
    {UserEventKind.DISABLED, UserEventKind.TOKEN_RESET, UserEventKind.REMOVED}
)


@dataclass(frozen=True, slots=True)
class UserEvent:
    """One account change, written by triggers (migration 0002) for every writer."""

    seq: int
    name: str
    kind: UserEventKind
