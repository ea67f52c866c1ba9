"""The Redis bus between two relays' buses on a real redis-server: what one says
reaches the other's connections, and a lost message (a gap in a relay's numbers) makes
the other re-read every connected device's mailbox. The relay behind each bus is a
small stand-in holding connections that count their wake-ups (the bus is under test)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from hushwire.common.errors import ErrorCode
from hushwire.common.messages import Message, PresenceChanged
from hushwire.relay.bus import PRESENCE_TTL, LocalBus, RelayEvents, open_bus
from hushwire.relay.bus_redis import RedisBus
from hushwire.relay.shared_limits import Spending
from tests.services import RedisServer, free_port

WAIT = 20.0


@dataclass(eq=False)
class Conn:
    user: str
    account: str
    wakes: int = 0
    pushed: list[Message] = field(default_factory=list)
    kicked: list[ErrorCode] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        self.wakes += 1
        self.changed.set()

    def push(self, message: Message) -> None:
        self.pushed.append(message)
        self.changed.set()

    def kick(self, code: ErrorCode, message: str) -> None:
        self.kicked.append(code)
        self.changed.set()


class StandIn:
    """The part of a Relay that RelayEvents uses."""

    def __init__(self, *conns: Conn) -> None:
        self.online = {c.user: c for c in conns}
        self.charged: list[tuple[Spending, float]] = []  # spending reports, and when
        self.changed = asyncio.Event()

    def charge(self, spent: Spending, now: float) -> None:
        self.charged.append((spent, now))
        self.changed.set()

    def disconnected(self, peer: Conn) -> None:
        self.online.pop(peer.user, None)

    def sessions_of(self, account: str) -> tuple[Conn, ...]:
        return tuple(c for c in self.online.values() if c.account == account)

    def online_accounts(self) -> list[str]:
        return sorted({c.account for c in self.online.values()})

    def is_local(self, account: str) -> bool:
        return any(c.account == account for c in self.online.values())

    def tell_contacts(self, push: PresenceChanged) -> None:
        for conn in self.online.values():
            conn.push(push)


async def until(conn: Conn, done) -> None:
    async def wait() -> None:
        while not done():
            conn.changed.clear()
            await conn.changed.wait()

    await asyncio.wait_for(wait(), WAIT)


async def test_without_a_url_the_bus_stays_in_the_process() -> None:
    bus = open_bus(None)
    assert type(bus) is LocalBus
    bob = Conn("bob", "bob")
    await bus.start(RelayEvents(StandIn(bob)))  # type: ignore[arg-type]
    bus.envelopes(["bob", "nobody"])
    assert bob.wakes == 1
    assert await bus.claim("bob") is True and await bus.spent("login:bob:x") == (0, 0.0)
    await bus.close()


async def test_messages_cross_relays_and_a_gap_rereads_every_mailbox(
    redis_server: RedisServer,
) -> None:
    bob, carol, dave = Conn("bob", "bob"), Conn("carol", "carol"), Conn("dave/2", "dave")
    one, two = RedisBus(redis_server.url()), RedisBus(redis_server.url())
    await one.start(RelayEvents(StandIn()))  # type: ignore[arg-type]
    await two.start(RelayEvents(StandIn(bob, carol, dave)))  # type: ignore[arg-type]
    try:
        one.envelopes(["bob"])
        await until(bob, lambda: bob.wakes == 1)
        one.push(PresenceChanged(user="x", online=True), accounts=["dave"])
        await until(dave, lambda: dave.pushed == [PresenceChanged(user="x", online=True)])
        assert carol.wakes == 0 and two.resyncs == 0
        one._sent += 1  # a message of relay one lost on the way (Redis dropped it)
        one.envelopes(["bob"])
        # relay two sees the gap in one's numbers: every connection re-reads its mailbox
        await until(carol, lambda: carol.wakes == 1)
        assert two.resyncs == 1 and bob.wakes == 3 and dave.wakes == 1
        # The newest login of a device wins, whichever relay it is on.
        assert await two.claim("carol") is True
        assert await one.claim("carol") is True
        await until(carol, lambda: carol.kicked == [ErrorCode.SESSION_REPLACED])
        one.kick(["bob"], ErrorCode.AUTH_FAILED, "unlinked")
        await until(bob, lambda: bob.kicked == [ErrorCode.AUTH_FAILED])
    finally:
        await one.close()
        await two.close()


async def test_an_unreachable_bus_is_retried_and_its_password_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = RedisBus(f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.INFO, logger="hushwire.relay.bus"):
        await bus.start(RelayEvents(StandIn()))  # type: ignore[arg-type]
        try:
            assert "unreachable; retrying in the background" in caplog.text
            assert await bus.claim("bob") is True  # a login still goes ahead
            assert await bus.spent("login:bob:x") == (0, 0.0)
        finally:
            await bus.close()
    assert "s3cret" not in caplog.text and "127.0.0.1" in caplog.text


async def test_a_relay_silent_past_the_ttl_counts_as_gone() -> None:
    """Presence of a relay that was SIGKILLed: its accounts go offline once it has sent
    no heartbeat for PRESENCE_TTL (clock injected)."""
    now = [100.0]
    alice = Conn("alice", "alice")
    events = RelayEvents(StandIn(alice), clock=lambda: now[0])  # type: ignore[arg-type]
    events.presence("relay-9", ["bob"], online=True)
    assert alice.pushed == [PresenceChanged(user="bob", online=True)]
    assert events.remote_online("bob")
    now[0] += PRESENCE_TTL - 1
    events.expire()
    assert events.remote_online("bob") and len(alice.pushed) == 1
    now[0] += 2
    events.expire()
    assert not events.remote_online("bob")
    assert alice.pushed[-1] == PresenceChanged(user="bob", online=False)


async def test_spending_reaches_the_other_relays_summed_per_user_in_one_report(
    redis_server: RedisServer,
) -> None:
    """What one relay's users spend of the shared limits reaches the other relays as
    one report per interval, summed per user (not a message per request), charged at
    the receiver's clock; the reporting relay does not charge itself twice."""
    here, there = StandIn(), StandIn()
    one, two = RedisBus(redis_server.url()), RedisBus(redis_server.url())
    await one.start(RelayEvents(here))  # type: ignore[arg-type]
    await two.start(RelayEvents(there, now=lambda: 42.0))  # type: ignore[arg-type]
    assert LocalBus().spending is None  # one relay: nothing is noted on the hot path
    try:
        spending = one.spending
        for _ in range(3):
            spending.spent("send", "alice", 2)
        spending.spent("send", "bob", 1)
        spending.spent("fetch", "alice", 1)

        async def reports() -> None:
            while len(there.charged) < 2:
                there.changed.clear()
                await there.changed.wait()

        await asyncio.wait_for(reports(), WAIT)
        assert sorted(there.charged, key=str) == [
            ({"fetch": {"alice": 1.0}}, 42.0),
            ({"send": {"alice": 6.0, "bob": 1.0}}, 42.0),
        ]
        assert one._sent == 2 and here.charged == []
    finally:
        await one.close()
        await two.close()
