"""`hushwire group ...` and `hushwire send '#NAME'` / `recv` against a real relay."""

from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import PASSPHRASE
from tests.e2e.test_cli import Cli


@pytest.fixture
async def cli(relay_factory, tmp_path, monkeypatch) -> Cli:
    monkeypatch.setenv("HUSHWIRE_PASSPHRASE", PASSPHRASE)
    relay = await relay_factory(users=("alice", "bob", "carol", "dave"))
    c = Cli(relay, tmp_path)
    for user in ("alice", "bob", "carol", "dave"):
        assert (await c.login(user))[0] == 0
    return c


async def as_user(cli: Cli, user: str, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    return await cli.run("--profile", cli.profile(user), *argv, stdin=stdin)


async def test_group_commands_and_their_errors(cli):
    code, out, err = await as_user(cli, "alice", "group", "create", "team", "bob", "carol")
    assert code == 0, err
    assert "#team" in out and "epoch   1" in out and "bob (devices 1)" in out
    code, out, err = await as_user(cli, "alice", "group", "add", "#team", "dave")
    assert code == 0, err
    code, out, err = await as_user(cli, "bob", "recv", "--json")
    assert code == 0, err
    notices = [json.loads(line) for line in out.splitlines()]
    assert [(n["group"], n["notice"]) for n in notices] == [
        ("team", "alice created the group 'team' with you, carol"),
        ("team", "alice added dave"),
    ]
    code, out, err = await as_user(cli, "bob", "group", "info", "team", "--json")
    info = json.loads(out)
    assert (code, info["epoch"], info["members"], info["admins"]) == (
        0, 2, ["alice", "bob", "carol", "dave"], ["alice"],
    )  # fmt: skip
    code, out, err = await as_user(cli, "bob", "group", "list")
    assert (code, out) == (0, "#team  4 members, epoch 2\n")
    # Every bad input gets one clear line and exit status 1.
    for user, argv, expected in [
        ("bob", ("group", "add", "team", "carol"), "not an admin of #team"),
        ("bob", ("group", "info", "nope"), "no group named 'nope'"),
        ("alice", ("group", "remove", "team", "erin"), "not in #team: erin"),
        ("alice", ("group", "create", "x", "nobody"), "unknown_user"),
        ("alice", ("group", "create", "bad\tname", "bob"), "printable"),
        ("alice", ("group", "create", "big", *[f"u{i}" for i in range(50)]), "at most 50"),
        ("alice", ("group", "add", "team", "Bad!"), "invalid username"),
        ("alice", ("send", "#nope", "hi"), "no group named 'nope'"),
        ("alice", ("group", "leave", "team"), "admin"),
    ]:
        code, out, err = await as_user(cli, user, *argv)
        assert code == 1 and expected in err and len(err.splitlines()) == 1, (argv, err)
    code, out, err = await as_user(cli, "carol", "group", "leave", "team")
    assert code == 0, err
    code, out, err = await as_user(cli, "carol", "group", "list")
    assert out == "#team  3 members, epoch 3, 2 unread, left\n"
    code, out, err = await cli.run("group", "--help")
    assert code == 0 and "create" in out and "at most 50 members" in out


async def test_send_to_a_group_and_recv_it_as_json_lines(cli):
    assert (await as_user(cli, "alice", "group", "create", "team", "bob", "carol"))[0] == 0
    code, out, err = await as_user(cli, "alice", "send", "#team", "hello", "team")
    assert (code, out, err) == (0, "", "")
    code, out, err = await as_user(cli, "carol", "send", "#team", stdin="carol\x1b[2J here\n")
    assert (code, err) == (0, "")
    code, out, err = await as_user(cli, "bob", "recv", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    messages = [(m["group"], m["sender"], m["text"]) for m in lines if "text" in m]
    assert messages == [("team", "alice", "hello team"), ("team", "carol", "carol\x1b[2J here")]
    assert all(m["gid"] == lines[0]["gid"] for m in lines)
    assert "\x1b" not in out  # JSON escapes it
    code, out, err = await as_user(cli, "bob", "recv")
    assert (code, out) == (0, "")  # each line once: marked read after it was printed
    code, out, err = await as_user(cli, "carol", "recv")
    assert code == 0, err
    assert "#team alice " in out and out.rstrip().endswith("hello team") and "\x1b" not in out


async def test_send_to_a_group_while_the_relay_is_down_fails_as_to_a_contact(cli):
    assert (await as_user(cli, "alice", "group", "create", "team", "bob"))[0] == 0
    await cli.relay.server.close()
    to_contact = await as_user(cli, "alice", "send", "bob", "hi")
    to_group = await as_user(cli, "alice", "send", "#team", "hi")
    assert to_contact[0] == to_group[0] == 1
    assert "relay unreachable" in to_contact[2] and "relay unreachable" in to_group[2]
    await cli.relay.restart()
    assert (await as_user(cli, "alice", "send", "#team", "after"))[0] == 0
    code, out, err = await as_user(cli, "bob", "recv", "--json")
    assert code == 0, err
    # Nothing was applied or kept while down: only the later message arrives.
    assert [m["text"] for m in map(json.loads, out.splitlines()) if "text" in m] == ["after"]
