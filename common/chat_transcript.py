"""Group messages and transcript consistency: each message says what its sender has seen.

A group message is encrypted once (common/crypto/group_payload.py) and its key note
travels pairwise, once per recipient device, inside a sealed envelope (content type
GROUP_MESSAGE): the sender is the authenticated peer of that pairwise session, never a
field of the message, so no member can make another accept a message as someone else's.

Each sending device keeps, per group epoch, a numbered hash chain over its messages:

    start(e)  = SHA-256(b"hushwire/group-chain-start/v1" ||
                        fields(group_id, u32 e, state_hash(e), sender, u32 device))
    message   = [1, group_id bin(16), epoch, state_hash bin(32), seq, prev, seen, text, chain]
    chain_n   = SHA-256(b"hushwire/group-chain/v1" ||
                        fields(chain_{n-1} (start(e) for n = 1), msgpack(message[:-1])))

`prev` is [epoch, seq] of that device's last message in an earlier epoch (nil if none;
the same on every message of an epoch, so any one tells how the last epoch ended), and
`seen` lists, per other member device, the last message received from it: [user, device,
epoch, seq, first 16 bytes of its chain]. From these a receiver learns

- a drop: a sequence number, a `prev` or another member's `seen` names a message it
  never got ("you may have missed 2 messages from carol");
- a fork: another member saw a different message at a position (the 16-byte chain
  prefixes differ), or a message names a membership state other than ours.

Sans-I/O: pure functions over frozen values.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from Crypto.Hash import SHA256

from hushwire.common.chat_group_log import GroupLog
from hushwire.common.chat_groups import (
    GROUP_FORMAT,
    GROUP_ID_LEN,
    MAX_EPOCH,
    MAX_MEMBERS,
    STATE_HASH_LEN,
    strictly_ascending,
)
from hushwire.common.crypto.encoding import (
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
    fields,
    pack,
    unpack_canonical,
)
from hushwire.common.errors import (
    CryptoError,
    GroupForked,
    GroupMessageRejected,
    LocalProtocolError,
    MissingGroupChanges,
)
from hushwire.common.names import is_valid_username

CHAIN_CONTEXT: Final = b"hushwire/group-chain/v1"
CHAIN_START_CONTEXT: Final = b"hushwire/group-chain-start/v1"
CHAIN_LEN: Final = 32
SEEN_HASH_LEN: Final = 16  # 2^64 work to find two messages that compare equal
MAX_DEVICE_ID: Final = 2**32 - 1
MAX_SEQ: Final = 2**32 - 1
MAX_DEVICES_PER_MEMBER: Final = 16
MAX_SEEN: Final = MAX_MEMBERS * MAX_DEVICES_PER_MEMBER
MAX_TEXT_BYTES: Final = 16384
MAX_MESSAGE_BYTES: Final = 65536
# What a client remembers per sender device and epoch, so no peer can grow it unbounded.
KEEP_CHAINS: Final = 512
KEEP_EXTRAS: Final = 1024
KEEP_EXPECTED: Final = 256
MAX_VIEWS: Final = 4096
TRANSCRIPT_VERSION: Final = 1

Source = tuple[str, int]  # (user, device)


@dataclass(frozen=True, slots=True)
class SeenEntry:
    """The last message its sender had received from one member device."""

    user: str
    device: int
    epoch: int
    seq: int
    chain16: bytes

    def to_wire(self) -> list[Any]:
        return [self.user, self.device, self.epoch, self.seq, self.chain16]


@dataclass(frozen=True, slots=True)
class GroupMessage:
    group_id: bytes
    epoch: int
    state_hash: bytes
    seq: int
    prev: tuple[int, int] | None
    seen: tuple[SeenEntry, ...]
    text: str
    chain: bytes

    def _fields(self) -> list[Any]:
        prev = None if self.prev is None else list(self.prev)
        return [
            GROUP_FORMAT,
            self.group_id,
            self.epoch,
            self.state_hash,
            self.seq,
            prev,
            [entry.to_wire() for entry in self.seen],
            self.text,
        ]

    def link(self, prev_chain: bytes) -> bytes:
        """This message's chain value when it follows `prev_chain`."""
        return SHA256.new(CHAIN_CONTEXT + fields(prev_chain, pack(self._fields()))).digest()

    def to_bytes(self) -> bytes:
        return pack([*self._fields(), self.chain])

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupMessage:
        """Strict parse; GroupMessageRejected for anything malformed."""
        try:
            if len(data) > MAX_MESSAGE_BYTES:
                raise ValueError("group message too large")
            return cls._parse(unpack_canonical(data))
        except ValueError as exc:
            raise GroupMessageRejected(f"malformed group message: {exc}") from None

    @classmethod
    def _parse(cls, value: Any) -> GroupMessage:
        version, group_id, epoch, state_hash, seq, prev, seen, text, chain = expect_list(value, 9)
        if version != GROUP_FORMAT:
            raise ValueError("unsupported group message version")
        message = cls(
            group_id=expect_bytes(group_id, GROUP_ID_LEN),
            epoch=expect_int(epoch, 1, MAX_EPOCH),
            state_hash=expect_bytes(state_hash, STATE_HASH_LEN),
            seq=expect_int(seq, 1, MAX_SEQ),
            prev=None if prev is None else _position(prev),
            seen=_seen(seen),
            text=expect_str(text),
            chain=expect_bytes(chain, CHAIN_LEN),
        )
        if len(message.text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise ValueError("text too long")
        if message.prev is not None and message.prev[0] >= message.epoch:
            raise ValueError("prev must name an earlier epoch")
        for entry in message.seen:
            if entry.epoch > message.epoch:
                raise ValueError("seen names a later epoch than the message")
        return message


def _position(value: Any) -> tuple[int, int]:
    epoch, seq = expect_list(value, 2)
    return expect_int(epoch, 1, MAX_EPOCH), expect_int(seq, 1, MAX_SEQ)


def _seen(value: Any) -> tuple[SeenEntry, ...]:
    if not isinstance(value, list) or len(value) > MAX_SEEN:
        raise ValueError(f"seen must be a list of at most {MAX_SEEN} entries")
    entries = []
    for item in value:
        user, device, epoch, seq, chain16 = expect_list(item, 5)
        if not is_valid_username(user):
            raise ValueError("invalid username in seen")
        entries.append(
            SeenEntry(
                user,
                expect_int(device, 0, MAX_DEVICE_ID),
                expect_int(epoch, 1, MAX_EPOCH),
                expect_int(seq, 1, MAX_SEQ),
                expect_bytes(chain16, SEEN_HASH_LEN),
            )
        )
    keys = [(entry.user, entry.device) for entry in entries]
    if not strictly_ascending(keys):
        raise ValueError("seen must be sorted by (user, device), one entry each")
    return tuple(entries)


def chain_start(group_id: bytes, epoch: int, state_hash: bytes, source: Source) -> bytes:
    """The value before a device's first message of an epoch: binds sender and state."""
    user, device = source
    return SHA256.new(
        CHAIN_START_CONTEXT
        + fields(
            group_id,
            epoch.to_bytes(4, "big"),
            state_hash,
            user.encode(),
            device.to_bytes(4, "big"),
        )
    ).digest()


@dataclass(frozen=True, slots=True)
class EpochView:
    """What this client knows of one sender device's messages in one epoch."""

    floor: int = 0  # messages 1..floor received, or given up on (see `lost`)
    extras: frozenset[int] = frozenset()  # received above floor + 1 (a gap below them)
    known: int = 0  # the highest position known to exist (received, prev, or reported)
    chains: Mapping[int, bytes] = field(default_factory=dict)  # recent seq -> chain
    expected: Mapping[int, tuple[bytes, str]] = field(default_factory=dict)
    lost: int = 0  # positions at or below floor that never arrived

    def has(self, seq: int) -> bool:
        return seq <= self.floor or seq in self.extras

    @property
    def last(self) -> int:
        return max(self.extras, default=self.floor)

    @property
    def missing(self) -> int:
        return self.known - self.floor - len(self.extras) + self.lost

    def record(self, seq: int, chain: bytes) -> EpochView:
        floor, extras, lost = self.floor, {*self.extras, seq}, self.lost
        while True:
            while floor + 1 in extras:
                floor += 1
                extras.discard(floor)
            if len(extras) <= KEEP_EXTRAS:
                break
            # Give up on the oldest gap, so a gap that never fills cannot grow this view
            # without end: it stays counted as missed, and a message from it that still
            # arrives later is taken for a duplicate.
            lowest = min(extras)
            lost += lowest - floor - 1
            floor = lowest
            extras.discard(lowest)
        chains = {**self.chains, seq: chain}
        if len(chains) > KEEP_CHAINS:
            del chains[min(chains)]
        expected = {k: v for k, v in self.expected.items() if k > floor and k != seq}
        known = max(self.known, seq)
        return EpochView(floor, frozenset(extras), known, chains, expected, lost)

    def expect(self, seq: int, chain16: bytes, reporter: str) -> EpochView:
        """Another member says this message exists: count it, compare it on arrival."""
        if self.has(seq):
            return self
        expected = dict(self.expected)
        expected.setdefault(seq, (chain16, reporter))
        if len(expected) > KEEP_EXPECTED:
            del expected[min(expected)]
        return replace(self, known=max(self.known, seq), expected=expected)


@dataclass(frozen=True, slots=True)
class Fork:
    """`reported_by` was shown a different message from `user` at this position."""

    user: str
    device: int
    epoch: int
    seq: int
    reported_by: str


@dataclass(frozen=True, slots=True)
class Missed:
    """Messages from `user` this client knows were sent in its epochs but never got."""

    user: str
    count: int


@dataclass(frozen=True, slots=True)
class Transcript:
    """One device's view of a group's messages, from the epoch it joined."""

    group_id: bytes
    me: str
    device: int
    join_epoch: int
    views: Mapping[tuple[str, int, int], EpochView] = field(default_factory=dict)

    def view(self, user: str, device: int, epoch: int) -> EpochView:
        return self.views.get((user, device, epoch), EpochView())

    def with_view(self, user: str, device: int, epoch: int, view: EpochView) -> Transcript:
        """This transcript with one view replaced; past MAX_VIEWS the oldest epoch goes."""
        key = (user, device, epoch)
        views = {**self.views, key: view}
        if len(views) > MAX_VIEWS:
            oldest = min(e for (_, _, e) in views)
            views = {k: v for k, v in views.items() if k[2] != oldest or k == key}
        return replace(self, views=views)

    def to_bytes(self) -> bytes:
        """Version byte, then msgpack; for the client's store (encrypted at rest)."""
        views = [
            [
                user,
                device,
                epoch,
                view.floor,
                sorted(view.extras),
                view.known,
                [[seq, chain] for seq, chain in sorted(view.chains.items())],
                [[seq, h, who] for seq, (h, who) in sorted(view.expected.items())],
                view.lost,
            ]
            for (user, device, epoch), view in sorted(self.views.items())
        ]
        body = [self.group_id, self.me, self.device, self.join_epoch, views]
        return bytes([TRANSCRIPT_VERSION]) + pack(body)

    @classmethod
    def from_bytes(cls, data: bytes) -> Transcript:
        """Inverse of `to_bytes`; CryptoError for anything else."""
        if not data or data[0] != TRANSCRIPT_VERSION:
            raise CryptoError("unsupported transcript version")
        try:
            group_id, me, device, join_epoch, views = expect_list(unpack_canonical(data[1:]), 5)
            if not is_valid_username(me) or not isinstance(views, list):
                raise ValueError("expected a member and a list of views")
            transcript = cls(
                expect_bytes(group_id, GROUP_ID_LEN),
                me,
                expect_int(device, 0, MAX_DEVICE_ID),
                expect_int(join_epoch, 1, MAX_EPOCH),
                dict(_stored_view(item) for item in views[: MAX_VIEWS + 1]),
            )
            if len(views) > MAX_VIEWS:
                raise ValueError("too many views")
        except ValueError as exc:
            raise CryptoError(f"malformed transcript: {exc}") from None
        return transcript

    def forget_from(self, epoch: int) -> Transcript:
        """Drop every view of `epoch` and later: after `adopt_change` replaced our state
        at that epoch, what was sent under the losing state counts for nothing (its
        messages are not part of the group's history; a sender re-sends its own)."""
        return replace(self, views={k: v for k, v in self.views.items() if k[2] < epoch})


def _stored_view(item: Any) -> tuple[tuple[str, int, int], EpochView]:
    user, device, epoch, floor, extras, known, chains, expected, lost = expect_list(item, 9)
    if not is_valid_username(user):
        raise ValueError("invalid username")
    key = (user, expect_int(device, 0, MAX_DEVICE_ID), expect_int(epoch, 1, MAX_EPOCH))
    view = EpochView(
        floor=expect_int(floor, 0, MAX_SEQ),
        extras=frozenset(expect_int(seq, 1, MAX_SEQ) for seq in _bounded(extras, KEEP_EXTRAS)),
        known=expect_int(known, 0, MAX_SEQ),
        chains={
            expect_int(seq, 1, MAX_SEQ): expect_bytes(chain, CHAIN_LEN)
            for seq, chain in (expect_list(c, 2) for c in _bounded(chains, KEEP_CHAINS))
        },
        expected={
            expect_int(seq, 1, MAX_SEQ): (expect_bytes(h, SEEN_HASH_LEN), expect_str(who))
            for seq, h, who in (expect_list(e, 3) for e in _bounded(expected, KEEP_EXPECTED))
        },
        lost=expect_int(lost, 0, MAX_SEQ),
    )
    return key, view


def _bounded(value: Any, most: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > most:
        raise ValueError(f"expected a list of at most {most} items")
    return value


def _last_before(transcript: Transcript, source: Source, epoch: int) -> tuple[int, int] | None:
    """The last position `source` sent in an epoch before `epoch`, if any."""
    positions = [
        (e, view.last)
        for (user, device, e), view in transcript.views.items()
        if (user, device) == source and e < epoch and view.last
    ]
    return max(positions, default=None)


def _latest(transcript: Transcript) -> dict[Source, tuple[int, int]]:
    """Per device, the latest (epoch, seq) this client has from it."""
    latest: dict[Source, tuple[int, int]] = {}
    for (user, device, epoch), view in transcript.views.items():
        if view.last and (epoch, view.last) > latest.get((user, device), (0, 0)):
            latest[user, device] = (epoch, view.last)
    return latest


@dataclass(frozen=True, slots=True)
class Received:
    """An accepted group message, who sent it, and what it revealed."""

    transcript: Transcript
    message: GroupMessage
    sender: str
    device: int
    duplicate: bool  # already received: do not show it again
    forks: tuple[Fork, ...]


def new_transcript(log: GroupLog, device: int) -> Transcript:
    return Transcript(log.group_id, log.me, device, log.join_epoch)


def compose(log: GroupLog, transcript: Transcript, text: str) -> tuple[Transcript, bytes]:
    """A new group message from this device under the current state, and the transcript
    that records it; seal the bytes with `seal_group_payload` and send the key note
    (content type GROUP_MESSAGE) to every target of `fan_out`, the payload once.
    LocalProtocolError if we are no longer a member or the text is too long."""
    if not log.active:
        raise LocalProtocolError("not a member of this group any more")
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise LocalProtocolError(f"group message text over {MAX_TEXT_BYTES} bytes")
    state = log.current
    me = (transcript.me, transcript.device)
    mine = transcript.view(*me, state.epoch)
    seq = mine.floor + 1
    members = set(state.members)
    seen = [
        SeenEntry(
            user,
            device,
            epoch,
            seq,
            transcript.view(user, device, epoch).chains[seq][:SEEN_HASH_LEN],
        )
        for (user, device), (epoch, seq) in sorted(_latest(transcript).items())
        if user in members and (user, device) != me
    ]
    draft = GroupMessage(
        group_id=state.group_id,
        epoch=state.epoch,
        state_hash=state.hash,
        seq=seq,
        prev=_last_before(transcript, me, state.epoch),
        seen=tuple(seen),
        text=text,
        chain=b"",
    )
    start = chain_start(state.group_id, state.epoch, state.hash, me)
    chain = draft.link(start if seq == 1 else mine.chains[seq - 1])
    message = replace(draft, chain=chain)
    return transcript.with_view(*me, state.epoch, mine.record(seq, chain)), message.to_bytes()


def receive(
    log: GroupLog, transcript: Transcript, sender: str, device: int, data: bytes
) -> Received:
    """Check and record a group message that arrived over `sender`'s pairwise session.

    `sender` and `device` are what the sealed envelope authenticated, never what the
    message says. Raises GroupMessageRejected (malformed, a non-member or removed
    sender, sent before we joined, a chain that does not link, a second different
    message at one position), GroupForked (sent under a membership state other than
    ours for that epoch) or MissingGroupChanges (a later epoch: hold it until the
    membership change arrives). Nothing changes unless it returns.
    """
    message = GroupMessage.from_bytes(data)
    source = (sender, device)
    if message.group_id != log.group_id:
        raise GroupMessageRejected("message is for another group")
    _check_sender(log, transcript, message, source)
    view = transcript.view(sender, device, message.epoch)
    if view.has(message.seq):
        if view.chains.get(message.seq, message.chain) != message.chain:
            raise GroupMessageRejected("a different message at a position already received")
        return Received(transcript, message, sender, device, True, ())
    if message.seq == 1:
        prev_chain = chain_start(message.group_id, message.epoch, message.state_hash, source)
    else:
        prev_chain = view.chains.get(message.seq - 1)
    if prev_chain is not None and message.link(prev_chain) != message.chain:
        raise GroupMessageRejected("the message does not continue its sender's chain")
    forks: list[Fork] = []
    expected = view.expected.get(message.seq)
    if expected is not None and expected[0] != message.chain[:SEEN_HASH_LEN]:
        forks.append(Fork(sender, device, message.epoch, message.seq, expected[1]))
    updated = transcript.with_view(
        sender, device, message.epoch, view.record(message.seq, message.chain)
    )
    if message.prev is not None and _ours(log, transcript.me, sender, message.prev[0]):
        before = updated.view(sender, device, message.prev[0])
        updated = updated.with_view(
            sender,
            device,
            message.prev[0],
            replace(before, known=max(before.known, message.prev[1])),
        )
    updated, reported = _take_seen(log, updated, message, source)
    return Received(updated, message, sender, device, False, (*forks, *reported))


def _check_sender(
    log: GroupLog, transcript: Transcript, message: GroupMessage, source: Source
) -> None:
    sender = source[0]
    if message.epoch > log.current.epoch:
        raise MissingGroupChanges(
            f"message names epoch {message.epoch}, we hold {log.current.epoch}",
            epoch=message.epoch,
        )
    state = log.state_at(message.epoch)
    if state is None:
        raise GroupMessageRejected("message was sent before we joined")
    if not state.is_member(transcript.me):
        raise GroupMessageRejected(f"we were not a member at epoch {state.epoch}")
    if state.hash != message.state_hash:
        raise GroupForked(f"{sender} sent under another membership state for epoch {state.epoch}")
    if not state.is_member(sender) or not log.current.is_member(sender):
        raise GroupMessageRejected(f"{sender} is not a member of this group")
    if source == (transcript.me, transcript.device):
        raise GroupMessageRejected("a message from this very device")


def _ours(log: GroupLog, me: str, user: str, epoch: int) -> bool:
    """Whether we and `user` were both members at `epoch`: only then do its messages of
    that epoch count for us."""
    state = log.state_at(epoch)
    return state is not None and state.is_member(me) and state.is_member(user)


def _take_seen(
    log: GroupLog, transcript: Transcript, message: GroupMessage, source: Source
) -> tuple[Transcript, list[Fork]]:
    """Count what the sender has seen that we have not; compare what we both have."""
    sender = source[0]
    forks = []
    for entry in message.seen:
        if (entry.user, entry.device) == source or not _ours(
            log, transcript.me, entry.user, entry.epoch
        ):
            continue  # about itself (its own chain says that), or not an epoch we shared
        view = transcript.view(entry.user, entry.device, entry.epoch)
        mine = (entry.user, entry.device) == (transcript.me, transcript.device)
        if view.has(entry.seq):
            chain = view.chains.get(entry.seq)
            if chain is not None and chain[:SEEN_HASH_LEN] != entry.chain16:
                forks.append(Fork(entry.user, entry.device, entry.epoch, entry.seq, sender))
        elif mine:
            # It saw a message from this device that this device never sent.
            forks.append(Fork(entry.user, entry.device, entry.epoch, entry.seq, sender))
        else:
            transcript = transcript.with_view(
                entry.user, entry.device, entry.epoch, view.expect(entry.seq, entry.chain16, sender)
            )
    return transcript, forks


def missed(transcript: Transcript) -> tuple[Missed, ...]:
    """Per member, the messages known to exist in our epochs that we never received."""
    counts: dict[str, int] = {}
    for (user, _, _), view in transcript.views.items():
        if view.missing > 0:
            counts[user] = counts.get(user, 0) + view.missing
    return tuple(Missed(user, count) for user, count in sorted(counts.items()))


@dataclass(frozen=True, slots=True)
class FanOut:
    """The devices a group message goes to, and members whose devices are unknown."""

    targets: tuple[Source, ...]
    unknown: tuple[str, ...]


def fan_out(log: GroupLog, device: int, devices: Mapping[str, Collection[int]]) -> FanOut:
    """Every verified device of every current member, except the sending device.

    `devices` maps a user to the device ids of their signed device list that this client
    verified (common/crypto/devices.py); a member missing from it is `unknown`: fetch
    and verify its list before sending, never guess.
    """
    targets: list[Source] = []
    unknown: list[str] = []
    for user in log.current.members:
        ids = devices.get(user)
        if ids is None:
            unknown.append(user)
            continue
        targets += [(user, d) for d in sorted(ids) if (user, d) != (log.me, device)]
    return FanOut(tuple(targets), tuple(unknown))
