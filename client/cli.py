"""`hushwire`: the scripting surface of the client (the full-screen TUI is `hushwire chat`).

Every command takes `--profile DIR` (default ~/.hushwire). The passphrase comes from
HUSHWIRE_PASSPHRASE or a prompt. Errors are one line on stderr, never a traceback.
Message text goes to stdout only on purpose (`recv`), made safe for the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from hushwire.client.errors import (
    CertificateMismatch,
    ClientError,
    ConnectionClosed,
    MessageHeld,
)
from hushwire.client.service import (
    ConnectionState,
    GroupLineItem,
    GroupMessageReceived,
    GroupNotice,
    HistoryItem,
    HushwireClient,
    KeyChanged,
    MessageQuarantined,
    MessageReceived,
    MessageRejected,
    Notice,
    RelaySettings,
    SessionRestarted,
    parse_relays,
    relay_error_text,
    restart_text,
)
from hushwire.client.store import ProfileStore
from hushwire.client.text import safe_for_terminal
from hushwire.common.errors import ErrorCode, HushwireError, RequestError
from hushwire.common.version import version

DEFAULT_PROFILE = Path("~/.hushwire")
PASSPHRASE_ENV = "HUSHWIRE_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_HELD = 3  # the contact's key changed; the message waits for `hushwire trust`

DESCRIPTION = """\
hushwire: end-to-end encrypted chat through a hushwire relay.

Start with `hushwire login`, then `hushwire send` and `hushwire recv` (for scripts), or
`hushwire chat` (or no command) for the full-screen terminal UI.
"""

EPILOG = f"""\
environment:
  {PASSPHRASE_ENV}   the profile passphrase (otherwise it is asked for)

exit status:
  0  success
  1  an error (one line on stderr: wrong passphrase, relay unreachable, unknown user,
     mailbox full, rate limited with the retry time, ...)
  2  bad command line
  3  message held: the contact's identity key changed; see `hushwire verify NAME`
     and `hushwire trust NAME`

The profile (keys, sessions, contacts, history, relay settings) lives in --profile DIR,
encrypted with a key derived from the passphrase; one process uses it at a time.
"""


class CliError(Exception):
    """A message for the user and an exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# --- small helpers ----------------------------------------------------------------------


def read_passphrase(*, confirm: bool = False) -> str:
    """From HUSHWIRE_PASSPHRASE, else a prompt (twice when creating a profile)."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        return env
    try:
        passphrase = getpass.getpass("hushwire passphrase: ")
        if confirm and getpass.getpass("repeat the passphrase: ") != passphrase:
            raise CliError("the passphrases do not match")
    except EOFError:
        raise CliError(f"no passphrase: set {PASSPHRASE_ENV} or run in a terminal") from None
    return passphrase


def _profile(args: argparse.Namespace) -> Path:
    return Path(args.profile or DEFAULT_PROFILE).expanduser()


def _relays(value: str) -> tuple[tuple[str, int], ...]:
    try:
        return parse_relays(value)
    except ClientError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _fingerprint(value: str) -> str:
    """A full SHA-256 fingerprint, normalised to AB:CD:... (a prefix pins nothing)."""
    digits = "".join(value.split()).replace(":", "").upper()
    if len(digits) != 64 or any(c not in "0123456789ABCDEF" for c in digits):
        raise argparse.ArgumentTypeError(
            "expected the full SHA-256 fingerprint: 32 bytes in hex, as AB:CD:... (64 hex digits)"
        )
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 1e9:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {value!r}")
    return seconds


def _read_token(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.token_file is not None:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(
                f"cannot read the token file {args.token_file}: {exc.strerror}"
            ) from None
    elif args.token == "-":  # noqa: S105 (the stdin marker, not a token)
        token = stdin.readline().strip()
    else:
        token = args.token or ""
    if not token:
        raise CliError("no token given (use --token, --token - for stdin, or --token-file)")
    return token


def _absolute(path: str | None) -> str | None:
    """Paths are stored absolute, so later runs from another directory still find them."""
    return str(Path(path).resolve()) if path else None


def _relay_settings(args: argparse.Namespace, token: str) -> RelaySettings:
    (host, port), *alternates = args.relay
    absolute = _absolute
    return RelaySettings(
        host=host,
        port=port,
        alternates=tuple(alternates),
        user=args.user,
        token=token,
        ca_file=absolute(args.ca),
        client_cert=absolute(args.client_cert),
        client_key=absolute(args.client_key),
    )


def _warn(err: TextIO, text: str) -> None:
    """Every stderr line: names, reasons and details in it may come from the relay."""
    print(f"hushwire: {safe_for_terminal(text)}", file=err)


def _report_event(event: object, err: TextIO) -> None:
    """Warnings that must reach a script's user on stderr, whatever the command."""
    if isinstance(event, KeyChanged):
        _warn(
            err,
            f"warning: {event.contact}'s identity key has changed. Messages to them "
            f"are held. Check `hushwire verify {event.contact}`, then "
            f"`hushwire trust {event.contact}`.",
        )
    elif isinstance(event, MessageQuarantined):
        _warn(
            err,
            f"warning: a message from {event.contact} under their new, not yet accepted "
            f"identity key is kept unread until `hushwire trust {event.contact}`.",
        )
    elif isinstance(event, SessionRestarted):
        _warn(err, f"warning: {restart_text(event)}")
    elif isinstance(event, MessageRejected):
        _warn(
            err,
            f"warning: rejected a message from {event.contact}: {event.reason}",
        )
    elif isinstance(event, Notice):
        _warn(err, f"note: {event.text}")
    elif isinstance(event, ConnectionState) and event.failover:
        _warn(err, f"note: lost the relay ({event.detail})")
    elif (
        isinstance(event, ConnectionState)
        and event.state == "disconnected"
        and (event.detail != "closed")
    ):
        _warn(err, f"disconnected: {event.detail}")


def _raise_if_lost(event: object) -> None:
    """`recv` stops with an error when the relay goes away or refuses us (disabled);
    not during the reconnect made at once after a drop (failover), only if it fails."""
    if isinstance(event, ConnectionState) and event.state != "connected":
        if event.detail != "closed" and not event.failover:
            raise CliError(f"stopped receiving: lost the relay ({event.detail})")


def _drain_warnings(client: HushwireClient, err: TextIO) -> None:
    while not client.events.empty():
        _report_event(client.events.get_nowait(), err)


def _iso(item_time: Any) -> str:
    return item_time.strftime("%Y-%m-%dT%H:%M:%SZ")


def _format_message(item: HistoryItem | MessageReceived, as_json: bool) -> str:
    sender = item.contact
    if as_json:
        # ensure_ascii: every control or bidi character arrives escaped, never raw.
        return json.dumps(
            {
                "sender": sender,
                "id": item.envelope_id,
                "sent_at": _iso(item.sent_at),
                "text": item.text,
            },
            ensure_ascii=True,
        )
    text = safe_for_terminal(item.text).replace("\n", "\\n")
    return f"{sender} {_iso(item.sent_at)} {text}"


async def _open_started(args: argparse.Namespace, *, required: bool = True) -> HushwireClient:
    client = await HushwireClient.open(_profile(args), read_passphrase())
    try:
        await client.start()
    except (ConnectionClosed, RequestError, CertificateMismatch):
        if required:
            await client.close()
            raise
    except BaseException:
        await client.close()
        raise
    return client


# --- commands -----------------------------------------------------------------------


async def _login_link(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.user or args.token or args.token_file or args.client_cert or args.replace_identity:
        raise CliError(
            "--link takes the account and a new credential from the code: "
            "no --user, --token, --client-cert or --replace-identity"
        )
    profile = _profile(args)
    passphrase = read_passphrase(confirm=sys.stdin.isatty())
    (host, port), *alternates = args.relay
    client = await HushwireClient.login_link(
        profile,
        passphrase,
        host=host,
        port=port,
        alternates=tuple(alternates),
        code=args.link,
        name=args.name,
        fingerprint=args.fingerprint,
        ca_file=_absolute(args.ca),
    )
    try:
        print(
            f"linked as device {client.settings.device} of {client.user}; profile {profile}",
            file=out,
        )
        if client.fingerprint_learned:
            print(f"relay certificate pinned: {client.settings.pin}", file=out)
        elif args.fingerprint is None and client.settings.pin:
            print(f"relay certificate pinned from the link code: {client.settings.pin}", file=out)
        await client.sync()
        _drain_warnings(client, err)
    finally:
        await client.close()
    return EXIT_OK


async def cmd_link(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    client = await _open_started(args)
    try:
        offer, expires_at = await client.offer_link(args.ttl)
        print("On the new machine, run within the next minutes:", file=out)
        print(
            f"  hushwire login --relay {client.relays} --link {offer.code.text()}"
            " --profile NEW_PROFILE",
            file=out,
        )
        print(f"the code works once and expires at {_utc(expires_at)}", file=out, flush=True)
        device = await client.accept_link(offer)
        print(safe_for_terminal(f"linked device {device.id} ({device.name})"), file=out)
        _drain_warnings(client, err)
    finally:
        await client.close()
    return EXIT_OK


async def cmd_login(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    if args.link is not None:
        return await _login_link(args, out, err)
    if args.user is None:
        raise CliError("login needs --user NAME (or --link CODE from another device)")
    if (args.client_cert is None) != (args.client_key is None):
        raise CliError("--client-cert and --client-key go together")
    token = _read_token(args, stdin)
    profile = _profile(args)
    passphrase = read_passphrase(confirm=not ProfileStore.exists(profile) and sys.stdin.isatty())
    settings = _relay_settings(args, token)
    client = await HushwireClient.login(
        profile,
        passphrase,
        settings,
        fingerprint=args.fingerprint,
        replace_identity=args.replace_identity,
    )
    try:
        fp = client.settings.pin
        if args.ca:
            print(f"relay certificate validated with {args.ca}", file=out)
        elif client.fingerprint_learned:
            print(f"relay certificate SHA-256 fingerprint:\n  {fp}", file=out)
            print(
                "pinned on first use: compare it with the one your operator published; "
                "a different certificate later will be refused",
                file=out,
            )
        else:
            print(f"relay certificate matches the pinned fingerprint {fp}", file=out)
        print(f"logged in to {client.relay} as {client.user}; profile {profile}", file=out)
        await client.sync()
        _drain_warnings(client, err)
    finally:
        await client.close()
    return EXIT_OK


async def cmd_send(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    try:
        text = " ".join(args.message) if args.message else stdin.read()
        text.encode("utf-8")  # argv undecodable in the locale arrives as lone surrogates
    except UnicodeError:
        raise CliError("the message is not valid UTF-8 text; nothing was sent") from None
    if not args.message and text.endswith("\n"):
        text = text[:-1]  # `echo hi | hushwire send bob` sends "hi"
    if not text.strip():
        raise CliError("empty message: nothing to send")
    client = await _open_started(args)
    try:
        args.progress = SENDING
        if args.name.startswith("#"):
            await client.sync()  # changes queued for us first: send under the current state
            await client.groups.send(args.name, text)
            args.progress = SENT
            _drain_warnings(client, err)
            return EXIT_OK
        result = await client.send(args.name, text, queue_if_offline=False)
        args.progress = SENT if not result.queued else QUEUED
        _drain_warnings(client, err)
    finally:
        await client.close()
    return EXIT_OK


# What a Ctrl-C during `send` leaves behind, said on the way out (exit status 130).
SENDING = (
    "interrupted before the relay confirmed the message: it may not have gone out (if it "
    "was already encrypted, the next hushwire command that connects sends it)"
)
SENT = "interrupted after the relay confirmed the message: it was sent"
QUEUED = "interrupted: the message is kept and sent by a later hushwire command"


# What `recv` prints on stdout (everything else is a warning on stderr).
SHOWN = (MessageReceived, GroupMessageReceived, GroupNotice)
GroupItem = GroupLineItem | GroupMessageReceived | GroupNotice


async def cmd_recv(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    client = await _open_started(args)
    shown: set[str] = set()

    from hushwire.client.cli_groups import format_group_item  # it imports this module

    async def show(item: HistoryItem | MessageReceived | GroupItem) -> None:
        if item.uid in shown:
            return
        shown.add(item.uid)
        # Marked read only after it was printed: a crash before that shows it again.
        if isinstance(item, HistoryItem | MessageReceived):
            print(_format_message(item, args.json), file=out, flush=True)
            await client.mark_read(uids=(item.uid,))
        else:
            print(format_group_item(item, args.json), file=out, flush=True)
            await client.groups.mark_read(uids=(item.uid,))

    async def consume(until: Callable[[], bool], deadline: float | None) -> None:
        while not until():
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return
            try:
                event = await asyncio.wait_for(client.events.get(), timeout)
            except TimeoutError:
                return
            if isinstance(event, SHOWN):
                await show(event)
            else:
                _report_event(event, err)
                _raise_if_lost(event)

    try:
        for item in await client.unread():
            await show(item)
        for line in await client.groups.unread():
            await show(line)
        syncing = asyncio.create_task(client.sync())
        while not syncing.done():
            waiter = asyncio.create_task(client.events.get())
            done, _ = await asyncio.wait({syncing, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                event = waiter.result()
                if isinstance(event, SHOWN):
                    await show(event)
                else:
                    _report_event(event, err)
                    _raise_if_lost(event)
            else:
                waiter.cancel()
        try:
            await syncing
        except ConnectionClosed as exc:
            raise CliError(f"stopped receiving: lost the relay ({exc.message})") from None
        await consume(client.events.empty, None)
        if args.wait > 0:
            await consume(lambda: False, time.monotonic() + args.wait)
    finally:
        await client.close()
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    client = await HushwireClient.open(_profile(args), read_passphrase())
    try:
        state = await client.contact_state(args.name)
        if args.mark:
            if state.key_changed:
                raise CliError(
                    f"{args.name}'s identity key has changed; accept it first with "
                    f"`hushwire trust {args.name}`, then compare again"
                )
            await client.mark_verified(args.name)
            print(f"{args.name} is now marked as verified", file=out)
            return EXIT_OK
        number = await client.safety_number(args.name)
        print(f"safety number with {args.name}:", file=out)
        _print_number(number, out)
        if state.key_changed:
            print(
                f"{args.name}'s identity key has CHANGED and is not accepted yet. "
                "The safety number for the new key is:",
                file=out,
            )
            _print_number(await client.safety_number(args.name, pending=True), out)
            print(f"Compare it with {args.name}, then run `hushwire trust {args.name}`.", file=out)
        elif state.verified:
            print(f"{args.name} is verified", file=out)
        else:
            print(
                f"{args.name} is NOT verified. Compare these digits with {args.name} in "
                f"person or over another trusted channel, then run "
                f"`hushwire verify {args.name} --mark`.",
                file=out,
            )
    finally:
        await client.close()
    return EXIT_OK


def _print_number(number: str, out: TextIO) -> None:
    groups = number.split()
    for row in range(0, len(groups), 4):
        print("  " + " ".join(groups[row : row + 4]), file=out)


async def cmd_trust(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    client = await _open_started(args, required=False)
    try:
        state = await client.contact_state(args.name)
        if not state.key_changed:
            print(f"{args.name}'s identity key has not changed; nothing to accept", file=out)
            return EXIT_OK
        released = await client.trust(args.name)
        print(
            f"accepted {args.name}'s new identity key (not verified: compare safety "
            f"numbers with `hushwire verify {args.name}`)",
            file=out,
        )
        where = "sent" if client.state == "connected" else "queued for the next connection"
        print(f"{released} held message(s) {where}", file=out)
        _drain_warnings(client, err)
    finally:
        await client.close()
    return EXIT_OK


async def cmd_contacts(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    client = await _open_started(args, required=False)
    try:
        if client.state != "connected":
            _warn(err, "relay unreachable: online state and unread counts may be stale")
        else:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await client.sync()  # what waits at the relay counts as unread too
        contacts = await client.contacts()
        for c in contacts:
            if args.json:
                print(
                    json.dumps(
                        {
                            "name": c.name,
                            "online": c.online,
                            "verified": c.verified,
                            "key_changed": c.key_changed,
                            "unread": c.unread,
                        }
                    ),
                    file=out,
                )
                continue
            online = {True: "online", False: "offline", None: "unknown"}[c.online]
            trust = "KEY CHANGED" if c.key_changed else ("verified" if c.verified else "unverified")
            print(f"{c.name:<32} {online:<8} {trust:<11} {c.unread} unread", file=out)
        _drain_warnings(client, err)
    finally:
        await client.close()
    return EXIT_OK


def _utc(ts: int | None) -> str:
    if ts is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


async def cmd_devices(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    client = await _open_started(args)
    try:
        for d in await client.devices():
            if args.json:
                record = {
                    "id": d.id,
                    "name": d.name,
                    "linked_at": d.linked_at,
                    "last_seen": d.last_seen,
                    "this": d.this,
                }
                print(json.dumps(record), file=out)
                continue
            mark = " (this device)" if d.this else ""
            line = (
                f"{d.id:>3}  {d.name:<24} linked {_utc(d.linked_at)}, last seen {_utc(d.last_seen)}"
            )
            print(safe_for_terminal(line + mark), file=out)
        _drain_warnings(client, err)
    finally:
        await client.close()
    return EXIT_OK


async def cmd_unlink(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    client = await _open_started(args)
    try:
        await client.unlink(args.device)
        print(
            f"device {args.device} unlinked: the relay revoked it and contacts stop "
            "encrypting to it",
            file=out,
        )
        _drain_warnings(client, err)
    finally:
        await client.close()
    return EXIT_OK


def cmd_chat(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """The full-screen UI lives in client/tui/ (prompt_toolkit), loaded only here."""
    if importlib.util.find_spec("hushwire.client.tui") is None:
        raise CliError(
            "the terminal UI (client.tui) is not part of this build yet; "
            "use `hushwire send` and `hushwire recv`"
        )
    tui = importlib.import_module("hushwire.client.tui")
    result = tui.main(_profile(args), read_passphrase())
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return int(result or 0)


# --- parser and entry point ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--profile",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"profile directory (default {DEFAULT_PROFILE})",
    )
    parser = argparse.ArgumentParser(
        prog="hushwire",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help=f"profile directory (default {DEFAULT_PROFILE})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=[common],
            help=help,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = add(
        "login",
        "create the profile, pin the relay, log in and publish keys",
        "Create the profile (or update its relay settings), connect, and log in. The "
        "first time, the relay's certificate fingerprint is printed and pinned (trust on "
        "first use, like SSH); later a different certificate is refused. With --ca the "
        "certificate is validated against that CA instead. Keys are generated and "
        "published on the first login. The token is never printed.",
    )
    p.add_argument(
        "--relay",
        required=True,
        type=_relays,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="the relay, or several relays of one deployment (one certificate or one CA): "
        "tried in order, starting from the last one that worked; a connection that cannot "
        "be made or drops moves on to the next (a certificate that is not the pinned one "
        "never does: it is an error)",
    )
    p.add_argument("--user", metavar="NAME")
    p.add_argument(
        "--link",
        metavar="CODE",
        help="make this new profile a device of the account whose device printed CODE "
        "(`hushwire link` there); no --user or --token then",
    )
    p.add_argument(
        "--name", default="new device", metavar="NAME", help="this device's name, with --link"
    )
    tok = p.add_mutually_exclusive_group()
    tok.add_argument(
        "--token", metavar="TOKEN", help="the login token from your admin; `-` reads it from stdin"
    )
    tok.add_argument("--token-file", metavar="FILE", help="read the token from FILE")
    p.add_argument("--ca", metavar="FILE", help="validate the relay against this CA file")
    p.add_argument("--client-cert", metavar="FILE", help="client certificate (mutual TLS)")
    p.add_argument("--client-key", metavar="FILE", help="its private key")
    p.add_argument(
        "--fingerprint",
        type=_fingerprint,
        metavar="SHA256",
        help="pin exactly this certificate fingerprint (AB:CD:...) instead of "
        "trusting the first one seen; also the way to accept a replaced "
        "relay certificate after checking it with the operator",
    )
    p.add_argument(
        "--replace-identity",
        action="store_true",
        help="make this profile's keys the account's new identity (after losing the old "
        "profile): every other device is unlinked and contacts see a key change. Without "
        "it, logging in from a second profile is refused: link it instead",
    )
    p.set_defaults(func=cmd_login)

    p = add(
        "send",
        "send one message",
        "Encrypt and send one message; returns once the relay has stored it. The message "
        "is the remaining arguments joined by spaces, or stdin when none are given. "
        "NAME '#GROUP' sends to every member of a group (see `hushwire group`). "
        "Exit status 3 if the contact's identity key changed (the message is held).",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("message", nargs="*", metavar="MESSAGE")
    p.set_defaults(func=cmd_send)

    p = add(
        "recv",
        "print received messages",
        "Print every queued message, wait up to --wait seconds for more, then exit. One "
        "line per message: sender, time (UTC), text (control characters neutralised, "
        "newlines shown as \\n). With --json, one JSON object per line with sender, id "
        "(hex envelope id), sent_at (ISO 8601 UTC) and text. Group messages start with "
        "#GROUP (JSON: group, gid, sender, device, id, sent_at, text); group notices "
        "(membership changes, missed messages, forks) are lines `#GROUP * TEXT` (JSON: "
        "group, gid, notice, sent_at). Messages are acknowledged "
        "to the relay only after they are stored in the profile. Warnings (changed keys, "
        "rejected messages) go to stderr.",
    )
    p.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="keep receiving this long after the queue is empty (default 0)",
    )
    p.add_argument("--json", action="store_true", help="JSON lines output")
    p.set_defaults(func=cmd_recv)

    p = add(
        "verify",
        "show a contact's safety number, or mark it verified",
        "Print the 60-digit safety number for you and NAME. Compare it with NAME in "
        "person or over another trusted channel; if it matches, run with --mark.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--mark", action="store_true", help="mark NAME as verified")
    p.set_defaults(func=cmd_verify)

    p = add(
        "trust",
        "accept a contact's changed identity key and send held messages",
        "Accept NAME's new identity key after it changed (messages to NAME are held until "
        "then), and send the held messages under a fresh session. The contact becomes "
        "unverified: compare safety numbers again with `hushwire verify NAME`.",
    )
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_trust)

    p = add(
        "contacts",
        "list contacts with online and verification state",
        "List contacts: name, online/offline (from the relay), verified/unverified/KEY "
        "CHANGED, unread messages.",
    )
    p.add_argument("--json", action="store_true", help="JSON lines output")
    p.set_defaults(func=cmd_contacts)

    p = add(
        "devices",
        "list your account's devices",
        "List the devices of your account from its signed device list (checked against "
        "your identity): id, name, when linked, when last seen by the relay.",
    )
    p.add_argument("--json", action="store_true", help="JSON lines output")
    p.set_defaults(func=cmd_devices)

    p = add(
        "link",
        "link a new machine to your account",
        "Print a one-time link code, then wait for the new machine to use it with "
        "`hushwire login --link CODE`; it becomes a device of your account with its own "
        "keys. The code carries a secret and a hash of this device's one-time key, so the "
        "relay that carries the exchange cannot take part in it. Every device of the "
        "account then receives each message, and a copy of what the others send.",
    )
    p.add_argument(
        "--ttl", type=float, default=300.0, metavar="SECONDS", help="code lifetime (300)"
    )
    p.set_defaults(func=cmd_link)

    p = add(
        "unlink",
        "remove one of your devices",
        "Sign a device list without device ID and publish it: the relay revokes the "
        "device's credential and drops its mailbox; contacts stop encrypting to it.",
    )
    p.add_argument("device", type=int, metavar="ID", help="the device id (hushwire devices)")
    p.set_defaults(func=cmd_unlink)

    from hushwire.client.cli_groups import add_group_parser  # it imports this module

    add_group_parser(add, common)

    p = add(
        "chat",
        "the full-screen terminal UI (also: no command)",
        "Open the full-screen terminal UI.",
    )
    p.set_defaults(func=cmd_chat)
    return parser


def _error_text(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, CliError):
        return str(exc), exc.status
    if isinstance(exc, MessageHeld):
        return exc.message, EXIT_HELD
    if isinstance(exc, CertificateMismatch):
        hint = (
            "To accept a replaced certificate after checking its fingerprint with the "
            "operator: `hushwire login --relay HOST:PORT --user NAME --token-file FILE "
            "--fingerprint PRESENTED`."
        )
        return f"{exc.message}\n{hint}", EXIT_ERROR
    if isinstance(exc, RequestError):
        if exc.code is ErrorCode.AUTH_FAILED:
            return f"login refused: unknown user or wrong token ({exc.code.value})", EXIT_ERROR
        return relay_error_text(exc), EXIT_ERROR
    if isinstance(exc, ConnectionClosed):
        return f"relay unreachable: {exc.message}", EXIT_ERROR
    if isinstance(exc, ClientError | HushwireError):
        return exc.message, EXIT_ERROR
    return f"{type(exc).__name__}: {exc}", EXIT_ERROR


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Entry point of `hushwire`; returns the exit status."""
    out, err, inp = stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    # Library warnings become our own stderr lines (events); no duplicate log output.
    logging.getLogger("hushwire").addHandler(logging.NullHandler())
    logging.getLogger("hushwire").propagate = False
    func = getattr(args, "func", cmd_chat)
    try:
        result = func(args, out, err, inp)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except KeyboardInterrupt:
        _warn(err, getattr(args, "progress", "interrupted"))
        return 130
    except UnicodeError:
        _warn(err, "error: input that is not valid UTF-8 text; nothing was done with it")
        return EXIT_ERROR
    except (HushwireError, CliError, OSError) as exc:
        text, status = _error_text(exc)
        first, *rest = text.splitlines() or [""]
        _warn(err, f"error: {first}")
        for line in rest:
            print(f"  {safe_for_terminal(line.strip())}", file=err)
        return status
    except Exception as exc:  # whatever the input, no traceback reaches the user
        logging.getLogger("hushwire.client").debug("internal error", exc_info=True)
        _warn(err, f"internal error ({type(exc).__name__}); please report it")
        return EXIT_ERROR


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
