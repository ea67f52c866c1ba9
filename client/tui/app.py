"""The prompt_toolkit Application: conversation list | message pane, input line with
completion, status bar; background work (events, input) runs under
app.create_background_task(), so one bad event or line never ends the UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Final

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
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
from prompt_toolkit.layout.controls import FormattedTextControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.output import Output
from prompt_toolkit.widgets import TextArea

from hushwire.client.service import (
    HushwireClient,
)
from hushwire.client.tui.commands import ChatCompleter
from hushwire.client.tui.controller import ChatController, error_text
from hushwire.client.tui.model import MAX_LINES, ChatModel
from hushwire.client.tui.view import STYLE, MessagePane
from hushwire.common.chat_transcript import MAX_TEXT_BYTES
from hushwire.common.errors import HushwireError

log = logging.getLogger("hushwire.tui")


UNDO_CHARS: Final = 200_000  # characters of earlier input-line states kept for undo
EVENT_BATCH: Final = 500  # client events applied between two redraws, at most


def _bound_undo(buffer: Buffer) -> None:
    """prompt_toolkit saves the whole line before each key press, so a long paste without
    bracketed paste kept one copy per character of a growing line (memory quadratic in
    its length: 2.4 GB for 70,000 characters). Keep only the newest UNDO_CHARS."""
    stack = buffer._undo_stack  # no public knob for its size
    total = 0
    for i in range(len(stack) - 1, -1, -1):
        total += len(stack[i][0])
        if total > UNDO_CHARS:
            del stack[: i + 1]
            return


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
        self.controller = ChatController(client, self.model, self.exit, self._background)
        self.pane = MessagePane(max_lines)
        self.model.on_append = lambda conv, line: self.pane.append(line)
        self.model.on_switch = lambda conv: self.pane.replace(conv.lines)
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self.input = TextArea(
            height=Dimension(min=1, max=4),
            prompt="> ",
            multiline=False,
            wrap_lines=True,
            completer=ChatCompleter(self.model.names, self.model.groups, self.model.members),
            complete_while_typing=True,
            history=InMemoryHistory(),
            accept_handler=self._accept,
        )
        self.input.buffer.on_text_changed += _bound_undo
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
            self.pane.scroll(-1)

        @kb.add("pagedown")
        def _down(event: KeyPressEvent) -> None:
            self.pane.scroll(1)

        return kb

    def _accept(self, buffer: Buffer) -> bool:
        """Enter: queue the line for the worker (in order); keep it if it is too long."""
        text = buffer.text
        name = self.model.current
        if name and not text.lstrip().startswith("/") and text.strip() != "exit":
            group = bool(self.model.conversation(name).gid)
            limit = MAX_TEXT_BYTES if group else self.client.max_text_bytes(name)
            size = len(text.encode("utf-8"))
            if size > limit:
                where = "a group message holds" if group else "this relay allows"
                self.model.info(
                    f"too long: {size} bytes of UTF-8, {where} {limit} "
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
            if e.left:
                rows.append(("class:list.left", " (left)"))
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
        queue = self.client.events
        while True:
            # A burst (an offline queue draining) is applied as one batch: one mark-read
            # transaction and one redraw, not one of each per message (a full-screen
            # redraw ran in every per-message db wait: ~50 ms a message).
            events = [await queue.get()]
            while not queue.empty() and len(events) < EVENT_BATCH:
                events.append(queue.get_nowait())
            for event in events:
                await self._guarded(self.controller.handle_event(event))
            await self._guarded(self.controller.mark_shown_read())
            self.app.invalidate()

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run one piece of event handling; the receive display outlives its failure."""
        try:
            await work
        except HushwireError as exc:
            self.model.info(error_text(exc), "error")
        except Exception as exc:
            log.exception("event handling failed")
            self.model.info(
                f"internal error while showing an event ({type(exc).__name__})", "error"
            )

    def _background(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await self._guarded(work)
            self.app.invalidate()

        self.app.create_background_task(run())

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
