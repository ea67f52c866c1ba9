"""Login limits under attack: they cost bounded memory and never lock out the real user."""

from __future__ import annotations

import asyncio

from hushwire.common.errors import ErrorCode
from tests.support import WAIT, RawClient, add_users, rss_kib

HELLO = {"t": "hello", "id": 1, "versions": [1], "client": "flood"}


async def _login_flood(port: int, attempts: int, name_bytes: int) -> dict[str, int]:
    """`attempts` logins with distinct junk names of `name_bytes`, reconnecting whenever
    the relay closes the connection; returns the reply codes seen."""
    codes: dict[str, int] = {}
    sent = 0
    while sent < attempts:
        conn = await RawClient.connect(port)
        if await conn.request(HELLO) is None:
            conn.close()
            continue
        while sent < attempts:
            name = f"{sent:08d}" + "x" * (name_bytes - 8)
            reply = await conn.request({"t": "login", "id": 2 + sent, "user": name, "token": "t"})
            sent += 1
            if reply is None:
                break
            codes[reply.get("code", reply["t"])] = codes.get(reply.get("code", reply["t"]), 0) + 1
            if reply.get("id") is None:
                break  # a fatal error: the relay is closing this connection
        conn.close()
    return codes


async def test_login_flood_with_huge_junk_names_keeps_memory_flat(tmp_path, daemons, figures):
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice", "bob"))
    relay = await daemons(db, "--handshake-timeout", "60")
    before = rss_kib(relay.proc.pid)
    attempts = 3000
    codes = await _login_flood(relay.port, attempts, 60_000)
    after = rss_kib(relay.proc.pid)
    assert sum(codes.values()) == attempts
    # Before the fix every attempt left its 60 KB name in two limiters: ~350 MiB here.
    assert after - before < 40 * 1024, (before, after, codes)
    alice = await relay.login("alice", tokens["alice"])  # the relay still serves
    await alice.close()
    figures.add(
        f"{attempts} logins with distinct 60 KB junk user names, reconnecting when closed",
        f"relay RSS {before // 1024} -> {after // 1024} MiB (before the fix: +~66 KB per "
        f"attempt, 47 MiB -> 1.6 GiB at 25,000); replies {codes}",
    )


async def _login(port: int, source: str, user: str, token: str) -> dict | None:
    conn = await RawClient.connect(port, source)
    try:
        await conn.request(HELLO)
        return await conn.request({"t": "login", "id": 2, "user": user, "token": token})
    finally:
        conn.close()


async def test_wrong_tokens_from_elsewhere_never_lock_out_the_real_user(relay_factory, figures):
    relay = await relay_factory(users=("alice", "carol"))
    attacker = "127.0.9.1"  # another /24 than the victim's 127.0.0.1
    guesses = 0
    for _round in range(3):  # a burst of guesses, then more as the budget allows
        for _ in range(8):
            reply = await _login(relay.port, attacker, "carol", "hw_wrong")
            guesses += 1
            assert reply is not None and reply["t"] == "error"
            assert reply["code"] in (ErrorCode.AUTH_FAILED, ErrorCode.RATE_LIMITED)
        # Carol, from her own network, logs in at once, every time.
        ok = await _login(relay.port, "127.0.0.1", "carol", relay.tokens["carol"])
        assert ok is not None and ok["t"] == "ok", ok
    # The attacker's network is refused unchecked for carol ...
    reply = await _login(relay.port, attacker, "carol", relay.tokens["carol"])
    assert reply is not None and reply["code"] == ErrorCode.RATE_LIMITED
    # ... and the same /24 counts as one (127.0.9.77 is not a fresh budget) ...
    reply = await _login(relay.port, "127.0.9.77", "carol", "hw_wrong")
    assert reply is not None and reply["code"] == ErrorCode.RATE_LIMITED
    # ... but not for another user: alice from the attacker's network is unaffected.
    ok = await _login(relay.port, attacker, "alice", relay.tokens["alice"])
    assert ok is not None and ok["t"] == "ok", ok
    figures.add(
        f"{guesses} wrong tokens for carol from another /24, interleaved with carol's logins",
        "carol's correct logins from her network: 3 of 3 accepted at once; the attacker's "
        "/24 refused unchecked for carol after 5 (before the fix: carol refused too)",
    )


async def test_invalid_names_are_not_counted_nor_echoed(relay_factory):
    relay = await relay_factory(users=("alice",))
    conn = await RawClient.connect(relay.port)
    await conn.request(HELLO)
    for i in range(12):
        reply = await conn.request({"t": "login", "id": 2 + i, "user": "Z" * 20_000, "token": "x"})
        assert reply is not None and reply["code"] == ErrorCode.AUTH_FAILED
        assert len(reply["message"]) < 200
    conn.close()
    assert len(relay.server.relay._login_failures) == 0
    ok = await asyncio.wait_for(
        _login(relay.port, "127.0.0.1", "alice", relay.tokens["alice"]), WAIT
    )
    assert ok is not None and ok["t"] == "ok"
