"""The `hushwire` command against a real relay: in-process via main() and as a process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hushwire.client.cli import main
from hushwire.client.service import HushwireClient, KeyChanged, MessageReceived
from tests.e2e.helpers import PASSPHRASE, next_event

ROOT = Path(__file__).resolve().parents[2]


class Cli:
    """Runs `hushwire` in-process on a worker thread (main() runs its own event loop)."""

    def __init__(self, relay, tmp_path: Path) -> None:
        self.relay = relay
        self.tmp = tmp_path

    def profile(self, user: str) -> str:
        return str(self.tmp / f"cli-{user}")

    async def run(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(
            main, list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err
        )
        return code, out.getvalue(), err.getvalue()

    async def login(self, user: str, *extra: str) -> tuple[int, str, str]:
        return await self.run(
            "--profile",
            self.profile(user),
            "login",
            "--relay",
            f"127.0.0.1:{self.relay.port}",
            "--user",
            user,
            "--token",
            "-",
            *extra,
            stdin=self.relay.tokens[user] + "\n",
        )


@pytest.fixture
def cli(relay, tmp_path, monkeypatch) -> Cli:
    monkeypatch.setenv("HUSHWIRE_PASSPHRASE", PASSPHRASE)
    return Cli(relay, tmp_path)


async def test_login_send_recv_verify_contacts(cli, relay):
    code, out, err = await cli.login("alice")
    assert code == 0, err
    assert relay.server.fingerprint in out and "pinned" in out
    assert relay.tokens["alice"] not in out + err
    assert (await cli.login("bob"))[0] == 0
    code, out, err = await cli.run(
        "--profile", cli.profile("alice"), "send", "bob", "hello", "from", "the", "cli"
    )
    assert (code, err) == (0, "")
    code, out, err = await cli.run(
        "send", "bob", "--profile", cli.profile("alice"), stdin="line one\nline two\x1b[31m red\n"
    )
    assert code == 0, err
    code, out, err = await cli.run("--profile", cli.profile("bob"), "recv", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [m["text"] for m in lines] == ["hello from the cli", "line one\nline two\x1b[31m red"]
    assert all(
        m["sender"] == "alice"
        and re.fullmatch(r"[0-9a-f]{32}", m["id"])
        and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["sent_at"])
        for m in lines
    )
    assert "\x1b" not in out  # escaped in JSON, never raw
    # Read once: a second recv prints nothing.
    assert (await cli.run("--profile", cli.profile("bob"), "recv"))[1] == ""
    await cli.run("--profile", cli.profile("alice"), "send", "bob", "plain\x1b]0;pwned\x07 text")
    code, out, _ = await cli.run("--profile", cli.profile("bob"), "recv")
    assert re.fullmatch(r"alice \S+Z plain text\n", out)

    code, out, _ = await cli.run("--profile", cli.profile("bob"), "verify", "alice")
    digits = re.findall(r"\b\d{5}\b", out)
    assert code == 0 and len(digits) == 12 and "NOT verified" in out
    _, alice_view, _ = await cli.run("--profile", cli.profile("alice"), "verify", "bob")
    assert re.findall(r"\b\d{5}\b", alice_view) == digits  # the same number on both sides
    assert (await cli.run("--profile", cli.profile("bob"), "verify", "alice", "--mark"))[0] == 0
    code, out, _ = await cli.run("--profile", cli.profile("bob"), "contacts", "--json")
    (entry,) = [json.loads(line) for line in out.splitlines()]
    assert entry == {
        "name": "alice",
        "online": False,
        "verified": True,
        "key_changed": False,
        "unread": 0,
    }
    code, out, _ = await cli.run("--profile", cli.profile("bob"), "contacts")
    assert re.match(r"alice\s+offline\s+verified\s+0 unread", out)


async def test_send_errors_are_one_clear_line(cli, relay_factory, relay):
    await cli.login("alice")
    code, _, err = await cli.run("--profile", cli.profile("alice"), "send", "zed", "hi")
    assert code == 1 and err.count("\n") == 1 and "unknown_user" in err
    code, _, err = await cli.run("--profile", cli.profile("alice"), "send", "bob", "x")
    assert code == 0 and "waiting for bob's first login" in err  # kept, not refused
    code, _, err = await cli.run("--profile", cli.profile("alice"), "send", "bob", "x" * 70_000)
    assert code == 1 and "at most" in err and "bytes" in err
    await relay.server.close()
    code, _, err = await cli.run("--profile", cli.profile("alice"), "send", "bob", "x")
    assert code == 1 and "relay unreachable" in err


async def test_wrong_passphrase_wrong_token_and_missing_profile(cli, monkeypatch):
    code, _, err = await cli.run("--profile", cli.profile("nobody"), "recv")
    assert code == 1 and "hushwire login" in err and err.count("\n") == 1
    await cli.login("alice")
    monkeypatch.setenv("HUSHWIRE_PASSPHRASE", "not the passphrase")
    code, out, err = await cli.run("--profile", cli.profile("alice"), "recv")
    assert code == 1 and out == ""
    assert err == f"hushwire: error: wrong passphrase for the profile in {cli.profile('alice')}\n"
    monkeypatch.setenv("HUSHWIRE_PASSPHRASE", PASSPHRASE)
    token_file = cli.tmp / "token"
    token_file.write_text("hw_wrong\n")
    code, out, err = await cli.run(
        "--profile",
        cli.profile("carol"),
        "login",
        "--relay",
        f"127.0.0.1:{cli.relay.port}",
        "--user",
        "carol",
        "--token-file",
        str(token_file),
    )
    assert code == 1 and "login refused" in err and "hw_wrong" not in out + err
    assert not (cli.tmp / "cli-carol" / "profile.db").exists()


async def test_key_change_holds_send_until_trust(cli, relay, login, reopen):
    await cli.login("alice")
    bob = await login(relay, "bob")
    assert (await cli.run("--profile", cli.profile("alice"), "send", "bob", "hi"))[0] == 0
    await next_event(bob, MessageReceived)
    await bob.close()
    alice = await reopen("alice", profile=Path(cli.profile("alice")))
    await alice.start()  # online, so the relay pushes key_changed to her
    bob2 = await login(relay, "bob", profile=cli.tmp / "bob-new", replace_identity=True)
    await next_event(alice, KeyChanged)
    await alice.close()
    code, _, err = await cli.run("--profile", cli.profile("alice"), "send", "bob", "held one")
    assert code == 3 and "hushwire trust bob" in err
    code, out, _ = await cli.run("--profile", cli.profile("alice"), "verify", "bob")
    assert "CHANGED" in out
    code, _, err = await cli.run("--profile", cli.profile("alice"), "verify", "bob", "--mark")
    assert code == 1 and "trust" in err
    code, out, _ = await cli.run("--profile", cli.profile("alice"), "contacts")
    assert "KEY CHANGED" in out
    code, out, err = await cli.run("--profile", cli.profile("alice"), "trust", "bob")
    assert code == 0 and "1 held message(s) sent" in out, err
    assert (await next_event(bob2, MessageReceived)).text == "held one"


async def test_changed_certificate_and_profile_lock(cli, relay, tmp_path):
    await cli.login("alice")
    client = await HushwireClient.open(Path(cli.profile("alice")), PASSPHRASE)
    try:
        code, _, err = await cli.run("--profile", cli.profile("alice"), "recv")
        assert code == 1 and "is in use by another hushwire process" in err
        # ... also for a separate process, which is what the lock is for.
        proc = await _hushwire("--profile", cli.profile("alice"), "recv")
        assert proc.returncode == 1 and "in use by another hushwire process" in proc.stderr
    finally:
        await client.close()
    await relay.restart(cert=tmp_path / "new-cert.pem", key=tmp_path / "new-key.pem")
    code, _, err = await cli.run("--profile", cli.profile("alice"), "send", "bob", "x")
    assert code == 1 and "different certificate" in err and "--fingerprint" in err
    code, out, err = await cli.login("alice", "--fingerprint", relay.server.fingerprint)
    assert code == 0 and f"matches the pinned fingerprint {relay.server.fingerprint}" in out, err
    assert (await cli.run("--profile", cli.profile("alice"), "recv"))[0] == 0


async def test_real_process_and_no_plaintext_at_rest(cli, relay):
    await cli.login("alice")
    await cli.login("bob")
    secret = "the eagle lands at midnight"
    proc = await _hushwire("--profile", cli.profile("alice"), "send", "bob", input=secret)
    assert proc.returncode == 0, proc.stderr
    reply = "understood, bringing snacks"
    await cli.run("--profile", cli.profile("bob"), "send", "alice", reply)
    proc = await _hushwire("--profile", cli.profile("bob"), "recv", "--json", "--wait", "0.2")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["text"] == secret
    assert "SHA-256" not in proc.stdout
    await cli.run("--profile", cli.profile("alice"), "recv")
    files = [p for d in (cli.tmp / "cli-alice", cli.tmp / "cli-bob") for p in d.iterdir()]
    files += [
        p
        for p in Path(relay.config.db).parent.iterdir()
        if p.name.startswith("relay.db") and p.is_file()  # not the control socket
    ]
    assert any(p.name.endswith("-wal") for p in files)
    for path in files:
        data = path.read_bytes()
        for needle in (secret, reply, relay.tokens["alice"], relay.tokens["bob"]):
            assert needle.encode() not in data, f"{needle!r} in {path.name}"


async def test_help_and_reserved_chat(cli):
    for argv in (["--help"], ["send", "--help"], ["recv", "--help"], ["login", "--help"]):
        code, out, _ = await cli.run(*argv)
        assert code == 0 and "usage: hushwire" in out
    # `chat` and no command both open the terminal chat (tests/client/test_tui.py drives
    # it); without a profile they stop at once with one clear line.
    for argv in (["chat"], []):
        code, _, err = await cli.run("--profile", cli.profile("alice"), *argv)
        assert code == 1 and "no hushwire profile" in err and "Traceback" not in err


class _Done:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


async def _hushwire(*argv: str, input: str = "") -> _Done:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hushwire.client.cli",
        *argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(input.encode()), 60)
    return _Done(proc.returncode, out.decode(), err.decode())


async def test_link_a_second_machine_then_list_and_unlink_it(cli, relay):
    """`hushwire link` in a real process prints the code; `hushwire login --link CODE`
    makes a new profile a device of the account; `devices` lists both; `unlink` removes
    it and the same code cannot be used again."""
    assert (await cli.login("alice"))[0] == 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hushwire.client.cli",
        "--profile",
        cli.profile("alice"),
        "link",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HUSHWIRE_PASSPHRASE": PASSPHRASE},
    )
    code = None
    async with asyncio.timeout(30):
        while code is None:
            line = (await proc.stdout.readline()).decode()
            assert line, (await proc.stderr.read()).decode()
            if m := re.search(r"--link (hw1-[a-z2-7-]+)", line):
                code = m.group(1)
    rc, out, err = await cli.run(
        "--profile",
        cli.profile("alice-laptop"),
        "login",
        "--relay",
        f"127.0.0.1:{relay.port}",
        "--link",
        code,
        "--name",
        "laptop",
    )
    assert rc == 0 and "linked as device 2 of alice" in out, err
    assert f"relay certificate pinned from the link code: {relay.server.fingerprint}" in out
    rest, errs = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and b"linked device 2 (laptop)" in rest, errs
    assert b"mismatched_devices" not in errs  # linked devices chat: no warning any more
    rc, out, _ = await cli.run("--profile", cli.profile("alice"), "devices", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["name"], r["this"]) for r in rows] == [
        (1, "first device", True),
        (2, "laptop", False),
    ]
    rc, out, _ = await cli.run("--profile", cli.profile("alice"), "unlink", "2")
    assert rc == 0 and "device 2 unlinked" in out
    rc, _, err = await cli.run("--profile", cli.profile("alice-laptop"), "devices")
    assert rc == 1 and "wrong token" in err  # its credential is revoked
    rc, _, err = await cli.run(
        "--profile", cli.profile("again"), "login", "--relay", f"127.0.0.1:{relay.port}",
        "--link", code,
    )  # fmt: skip
    assert rc == 1 and "link_failed" in err
