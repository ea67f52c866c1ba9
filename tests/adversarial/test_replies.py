"""No reply can outgrow the frame limit: `who` pages, errors cap what they echo, and a
reply that would still be too large becomes a typed error instead of a wedged client."""

from __future__ import annotations

import asyncio
import dataclasses

from hushwire.common.errors import ErrorCode
from hushwire.common.messages import Who
from tests.support import WAIT, RawClient


async def test_who_with_more_users_than_one_frame_holds_is_paged(relay_factory, figures):
    # 32-character names at a 4 KiB frame limit: ~200 users overflow one `who` frame, as
    # ~2,900 did at the default 64 KiB.
    names = (*(f"user{i:04d}" + "x" * 24 for i in range(300)), "alice")
    relay = await relay_factory(users=names, max_frame=4096)
    alice = await relay.login("alice")
    users: list[str] = []
    after, pages = None, 0
    while True:
        reply = await asyncio.wait_for(alice.request(Who, after=after), WAIT)
        pages += 1
        users += [p.user for p in reply.users]
        if reply.next is None:
            break
        after = reply.next
    assert sorted(users) == sorted(names) and len(set(users)) == len(names)
    assert pages > 1
    figures.add(
        f"`who` on a relay with {len(names)} users of 32-character names, max_frame 4 KiB",
        f"{pages} pages, every user once (before the fix: the reply was never sent and "
        "every client hung at login)",
    )


async def test_errors_echo_little_of_hostile_input(relay_factory, figures):
    relay = await relay_factory(users=("alice",))
    conn = await RawClient.connect(relay.port)
    await conn.request({"t": "hello", "id": 1, "versions": [1], "client": "x"})
    await conn.request({"t": "login", "id": 2, "user": "alice", "token": relay.tokens["alice"]})
    # repr() of NUL is 4 characters: a 30,000-character name became a 120 KB error.
    name = "\x00" * 30_000
    fetch = await conn.request({"t": "fetch_bundle", "id": 3, "user": name})
    send = await conn.request({"t": "send", "id": 4, "to": [name], "body": b"x"})
    junk = await conn.request({"t": "\x00" * 30_000, "id": 5})
    for reply in (fetch, send, junk):
        assert reply is not None and reply["t"] == "error", reply
        assert len(reply["message"]) <= 500
    assert await conn.request({"t": "ping", "id": 6}) == {"t": "ok", "id": 6}
    conn.close()
    figures.add(
        "requests naming a 30,000-character user of NULs (and such a request type)",
        f"typed errors of at most {max(len(r['message']) for r in (fetch, send, junk))} "
        "characters, connection still answering (before: no reply, 'Fatal error on SSL')",
    )


async def test_any_reply_too_large_becomes_a_typed_error(relay_factory):
    relay = await relay_factory(users=("alice",))
    # Stand-in for any future reply that outgrows the limit: a hello carrying 200 KB.
    running = relay.server.relay
    running.group = dataclasses.replace(running.group, params_pem="P" * 200_000)
    conn = await RawClient.connect(relay.port)
    reply = await conn.request({"t": "hello", "id": 1, "versions": [1], "client": "x"})
    assert reply is not None and reply["id"] == 1
    assert reply["code"] == ErrorCode.REPLY_TOO_LARGE
    after = await conn.request({"t": "ping", "id": 2})  # still answering (out of order)
    assert after is not None and after["id"] == 2
    conn.close()
