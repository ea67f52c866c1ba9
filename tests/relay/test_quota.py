"""Mailbox quotas in the store: shares per sender, bytes, release on ack and purge."""

from __future__ import annotations

from pathlib import Path

import pytest

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.relay.store import DiskGuard, QuotaLimits, Store

NOW = 1_700_000_000
LIMITS = QuotaLimits(envelopes=10, bytes=1000, sender_envelopes=4, sender_bytes=400)


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "relay.db", quota=LIMITS)
    for name in ("dave", "mallory", "alice"):
        await s.add_user(name, b"h" * 32, b"s" * 16, now=NOW)
    yield s
    await s.close()


async def _full(coro) -> RequestError:
    with pytest.raises(RequestError) as exc:
        await coro
    assert exc.value.code == ErrorCode.MAILBOX_FULL
    return exc.value


async def test_a_sender_fills_only_its_share_and_acks_give_it_back(store: Store) -> None:
    mids = [(await store.enqueue("mallory", ["dave"], b"x", now=NOW))[0] for _ in range(4)]
    err = await _full(store.enqueue("mallory", ["dave"], b"x", now=NOW))
    assert "your share" in err.message
    await store.enqueue("alice", ["dave"], b"y", now=NOW)  # others still get through
    assert await store.ack("dave", mids[:2]) == 2
    await store.enqueue("mallory", ["dave"], b"x", now=NOW)  # the share is free again


async def test_bytes_count_per_sender_and_per_mailbox(store: Store) -> None:
    await store.enqueue("mallory", ["dave"], b"m" * 400, now=NOW)
    await _full(store.enqueue("mallory", ["dave"], b"m", now=NOW))
    await store.enqueue("alice", ["dave"], b"a" * 400, now=NOW)
    await store.add_user("carol", b"h" * 32, b"s" * 16, now=NOW)
    err = await _full(store.enqueue("carol", ["dave"], b"c" * 201, now=NOW))  # 1001 > 1000
    assert "the mailbox of dave is full" in err.message


async def test_usage_survives_a_reopen_and_purge_releases_it(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    async with await Store.open(db, quota=LIMITS) as s:
        for name in ("dave", "mallory"):
            await s.add_user(name, b"h" * 32, b"s" * 16, now=NOW)
        for _ in range(4):
            await s.enqueue("mallory", ["dave"], b"x" * 10, now=NOW)
    async with await Store.open(db, quota=LIMITS) as s:
        await _full(s.enqueue("mallory", ["dave"], b"x", now=NOW + 10))  # loaded from the db
        assert await s.purge(older_than=NOW + 1) == 4
        await s.enqueue("mallory", ["dave"], b"x", now=NOW + 10)


def test_disk_guard_checks_at_most_once_a_second(tmp_path: Path) -> None:
    free = [10**9]
    calls = []

    def measure(path: Path) -> int:
        calls.append(path)
        return free[0]

    guard = DiskGuard(tmp_path / "relay.db", 10**6, free=measure)
    guard.check(100.0)
    free[0] = 10
    guard.check(100.5)  # not measured again yet
    assert len(calls) == 1
    with pytest.raises(RequestError) as exc:
        guard.check(101.0)
    assert exc.value.code == ErrorCode.STORAGE_FULL
    DiskGuard(tmp_path / "relay.db", 0, free=measure).check(0.0)  # 0: never checked
    assert len(calls) == 2


async def test_a_fan_out_counts_each_device_envelope_by_its_own_bytes(store: Store) -> None:
    """send_devices queues one body per device: each counts its own size, and an ack gives
    back exactly that (it once counted the number of bodies, so bytes were never limited)."""
    await store.enqueue_each("mallory", ["dave", "alice"], [b"m" * 300, b"m" * 10], now=NOW)
    await store.enqueue_each("mallory", ["dave"], [b"m" * 100], now=NOW)  # 400 of 400
    err = await _full(store.enqueue_each("mallory", ["dave", "alice"], [b"m", b"m"], now=NOW))
    assert "your share of the mailbox of dave" in err.message
    first = (await store.pending("dave"))[0]
    assert len(first.body) == 300 and await store.ack("dave", [first.mid]) == 1
    await store.enqueue_each("mallory", ["dave"], [b"m" * 300], now=NOW)  # exactly 300 back
    await _full(store.enqueue_each("mallory", ["dave"], [b"m"], now=NOW))
