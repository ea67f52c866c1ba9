"""A hostile peer (a modified client) sends authentic envelopes with fields no honest
client writes, through a real relay: each is refused or bounded, and the next good
message is still shown."""

from __future__ import annotations

import contextlib
import time

from hushwire.client.service import KeyChanged, MessageQuarantined, MessageReceived, MessageRejected
from tests.e2e.helpers import drain, next_event


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


YEAR_20000 = 568_000_000_000.0  # seconds since 1970: past what a date can hold


async def test_a_send_time_past_year_9999_is_rejected_and_later_messages_still_show(
    relay, login, reopen, figures
):
    clock = Clock()
    alice = await login(relay, "alice", clock=clock)
    bob = await login(relay, "bob")
    await alice.send("bob", "hello")
    assert (await next_event(bob, MessageReceived)).text == "hello"
    clock.offset = YEAR_20000  # the hostile message: authentic, sealed with this time
    with contextlib.suppress(ValueError, OverflowError):  # today's sender trips on it too
        await alice.send("bob", "from the far future")
    clock.offset = 0.0
    await alice.send("bob", "good one")
    rejected = await next_event(bob, MessageRejected)
    assert rejected.contact == "alice" and "9999" in rejected.reason
    assert (await next_event(bob, MessageReceived)).text == "good one"
    # History and a fresh client (what `hushwire recv` opens) still work.
    assert [h.text for h in await bob.history("alice")] == ["hello", "good one"]
    await bob.close()
    bob = await reopen("bob")
    await bob.start()
    await bob.sync()
    assert [h.text for h in await bob.unread()] == ["hello", "good one"]
    figures.add(
        "a peer seals a message dated in the year 20000, then a normal one",
        "the first rejected (send time beyond 9999), the second shown; history intact",
    )


async def test_a_message_under_a_new_identity_is_quarantined_until_trust(
    relay, login, tmp_path, figures
):
    """Someone with bob's token (or the relay) publishes a new identity for bob and writes
    as bob: alice must not see those words as bob's until she accepts the new key."""
    alice, bob = await login(relay, "alice"), await login(relay, "bob")
    await bob.send("alice", "the real bob")
    assert (await next_event(alice, MessageReceived)).text == "the real bob"
    await bob.close()
    # With only the token, a new profile is refused (account_has_devices); an impostor
    # holding it can still replace the identity on purpose, which is what this attacks.
    impostor = await login(relay, "bob", profile=tmp_path / "impostor", replace_identity=True)
    await impostor.send("alice", "send the money to account 666")
    await impostor.send("alice", "and again")
    await next_event(alice, KeyChanged, lambda e: e.contact == "bob")
    await next_event(alice, MessageQuarantined)
    await alice.sync()
    shown = [e for e in drain(alice) if isinstance(e, MessageReceived)]
    assert shown == []
    assert [h.text for h in await alice.history("bob")] == ["the real bob"]
    assert [h.text for h in await alice.unread()] == ["the real bob"]
    await alice.trust("bob")
    released = [e.text for e in drain(alice) if isinstance(e, MessageReceived)]
    assert released == ["send the money to account 666", "and again"]
    assert [h.text for h in await alice.history("bob")][-2:] == released
    figures.add(
        "bob's account publishes a new identity and sends 2 messages as bob",
        "0 shown before alice accepts the key (KeyChanged + quarantine notice); "
        "both shown after `trust`",
    )
