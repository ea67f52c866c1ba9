"""Received group input: membership changes, welcomes and group messages.

Each arrives in a pairwise envelope that `SessionManager.receive` opened (the sender's
account and device are what its session authenticated) and is checked here by the rules
of docs/security.md, "Groups", with the sans-I/O core (common/chat_group_log.py,
common/chat_transcript.py). The caller runs `on_content` in the transaction that stores
the envelope's ratchet step, so the group's new state, its history line and the seen
envelope id are committed together; the returned events are shown after the commit.

- A change is applied to the state we hold; a duplicate is dropped silently, a stale one
  (a replay, a rollback) is refused and shown; one for a later epoch than the next is
  held until the changes in between arrive; a different change for an epoch we hold is
  a fork: the lower-hash change wins (`fork_winner`) and is adopted while nothing was
  built on our branch, which is shown; otherwise the fork is only shown.
- A welcome starts the group for a member just added (from the add's signer only).
- A group message's key note opens the payload sent once beside the envelopes; the
  message is checked against the transcript; what it reveals (missed messages, forks)
  is shown as notices. One naming a later epoch is held until the change arrives.
- Input sealed under a contact's changed identity that the user has not accepted is
  held (quarantine) until `trust`, like a 1:1 message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from hushwire.client.events import (
    ClientEvent,
    GroupMessageReceived,
    GroupNotice,
    MessageQuarantined,
    utc_from_ms,
)
from hushwire.client.events import MessageRejected as Rejected
from hushwire.client.group_store import GroupStore, HeldInput, StoredGroup
from hushwire.client.session import GroupContent, SessionManager
from hushwire.common.chat_group_log import (
    GroupLog,
    adopt_change,
    apply_change,
    fork_winner,
    join_from_create,
    join_from_welcome,
)
from hushwire.common.chat_groups import ChangeOp, ContentType, GroupChange, SignedChange
from hushwire.common.chat_transcript import (
    GroupMessage,
    Transcript,
    missed,
    new_transcript,
    receive,
)
from hushwire.common.crypto.group_payload import open_group_payload
from hushwire.common.errors import (
    CryptoError,
    GroupForked,
    MissingGroupChanges,
    StaleGroupChange,
)

MAX_RELEASE_ROUNDS: Final = 64  # held input is retried until a round applies nothing


def _names(users: tuple[str, ...] | list[str], me: str) -> str:
    return ", ".join("you" if user == me else user for user in users) or "nobody"


def describe_change(change: GroupChange, me: str) -> str:
    """What a membership change did, in one line for the conversation."""
    who = "you" if change.signer == me else change.signer
    match change.op:
        case ChangeOp.CREATE:
            others = [u for u in change.users if u != change.signer]
            return f"{who} created the group {change.name!r} with {_names(others, me)}"
        case ChangeOp.RENAME:
            return f"{who} renamed the group to {change.name!r}"
        case ChangeOp.ADD:
            return f"{who} added {_names(change.users, me)}"
        case ChangeOp.REMOVE:
            if me in change.users:
                return f"you were removed by {change.signer}: nothing more reaches you here"
            return f"{who} removed {_names(change.users, me)}"
        case ChangeOp.LEAVE:
            return f"{who} left the group"
        case ChangeOp.PROMOTE:
            return f"{who} made {_names(change.users, me)} admin"
        case _:
            return f"{who} made {_names(change.users, me)} no longer admin"


async def pinned_keys(sessions: SessionManager) -> dict[str, bytes]:
    """Every identity key this profile pinned (contacts, and our own): the keys group
    changes are checked with before any vouched key (common/chat_group_log.py)."""
    keys = {c.name: c.identity.sign_key for c in await sessions.store.list_contacts()}
    keys[sessions.user] = sessions.identity.sign_key
    return keys


class GroupInbox:
    """Checks and stores group input; see the module docstring."""

    def __init__(self, sessions: SessionManager, groups: GroupStore) -> None:
        self._sessions = sessions
        self._groups = groups

    @property
    def _me(self) -> str:
        return self._sessions.user

    async def event_line(
        self, group: GroupLog, text: str, sent_at_ms: int, events: list[ClientEvent]
    ) -> None:
        """Store `text` as an event line of `group`'s conversation and queue its notice."""
        now = self._sessions.now_ms()
        gid = group.group_id.hex()
        uid = await self._groups.add_line(
            gid, "event", "received", sender="", device=0, sent_at_ms=sent_at_ms, now_ms=now,
            text=text,
        )  # fmt: skip
        events.append(GroupNotice(group.current.name, gid, text, uid, utc_from_ms(sent_at_ms)))

    async def on_content(self, got: GroupContent, payload: bytes | None) -> list[ClientEvent]:
        """Check and store one piece of group input (in the caller's transaction)."""
        events: list[ClientEvent] = []
        data = got.data
        if got.kind == ContentType.GROUP_MESSAGE:
            try:
                if payload is None:
                    raise CryptoError("a group key note without its payload")
                data = open_group_payload(got.data, payload)
            except CryptoError as exc:
                return [Rejected(got.contact, f"group message: {exc.message}")]
        held = HeldInput(0, "", "", got.kind, got.contact, got.device, got.sent_at_ms, data)
        if got.key_changed:
            # Quarantine: shown only once the user accepts the new key (`trust`).
            await self._hold("quarantine", held)
            return [MessageQuarantined(got.contact)]
        if not await self._apply(held, events):
            await self._hold("missing", held)
        else:
            await self._release(events)
        return events

    async def release_quarantined(self, contact: str) -> list[ClientEvent]:
        """After `trust`: apply what `contact` sent under the key now accepted."""
        events: list[ClientEvent] = []
        for item in await self._groups.held("quarantine", contact):
            await self._groups.drop_held(item.uid)
            if not await self._apply(item, events):
                await self._hold("missing", item)
        await self._release(events)
        return events

    async def _hold(self, reason: str, item: HeldInput) -> None:
        await self._groups.hold(
            reason, item.kind, item.sender, item.device, item.sent_at_ms, item.data,
            self._sessions.now_ms(),
        )  # fmt: skip

    async def _release(self, events: list[ClientEvent]) -> None:
        """Try held input again until a round applies nothing (a change that arrived
        may let held changes and messages of the next epochs through)."""
        for _ in range(MAX_RELEASE_ROUNDS):
            progress = False
            for item in await self._groups.held("missing"):
                if await self._apply(item, events):
                    await self._groups.drop_held(item.uid)
                    progress = True
            if not progress:
                return

    async def _apply(self, item: HeldInput, events: list[ClientEvent]) -> bool:
        """Apply one input; False if it must wait for missing changes (hold it)."""
        if item.kind == ContentType.GROUP_CHANGE:
            return await self._change(item, events)
        if item.kind == ContentType.GROUP_WELCOME:
            await self._welcome(item, events)
            return True
        return await self._message(item, events)

    # --- changes ----------------------------------------------------------------------

    async def _change(self, item: HeldInput, events: list[ClientEvent]) -> bool:
        try:
            signed = SignedChange.from_bytes(item.data)
        except CryptoError as exc:
            events.append(Rejected(item.sender, f"group change: {exc.message}"))
            return True
        change = signed.change
        group = await self._groups.get(change.group_id)
        pinned = await pinned_keys(self._sessions)
        if group is None or (not group.log.active and change.op is ChangeOp.CREATE):
            if change.op is not ChangeOp.CREATE:
                return True  # not ours (yet): an added member starts from its welcome
            try:
                log = join_from_create(self._me, item.data, pinned)
            except CryptoError as exc:
                events.append(Rejected(item.sender, f"group create: {exc.message}"))
                return True
            await self._joined(log, change, item, pinned, events)
            return True
        log = group.log
        try:
            updated = apply_change(log, item.data, pinned)
        except StaleGroupChange:
            # The very change from its signer again is harmless (an added member gets
            # the add in its welcome and as a change); anything else old is shown.
            if item.data not in log.changes or item.sender != change.signer:
                await self.event_line(
                    log,
                    f"refused a stale membership change from {item.sender} (epoch "
                    f"{change.epoch}, we are at {log.current.epoch}): a replay or a rollback",
                    item.sent_at_ms,
                    events,
                )
            return True
        except MissingGroupChanges:
            return False
        except GroupForked:
            await self._fork(group, item, pinned, events)
            return True
        except CryptoError as exc:
            await self.event_line(
                log, f"refused a membership change from {item.sender}: {exc.message}",
                item.sent_at_ms, events,
            )  # fmt: skip
            return True
        await self._groups.save(updated, group.transcript, self._sessions.now_ms())
        await self.event_line(updated, describe_change(change, self._me), item.sent_at_ms, events)
        await self._conflicts(updated, pinned, item.sent_at_ms, events)
        return True

    async def _joined(
        self,
        log: GroupLog,
        change: GroupChange,
        item: HeldInput,
        pinned: Mapping[str, bytes],
        events: list[ClientEvent],
    ) -> None:
        transcript = new_transcript(log, self._sessions.device)
        await self._groups.save(log, transcript, self._sessions.now_ms())
        await self.event_line(log, describe_change(change, self._me), item.sent_at_ms, events)
        await self._conflicts(log, pinned, item.sent_at_ms, events)

    async def _conflicts(
        self, log: GroupLog, pinned: Mapping[str, bytes], sent_at_ms: int, events: list[ClientEvent]
    ) -> None:
        for user in log.key_conflicts(pinned):
            await self.event_line(
                log,
                f"the identity key an admin vouched for {user} is not the one pinned for "
                f"{user}: compare safety numbers (`hushwire verify {user}`) before trusting",
                sent_at_ms,
                events,
            )

    async def _fork(
        self,
        group: StoredGroup,
        item: HeldInput,
        pinned: Mapping[str, bytes],
        events: list[ClientEvent],
    ) -> None:
        """Two valid changes for one epoch: settle on the lower hash while nothing was
        built on our branch (docs/security.md, "Concurrent changes"); show it either way."""
        log = group.log
        theirs = SignedChange.from_bytes(item.data).change
        epoch = theirs.epoch
        ours_wire = log.changes[epoch - log.join_epoch]
        ours = SignedChange.from_bytes(ours_wire).change
        what = (
            f"the group's history forked at epoch {epoch}: {describe_change(theirs, self._me)} "
            f"conflicts with {describe_change(ours, self._me)}"
        )
        if fork_winner(ours_wire, item.data) == ours_wire:
            text = f"{what}; kept ours (every member settles on the same one)"
        elif epoch == log.current.epoch and epoch > log.join_epoch:
            adopted = adopt_change(log, item.data, pinned)
            transcript = group.transcript.forget_from(epoch)
            await self._groups.save(adopted, transcript, self._sessions.now_ms())
            log = adopted
            text = f"{what}; adopted theirs (every member settles on it), undoing ours"
        else:
            text = f"{what}; changes were made since, so it is for you to settle"
        await self.event_line(log, text, item.sent_at_ms, events)

    # --- welcomes ---------------------------------------------------------------------

    async def _welcome(self, item: HeldInput, events: list[ClientEvent]) -> None:
        pinned = await pinned_keys(self._sessions)
        try:
            log = join_from_welcome(self._me, item.sender, item.data, pinned)
        except CryptoError as exc:
            events.append(Rejected(item.sender, f"group welcome: {exc.message}"))
            return
        existing = await self._groups.get(log.group_id)
        if existing is not None and existing.log.active:
            return  # we hold the group already (the add reached us as a change)
        change = SignedChange.from_bytes(log.changes[0]).change
        await self._joined(log, change, item, pinned, events)

    # --- messages ---------------------------------------------------------------------

    async def _message(self, item: HeldInput, events: list[ClientEvent]) -> bool:
        try:
            group_id = GroupMessage.from_bytes(item.data).group_id
        except CryptoError as exc:
            events.append(Rejected(item.sender, f"group message: {exc.message}"))
            return True
        group = await self._groups.get(group_id)
        if group is None:
            return False  # its welcome may still be on the way: held (bounded) until then
        log, before = group.log, group.transcript
        try:
            got = receive(log, before, item.sender, item.device, item.data)
        except MissingGroupChanges:
            return False
        except GroupForked as exc:
            await self.event_line(
                log, f"refused a message from {item.sender}: {exc.message} (a forked history)",
                item.sent_at_ms, events,
            )  # fmt: skip
            return True
        except CryptoError as exc:
            events.append(Rejected(item.sender, f"group message: {exc.message}"))
            return True
        if got.duplicate:
            return True
        now = self._sessions.now_ms()
        await self._groups.save(log, got.transcript, now)
        own = item.sender == self._me
        gid = group_id.hex()
        uid = await self._groups.add_line(
            gid, "out" if own else "in", "sent" if own else "received", sender=item.sender,
            device=item.device, sent_at_ms=item.sent_at_ms, now_ms=now, text=got.message.text,
        )  # fmt: skip
        events.append(
            GroupMessageReceived(
                log.current.name, gid, item.sender, item.device, utc_from_ms(item.sent_at_ms),
                got.message.text, uid, own,
            )
        )  # fmt: skip
        for fork in got.forks:
            await self.event_line(
                log,
                f"the history forked: {fork.reported_by} was shown a different message from "
                f"{fork.user} (device {fork.device}, epoch {fork.epoch}, #{fork.seq}) than "
                "this device",
                item.sent_at_ms,
                events,
            )
        await self._missed(log, before, got.transcript, item.sent_at_ms, events)
        return True

    async def _missed(
        self,
        log: GroupLog,
        before: Transcript,
        after: Transcript,
        sent_at_ms: int,
        events: list[ClientEvent],
    ) -> None:
        """A notice for each member whose count of messages known but never received
        went up: "you may have missed N messages from X"."""
        old = {m.user: m.count for m in missed(before)}
        for m in missed(after):
            if m.count > old.get(m.user, 0):
                plural = "message" if m.count == 1 else "messages"
                await self.event_line(
                    log, f"you may have missed {m.count} {plural} from {m.user}", sent_at_ms,
                    events,
                )  # fmt: skip
