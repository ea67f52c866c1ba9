"""`hushwire-relay` as a real process: start, signals, restart with queued mail, logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys

import pytest

from client.connection import ConnectionClosed, RelayConnection, TlsSettings
from common.errors import RequestError
from common.messages import Ack, Deliver, Send
from tests.support import add_users

WAIT = 20.0
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
FINGERPRINT = re.compile(r"fingerprint ([0-9A-F:]{95})")


class Daemon:
    def __init__(self, db, *extra: str) -> None:
        self.db = db
        self.extra = extra
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.fingerprint = ""
        self.log: list[str] = []
        self._pump: asyncio.Task | None = None

    async def start(self) -> Daemon:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.cli", "--db", str(self.db), "--port", "0",
            *self.extra, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        while not self.port:
            line = await asyncio.wait_for(self.proc.stderr.readline(), WAIT)
            if not line:
                raise AssertionError("relay exited:\n" + "".join(self.log))
            text = line.decode()
            self.log.append(text)
            if m := FINGERPRINT.search(text):
                self.fingerprint = m.group(1)
            if m := LISTENING.search(text):
                self.port = int(m.group(1))
        self._pump = asyncio.create_task(self._read_rest())
        return self

    async def _read_rest(self) -> None:
        async for line in self.proc.stderr:
            self.log.append(line.decode())

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = await asyncio.wait_for(self.proc.wait(), WAIT)
        await asyncio.wait_for(self._pump, WAIT)
        return rc

    async def login(self, user: str, token: str) -> RelayConnection:
        conn = await RelayConnection.connect(
            "127.0.0.1", self.port, TlsSettings(pin=self.fingerprint)
        )
        await conn.handshake(user, token)
        return conn


@pytest.fixture
async def daemons():
    started: list[Daemon] = []

    async def start(db, *extra):
        d = await Daemon(db, *extra).start()
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.returncode is None:
            d.proc.kill()
            await d.proc.wait()


async def collect(conn: RelayConnection, n: int) -> list[Deliver]:
    """Receive n deliveries, acking as we go (the relay keeps a bounded window open)."""
    got = []
    while len(got) < n:
        push = await asyncio.wait_for(conn.pushes.get(), WAIT)
        if isinstance(push, Deliver):
            got.append(push)
            await conn.request(Ack, mids=(push.mid,))
    return got


async def test_sigterm_with_mail_queued_then_restart_delivers_everything(tmp_path, daemons):
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice", "bob"))
    relay = await daemons(db)
    alice = await relay.login("alice", tokens["alice"])
    bodies = [f"SECRET-BODY-{i}".encode() for i in range(50)]
    for body in bodies:
        await alice.request(Send, to=("bob",), body=body)
    assert await relay.stop(signal.SIGTERM) == 0
    assert any("relay stopped" in line for line in relay.log)
    await alice.close()

    relay = await daemons(db)
    bob = await relay.login("bob", tokens["bob"])
    got = await collect(bob, len(bodies))
    assert [d.body for d in got] == bodies
    await bob.close()
    assert await relay.stop(signal.SIGINT) == 0
    # Logs never carry a token or an envelope body.
    text = "".join(relay.log)
    assert "SECRET-BODY" not in text
    assert tokens["alice"] not in text and tokens["bob"] not in text
    assert "listening on 127.0.0.1:" in text


async def test_sigterm_during_a_burst_keeps_every_acknowledged_send(tmp_path, daemons):
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice", "bob"))
    relay = await daemons(db, "--send-burst", "100000", "--send-rate", "100000")
    alice = await relay.login("alice", tokens["alice"])
    acked: list[bytes] = []
    enough = asyncio.Event()

    async def send(i: int) -> None:
        body = f"m{i}".encode()
        with contextlib.suppress(ConnectionClosed, RequestError):
            await alice.request(Send, to=("bob",), body=body)
            acked.append(body)
            if len(acked) >= 200:
                enough.set()

    tasks = [asyncio.create_task(send(i)) for i in range(2000)]
    await asyncio.wait_for(enough.wait(), WAIT)
    assert await relay.stop(signal.SIGTERM) == 0
    await asyncio.gather(*tasks)
    await alice.close()

    relay = await daemons(db)
    bob = await relay.login("bob", tokens["bob"])
    got = {d.body for d in await collect(bob, len(acked))}
    assert set(acked) <= got


async def test_sigkill_loses_no_acknowledged_envelope(tmp_path, daemons):
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice", "bob"))
    relay = await daemons(db, "--send-burst", "100000", "--send-rate", "100000")
    alice = await relay.login("alice", tokens["alice"])
    acked: list[bytes] = []
    enough = asyncio.Event()

    async def send(i: int) -> None:
        with contextlib.suppress(ConnectionClosed, RequestError):
            await alice.request(Send, to=("bob",), body=b"k%d" % i)
            acked.append(b"k%d" % i)
            if len(acked) >= 300:
                enough.set()

    tasks = [asyncio.create_task(send(i)) for i in range(3000)]
    await asyncio.wait_for(enough.wait(), WAIT)
    os.kill(relay.proc.pid, signal.SIGKILL)
    await relay.proc.wait()
    await asyncio.gather(*tasks)
    await alice.close()

    relay = await daemons(db)
    bob = await relay.login("bob", tokens["bob"])
    got = [d.body for d in await collect(bob, len(acked))]
    assert set(acked) <= set(got)
    # and in the order alice sent them
    order = {b: i for i, b in enumerate(got)}
    acked_sorted = sorted(acked, key=lambda b: int(b[1:]))
    assert [order[b] for b in acked_sorted] == sorted(order[b] for b in acked_sorted)


def test_help_documents_flags_and_config_file():
    out = subprocess.run(
        [sys.executable, "-m", "relay.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--db", "--host", "--port", "--config", "--cert", "--key", "--client-ca"):
        assert flag in out
    assert "TOML" in out and "SIGTERM" in out


def test_bad_flag_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "relay.cli", "--db", str(tmp_path / "x.db"), "--port", "x"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "port" in proc.stderr and "Traceback" not in proc.stderr


def test_too_new_db_is_refused(tmp_path):
    import sqlite3

    from relay.migrate import latest_version, migrate

    db = tmp_path / "relay.db"
    migrate(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (latest_version() + 1,))
    proc = subprocess.run(
        [sys.executable, "-m", "relay.cli", "--db", str(db), "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "newer" in proc.stderr and "Traceback" not in proc.stderr
