"""A hostile peer (a modified client) sends authentic envelopes with fields no honest
client writes, through a real relay: each is refused or bounded, and the next good
message is still shown."""

from __future__ import annotations

import contextlib
import time

from hushwire.client.service import MessageReceived, MessageRejected
from tests.e2e.helpers import next_event


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
