"""Group sends survive a relay that stops between the local commit and the send: kept in
the profile, sent again after the next login, in order, exactly once, to every device
listed by then (real relay over TLS, real clients, the sender's profile reopened)."""

from __future__ import annotations

import pytest

from hushwire.client.errors import ConnectionClosed
from hushwire.client.service import ConnectionState, GroupNotice
from tests.e2e.helpers import link, next_event
from tests.e2e.test_groups import events_of, notice_of, shown, sync


def stop_relay_before_sending(client, relay) -> None:
    """The relay stops once `client` has applied its next change or message locally and
    before that send leaves: the real flush then meets a stopped relay."""
    outbox = client.groups.outbox
    flush = outbox.flush

    async def flush_after_stop(conn, mine=frozenset()):
        if mine:
            outbox.flush = flush
            await relay.server.close()
        return await flush(conn, mine)

    outbox.flush = flush_after_stop


async def reconnected(*clients) -> None:
    for c in clients:
        await next_event(c, ConnectionState, lambda e: e.state == "reconnecting")
        await next_event(c, ConnectionState, lambda e: e.state == "connected")


async def test_a_change_and_a_message_cut_off_by_a_stopped_relay_reach_every_device_once(
    relay_factory, login, reopen, tmp_path
):
    relay = await relay_factory(users=("alice", "bob", "carol"))
    alice, bob, carol = [await login(relay, u) for u in ("alice", "bob", "carol")]
    # The create is applied locally, then the relay stops before it is sent.
    stop_relay_before_sending(alice, relay)
    with pytest.raises(ConnectionClosed, match="change is kept and goes out after the next login"):
        await alice.groups.create("team", ["bob", "carol"])
    assert [g.name for g in await alice.groups.list()] == ["team"]  # applied here
    await alice.close()
    await relay.restart()
    await reconnected(bob, carol)
    # Meanwhile bob links a phone: the re-send meets `mismatched_devices` and seals the
    # same change for it.
    bob2 = await link(relay, bob, tmp_path / "bob-phone", "phone")
    try:
        alice = await reopen("alice")
        await alice.start()  # the login sends what was kept
        for c in (bob, bob2, carol):
            await next_event(c, GroupNotice, notice_of("alice created the group 'team'"))
        await alice.groups.send("team", "one")
        # A message applied locally (transcript advanced), then the relay stops.
        stop_relay_before_sending(alice, relay)
        with pytest.raises(ConnectionClosed, match="message is kept"):
            await alice.groups.send("team", "two")
        await alice.close()
        await relay.restart()
        await reconnected(bob, bob2, carol)
        alice = await reopen("alice")
        await alice.start()
        await alice.groups.send("team", "three")  # goes after the kept one
        await carol.groups.send("team", "carol answers")
        await sync(alice, bob, bob2, carol)
        ours = [("alice", "one"), ("alice", "two"), ("alice", "three")]
        for device in (alice, bob, bob2, carol):
            got = await shown(device)
            assert [m for m in got if m[0] == "alice"] == ours, device.settings.device
            assert got.count(("carol", "carol answers")) == 1
            events = await events_of(device)
            assert len([e for e in events if "created the group" in e]) == 1
            assert not [e for e in events if "missed" in e or "fork" in e], events
        assert [i.status for i in await alice.groups.history("team") if i.kind == "out"] == [
            "sent"
        ] * 3
    finally:
        await bob2.close()
