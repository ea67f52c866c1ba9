"""`hushwire-relay` as a real process: start, signals, restart with queued mail, logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys

from hushwire.client.connection import ConnectionClosed, RelayConnection
from hushwire.common.errors import RequestError
from hushwire.common.messages import Ack, Deliver, Send
from tests.support import WAIT, add_users


async def collect(conn: RelayConnection, n: int) -> list[Deliver]:
    """Receive n deliveries, acking as we go (the relay keeps a bounded window open)."""
    got = []
    while len(got) < n:
        push = await asyncio.wait_for(conn.pushes.get(), WAIT)
        if isinstance(push, Deliver):
            got.append(push)
            await conn.request(Ack, mids=(push.mid,))
    return got


async def burst(conn: RelayConnection, *, total: int, wait_for: int):
    """Pipeline `total` sends to bob; return once `wait_for` of them got their `ok`.

    Returns the list the acknowledged bodies keep being appended to, and the tasks.
    """
    acked: list[bytes] = []
    enough = asyncio.Event()

    async def send(i: int) -> None:
        with contextlib.suppress(ConnectionClosed, RequestError):
            await conn.request(Send, to=("bob",), body=b"m%d" % i)
            acked.append(b"m%d" % i)
            if len(acked) >= wait_for:
                enough.set()

    tasks = [asyncio.create_task(send(i)) for i in range(total)]
    await asyncio.wait_for(enough.wait(), WAIT)
    return acked, tasks


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
    acked, tasks = await burst(alice, total=2000, wait_for=200)
    assert await relay.stop(signal.SIGTERM) == 0
    await asyncio.gather(*tasks)
    await alice.close()

    relay = await daemons(db)
    bob = await relay.login("bob", tokens["bob"])
    got = {d.body for d in await collect(bob, len(acked))}
    assert set(acked) <= got


async def test_sigkill_loses_no_acknowledged_envelope(tmp_path, daemons, store_target):
    """On both backends: an `ok` means committed (SQLite file or PostgreSQL)."""
    pg = isinstance(store_target, str)
    db = tmp_path / "relay.db" if pg else store_target  # with PostgreSQL: only TLS files
    store = ("--store", store_target) if pg else ()
    tokens = await add_users(store_target, ("alice", "bob"))
    relay = await daemons(db, *store, "--send-burst", "100000", "--send-rate", "100000")
    alice = await relay.login("alice", tokens["alice"])
    acked, tasks = await burst(alice, total=3000, wait_for=300)
    os.kill(relay.proc.pid, signal.SIGKILL)
    await relay.proc.wait()
    await asyncio.gather(*tasks)
    await alice.close()

    relay = await daemons(db, *store)
    bob = await relay.login("bob", tokens["bob"])
    got = [d.body for d in await collect(bob, len(acked))]
    assert set(acked) <= set(got)
    # and in the order alice sent them
    order = {b: i for i, b in enumerate(got)}
    acked_sorted = sorted(acked, key=lambda b: int(b[1:]))
    assert [order[b] for b in acked_sorted] == sorted(order[b] for b in acked_sorted)


def test_help_documents_flags_and_config_file():
    out = subprocess.run(
        [sys.executable, "-m", "hushwire.relay.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--db", "--host", "--port", "--config", "--cert", "--key", "--client-ca"):
        assert flag in out
    assert "TOML" in out and "SIGTERM" in out
    # Operator settings, as flags and as file keys.
    assert "--metrics-listen HOST:PORT" in out and "metrics_listen" in out
    assert "--log-format" in out and "log_format" in out


def test_bad_flag_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hushwire.relay.cli", "--db", str(tmp_path / "x.db"), "--port", "x"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "port" in proc.stderr and "Traceback" not in proc.stderr


def test_too_new_db_is_refused(tmp_path):
    import sqlite3

    from hushwire.relay.migrate import latest_version, migrate

    db = tmp_path / "relay.db"
    migrate(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (latest_version() + 1,))
    proc = subprocess.run(
        [sys.executable, "-m", "hushwire.relay.cli", "--db", str(db), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "newer" in proc.stderr and "Traceback" not in proc.stderr


def _run_relay(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hushwire.relay.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,  # before the fix it never exited (the db thread kept it alive)
        cwd=cwd,
    )


def test_busy_port_exits_promptly_and_creates_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run_relay("--db", str(tmp_path / "relay.db"), "--port", str(port), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "address already in use" in proc.stderr.lower() and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no db, no certificate, no key


def test_an_address_that_is_not_local_exits_and_creates_nothing(tmp_path):
    proc = _run_relay(
        "--db", str(tmp_path / "relay.db"), "--host", "192.0.2.1", "--port", "0", cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr
    assert "cannot" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_db_in_a_missing_directory_says_so(tmp_path):
    missing = tmp_path / "nope" / "relay.db"
    proc = _run_relay("--db", str(missing), "--port", "0", cwd=tmp_path)
    assert proc.returncode in (1, 2), proc.stderr
    assert "directory" in proc.stderr and str(missing.parent) in proc.stderr
    assert "relay-key.pem" not in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
