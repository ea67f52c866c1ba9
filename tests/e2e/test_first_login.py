"""A message to a user who has never logged in waits for their keys instead of failing."""

from __future__ import annotations

from hushwire.client.service import MessageReceived, MessageSent, Notice
from tests.e2e.helpers import next_event


async def test_a_message_to_a_user_without_keys_goes_once_they_log_in(relay_factory, login):
    # idle_timeout 10 s: the keepalive (which retries the outbox) runs every 5 s.
    relay = await relay_factory(users=("alice", "bob", "yuri"), idle_timeout=10.0)
    alice, bob = await login(relay, "alice"), await login(relay, "bob")
    result = await alice.send("yuri", "welcome, yuri")
    assert result.queued
    notice = await next_event(alice, Notice)
    assert notice.text.startswith("waiting for yuri's first login")
    # Messages to others are not held behind it.
    assert not (await alice.send("bob", "hi bob")).queued
    assert (await next_event(bob, MessageReceived)).text == "hi bob"
    assert [h.status for h in await alice.history("yuri")] == ["queued"]
    yuri = await login(relay, "yuri")
    sent = await next_event(alice, MessageSent)
    assert sent.contact == "yuri" and sent.uid == result.uid
    assert (await next_event(yuri, MessageReceived)).text == "welcome, yuri"
