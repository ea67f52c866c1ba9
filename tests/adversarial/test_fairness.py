"""One user's request flood must not slow everyone: per-user limits on every request
type, a cap on ids per ack, a bound on requests before login, and a db queue that one
connection cannot fill ahead of other users' commits."""

from __future__ import annotations

import asyncio

from hushwire.common.errors import ErrorCode
from hushwire.common.messages import Deliver, Send
from tests.support import WAIT, RawClient


async def _raw_login(relay, user: str) -> RawClient:
    conn = await RawClient.connect(relay.port)
    await conn.request({"t": "hello", "id": 1, "versions": [1], "client": "flood"})
    ok = await conn.request({"t": "login", "id": 2, "user": user, "token": relay.tokens[user]})
    assert ok is not None and ok["t"] == "ok", ok
    return conn


async def test_a_pipelined_flood_does_not_queue_ahead_of_other_users_commits(
    relay_factory, figures
):
    # Limits out of the way: this attacks only the queue to the db thread.
    names = (*(f"u{i:03d}" for i in range(300)), "alice", "bob", "carol")
    relay = await relay_factory(
        users=names, request_burst=1_000_000, request_rate=1_000_000, send_burst=1000
    )
    mallory = await _raw_login(relay, "u000")
    bob, carol = await relay.login("bob"), await relay.login("carol")
    flood = 1000
    answered = 0
    all_answered = asyncio.Event()

    async def read_flood() -> None:
        nonlocal answered
        while answered < flood:
            reply = await mallory.recv()
            assert reply is not None
            if reply["t"] == "ok" and reply["id"] >= 100:
                answered += 1
        all_answered.set()

    reader = asyncio.create_task(read_flood())
    for i in range(flood):  # 1,000 `who`, each reading 303 users, written at once
        mallory.send({"t": "who", "id": 100 + i})
    sends = 10
    for i in range(sends):
        await asyncio.wait_for(bob.request(Send, to=("carol",), body=b"m%d" % i), WAIT)
    flood_done_when_bob_finished = answered
    await asyncio.wait_for(all_answered.wait(), WAIT * 3)
    await reader
    got = 0
    while got < sends:
        if isinstance(await asyncio.wait_for(carol.pushes.get(), WAIT), Deliver):
            got += 1
    mallory.close()
    # Before the fix each commit waited behind ~256 of mallory's reads: bob's 10 sends
    # finished only after all 1,000 of them.
    assert flood_done_when_bob_finished < flood // 2, flood_done_when_bob_finished
    figures.add(
        f"one connection pipelines {flood} `who` (303 users each) while bob sends {sends} "
        "envelopes one after the other",
        f"bob's {sends} sends all committed after {flood_done_when_bob_finished} of the "
        f"{flood} reads (before the fix: after all {flood}; every commit waited behind "
        "up to 256 of them)",
    )


async def test_every_request_type_is_limited_per_user(relay_factory, figures):
    relay = await relay_factory(users=("alice",))
    alice = await _raw_login(relay, "alice")
    for i in range(100):
        alice.send({"t": "ping", "id": 10 + i})
    for i in range(30):
        alice.send({"t": "ack", "id": 200 + i, "mids": list(range(1000 * i, 1000 * i + 1000))})
    alice.send({"t": "ack", "id": 300, "mids": list(range(7000))})
    codes: dict[tuple[str, str], int] = {}
    for _ in range(131):
        reply = await alice.recv()
        assert reply is not None
        kind = "ping" if reply["id"] < 200 else "ack" if reply["id"] < 300 else "big ack"
        key = (kind, reply.get("code", "ok"))
        codes[key] = codes.get(key, 0) + 1
    alice.close()
    assert codes[("ping", "ok")] <= relay.config.request_burst + 5
    assert codes[("ping", ErrorCode.RATE_LIMITED)] >= 30
    assert codes[("ack", "ok")] <= relay.config.ack_burst // 1000 + 1
    assert codes[("ack", ErrorCode.RATE_LIMITED)] >= 5
    assert codes[("big ack", ErrorCode.BAD_REQUEST)] == 1
    figures.add(
        "100 pings, 30 acks of 1,000 ids and one ack of 7,000 ids, pipelined by one user",
        ", ".join(f"{k[0]} {k[1]}: {n}" for k, n in sorted(codes.items())),
    )


async def test_requests_before_login_are_bounded(relay_factory, figures):
    relay = await relay_factory(users=("alice",))
    conn = await RawClient.connect(relay.port)
    await conn.request({"t": "hello", "id": 1, "versions": [1], "client": "x"})
    for i in range(1000):
        conn.send({"t": "ping", "id": 2 + i})
    pongs, fatal = 0, None
    while (reply := await conn.recv()) is not None:
        if reply["t"] == "ok":
            pongs += 1
        elif reply.get("id") is None:
            fatal = reply["code"]
    conn.close()
    assert fatal == ErrorCode.RATE_LIMITED and pongs < 16
    figures.add(
        "1,000 pings pipelined before login",
        f"{pongs} answered, then the connection closed with `{fatal}` "
        "(before the fix: every ping answered, two such loops kept a core busy)",
    )
