"""What the client tells its UI (events) and what its API returns (results).

Every string in these came from a peer or the relay unless said otherwise: display it
through `safe_for_terminal`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hushwire.client.store import StoredMessage

# --- events (what the TUI renders) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A message that authenticated and is stored. Display `text` via safe_for_terminal."""

    contact: str
    envelope_id: str  # hex, stable across redeliveries
    sent_at: datetime  # the sender's clock, UTC
    text: str
    uid: str  # the local history row


@dataclass(frozen=True, slots=True)
class SentElsewhere:
    """Another device of our account sent `text` to `contact` (its sent copy, now in the
    history as sent by us). Display `text` via safe_for_terminal."""

    contact: str
    sent_at: datetime  # that device's clock, UTC
    text: str
    uid: str  # the local history row


@dataclass(frozen=True, slots=True)
class KeyChanged:
    """`contact`'s identity key changed: messages to them are held until `trust`."""

    contact: str


@dataclass(frozen=True, slots=True)
class MessageQuarantined:
    """A message sealed under `contact`'s new, not yet accepted identity: stored, not
    shown; `trust` releases it (as MessageReceived)."""

    contact: str


@dataclass(frozen=True, slots=True)
class SessionRestarted:
    """The session with `contact` was dead and a fresh one replaced it. by_peer=False: we
    could not decrypt `contact`'s messages (some are lost) and started it; True: they
    could not decrypt ours (recent messages to them may be lost)."""

    contact: str
    by_peer: bool


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """An envelope that was not shown (tampered, replayed, not for us...); it was acked."""

    contact: str
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """state: "connected", "reconnecting" or "disconnected" (gave up: see detail).

    `failover`: the connection dropped and the client reconnects at once, to the next
    relay of the profile (or the same address, e.g. a load balancer), without backoff;
    `recv` keeps waiting through it."""

    state: str
    detail: str
    failover: bool = False


@dataclass(frozen=True, slots=True)
class Presence:
    user: str
    online: bool


@dataclass(frozen=True, slots=True)
class MessagesReleased:
    """`n` held messages to `contact` went out after `trust`."""

    contact: str
    n: int


@dataclass(frozen=True, slots=True)
class MessageSent:
    """A queued or unconfirmed message was accepted by the relay after a (re)connect."""

    contact: str
    uid: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should know that is not about one message (e.g. key upload)."""

    text: str


@dataclass(frozen=True, slots=True)
class GroupMessageReceived:
    """A group message that passed every check and is stored (client/groups.py). `own`:
    another device of our account sent it. Display `text`, `group` via safe_for_terminal."""

    group: str  # the group's current name (names may repeat: `gid` identifies it)
    gid: str  # hex group id
    sender: str
    device: int
    sent_at: datetime  # the sender's clock, UTC
    text: str
    uid: str  # the group history row
    own: bool


@dataclass(frozen=True, slots=True)
class GroupNotice:
    """Something that happened in a group, stored in its history as an event line:
    a membership change ("alice added carol", "you were removed"), "you may have missed
    N messages from X", a fork, a change or message that was refused."""

    group: str
    gid: str
    text: str  # made of names and group names from peers: display via safe_for_terminal
    uid: str  # the group history row
    sent_at: datetime  # when what it reports was sent (the sender's clock), UTC


ClientEvent = (
    MessageReceived
    | SentElsewhere
    | KeyChanged
    | MessageQuarantined
    | SessionRestarted
    | MessageRejected
    | ConnectionState
    | Presence
    | MessagesReleased
    | MessageSent
    | Notice
    | GroupMessageReceived
    | GroupNotice
)


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendResult:
    contact: str
    uid: str
    envelope_id: str  # hex; empty while queued (not yet encrypted)
    sent_at: datetime
    queued: bool  # True: not confirmed by the relay yet; it goes out on reconnect


@dataclass(frozen=True, slots=True)
class ContactInfo:
    name: str
    verified: bool
    key_changed: bool
    unread: int
    online: bool | None  # None until the relay said (after `who` or a presence push)


@dataclass(frozen=True, slots=True)
class HistoryItem:
    contact: str
    direction: str  # "in" or "out"
    text: str  # raw: display via safe_for_terminal
    sent_at: datetime
    status: str  # in: received/read; out: queued/held/pending/sent/failed
    envelope_id: str  # hex ("" for an outgoing message not yet encrypted)
    uid: str


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group as this device holds it (`hushwire group info`)."""

    name: str
    gid: str  # hex
    epoch: int
    members: tuple[str, ...]
    admins: tuple[str, ...]
    devices: dict[str, tuple[int, ...]]  # per member, the devices a message goes to
    active: bool  # False once we left or were removed (the history stays readable)
    unread: int


@dataclass(frozen=True, slots=True)
class GroupLineItem:
    """One line of a group conversation (`kind` in / out / event), oldest first."""

    group: str
    gid: str
    kind: str
    sender: str  # "" for an event line
    device: int
    text: str  # raw: display via safe_for_terminal
    sent_at: datetime
    status: str  # in/event: received/read; out: pending/sent/failed
    uid: str


def utc_from_ms(ms: int) -> datetime:
    """Total: a stored time outside what a datetime holds shows as the nearest end."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return datetime.max.replace(tzinfo=UTC) if ms > 0 else datetime.min.replace(tzinfo=UTC)


def history_item(m: StoredMessage) -> HistoryItem:
    return HistoryItem(
        m.contact, m.direction, m.text, utc_from_ms(m.sent_at_ms), m.status,
        m.envelope_id.hex(), m.uid,
    )  # fmt: skip
