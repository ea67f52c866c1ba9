"""The chat state the screen shows: conversations (with contacts, and with groups under
`#name`) as bounded line buffers, unread counts, the current one, connection, presence
and group members. No I/O; text a peer controls is
neutralised where it enters (`Line.message`, `Line.info`)."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from hushwire.client.text import safe_for_terminal, safe_line

MAX_LINES: Final = 2000  # per conversation, and in the pane: memory stays bounded
HISTORY_ON_OPEN: Final = 50  # messages loaded from the profile by `/to NAME`
MAX_HISTORY: Final = MAX_LINES

LineKind = Literal["in", "out", "system", "command", "error", "warning"]


# --- model ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One entry of a conversation; `text` is already safe for the terminal."""

    kind: LineKind
    text: str
    sender: str = ""
    at: datetime | None = None
    uid: str = ""  # the profile's history row, to drop a message shown twice
    note: str = ""  # e.g. "queued", "held"

    @classmethod
    def message(
        cls,
        kind: Literal["in", "out"],
        sender: str,
        text: str,
        at: datetime,
        uid: str,
        note: str = "",
    ) -> Line:
        """A chat message; the text is neutralised here, at the model's boundary."""
        return cls(kind, _clean(text), _clean(sender), at, uid, note)

    @classmethod
    def info(
        cls, text: str, kind: LineKind = "system", at: datetime | None = None, uid: str = ""
    ) -> Line:
        return cls(kind, _clean(text), at=at, uid=uid)


def _clean(text: str) -> str:
    # Tabs are kept by safe_for_terminal; the pane would show them as ^I.
    return safe_for_terminal(text).replace("\t", "    ")


class Conversation:
    """The bounded line buffer of one contact, of one group (`gid` set), or of the
    console."""

    def __init__(self, name: str, max_lines: int = MAX_LINES) -> None:
        self.name = name
        self.lines: deque[Line] = deque(maxlen=max_lines)
        self.unread = 0
        self.key_changed = False
        self.gid = ""  # hex group id: a group conversation
        self.members: tuple[str, ...] = ()
        self.active = True  # False once we left or were removed
        self._uids: set[str] = set()

    def add(self, line: Line) -> bool:
        """Append; False (nothing added) for a message already in the buffer."""
        if line.uid and line.uid in self._uids:
            return False
        if len(self.lines) == self.lines.maxlen:
            self._uids.discard(self.lines[0].uid)
        self.lines.append(line)
        if line.uid:
            self._uids.add(line.uid)
        return True

    def replace(self, lines: Iterable[Line]) -> None:
        self.lines.clear()
        self._uids.clear()
        for line in lines:
            self.add(line)


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One row of the conversation list."""

    name: str
    unread: int
    online: bool | None
    key_changed: bool
    current: bool
    left: bool  # a group we left or were removed from


class ChatModel:
    """All the state the screen shows, with no I/O: the controller mutates it, the
    view observes appends (to extend the pane) and switches (to refill it)."""

    def __init__(self, user: str, relay: str, *, max_lines: int = MAX_LINES) -> None:
        self.user = user
        self.relay = relay
        self.max_lines = max_lines
        self.console = Conversation("", max_lines)  # system lines before any `/to`
        self.conversations: dict[str, Conversation] = {}
        self.current: str | None = None
        self.connection = "disconnected"
        self.connection_detail = "starting"
        self.online: dict[str, bool] = {}
        self.on_append: Callable[[Conversation, Line], None] | None = None
        self.on_switch: Callable[[Conversation], None] | None = None

    @property
    def shown(self) -> Conversation:
        """The conversation in the pane: the current contact's, else the console."""
        return self.conversations[self.current] if self.current else self.console

    def conversation(self, name: str) -> Conversation:
        conv = self.conversations.get(name)
        if conv is None:
            conv = self.conversations[name] = Conversation(name, self.max_lines)
        return conv

    def group(self, gid: str, name: str) -> Conversation:
        """The conversation of group `gid`, now called `name`: listed as `#name` (a
        rename moves it; a name another group holds gets the id's start appended)."""
        key = "#" + name
        conv = next((c for c in self.conversations.values() if c.gid == gid), None)
        taken = self.conversations.get(key)
        if taken is not None and taken is not conv:
            key = f"#{name}~{gid[:8]}"
        if conv is None:
            conv = self.conversation(key)
            conv.gid = gid
        elif conv.name != key:
            del self.conversations[conv.name]
            if self.current == conv.name:
                self.current = key
            conv.name = key
            self.conversations[key] = conv
        return conv

    def find_group(self, name: str) -> Conversation | None:
        """The group conversation listed as `#name` (with or without the `#`)."""
        conv = self.conversations.get("#" + name.removeprefix("#"))
        return conv if conv is not None and conv.gid else None

    def select(self, name: str) -> Conversation:
        """Make `name` current; its messages count as read from now on."""
        conv = self.conversation(name)
        self.current = name
        conv.unread = 0
        self._switched(conv)
        return conv

    def add(self, name: str | None, line: Line) -> bool:
        """Append to `name`'s conversation (None: the one shown; "": the console).
        Incoming messages to a conversation not on screen count as unread."""
        if name is None:
            conv = self.shown
        else:
            conv = self.conversation(name) if name else self.console
        if not conv.add(line):
            return False
        if line.kind == "in" and conv is not self.shown:
            conv.unread += 1
        if conv is self.shown and self.on_append is not None:
            self.on_append(conv, line)
        return True

    def info(self, text: str, kind: LineKind = "system", name: str | None = None) -> None:
        self.add(name, Line.info(text, kind))

    def set_lines(self, name: str, lines: Iterable[Line]) -> None:
        """Replace a conversation's buffer (history loaded from the profile)."""
        conv = self.conversation(name)
        conv.replace(lines)
        if conv is self.shown:
            self._switched(conv)

    def settle(self, name: str, uid: str) -> None:
        """Message `uid` to `name` reached the relay: drop its [queued]/[pending] note."""
        conv = self.conversation(name)
        for i, line in enumerate(conv.lines):
            if line.uid == uid and line.note:
                conv.lines[i] = dataclasses.replace(line, note="")
                if conv is self.shown:
                    self._switched(conv)
                return

    def set_connection(self, state: str, detail: str) -> None:
        self.connection = state
        self.connection_detail = detail

    def listing(self) -> list[ListEntry]:
        return [
            ListEntry(
                safe_line(name, 40),
                conv.unread,
                self.online.get(name),
                conv.key_changed,
                name == self.current,
                not conv.active,
            )
            for name, conv in sorted(self.conversations.items())
        ]

    def names(self) -> list[str]:
        """Contacts and relay users, for completion."""
        people = {n for n, c in self.conversations.items() if not c.gid} | set(self.online)
        return sorted(people - {self.user})

    def groups(self) -> list[str]:
        """`#name` of the groups we are in, for completion."""
        return sorted(n for n, c in self.conversations.items() if c.gid and c.active)

    def members(self, group: str) -> tuple[str, ...]:
        """The members of the group listed as `group`, for completion (without us)."""
        conv = self.find_group(group)
        return tuple(m for m in conv.members if m != self.user) if conv else ()

    def _switched(self, conv: Conversation) -> None:
        if self.on_switch is not None:
            self.on_switch(conv)
