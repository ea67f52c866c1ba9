"""Linking a device across relays sharing one PostgreSQL and a Redis bus: the old device
on one relay, the new one landing on another (as HAProxy's leastconn mostly does). Real
relay processes, a real PostgreSQL and a real redis-server.

What is attacked: the link completes across relays and the new device then logs in on a
third relay and gets fan-out; a second join from a third relay on the same channel is
refused with `link_failed` while the first waits, and so is any use of it once linked
(the token, which crossed Redis, is in no relay's log);
a channel that expires while a device on another relay waits fails that device, and
fetching it afterwards from a third relay fails too; channel guesses spread over relays
share one failed-login budget; `hushwire login --link` (the real client) through another
relay than the old device's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from hushwire.client.connection import RelayConnection, TlsSettings
from hushwire.client.service import HushwireClient, RelaySettings
from hushwire.common.crypto.devices import first_device_list
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.crypto.link import LinkCode, LinkJoiner, LinkOffer
from hushwire.common.errors import ErrorCode
from hushwire.common.messages import (
    DeviceEnvelope,
    LinkFetch,
    LinkJoin,
    LinkRequestPush,
    LinkStart,
    ListVersion,
    PublishDevices,
)
from tests.e2e.helpers import FAST_BACKOFF, FAST_KDF, PASSPHRASE
from tests.relay.test_cluster import Cluster, Inbox, cluster, per_sender
from tests.relay.test_server_devices import Device, accept, expect_error, next_push, publish
from tests.support import WAIT, Daemon

__all__ = ["cluster"]  # the fixture, shared with test_cluster.py


async def connect(relay: Daemon) -> RelayConnection:
    return await RelayConnection.connect(
        "127.0.0.1", relay.port, TlsSettings(pin=relay.fingerprint)
    )


async def first_device(cluster: Cluster, i: int, user: str):
    """`user` on relay `i` as device 1, with keys and a one-device list (version 1: the
    hand-made keys have no KEM prekeys)."""
    conn = await connect(cluster.relays[i])
    await conn.handshake(user, cluster.tokens[user], versions=(1,))
    identity = IdentityKeyPair.generate(X25519)
    await publish(conn, identity)
    dlist = first_device_list(user, "x25519", "first", identity.dh.public, 1)
    await conn.request(PublishDevices, device_list=dlist.sign(identity))
    return Device(conn, identity, 1), dlist


async def newcomer(relay: Daemon) -> RelayConnection:
    """A device with no login yet, as `login --link` starts."""
    conn = await connect(relay)
    await conn.say_hello((1,))
    return conn


async def test_a_device_links_across_relays_then_gets_fan_out_on_a_third(
    cluster: Cluster,
) -> None:
    await cluster.start(3, ("alice", "bob"))
    old, dlist = await first_device(cluster, 0, "alice")
    offer = LinkOffer(X25519, now=0, ttl=300)
    await old.conn.request(LinkStart, channel=offer.code.channel, ephemeral=offer.ephemeral)

    new = await newcomer(cluster.relays[1])
    fetched = await new.request(LinkFetch, channel=offer.code.channel)
    assert (fetched.user, fetched.ephemeral) == ("alice", offer.ephemeral)
    joiner = LinkJoiner(X25519, LinkCode.parse(offer.code.text()), "second", X25519.generate())
    n_pub, sealed = joiner.request(fetched.ephemeral)
    joining = asyncio.create_task(
        new.request(LinkJoin, channel=offer.code.channel, ephemeral=n_pub, sealed=sealed)
    )
    push = await next_push(old.conn, LinkRequestPush)
    assert (push.ephemeral, push.sealed) == (n_pub, sealed)  # forwarded as sent

    # While the first join waits, a second one through relay 2 is refused.
    intruder = await newcomer(cluster.relays[2])
    await expect_error(
        ErrorCode.LINK_FAILED,
        intruder.request(LinkJoin, channel=offer.code.channel, ephemeral=n_pub, sealed=b"s"),
    )

    new_list, accepted = await accept(old, offer, dlist, push, now=1)
    joined = await asyncio.wait_for(joining, WAIT)
    assert (joined.user, joined.device) == ("alice", accepted.device)
    got = joiner.open_grant(joined.sealed)  # the grant sealed by the old device
    assert got.identity.public().sign_key == old.identity.public().sign_key
    await new.close()
    await cluster.relays[0].wait_log("alice linked device")
    assert not any(joined.token in line for r in cluster.relays for line in r.log)

    # Used: the code is dead on every relay.
    for relay in cluster.relays:
        late = await newcomer(relay)
        await expect_error(
            ErrorCode.LINK_FAILED, late.request(LinkFetch, channel=offer.code.channel)
        )
        await late.close()

    # The new device's token works on relay 2, and it gets bob's fan-out from relay 0.
    conn = await connect(cluster.relays[2])
    await conn.handshake("alice", joined.token, joined.device, versions=(1,))
    alice2, alice1 = Inbox(conn), Inbox(old.conn)
    bob = await cluster.login(0, "bob")
    n = 10
    for i in range(n):
        body = b"bob:%d" % i
        await bob.send_devices(
            [DeviceEnvelope("alice", 1, body), DeviceEnvelope("alice", joined.device, body)],
            [ListVersion("bob", 0), ListVersion("alice", new_list.version)],
        )
    await alice2.wait_for(n)
    await alice1.wait_for(n)
    assert per_sender(alice1.bodies, b"bob") == per_sender(alice2.bodies, b"bob") == list(range(n))
    for inbox in (alice1, alice2):
        await inbox.close()
    await bob.close()


async def test_an_expired_channel_fails_across_relays(cluster: Cluster) -> None:
    await cluster.start(3, ("alice",), "--link-ttl", "1.5")
    old, _ = await first_device(cluster, 0, "alice")
    offer = LinkOffer(X25519, now=0, ttl=300)
    await old.conn.request(LinkStart, channel=offer.code.channel, ephemeral=offer.ephemeral)
    new = await newcomer(cluster.relays[1])
    assert (await new.request(LinkFetch, channel=offer.code.channel)).user == "alice"
    # The old device never answers: the channel expires while the new device waits.
    await expect_error(
        ErrorCode.LINK_FAILED,
        new.request(LinkJoin, channel=offer.code.channel, ephemeral=b"n" * 32, sealed=b"s"),
    )
    await next_push(old.conn, LinkRequestPush)  # it was asked, through relay 0
    late = await newcomer(cluster.relays[2])
    failed = await expect_error(
        ErrorCode.LINK_FAILED, late.request(LinkFetch, channel=offer.code.channel)
    )
    unknown = await expect_error(ErrorCode.LINK_FAILED, late.request(LinkFetch, channel=b"?" * 16))
    assert failed.message == unknown.message  # an expired code looks like no code
    for conn in (new, late, old.conn):
        await conn.close()


async def test_link_guesses_spread_over_relays_share_one_budget(cluster: Cluster) -> None:
    """2 failed link attempts per network allowed: one unknown channel fetched on relay
    0 and one joined on relay 1 use it up; the next attempt is refused `rate_limited` on
    relay 2, which saw none (on one relay each, the budget would be 2 per relay)."""
    await cluster.start(3, (), "--login-failures", "2")
    first, second, third = [await newcomer(relay) for relay in cluster.relays]
    await expect_error(ErrorCode.LINK_FAILED, first.request(LinkFetch, channel=b"?" * 16))
    await expect_error(
        ErrorCode.LINK_FAILED,
        second.request(LinkJoin, channel=b"?" * 16, ephemeral=b"n" * 32, sealed=b"s"),
    )
    limited = await expect_error(
        ErrorCode.RATE_LIMITED, third.request(LinkFetch, channel=b"?" * 16)
    )
    assert limited.retry_after and limited.retry_after > 0
    for conn in (first, second, third):
        await conn.close()


async def test_login_link_through_another_relay_than_the_old_device(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The real clients: alice's first device on relay 0 shows a code, `login --link`
    reaches relay 1 (HAProxy's leastconn); the new profile is a device of alice's and
    both devices list it."""
    await cluster.start(2, ("alice",))
    first, second = cluster.relays
    settings = RelaySettings(
        host="127.0.0.1", port=first.port, user="alice", token=cluster.tokens["alice"]
    )
    old = await HushwireClient.login(
        tmp_path / "old", PASSPHRASE, settings, fingerprint=first.fingerprint, kdf=FAST_KDF
    )
    offer, _ = await old.offer_link()
    joining = asyncio.create_task(
        HushwireClient.login_link(
            tmp_path / "new",
            PASSPHRASE,
            host="127.0.0.1",
            port=second.port,
            code=offer.code.text(),
            name="laptop",
            kdf=FAST_KDF,
            backoff=FAST_BACKOFF,
        )
    )
    await old.accept_link(offer)
    new = await asyncio.wait_for(joining, WAIT)
    mine = [(d.id, d.name, d.this) for d in await new.devices()]
    assert (2, "laptop", True) in mine and len(mine) == 2
    assert [d.id for d in await old.devices()] == [1, 2]
    for client in (new, old):
        await client.close()
