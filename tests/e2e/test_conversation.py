"""Two and three real profiles talking through a real relay over TLS."""

from __future__ import annotations

from client.service import MessageReceived
from tests.e2e.helpers import next_event


async def test_first_contact_and_a_conversation_both_ways(relay, login):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    sent = await alice.send("bob", "hello bob")
    assert not sent.queued
    got = await next_event(bob, MessageReceived)
    assert (got.contact, got.text, got.envelope_id) == ("alice", "hello bob", sent.envelope_id)
    await bob.send("alice", "hi alice")
    back = await next_event(alice, MessageReceived)
    assert (back.contact, back.text) == ("bob", "hi alice")
    for i in range(3):
        await alice.send("bob", f"more {i}")
        assert (await next_event(bob, MessageReceived)).text == f"more {i}"
    history = await bob.history("alice", 10)
    assert [(h.direction, h.text) for h in history] == [
        ("in", "hello bob"), ("out", "hi alice"), ("in", "more 0"), ("in", "more 1"),
        ("in", "more 2")]
