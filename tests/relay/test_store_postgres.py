"""The PostgreSQL backend on a real server: its migrations, its refusals, and the same
answers as SQLite to the same sequence of operations."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hushwire.common.errors import ErrorCode, HushwireError, RequestError
from hushwire.common.keys import IdentityPublic, KemPrekey, OneTimePrekey, SignedPrekey
from hushwire.relay import migrate as mg
from hushwire.relay.errors import (
    NotHushwireDb,
    SchemaOutdated,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from hushwire.relay.store import QuotaLimits, Store
from hushwire.relay.store.postgres import current_version, migrate_schema, raise_top
from hushwire.relay.store.urls import is_postgres_url, redact
from tests.services import PostgresServer, free_port

NOW = 1_700_000_000


async def fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def test_both_backends_have_the_same_migration_numbers() -> None:
    sqlite, pg = mg.migrations("sqlite"), mg.migrations("postgresql")
    assert [m.name for m in sqlite] == [m.name for m in pg]
    assert mg.latest_version("postgresql") == mg.latest_version("sqlite") >= 3
    with pytest.raises(HushwireError):
        mg.migrations("oracle")


def test_urls_are_told_from_paths_and_passwords_never_printed() -> None:
    assert is_postgres_url("postgresql://u@h/db") and is_postgres_url("postgres://h/db")
    assert not is_postgres_url("users.db") and not is_postgres_url(Path("postgresql://x"))
    assert not is_postgres_url("sqlite:///users.db")
    assert redact("postgresql://relay:s3cret@db.example:5432/hw") == (
        "postgresql://relay:***@db.example:5432/hw"
    )
    assert redact("postgresql://relay@db/hw") == "postgresql://relay@db/hw"


async def test_migrate_builds_every_version_then_is_idempotent(pg_url: str) -> None:
    assert await current_version(pg_url) == 0
    latest = mg.latest_version("postgresql")
    for version in range(1, latest + 1):
        assert await migrate_schema(pg_url, target=version) == (version - 1, version)
        assert await current_version(pg_url) == version
    assert await migrate_schema(pg_url) == (latest, latest)
    tables = {r[0] for r in await fetch(pg_url, "SELECT tablename FROM pg_tables")}
    assert {"users", "identity_keys", "signed_prekeys", "one_time_prekeys"} <= tables
    assert {"identity_watchers", "mailbox", "mailbox_top", "user_events"} <= tables


async def test_two_relays_migrating_at_once_apply_each_migration_once(pg_url: str) -> None:
    results = await asyncio.gather(migrate_schema(pg_url), migrate_schema(pg_url))
    latest = mg.latest_version("postgresql")
    assert sorted(results) == [(0, latest), (latest, latest)]


async def test_open_refuses_outdated_too_new_and_foreign_databases(pg_url: str) -> None:
    with pytest.raises(SchemaOutdated):
        await Store.open(pg_url, migrate=False)  # empty
    await migrate_schema(pg_url, target=1)
    with pytest.raises(SchemaOutdated, match="migrate"):
        await Store.open(pg_url, migrate=False)
    async with await Store.open(pg_url):  # migrate=True upgrades it
        pass
    assert await current_version(pg_url) == mg.latest_version("postgresql")
    conn = await asyncpg.connect(pg_url)
    await conn.execute("UPDATE schema_version SET version = version + 1")
    await conn.close()
    for migrate in (True, False):
        with pytest.raises(SchemaTooNew):
            await Store.open(pg_url, migrate=migrate)


async def test_a_foreign_database_is_never_migrated(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    await conn.execute("CREATE TABLE invoices (id INT)")
    await conn.close()
    with pytest.raises(NotHushwireDb):
        await Store.open(pg_url)
    assert {r[0] for r in await fetch(pg_url, "SELECT tablename FROM pg_tables")} >= {"invoices"}
    assert await fetch(pg_url, "SELECT to_regclass('users')") == [(None,)]


async def test_relays_sharing_a_database_never_let_a_reader_skip_an_envelope(
    pg_url: str,
) -> None:
    """Two relays write to one mailbox at once while a third reads it the way a
    connection does (ids above its cursor, oldest first): every envelope acknowledged
    to a sender is read exactly once, and each sender's in the order it sent them,
    although sequence values are drawn by concurrent transactions."""
    stores = [await Store.open(pg_url) for _ in range(3)]
    writers, reader = stores[:2], stores[2]
    try:
        for name in ("bob", "a0", "a1", "a2", "a3"):
            await reader.add_user(name, b"h" * 32, b"s" * 16, now=NOW)
        sent: dict[str, list[int]] = {}
        finished = asyncio.Event()

        async def write(store: Store, sender: str) -> None:
            mids = sent.setdefault(sender, [])
            for i in range(150):
                body = f"{sender}:{i}".encode()
                # Pipelined: several sends in flight, as a client does.
                if i % 5 == 4:
                    mids.extend((await store.enqueue(sender, ["bob"], body, now=NOW))[0:1])
                else:
                    task = asyncio.ensure_future(store.enqueue(sender, ["bob"], body, now=NOW))
                    task.add_done_callback(lambda t, m=mids: m.extend(t.result()))
                    await asyncio.sleep(0)

        seen: list[tuple[int, bytes]] = []

        async def read() -> None:
            cursor = 0
            while True:
                done = finished.is_set()
                rows = await reader.pending("bob", after=cursor, limit=40)
                seen.extend((r.mid, r.body) for r in rows)
                cursor = rows[-1].mid if rows else cursor
                if done and not rows:
                    return

        reading = asyncio.create_task(read())
        await asyncio.gather(*(write(writers[i % 2], f"a{i}") for i in range(4)))
        for store in writers:
            await store.close()  # every pipelined send committed and answered
        finished.set()
        await asyncio.wait_for(reading, 60)
        ids = [mid for mid, _ in seen]
        assert len(ids) == len(set(ids)) == 600  # none skipped, none twice
        assert sorted(ids) == sorted(m for mids in sent.values() for m in mids)
        for sender in sent:  # each sender's envelopes are read in the order sent
            mine = [int(b.split(b":")[1]) for _, b in seen if b.startswith(sender.encode())]
            assert mine == list(range(150))
    finally:
        for store in stores:
            await store.close()


async def test_a_mailbox_quota_holds_across_relays(pg_url: str) -> None:
    """Each relay checks the limit against the database, not its own memory: two
    relays together cannot fill a mailbox past it, and an ack on one frees room on the
    other."""
    quota = QuotaLimits(envelopes=5, sender_envelopes=3)
    one, two = [await Store.open(pg_url, quota=quota) for _ in range(2)]
    try:
        for name in ("bob", "carol", "dave"):
            await one.add_user(name, b"h" * 32, b"s" * 16, now=NOW)
        for _ in range(3):
            await one.enqueue("carol", ["bob"], b"x", now=NOW)
        with pytest.raises(RequestError, match="your share of the mailbox of bob"):
            await two.enqueue("carol", ["bob"], b"x", now=NOW)
        await two.enqueue("dave", ["bob"], b"y", now=NOW)
        await two.enqueue("dave", ["bob"], b"y", now=NOW)
        with pytest.raises(RequestError) as full:
            await one.enqueue("dave", ["bob"], b"y", now=NOW)
        assert full.value.code is ErrorCode.MAILBOX_FULL
        assert "the mailbox of bob is full" in full.value.message
        assert await one.mailbox_count("bob") == await two.mailbox_count("bob") == 5
        first = (await two.pending("bob", after=0, limit=1))[0]
        assert await two.ack("bob", [first.mid]) == 1
        await one.enqueue("dave", ["bob"], b"y", now=NOW)  # room again, seen by the other
        assert await one.mailbox_count("bob") == 5
    finally:
        await one.close()
        await two.close()


async def test_copied_envelope_ids_are_never_handed_out_again(pg_url: str) -> None:
    async with await Store.open(pg_url) as store:
        await store.add_user("bob", b"h" * 32, b"s" * 16, now=NOW)
    conn = await asyncpg.connect(pg_url)
    try:
        await raise_top(conn, 10_000)
    finally:
        await conn.close()
    async with await Store.open(pg_url) as store:
        (mid,) = await store.enqueue("carol", ["bob"], b"x", now=NOW)
    assert mid > 10_000


async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    url = f"postgresql://relay:s3cret@127.0.0.1:{free_port()}/hushwire"
    with pytest.raises(StoreError) as info:
        await Store.open(url)
    assert "s3cret" not in info.value.message and "127.0.0.1" in info.value.message


async def test_an_ok_means_committed_in_postgresql(pg_url: str) -> None:
    async with await Store.open(pg_url) as store:
        for name in ("alice", "bob"):
            await store.add_user(name, b"h", b"s", now=NOW)
        mids = await store.enqueue("alice", ["bob"], b"durable", now=NOW)
        # Read by another connection at once: the row is there before close() flushed.
        rows = await fetch(pg_url, "SELECT id, body FROM mailbox")
        assert rows == [(mids[0], b"durable")]


async def test_sends_fail_while_the_server_is_down_and_work_once_it_is_back(
    postgres: PostgresServer,
) -> None:
    server = PostgresServer(postgres.bindir).start()  # its own: this test stops it
    try:
        url = server.create_database()
        async with await Store.open(url) as store:
            for name in ("alice", "bob"):
                await store.add_user(name, b"h", b"s", now=NOW)
            before = await store.enqueue("alice", ["bob"], b"before", now=NOW)
            server.stop_server()
            with pytest.raises(StoreUnavailable) as down:
                await store.enqueue("alice", ["bob"], b"refused", now=NOW)
            assert down.value.code is ErrorCode.UNAVAILABLE and down.value.retry_after > 0
            with pytest.raises(StoreUnavailable):
                await store.pending("bob")
            server.start_server()
            # Pooled connections that died with the server fail once each, then the pool
            # replaces them: a sender retrying gets through within a few attempts.
            after = None
            for _ in range(20):
                try:
                    after = await store.enqueue("alice", ["bob"], b"after", now=NOW)
                    break
                except StoreError:
                    continue
            assert after is not None
            got = await store.pending("bob")
            # Nothing acknowledged was lost, nothing refused was stored.
            assert [(e.mid, e.body) for e in got] == [(before[0], b"before"), (after[0], b"after")]
            assert await store.mailbox_count("bob") == 2
    finally:
        server.stop()


# ---------------------------------------------------------------- same answers


def _ident(tag: int) -> IdentityPublic:
    return IdentityPublic("x25519", bytes([tag]) * 32, bytes([tag + 1]) * 32, bytes([tag]) * 64)


async def _attempt(log: list[object], what: str, coro: Any) -> Any:
    """Record an operation's answer, or its error's type and code."""
    try:
        result = await coro
    except HushwireError as exc:
        log.append((what, "error", type(exc).__name__, exc.code))
        return None
    log.append((what, result))
    return result


async def _script(store: Store) -> list[object]:
    """A relay's life in miniature, recording every answer the store gives."""
    log: list[object] = []
    for name in ("alice", "bob", "carol", "dave", "al_b.c-d"):
        await _attempt(log, "add", store.add_user(name, name.encode(), b"s", now=NOW))
    await _attempt(log, "add again", store.add_user("bob", b"x", b"y", now=NOW))
    await _attempt(log, "bad name", store.add_user("Bad", b"x", b"y", now=NOW))
    await _attempt(log, "record login", store.record_login("alice", now=NOW + 5))
    await _attempt(log, "disable", store.set_disabled("dave", True, now=NOW + 6))
    await _attempt(log, "disable ghost", store.set_disabled("ghost", True, now=NOW))
    await _attempt(log, "token", store.set_token("carol", b"t2", b"s2", now=NOW + 7))
    await _attempt(log, "users", store.list_users())
    await _attempt(log, "get", store.get_user("alice"))
    await _attempt(log, "exists", store.user_exists("ghost"))
    otks = [OneTimePrekey(i, bytes([i]) * 32) for i in (5, 3, 9, 3)]
    spk = SignedPrekey(1, b"\x05" * 32, b"\x06" * 64)
    await _attempt(
        log,
        "prekeys first",
        store.publish_keys("bob", identity=None, signed_prekey=spk, one_time=otks, now=NOW),
    )
    await _attempt(
        log,
        "publish",
        store.publish_keys("bob", identity=_ident(1), signed_prekey=spk, one_time=otks, now=NOW),
    )
    await _attempt(log, "status", store.key_status("bob"))
    for fetcher in ("alice", "carol", "alice", "bob"):
        await _attempt(log, "fetch", store.fetch_bundle(fetcher, "bob"))
    await _attempt(log, "fetch none", store.fetch_bundle("alice", "carol"))
    await _attempt(log, "count", store.prekey_count("bob"))
    # Protocol version 2: KEM prekeys (a repeated id: the later one wins), typed refusals.
    kems = [KemPrekey(i, bytes([i]) * 1184, bytes([i]) * 64) for i in (21, 20, 21)]
    last = KemPrekey(30, b"\x1e" * 1184, b"\x1f" * 64)
    await _attempt(
        log,
        "publish v2",
        store.publish_keys(
            "carol",
            identity=_ident(3),
            signed_prekey=spk,
            one_time=otks,
            now=NOW,
            kem_last_resort=last,
            kem_one_time=kems,
            version=2,
        ),
    )
    await _attempt(log, "kem status", store.kem_status("carol"))
    for fetcher in ("alice", "bob", "alice"):
        await _attempt(log, "fetch v2", store.fetch_bundle(fetcher, "carol", 2))
    await _attempt(log, "fetch v2 of a v1 user", store.fetch_bundle("alice", "bob", 2))
    await _attempt(log, "fetch v1 of a v2 user", store.fetch_bundle("alice", "carol", 1))
    await _attempt(
        log,
        "back to v1",
        store.publish_keys("carol", identity=_ident(3), signed_prekey=None, one_time=(), now=NOW),
    )
    await _attempt(log, "kem status after", store.kem_status("carol"))
    await _attempt(
        log,
        "new identity",
        store.publish_keys("bob", identity=_ident(7), signed_prekey=None, one_time=[], now=NOW),
    )
    await _attempt(log, "changed", store.changed_identities("alice"))
    too_many = [OneTimePrekey(i, b"k" * 32) for i in range(501)]
    await _attempt(
        log,
        "cap",
        store.publish_keys("bob", identity=None, signed_prekey=None, one_time=too_many, now=NOW),
    )
    sent = [
        await _attempt(
            log, "send", store.enqueue("alice", ["bob", "carol"], b"m%d" % i, now=NOW + i)
        )
        for i in range(5)
    ]
    await _attempt(log, "send unknown", store.enqueue("alice", ["bob", "ghost"], b"x", now=NOW))
    await _attempt(log, "pending", store.pending("bob", limit=3))
    await _attempt(log, "pending after", store.pending("bob", after=sent[1][0]))
    acks = [sent[0][0], sent[0][1], sent[2][0], 10**30, -1]
    await _attempt(log, "ack mixed", store.ack("bob", acks))  # carol's row is not bob's
    await asyncio.gather(*(_attempt(log, "ack each", store.ack("carol", [m[1]])) for m in sent[:3]))
    await _attempt(log, "ack twice", store.ack("carol", [sent[0][1]]))
    await _attempt(log, "count bob", store.mailbox_count("bob"))
    await _attempt(log, "purge", store.purge(older_than=NOW + 4))
    await _attempt(log, "pending bob", store.pending("bob"))
    await _attempt(log, "remove", store.remove_user("carol"))
    await _attempt(log, "remove ghost", store.remove_user("ghost"))
    await _attempt(log, "send to removed", store.enqueue("alice", ["carol"], b"x", now=NOW))
    await _attempt(log, "events", store.user_events(0))
    await _attempt(log, "last event", store.last_user_event())
    stats = await store.stats()
    log.append(("stats", {k: v for k, v in stats.items() if k != "db_bytes"}))
    return log


def _relative_ids(log: list[Any]) -> list[Any]:
    base = next(entry[1][0] for entry in log if entry[0] == "send") - 1
    out = []
    for entry in log:
        if entry[0] == "send" and isinstance(entry[1], list):
            entry = ("send", [m - base for m in entry[1]])
        elif entry[0].startswith("pending") and isinstance(entry[1], list):
            entry = (entry[0], [dataclasses.replace(e, mid=e.mid - base) for e in entry[1]])
        out.append(entry)
    return out


async def test_both_backends_give_the_same_answers(tmp_path: Path, pg_url: str) -> None:
    answers = []
    for target in (tmp_path / "users.db", pg_url):
        async with await Store.open(target) as store:
            answers.append(await _script(store))
    # Envelope ids are compared relative to each backend's first: a SQLite relay skips
    # MID_GAP ids at every open (mailbox.py), PostgreSQL draws them from a sequence.
    sqlite, pg = (_relative_ids(log) for log in answers)
    assert len(sqlite) == len(pg) > 40
    for a, b in zip(sqlite, pg, strict=True):
        assert a == b
    # The script is not vacuous: it saw refusals, deliveries and deletions.
    assert any(entry[1] == "error" for entry in sqlite if isinstance(entry, tuple))
