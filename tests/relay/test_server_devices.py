"""Accounts with devices over real TLS and a real SQLite file: linking with the real link
crypto, per-device fan-out, stale views, unlinking, refusals, limits."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from hushwire.client.connection import ConnectionClosed, RelayConnection
from hushwire.common.crypto.devices import first_device_list
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair, SignedPrekeyPair
from hushwire.common.crypto.link import LinkCode, LinkJoiner, LinkOffer
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.messages import (
    Deliver,
    DeviceEnvelope,
    DevicesChanged,
    FetchBundle,
    FetchDevices,
    LinkAccept,
    LinkFetch,
    LinkJoin,
    LinkRequestPush,
    LinkStart,
    ListVersion,
    Login,
    PublishDevices,
    PublishKeys,
    Send,
    SendDevices,
)
from hushwire.relay.admin import main as admin_main

WAIT = 10.0


async def expect_error(code: ErrorCode, coro) -> RequestError:
    with pytest.raises(RequestError) as exc:
        await coro
    assert exc.value.code == code, exc.value.message
    return exc.value


async def next_push(conn: RelayConnection, kind):
    while True:
        push = await asyncio.wait_for(conn.pushes.get(), WAIT)
        if isinstance(push, kind):
            return push


@dataclasses.dataclass
class Device:
    conn: RelayConnection
    identity: IdentityKeyPair
    id: int
    token: str = ""


async def publish(conn: RelayConnection, identity: IdentityKeyPair) -> None:
    spk = SignedPrekeyPair.generate(identity, X25519, 1)
    await conn.request(
        PublishKeys, identity=identity.public(), signed_prekey=spk.public(), one_time_prekeys=()
    )


async def first_device(relay, user: str) -> tuple[Device, object]:
    """`user` logged in on device 1 with real keys and a published one-device list."""
    conn = await relay.login(user)
    identity = IdentityKeyPair.generate(X25519)
    await publish(conn, identity)
    dlist = first_device_list(user, "x25519", "first", identity.dh.public, 1)
    await conn.request(PublishDevices, device_list=dlist.sign(identity))
    return Device(conn, identity, 1), dlist


async def accept(old: Device, offer: LinkOffer, dlist, push: LinkRequestPush, *, now: float):
    """The old device's answer to a `link_request`: the next list, signed, and the grant;
    returns the new list and the relay's reply (with the new device's id)."""
    request = offer.open_request(push.ephemeral, push.sealed, now=now)
    new_list, device = dlist.with_device(request.name, request.dh_key, 2)
    signed = new_list.sign(old.identity)
    grant = offer.seal_grant(old.identity, device.id, signed)
    accepted = await old.conn.request(
        LinkAccept, channel=offer.code.channel, device_list=signed, sealed=grant
    )
    assert accepted.device == device.id
    return new_list, accepted


async def link(relay, old: Device, dlist, *, name: str = "second", now: float = 100.0):
    """The whole link exchange through the relay; returns the new device and list."""
    offer = LinkOffer(X25519, now=now, ttl=300)
    await old.conn.request(LinkStart, channel=offer.code.channel, ephemeral=offer.ephemeral)
    new_conn = await relay.connect()
    await new_conn.say_hello((1,))  # version 1, like relay.login in these tests
    fetched = await new_conn.request(LinkFetch, channel=offer.code.channel)
    joiner = LinkJoiner(X25519, LinkCode.parse(offer.code.text()), name, X25519.generate())
    n_pub, sealed = joiner.request(fetched.ephemeral)
    joining = asyncio.create_task(
        new_conn.request(LinkJoin, channel=offer.code.channel, ephemeral=n_pub, sealed=sealed)
    )
    push = await next_push(old.conn, LinkRequestPush)
    new_list, accepted = await accept(old, offer, dlist, push, now=now + 1)
    joined = await asyncio.wait_for(joining, WAIT)
    assert accepted.device == joined.device
    got = joiner.open_grant(joined.sealed)
    await new_conn.request(
        Login,
        user=joined.user,
        token=joined.token,
        device=joined.device,
    )
    await publish(new_conn, got.identity)
    return Device(new_conn, got.identity, joined.device, joined.token), new_list


async def test_a_linked_device_logs_in_with_its_own_credential_and_keys(relay):
    alice1, v1 = await first_device(relay, "alice")
    alice2, v2 = await link(relay, alice1, v1)
    assert v2.version == 2 and alice2.id == 2
    assert alice2.identity.sign_key == alice1.identity.sign_key
    bob = await relay.login("bob")
    bundle = (await bob.request(FetchBundle, user="alice", device=2)).bundle
    assert bundle.user == "alice" and bundle.identity.dh_key == alice2.identity.dh.public
    listed = (await bob.request(FetchDevices, user="alice")).device_list
    assert listed == v2.sign(alice1.identity)
    assert (await bob.request(FetchDevices, user="alice")).seen == ()
    seen = (await alice2.conn.request(FetchDevices, user="alice")).seen
    assert [s.device for s in seen] == [1, 2] and all(s.last_seen > 0 for s in seen)
    await expect_error(ErrorCode.UNKNOWN_DEVICE, bob.request(FetchBundle, user="alice", device=5))


async def test_fan_out_reaches_every_device_and_names_the_sending_device(relay):
    alice1, v1 = await first_device(relay, "alice")
    alice2, _ = await link(relay, alice1, v1)
    bob = await relay.login("bob")
    views = (ListVersion("alice", 2), ListVersion("bob", 0))
    reply = await bob.request(
        SendDevices,
        envelopes=(DeviceEnvelope("alice", 1, b"to-1"), DeviceEnvelope("alice", 2, b"to-2")),
        lists=views,
    )
    assert len(reply.mids) == 2 and all(reply.mids)
    got1, got2 = await next_push(alice1.conn, Deliver), await next_push(alice2.conn, Deliver)
    assert (got1.body, got1.sender, got1.sender_device) == (b"to-1", "bob", 1)
    assert (got2.body, got2.sender) == (b"to-2", "bob")
    # alice's device 2 writes to bob and copies the message to her device 1.
    await alice2.conn.request(
        SendDevices,
        envelopes=(DeviceEnvelope("bob", 1, b"hi bob"), DeviceEnvelope("alice", 1, b"sync")),
        lists=(ListVersion("bob", 0), ListVersion("alice", 2)),
    )
    got = await next_push(bob, Deliver)
    assert (got.body, got.sender, got.sender_device) == (b"hi bob", "alice", 2)
    sync = await next_push(alice1.conn, Deliver)
    assert (sync.body, sync.sender, sync.sender_device) == (b"sync", "alice", 2)


async def test_a_stale_view_is_refused_whole_with_the_current_lists(relay):
    alice1, v1 = await first_device(relay, "alice")
    _, v2 = await link(relay, alice1, v1)
    bob = await relay.login("bob")
    err = await expect_error(
        ErrorCode.MISMATCHED_DEVICES,
        bob.request(
            SendDevices,
            envelopes=(DeviceEnvelope("alice", 1, b"x"),),
            lists=(ListVersion("alice", 1), ListVersion("bob", 0)),
        ),
    )
    assert err.device_lists == (v2.sign(alice1.identity),)
    # Nothing was queued for the device it did name: the first delivery is the retry.
    await bob.request(
        SendDevices,
        envelopes=(DeviceEnvelope("alice", 1, b"retry"), DeviceEnvelope("alice", 2, b"r2")),
        lists=(ListVersion("alice", 2), ListVersion("bob", 0)),
    )
    assert (await next_push(alice1.conn, Deliver)).body == b"retry"


async def test_a_view_the_relay_has_cached_is_dropped_by_every_device_change(relay):
    """send_devices is checked against the store's cache of each account's devices (no
    query per send): a link or an unlink must never leave the old view accepted."""
    alice1, v1 = await first_device(relay, "alice")
    bob = await relay.login("bob")
    one = (DeviceEnvelope("alice", 1, b"a"),)
    views = (ListVersion("alice", 1), ListVersion("bob", 0))
    for _ in range(2):  # the first send reads the lists into the cache, the next uses it
        await bob.request(SendDevices, envelopes=one, lists=views)
    store = relay.server.relay.store
    assert store.cached_devices(["alice", "bob"]) is not None
    alice2, v2 = await link(relay, alice1, v1)
    await expect_error(
        ErrorCode.MISMATCHED_DEVICES, bob.request(SendDevices, envelopes=one, lists=views)
    )
    two = (DeviceEnvelope("alice", 1, b"a"), DeviceEnvelope("alice", 2, b"b"))
    views = (ListVersion("alice", 2), ListVersion("bob", 0))
    for _ in range(2):
        await bob.request(SendDevices, envelopes=two, lists=views)
    assert (await next_push(alice2.conn, Deliver)).body == b"b"
    v3 = v2.without_device(2)
    await alice1.conn.request(PublishDevices, device_list=v3.sign(alice1.identity))
    await expect_error(
        ErrorCode.MISMATCHED_DEVICES, bob.request(SendDevices, envelopes=two, lists=views)
    )


async def test_a_fan_out_waiting_for_a_list_read_is_not_overtaken(relay):
    """bob's first send_devices to alice needs her lists read (a task); his next ones, to
    carol whose lists are cached, must still reach his own device 2 after it."""
    bob1, vb1 = await first_device(relay, "bob")
    bob2, _ = await link(relay, bob1, vb1)
    await first_device(relay, "alice")
    await first_device(relay, "carol")

    def to(user: str, copy: bytes) -> SendDevices:
        return bob1.conn.request(
            SendDevices,
            envelopes=(DeviceEnvelope(user, 1, b"x"), DeviceEnvelope("bob", 2, copy)),
            lists=(ListVersion(user, 1), ListVersion("bob", 2)),
        )

    await to("carol", b"warm")  # carol's lists are cached from now on
    assert (await next_push(bob2.conn, Deliver)).body == b"warm"
    copies = [b"alice", *(b"carol %d" % i for i in range(20))]
    await asyncio.gather(to("alice", copies[0]), *(to("carol", c) for c in copies[1:]))
    assert [(await next_push(bob2.conn, Deliver)).body for _ in copies] == copies


async def test_a_one_body_send_never_reaches_only_some_devices(relay):
    """A v1 `send` can reach device 1 only: refused once an account has more."""
    alice1, v1 = await first_device(relay, "alice")
    bob = await relay.login("bob")
    assert (await bob.request(Send, to=("alice",), body=b"fine")).ts > 0
    await link(relay, alice1, v1)
    err = await expect_error(
        ErrorCode.MISMATCHED_DEVICES, bob.request(Send, to=("alice",), body=b"x")
    )
    assert len(err.device_lists) == 1


async def test_a_second_login_with_new_keys_is_refused_and_says_how_to_link(relay):
    """Issue #12's case: a second profile with the same token must not take over."""
    await first_device(relay, "alice")
    again = await relay.login("alice")
    err = await expect_error(
        ErrorCode.ACCOUNT_HAS_DEVICES, publish(again, IdentityKeyPair.generate(X25519))
    )
    assert "hushwire link" in err.message and "--link" in err.message


async def test_a_login_naming_another_identity_is_refused_without_touching_the_live_device(
    relay,
):
    """A copied token with a new profile: refused at login (it names its identity), so
    device 1's live session is not replaced and keeps receiving."""
    alice1, _ = await first_device(relay, "alice")
    again = await relay.connect()
    newcomer = IdentityKeyPair.generate(X25519)
    err = await expect_error(
        ErrorCode.ACCOUNT_HAS_DEVICES,
        again.handshake("alice", relay.tokens["alice"], sign_key=newcomer.sign_key, versions=(1,)),
    )
    assert "hushwire link" in err.message
    assert not alice1.conn.is_closed
    bob = await relay.login("bob")
    await bob.request(Send, to=("alice",), body=b"still here")
    assert (await next_push(alice1.conn, Deliver)).body == b"still here"
    # Its own identity logs in (and, as before, replaces the older connection).
    same = await relay.connect()
    await same.handshake(
        "alice", relay.tokens["alice"], sign_key=alice1.identity.sign_key, versions=(1,)
    )
    await asyncio.wait_for(alice1.conn.wait_closed(), WAIT)
    assert alice1.conn.closed_reason.code == ErrorCode.SESSION_REPLACED


async def test_unlinking_revokes_the_credential_and_the_mailbox(relay):
    alice1, v1 = await first_device(relay, "alice")
    alice2, v2 = await link(relay, alice1, v1)
    bob = await relay.login("bob")
    await bob.request(FetchDevices, user="alice")
    v3 = v2.without_device(2)
    await alice1.conn.request(PublishDevices, device_list=v3.sign(alice1.identity))
    await asyncio.wait_for(alice2.conn.wait_closed(), WAIT)
    assert alice2.conn.closed_reason.code == ErrorCode.AUTH_FAILED
    changed = await next_push(bob, DevicesChanged)
    assert changed.device_list == v3.sign(alice1.identity)
    again = await relay.connect()
    await expect_error(ErrorCode.AUTH_FAILED, again.handshake("alice", alice2.token, device=2))
    # bob's next send with the old view is refused; with the new one it reaches device 1.
    old_view = (ListVersion("alice", 2), ListVersion("bob", 0))
    two = (DeviceEnvelope("alice", 1, b"a"), DeviceEnvelope("alice", 2, b"b"))
    await expect_error(
        ErrorCode.MISMATCHED_DEVICES, bob.request(SendDevices, envelopes=two, lists=old_view)
    )
    await bob.request(
        SendDevices, envelopes=two[:1], lists=(ListVersion("alice", 3), ListVersion("bob", 0))
    )
    assert (await next_push(alice1.conn, Deliver)).body == b"a"
    # An older list cannot bring the device back.
    await expect_error(
        ErrorCode.STALE_DEVICE_LIST,
        alice1.conn.request(PublishDevices, device_list=v2.sign(alice1.identity)),
    )


async def test_lists_must_be_signed_by_the_account_and_cannot_add_devices(relay):
    alice1, v1 = await first_device(relay, "alice")
    mallory = IdentityKeyPair.generate(X25519)
    v2 = dataclasses.replace(v1, version=2)
    await expect_error(
        ErrorCode.BAD_KEYS, alice1.conn.request(PublishDevices, device_list=v2.sign(mallory))
    )
    v3, _ = v1.with_device("sneaky", X25519.generate().public, 1)
    await expect_error(
        ErrorCode.UNKNOWN_DEVICE,
        alice1.conn.request(PublishDevices, device_list=v3.sign(alice1.identity)),
    )


async def test_a_link_code_works_once(relay):
    alice1, _ = await first_device(relay, "alice")
    offer = LinkOffer(X25519, now=0, ttl=300)
    await alice1.conn.request(LinkStart, channel=offer.code.channel, ephemeral=offer.ephemeral)
    first = await relay.connect()
    await first.say_hello()
    await first.request(LinkFetch, channel=offer.code.channel)
    joining = asyncio.create_task(
        first.request(LinkJoin, channel=offer.code.channel, ephemeral=b"n" * 32, sealed=b"s")
    )
    await next_push(alice1.conn, LinkRequestPush)
    second = await relay.connect()
    await second.say_hello()
    await expect_error(
        ErrorCode.LINK_FAILED,
        second.request(LinkJoin, channel=offer.code.channel, ephemeral=b"n" * 32, sealed=b"s"),
    )
    joining.cancel()


async def test_an_expired_link_fails_the_waiting_device(relay_factory):
    relay = await relay_factory(link_ttl=0.3)
    alice1, _ = await first_device(relay, "alice")
    offer = LinkOffer(X25519, now=0, ttl=300)
    await alice1.conn.request(LinkStart, channel=offer.code.channel, ephemeral=offer.ephemeral)
    new = await relay.connect()
    await new.say_hello()
    await expect_error(
        ErrorCode.LINK_FAILED,
        new.request(LinkJoin, channel=offer.code.channel, ephemeral=b"n" * 32, sealed=b"s"),
    )
    await expect_error(ErrorCode.LINK_FAILED, new.request(LinkFetch, channel=offer.code.channel))


async def test_an_unknown_channel_fails_and_counts_as_a_failed_login(relay_factory):
    relay = await relay_factory(login_failures=2)
    new = await relay.connect()
    await new.say_hello()
    for _ in range(2):
        await expect_error(ErrorCode.LINK_FAILED, new.request(LinkFetch, channel=b"?" * 16))
    await expect_error(ErrorCode.RATE_LIMITED, new.request(LinkFetch, channel=b"?" * 16))


async def test_the_device_limit(relay_factory):
    relay = await relay_factory(max_devices=2)
    alice1, v1 = await first_device(relay, "alice")
    await link(relay, alice1, v1)
    offer = LinkOffer(X25519, now=0, ttl=300)
    err = await expect_error(
        ErrorCode.DEVICE_LIMIT,
        alice1.conn.request(LinkStart, channel=offer.code.channel, ephemeral=offer.ephemeral),
    )
    assert "unlink" in err.message


async def test_a_link_request_needs_the_starting_device_online(relay):
    alice1, _ = await first_device(relay, "alice")
    offer = LinkOffer(X25519, now=0, ttl=300)
    await alice1.conn.request(LinkStart, channel=offer.code.channel, ephemeral=offer.ephemeral)
    await alice1.conn.close()
    new = await relay.connect()
    await new.say_hello()
    with pytest.raises((RequestError, ConnectionClosed)):
        await new.request(LinkFetch, channel=offer.code.channel)


async def test_an_operator_removing_a_device_closes_it_and_senders_drop_its_envelopes(relay):
    alice1, v1 = await first_device(relay, "alice")
    alice2, _ = await link(relay, alice1, v1)
    code = await asyncio.to_thread(
        admin_main, ["--db", str(relay.config.db), "remove-device", "alice", "2"]
    )
    assert code == 0
    await asyncio.wait_for(alice2.conn.wait_closed(), WAIT)
    # The signed list still names device 2 (only alice can sign a new one): a sender that
    # targets it is accepted, and its envelope for device 2 is dropped (mid 0).
    bob = await relay.login("bob")
    reply = await bob.request(
        SendDevices,
        envelopes=(DeviceEnvelope("alice", 1, b"one"), DeviceEnvelope("alice", 2, b"two")),
        lists=(ListVersion("alice", 2), ListVersion("bob", 0)),
    )
    assert reply.mids == (1, 0)
    assert (await next_push(alice1.conn, Deliver)).body == b"one"
    await alice1.conn.request(
        PublishDevices, device_list=dataclasses.replace(v1, version=3).sign(alice1.identity)
    )
