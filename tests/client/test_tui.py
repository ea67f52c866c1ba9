"""The terminal chat: the model and parser alone, then the real prompt_toolkit
application driven through a pipe (keys in, DummyOutput out) against a real relay."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.input.base import PipeInput
from prompt_toolkit.output import DummyOutput

from hushwire.client import tui
from hushwire.client.service import HushwireClient, MessageReceived
from hushwire.client.tui import (
    ChatApp,
    ChatCompleter,
    ChatModel,
    Command,
    CommandError,
    Conversation,
    Line,
    MessagePane,
    parse_input,
)
from hushwire.client.tui.view import MAX_ROW
from hushwire.common.crypto.safety import safety_number
from hushwire.common.messages import Deliver
from tests.adversarial.test_terminal_injection import HOSTILE, terminal_safe
from tests.e2e.helpers import FAST_BACKOFF, FAST_KDF, PASSPHRASE, WAIT, next_event, settings_for
from tests.support import Harness

PAGE_UP, PAGE_DOWN, TAB, ENTER = "\x1b[5~", "\x1b[6~", "\t", "\r"
KILL_LINE = "\x15"  # Ctrl-U


def paste(text: str) -> str:
    """Bracketed paste: how a terminal delivers a pasted block."""
    return f"\x1b[200~{text}\x1b[201~"


# --- the model, without a terminal ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", "hello"),
        ("  spaced message ", "  spaced message "),
        ("//slash at start", "/slash at start"),
        ("", None),
        ("   ", None),
        ("exit", Command("quit")),
        ("/quit", Command("quit")),
        ("/to bob", Command("to", "bob")),
        ("/verify bob", Command("verify", "bob")),
        ("/verify bob mark", Command("verify", "bob", mark=True)),
        ("/trust carol", Command("trust", "carol")),
        ("/who", Command("who")),
        ("/history", Command("history", count=tui.HISTORY_ON_OPEN)),
        ("/history 7", Command("history", count=7)),
        ("/help", Command("help")),
    ],
)
def test_parse_input(text, expected):
    assert parse_input(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("/frobnicate", "unknown command /frobnicate: see /help"),
        ("/verfy bob", "unknown command /verfy: did you mean /verify?"),
        ("/to", "usage: /to NAME"),
        ("/to bob carol", "usage: /to NAME"),
        ("/verify bob now", r"usage: /verify NAME \[mark\]"),
        ("/trust", "usage: /trust NAME"),
        ("/to Bob!", "invalid name 'Bob!'"),
        ("/history 0", "N is a number from 1 to"),
        ("/history x", "N is a number from 1 to"),
        ("/history 5 6", r"usage: /history \[N\]"),
        ("/who bob", "usage: /who"),
        ("/\x1b[2Jx", "unknown command /x: see"),
        ("/\x07x", "unknown command /\ufffdx: see"),
    ],
)
def test_parse_input_errors(text, error):
    with pytest.raises(CommandError, match=error) as info:
        parse_input(text)
    assert "\x1b" not in str(info.value)


def test_conversation_buffer_is_bounded_and_drops_duplicates():
    conv = Conversation("bob", max_lines=3)
    at = datetime.now(UTC)
    for i in range(5):
        assert conv.add(Line.message("in", "bob", f"m{i}", at, f"u{i}"))
    assert [line.text for line in conv.lines] == ["m2", "m3", "m4"]
    assert not conv.add(Line.message("in", "bob", "m4 again", at, "u4"))
    # An evicted message may come back (e.g. /history reloads it).
    assert conv.add(Line.message("in", "bob", "m0", at, "u0"))
    assert [line.text for line in conv.lines] == ["m3", "m4", "m0"]


def test_unread_counts_and_switching():
    model = ChatModel("alice", "relay:1")
    appended: list[str] = []
    model.on_append = lambda conv, line: appended.append(f"{conv.name}:{line.text}")
    at = datetime.now(UTC)
    model.select("bob")
    model.add("bob", Line.message("in", "bob", "seen", at, "u1"))
    model.add("carol", Line.message("in", "carol", "later", at, "u2"))
    model.add("carol", Line.message("in", "carol", "later 2", at, "u3"))
    model.add("carol", Line.info("a system line is not unread"))
    assert [(e.name, e.unread, e.current) for e in model.listing()] == [
        ("bob", 0, True),
        ("carol", 2, False),
    ]
    assert appended == ["bob:seen"]  # only the conversation on screen reaches the pane
    model.select("carol")
    assert model.conversation("carol").unread == 0
    model.info("for the console", name="")
    assert [line.text for line in model.console.lines] == ["for the console"]
    assert "" not in model.conversations
    model.online.update({"alice": True, "dave": False})
    assert model.names() == ["bob", "carol", "dave"]


def test_received_text_is_neutralised_in_the_model():
    line = Line.message(
        "in", "bob", "a\x1b[31mred\x07\r\x9b1m\u202eb\tc\nd", datetime.now(UTC), "u"
    )
    assert line.text == "ared\ufffd\ufffd\ufffdb    c\nd"  # the C1 CSI is removed whole


def test_pane_appends_trims_and_follows_the_bottom():
    pane = MessagePane(max_rows=5)
    for i in range(4):
        pane.append(Line.info(f"row {i}"))
    assert pane.text.splitlines() == [f"* row {i}" for i in range(4)]
    assert pane.following
    pane.append(Line.info("two\nrows"))
    assert pane.text.splitlines() == ["* row 1", "* row 2", "* row 3", "* two", "  rows"]
    assert pane.following
    pane.scroll(-1)  # a page up
    assert not pane.following
    row = pane.buffer.document.cursor_position_row
    pane.append(Line.info("new"))  # scrolled up: the view stays where the user put it
    assert not pane.following
    assert pane.buffer.document.current_line == pane.text.splitlines()[max(0, row - 1)]
    pane.scroll(1)
    assert pane.following


def test_completer():
    completer = ChatCompleter(lambda: ["bob", "carol", "dave"])

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]

    assert complete("/ve") == ["/verify "]
    assert complete("/h") == ["/history ", "/help"]
    assert complete("/to ") == ["bob", "carol", "dave"]
    assert complete("/trust c") == ["carol"]
    assert complete("/verify bob m") == ["mark"]
    assert complete("/who ") == []
    assert complete("hello /ve") == []


# --- the real application ----------------------------------------------------------


class Screen:
    """One running ChatApp: keys go in through a pipe, state is read from the app."""

    def __repr__(self) -> str:
        return f"typed={self.typed!r} state={self.chat.input.buffer.complete_state}"

    def __init__(self, chat: ChatApp, pipe: PipeInput) -> None:
        self.chat = chat
        self.pipe = pipe
        self._rendered = asyncio.Event()
        chat.app.after_render += lambda _app: self._rendered.set()
        self.task = asyncio.create_task(chat.run())

    async def until(self, pred: Callable[[], bool], what: Callable[[], str] | str = "") -> None:
        """Wait for a condition, re-checked after each redraw of the screen: a change that
        never reaches the screen (no invalidate) times out too. WAIT bounds a failure."""
        try:
            async with asyncio.timeout(WAIT):
                while not pred():
                    self._rendered.clear()
                    await self._rendered.wait()
        except TimeoutError:
            detail = what() if callable(what) else what
            raise AssertionError(f"timed out waiting for {detail or 'a condition'}") from None

    def type(self, keys: str) -> None:
        self.pipe.send_text(keys)

    @property
    def pane(self) -> str:
        return self.chat.pane.text

    @property
    def typed(self) -> str:
        return self.chat.input.text

    async def shows(self, text: str) -> None:
        await self.until(lambda: text in self.pane, lambda: f"{text!r} in the pane:\n{self.pane}")

    async def run(self, line: str, expect: str) -> None:
        self.type(line + ENTER)
        await self.shows(expect)

    async def stop(self) -> int:
        if not self.task.done():
            self.chat.exit()
        return await asyncio.wait_for(self.task, WAIT)


@pytest.fixture
async def relay(relay_factory) -> Harness:
    """A small frame limit keeps the long-message test quick. `login` (tests/conftest.py)
    starts library clients: the other side of each chat. At 4 KiB a frame holds only
    three KEM prekeys, so a first upload takes ~35 frames: allow them."""
    return await relay_factory(max_frame=4096, publish_burst=1000)


async def make_profile(relay: Harness, user: str, profile: Path) -> None:
    """What `hushwire login` leaves behind: a profile with published keys."""
    client = await HushwireClient.login(
        profile, PASSPHRASE, settings_for(relay, user), kdf=FAST_KDF, backoff=FAST_BACKOFF
    )
    await client.close()


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Screen]]]:
    screens: list[Screen] = []
    pipes = contextlib.ExitStack()  # holds each pipe's context manager (it closes on exit)

    async def start(relay: Harness, user: str = "alice") -> Screen:
        profile = tmp_path / f"tui-{user}"
        await make_profile(relay, user, profile)
        client = await HushwireClient.open(profile, PASSPHRASE, backoff=FAST_BACKOFF)
        pipe = pipes.enter_context(create_pipe_input())
        screen = Screen(ChatApp(client, input=pipe, output=DummyOutput()), pipe)
        screens.append(screen)
        await screen.until(lambda: screen.chat.model.connection == "connected", "connected")
        return screen

    yield start
    for s in screens:
        await s.stop()
    pipes.close()


async def test_typing_sends_and_incoming_shows_while_typing(relay, chat, login):
    bob = await login(relay, "bob")
    carol = await login(relay, "carol")
    screen = await chat(relay)
    assert f"connected  alice@127.0.0.1:{relay.port}" in screen.chat.status_text()
    await screen.run("/to bob", "no messages with bob yet")
    assert "to: bob" in screen.chat.status_text()
    screen.type("hello bob" + ENTER)
    assert (await next_event(bob, MessageReceived)).text == "hello bob"
    await screen.shows("you: hello bob")

    screen.type("half typ")
    await screen.until(lambda: screen.typed == "half typ", "the partial input")
    await bob.send("alice", "reply while you type")
    await screen.shows("bob: reply while you type")
    assert screen.typed == "half typ"  # the incoming message did not touch the input line
    screen.type("ed" + ENTER)
    assert (await next_event(bob, MessageReceived)).text == "half typed"

    await carol.send("alice", "psst")
    await screen.until(lambda: "carol (1)" in screen.chat.list_text(), "carol's unread count")
    assert "psst" not in screen.pane
    # Shown in the current conversation = read; carol's is still unread in the profile.
    assert await screen.chat.client.store.unread_counts() == {"carol": 1}
    await screen.run("/to carol", "1 earlier message(s)")  # reported after mark_read
    assert "carol: psst" in screen.pane
    assert "(1)" not in screen.chat.list_text()
    assert await screen.chat.client.store.unread_counts() == {}


async def test_key_change_warning_verify_and_trust(relay, chat, login, tmp_path):
    bob = await login(relay, "bob")
    screen = await chat(relay)
    alice_key = screen.chat.client.sessions.identity.public()
    await screen.run("/to bob", "no messages with bob yet")
    screen.type("hi bob" + ENTER)  # alice fetches bob's keys: the relay tells her of changes
    await next_event(bob, MessageReceived)
    await bob.send("alice", "hi")
    await screen.shows("bob: hi")

    await screen.run("/verify bob", "bob is NOT verified")
    expected = safety_number("alice", alice_key, "bob", bob.sessions.identity.public())
    shown = screen.pane.split("safety number with bob:")[1]
    assert re.findall(r"\b\d{5}\b", shown)[:12] == expected.groups()
    assert " ".join(expected.groups()) == await bob.safety_number("alice")  # both sides

    await bob.close()
    bob2 = await login(relay, "bob", profile=tmp_path / "bob-reinstalled", replace_identity=True)
    await screen.shows("WARNING: bob's identity key has changed")
    assert "bob !" in screen.chat.list_text()
    screen.type("are you there" + ENTER)
    await screen.shows(
        "not sent: bob's identity key has changed. Check /verify bob, then /trust bob"
    )
    assert "you: are you there  [held]" in screen.pane

    await screen.run("/verify bob", "bob's NEW key (not accepted yet) gives:")
    new = safety_number("alice", alice_key, "bob", bob2.sessions.identity.public())
    assert re.findall(r"\b\d{5}\b", screen.pane.split("NEW key")[-1])[:12] == new.groups()
    assert new.digits != expected.digits

    await screen.run("/trust bob", "1 held message(s) sent")
    assert "accepted bob's new identity key" in screen.pane
    assert (await next_event(bob2, MessageReceived)).text == "are you there"
    assert "bob !" not in screen.chat.list_text()
    await screen.run("/trust bob", "bob's identity key has not changed; nothing to accept")


async def test_who_history_and_command_errors(relay, chat, login):
    bob = await login(relay, "bob")
    screen = await chat(relay)
    for i in range(5):
        await bob.send("alice", f"m{i}")
    await screen.until(lambda: "bob (5)" in screen.chat.list_text(), "five messages")

    await screen.run("/who", "3 user(s) on")
    assert re.search(r"alice +you\n.*bob +online\n.*carol +offline", screen.pane)

    await screen.run("/to bob", "5 earlier message(s)")
    assert all(f"bob: m{i}" in screen.pane for i in range(5))
    await screen.run("/history 2", "2 earlier message(s)")
    assert "bob: m3" in screen.pane and "bob: m4" in screen.pane
    assert "bob: m2" not in screen.pane

    await screen.run("/frobnicate", "unknown command /frobnicate: see /help")
    await screen.run("/history x", "/history N: N is a number from 1 to")
    await screen.run("/to", "usage: /to NAME")
    await screen.run("/to zed", "no user named zed on this relay; see /who")
    await screen.run("/to alice", "that is you")
    await screen.run("/verify carol", "no contact named carol yet")
    await screen.run("/help", "/verify NAME [mark]")
    assert "PageUp/PageDown scroll" in screen.pane
    assert "Traceback" not in screen.pane


async def test_completion_in_the_input_line(relay, chat, login):
    await login(relay, "bob")
    screen = await chat(relay)
    await screen.until(lambda: "bob" in screen.chat.model.names(), "the user list")
    buffer = screen.chat.input.buffer

    def offered() -> list[str]:
        state = buffer.complete_state
        return [c.text for c in state.completions] if state else []

    # The menu opens while typing (as a user sees it), then Tab takes the first entry.
    screen.type("/ve")
    await screen.until(lambda: offered() == ["/verify "], lambda: f"/verify offered: {screen}")
    screen.type(TAB)
    await screen.until(lambda: screen.typed == "/verify ", lambda: f"/ve completed: {screen}")
    screen.type(KILL_LINE + "/to ")
    await screen.until(lambda: offered() == ["bob", "carol"], lambda: f"names offered: {screen}")
    screen.type(TAB)  # the first one is chosen
    await screen.until(lambda: screen.typed == "/to bob", "/to bob")
    screen.type(ENTER)
    await screen.until(lambda: screen.chat.model.current == "bob", "bob selected")


async def test_control_characters_in_received_text_are_neutralised(relay, chat, login):
    bob = await login(relay, "bob")
    screen = await chat(relay)
    await screen.run("/to bob", "no messages with bob yet")
    await bob.send(
        "alice",
        "x\x1b]0;pwned\x07\x1b]52;c;Zm9v\x07\x1b[2Jclear\rover"
        "\x9b31m\u202eevil\x00end\nsecond line",
    )
    await screen.shows("end")
    assert "bob: xclear\ufffdover\ufffdevil\ufffdend\n" in screen.pane
    assert "second line" in screen.pane
    assert "pwned" not in screen.pane and "Zm9v" not in screen.pane
    bad = [
        c
        for c in screen.pane
        if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F or c == "\u202e"
    ]
    assert bad == []


async def test_long_messages_up_to_the_limit_and_refused_beyond(relay, chat, login):
    bob = await login(relay, "bob")
    screen = await chat(relay)
    await screen.run("/to bob", "no messages with bob yet")
    limit = screen.chat.client.max_text_bytes("bob")
    fits = "é" * (limit // 2)  # two UTF-8 bytes each
    too_long = fits + "éé"
    screen.type(paste(too_long) + ENTER)
    await screen.shows(
        f"too long: {len(too_long.encode())} bytes of UTF-8, this relay allows {limit}"
    )
    assert screen.typed == too_long  # kept, so the user can shorten it
    screen.type(KILL_LINE + paste(fits) + ENTER)
    # The next thing bob gets is the one that fits: the long one never went out.
    assert (await next_event(bob, MessageReceived)).text == fits
    await screen.shows("you: éééé")


async def test_page_up_and_down_scroll_long_history(relay, chat, login):
    bob = await login(relay, "bob")
    screen = await chat(relay)
    for _ in range(12):  # more than two pages
        screen.type("/help" + ENTER)
    await screen.until(lambda: screen.pane.count("/verify NAME [mark]") == 12, "a long pane")
    pane = screen.chat.pane
    assert pane.following
    rows = pane.buffer.document.line_count
    screen.type(PAGE_UP)
    await screen.until(lambda: not pane.following, "scrolled up")
    row = pane.buffer.document.cursor_position_row
    assert row < rows - 20  # about a page (the test screen is 40 rows)
    screen.type(PAGE_UP)
    await screen.until(lambda: pane.buffer.document.cursor_position_row < row, "scrolled further")
    await screen.run("/to bob", "no messages with bob yet")
    await bob.send("alice", "arrives at the bottom")
    await screen.shows("bob: arrives at the bottom")
    assert pane.following  # a fresh conversation starts at the bottom
    screen.type("/help" + ENTER + "/help" + ENTER)
    await screen.until(lambda: pane.text.count("/verify NAME [mark]") == 2, "more lines")
    screen.type(PAGE_UP)
    await screen.until(lambda: not pane.following, "scrolled up again")
    kept = pane.buffer.document.current_line
    await bob.send("alice", "while scrolled up")
    await screen.shows("bob: while scrolled up")
    assert not pane.following and pane.buffer.document.current_line == kept
    screen.type(PAGE_DOWN * 3)
    await screen.until(lambda: pane.following, "back at the bottom")


async def test_status_bar_follows_the_connection(relay, chat, login):
    bob = await login(relay, "bob")
    screen = await chat(relay)
    await screen.run("/to bob", "no messages with bob yet")
    await relay.server.close()
    await screen.until(lambda: "reconnecting" in screen.chat.status_text(), "reconnecting")
    screen.type("sent while the relay is down" + ENTER)
    await screen.shows("not connected: the message goes out when the relay is back")
    assert "you: sent while the relay is down  [queued]" in screen.pane
    await relay.restart()
    await screen.until(lambda: screen.chat.status_text().startswith(" connected "), "reconnected")
    await screen.shows("a queued message was sent")
    assert (await next_event(bob, MessageReceived)).text == "sent while the relay is down"


@pytest.mark.parametrize(
    "keys",
    ["/quit" + ENTER, "exit" + ENTER, "\x03", "\x04"],
    ids=["quit", "exit", "ctrl-c", "ctrl-d"],
)
async def test_leaving_closes_the_client(relay, chat, keys, tmp_path):
    screen = await chat(relay)
    screen.type(keys)
    assert await asyncio.wait_for(screen.task, WAIT) == 0
    client = screen.chat.client
    assert client.state == "disconnected"
    await client.close()  # idempotent
    again = await HushwireClient.open(tmp_path / "tui-alice", PASSPHRASE)  # lock released
    await again.close()


async def test_ctrl_d_with_text_does_not_quit(relay, chat):
    screen = await chat(relay)
    screen.type("abc\x01\x04")  # Ctrl-A to the start, Ctrl-D deletes the next character
    await screen.until(lambda: screen.typed == "bc", "a deleted character")
    screen.type("x")  # still running: the next key is handled
    await screen.until(lambda: screen.typed == "xbc", "more input")
    assert not screen.task.done()


async def test_main_as_the_cli_calls_it(relay, login, tmp_path):
    bob = await login(relay, "bob")
    profile = tmp_path / "main-alice"
    await make_profile(relay, "alice", profile)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        task = asyncio.create_task(tui.main(profile, PASSPHRASE))
        pipe.send_text("/to bob" + ENTER + "through main" + ENTER)
        assert (await next_event(bob, MessageReceived)).text == "through main"
        pipe.send_text("/quit" + ENTER)
        assert await asyncio.wait_for(task, WAIT) == 0
    again = await HushwireClient.open(profile, PASSPHRASE)  # main closed its client
    await again.close()


async def test_hostile_names_from_the_relay_are_neutralised(relay, chat):
    """A relay-supplied sender with escapes and bidi overrides: listed, never raw."""
    screen = await chat(relay)
    (conn,) = [c for c in relay.server.connections if c.user == "alice"]
    conn.push(Deliver(mid=10**9, sender=HOSTILE, ts=0, body=b"junk"))
    await screen.until(lambda: "evil" in screen.chat.list_text(), "the rejected sender listed")
    for shown in (screen.chat.list_text(), screen.chat.status_text(), screen.pane):
        assert terminal_safe(shown), repr(shown)


async def test_slash_alone_and_a_long_unbracketed_paste(relay, chat):
    screen = await chat(relay)
    await screen.run("/", "a command name goes after /: see /help")
    assert "internal error" not in screen.pane
    typed = "x" * 6_000  # a paste into a terminal without bracketed paste: key by key
    screen.type(typed)
    await screen.until(lambda: screen.typed == typed, "the pasted line")
    kept = sum(len(text) for text, _ in screen.chat.input.buffer._undo_stack)
    assert kept <= tui.UNDO_CHARS  # one copy per key press was 18,000,000 characters


async def test_history_header_first_queued_note_cleared_and_page_up(relay, chat, login):
    bob = await login(relay, "bob")
    screen = await chat(relay)
    for i in range(60):
        await bob.send("alice", f"old {i}")
    await screen.until(lambda: "bob (60)" in screen.chat.list_text(), "60 unread")
    await screen.run("/to bob", "50 earlier message(s)")
    rows = screen.pane.split("\n")
    assert rows[0] == "* 50 earlier message(s) from your profile" and "old 59" in rows[-1]
    pane = screen.chat.pane
    await screen.until(lambda: pane.window.render_info is not None, "drawn")
    top = pane.window.render_info.first_visible_line()
    height = pane.window.render_info.window_height
    screen.type(PAGE_UP)
    await screen.until(
        lambda: pane.window.render_info.first_visible_line() < top, "the view moved up"
    )
    # A page (or up to the first row); it moved a single row before.
    assert top - pane.window.render_info.first_visible_line() == min(top, height - 1) > 1
    screen.type(PAGE_DOWN)
    await screen.until(lambda: pane.following, "back at the bottom")
    await relay.server.close()
    await screen.until(lambda: "reconnecting" in screen.chat.status_text(), "reconnecting")
    screen.type("typed offline" + ENTER)
    await screen.shows("you: typed offline  [queued]")
    await relay.restart()
    await screen.shows("a queued message was sent")
    assert "typed offline  [queued]" not in screen.pane and "you: typed offline" in screen.pane


async def test_the_bottom_view_stays_full_after_a_long_message(relay, chat, login):
    bob = await login(relay, "bob")
    screen = await chat(relay)
    await screen.run("/to bob", "no messages with bob yet")
    await bob.send("alice", "y" * bob.max_text_bytes("alice"))  # wraps past the window
    await bob.send("alice", "short after")
    await screen.shows("short after")
    pane = screen.chat.pane

    def rows_shown() -> int:
        info = pane.window.render_info
        return len(info.visible_line_to_row_col) if info else 0

    def full() -> bool:
        # prompt_toolkit scrolls by whole lines: above the top line shown, fewer rows stay
        # blank than one cut piece (MAX_ROW characters) wraps to. Before, one row was shown
        # under 36 blank ones.
        info = pane.window.render_info
        if info is None:
            return False
        blank = info.window_height - rows_shown()
        return blank < math.ceil(MAX_ROW / info.window_width)

    screen.chat.app.invalidate()
    await screen.until(full, lambda: f"a full pane, {rows_shown()} rows shown")
    # The last message is the last row shown (under it, at most those few blank rows).
    assert pane.window.render_info.cursor_position.y == rows_shown() - 1


HOSTILE_LINES = [
    "/",
    "/ ",
    "/  /",
    "//",
    "/to",
    "/to \x1b[31mred",
    "/to " + "a" * 5_000,
    "/history 99999999999999999999999",
    "/history -1",
    "/history ٣",  # a non-ASCII digit
    "/verify bob mark mark",
    "/trust \u202eevil",
    "/who extra",
    "\x1b]52;c;ZXZpbA==\x07",
    "/\x00",
    "exit now",
]


async def test_hostile_input_lines_never_break_the_ui(relay, chat):
    screen = await chat(relay)
    for line in HOSTILE_LINES:
        screen.type(KILL_LINE + paste(line) + ENTER)
    screen.type("/help" + ENTER)
    await screen.shows("/verify NAME [mark]")
    assert "internal error" not in screen.pane and not screen.task.done()
    assert terminal_safe(screen.pane) and terminal_safe(screen.chat.list_text())


async def test_a_burst_of_messages_is_shown_and_marked_read_as_one_batch(relay, chat, login):
    """Draining a queue of deliveries redraws once, not once per message (each per-message
    mark-read let a full-screen redraw run: ~50 ms a message, minutes for 10,000)."""
    bob = await login(relay, "bob")
    screen = await chat(relay)
    await screen.run("/to bob", "no messages with bob yet")
    controller, events = screen.chat.controller, screen.chat.client.events
    renders = 0

    def count(_app) -> None:
        nonlocal renders
        renders += 1

    async with controller._view_lock:  # the consumer stops at the first message...
        for i in range(30):
            await bob.send("alice", f"burst {i}")
        async with asyncio.timeout(WAIT):  # ...while the client queues the other 29
            while events.qsize() < 29:  # noqa: ASYNC110 - a Queue has no "size reached" event
                await asyncio.sleep(0.01)
        screen.chat.app.after_render += count
    await screen.until(lambda: "burst 29" in screen.pane, "the whole burst")
    assert all(f"burst {i}" in screen.pane for i in range(30))
    assert renders <= 3, renders  # one per message before
    store = screen.chat.client.store
    async with asyncio.timeout(WAIT):  # shown in the open conversation: read, all 30
        while await store.unread_counts():  # noqa: ASYNC110 - the db has no event
            await asyncio.sleep(0.01)


async def test_link_shows_the_code_then_the_linked_device_or_the_failure(relay, chat, tmp_path):
    screen = await chat(relay)
    await screen.run("/link", "waiting for the device")
    code = re.search(r"link code: (hw1-[a-z2-7-]+)", screen.pane)
    assert code is not None
    assert f"--relay 127.0.0.1:{relay.port} --link {code.group(1)}" in screen.pane
    assert re.search(r"expires at \d\d:\d\d:\d\d UTC", screen.pane)
    screen.type("typing goes on meanwhile")  # the wait does not hold the input line
    await screen.until(lambda: screen.typed == "typing goes on meanwhile", "the input")
    laptop = await HushwireClient.login_link(
        tmp_path / "alice-laptop",
        PASSPHRASE,
        host="127.0.0.1",
        port=relay.port,
        code=code.group(1),
        name="laptop",
        fingerprint=relay.server.fingerprint,
        kdf=FAST_KDF,
        backoff=FAST_BACKOFF,
    )
    try:
        await screen.shows("linked laptop as device 2")
        assert laptop.settings.device == 2
    finally:
        await laptop.close()
    # A code nobody uses in time: the failure is shown.
    screen.chat.controller.link_ttl = 0.5
    screen.type("\x15")  # Ctrl-U: clear the line typed above
    await screen.run("/link", "linking failed: the link code expired")
