"""`hushwire group ...`: group conversations from the command line, and how group lines
look in `recv` (client/cli.py registers these; `hushwire send '#NAME' text` sends to a
group there).

    hushwire group create NAME MEMBER...     hushwire group add NAME MEMBER...
    hushwire group remove NAME MEMBER...     hushwire group leave NAME
    hushwire group rename NAME NEW_NAME      hushwire group list [--json]
    hushwire group info NAME [--json]

NAME is a group's name (a leading `#` is fine) or its hex id. Every name and text that
came from a peer is printed through safe_for_terminal (JSON escapes everything else).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TextIO

from hushwire.client.cli import EXIT_OK, _drain_warnings, _iso, _open_started
from hushwire.client.events import GroupInfo, GroupLineItem, GroupMessageReceived, GroupNotice
from hushwire.client.text import safe_for_terminal

GroupItem = GroupLineItem | GroupMessageReceived | GroupNotice

GROUP_EPILOG = """\
Groups are run by their members' clients: every change is signed by an admin (a member
leaving signs its own), every member's client checks it, and the relay only forwards
sealed envelopes. A group has at most 50 members. Send with `hushwire send '#NAME'
TEXT`; `hushwire recv` prints group messages and group notices (changes, missed
messages, forks) with the group's name.
"""


def format_group_item(item: GroupItem, as_json: bool) -> str:
    """One `recv` line for a group message or a group notice."""
    if isinstance(item, GroupNotice) or (isinstance(item, GroupLineItem) and item.kind == "event"):
        if as_json:
            return json.dumps(
                {"group": item.group, "gid": item.gid, "notice": item.text,
                 "sent_at": _iso(item.sent_at)},
                ensure_ascii=True,
            )  # fmt: skip
        return safe_for_terminal(f"#{item.group} * {item.text}").replace("\n", "\\n")
    if as_json:
        return json.dumps(
            {"group": item.group, "gid": item.gid, "sender": item.sender, "device": item.device,
             "id": item.uid, "sent_at": _iso(item.sent_at), "text": item.text},
            ensure_ascii=True,
        )  # fmt: skip
    text = safe_for_terminal(item.text).replace("\n", "\\n")
    return f"#{safe_for_terminal(item.group)} {item.sender} {_iso(item.sent_at)} {text}"


def _print_info(info: GroupInfo, out: TextIO, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {"name": info.name, "gid": info.gid, "epoch": info.epoch,
                 "members": list(info.members), "admins": list(info.admins),
                 "devices": {m: list(d) for m, d in info.devices.items()},
                 "active": info.active, "unread": info.unread},
                ensure_ascii=True,
            ),
            file=out,
        )  # fmt: skip
        return
    state = "" if info.active else " (you are no longer a member)"
    print(safe_for_terminal(f"#{info.name}{state}"), file=out)
    print(f"  id      {info.gid}", file=out)
    print(f"  epoch   {info.epoch}", file=out)
    print(f"  admins  {', '.join(info.admins)}", file=out)
    print("  members", file=out)
    for member in info.members:
        devices = ", ".join(str(d) for d in info.devices.get(member, ()))
        print(f"    {member} (devices {devices})", file=out)


async def _run(
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    act: Callable[..., object],
    *,
    connect: bool = True,
) -> int:
    client = await _open_started(args, required=connect)
    try:
        if connect:
            await client.sync()  # act on the group as it stands, changes queued included
        result = await act(client)  # type: ignore[misc]
        if isinstance(result, GroupInfo):
            _print_info(result, out, getattr(args, "json", False))
        _drain_warnings(client, err)
    finally:
        await client.close()
    return EXIT_OK


async def cmd_create(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    return await _run(args, out, err, lambda c: c.groups.create(args.name, args.members))


async def cmd_add(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    return await _run(args, out, err, lambda c: c.groups.add(args.name, args.members))


async def cmd_remove(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    return await _run(args, out, err, lambda c: c.groups.remove(args.name, args.members))


async def cmd_leave(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    return await _run(args, out, err, lambda c: c.groups.leave(args.name))


async def cmd_rename(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    return await _run(args, out, err, lambda c: c.groups.rename(args.name, args.new_name))


async def cmd_info(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    return await _run(args, out, err, lambda c: c.groups.info(args.name), connect=False)


async def cmd_list(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    async def show(client: object) -> None:
        for info in await client.groups.list():  # type: ignore[attr-defined]
            if args.json:
                _print_info(info, out, True)
                continue
            state = "" if info.active else ", left"
            unread = f", {info.unread} unread" if info.unread else ""
            line = f"#{info.name}  {len(info.members)} members, epoch {info.epoch}{unread}{state}"
            print(safe_for_terminal(line), file=out)

    return await _run(args, out, err, show, connect=False)


def add_group_parser(
    add: Callable[[str, str, str], argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Register `hushwire group` and its subcommands (`add` makes a top-level command)."""
    p = add(
        "group",
        "group conversations: create, add, remove, leave, rename, list, info",
        "Manage group conversations.\n\n" + GROUP_EPILOG,
    )
    sub = p.add_subparsers(dest="group_command", metavar="SUBCOMMAND", required=True)

    def cmd(name: str, help: str, func: Callable[..., object]) -> argparse.ArgumentParser:
        q = sub.add_parser(name, parents=[common], help=help, description=help)
        q.set_defaults(func=func)
        return q

    q = cmd("create", "create a group with you as admin and the members named", cmd_create)
    q.add_argument("name", metavar="NAME", help="1-64 printable characters")
    q.add_argument("members", nargs="+", metavar="MEMBER", help="user names (at most 49)")
    q = cmd("add", "add members (admins only); they see nothing sent before", cmd_add)
    q.add_argument("name", metavar="NAME")
    q.add_argument("members", nargs="+", metavar="MEMBER")
    q = cmd("remove", "remove members (admins only); they read nothing sent after", cmd_remove)
    q.add_argument("name", metavar="NAME")
    q.add_argument("members", nargs="+", metavar="MEMBER")
    q = cmd("leave", "leave a group (the last admin must make another admin first)", cmd_leave)
    q.add_argument("name", metavar="NAME")
    q = cmd("rename", "rename a group (admins only)", cmd_rename)
    q.add_argument("name", metavar="NAME")
    q.add_argument("new_name", metavar="NEW_NAME")
    q = cmd("list", "list your groups: members, epoch, unread", cmd_list)
    q.add_argument("--json", action="store_true", help="JSON lines output")
    q = cmd("info", "a group's id, epoch, admins, members and their devices", cmd_info)
    q.add_argument("name", metavar="NAME")
    q.add_argument("--json", action="store_true", help="JSON output")
