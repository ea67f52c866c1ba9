"""hushwire-admin backup / restore / purge / stats against a real relay process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hushwire.client.connection import ConnectionClosed
from hushwire.common.errors import RequestError
from hushwire.common.messages import Ack, Deliver, DeviceEnvelope, ListVersion, Send
from hushwire.relay import control
from hushwire.relay.backup import summary
from tests.support import WAIT, add_users


async def admin(db: Path, *argv: str) -> tuple[int, str, str]:
    """The real console entry point, in its own process (as an operator runs it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hushwire.relay.admin",
        "--db",
        str(db),
        *argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT * 3)
    return proc.returncode, out.decode(), err.decode()


def bodies_in(db: Path) -> list[bytes]:
    conn = sqlite3.connect(db)
    try:
        return [bytes(r[0]) for r in conn.execute("SELECT body FROM mailbox ORDER BY id")]
    finally:
        conn.close()


async def test_backup_while_sending_is_a_consistent_snapshot(tmp_path, daemons):
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice", "bob"))
    relay = await daemons(db, "--send-burst", "100000", "--send-rate", "100000")
    alice = await relay.login("alice", tokens["alice"])
    sent: list[bytes] = []
    stop = asyncio.Event()
    started = asyncio.Event()

    async def keep_sending() -> None:
        i = 0
        while not stop.is_set():
            body = b"env-%06d" % i
            await alice.request(Send, to=("bob",), body=body)
            sent.append(body)
            i += 1
            if i == 50:
                started.set()

    sender = asyncio.create_task(keep_sending())
    await asyncio.wait_for(started.wait(), WAIT)
    copies = [tmp_path / f"backup-{n}.db" for n in range(3)]
    for copy in copies:
        rc, out, err = await admin(db, "backup", str(copy))
        assert rc == 0, err
        assert f"to {copy}" in out
    stop.set()
    await sender
    for copy in copies:
        assert copy.stat().st_mode & 0o777 == 0o600  # it holds token hashes
        info = summary(copy)  # passes SQLite's integrity check
        got = bodies_in(copy)
        assert info.queued == len(got) >= 50
        # One moment of the db: exactly the first N envelopes alice sent, in order.
        assert got == sent[: len(got)]
    assert len(bodies_in(copies[-1])) <= len(sent)
    rc, _, err = await admin(db, "backup", str(copies[0]))
    assert rc == 1 and "already exists" in err
    await alice.close()
    assert await relay.stop() == 0


async def collect(conn, n: int, payloads: list[bytes | None] | None = None) -> list[bytes]:
    got = []
    while len(got) < n:
        push = await asyncio.wait_for(conn.pushes.get(), WAIT)
        if isinstance(push, Deliver):
            got.append(push.body)
            if payloads is not None:
                payloads.append(push.payload)
            await conn.request(Ack, mids=(push.mid,))
    return got


async def test_restore_refuses_a_running_relay_then_brings_back_queued_envelopes(tmp_path, daemons):
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice", "bob"))
    relay = await daemons(db)
    alice = await relay.login("alice", tokens["alice"])
    queued = [b"queued-%d" % i for i in range(4)]
    for body in queued:
        await alice.request(Send, to=("bob",), body=body)
    # And a group send: its payload (table payloads) is in the backup too.
    group = (DeviceEnvelope("bob", 1, b"queued-note"),)
    views = (ListVersion("alice", 0), ListVersion("bob", 0))
    await alice.send_devices(group, views, payload=b"group payload")
    queued.append(b"queued-note")
    backup = tmp_path / "backup.db"
    rc, _, err = await admin(db, "backup", str(backup))
    assert rc == 0, err

    # bob reads everything: the live db no longer has those envelopes.
    bob = await relay.login("bob", tokens["bob"])
    assert await collect(bob, 5) == queued
    await bob.close()

    rc, _, err = await admin(db, "restore", str(backup))
    assert rc == 1
    assert "a relay is running" in err and "stop it first" in err
    # The refusal changed nothing: the relay still serves and the mail is still gone.
    await alice.request(Send, to=("bob",), body=b"after-refusal")
    await alice.close()
    assert await relay.stop() == 0
    assert bodies_in(db) == [b"after-refusal"]

    rc, out, err = await admin(db, "restore", str(backup))
    assert rc == 0, err
    assert "5 queued envelope(s)" in out
    saved = Path(out.split("saved as ")[1].strip())
    assert bodies_in(saved) == [b"after-refusal"]  # the replaced db is kept

    relay = await daemons(db)
    bob = await relay.login("bob", tokens["bob"])
    payloads: list[bytes | None] = []
    assert await collect(bob, 5, payloads) == queued
    assert payloads == [None] * 4 + [b"group payload"]
    await bob.close()
    assert await relay.stop() == 0


async def test_a_second_relay_on_the_same_db_is_refused(tmp_path, daemons):
    db = tmp_path / "relay.db"
    await add_users(db, ("alice",))
    relay = await daemons(db)
    with pytest.raises(AssertionError, match="relay exited") as second:
        await daemons(db)
    assert "held by hushwire-relay" in str(second.value)
    assert await relay.stop() == 0


async def test_restore_refuses_a_file_that_is_not_a_backup(tmp_path):
    db = tmp_path / "relay.db"
    await add_users(db, ("alice",))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    rc, _, err = await admin(db, "restore", str(junk))
    assert rc == 1 and "junk.db" in err
    rc, _, err = await admin(db, "restore", str(tmp_path / "missing.db"))
    assert rc == 1 and "no file" in err
    assert summary(db).users == 1  # untouched


async def test_stats_shows_who_is_online_and_queued_per_user(tmp_path, daemons):
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice", "bob", "carol"))
    rc, out, _ = await admin(db, "stats", "--json")
    assert rc == 0 and json.loads(out)["relay"] is None

    relay = await daemons(db)
    alice = await relay.login("alice", tokens["alice"])
    carol = await relay.login("carol", tokens["carol"])
    for _ in range(3):
        await alice.request(Send, to=("bob",), body=b"x")
    await alice.request(Send, to=("carol", "bob"), body=b"y")
    await collect(carol, 1)
    rc, out, err = await admin(db, "stats", "--json")
    assert rc == 0, err
    stats = json.loads(out)
    assert stats["relay"]["online"] == ["alice", "carol"]
    assert stats["relay"]["connections"]["authenticated"] == 2
    assert stats["queued_by_user"] == {"bob": 4}
    assert stats["relay"]["counters"]["sends"] == 4
    rc, out, _ = await admin(db, "stats")
    assert "online:   alice, carol" in out
    assert "bob" in out and "4 queued" in out
    for conn in (alice, carol):
        with contextlib.suppress(ConnectionClosed):
            await conn.close()
    assert await relay.stop() == 0


async def test_purge_goes_through_the_running_relay(tmp_path, daemons):
    """The relay caches mailbox counts: a purge behind its back would leave bob's
    mailbox 'full' until a restart. Through the control socket it is not."""
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice", "bob"))
    relay = await daemons(db, "--max-mailbox", "2")
    alice = await relay.login("alice", tokens["alice"])
    await alice.request(Send, to=("bob",), body=b"1")
    await alice.request(Send, to=("bob",), body=b"2")
    try:
        await alice.request(Send, to=("bob",), body=b"3")
        raise AssertionError("the mailbox should be full")
    except RequestError as exc:
        assert exc.code == "mailbox_full"
    rc, out, err = await admin(db, "purge", "--older-than", "1")
    assert rc == 0, err
    assert out.startswith("purged 0 envelope(s)") and "by the running relay" in out
    # What the command sends, with a cutoff after every envelope (the CLI's is now - DAYS).
    answer = await asyncio.to_thread(
        control.ask, control.control_path(db), {"op": "purge", "older_than": 2**40}
    )
    assert answer["purged"] == 2
    assert summary(db).queued == 0
    await relay.wait_log("purged 2 envelope")
    await alice.request(Send, to=("bob",), body=b"room again")
    await alice.close()
    assert await relay.stop() == 0
    rc, out, _ = await admin(db, "purge", "--older-than", "30")
    assert rc == 0 and "no relay running" in out
