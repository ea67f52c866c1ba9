"""The relay holds thousands of authenticated idle TLS connections and still delivers."""

from __future__ import annotations

import asyncio
import resource
import time

from hushwire.common.messages import Ack, Deliver, Ping, Send
from hushwire.relay.store import Store
from hushwire.relay.tokens import hash_token, new_salt, new_token
from tests.support import WAIT, rss_kib


async def test_thousands_of_idle_connections(tmp_path, daemons, figures, pytestconfig):
    n = pytestconfig.getoption("--connections")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n * 2 + 1000), hard))
    db = tmp_path / "relay.db"
    names = [f"u{i}" for i in range(n)] + ["alice", "bob"]
    salt = new_salt()
    token = new_token()  # one token for all: only the hashing cost matters here
    async with await Store.open(db) as store:
        for name in names:
            await store.add_user(name, hash_token(token, salt), salt, now=0)
    relay = await daemons(db, "--max-connections", str(n + 100))
    rss_before = rss_kib(relay.proc.pid)
    sem = asyncio.Semaphore(64)

    async def connect(name: str):
        async with sem:
            return await relay.login(name, token)

    t0 = time.perf_counter()
    conns = await asyncio.gather(*[connect(f"u{i}") for i in range(n)])
    elapsed = time.perf_counter() - t0
    await asyncio.gather(*[c.request(Ping) for c in conns[:: max(1, n // 200)]])
    rss_after = rss_kib(relay.proc.pid)
    per_conn = (rss_after - rss_before) / n

    alice, bob = await relay.login("alice", token), await relay.login("bob", token)
    await alice.request(Send, to=("bob",), body=b"still here")
    while True:
        push = await asyncio.wait_for(bob.pushes.get(), WAIT)
        if isinstance(push, Deliver):
            break
    assert push.body == b"still here"
    await bob.request(Ack, mids=(push.mid,))
    assert not any(c.is_closed for c in conns)
    figures.add(
        f"{n} authenticated idle TLS connections (logged in in {elapsed:.1f} s, "
        f"{n / elapsed:.0f}/s, 64 at a time)",
        f"all held; relay RSS {rss_before // 1024} -> {rss_after // 1024} MiB, "
        f"{per_conn:.1f} KiB per connection; alice->bob still delivered",
    )
    await asyncio.gather(*[c.close() for c in conns])
    assert await relay.stop() == 0
