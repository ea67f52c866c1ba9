"""What a typed line means: `parse_input` turns it into a Command, a message text or a
CommandError; `ChatCompleter` completes command, contact, group (`#name`) and member
names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from hushwire.client.text import safe_for_terminal
from hushwire.client.tui.model import HISTORY_ON_OPEN, MAX_HISTORY
from hushwire.common.chat_groups import MAX_MEMBERS, check_group_name
from hushwire.common.names import is_valid_username

# --- commands ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandSpec:
    usage: str
    summary: str
    takes_name: bool = False


COMMANDS: Final[dict[str, CommandSpec]] = {
    "to": CommandSpec("/to NAME|#GROUP", "talk to NAME or a group (loads recent history)", True),
    "group": CommandSpec(
        "/group SUB ...", "create|add|remove|leave|info a group: /group alone lists them"
    ),
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


# `/group SUB`: its usage; True where members follow the group's name.
GROUP_COMMANDS: Final[dict[str, tuple[str, bool]]] = {
    "create": ("/group create NAME MEMBER...", True),
    "add": ("/group add #GROUP MEMBER...", True),
    "remove": ("/group remove #GROUP MEMBER...", True),
    "leave": ("/group leave #GROUP", False),
    "info": ("/group info [#GROUP]", False),
}


GROUP_HELP: Final = (
    "groups: #GROUP is a group's name as listed (one word here; else its id from /group "
    "info). Every change is signed by an admin and checked by every member; a group has "
    f"at most {MAX_MEMBERS} members. Changes, missed messages and forks show in the group."
)


class CommandError(ValueError):
    """A typed line that is not a valid command; the text says what to type instead."""


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    target: str = ""
    count: int = 0
    mark: bool = False
    sub: str = ""  # /group's subcommand
    members: tuple[str, ...] = ()


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

    if word == "to" and args and args[0].startswith("#"):
        # A group name may hold spaces: the rest of the line is the name.
        return Command(word, "#" + _group_name(stripped.split("#", 1)[1].strip()))
    if word == "group":
        return _parse_group(args)
    if spec.takes_name:
        if not args:
            raise usage()
        name = _username(args[0])
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


def _username(name: str) -> str:
    if not is_valid_username(name):
        raise CommandError(
            f"invalid name {safe_for_terminal(name)!r}: 1-32 characters, a-z first, "
            "then a-z 0-9 _ . -"
        )
    return name


def _group_name(name: str) -> str:
    try:
        return check_group_name(name.removeprefix("#"))
    except ValueError as exc:
        raise CommandError(f"{exc}: {safe_for_terminal(name)!r}") from None


def _parse_group(args: list[str]) -> Command:
    """`/group` alone lists the groups; `/group SUB #GROUP [MEMBER...]` (a name of one
    word here: a group whose name has spaces is named by its id, see /group info)."""
    if not args:
        return Command("group")
    sub, *rest = args
    if sub not in GROUP_COMMANDS:
        raise CommandError(f"/group {'|'.join(GROUP_COMMANDS)}: see /help")
    usage, takes_members = GROUP_COMMANDS[sub]
    if sub == "info" and not rest:
        return Command("group", sub=sub)
    if not rest or (takes_members and len(rest) < 2) or (not takes_members and len(rest) > 1):
        raise CommandError(f"usage: {usage}")
    members = tuple(_username(m) for m in rest[1:])
    if len(members) >= MAX_MEMBERS:
        raise CommandError(f"a group has at most {MAX_MEMBERS} members, you included")
    return Command("group", _group_name(rest[0]), sub=sub, members=members)


class ChatCompleter(Completer):
    """Command names after `/`, then what the command takes: contact names, `#group`
    names, `/group` subcommands, and after `/group add|remove #GROUP ` the users to add
    (not yet members) or the members to remove."""

    def __init__(
        self,
        names: Callable[[], Iterable[str]],
        groups: Callable[[], Iterable[str]] = tuple,
        members: Callable[[str], Iterable[str]] = lambda group: (),
    ) -> None:
        self._names = names
        self._groups = groups
        self._members = members

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
        word, *done, last = text[1:].split(" ")
        done = [w for w in done if w]
        for option in self._options(word, done, last):
            if option.startswith(last):
                yield Completion(option, -len(last))

    def _options(self, word: str, done: list[str], last: str) -> Iterable[str]:
        """What may stand where `last` is typed, after the command `word` and the
        words `done` before it."""
        if word == "group":
            if not done:
                return list(GROUP_COMMANDS)
            sub = done[0]
            if sub == "create":
                return self._names() if len(done) > 1 else ()
            if sub not in GROUP_COMMANDS or (len(done) > 1 and not GROUP_COMMANDS[sub][1]):
                return ()
            if len(done) == 1:
                return self._groups()
            members = set(self._members(done[1]))
            if sub == "remove":
                return sorted(members - set(done[2:]))
            return [n for n in self._names() if n not in members and n not in done[2:]]
        spec = COMMANDS.get(word)
        if spec is None or not spec.takes_name:
            return ()
        if done:
            return ["mark"] if word == "verify" and len(done) == 1 else ()
        return [*self._names(), *self._groups()] if word == "to" else self._names()
