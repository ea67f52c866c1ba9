"""A relay that lies: every trick is detected by the clients or cannot forge a message.

The relay here is the real one, running in-process, with its behaviour bent by the test
the way a malicious operator could bend it (the client is what is under test).
"""

from __future__ import annotations

import dataclasses

import pytest

from hushwire.client.service import (
    MessageQuarantined,
    MessageReceived,
    MessageRejected,
    Notice,
)
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair, KemPrekeyPair, SignedPrekeyPair
from hushwire.common.errors import ErrorCode, RequestError
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

    The relay answers alice's first bundle fetch for bob with keys it made itself
    (validly self-signed). Alice's message to 'bob' then goes nowhere: bob's real device
    list (which the fan-out needs) does not verify under the forged identity she pinned,
    so she is shown the refusal and the send fails; the safety numbers differ.
    """
    bob = await login(relay, "bob")
    alice = await login(relay, "alice")
    forged = IdentityKeyPair.generate(X25519)
    spk = SignedPrekeyPair.generate(forged, X25519, 1)
    kem = KemPrekeyPair.generate(forged, 2, last_resort=True)
    store = relay.server.relay.store
    real_fetch = store.fetch_bundle

    async def evil_fetch(fetcher, target, *args, **kwargs):
        bundle = await real_fetch(fetcher, target, *args, **kwargs)
        if target != "bob":
            return bundle
        return PrekeyBundle("bob", forged.public(), spk.public(), None, 2, kem.public())

    store.fetch_bundle = evil_fetch
    with pytest.raises(RequestError) as refused:
        await alice.send("bob", "for the real bob")
    assert refused.value.code == ErrorCode.MISMATCHED_DEVICES
    await next_event(alice, Notice, lambda e: "device list for bob that is refused" in e.text)
    store.fetch_bundle = real_fetch
    # Bob has no session with alice, so he starts one from alice's real keys. Alice
    # pinned the forged identity for "bob": the real one is a key change, so his message
    # is held until she accepts it, and never shown as from the bob she pinned.
    await bob.send("alice", "hello alice")
    held = await next_event(alice, MessageQuarantined)
    assert held.contact == "bob"
    assert not [h for h in await alice.history("bob") if h.text == "hello alice"]
    alice_view = await alice.safety_number("bob")
    bob_view = await bob.safety_number("alice")
    assert alice_view != bob_view
    figures.add(
        "relay substitutes bob's bundle at alice's first contact",
        "bob's signed device list does not verify under the forged identity: alice is told "
        "and nothing is sent; the real bob's reply is held as a key change; the safety "
        "numbers alice and bob compare differ",
    )
