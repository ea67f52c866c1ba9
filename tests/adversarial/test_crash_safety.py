"""Crash safety: real clients chat through a relay process SIGKILLed at random moments.

Nothing acknowledged may be lost, nothing may be shown twice, and each sender's
messages to each recipient must appear in the order they were sent.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from hushwire.client.service import HushwireClient, MessageReceived, RelaySettings
from tests.e2e.helpers import FAST_BACKOFF, FAST_KDF, PASSPHRASE
from tests.support import WAIT, Daemon, add_users

USERS = ("alice", "bob", "carol", "dave")
KILLS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def clients() -> AsyncIterator[dict[str, HushwireClient]]:
    """Clients the test opens, closed at teardown even when the test fails."""
    made: dict[str, HushwireClient] = {}
    yield made
    for client in made.values():
        await client.close()


async def test_sigkill_storm_loses_nothing_and_shows_nothing_twice(
    tmp_path, figures, pytestconfig, daemons, clients
):
    n_total = 5000 if not pytestconfig.getoption("--slow") else 50_000
    db = tmp_path / "relay.db"
    tokens = await add_users(db, USERS)
    port = free_port()
    flags = (
        "--port",
        str(port),
        "--send-burst",
        "1000000",
        "--send-rate",
        "1000000",
        "--fetch-burst",
        "1000",
    )

    async def start_relay() -> Daemon:
        # A fixed port (the later --port wins): clients reconnect to the same address.
        return await daemons(db, *flags)  # the fixture kills whatever is left

    relay = await start_relay()
    for user in USERS:
        settings = RelaySettings("127.0.0.1", port, user, tokens[user], pin=relay.fingerprint)
        clients[user] = await HushwireClient.login(
            tmp_path / f"p-{user}", PASSPHRASE, settings, kdf=FAST_KDF, backoff=FAST_BACKOFF
        )

    pairs = [(s, r) for s in USERS for r in USERS if s != r]
    per_pair = -(-n_total // len(pairs))  # at least n_total in all
    received: dict[tuple[str, str], list[str]] = defaultdict(list)
    done = asyncio.Event()
    expected = per_pair * len(pairs)
    count = 0

    async def receive(user: str) -> None:
        nonlocal count
        client = clients[user]
        while True:
            event = await client.events.get()
            if isinstance(event, MessageReceived):
                received[(event.contact, user)].append(event.text)
                count += 1
                if count >= expected:
                    done.set()

    confirmed = 0
    queued = 0

    async def send_all(sender: str) -> None:
        nonlocal confirmed, queued
        for i in range(per_pair):
            for recipient in USERS:
                if recipient == sender:
                    continue
                result = await clients[sender].send(recipient, f"{sender}>{recipient}#{i}")
                if result.queued:
                    queued += 1
                else:
                    confirmed += 1

    async def killer() -> int:
        kills = 0
        nonlocal relay
        for _ in range(KILLS):
            await asyncio.sleep(0.3 + secrets.randbelow(1500) / 1000)
            os.kill(relay.proc.pid, signal.SIGKILL)
            await relay.proc.wait()
            kills += 1
            relay = await start_relay()
        return kills

    receivers = [asyncio.create_task(receive(u)) for u in USERS]
    kill_task = asyncio.create_task(killer())
    await asyncio.gather(*[send_all(u) for u in USERS])
    kills = await kill_task
    # Everything still unconfirmed goes out once the clients are connected again.
    for client in clients.values():
        await client.sync(limit=WAIT * 3)
    await asyncio.wait_for(done.wait(), WAIT * 6)
    for task in receivers:
        task.cancel()

    lost = duplicates = disordered = 0
    for sender, recipient in pairs:
        got = received[(sender, recipient)]
        want = [f"{sender}>{recipient}#{i}" for i in range(per_pair)]
        duplicates += len(got) - len(set(got))
        lost += len(set(want) - set(got))
        disordered += got != want and sorted(set(got)) == sorted(want)
    assert (kills, lost, duplicates, disordered) == (KILLS, 0, 0, 0)
    figures.add(
        f"{expected} messages among {len(USERS)} real clients, relay SIGKILLed {kills} times "
        "at random moments",
        f"confirmed at send {confirmed}, queued and sent after reconnect {queued}; delivered "
        f"{sum(len(v) for v in received.values())}; lost 0, duplicates shown 0, pairs out of "
        "order 0",
    )
