"""What a typed line means: `parse_input` turns it into a Command, a message text or a
CommandError; `ChatCompleter` completes command and contact names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from hushwire.client.text import safe_for_terminal
from hushwire.client.tui.model import HISTORY_ON_OPEN, MAX_HISTORY
from hushwire.common.names import is_valid_username

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
    "link": CommandSpec("/link", "link a new device: a one-time code for `hushwire login --link`"),
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
    if not stripped[1:].strip():
        raise CommandError("a command name goes after /: see /help (//text sends /text)")
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
