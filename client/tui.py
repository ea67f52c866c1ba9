"""`hushwire chat`: the full-screen terminal chat (prompt_toolkit; the only UI code).

Three layers, so the logic is testable without a terminal:

    ChatModel        pure state: conversations (bounded line buffers), unread counts,
                     the current contact, connection and presence; no I/O.
    parse_input()    one typed line -> a Command, a message text, or a CommandError.
    ChatController   runs commands and client events against HushwireClient + ChatModel.
    ChatApp          the prompt_toolkit Application: conversation list | message pane,
                     input line with completion, status bar; background work runs under
                     app.create_background_task().

Every piece of text a peer controls (message text, rejection reasons, notices) passes
through `safe_for_terminal` before it reaches the screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import (
    Float,
    FloatContainer,
    HSplit,
    Layout,
    VSplit,
    Window,
)
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.lexers import Lexer
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style
from prompt_toolkit.widgets import TextArea

from hushwire.client.errors import ConnectionClosed, MessageHeld, MessageTooLong, UnknownContact
from hushwire.client.service import (
    ClientEvent,
    ConnectionState,
    HistoryItem,
    HushwireClient,
    KeyChanged,
    MessageReceived,
    MessageRejected,
    MessageSent,
    MessagesReleased,
    Notice,
    Presence,
    relay_error_text,
)
from hushwire.client.text import safe_for_terminal
from hushwire.common.errors import ErrorCode, HushwireError, RequestError
from hushwire.common.names import is_valid_username

log = logging.getLogger("hushwire.tui")

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
    def info(cls, text: str, kind: LineKind = "system") -> Line:
        return cls(kind, _clean(text))


def _clean(text: str) -> str:
    # Tabs are kept by safe_for_terminal; the pane would show them as ^I.
    return safe_for_terminal(text).replace("\t", "    ")


class Conversation:
    """The bounded line buffer of one contact (or of the console)."""

    def __init__(self, name: str, max_lines: int = MAX_LINES) -> None:
        self.name = name
        self.lines: deque[Line] = deque(maxlen=max_lines)
        self.unread = 0
        self.key_changed = False
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

    def set_connection(self, state: str, detail: str) -> None:
        self.connection = state
        self.connection_detail = detail

    def listing(self) -> list[ListEntry]:
        return [
            ListEntry(
                name, conv.unread, self.online.get(name), conv.key_changed, name == self.current
            )
            for name, conv in sorted(self.conversations.items())
        ]

    def names(self) -> list[str]:
        """Contacts and relay users, for completion."""
        return sorted((set(self.conversations) | set(self.online)) - {self.user})

    def _switched(self, conv: Conversation) -> None:
        if self.on_switch is not None:
            self.on_switch(conv)


# --- commands ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandSpec:
    usage: str
    summary: str
    takes_name: bool = False


COMMANDS: Final[dict[str, CommandSpec]] = {
    "to": CommandSpec("/to NAME", "talk to NAME (loads recent history)", True),
    "who": CommandSpec("/who", "everyone on the relay, online or not"),
    "verify": CommandSpec(
        "/verify NAME [mark]", "safety number with NAME; `mark` once it matched", True
    ),
    "trust": CommandSpec("/trust NAME", "accept NAME's changed key, send held messages", True),
    "history": CommandSpec("/history [N]", f"the last N messages here (default {HISTORY_ON_OPEN})"),
    "help": CommandSpec("/help", "commands and keys"),
    "quit": CommandSpec("/quit", "leave (also `exit`, Ctrl-C, Ctrl-D on an empty line)"),
}

HELP_KEYS: Final = (
    "keys: Enter sends to the current conversation; Tab completes commands and names; "
    "Up/Down recall what you typed; PageUp/PageDown scroll; //text sends a line that "
    "starts with /"
)


class CommandError(ValueError):
    """A typed line that is not a valid command; the text says what to type instead."""


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    target: str = ""
    count: int = 0
    mark: bool = False


def parse_input(text: str) -> Command | str | None:
    """A Command, the text of a message to send, or None for a blank line.

    Raises CommandError for an unknown command or bad arguments. `exit` alone quits;
    a leading `//` sends the rest as a message starting with `/`.
    """
    stripped = text.strip()
    if not stripped:
        return None
    if stripped == "exit":
        return Command("quit")
    if stripped.startswith("//"):
        return text.lstrip()[1:]
    if not stripped.startswith("/"):
        return text
    word, *args = stripped[1:].split()
    spec = COMMANDS.get(word)
    if spec is None:
        guess = difflib.get_close_matches(word, COMMANDS, n=1)
        hint = f"did you mean /{guess[0]}? " if guess else ""
        raise CommandError(f"unknown command /{safe_for_terminal(word)}: {hint}see /help")

    def usage() -> CommandError:
        return CommandError(f"usage: {spec.usage}")

    if spec.takes_name:
        if not args:
            raise usage()
        name = args[0]
        if not is_valid_username(name):
            raise CommandError(
                f"invalid name {safe_for_terminal(name)!r}: 1-32 characters, a-z first, "
                "then a-z 0-9 _ . -"
            )
        if word == "verify" and args[1:] == ["mark"]:
            return Command(word, name, mark=True)
        if len(args) > 1:
            raise usage()
        return Command(word, name)
    if word == "history":
        if len(args) > 1:
            raise usage()
        if not args:
            return Command(word, count=HISTORY_ON_OPEN)
        if not args[0].isdigit() or not 1 <= int(args[0]) <= MAX_HISTORY:
            raise CommandError(f"/history N: N is a number from 1 to {MAX_HISTORY}")
        return Command(word, count=int(args[0]))
    if args:
        raise usage()
    return Command(word)


class ChatCompleter(Completer):
    """Command names after `/`, then contact names for commands that take one."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._names = names

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        text = document.text_before_cursor.lstrip()
        if not text.startswith("/") or text.startswith("//"):
            return
        if " " not in text:
            for name, spec in COMMANDS.items():
                if f"/{name}".startswith(text):
                    suffix = " " if spec.usage != f"/{name}" else ""
                    yield Completion(
                        f"/{name}{suffix}",
                        -len(text),
                        display=f"/{name}",
                        display_meta=spec.summary,
                    )
            return
        word, _, rest = text[1:].partition(" ")
        spec = COMMANDS.get(word)
        if spec is None or not spec.takes_name:
            return
        rest = rest.lstrip()
        if " " in rest:
            tail = rest.split(" ", 1)[1].lstrip()
            if word == "verify" and "mark".startswith(tail) and " " not in tail:
                yield Completion("mark", -len(tail))
            return
        for name in self._names():
            if name.startswith(rest):
                yield Completion(name, -len(rest))


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


class ChatController:
    """Commands and client events applied to the model; the UI stays a thin shell."""

    def __init__(self, client: HushwireClient, model: ChatModel, exit: Callable[[], None]) -> None:
        self.client = client
        self.model = model
        self._exit = exit
        # A history reload and a live message must not interleave (one could hide
        # the other), so both happen under this lock. Sending does not take it.
        self._view_lock = asyncio.Lock()

    async def load(self) -> None:
        """Conversations and unread counts from the profile, before connecting."""
        for c in await self.client.contacts():
            conv = self.model.conversation(c.name)
            conv.unread = c.unread
            conv.key_changed = c.key_changed
        # To the console by name: the user may already have typed `/to NAME`.
        self.model.info(
            f"hushwire: {self.model.user}@{self.model.relay}. /to NAME starts a "
            "conversation, /who lists users, /help lists commands.",
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
        except HushwireError as exc:
            self.model.info(error_text(exc), "error")

    async def _run(self, cmd: Command) -> None:
        if cmd.name == "quit":
            self._exit()
        elif cmd.name == "help":
            for spec in COMMANDS.values():
                self.model.info(f"  {spec.usage:<22} {spec.summary}")
            self.model.info(HELP_KEYS)
        elif cmd.name == "to":
            await self.open(cmd.target)
        elif cmd.name == "who":
            await self.who()
        elif cmd.name == "verify":
            await self.verify(cmd.target, mark=cmd.mark)
        elif cmd.name == "trust":
            await self.trust(cmd.target)
        elif cmd.name == "history":
            if self.model.current is None:
                self.model.info("no conversation: /to NAME first", "error")
                return
            await self.load_history(self.model.current, cmd.count)

    async def open(self, name: str) -> None:
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
        async with self._view_lock:
            items = await self.client.history(name, count)
            self.model.set_lines(name, (self._history_line(i) for i in items))
            if self.model.current == name:
                await self.client.mark_read(contact=name)
        shown = len(items)
        self.model.info(
            f"{shown} earlier message(s) from your profile"
            if shown
            else f"no messages with {name} yet",
            name=name,
        )

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
        if result.queued:
            self.model.info("not connected: the message goes out when the relay is back", name=name)

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
        released = await self.client.trust(name)
        self.model.conversation(name).key_changed = False
        self.model.info(
            f"accepted {name}'s new identity key (not verified: compare with /verify {name})"
        )
        where = "sent" if self.client.state == "connected" else "queued for the relay"
        self.model.info(f"{released} held message(s) {where}")

    # --- events ------------------------------------------------------------------

    async def handle_event(self, event: ClientEvent) -> None:
        """Apply one client event to the model (and mark shown messages read)."""
        model = self.model
        if isinstance(event, MessageReceived):
            async with self._view_lock:
                line = Line.message("in", event.contact, event.text, event.sent_at, event.uid)
                if model.add(event.contact, line) and model.current == event.contact:
                    await self.client.mark_read(uids=(event.uid,))
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
                # Presence pushes only report changes: take the full picture once.
                with contextlib.suppress(ConnectionClosed, RequestError):
                    model.online.update(dict(await self.client.who()))
        elif isinstance(event, Presence):
            model.online[event.user] = event.online
        elif isinstance(event, MessageSent):
            model.info("a queued message was sent", name=event.contact)
        elif isinstance(event, Notice):
            model.info(event.text, "warning")
        elif isinstance(event, MessagesReleased):
            pass  # `trust` reports the count itself, with sent/queued


# --- view ----------------------------------------------------------------------------


def _stamp(at: datetime | None) -> str:
    if at is None:
        return ""
    local = at.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M ")
    return local.strftime("%m-%d %H:%M ")


def render(line: Line) -> list[str]:
    """A Line as display rows: `HH:MM who: text`, continuation rows indented."""
    if line.kind in ("in", "out"):
        note = f"  [{line.note}]" if line.note else ""
        head = f"{_stamp(line.at)}{line.sender}: "
        first, *rest = (line.text + note).split("\n")
        return [head + first, *(" " * len(head) + r for r in rest)]
    prefix = {"command": "» ", "error": "! ", "warning": "⚠ "}.get(line.kind, "* ")
    first, *rest = line.text.split("\n")
    return [prefix + first, *("  " + r for r in rest)]


class _RowLexer(Lexer):
    """Styles each pane row by the kind of line it came from."""

    def __init__(self, style_of: Callable[[int], str]) -> None:
        self._style_of = style_of

    def lex_document(self, document: Document) -> Callable[[int], StyleAndTextTuples]:
        lines = document.lines

        def get_line(lineno: int) -> StyleAndTextTuples:
            if lineno >= len(lines):
                return []
            return [(self._style_of(lineno), lines[lineno])]

        return get_line


class MessagePane:
    """The conversation pane: a read-only Buffer that new lines are appended to (never
    rebuilt per message), trimmed at the front to `max_rows`, following the bottom
    unless the user scrolled up."""

    def __init__(self, max_rows: int = MAX_LINES) -> None:
        self.max_rows = max_rows
        self.buffer = Buffer(read_only=True, name="pane")
        self._styles: deque[str] = deque()
        self.control = BufferControl(
            buffer=self.buffer, lexer=_RowLexer(self._style_of), focusable=False
        )
        self.window = Window(self.control, wrap_lines=True)

    @property
    def text(self) -> str:
        return self.buffer.text

    @property
    def following(self) -> bool:
        return self.buffer.document.is_cursor_at_the_end

    def _style_of(self, row: int) -> str:
        return self._styles[row] if row < len(self._styles) else ""

    def replace(self, lines: Iterable[Line]) -> None:
        self._styles.clear()
        rows: list[str] = []
        for line in lines:
            rendered = render(line)
            rows.extend(rendered)
            self._styles.extend([f"class:line.{line.kind}"] * len(rendered))
        self._set("\n".join(rows), None)
        self._trim()

    def append(self, line: Line) -> None:
        rendered = render(line)
        follow = self.following
        old = self.buffer.text
        self._styles.extend([f"class:line.{line.kind}"] * len(rendered))
        text = (old + "\n" if old else "") + "\n".join(rendered)
        self._set(text, None if follow else self.buffer.cursor_position)
        self._trim()

    def _trim(self) -> None:
        excess = len(self._styles) - self.max_rows
        if excess <= 0:
            return
        text = self.buffer.text
        cut = 0
        for _ in range(excess):
            cut = text.index("\n", cut) + 1
            self._styles.popleft()
        follow = self.following
        cursor = None if follow else max(0, self.buffer.cursor_position - cut)
        self._set(text[cut:], cursor)

    def _set(self, text: str, cursor: int | None) -> None:
        position = len(text) if cursor is None else min(cursor, len(text))
        self.buffer.set_document(Document(text, position), bypass_readonly=True)

    def scroll(self, rows: int) -> None:
        """Move the view by `rows` (negative: up); at the bottom it follows again."""
        doc = self.buffer.document
        if rows < 0:
            self.buffer.cursor_position += doc.get_cursor_up_position(count=-rows)
            self.buffer.cursor_position += doc.get_start_of_line_position()
        else:
            target = doc.cursor_position_row + rows
            if target >= doc.line_count - 1:
                self.buffer.cursor_position = len(doc.text)
            else:
                self.buffer.cursor_position += doc.get_cursor_down_position(count=rows)


STYLE: Final = Style.from_dict(
    {
        "list": "bg:#1c1c1c #d0d0d0",
        "list.title": "bold",
        "list.current": "reverse",
        "list.unread": "bold #ffaf00",
        "list.keychanged": "bold #ff5f5f",
        "line.in": "",
        "line.out": "#87afd7",
        "line.system": "#8a8a8a",
        "line.command": "#8a8a8a italic",
        "line.error": "#ff5f5f",
        "line.warning": "bold #ffaf00",
        "status": "reverse",
        "status.connected": "reverse #5faf5f",
        "status.reconnecting": "reverse #ffaf00",
        "status.disconnected": "reverse #ff5f5f",
        "rule": "#4e4e4e",
    }
)


class ChatApp:
    """The full-screen application around one HushwireClient."""

    def __init__(
        self,
        client: HushwireClient,
        *,
        input: Input | None = None,
        output: Output | None = None,
        max_lines: int = MAX_LINES,
    ) -> None:
        self.client = client
        self.model = ChatModel(client.user, client.relay, max_lines=max_lines)
        self.controller = ChatController(client, self.model, self.exit)
        self.pane = MessagePane(max_lines)
        self.model.on_append = lambda conv, line: self.pane.append(line)
        self.model.on_switch = lambda conv: self.pane.replace(conv.lines)
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self.input = TextArea(
            height=Dimension(min=1, max=4),
            prompt="> ",
            multiline=False,
            wrap_lines=True,
            completer=ChatCompleter(self.model.names),
            complete_while_typing=True,
            history=InMemoryHistory(),
            accept_handler=self._accept,
        )
        body = VSplit(
            [
                Window(
                    FormattedTextControl(self._list_fragments),
                    width=Dimension(preferred=22, max=26),
                    style="class:list",
                ),
                Window(width=1, char="│", style="class:rule"),
                self.pane.window,
            ]
        )
        root = FloatContainer(
            HSplit(
                [
                    body,
                    Window(height=1, char="─", style="class:rule"),
                    self.input,
                    Window(
                        FormattedTextControl(self._status_fragments), height=1, style="class:status"
                    ),
                ]
            ),
            floats=[Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8))],
        )
        self.app: Application[int] = Application(
            layout=Layout(root, focused_element=self.input),
            key_bindings=self._keys(),
            style=STYLE,
            full_screen=True,
            input=input,
            output=output,
        )

    # --- keys and input --------------------------------------------------------------

    def _keys(self) -> KeyBindings:
        kb = KeyBindings()
        empty = Condition(lambda: not self.input.text)

        @kb.add("c-c")
        def _quit(event: KeyPressEvent) -> None:
            self.exit()

        @kb.add("c-d", filter=empty)
        def _eof(event: KeyPressEvent) -> None:
            self.exit()

        @kb.add("pageup")
        def _up(event: KeyPressEvent) -> None:
            self.pane.scroll(-self._page())

        @kb.add("pagedown")
        def _down(event: KeyPressEvent) -> None:
            self.pane.scroll(self._page())

        return kb

    def _page(self) -> int:
        info = self.pane.window.render_info
        return max(1, (info.window_height if info else 20) - 1)

    def _accept(self, buffer: Buffer) -> bool:
        """Enter: queue the line for the worker (in order); keep it if it is too long."""
        text = buffer.text
        name = self.model.current
        if name and not text.lstrip().startswith("/") and text.strip() != "exit":
            size, limit = len(text.encode("utf-8")), self.client.max_text_bytes(name)
            if size > limit:
                self.model.info(
                    f"too long: {size} bytes of UTF-8, this relay allows {limit} "
                    "per message; shorten it (it is still in the input line)",
                    "error",
                )
                return True  # keep the text so nothing typed is lost
        self._lines.put_nowait(text)
        return False

    def exit(self) -> None:
        """Leave the application (idempotent: several exit keys may race)."""
        future = self.app.future
        if future is not None and not future.done():
            self.app.exit(result=0)

    # --- fragments -------------------------------------------------------------------

    def _list_fragments(self) -> StyleAndTextTuples:
        rows: StyleAndTextTuples = [("class:list.title", " conversations\n")]
        for e in self.model.listing():
            dot = {True: "●", False: "○", None: " "}[e.online]
            style = "class:list.current" if e.current else ""
            rows.append((style, f" {dot} {e.name}"))
            if e.key_changed:
                rows.append(("class:list.keychanged", " !"))
            if e.unread:
                rows.append(("class:list.unread", f" ({e.unread})"))
            rows.append(("", "\n"))
        return rows

    def _status_fragments(self) -> StyleAndTextTuples:
        m = self.model
        state = m.connection
        detail = "" if state == "connected" else f" ({m.connection_detail})"
        return [
            (f"class:status.{state}", f" {state}{detail} "),
            (
                "class:status",
                f" {m.user}@{m.relay} │ to: {m.current or '-'} │ "
                "/help  Tab complete  PgUp/PgDn scroll  Ctrl-C quit",
            ),
        ]

    def status_text(self) -> str:
        return "".join(text for _, text, *_ in self._status_fragments())

    def list_text(self) -> str:
        return "".join(text for _, text, *_ in self._list_fragments())

    # --- background work -------------------------------------------------------------

    async def _start(self) -> None:
        try:
            await self.controller.load()
        except HushwireError as exc:
            self.model.info(f"could not read the profile: {error_text(exc)}", "error")
        self.pane.replace(self.model.shown.lines)
        self.app.invalidate()
        await self.client.start(wait=False)

    async def _consume_events(self) -> None:
        while True:
            event = await self.client.events.get()
            try:
                await self.controller.handle_event(event)
            except HushwireError as exc:
                self.model.info(error_text(exc), "error")
            except Exception as exc:  # the receive display must outlive one bad event
                log.exception("event handling failed")
                self.model.info(
                    f"internal error while showing an event ({type(exc).__name__})", "error"
                )
            self.app.invalidate()

    async def _input_worker(self) -> None:
        while True:
            text = await self._lines.get()
            try:
                await self.controller.handle_input(text)
            except Exception as exc:  # one bad line must not end all later input
                log.exception("command failed")
                self.model.info(
                    f"internal error while handling that line ({type(exc).__name__})", "error"
                )
            self.app.invalidate()

    def _pre_run(self) -> None:
        self.app.create_background_task(self._start())
        self.app.create_background_task(self._consume_events())
        self.app.create_background_task(self._input_worker())

    async def run(self) -> int:
        """Run until /quit, exit, Ctrl-C or Ctrl-D; the client is closed in any case."""
        try:
            return await self.app.run_async(pre_run=self._pre_run) or 0
        finally:
            await self.client.close()


async def main(profile: Path, passphrase: str) -> int:
    """Entry point used by `hushwire chat` (client/cli.py): unlock, then run the UI."""
    client = await HushwireClient.open(profile, passphrase)
    chat = ChatApp(client)
    with contextlib.suppress(KeyboardInterrupt):
        return await chat.run()
    return 0
