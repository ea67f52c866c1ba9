"""How lines look on screen: rendering, styles, and the message pane (a read-only
Buffer appended to, never rebuilt per message)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final

from prompt_toolkit.buffer import Buffer
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.layout import (
    Window,
)
from prompt_toolkit.layout.controls import BufferControl
from prompt_toolkit.lexers import Lexer
from prompt_toolkit.styles import Style

from hushwire.client.tui.model import MAX_LINES, Line

# --- view ----------------------------------------------------------------------------


def _stamp(at: datetime | None) -> str:
    if at is None:
        return ""
    local = at.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M ")
    return local.strftime("%m-%d %H:%M ")


# Longest pane row, in characters. prompt_toolkit cannot show the rows under a line that
# wraps to more rows than the window has (after a 60 KB message the bottom view held one
# line and 40 blank rows), so longer rows are cut into pieces that wrap to fewer.
MAX_ROW: Final = 500


def render(line: Line) -> list[str]:
    """A Line as display rows: `HH:MM who: text`, continuation rows indented."""
    if line.kind in ("in", "out"):
        note = f"  [{line.note}]" if line.note else ""
        head = f"{_stamp(line.at)}{line.sender}: "
        first, *rest = (line.text + note).split("\n")
        rows = [head + first, *(" " * len(head) + r for r in rest)]
    else:
        prefix = {"command": "» ", "error": "! ", "warning": "⚠ "}.get(line.kind, "* ")
        first, *rest = line.text.split("\n")
        rows = [prefix + first, *("  " + r for r in rest)]
    return [row[i : i + MAX_ROW] for row in rows for i in range(0, max(len(row), 1), MAX_ROW)]


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

    def scroll(self, pages: int) -> None:
        """Move the view by `pages` screens (negative: up); at the bottom it follows again.

        The cursor is what the window keeps visible, so it goes a page beyond the edge
        now on screen (moved from the bottom row by only a page it stayed in view and the
        view moved a single line)."""
        doc = self.buffer.document
        info = self.window.render_info
        height = info.window_height if info else 20
        page = max(1, height - 1)
        # The view drawn last may be stale (keys or lines came faster than redraws):
        # the cursor, or the bottom when following, is where the next draw puts it.
        row = doc.cursor_position_row
        if pages < 0:
            top = info.first_visible_line() if info else row
            if self.following:
                top = max(top, doc.line_count - height)
            top = min(top, row)
            target = max(0, top - page * -pages)
        else:
            bottom = max(info.last_visible_line(), row) if info else row
            target = bottom + page * pages
        if target >= doc.line_count - 1:
            self.buffer.cursor_position = len(doc.text)
        else:
            self.buffer.cursor_position = doc.translate_row_col_to_index(target, 0)


STYLE: Final = Style.from_dict(
    {
        "list": "bg:#1c1c1c #d0d0d0",
        "list.title": "bold",
        "list.current": "reverse",
        "list.unread": "bold #ffaf00",
        "list.keychanged": "bold #ff5f5f",
        "list.left": "#8a8a8a",
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
