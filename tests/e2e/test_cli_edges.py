"""What a new user hit with `hushwire`: each rough edge, against a real relay, and hostile
command lines and stdin that must never produce a traceback."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys

import pytest

from hushwire.client.cli import main
from tests.e2e.helpers import PASSPHRASE, WAIT
from tests.e2e.test_cli import Cli
from tests.e2e.test_cli import cli as cli  # the fixture
from tests.services import free_port
from tests.support import Cutter

NOT_UTF8 = "the message is not valid UTF-8 text; nothing was sent"


async def logged_in(cli: Cli, *users: str) -> None:
    for user in users:
        code, _, err = await cli.login(user)
        assert code == 0, err


async def test_non_utf8_and_whitespace_messages_are_refused(cli):
    await logged_in(cli, "alice", "bob")
    alice = ("--profile", cli.profile("alice"))
    code, _, err = await cli.run(*alice, "send", "bob", "caf\udce9")  # undecodable argv
    assert (code, err) == (
        1,
        "hushwire: error: the message is not valid UTF-8 text; nothing was sent\n",
    )
    out, errs = io.StringIO(), io.StringIO()
    raw = io.TextIOWrapper(io.BytesIO(b"bad \xff\xfe bytes\n"), encoding="utf-8")
    code = await asyncio.to_thread(
        main, [*alice, "send", "bob"], stdin=raw, stdout=out, stderr=errs
    )
    assert code == 1 and "not valid UTF-8" in errs.getvalue()
    for blank in (" ", "\n\t \n"):
        code, _, err = await cli.run(*alice, "send", "bob", stdin=blank)
        assert (code, err) == (1, "hushwire: error: empty message: nothing to send\n")
    code, _, err = await cli.run(*alice, "send", "bob", "   ")
    assert code == 1 and "empty message" in err


async def test_login_fingerprint_must_be_complete(cli, relay):
    fp = relay.server.fingerprint
    for partial in (fp[:11], fp[:-3], "ZZ" + fp[2:]):
        code, _, err = await cli.login("alice", "--fingerprint", partial)
        assert code == 2 and "full SHA-256 fingerprint" in err
    code, out, err = await cli.login("alice", "--fingerprint", fp.replace(":", "").lower())
    assert code == 0, err
    assert f"matches the pinned fingerprint {fp}" in out


async def test_contacts_counts_what_waited_at_the_relay(cli, login, relay):
    await logged_in(cli, "bob")
    alice = await login(relay, "alice")
    for i in range(3):
        await alice.send("bob", f"m{i}")
    code, out, err = await cli.run("--profile", cli.profile("bob"), "contacts")
    assert code == 0, err
    assert out.split() == ["alice", "online", "unverified", "3", "unread"]


async def test_recv_wait_fails_when_the_relay_goes_away(cli, relay, login):
    await logged_in(cli, "bob")
    await (await login(relay, "alice")).send("bob", "before the relay goes")
    recv = asyncio.create_task(cli.run("--profile", cli.profile("bob"), "recv", "--wait", "60"))
    store = relay.server.relay.store
    # Once recv has stored and acked the message it is waiting; nothing to subscribe to
    # at the relay's store, so look again each 10 ms.
    async with asyncio.timeout(WAIT):
        while await store.pending("bob") or "bob" not in relay.server.relay.online:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await relay.server.close()
    code, out, err = await asyncio.wait_for(recv, WAIT)
    assert code == 1 and out.endswith(" before the relay goes\n")
    *notes, error = err.splitlines()  # (the reconnect tried at once,) then the error
    assert all(n.startswith("hushwire: note: lost the relay (") for n in notes)
    assert error.startswith("hushwire: error: stopped receiving: lost the relay")


async def test_recv_wait_fails_over_to_the_next_relay_and_keeps_receiving(cli, relay, login):
    front = await Cutter(relay.port).start()  # address a: the same relay, until cut
    code, out, err = await cli.run(
        "--profile",
        cli.profile("bob"),
        "login",
        "--relay",
        f"127.0.0.1:{front.port},127.0.0.1:{relay.port}",
        "--user",
        "bob",
        "--token",
        "-",
        stdin=relay.tokens["bob"] + "\n",
    )
    assert code == 0 and f"logged in to 127.0.0.1:{front.port} as bob" in out, err
    alice = await login(relay, "alice")
    await alice.send("bob", "through a")
    recv = asyncio.create_task(cli.run("--profile", cli.profile("bob"), "recv", "--wait", "60"))
    store = relay.server.relay.store
    async with asyncio.timeout(WAIT):
        while await store.pending("bob") or "bob" not in relay.server.relay.online:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await front.cut()
    await alice.send("bob", "through b")
    async with asyncio.timeout(WAIT):  # acked: recv got it over the relay's own address
        while await store.pending("bob"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await relay.server.close()  # now every address is gone: recv stops
    code, out, err = await asyncio.wait_for(recv, WAIT)
    assert [line.split(" ", 2)[2] for line in out.splitlines()] == ["through a", "through b"]
    assert f"note: lost the relay (connection lost; trying 127.0.0.1:{relay.port})" in err
    assert code == 1 and "stopped receiving: lost the relay" in err


async def test_relay_lists_bad_or_all_down_are_one_clear_line(cli):
    for relays, fragment in (
        ("127.0.0.1:7443,127.0.0.1:7443", "127.0.0.1:7443 is listed twice"),
        ("127.0.0.1:7443,", "got ''"),
        ("127.0.0.1:7443;127.0.0.1:7444", "got '127.0.0.1:7443;127.0.0.1:7444'"),
        ("::1:7443", "an IPv6 address in [brackets]"),
    ):
        argv = ("--profile", cli.profile("x"), "login", "--relay", relays, "--user", "x")
        code, _, err = await cli.run(*argv, "--token", "t")
        assert code == 2 and fragment in err and "Traceback" not in err, err
    a, b = free_port(), free_port()
    code, _, err = await cli.run(
        "--profile", cli.profile("x"), "login", "--relay", f"127.0.0.1:{a},127.0.0.1:{b}",
        "--user", "x", "--token", "t",
    )  # fmt: skip
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(
        f"hushwire: error: relay unreachable: could not reach any of 127.0.0.1:{a}, 127.0.0.1:{b}"
    )


HOSTILE_ARGV = [
    ["send", "bob", "\udcff\udcfe"],
    ["send", "\udcffbob", "hi"],
    ["send", "b" * 10_000, "hi"],
    ["send", "bob\x1b]0;x\x07", "hi"],
    ["recv", "--wait", "nan"],
    ["recv", "--wait", "inf"],
    ["recv", "--wait", "-1"],
    ["verify", "../../etc/passwd"],
    ["trust", ""],
    ["login", "--relay", "::::", "--user", "x", "--token", "t"],
    ["login", "--relay", "127.0.0.1:1", "--user", "\u202ebob", "--token", "t"],
    ["login", "--relay", "127.0.0.1:99999", "--user", "bob", "--token", "t"],
    ["contacts", "--json", "--bogus"],
    ["--profile", "/dev/null", "contacts"],
    ["--profile", "\x00", "recv"],
    ["nonsense"],
]


@pytest.mark.parametrize("argv", HOSTILE_ARGV, ids=range(len(HOSTILE_ARGV)))
async def test_hostile_command_lines_never_show_a_traceback(cli, argv):
    await logged_in(cli, "alice")
    full = argv if argv[0] == "--profile" else ["--profile", cli.profile("alice"), *argv]
    code, out, err = await cli.run(*full, stdin="\udcff")
    assert (
        code in (1, 2)
        and "Traceback" not in out + err
        and err.startswith(("hushwire: ", "usage: "))
    ), err


# After ~0.3 s the interpreter runs hushwire's entry guard (which imports the client);
# 0.0 lands before Python handles SIGINT at all (the process just ends).
@pytest.mark.parametrize("delay", [0.0, 0.3, 0.5, 0.8, 1.2])
async def test_ctrl_c_at_any_moment_says_what_happened(cli, delay):
    await logged_in(cli, "alice", "bob")
    env = {**os.environ, "HUSHWIRE_PASSPHRASE": PASSPHRASE}
    code = "import sys; from hushwire.client.entry import main; sys.exit(main())"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "--profile", cli.profile("alice"), "send", "bob", "hi",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    await asyncio.sleep(delay)  # the moment of the Ctrl-C is the test's parameter
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), WAIT)
    text = err.decode()
    assert "Traceback" not in text
    if proc.returncode == 130:
        assert text.startswith("hushwire: interrupted"), text
    elif proc.returncode != -signal.SIGINT:  # before Python could install its handler
        assert proc.returncode == 0, text


async def test_send_to_a_user_who_never_logged_in_is_kept(cli):
    await logged_in(cli, "alice")
    code, out, err = await cli.run("--profile", cli.profile("alice"), "send", "carol", "hi")
    assert code == 0 and out == ""
    assert err.startswith("hushwire: note: waiting for carol's first login"), err
