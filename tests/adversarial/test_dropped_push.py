"""The push pump against a real relay: a dropped connection cancels it wherever it is,
and what was stored is still shown, exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

from hushwire.client.service import ConnectionState, HushwireClient, MessageReceived
from tests.e2e.helpers import WAIT, next_event


class DropAtStatement:
    """Cancels `client`'s push pump while its profile db runs statement number `target`
    (counted from `arm()`), then cuts the connection, as a real drop does."""

    def __init__(self, client: HushwireClient) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.count = 0
        self.target = 0  # 0: only count
        self.armed = False

    def trace(self, sql: str) -> None:  # runs on the db thread
        if not self.armed:
            return
        self.count += 1
        if self.count == self.target:
            self.loop.call_soon_threadsafe(self.drop)

    def arm(self, target: int) -> None:
        self.count, self.target, self.armed = 0, target, True

    def drop(self) -> None:
        self.armed = False
        conn = self.client._conn
        for task in self.client._conn_tasks:
            if task.get_coro().__qualname__ == "Inbox.pump":
                task.cancel()
        conn._writer.transport.abort()


async def test_a_drop_at_any_statement_of_a_delivery_still_shows_it_once(relay, login, figures):
    alice, bob = await login(relay, "alice"), await login(relay, "bob")
    await alice.send("bob", "hello")
    await next_event(bob, MessageReceived)
    await bob.send("alice", "hi")  # both sides have a session: the steady-state path
    await next_event(alice, MessageReceived)
    await bob.sync()
    dropper = DropAtStatement(bob)
    await bob.store._db.set_trace_callback(dropper.trace)

    dropper.arm(0)  # a dry run counts the statements one delivery takes
    await alice.send("bob", "counting")
    await next_event(bob, MessageReceived)
    await bob.sync()
    statements = dropper.count
    assert statements >= 5  # BEGIN ... COMMIT at least

    shown: Counter[str] = Counter()
    for target in range(1, statements + 1):
        text = f"m{target}"
        dropper.arm(target)
        await alice.send("bob", text)
        states = []
        async with asyncio.timeout(WAIT):
            while states[-2:] != ["reconnecting", "connected"]:
                event = await bob.events.get()
                if isinstance(event, MessageReceived):
                    shown[event.text] += 1
                elif isinstance(event, ConnectionState):
                    states.append(event.state)
        await bob.sync(limit=WAIT)
        while not bob.events.empty():
            event = bob.events.get_nowait()
            if isinstance(event, MessageReceived):
                shown[event.text] += 1
    expected = {f"m{t}": 1 for t in range(1, statements + 1)}
    assert dict(shown) == expected
    history = [h.text for h in await bob.history("alice", 100)]
    assert [t for t in history if t.startswith("m")] == list(expected)
    figures.add(
        f"connection dropped (push pump cancelled) at each of the {statements} db statements "
        "of storing one delivery",
        f"{len(expected)} of {len(expected)} messages shown exactly once",
    )
