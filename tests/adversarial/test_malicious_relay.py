"""A relay that lies: every trick is detected by the clients or cannot forge a message.

The relay here is the real one, running in-process, with its behaviour bent by the test
the way a malicious operator could bend it (the client is what is under test).
"""

from __future__ import annotations

import dataclasses

import pytest

from hushwire.client.errors import BadBundle
from hushwire.client.service import (
    MessageQuarantined,
    MessageReceived,
    MessageRejected,
    Notice,
)
from hushwire.common.crypto.devices import first_device_list
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair, KemPrekeyPair, SignedPrekeyPair
from hushwire.common.keys import PrekeyBundle
from hushwire.common.messages import Deliver
from tests.e2e.helpers import next_event


def connection_of(relay, user: str):
    (conn,) = [c for c in relay.server.connections if c.user == user]
    return conn


async def drained_texts(client) -> list[str]:
    """Everything the relay had for `client`, handled and acked; texts shown, in order."""
    await client.sync()
    shown = []
    while not client.events.empty():
        event = client.events.get_nowait()
        if isinstance(event, MessageReceived):
            shown.append(event.text)
    return shown


async def test_replayed_envelopes_are_never_shown_twice(relay, login, figures):
    alice, bob = await login(relay, "alice"), await login(relay, "bob")
    captured: list[Deliver] = []
    conn = connection_of(relay, "bob")
    real_deliver = conn._deliver

    def spy(d: Deliver) -> None:
        captured.append(d)
        real_deliver(d)

    conn._deliver = spy
    for text in ("first", "second"):
        await alice.send("bob", text)
        assert (await next_event(bob, MessageReceived)).text == text
    await bob.sync()
    # The relay pushes both again, under fresh mailbox ids, and once more after bob
    # restarted his client (the dedupe is durable, not in memory).
    for d in captured:
        conn.push(dataclasses.replace(d, mid=d.mid + 1_000_000))
    assert await drained_texts(bob) == []
    await bob.close()
    bob = await login(relay, "bob")
    conn = connection_of(relay, "bob")
    for d in captured:
        conn.push(dataclasses.replace(d, mid=d.mid + 2_000_000))
    assert await drained_texts(bob) == []
    assert [h.text for h in await bob.history("alice", 10)] == ["first", "second"]
    figures.add(
        "relay re-pushes 2 delivered envelopes twice (once across a client restart)",
        "shown 0 times again; history unchanged",
    )


async def test_a_relay_lying_about_the_sender_is_caught(relay, login):
    alice, bob = await login(relay, "alice"), await login(relay, "bob")
    await login(relay, "carol")
    conn = connection_of(relay, "bob")
    real_deliver = conn._deliver
    conn._deliver = lambda d: real_deliver(dataclasses.replace(d, sender="carol"))
    await alice.send("bob", "from alice, claimed to be carol's")
    rejected = await next_event(bob, MessageRejected)
    assert rejected.contact == "carol" and "claims to be from alice" in rejected.reason
    assert await bob.history("carol", 5) == [] and await bob.history("alice", 5) == []


async def test_reordered_and_dropped_envelopes(relay, login, reopen, figures):
    bob = await login(relay, "bob")
    await bob.close()
    alice = await login(relay, "alice")
    texts = [f"m{i}" for i in range(12)]
    for t in texts:
        await alice.send("bob", t)
    store = relay.server.relay.store
    # The relay drops m3 and hands the rest over newest first.
    pending = await store.pending("bob", limit=100)
    await store.ack("bob", [pending[3].mid])
    real_pending = store.pending

    async def newest_first(recipient, *, after=0, limit=100):
        # One batch, all of it, reversed; nothing on later reads (the window is larger).
        return list(reversed(await real_pending(recipient, limit=1000))) if after == 0 else []

    store.pending = newest_first
    bob = await reopen("bob")
    await bob.start()
    shown = await drained_texts(bob)
    store.pending = real_pending
    assert sorted(shown) == sorted(t for t in texts if t != "m3")
    assert len(shown) == len(set(shown)) == 11 and shown != sorted(shown)
    figures.add(
        "relay drops 1 of 12 envelopes and delivers the rest newest first",
        "11 shown once each (out-of-order keys kept), the dropped one never shown",
    )


async def test_key_substitution_at_first_contact_shows_in_safety_numbers(relay, login, figures):
    """X3DH 4.1: before a first contact is verified, only safety numbers can tell.

    First contact pins the identity of a bundle under which the account's signed device
    list must verify. A relay that forges bob's bundle alone is refused outright (the
    real list does not verify under it). One that forges both, its own bundle and a list
    its own key signed, is believed (trust on first use): alice's message goes to bob's
    device sealed for keys bob does not hold, so he cannot read it; his own message to
    her is held as a key change; the safety numbers they compare differ.
    """
    bob = await login(relay, "bob")
    alice = await login(relay, "alice")
    forged = IdentityKeyPair.generate(X25519)
    spk = SignedPrekeyPair.generate(forged, X25519, 1)
    kem = KemPrekeyPair.generate(forged, 2, last_resort=True)
    store = relay.server.relay.store
    real_fetch, real_devices = store.fetch_bundle, store.account_devices

    async def evil_fetch(fetcher, target, *args, **kwargs):
        bundle = await real_fetch(fetcher, target, *args, **kwargs)
        if target != "bob":
            return bundle
        return PrekeyBundle("bob", forged.public(), spk.public(), None, 2, kem.public())

    store.fetch_bundle = evil_fetch
    with pytest.raises(BadBundle, match="does not verify"):
        await alice.send("bob", "for the real bob")
    await next_event(alice, Notice, lambda e: "device list for bob that is refused" in e.text)
    assert await alice.history("bob", 5) == []
    # Now the list too: same version and devices as bob's, signed by the relay's key.
    own = first_device_list("bob", X25519.name, "first device", forged.dh.public, 1)
    own_signed = own.sign(forged)

    async def evil_devices(accounts):
        found = await real_devices(accounts)
        if "bob" in found:
            found["bob"] = dataclasses.replace(found["bob"], signed=own_signed)
        return found

    store.account_devices = evil_devices
    try:
        await alice.send("bob", "for the real bob")
        rejected = await next_event(bob, MessageRejected)
        assert rejected.contact == "alice"
    finally:
        store.fetch_bundle, store.account_devices = real_fetch, real_devices
    # Alice pinned the forged identity for "bob": the real one is a key change, so his
    # message is held until she accepts it, and never shown as from the bob she pinned.
    await bob.send("alice", "hello alice")
    held = await next_event(alice, MessageQuarantined)
    assert held.contact == "bob"
    assert not [h for h in await alice.history("bob") if h.text == "hello alice"]
    alice_view = await alice.safety_number("bob")
    bob_view = await bob.safety_number("alice")
    assert alice_view != bob_view
    figures.add(
        "relay substitutes bob's bundle at alice's first contact",
        "the bundle alone: bob's signed device list does not verify under it, alice is "
        "told and nothing is pinned or sent; bundle and a list signed by the relay: bob "
        "cannot read alice's message, his reply is held as a key change, and the safety "
        "numbers alice and bob compare differ",
    )
