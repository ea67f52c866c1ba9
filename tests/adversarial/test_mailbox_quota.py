"""One sender fills only its own share of a mailbox; a full disk is a typed refusal."""

from __future__ import annotations

import asyncio

import pytest

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.messages import Send

MIB = 1024 * 1024


async def _flood(conn, to: str, n: int, size: int) -> dict[str, int]:
    async def one(i: int) -> str:
        try:
            await conn.request(Send, to=(to,), body=bytes([i % 256]) * size)
        except RequestError as exc:
            return str(exc.code)
        return "ok"

    out: dict[str, int] = {}
    for code in await asyncio.gather(*[one(i) for i in range(n)]):
        out[code] = out.get(code, 0) + 1
    return out


async def test_one_sender_cannot_fill_a_mailbox_for_everyone(relay_factory, figures):
    relay = await relay_factory(
        users=("dave", "mallory", "alice", "bob", "carol"),
        max_mailbox=1000,
        max_mailbox_bytes=8 * MIB,
        max_per_sender=200,
        max_per_sender_bytes=1 * MIB,
        send_burst=100_000,
        send_rate=100_000,
    )
    mallory = await relay.login("mallory")
    flood = await _flood(mallory, "dave", 100, 60_000)  # 6 MB at an offline victim
    small = await _flood(mallory, "dave", 300, 10)  # then many small ones
    others = {}
    for name in ("alice", "bob", "carol"):
        conn = await relay.login(name)
        others[name] = await _flood(conn, "dave", 20, 1000)
    queued = await relay.server.relay.store.mailbox_count("dave")
    assert flood.get("ok", 0) <= 17 and flood.get(ErrorCode.MAILBOX_FULL, 0) >= 83, flood
    assert small.get("ok", 0) + flood.get("ok", 0) <= 200, small
    assert all(o == {"ok": 20} for o in others.values()), others
    figures.add(
        "mallory sends 100 envelopes of 60 KB, then 300 of 10 B, to offline dave; then "
        "alice, bob and carol send 20 each (share 200 envelopes / 1 MiB per sender)",
        f"mallory: {flood} then {small}; alice, bob, carol: 20 of 20 each; dave holds "
        f"{queued} (before: mallory filled the mailbox and everyone else got mailbox_full)",
    )


async def test_sends_are_refused_with_a_typed_error_when_the_disk_is_low(relay_factory):
    relay = await relay_factory(users=("alice", "bob"), min_free_disk=2**62)
    alice = await relay.login("alice")
    with pytest.raises(RequestError) as exc:
        await alice.request(Send, to=("bob",), body=b"x")
    assert exc.value.code == ErrorCode.STORAGE_FULL and exc.value.retry_after
    assert await relay.server.relay.store.mailbox_count("bob") == 0
