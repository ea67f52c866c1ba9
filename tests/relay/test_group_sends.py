"""Group sends through a real relay (real TLS, real sockets) on both backends: one
`send_devices` with a payload, stored once, handed out with every envelope, released
with its last mailbox row; limits, quotas, order and version refusals."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from hushwire.client.connection import RelayConnection
from hushwire.common.errors import ErrorCode
from hushwire.common.frames import encode_frame
from hushwire.common.messages import (
    Ack,
    Deliver,
    DeviceEnvelope,
    ListVersion,
    PublishDevices,
    Send,
    SendDevices,
)
from hushwire.relay.sending import MAX_PAYLOAD, MAX_SEND_BYTES
from tests.relay.test_server_devices import expect_error, first_device, link

WAIT = 20.0
MEMBERS = tuple(f"m{i:02d}" for i in range(1, 51))  # 50 members besides the sender


@pytest.fixture(params=["sqlite", "postgresql"])
def relay_store(request: pytest.FixtureRequest) -> str | None:
    """Every test here runs on both backends (overrides tests/conftest.py's)."""
    return str(request.getfixturevalue("pg_url")) if request.param == "postgresql" else None


def group_send(
    sender: str, members: tuple[str, ...], *, tag: bytes = b"note"
) -> tuple[list[DeviceEnvelope], list[ListVersion]]:
    """Envelopes for device 1 of each member (accounts without a list: version 0), and
    the lists naming them and the sender's own one-device account."""
    envelopes = [DeviceEnvelope(m, 1, tag + b" for " + m.encode()) for m in members]
    lists = [ListVersion(sender, 0), *(ListVersion(m, 0) for m in members)]
    return envelopes, lists


async def delivered(conn: RelayConnection, n: int) -> list[Deliver]:
    got = []
    while len(got) < n:
        push = await asyncio.wait_for(conn.pushes.get(), WAIT)
        if isinstance(push, Deliver):
            got.append(push)
    return got


async def stats(relay) -> dict[str, int]:
    return await relay.server.relay.store.stats()


async def ack(conn: RelayConnection, *deliveries: Deliver) -> None:
    reply = await conn.request(Ack, mids=tuple(d.mid for d in deliveries))
    assert reply.deleted == len(deliveries)


async def test_a_payload_is_stored_once_delivered_with_every_note_and_goes_with_the_last_ack(
    relay,
):
    alice = await relay.login("alice", version=2)
    payload = b"\x01encrypted group message" * 40
    envelopes, lists = group_send("alice", ("bob", "carol"))
    ok = await alice.send_devices(envelopes, lists, payload=payload)
    assert ok.mids == (1, 1)
    s = await stats(relay)
    assert (s["queued"], s["payloads"], s["payload_bytes"]) == (2, 1, len(payload))

    bob = await relay.login("bob", version=2)
    (note,) = await delivered(bob, 1)
    assert (note.sender, note.sender_device, note.body) == ("alice", 1, b"note for bob")
    assert note.payload == payload
    await ack(bob, note)
    # bob's ack takes his row only: carol's copy still names the payload.
    s = await stats(relay)
    assert (s["queued"], s["payloads"]) == (1, 1)

    carol = await relay.login("carol", version=2)
    (note,) = await delivered(carol, 1)
    assert note.body == b"note for carol" and note.payload == payload
    await ack(carol, note)
    s = await stats(relay)
    assert (s["queued"], s["payloads"], s["payload_bytes"]) == (0, 0, 0)


async def test_online_members_get_it_live_and_a_plain_send_has_no_payload(relay):
    alice = await relay.login("alice", version=2)
    bob = await relay.login("bob", version=2)
    carol = await relay.login("carol", version=2)
    envelopes, lists = group_send("alice", ("bob", "carol"))
    await alice.send_devices(envelopes, lists, payload=b"live")
    await alice.send_devices(envelopes[:1], lists[:2])
    for conn in (bob, carol):
        first = (await delivered(conn, 1))[0]
        assert first.payload == b"live"
        await ack(conn, first)
    (plain,) = await delivered(bob, 1)
    assert plain.payload is None
    await ack(bob, plain)
    assert (await stats(relay))["payloads"] == 0


async def test_an_offline_device_gets_the_payload_after_a_restart(relay):
    alice = await relay.login("alice", version=2)
    envelopes, lists = group_send("alice", ("bob", "carol"))
    await alice.send_devices(envelopes, lists, payload=b"kept across restarts")
    carol = await relay.login("carol", version=2)
    await ack(carol, *await delivered(carol, 1))
    await relay.restart()
    s = await stats(relay)
    assert (s["queued"], s["payloads"]) == (1, 1)
    bob = await relay.login("bob", version=2)
    (note,) = await delivered(bob, 1)
    assert (note.body, note.payload) == (b"note for bob", b"kept across restarts")
    await ack(bob, note)
    assert (await stats(relay))["payloads"] == 0


@pytest.fixture
async def big_relay(relay_factory):
    """Fifty members and the sender; sends limited only by what a test sets."""
    return await relay_factory(users=("alice", "bob", *MEMBERS), send_burst=10_000.0)


async def test_fifty_accounts_one_send_and_one_full_mailbox_refuses_all_of_it(relay_factory):
    relay = await relay_factory(
        users=("alice", "bob", *MEMBERS), send_burst=10_000.0, max_mailbox=3
    )
    members = MEMBERS[:49]  # with alice: 50 accounts, the most one send may name
    alice = await relay.login("alice", version=2)
    envelopes, lists = group_send("alice", members)
    assert len(lists) == 50
    await alice.send_devices(envelopes, lists, payload=b"first")
    s = await stats(relay)
    assert (s["queued"], s["payloads"]) == (49, 1)
    # m07's mailbox fills up (3 envelopes): the next group send queues nothing at all.
    bob = await relay.login("bob", version=2)
    for _ in range(2):
        await bob.request(Send, to=("m07",), body=b"1:1")
    err = await expect_error(
        ErrorCode.MAILBOX_FULL, alice.send_devices(envelopes, lists, payload=b"second")
    )
    assert "m07" in err.message
    s = await stats(relay)
    assert (s["queued"], s["payloads"]) == (49 + 2, 1)


async def test_the_payload_counts_against_every_recipients_mailbox_bytes(relay_factory):
    relay = await relay_factory(max_mailbox_bytes=4096)
    alice = await relay.login("alice", version=2)
    envelopes, lists = group_send("alice", ("bob", "carol"))
    payload = bytes(3000)
    await alice.send_devices(envelopes, lists, payload=payload)
    # Stored once (3,000 bytes), but each mailbox holds 3,000 + its note: a second one
    # would put each over 4,096.
    await expect_error(
        ErrorCode.MAILBOX_FULL, alice.send_devices(envelopes, lists, payload=payload)
    )
    s = await stats(relay)
    assert (s["queued"], s["payloads"], s["payload_bytes"]) == (2, 1, 3000)


async def test_at_most_fifty_accounts_and_no_empty_payload(big_relay):
    alice = await big_relay.login("alice", version=2)
    envelopes, lists = group_send("alice", MEMBERS)  # 51 accounts with alice
    err = await expect_error(
        ErrorCode.BAD_REQUEST, alice.send_devices(envelopes, lists, payload=b"p")
    )
    assert "at most 50 accounts" in err.message
    await expect_error(
        ErrorCode.BAD_REQUEST, alice.send_devices(envelopes[:2], lists[:3], payload=b"")
    )
    s = await stats(big_relay)
    assert (s["queued"], s["payloads"]) == (0, 0)


async def test_an_oversized_payload_or_send_is_refused_whole(relay_factory):
    # Sizes beyond the default frame need a relay that takes larger frames.
    relay = await relay_factory(
        users=("alice", *MEMBERS), send_burst=10_000.0, max_frame=1024 * 1024
    )
    alice = await relay.login("alice", version=2)
    envelopes, lists = group_send("alice", MEMBERS[:10])
    err = await expect_error(
        ErrorCode.SEND_TOO_LARGE,
        alice.send_devices(envelopes, lists, payload=bytes(MAX_PAYLOAD + 1)),
    )
    assert str(MAX_PAYLOAD) in err.message
    await alice.send_devices(envelopes, lists, payload=bytes(MAX_PAYLOAD))
    # 49 envelopes of 4 KiB and a full payload: over the total for one send.
    big = [DeviceEnvelope(m, 1, bytes(4096)) for m in MEMBERS[:49]]
    big_lists = [ListVersion("alice", 0), *(ListVersion(m, 0) for m in MEMBERS[:49])]
    assert MAX_PAYLOAD + 49 * 4096 > MAX_SEND_BYTES
    err = await expect_error(
        ErrorCode.SEND_TOO_LARGE,
        alice.send_devices(big, big_lists, payload=bytes(MAX_PAYLOAD)),
    )
    assert str(MAX_SEND_BYTES) in err.message
    s = await stats(relay)
    assert (s["queued"], s["payloads"]) == (10, 1)  # only the send within the limits


async def test_a_payload_on_a_version_1_connection_is_refused(relay):
    alice = await relay.login("alice", version=1)
    envelopes, lists = group_send("alice", ("bob",))
    err = await expect_error(
        ErrorCode.BAD_REQUEST, alice.send_devices(envelopes, lists, payload=b"p")
    )
    assert "version 2" in err.message
    await alice.send_devices(envelopes, lists)  # without a payload: as before
    assert (await stats(relay))["payloads"] == 0


async def test_one_senders_group_and_one_to_one_sends_arrive_in_order(big_relay):
    """Pipelined sends of one connection, with and without payloads, to members online
    and offline: every device gets them in the order they were sent."""
    alice = await big_relay.login("alice", version=2)
    bob = await big_relay.login("bob", version=2)  # online; m01 and m02 are not
    members = ("bob", "m01", "m02")
    sends = []
    for i in range(30):
        tag = str(i).encode()
        if i % 3 == 0:
            envelopes, lists = group_send("alice", members, tag=tag)
            sends.append(alice.send_devices(envelopes, lists, payload=b"p" + tag))
        elif i % 3 == 1:
            envelopes, lists = group_send("alice", (members[i % 2],), tag=tag)
            sends.append(alice.send_devices(envelopes, lists))
        else:
            sends.append(alice.request(Send, to=("bob",), body=tag + b" for bob"))
    await asyncio.gather(*sends)
    m01 = await big_relay.login("m01", version=2)
    for conn, name, expected in (
        (bob, b"bob", [i for i in range(30) if i % 3 != 1 or i % 2 == 0]),
        (m01, b"m01", [i for i in range(30) if i % 3 == 0 or (i % 3 == 1 and i % 2)]),
    ):
        got = await delivered(conn, len(expected))
        assert [d.body for d in got] == [str(i).encode() + b" for " + name for i in expected]
        assert [d.payload for d in got] == [
            b"p" + str(i).encode() if i % 3 == 0 else None for i in expected
        ]


async def test_unlinking_or_removing_a_device_drops_its_reference(relay):
    alice = await relay.login("alice", version=2)
    bob1, v1 = await first_device(relay, "bob")
    bob2, v2 = await link(relay, bob1, v1)
    await bob1.conn.close()
    await bob2.conn.close()
    envelopes = [DeviceEnvelope("bob", d, b"note %d" % d) for d in (1, 2)]
    envelopes.append(DeviceEnvelope("carol", 1, b"note carol"))
    lists = [ListVersion("alice", 0), ListVersion("bob", v2.version), ListVersion("carol", 0)]
    await alice.send_devices(envelopes, lists, payload=b"shared")
    assert (await stats(relay))["payloads"] == 1
    # bob signs a list without device 2: its mailbox, and its reference, go.
    bob1.conn = await relay.login("bob", version=2)
    await bob1.conn.request(PublishDevices, device_list=v2.without_device(2).sign(bob1.identity))
    s = await stats(relay)
    assert (s["queued"], s["payloads"]) == (2, 1)
    # The operator removes carol: the last reference but bob's own goes with her.
    await relay.server.relay.store.remove_user("carol")
    s = await stats(relay)
    assert (s["queued"], s["payloads"]) == (1, 1)
    (note,) = await delivered(bob1.conn, 1)
    assert (note.body, note.payload) == (b"note 1", b"shared")
    await ack(bob1.conn, note)
    s = await stats(relay)
    assert (s["queued"], s["payloads"], s["payload_bytes"]) == (0, 0, 0)


async def test_the_largest_send_the_frame_takes_is_delivered_whole_even_on_version_1(relay):
    """protocol.md, send_devices: a deliver is never larger than its request, so a send
    that fills max_frame exactly still reaches its device, payload and all; a version-1
    recipient gets the key too (and ignores it)."""
    alice = await relay.login("alice", version=2)
    bob = await relay.login("bob", version=1)
    envelopes, lists = group_send("alice", ("bob",))
    frame = SendDevices(id=2**63 - 1, envelopes=tuple(envelopes), lists=tuple(lists))
    # (a payload of 256 B to 64 KiB has the same 3-byte msgpack `bin` header)
    overhead = len(encode_frame({**frame.to_wire(), "payload": bytes(1000)})) - 4 - 1000
    payload = bytes(relay.config.max_frame - overhead)
    full = dataclasses.replace(frame, payload=payload)
    assert len(encode_frame(full.to_wire())) - 4 == relay.config.max_frame
    await alice.send_devices(envelopes, lists, payload=payload)
    (note,) = await delivered(bob, 1)
    assert note.payload == payload and note.body == b"note for bob"
