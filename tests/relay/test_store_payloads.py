"""Group payloads in the store, on SQLite and PostgreSQL (migration 0006): written once
with the rows that name them, in the same group commit, and released with the last of
those rows however it goes (ack, ack before the commit, purge, device or user removal)."""

from __future__ import annotations

import pytest

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.relay.store import QuotaLimits, Store
from tests.relay.test_store import one_relay_only
from tests.relay.test_store_devices import _signed_lists


async def _counts(store: Store) -> tuple[int, int, int]:
    s = await store.stats()
    return s["queued"], s["payloads"], s["payload_bytes"]


@one_relay_only
async def test_rows_acked_before_the_commit_are_not_counted_as_references(store_target):
    async with await Store.open(store_target) as store:
        for name in ("alice", "bob", "carol", "dave"):
            await store.add_user(name, b"h" * 32, b"s" * 16, now=1)
        # Warm the id cache so the ack below runs before the commit.
        await store.enqueue_each("alice", ["bob", "carol", "dave"], [b"w"] * 3, now=1)
        await store.ack("bob", [e.mid for e in await store.pending("bob")])
        await store.ack("carol", [e.mid for e in await store.pending("carol")])
        await store.ack("dave", [e.mid for e in await store.pending("dave")])

        def ack_bob_at_once(mids: list[int]) -> None:
            assert store.ack_nowait("bob", mids[:1]) == 1  # elided: never written

        mids = await store.enqueue_each(
            "alice",
            ["bob", "carol", "dave"],
            [b"n1", b"n2", b"n3"],
            now=2,
            on_reserved=ack_bob_at_once,
            payload=b"P" * 100,
        )
        assert await _counts(store) == (2, 1, 100)
        assert await store.mailbox_count("carol") == 1
        assert [(e.body, e.payload) for e in await store.pending("carol")] == [(b"n2", b"P" * 100)]
        assert await store.ack("carol", mids[1:2]) == 1
        assert await _counts(store) == (1, 1, 100)
        assert await store.ack("dave", mids[2:]) == 1
        assert await _counts(store) == (0, 0, 0)
        # Every row acked before its commit: nothing written at all.
        mids = await store.enqueue_each(
            "alice",
            ["bob"],
            [b"n"],
            now=3,
            on_reserved=lambda m: store.ack_nowait("bob", m),
            payload=b"gone",
        )
        assert await _counts(store) == (0, 0, 0)


async def test_purge_and_removals_release_payloads(store_target):
    (_, s1), (_, s2) = _signed_lists(2)
    async with await Store.open(store_target) as store:
        for name in ("alice", "bob", "carol"):
            await store.add_user(name, b"h" * 32, b"s" * 16, now=1)
        await store.store_device_list("alice", 1, s1, removed=frozenset(), now=1)
        await store.add_device("alice", 2, 2, s2, token_hash=b"t" * 32, salt=b"u" * 16, now=1)
        to = ["alice", "alice/2", "carol"]
        await store.enqueue_each("bob", to, [b"a", b"b", b"c"], now=10, payload=b"old")
        await store.enqueue_each("bob", to, [b"a", b"b", b"c"], now=20, payload=b"new!")
        assert await _counts(store) == (6, 2, 7)
        # Usage counts each row's note and the payload it names.
        assert await store.mailbox_count("carol") == 2
        assert await store.purge(older_than=15) == 3
        assert await _counts(store) == (3, 1, 4)
        await store.remove_device("alice", 2)
        assert await _counts(store) == (2, 1, 4)
        await store.remove_user("carol")
        assert await _counts(store) == (1, 1, 4)
        await store.reset_devices("alice", keep=1)  # device 1 keeps its mailbox
        assert [e.payload for e in await store.pending("alice")] == [b"new!"]
        await store.remove_user("alice")
        assert await _counts(store) == (0, 0, 0)


async def test_quota_usage_counts_the_payload_for_every_recipient(store_target):
    """Each row counts its note and the payload it names (1,000 bytes here), in memory
    and when a store loads the usage back from the rows."""
    quota = QuotaLimits(bytes=2000)
    async with await Store.open(store_target, quota=quota) as store:
        for name in ("alice", "bob", "carol"):
            await store.add_user(name, b"h" * 32, b"s" * 16, now=1)
        await store.enqueue_each(
            "alice", ["bob", "carol"], [b"12345"] * 2, now=1, payload=bytes(995)
        )
    async with await Store.open(store_target, quota=quota) as store:
        await store.enqueue_each("alice", ["bob"], [b"12345"], now=2, payload=bytes(995))
        with pytest.raises(RequestError) as exc:
            await store.enqueue_each("alice", ["carol", "bob"], [b"x"] * 2, now=3, payload=b"p")
        assert exc.value.code == ErrorCode.MAILBOX_FULL and "bob" in exc.value.message
        assert await store.mailbox_count("carol") == 1  # all or nothing
        first = (await store.pending("bob"))[0].mid
        await store.ack("bob", [first])
        await store.enqueue_each("alice", ["bob"], [b"12345"], now=4, payload=bytes(995))
