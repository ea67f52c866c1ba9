"""Commands and client events applied to the model: the logic of the chat, tested
without a terminal."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final, Literal

from hushwire.client.errors import (
    ConnectionClosed,
    MessageHeld,
    MessageTooLong,
    UnknownContact,
    UnknownGroup,
)
from hushwire.client.events import GroupInfo, GroupLineItem
from hushwire.client.service import (
    ClientEvent,
    ConnectionState,
    GroupMessageReceived,
    GroupNotice,
    HistoryItem,
    HushwireClient,
    KeyChanged,
    MessageQuarantined,
    MessageReceived,
    MessageRejected,
    MessageSent,
    MessagesReleased,
    Notice,
    Presence,
    SentElsewhere,
    SessionRestarted,
    relay_error_text,
    restart_text,
)
from hushwire.client.text import safe_for_terminal
from hushwire.client.tui.commands import (
    COMMANDS,
    GROUP_COMMANDS,
    GROUP_HELP,
    HELP_KEYS,
    Command,
    CommandError,
    parse_input,
)
from hushwire.client.tui.model import HISTORY_ON_OPEN, ChatModel, Conversation, Line, LineKind
from hushwire.common.crypto.link import LinkOffer
from hushwire.common.errors import ErrorCode, HushwireError, RequestError

LINK_TTL: Final = 300.0  # seconds, as `hushwire link`

# --- controller --------------------------------------------------------------------


def error_text(exc: HushwireError) -> str:
    """One line for the user: no traceback, no internals."""
    if isinstance(exc, RequestError):
        if exc.code is ErrorCode.UNKNOWN_USER:
            return f"no such user on this relay ({exc.code.value}); see /who"
        return relay_error_text(exc)
    if isinstance(exc, ConnectionClosed):
        return f"not connected: {exc.message}"
    return exc.message


def _held_text(name: str) -> str:
    return (
        f"{name}'s identity key has changed: messages to {name} are held. Compare "
        f"safety numbers with /verify {name} (in person or another trusted channel), "
        f"then accept the new key with /trust {name} to send them."
    )


# Group notices that need the user's attention (shown as warnings, and pointed to from
# the conversation on screen): missed messages, forks, refused changes or messages, a
# vouched key that is not the pinned one, our removal. The rest are membership changes.
_ALERTS = ("missed", "forked", "refused", "identity key", "you were removed")


def _notice_kind(text: str) -> LineKind:
    return "warning" if any(a in text for a in _ALERTS) else "system"


def _group_line(item: GroupLineItem) -> Line:
    if item.kind == "event":
        return Line.info(item.text, _notice_kind(item.text), item.sent_at, item.uid)
    note = "failed" if item.status == "failed" else ""
    if item.kind == "out":
        return Line.message("out", "you", item.text, item.sent_at, item.uid, note)
    return Line.message("in", item.sender, item.text, item.sent_at, item.uid)


class ChatController:
    """Commands and client events applied to the model; the UI stays a thin shell.

    `background` runs work that outlives the command that started it (waiting for the
    new device of a `/link`) without holding up later input; the app redraws after it."""

    def __init__(
        self,
        client: HushwireClient,
        model: ChatModel,
        exit: Callable[[], None],
        background: Callable[[Awaitable[None]], object],
    ) -> None:
        self.client = client
        self.model = model
        self._exit = exit
        self._background = background
        self.link_ttl = LINK_TTL  # seconds a /link code stays valid
        # A history reload and a live message must not interleave (one could hide
        # the other), so both happen under this lock. Sending does not take it.
        self._view_lock = asyncio.Lock()
        self._shown_unread: list[str] = []  # uids shown in the open conversation, not yet marked
        self._shown_group_unread: list[str] = []  # the same, of group lines

    async def load(self) -> None:
        """Conversations and unread counts from the profile, before connecting."""
        for c in await self.client.contacts():
            conv = self.model.conversation(c.name)
            conv.unread = c.unread
            conv.key_changed = c.key_changed
        # Unread counts messages, as for contacts (notices are not counted).
        unread = Counter(i.gid for i in await self.client.groups.unread() if i.kind == "in")
        for info in await self.client.groups.list():
            self._group_info(info).unread = unread[info.gid]
        # To the console by name: the user may already have typed `/to NAME`.
        self.model.info(
            f"hushwire: {self.model.user}@{self.model.relay}. /to NAME starts a "
            "conversation, /to #GROUP opens a group, /who lists users, /help lists commands.",
            name="",
        )
        waiting = [e.name for e in self.model.listing() if e.unread]
        if waiting:
            self.model.info("unread messages from: " + ", ".join(waiting), name="")

    # --- input -----------------------------------------------------------------

    async def handle_input(self, text: str) -> None:
        try:
            parsed = parse_input(text)
        except CommandError as exc:
            self.model.info(str(exc), "error")
            return
        if parsed is None:
            return
        if isinstance(parsed, str):
            await self.send(parsed)
            return
        self.model.info(text.strip(), "command")
        try:
            await self._run(parsed)
        except UnknownContact:
            self.model.info(
                f"no contact named {parsed.target} yet: exchange a message first", "error"
            )
        except UnknownGroup as exc:
            # The client's text names the CLI's command; here it is /group.
            self.model.info(exc.message.replace("`hushwire group list`", "/group"), "error")
        except HushwireError as exc:
            self.model.info(error_text(exc), "error")

    async def _run(self, cmd: Command) -> None:
        if cmd.name == "quit":
            self._exit()
        elif cmd.name == "help":
            for spec in COMMANDS.values():
                self.model.info(f"  {spec.usage:<22} {spec.summary}")
            for usage, _ in GROUP_COMMANDS.values():
                self.model.info(f"    {usage}")
            self.model.info(GROUP_HELP)
            self.model.info(HELP_KEYS)
        elif cmd.name == "to":
            await self.open(cmd.target)
        elif cmd.name == "who":
            await self.who()
        elif cmd.name == "verify":
            await self.verify(cmd.target, mark=cmd.mark)
        elif cmd.name == "trust":
            await self.trust(cmd.target)
        elif cmd.name == "group":
            await self.group(cmd)
        elif cmd.name == "link":
            await self.link()
        elif cmd.name == "history":
            if self.model.current is None:
                self.model.info("no conversation: /to NAME first", "error")
                return
            await self.load_history(self.model.current, cmd.count)

    async def open(self, name: str) -> None:
        if name.startswith("#"):
            await self.open_group(name)
            return
        if name == self.model.user:
            self.model.info("that is you: pick someone else (see /who)", "error")
            return
        known = self.model.online
        if known and name not in known and name not in self.model.conversations:
            self.model.info(f"no user named {name} on this relay; see /who", "error")
            return
        self.model.select(name)
        await self.load_history(name, HISTORY_ON_OPEN)
        conv = self.model.conversation(name)
        if conv.key_changed:
            self.model.info(_held_text(name), "warning", name)

    async def load_history(self, name: str, count: int) -> None:
        if self.model.conversation(name).gid:
            await self.load_group_history(name, count)
            return
        async with self._view_lock:
            items = await self.client.history(name, count)
            if self.model.current == name:
                await self.client.mark_read(contact=name)
            # The count introduces the history, so it comes first.
            head = Line.info(
                f"{len(items)} earlier message(s) from your profile"
                if items
                else f"no messages with {name} yet"
            )
            self.model.set_lines(name, [head, *(self._history_line(i) for i in items)])

    def _history_line(self, item: HistoryItem) -> Line:
        note = "" if item.status in ("sent", "received", "read") else item.status
        sender = item.contact if item.direction == "in" else "you"
        kind: Literal["in", "out"] = "in" if item.direction == "in" else "out"
        return Line.message(kind, sender, item.text, item.sent_at, item.uid, note)

    async def send(self, text: str) -> None:
        name = self.model.current
        if name is None:
            self.model.info("no conversation: /to NAME first, then type your message", "error")
            return
        conv = self.model.conversation(name)
        if conv.gid:
            await self.send_group(conv, text)
            return
        try:
            result = await self.client.send(name, text)
        except MessageHeld:
            self.model.add(name, Line.message("out", "you", text, datetime.now(UTC), "", "held"))
            self.model.info(
                f"not sent: {name}'s identity key has changed. Check /verify "
                f"{name}, then /trust {name} to send it.",
                "error",
                name,
            )
            return
        except MessageTooLong as exc:
            self.model.info(f"not sent: {exc.message}", "error", name)
            return
        except HushwireError as exc:
            self.model.info(f"not sent: {error_text(exc)}", "error", name)
            return
        note = "queued" if result.queued else ""
        self.model.add(name, Line.message("out", "you", text, result.sent_at, result.uid, note))
        if result.queued and self.client.state != "connected":
            self.model.info("not connected: the message goes out when the relay is back", name=name)

    # --- groups ------------------------------------------------------------------

    def _group_info(self, info: GroupInfo) -> Conversation:
        """The group's conversation, with what the model keeps of `info`."""
        conv = self.model.group(info.gid, info.name)
        conv.members, conv.active = info.members, info.active
        return conv

    async def _resolve(self, name: str) -> GroupInfo:
        """A group by the name it is listed under (else by its name or id): UnknownGroup."""
        conv = self.model.find_group(name)
        return await self.client.groups.info(conv.gid if conv else name)

    async def open_group(self, name: str) -> None:
        conv = self._group_info(await self._resolve(name))
        self.model.select(conv.name)
        await self.load_group_history(conv.name, HISTORY_ON_OPEN)
        if not conv.active:
            self.model.info(f"you are no longer a member of {conv.name}", "warning")

    async def load_group_history(self, name: str, count: int) -> None:
        conv = self.model.conversation(name)
        async with self._view_lock:
            items = await self.client.groups.history(conv.gid, count)
            if self.model.current == name:
                await self.client.groups.mark_read(conv.gid)
            head = Line.info(
                f"{len(items)} earlier line(s) from your profile; members: "
                + ", ".join(conv.members)
            )
            self.model.set_lines(name, [head, *(_group_line(i) for i in items)])

    async def send_group(self, conv: Conversation, text: str) -> None:
        try:
            item = await self.client.groups.send(conv.gid, text)
        except MessageHeld as exc:
            self.model.info(
                f"not sent: {exc.contact}'s identity key has changed (nothing goes to the "
                f"group until you /verify {exc.contact}, then /trust {exc.contact})",
                "error",
                conv.name,
            )
            return
        except HushwireError as exc:
            self.model.info(f"not sent: {error_text(exc)}", "error", conv.name)
            return
        self.model.add(conv.name, _group_line(item))

    async def group(self, cmd: Command) -> None:
        """`/group`: list, create, add, remove, leave, info; a change shows in its
        conversation (as the line the client stores for it)."""
        groups = self.client.groups
        if not cmd.sub:
            infos = await groups.list()
            self.model.info(f"{len(infos)} group(s):" if infos else "no groups yet: /group create")
            for info in infos:
                conv = self._group_info(info)
                state = "" if info.active else ", left"
                self.model.info(f"  {conv.name}  {len(info.members)} members{state}")
            return
        if cmd.sub == "info":
            current = self.model.current or ""
            if not cmd.target and not self.model.find_group(current):
                self.model.info("usage: /group info #GROUP (or open the group first)", "error")
                return
            info = await self._resolve(cmd.target or current)
            self._show_group(info)
            return
        if cmd.sub == "create":
            info = await groups.create(cmd.target, cmd.members)
        else:
            gid = (await self._resolve(cmd.target)).gid
            if cmd.sub == "add":
                info = await groups.add(gid, cmd.members)
            elif cmd.sub == "remove":
                info = await groups.remove(gid, cmd.members)
            else:
                info = await groups.leave(gid)
        conv = self._group_info(info)
        if cmd.sub == "create":
            self.model.info(f"created {conv.name}: /to {conv.name} to talk there")

    def _show_group(self, info: GroupInfo) -> None:
        conv = self._group_info(info)
        state = "" if info.active else " (you are no longer a member)"
        self.model.info(f"{conv.name}{state}: id {info.gid}, epoch {info.epoch}")
        self.model.info(f"  admins   {', '.join(info.admins)}")
        for member in info.members:
            devices = ", ".join(str(d) for d in info.devices.get(member, ()))
            self.model.info(f"  member   {member} (devices {devices})")

    async def who(self) -> None:
        if self.client.state != "connected":
            self.model.info("not connected: online state unknown", "error")
            return
        users = await self.client.who()
        self.model.online.update(dict(users))
        self.model.info(f"{len(users)} user(s) on {self.model.relay}:")
        for user, online in sorted(users):
            label = "you" if user == self.model.user else ("online" if online else "offline")
            self.model.info(f"  {user:<32} {label}")

    async def verify(self, name: str, *, mark: bool) -> None:
        state = await self.client.contact_state(name)
        if mark:
            if state.key_changed:
                self.model.info(
                    f"{name}'s key has changed: /trust {name} first, then compare again", "error"
                )
                return
            await self.client.mark_verified(name)
            self.model.info(f"{name} is now marked as verified")
            return
        self._show_number(f"safety number with {name}:", await self.client.safety_number(name))
        if state.key_changed:
            self._show_number(
                f"{name}'s NEW key (not accepted yet) gives:",
                await self.client.safety_number(name, pending=True),
                "warning",
            )
            self.model.info(
                f"compare the new number with {name}; if it matches, /trust {name}", "warning"
            )
        elif state.verified:
            self.model.info(f"{name} is verified")
        else:
            self.model.info(
                f"{name} is NOT verified: compare these digits with {name} in "
                f"person or over another trusted channel, then /verify {name} mark"
            )

    def _show_number(self, title: str, number: str, kind: LineKind = "system") -> None:
        groups = number.split()
        self.model.info(title, kind)
        for row in range(0, len(groups), 4):
            self.model.info("    " + " ".join(groups[row : row + 4]), kind)

    async def trust(self, name: str) -> None:
        state = await self.client.contact_state(name)
        if not state.key_changed:
            self.model.info(f"{name}'s identity key has not changed; nothing to accept")
            return
        conv = self.model.conversation(name)
        conv.key_changed = False  # so a further change found while sending warns again
        released = await self.client.trust(name)
        self.model.info(
            f"accepted {name}'s new identity key (not verified: compare with /verify {name})"
        )
        # The flag follows the profile: sending the held messages may have met yet
        # another key, which then needs its own /trust (and says so).
        conv.key_changed = (await self.client.contact_state(name)).key_changed
        where = "sent" if self.client.state == "connected" else "queued for the relay"
        self.model.info(f"{released} held message(s) {where}")

    async def link(self) -> None:
        """Show a one-time link code and its expiry; the outcome is shown when the new
        device uses it (or the code expires)."""
        if self.client.state != "connected":
            self.model.info("not connected: linking needs the relay", "error")
            return
        offer, expires_at = await self.client.offer_link(self.link_ttl)
        code = offer.code.text()
        until = datetime.fromtimestamp(expires_at, UTC).strftime("%H:%M:%S UTC")
        self.model.info(f"link code: {code}")
        self.model.info(
            f"on the new machine: hushwire login --relay {self.model.relay} --link {code} "
            "--profile NEW_PROFILE"
        )
        self.model.info(f"the code works once and expires at {until}; waiting for the device")
        self._background(self._await_link(offer))

    async def _await_link(self, offer: LinkOffer) -> None:
        try:
            device = await self.client.accept_link(offer)
        except HushwireError as exc:
            self.model.info(f"linking failed: {error_text(exc)}", "error")
            return
        self.model.info(safe_for_terminal(f"linked {device.name} as device {device.id}"))

    # --- events ------------------------------------------------------------------

    async def _group_notice(self, event: GroupNotice) -> None:
        """A change or an alert, inline in the group's conversation; an alert about a
        group not on screen is pointed to from the one that is."""
        model = self.model
        with contextlib.suppress(UnknownGroup):
            self._group_info(await self.client.groups.info(event.gid))  # members, name
        conv = model.group(event.gid, event.group)
        line = Line.info(event.text, _notice_kind(event.text), event.sent_at, event.uid)
        if model.add(conv.name, line) and model.current == conv.name:
            self._shown_group_unread.append(event.uid)
        if line.kind == "warning" and model.current != conv.name:
            model.info(f"{conv.name}: {event.text} (/to {conv.name})", "warning")

    async def mark_shown_read(self) -> None:
        """Mark read, in one transaction, the messages handle_event showed since last time."""
        if self._shown_unread:
            uids, self._shown_unread = tuple(self._shown_unread), []
            await self.client.mark_read(uids=uids)
        if self._shown_group_unread:
            uids, self._shown_group_unread = tuple(self._shown_group_unread), []
            await self.client.groups.mark_read(uids=uids)

    async def handle_event(self, event: ClientEvent) -> None:
        """Apply one client event to the model; messages shown in the open conversation
        are marked read by the next `mark_shown_read`."""
        model = self.model
        if isinstance(event, MessageReceived):
            async with self._view_lock:
                line = Line.message("in", event.contact, event.text, event.sent_at, event.uid)
                if model.add(event.contact, line) and model.current == event.contact:
                    self._shown_unread.append(event.uid)
        elif isinstance(event, GroupMessageReceived):
            async with self._view_lock:
                conv = model.group(event.gid, event.group)
                kind: Literal["in", "out"] = "out" if event.own else "in"
                sender = "you" if event.own else event.sender
                note = "other device" if event.own else ""
                line = Line.message(kind, sender, event.text, event.sent_at, event.uid, note)
                if model.add(conv.name, line) and model.current == conv.name:
                    self._shown_group_unread.append(event.uid)
        elif isinstance(event, GroupNotice):
            await self._group_notice(event)
        elif isinstance(event, SentElsewhere):
            line = Line.message("out", "you", event.text, event.sent_at, event.uid, "other device")
            model.add(event.contact, line)
        elif isinstance(event, KeyChanged):
            conv = model.conversation(event.contact)
            if not conv.key_changed:
                conv.key_changed = True
                model.info("WARNING: " + _held_text(event.contact), "warning", event.contact)
                if model.current != event.contact:
                    model.info(
                        f"WARNING: {event.contact}'s identity key has changed "
                        f"(/to {event.contact} for details)",
                        "warning",
                    )
        elif isinstance(event, MessageQuarantined):
            model.info(
                f"a message from {event.contact} under the new, not yet accepted key is "
                f"held unread: /verify {event.contact}, then /trust {event.contact} to read it",
                "warning",
                event.contact,
            )
        elif isinstance(event, SessionRestarted):
            model.info(restart_text(event), "warning", event.contact)
        elif isinstance(event, MessageRejected):
            model.info(
                f"a message from {event.contact} was rejected and not shown: {event.reason}",
                "warning",
                event.contact,
            )
        elif isinstance(event, ConnectionState):
            model.set_connection(event.state, safe_for_terminal(event.detail))
            if event.state == "disconnected" and event.detail != "closed":
                model.info(f"disconnected: {event.detail}", "error")
            elif event.state == "connected":
                model.relay = self.client.relay  # another relay after a failover
                # Presence pushes only report changes: take the full picture once.
                with contextlib.suppress(ConnectionClosed, RequestError):
                    model.online.update(dict(await self.client.who()))
        elif isinstance(event, Presence):
            model.online[event.user] = event.online
        elif isinstance(event, MessageSent):
            model.settle(event.contact, event.uid)
            model.info("a queued message was sent", name=event.contact)
        elif isinstance(event, Notice):
            model.info(event.text, "warning")
        elif isinstance(event, MessagesReleased):
            pass  # `trust` reports the count itself, with sent/queued
