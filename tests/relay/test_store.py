"""Store: accounts, key directory, mailbox and group commit, on both backends: real
SQLite files and a real PostgreSQL server (`store_target`, tests/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import IdentityPublic, OneTimePrekey, SignedPrekey
from hushwire.relay import migrate as mg
from hushwire.relay.errors import SchemaOutdated, SchemaTooNew, StoreError, UnknownUser, UserExists
from hushwire.relay.store import MAX_ONE_TIME_PREKEYS, Store, UserEventKind
from hushwire.relay.store import mailbox as mailbox_module

NOW = 1_700_000_000


def ident(tag: int) -> IdentityPublic:
    return IdentityPublic("x25519", bytes([tag]) * 32, bytes([tag + 1]) * 32, bytes([tag]) * 64)


def otks(ids: range, tag: int = 7) -> list[OneTimePrekey]:
    return [OneTimePrekey(i, bytes([tag]) * 30 + i.to_bytes(2, "big")) for i in ids]


SPK = SignedPrekey(1, b"\x05" * 32, b"\x06" * 64)


Target = Path | str  # a SQLite file or a PostgreSQL URL


async def open_store(target: Target, **kw: object) -> Store:
    return await Store.open(target, **kw)  # type: ignore[arg-type]


async def other_process(target: Target, sqlite_sql: str, pg_sql: str | None = None) -> None:
    """Run statements on a connection of their own, as the admin CLI would."""
    if isinstance(target, Path):
        other = sqlite3.connect(target)
        other.execute("PRAGMA foreign_keys = ON")
        other.executescript(sqlite_sql)
        other.commit()
        other.close()
        return
    conn = await asyncpg.connect(target)
    try:
        await conn.execute(pg_sql or sqlite_sql)
    finally:
        await conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite file, for what only SQLite has (pragmas, WAL, locks, file migrations)."""
    return tmp_path / "users.db"


@pytest.fixture
async def store(store_target: Target):
    s = await open_store(store_target)
    for name in ("alice", "bob", "carol"):
        await s.add_user(name, b"h" * 32, b"s" * 16, now=NOW)
    yield s
    await s.close()


# ---------------------------------------------------------------- users


async def test_add_get_list_users(store: Store) -> None:
    rec = await store.get_user("alice")
    assert rec is not None
    assert (rec.name, rec.token_hash, rec.token_salt) == ("alice", b"h" * 32, b"s" * 16)
    assert not rec.disabled and rec.created_at == NOW and rec.last_login_at is None
    assert await store.get_user("nobody") is None
    assert [u.name for u in await store.list_users()] == ["alice", "bob", "carol"]
    assert await store.user_exists("bob") and not await store.user_exists("dave")


async def test_who_pages_come_from_the_database_in_byte_order(store: Store) -> None:
    for name in ("dave", "al", "alice.b", "zed"):
        await store.add_user(name, b"h" * 32, b"s" * 16, now=NOW)
    await store.set_disabled("carol", True, now=NOW)
    assert await store.page_users(None, 3) == ["al", "alice", "alice.b"]
    assert await store.page_users("alice.b", 3) == ["bob", "dave", "zed"]  # no carol
    assert await store.page_users("zed", 3) == []
    assert await store.page_users("b", 1) == ["bob"]  # `after` need not be a user


async def test_duplicate_and_invalid_names_are_refused(store: Store) -> None:
    with pytest.raises(UserExists):
        await store.add_user("alice", b"x", b"y", now=NOW)
    with pytest.raises(RequestError) as info:
        await store.add_user("Bad Name", b"x", b"y", now=NOW)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert len(await store.list_users()) == 3


async def test_disable_enable_and_token_reset(store: Store) -> None:
    await store.set_disabled("bob", True, now=NOW + 1)
    assert (await store.get_user("bob")).disabled  # type: ignore[union-attr]
    await store.set_disabled("bob", False, now=NOW + 2)
    assert not (await store.get_user("bob")).disabled  # type: ignore[union-attr]
    await store.set_token("bob", b"n" * 32, b"t" * 16, now=NOW + 3)
    rec = await store.get_user("bob")
    assert rec is not None and (rec.token_hash, rec.token_salt) == (b"n" * 32, b"t" * 16)
    with pytest.raises(UnknownUser):
        await store.set_disabled("dave", True, now=NOW)
    with pytest.raises(UnknownUser):
        await store.set_token("dave", b"n", b"t", now=NOW)
    with pytest.raises(UnknownUser):
        await store.remove_user("dave")


async def test_record_login_is_persisted(store_target: Target, store: Store) -> None:
    await store.record_login("alice", now=NOW + 50)
    await store.close()
    s2 = await open_store(store_target)
    try:
        assert (await s2.get_user("alice")).last_login_at == NOW + 50  # type: ignore[union-attr]
    finally:
        await s2.close()


async def test_remove_user_takes_keys_watchers_and_mailbox(store: Store) -> None:
    await store.publish_keys(
        "bob", identity=ident(1), signed_prekey=SPK, one_time=otks(range(3)), now=NOW
    )
    await store.publish_keys("alice", identity=ident(9), signed_prekey=SPK, one_time=[], now=NOW)
    await store.fetch_bundle("bob", "alice")
    await store.enqueue("alice", ["bob"], b"hi", now=NOW)
    await store.remove_user("bob")
    assert await store.get_user("bob") is None
    assert await store.fetch_bundle("alice", "bob") is None
    assert await store.pending("bob") == []
    assert await store.mailbox_count("bob") == 0
    stats = await store.stats()
    assert stats["users"] == 2 and stats["queued"] == 0
    # bob's watch on alice went with him: a new alice identity notifies nobody.
    res = await store.publish_keys(
        "alice", identity=ident(20), signed_prekey=None, one_time=[], now=NOW
    )
    assert res.identity_changed and res.watchers == []


async def test_stats(store: Store) -> None:
    await store.set_disabled("carol", True, now=NOW)
    await store.enqueue("alice", ["bob", "carol"], b"x" * 100, now=NOW)
    stats = await store.stats()
    assert stats["users"] == 3 and stats["disabled"] == 1 and stats["queued"] == 2
    assert stats["db_bytes"] > 4096


async def test_user_events_log_every_account_change(store: Store) -> None:
    start = await store.last_user_event()
    await store.set_disabled("bob", True, now=NOW)
    await store.set_disabled("bob", True, now=NOW)  # no change, no event
    await store.set_disabled("bob", False, now=NOW)
    await store.set_token("carol", b"n", b"t", now=NOW)
    await store.record_login("alice", now=NOW)  # not an account change
    await store.remove_user("carol")
    await store.add_user("dave", b"h", b"s", now=NOW)
    events = await store.user_events(start)
    assert [(e.name, e.kind) for e in events] == [
        ("bob", UserEventKind.DISABLED),
        ("bob", UserEventKind.ENABLED),
        ("carol", UserEventKind.TOKEN_RESET),
        ("carol", UserEventKind.REMOVED),
        ("dave", UserEventKind.ADDED),
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert await store.user_events(events[-1].seq) == []
    assert await store.last_user_event() == events[-1].seq


async def test_user_events_see_changes_made_by_another_process(
    store_target: Target, store: Store
) -> None:
    start = await store.last_user_event()
    await other_process(
        store_target,
        "UPDATE users SET disabled = 1 WHERE name = 'alice'",
        "UPDATE users SET disabled = TRUE WHERE name = 'alice'",
    )
    assert [(e.name, e.kind) for e in await store.user_events(start)] == [
        ("alice", UserEventKind.DISABLED)
    ]


# ---------------------------------------------------------------- key directory


async def test_prekeys_before_identity_are_refused(store: Store) -> None:
    with pytest.raises(RequestError) as info:
        await store.publish_keys("alice", identity=None, signed_prekey=SPK, one_time=[], now=NOW)
    assert info.value.code is ErrorCode.NO_KEYS
    with pytest.raises(RequestError) as info:
        await store.publish_keys(
            "alice", identity=None, signed_prekey=None, one_time=otks(range(2)), now=NOW
        )
    assert info.value.code is ErrorCode.NO_KEYS
    with pytest.raises(RequestError) as info:
        await store.publish_keys(
            "dave", identity=ident(1), signed_prekey=None, one_time=[], now=NOW
        )
    assert info.value.code is ErrorCode.UNKNOWN_USER


async def test_publish_and_fetch_consumes_lowest_one_time_prekey(store: Store) -> None:
    res = await store.publish_keys(
        "alice", identity=ident(1), signed_prekey=SPK, one_time=otks(range(5, 8)), now=NOW
    )
    assert (res.identity_changed, res.watchers, res.prekeys_left) == (False, [], 3)
    b1 = await store.fetch_bundle("bob", "alice")
    assert b1 is not None
    assert b1.user == "alice" and b1.identity == ident(1) and b1.signed_prekey == SPK
    assert b1.one_time_prekey == otks(range(5, 6))[0]
    assert b1.version == 1
    assert await store.prekey_count("alice") == 2
    await store.fetch_bundle("bob", "alice")
    await store.fetch_bundle("bob", "alice")
    empty = await store.fetch_bundle("bob", "alice")
    assert empty is not None and empty.one_time_prekey is None
    assert await store.prekey_count("alice") == 0
    assert await store.prekey_count("nobody") == 0


async def test_fetch_without_complete_bundle_is_none(store: Store) -> None:
    assert await store.fetch_bundle("bob", "alice") is None
    assert await store.fetch_bundle("bob", "nobody") is None
    await store.publish_keys(
        "alice", identity=ident(1), signed_prekey=None, one_time=otks(range(2)), now=NOW
    )
    assert await store.fetch_bundle("bob", "alice") is None
    assert await store.prekey_count("alice") == 2  # nothing consumed by a failed fetch


async def test_concurrent_fetches_never_share_a_one_time_prekey(store: Store) -> None:
    await store.publish_keys(
        "alice", identity=ident(1), signed_prekey=SPK, one_time=otks(range(40)), now=NOW
    )
    bundles = await asyncio.gather(*(store.fetch_bundle("bob", "alice") for _ in range(50)))
    ids = [b.one_time_prekey.id for b in bundles if b and b.one_time_prekey]
    assert sorted(ids) == list(range(40))
    assert sum(1 for b in bundles if b and b.one_time_prekey is None) == 10


async def test_duplicate_one_time_ids_replace(store: Store) -> None:
    await store.publish_keys(
        "alice", identity=ident(1), signed_prekey=SPK, one_time=otks(range(3), tag=1), now=NOW
    )
    res = await store.publish_keys(
        "alice", identity=None, signed_prekey=None, one_time=otks(range(2, 4), tag=2), now=NOW
    )
    assert res.prekeys_left == 4
    got = [(await store.fetch_bundle("bob", "alice")).one_time_prekey for _ in range(4)]  # type: ignore[union-attr]
    assert got[2] == otks(range(2, 3), tag=2)[0]


async def test_one_time_prekey_cap_rolls_back_whole_upload(store: Store) -> None:
    await store.publish_keys(
        "alice",
        identity=ident(1),
        signed_prekey=SPK,
        one_time=otks(range(MAX_ONE_TIME_PREKEYS - 1)),
        now=NOW,
    )
    with pytest.raises(RequestError) as info:
        await store.publish_keys(
            "alice",
            identity=None,
            signed_prekey=SignedPrekey(2, b"k" * 32, b"s" * 64),
            one_time=[OneTimePrekey(100_000 + i, b"k") for i in range(2)],
            now=NOW,
        )
    assert info.value.code is ErrorCode.BAD_KEYS
    assert await store.prekey_count("alice") == MAX_ONE_TIME_PREKEYS - 1
    bundle = await store.fetch_bundle("bob", "alice")
    assert bundle is not None and bundle.signed_prekey == SPK  # the new SPK was rolled back
    with pytest.raises(RequestError) as info:
        await store.publish_keys(
            "bob",
            identity=ident(1),
            signed_prekey=None,
            one_time=otks(range(MAX_ONE_TIME_PREKEYS + 1)),
            now=NOW,
        )
    assert info.value.code is ErrorCode.BAD_KEYS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"identity": IdentityPublic("x25519", b"", b"d" * 32, b"s" * 64)},
        {"identity": IdentityPublic("x25519", b"k" * 5000, b"d" * 32, b"s" * 64)},
        {"identity": IdentityPublic("", b"k" * 32, b"d" * 32, b"s" * 64)},
        {"signed_prekey": SignedPrekey(-1, b"k" * 32, b"s" * 64)},
        {"signed_prekey": SignedPrekey(2**31, b"k" * 32, b"s" * 64)},
        {"one_time": [OneTimePrekey(True, b"k")]},  # type: ignore[arg-type]
        {"one_time": [OneTimePrekey(1, "text")]},  # type: ignore[arg-type]
    ],
)
async def test_malformed_keys_are_bad_keys(store: Store, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"identity": ident(1), "signed_prekey": SPK, "one_time": []}
    args.update(kwargs)
    with pytest.raises(RequestError) as info:
        await store.publish_keys("alice", now=NOW, **args)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.BAD_KEYS
    assert await store.fetch_bundle("bob", "alice") is None


async def test_identity_change_returns_watchers_and_clears_old_prekeys(store: Store) -> None:
    await store.publish_keys(
        "alice", identity=ident(1), signed_prekey=SPK, one_time=otks(range(5)), now=NOW
    )
    await store.fetch_bundle("bob", "alice")
    await store.fetch_bundle("bob", "alice")
    await store.fetch_bundle("alice", "alice")  # fetching yourself does not make you a watcher
    same = await store.publish_keys(
        "alice", identity=ident(1), signed_prekey=None, one_time=[], now=NOW
    )
    assert not same.identity_changed and same.watchers == [] and same.prekeys_left == 2
    new = await store.publish_keys(
        "alice", identity=ident(50), signed_prekey=None, one_time=[], now=NOW
    )
    assert new.identity_changed and new.watchers == ["bob"] and new.prekeys_left == 0
    # Old signed prekey is gone with the old identity: no bundle until a new one arrives.
    assert await store.fetch_bundle("carol", "alice") is None
    await store.publish_keys("alice", identity=None, signed_prekey=SPK, one_time=[], now=NOW)
    bundle = await store.fetch_bundle("carol", "alice")
    assert bundle is not None and bundle.identity == ident(50)
    again = await store.publish_keys(
        "alice", identity=ident(60), signed_prekey=None, one_time=[], now=NOW
    )
    assert again.watchers == ["bob", "carol"]


async def test_group_change_alone_is_an_identity_change(store: Store) -> None:
    await store.publish_keys("alice", identity=ident(1), signed_prekey=SPK, one_time=[], now=NOW)
    await store.fetch_bundle("bob", "alice")
    i = ident(1)
    res = await store.publish_keys(
        "alice",
        identity=IdentityPublic("ffdhe3072", i.sign_key, i.dh_key, i.dh_sig),
        signed_prekey=None,
        one_time=[],
        now=NOW,
    )
    assert res.identity_changed and res.watchers == ["bob"]


# ---------------------------------------------------------------- mailbox


async def test_pending_in_order_and_after(store: Store) -> None:
    mids = [(await store.enqueue("alice", ["bob"], bytes([i]), now=NOW + i))[0] for i in range(5)]
    assert mids == sorted(mids) and len(set(mids)) == 5
    got = await store.pending("bob")
    assert [e.mid for e in got] == mids
    assert [e.body for e in got] == [bytes([i]) for i in range(5)]
    assert got[0].sender == "alice" and got[3].created_at == NOW + 3
    assert [e.mid for e in await store.pending("bob", after=mids[1], limit=2)] == mids[2:4]
    assert await store.pending("carol") == []
    assert await store.pending("nobody") == []


async def test_multi_recipient_send_gets_one_mid_each(store: Store) -> None:
    mids = await store.enqueue("alice", ["bob", "carol"], b"group", now=NOW)
    assert len(mids) == 2 and mids[0] != mids[1]
    assert [e.mid for e in await store.pending("bob")] == [mids[0]]
    assert [e.mid for e in await store.pending("carol")] == [mids[1]]


async def test_ack_deletes_only_own_rows(store: Store) -> None:
    to_bob = await store.enqueue("alice", ["bob"], b"1", now=NOW)
    to_carol = await store.enqueue("alice", ["carol"], b"2", now=NOW)
    assert await store.ack("bob", to_carol) == 0
    assert [e.mid for e in await store.pending("carol")] == to_carol
    assert await store.ack("bob", [*to_bob, *to_bob, 999_999, -1, 2**70]) == 1
    assert await store.pending("bob") == []
    assert await store.ack("bob", to_bob) == 0
    assert await store.ack("nobody", to_carol) == 0
    assert await store.ack("carol", []) == 0
    assert await store.mailbox_count("bob") == 0
    assert await store.mailbox_count("carol") == 1


async def test_unknown_recipient_refuses_whole_send(store: Store) -> None:
    with pytest.raises(RequestError) as info:
        await store.enqueue("alice", ["bob", "mallory"], b"x", now=NOW)
    assert info.value.code is ErrorCode.UNKNOWN_USER
    assert "mallory" in info.value.message
    assert await store.pending("bob") == []
    assert await store.mailbox_count("bob") == 0


@pytest.mark.parametrize("recipients", [[], ["bob", "bob"]])
async def test_bad_recipient_lists(store: Store, recipients: list[str]) -> None:
    with pytest.raises(RequestError) as info:
        await store.enqueue("alice", recipients, b"x", now=NOW)
    assert info.value.code is ErrorCode.BAD_REQUEST


async def test_mailbox_limit_is_all_or_nothing(store_target: Target) -> None:
    s = await open_store(store_target, max_mailbox=3)
    try:
        for name in ("alice", "bob", "carol"):
            await s.add_user(name, b"h", b"s", now=NOW)
        await asyncio.gather(*(s.enqueue("alice", ["bob"], b"x", now=NOW) for _ in range(3)))
        with pytest.raises(RequestError) as info:
            await s.enqueue("alice", ["carol", "bob"], b"y", now=NOW)
        assert info.value.code is ErrorCode.MAILBOX_FULL
        assert "bob" in info.value.message
        assert await s.pending("carol") == []
        assert await s.mailbox_count("bob") == 3
        first = (await s.pending("bob"))[0].mid
        assert await s.ack("bob", [first]) == 1
        await s.enqueue("alice", ["carol", "bob"], b"y", now=NOW)
        assert await s.mailbox_count("bob") == 3
    finally:
        await s.close()


async def test_mailbox_count_survives_restart(store_target: Target, store: Store) -> None:
    await store.enqueue("alice", ["bob"], b"1", now=NOW)
    await store.enqueue("alice", ["bob"], b"2", now=NOW)
    await store.close()
    s = await open_store(store_target, max_mailbox=2)
    try:
        with pytest.raises(RequestError) as info:
            await s.enqueue("alice", ["bob"], b"3", now=NOW)
        assert info.value.code is ErrorCode.MAILBOX_FULL
    finally:
        await s.close()


async def test_purge_deletes_old_envelopes_and_frees_room(store: Store) -> None:
    await store.enqueue("alice", ["bob"], b"old", now=NOW - 100)
    await store.enqueue("alice", ["bob", "carol"], b"older", now=NOW - 200)
    keep = await store.enqueue("alice", ["bob"], b"new", now=NOW)
    assert await store.purge(older_than=NOW - 50) == 3
    assert [e.mid for e in await store.pending("bob")] == keep
    assert await store.mailbox_count("bob") == 1
    assert await store.mailbox_count("carol") == 0
    assert await store.purge(older_than=NOW - 50) == 0


async def test_group_commit_batches_concurrent_enqueues(store_target: Target, store: Store) -> None:
    before = store.group_commits
    results = await asyncio.gather(
        *(store.enqueue("alice", ["bob"], i.to_bytes(2, "big"), now=NOW) for i in range(500))
    )
    commits = store.group_commits - before
    assert 1 <= commits <= 5, commits
    mids = [m for r in results for m in r]
    assert len(set(mids)) == 500
    await store.close()
    s = await open_store(store_target)
    try:
        got = await s.pending("bob", limit=1000)
        assert len(got) == 500
        assert sorted(int.from_bytes(e.body, "big") for e in got) == list(range(500))
        assert [e.mid for e in got] == sorted(mids)
    finally:
        await s.close()


async def test_group_commit_batches_acks(store: Store) -> None:
    mids = [
        m
        for r in await asyncio.gather(
            *(store.enqueue("alice", ["bob"], b"x", now=NOW) for _ in range(200))
        )
        for m in r
    ]
    before = store.group_commits
    counts = await asyncio.gather(*(store.ack("bob", [m]) for m in mids))
    assert counts == [1] * 200
    assert store.group_commits - before <= 3
    assert await store.pending("bob") == []


async def test_mids_are_never_reused_after_ack_and_restart(
    store_target: Target, store: Store
) -> None:
    mids = await store.enqueue("alice", ["bob"], b"x", now=NOW)
    await store.ack("bob", mids)
    await store.close()
    s = await open_store(store_target)
    try:
        again = await s.enqueue("alice", ["bob"], b"y", now=NOW)
        assert again[0] > mids[0]
    finally:
        await s.close()


async def test_close_flushes_pending_enqueues(store_target: Target, store: Store) -> None:
    await store.enqueue("alice", ["carol"], b"warm", now=NOW)  # carol's id is cached
    tasks = [
        asyncio.create_task(store.enqueue("alice", ["carol"], b"z", now=NOW)) for _ in range(20)
    ]
    await asyncio.sleep(0)  # let every task queue its work
    await store.close()
    await store.close()  # idempotent
    mids = [m for t in tasks for m in t.result()]
    with pytest.raises(StoreError):
        await store.enqueue("alice", ["carol"], b"late", now=NOW)
    with pytest.raises(StoreError):
        await store.get_user("alice")
    s = await open_store(store_target)
    try:
        assert [e.mid for e in await s.pending("carol")][1:] == sorted(mids)
    finally:
        await s.close()


async def test_failed_batch_fails_every_waiter(db: Path) -> None:
    s = await open_store(db, busy_timeout_ms=50)
    try:
        for name in ("alice", "bob"):
            await s.add_user(name, b"h", b"s", now=NOW)
        await s.enqueue("alice", ["bob"], b"warm", now=NOW)  # ids and counts cached
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: commits fail
        try:
            results = await asyncio.gather(
                *(s.enqueue("alice", ["bob"], b"lost", now=NOW) for _ in range(10)),
                s.ack("bob", [1]),
                return_exceptions=True,
            )
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert all(isinstance(r, StoreError) for r in results), results
        assert await s.mailbox_count("bob") == 1  # reservations released
        ok = await s.enqueue("alice", ["bob"], b"after", now=NOW)
        assert [e.body for e in await s.pending("bob")] == [b"warm", b"after"]
        assert (await s.pending("bob"))[-1].mid == ok[0]
    finally:
        await s.close()


async def test_recipient_removed_by_another_process_fails_only_that_send(
    store_target: Target, store: Store
) -> None:
    await store.enqueue("alice", ["bob", "carol"], b"warm", now=NOW)  # ids cached
    await other_process(store_target, "DELETE FROM users WHERE name = 'carol'")
    before = store.group_commits
    ok, gone = await asyncio.gather(
        store.enqueue("alice", ["bob"], b"fine", now=NOW),
        store.enqueue("alice", ["carol"], b"lost", now=NOW),
        return_exceptions=True,
    )
    assert store.group_commits - before == 1
    assert isinstance(ok, list)
    assert isinstance(gone, RequestError) and gone.code is ErrorCode.UNKNOWN_USER
    assert [e.body for e in await store.pending("bob")] == [b"warm", b"fine"]
    with pytest.raises(RequestError):  # the stale cache entry was dropped
        await store.enqueue("alice", ["carol"], b"again", now=NOW)


def enqueue_nowait(
    store: Store, recipients: list[str], body: bytes, reserved: list[int]
) -> asyncio.Future[list[int]]:
    """alice's send through the relay's hot path; the future settles with its answer."""
    fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

    def done(mids: list[int] | None, exc: BaseException | None) -> None:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(mids or [])

    store.enqueue_nowait(
        "alice", recipients, body, now=NOW, on_done=done, on_reserved=reserved.extend
    )
    return fut


# Early push and elision need ids before the commit: a store one relay owns (SQLite).
# PostgreSQL numbers envelopes in the commit (several relays): nothing to elide.
one_relay_only = pytest.mark.parametrize("store_target", ["sqlite"], indirect=True)


async def test_a_shared_store_numbers_envelopes_in_the_commit(
    store_target: Target, store: Store
) -> None:
    """On PostgreSQL (several relays) ids exist only once committed: nothing is pushed
    early, and the ids answered are the rows committed; on SQLite they are reserved."""
    await store.enqueue("alice", ["bob", "carol"], b"warm", now=NOW)  # ids cached
    reserved: list[int] = []
    mids = await enqueue_nowait(store, ["bob", "carol"], b"two", reserved)
    assert reserved == ([] if isinstance(store_target, str) else mids)
    committed = [m for m, _ in await mailbox_rows(store_target)]
    assert committed[-2:] == mids and mids[0] < mids[1]


async def mailbox_rows(target: Target) -> list[tuple[int, str]]:
    """What is committed, read by a second connection (WAL included)."""
    sql = "SELECT m.id, u.name FROM mailbox m JOIN users u ON u.id = m.recipient_id ORDER BY m.id"
    if isinstance(target, str):
        conn = await asyncpg.connect(target)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    raw = sqlite3.connect(target)
    try:
        return raw.execute(sql).fetchall()
    finally:
        raw.close()


@one_relay_only
async def test_rows_acked_before_their_commit_are_never_written(
    store_target: Target, store: Store
) -> None:
    await store.enqueue("alice", ["bob"], b"warm", now=NOW)  # ids cached
    warm = await store.pending("bob")
    await store.ack("bob", [warm[0].mid])
    before = store.elided
    # Reserve and ack in one step, as the relay does when the recipient answers the early
    # push before the writer takes the batch.
    reserved: list[int] = []
    sent = enqueue_nowait(store, ["bob"], b"seen", reserved)
    (mid,) = reserved
    assert store.ack_nowait("bob", [mid]) == 1  # answered at once: nothing to delete
    assert sent.done() and sent.result() == [mid]  # the sender's ok needs no commit
    assert store.elided == before + 1
    after = await store.enqueue("alice", ["bob"], b"kept", now=NOW)  # waits for a commit
    assert await mailbox_rows(store_target) == [(after[0], "bob")]
    await store.close()
    s = await open_store(store_target)
    try:
        again = await s.enqueue("alice", ["carol"], b"new", now=NOW)
        # The elided id was never written, yet no later envelope may reuse it.
        assert again[0] > after[0] > mid
    finally:
        await s.close()


@one_relay_only
async def test_elided_id_stays_used_after_a_restart(
    store_target: Target, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the gap a restart leaves, the persisted sequence alone must cover the id.
    monkeypatch.setattr(mailbox_module, "MID_GAP", 0)
    await store.enqueue("alice", ["bob"], b"warm", now=NOW)
    (warm,) = await store.pending("bob")
    await store.ack("bob", [warm.mid])
    reserved: list[int] = []
    sent = enqueue_nowait(store, ["bob"], b"seen", reserved)
    (mid,) = reserved
    assert store.ack_nowait("bob", [mid]) == 1
    await store.close()  # the only batch since held nothing but the elided row
    assert sent.result() == [mid] and await mailbox_rows(store_target) == []
    s = await open_store(store_target)
    try:
        (again,) = await s.enqueue("alice", ["bob"], b"new", now=NOW)
        assert again > mid
    finally:
        await s.close()


@one_relay_only
async def test_partial_elision_writes_only_the_rows_not_acked(
    store_target: Target, store: Store
) -> None:
    await store.enqueue("alice", ["bob", "carol"], b"warm", now=NOW)
    for name in ("bob", "carol"):
        await store.ack(name, [e.mid for e in await store.pending(name)])
    reserved: list[int] = []
    sent = enqueue_nowait(store, ["bob", "carol"], b"two", reserved)
    to_bob, to_carol = reserved
    assert store.ack_nowait("bob", [to_bob]) == 1
    assert not sent.done()  # carol's copy still needs its commit
    assert await store.ack("bob", [to_carol]) == 0  # not his: nothing elided or deleted
    assert await sent == [to_bob, to_carol]
    assert await mailbox_rows(store_target) == [(to_carol, "carol")]
    assert await store.mailbox_count("bob") == 0
    assert await store.mailbox_count("carol") == 1


@one_relay_only
async def test_a_failing_callback_neither_stops_the_writer_nor_the_ack(
    store_target: Target, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await store.enqueue("alice", ["bob", "carol"], b"warm", now=NOW)

    def broken(mids: list[int] | None, exc: BaseException | None) -> None:
        raise RuntimeError("handler bug")

    committed: list[int] = []
    elided: list[int] = []
    with caplog.at_level(logging.ERROR, logger="hushwire.relay.store"):
        store.enqueue_nowait(
            "alice", ["bob"], b"a", now=NOW, on_done=broken, on_reserved=committed.extend
        )
        store.enqueue_nowait(
            "alice", ["carol"], b"b", now=NOW, on_done=broken, on_reserved=elided.extend
        )
        assert store.ack_nowait("carol", elided) == 1  # settled inside the ack: still counted
        later = await store.enqueue("alice", ["bob"], b"c", now=NOW)  # the writer lives on
    assert caplog.text.count("a store callback failed") == 2
    assert [e.mid for e in await store.pending("bob")][1:] == committed + later
    assert await store.mailbox_count("carol") == 1


async def test_checkpoint_moves_wal_into_main_file(db: Path) -> None:
    async with await open_store(db) as store:
        await store.add_user("bob", b"h", b"s", now=NOW)
        await store.enqueue("alice", ["bob"], b"durable", now=NOW)
        await store.checkpoint()
    # immutable=1 reads the main file only, ignoring the WAL.
    raw = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        assert raw.execute("SELECT body FROM mailbox").fetchall() == [(b"durable",)]
    finally:
        raw.close()


# ---------------------------------------------------------------- opening


async def test_open_settings(db: Path) -> None:
    s = await open_store(db, synchronous="full")
    try:
        pragmas = await s._backend._run(  # type: ignore[attr-defined]
            lambda c: [
                c.execute(f"PRAGMA {p}").fetchone()[0]
                for p in ("synchronous", "journal_mode", "foreign_keys")
            ]
        )
        assert pragmas == [2, "wal", 1]
    finally:
        await s.close()
    with pytest.raises(ValueError, match="synchronous"):
        await open_store(db, synchronous="OFF")


async def test_open_without_migrate_refuses_missing_or_outdated(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(SchemaOutdated):
        await open_store(missing, migrate=False)
    assert not missing.exists()
    old = tmp_path / "old.db"
    mg.migrate(old, target=1)
    with pytest.raises(SchemaOutdated, match="migrate"):
        await open_store(old, migrate=False)
    s = await open_store(old)  # migrate=True upgrades it
    await s.close()
    assert mg.current_version(old) == mg.latest_version()


async def test_open_refuses_too_new(db: Path) -> None:
    mg.migrate(db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_version SET version = version + 1")
    conn.commit()
    conn.close()
    for migrate in (True, False):
        with pytest.raises(SchemaTooNew):
            await open_store(db, migrate=migrate)


async def test_key_status(store: Store) -> None:
    assert await store.key_status("alice") == (False, 0)
    assert await store.key_status("nobody") == (False, 0)
    await store.publish_keys(
        "alice", identity=ident(1), signed_prekey=SPK, one_time=otks(range(4)), now=NOW
    )
    await store.fetch_bundle("bob", "alice")
    assert await store.key_status("alice") == (True, 3)


async def test_polling_last_user_event_drops_stale_ids(store_target: Target, store: Store) -> None:
    await store.enqueue("alice", ["carol"], b"warm", now=NOW)  # carol's id is cached
    insert = (
        "INSERT INTO users (name, token_hash, token_salt, created_at, updated_at)"
        " VALUES ('carol', {0}, {0}, 1, 1);"
    )
    await other_process(
        store_target,
        "DELETE FROM users WHERE name = 'carol';" + insert.format("x'00'"),
        "DELETE FROM users WHERE name = 'carol';" + insert.format("'\\x00'::bytea"),
    )
    await store.last_user_event()  # what the relay polls
    mids = await store.enqueue("alice", ["carol"], b"to the new carol", now=NOW)
    assert [e.mid for e in await store.pending("carol")] == mids
    assert await store.mailbox_count("carol") == 1
    assert await store.ack("carol", mids) == 1


async def test_a_lookup_never_lets_a_later_send_overtake(store: Store) -> None:
    await store.enqueue("alice", ["bob"], b"warm", now=NOW)  # bob cached, carol not
    first = asyncio.create_task(store.enqueue("alice", ["carol", "bob"], b"A", now=NOW))
    await asyncio.sleep(0)  # A is now waiting for carol's lookup
    second = asyncio.create_task(store.enqueue("alice", ["bob"], b"B", now=NOW))
    await asyncio.gather(first, second)
    assert first.result()[1] < second.result()[0]
    assert [e.body for e in await store.pending("bob")] == [b"warm", b"A", b"B"]


async def test_cold_cache_burst_keeps_call_order(store: Store) -> None:
    results = await asyncio.gather(
        *(store.enqueue("alice", ["bob"], b"x", now=NOW) for _ in range(50)),
        store.enqueue("alice", ["nobody"], b"x", now=NOW),
        return_exceptions=True,
    )
    *ok, bad = results
    assert isinstance(bad, RequestError) and bad.code is ErrorCode.UNKNOWN_USER
    mids = [r[0] for r in ok]  # type: ignore[index]
    assert mids == sorted(mids)  # call order kept through the lookup
    assert await store.mailbox_count("bob") == 50
