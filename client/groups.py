"""Group conversations for one profile: the API the CLI and the TUI use.

    await client.groups.create("team", ["bob", "carol"])
    await client.groups.send("team", "hi all")
    await client.groups.add("team", ["dave"]);  remove, leave, rename
    client.groups.list(), info("team"), history("team"), unread(), mark_read(...)

Names: a group is found by its name (a leading `#` is allowed) or by its hex id (names
may repeat across groups; a name that fits several of the groups we are in is refused).
Every change is signed here, applied locally, stored with a line in the conversation and
sent, as a pairwise envelope (content type 0x03), to every device of every member of the
state before and after it and to our other devices, in one `send_devices`; an add is
followed by a welcome (0x04) to the added members' devices. A group message is composed
on the transcript, encrypted once (`seal_group_payload`), and its key note (0x02) sealed
for every device of every member and our other devices, the payload once beside them
(docs/protocol.md, "Groups"). Receiving is client/group_inbox.py.

A change or message needs a connection to start (a new member's key is fetched, a send
first waits behind older ones). Once applied locally it is kept in the profile until the
relay commits it, and sent again after a lost connection (client/group_outbox.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from hushwire.client.connection import RelayConnection
from hushwire.client.devices import DeviceLists
from hushwire.client.errors import (
    ConnectionClosed,
    GroupCommandError,
    MessageHeld,
    MessageTooLong,
    UnknownGroup,
)
from hushwire.client.events import (
    ClientEvent,
    GroupInfo,
    GroupLineItem,
    GroupNotice,
    Notice,
    utc_from_ms,
)
from hushwire.client.group_fanout import pin_member
from hushwire.client.group_inbox import describe_change
from hushwire.client.group_outbox import GroupOutbox
from hushwire.client.group_store import GroupLine, GroupSend, GroupStore, StoredGroup
from hushwire.client.session import SessionManager
from hushwire.common.chat_group_log import GroupLog, create_group, make_welcome, propose
from hushwire.common.chat_groups import (
    MAX_MEMBERS,
    ChangeOp,
    ContentType,
    SignedChange,
    check_group_name,
    encode_content,
)
from hushwire.common.chat_transcript import MAX_TEXT_BYTES, compose, new_transcript
from hushwire.common.crypto.group_payload import seal_group_payload
from hushwire.common.errors import CryptoError, RequestError
from hushwire.common.messages import FEATURE_GROUP_PAYLOAD
from hushwire.common.names import check_username

HISTORY_DEFAULT: Final = 200
# Applies a change or message in the caller's transaction; returns the sends carrying it.
Commit = Callable[[], Awaitable[list[GroupSend]]]


def _username(name: str) -> str:
    try:
        return check_username(name)
    except RequestError as exc:
        raise GroupCommandError(exc.message) from None


class Groups:
    """The groups of one profile; `conn_of` gives the live connection or raises
    ConnectionClosed."""

    def __init__(
        self,
        sessions: SessionManager,
        devices: DeviceLists,
        emit: Callable[[ClientEvent], None],
        conn_of: Callable[[], RelayConnection],
    ) -> None:
        self._sessions = sessions
        self._devices = devices
        self._emit = emit
        self._conn_of = conn_of
        self.store = GroupStore(sessions.store)
        self.outbox = GroupOutbox(sessions, devices, self.store, emit)

    async def flush(self, conn: RelayConnection) -> int:
        """Send the changes and messages still waiting for the relay (after a login); one
        blocked by a member's changed key waits for `trust` and is shown."""
        async with self.outbox.lock:
            try:
                return await self.outbox.flush(conn)
            except MessageHeld as exc:
                self._emit(Notice(f"a group send waits: {exc.message}"))
                return 0

    async def _commit(self, conn: RelayConnection, commit: Commit, what: str) -> None:
        """Send what waits, then run `commit` in one transaction (it applies a change or
        a message locally and returns the sends that carry it) and send those. Their
        refusal is raised; a lost connection keeps them for the next login."""
        async with self.outbox.lock:
            await self.outbox.flush(conn)
            now = self._sessions.now_ms()
            async with self._sessions.store.transaction():
                sends = await commit()
                for send in sends:
                    await self.store.keep_send(send, now)
            try:
                await self.outbox.flush(conn, frozenset(s.uid for s in sends))
            except ConnectionClosed as exc:
                raise ConnectionClosed(
                    f"{exc.message}; the {what} is kept and goes out after the next login"
                ) from None

    @property
    def _me(self) -> str:
        return self._sessions.user

    # --- looking groups up ----------------------------------------------------------

    async def _find(self, name: str) -> StoredGroup:
        key = name.removeprefix("#")
        groups = await self.store.all()
        found = [g for g in groups if g.gid == key.lower()]
        if not found:
            named = [g for g in groups if g.log.current.name == key]
            found = [g for g in named if g.log.active] or named
        if len(found) == 1:
            return found[0]
        if found:
            ids = ", ".join(g.gid for g in found)
            raise UnknownGroup(f"several groups are named {key!r}; name one by its id: {ids}")
        raise UnknownGroup(f"no group named {key!r} here; `hushwire group list` shows yours")

    async def _info(self, group: StoredGroup, unread: dict[str, int]) -> GroupInfo:
        state = group.log.current
        devices = {}
        for member in state.members:
            dlist = await self._sessions.lists.get(member)
            ids = {d.id for d in dlist.devices} if dlist is not None else {1}
            if member == self._me:
                ids.add(self._sessions.device)
            devices[member] = tuple(sorted(ids))
        return GroupInfo(
            state.name, group.gid, state.epoch, state.members, state.admins, devices,
            group.log.active, unread.get(group.gid, 0),
        )  # fmt: skip

    async def list(self) -> list[GroupInfo]:
        """Every group this profile holds (those we left too), by name."""
        unread = await self.store.unread_counts()
        infos = [await self._info(g, unread) for g in await self.store.all()]
        return sorted(infos, key=lambda i: (not i.active, i.name, i.gid))

    async def info(self, name: str) -> GroupInfo:
        """Members, admins, epoch and each member's devices (UnknownGroup)."""
        return await self._info(await self._find(name), await self.store.unread_counts())

    def _item(self, group: GroupLog, line: GroupLine) -> GroupLineItem:
        return GroupLineItem(
            group.current.name, line.gid, line.kind, line.sender, line.device, line.text,
            utc_from_ms(line.sent_at_ms), line.status, line.uid,
        )  # fmt: skip

    async def history(self, name: str, limit: int = HISTORY_DEFAULT) -> list[GroupLineItem]:
        """The group's conversation, oldest first: messages and event lines."""
        group = await self._find(name)
        return [self._item(group.log, line) for line in await self.store.lines(group.gid, limit)]

    async def unread(self) -> list[GroupLineItem]:
        """Received lines (messages and events) not yet marked read, oldest first."""
        logs = {g.gid: g.log for g in await self.store.all()}
        return [
            self._item(logs[line.gid], line)
            for line in await self.store.unread()
            if line.gid in logs
        ]

    async def mark_read(self, name: str | None = None, uids: tuple[str, ...] = ()) -> None:
        gid = None if name is None else (await self._find(name)).gid
        await self.store.mark_read(uids, gid)

    # --- changes --------------------------------------------------------------------

    async def _line(self, log: GroupLog, text: str, sent_at_ms: int) -> None:
        gid = log.group_id.hex()
        uid = await self.store.add_line(
            gid, "event", "read", sender="", device=0, sent_at_ms=sent_at_ms,
            now_ms=self._sessions.now_ms(), text=text,
        )  # fmt: skip
        self._emit(GroupNotice(log.current.name, gid, text, uid, utc_from_ms(sent_at_ms)))

    async def create(self, name: str, members: Iterable[str]) -> GroupInfo:
        """A new group with us as its admin and `members`; every member's devices get
        the signed create. Raises GroupCommandError, RequestError (unknown_user...)."""
        try:
            name = check_group_name(name)
        except ValueError as exc:
            raise GroupCommandError(str(exc)) from None
        others = sorted({_username(m) for m in members} - {self._me})
        if not others:
            raise GroupCommandError("a group needs at least one member besides you")
        if len(others) + 1 > MAX_MEMBERS:
            raise GroupCommandError(f"a group has at most {MAX_MEMBERS} members, you included")
        if any(g.log.active and g.log.current.name == name for g in await self.store.all()):
            raise GroupCommandError(f"you are already in a group named {name!r}")
        conn = self._conn_of()
        keys = {m: await pin_member(self._sessions, self._devices, conn, m) for m in others}
        now = self._sessions.now_ms()
        log, change = create_group(self._sessions.identity, self._me, name, keys, now)

        async def commit() -> list[GroupSend]:
            await self.store.save(log, new_transcript(log, self._sessions.device), now)
            text = describe_change(SignedChange.from_bytes(change).change, self._me)
            await self._line(log, text, now)
            return [GroupSend.new(tuple(others), encode_content(ContentType.GROUP_CHANGE, change))]

        await self._commit(conn, commit, "change")
        return await self.info(log.group_id.hex())

    async def add(self, name: str, members: Iterable[str]) -> GroupInfo:
        """Add members (admins only); they get a welcome from us, no history."""
        return await self._change(name, ChangeOp.ADD, users=members)

    async def remove(self, name: str, members: Iterable[str]) -> GroupInfo:
        """Remove members (admins only): their devices get no key for anything after."""
        return await self._change(name, ChangeOp.REMOVE, users=members)

    async def leave(self, name: str) -> GroupInfo:
        """Leave the group (the last admin must make someone else admin first)."""
        return await self._change(name, ChangeOp.LEAVE)

    async def rename(self, name: str, new_name: str) -> GroupInfo:
        try:
            new_name = check_group_name(new_name)
        except ValueError as exc:
            raise GroupCommandError(str(exc)) from None
        return await self._change(name, ChangeOp.RENAME, new_name=new_name)

    async def promote(self, name: str, members: Iterable[str]) -> GroupInfo:
        return await self._change(name, ChangeOp.PROMOTE, users=members)

    async def _change(
        self, name: str, op: ChangeOp, *, users: Iterable[str] = (), new_name: str = ""
    ) -> GroupInfo:
        group = await self._find(name)
        log, state = group.log, group.log.current
        shown = f"#{state.name}"
        if not log.active:
            raise GroupCommandError(f"you are no longer a member of {shown}")
        if op is not ChangeOp.LEAVE and not state.is_admin(self._me):
            raise GroupCommandError(f"you are not an admin of {shown}; ask one of: "
                                    f"{', '.join(state.admins)}")  # fmt: skip
        whom = sorted({_username(u) for u in users})
        if op is ChangeOp.ADD:
            if already := [u for u in whom if state.is_member(u)]:
                raise GroupCommandError(f"already in {shown}: {', '.join(already)}")
            if len(state.members) + len(whom) > MAX_MEMBERS:
                raise GroupCommandError(f"a group has at most {MAX_MEMBERS} members")
        if op is ChangeOp.REMOVE:
            if self._me in whom:
                raise GroupCommandError(f"to leave {shown}, use `group leave`")
            if strangers := [u for u in whom if not state.is_member(u)]:
                raise GroupCommandError(f"not in {shown}: {', '.join(strangers)}")
        conn = self._conn_of()
        keys = {u: await pin_member(self._sessions, self._devices, conn, u) for u in whom}
        for member in state.members:
            await pin_member(self._sessions, self._devices, conn, member)
        now = self._sessions.now_ms()
        try:
            updated, change = propose(
                log, self._sessions.identity, op, now, users=whom, name=new_name, keys=keys
            )
        except CryptoError as exc:
            raise GroupCommandError(f"{shown}: {exc.message}") from None

        recipients = tuple(sorted({*state.members, *whom} - {self._me}))

        async def commit() -> list[GroupSend]:
            current = await self.store.get(log.group_id)
            if current is None or current.log.current.hash != state.hash:
                raise GroupCommandError(f"{shown} changed meanwhile; nothing was sent: try again")
            await self.store.save(updated, current.transcript, now)
            text = describe_change(SignedChange.from_bytes(change).change, self._me)
            await self._line(updated, text, now)
            sends = [GroupSend.new(recipients, encode_content(ContentType.GROUP_CHANGE, change))]
            if op is ChangeOp.ADD:  # the welcome follows the change
                welcome = encode_content(ContentType.GROUP_WELCOME, make_welcome(updated))
                sends.append(GroupSend.new(tuple(whom), welcome, own_devices=False))
            return sends

        await self._commit(conn, commit, "change")
        return await self.info(log.group_id.hex())

    # --- messages -------------------------------------------------------------------

    async def send(self, name: str, text: str) -> GroupLineItem:
        """Send one message to every member's devices; returns its history line once
        the relay committed it. Raises GroupCommandError, MessageTooLong, MessageHeld (a
        member's key changed: kept until `trust`), RequestError (then the line is failed),
        ConnectionClosed (once applied: kept, sent after the next login)."""
        group = await self._find(name)
        log = group.log
        if not log.active:
            raise GroupCommandError(f"you are no longer a member of #{log.current.name}")
        if not text.strip():
            raise GroupCommandError("empty message: nothing to send")
        size = len(text.encode("utf-8"))
        if size > MAX_TEXT_BYTES:
            raise MessageTooLong(size, MAX_TEXT_BYTES)
        conn = self._conn_of()
        if not conn.supports(FEATURE_GROUP_PAYLOAD):
            raise GroupCommandError(
                "this relay cannot carry group messages (it predates them): "
                "ask its operator to upgrade hushwire-relay"
            )
        for member in log.current.members:
            await pin_member(self._sessions, self._devices, conn, member)
        line: list[GroupLine] = []

        async def commit() -> list[GroupSend]:
            current = await self.store.get(log.group_id)
            if current is None or not current.log.active:
                raise GroupCommandError(f"you are no longer a member of #{log.current.name}")
            transcript, message = compose(current.log, current.transcript, text)
            note, payload = seal_group_payload(message)
            now = self._sessions.now_ms()
            await self.store.save(current.log, transcript, now)
            uid = await self.store.add_line(
                group.gid, "out", "pending", sender=self._me, device=self._sessions.device,
                sent_at_ms=now, now_ms=now, text=text,
            )  # fmt: skip
            line.append(
                GroupLine(0, uid, group.gid, "out", "sent", self._me, self._sessions.device,
                          now, text)
            )  # fmt: skip
            content = encode_content(ContentType.GROUP_MESSAGE, note)
            recipients = tuple(m for m in current.log.current.members if m != self._me)
            return [GroupSend.new(recipients, content, payload, line=uid)]

        await self._commit(conn, commit, "message")
        return self._item(log, line[0])
