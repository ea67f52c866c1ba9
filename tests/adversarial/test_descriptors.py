"""Idle TCP sockets must not use up the descriptors real logins need."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket

from hushwire.common.errors import HushwireError
from tests.support import Daemon, add_users

NOFILE = 256  # the relay's descriptor limit (soft = hard, so raising cannot help)


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def _alive(s: socket.socket) -> bool:
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True  # open, nothing to read
    except OSError:
        return False


async def test_idle_sockets_from_one_network_do_not_lock_out_logins(tmp_path, figures):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice",))
    relay = await Daemon(db, "--handshake-timeout", "10", preexec_fn=_low_limit).start()
    held: list[socket.socket] = []
    stop = asyncio.Event()

    def open_one() -> None:
        s = socket.socket()
        s.setblocking(False)
        s.bind(("127.0.3.1", 0))  # the attacker's network: another /24 than the logins'
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", relay.port))
        held.append(s)

    async def flood() -> None:
        """Keep ~400 plain TCP sockets open (more than the relay's 256 descriptors),
        replacing the ones the relay closes, at ~1,000 a second."""
        while not stop.is_set():
            for s in list(held):
                if not _alive(s):
                    held.remove(s)
                    s.close()
            while len(held) < 400:
                open_one()
            await asyncio.sleep(0.05)

    flooder = asyncio.create_task(flood())
    try:
        await asyncio.sleep(1.0)  # the flood is in place before the first login
        ok, failures = 0, []
        for _ in range(15):
            try:
                conn = await asyncio.wait_for(relay.login("alice", tokens["alice"]), 15)
            except (TimeoutError, OSError, HushwireError) as exc:
                failures.append(repr(exc))
                continue
            ok += 1
            await conn.close()
    finally:
        stop.set()
        await flooder
        for s in held:
            s.close()
        relay.proc.kill()
        await relay.proc.wait()
    assert ok == 15, failures
    figures.add(
        f"relay limited to {NOFILE} descriptors; ~400 idle TCP sockets from one /24, "
        "reopened as closed; 15 logins from another network meanwhile",
        f"{ok} of 15 logins succeeded (before the fix: the review saw 13 of 15 fail at "
        "ulimit 1024 with 1,100 sockets)",
    )
