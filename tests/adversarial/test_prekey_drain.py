"""Several accounts together must not drain an offline user's one-time prekeys."""

from __future__ import annotations

import asyncio

from hushwire.client.service import MessageReceived
from hushwire.common.messages import FetchBundle
from tests.e2e.helpers import next_event


async def test_many_fetchers_do_not_drain_a_victim_and_sessions_still_start(
    relay_factory, login, figures
):
    drainers = tuple(f"m{i}" for i in range(5))
    relay = await relay_factory(users=("alice", "bob", *drainers))
    bob = await login(relay, "bob")  # publishes its keys
    await bob.close()  # and goes offline
    store = relay.server.relay.store
    before = await store.prekey_count("bob")
    with_otpk = last_resort = 0
    for name in drainers:  # each stays within its own per-fetcher budget (20)
        conn = await relay.login(name, version=2)  # bob speaks version 2
        replies = await asyncio.gather(*[conn.request(FetchBundle, user="bob") for _ in range(20)])
        for reply in replies:
            assert reply.bundle.signed_prekey is not None
            if reply.bundle.one_time_prekey is None:
                last_resort += 1
            else:
                with_otpk += 1
    after = await store.prekey_count("bob")
    assert before - after == with_otpk <= relay.config.target_fetch_burst + 1
    assert last_resort >= 100 - relay.config.target_fetch_burst - 1
    # A real first contact through a last-resort bundle (X3DH without DH4) works.
    alice = await login(relay, "alice")
    await alice.send("bob", "hello through the signed prekey alone")
    bob = await login(relay, "bob")
    got = await next_event(bob, MessageReceived)
    assert (got.contact, got.text) == ("alice", "hello through the signed prekey alone")
    figures.add(
        f"5 accounts fetch offline bob's bundle 20 times each (bob had {before} one-time prekeys)",
        f"{with_otpk} bundles with a one-time prekey, {last_resort} last-resort bundles "
        f"(signed prekey only); bob keeps {after}/{before} (before: all 100 consumed); a "
        "first message through a last-resort bundle is read by bob",
    )
