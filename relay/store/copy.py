"""`hushwire-admin copy-store`: move a relay from its SQLite file to PostgreSQL.

Imported only by that command (it needs asyncpg, like postgres.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg

from hushwire.relay import migrate as migrations
from hushwire.relay.errors import SchemaOutdated, StoreError
from hushwire.relay.store.postgres import connect, migrate_schema, raise_top
from hushwire.relay.store.urls import redact

# Tables in the order their foreign keys need, with their columns (the same in both
# schemas); booleans are 0/1 integers in SQLite.
_COPY_TABLES: tuple[tuple[str, tuple[str, ...], frozenset[str]], ...] = (
    (
        "users",
        (
            "id",
            "name",
            "token_hash",
            "token_salt",
            "disabled",
            "created_at",
            "updated_at",
            "last_login_at",
            "account_id",
        ),
        frozenset({"disabled"}),
    ),
    ("devices", ("account_id", "device_id", "principal_id", "linked_at"), frozenset()),
    ("device_lists", ("account_id", "version", "body", "sig", "updated_at"), frozenset()),
    (
        "identity_keys",
        ("user_id", "bundle_version", "grp", "sign_key", "dh_key", "dh_sig", "updated_at"),
        frozenset(),
    ),
    ("signed_prekeys", ("user_id", "prekey_id", "key", "sig", "created_at"), frozenset()),
    ("one_time_prekeys", ("user_id", "prekey_id", "key"), frozenset()),
    (
        "kem_prekeys",
        ("user_id", "prekey_id", "last_resort", "key", "sig", "created_at"),
        frozenset({"last_resort"}),
    ),
    ("identity_watchers", ("watcher_id", "target_id", "stale"), frozenset({"stale"})),
    ("payloads", ("id", "refs", "body"), frozenset()),
    (
        "mailbox",
        ("id", "recipient_id", "sender", "created_at", "body", "payload_id", "payload_bytes"),
        frozenset(),
    ),
)


def _read_sqlite(path: Path) -> tuple[dict[str, list[tuple[Any, ...]]], int]:
    """Every row of a SQLite store at the latest schema, and its highest envelope id."""
    if not path.exists():
        raise SchemaOutdated(f"no database at {path}")
    conn = migrations.connect(path)
    try:
        version = migrations.version_of(conn)
        if version != migrations.latest_version("sqlite"):
            raise SchemaOutdated(
                f"{path} is at schema version {version}; run `hushwire-admin --db {path} "
                "migrate` before copying it"
            )
        conn.execute("BEGIN")  # one snapshot of every table
        rows = {}
        for table, columns, booleans in _COPY_TABLES:
            got = conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()  # noqa: S608 - fixed names
            flags = [c in booleans for c in columns]
            rows[table] = [
                tuple(bool(v) if flag else v for v, flag in zip(row, flags, strict=True))
                for row in got
            ]
        (top,) = conn.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'),"
            " 0), COALESCE((SELECT MAX(id) FROM mailbox), 0))"
        ).fetchone()
        conn.execute("COMMIT")
        return rows, int(top)
    finally:
        conn.close()


async def copy_from_sqlite(path: Path, url: str) -> dict[str, int]:
    """Copy a SQLite store into the PostgreSQL database at `url`: every user, key,
    watcher and queued envelope, with their ids (clients dedupe by envelope id, so ids
    must not change). The target is migrated first and must hold no user; it is all
    written in one transaction. Returns rows copied per table."""
    rows, top = await asyncio.to_thread(_read_sqlite, path)
    await migrate_schema(url)
    conn = await connect(url)
    try:
        async with conn.transaction():
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)"):
                raise StoreError(f"{redact(url)} already has users: copy only into an empty store")
            # The devices rows are copied as they are: the trigger that makes a new
            # account its own device 1 must not add them a second time.
            await conn.execute("ALTER TABLE users DISABLE TRIGGER users_first_device")
            for table, columns, _ in _COPY_TABLES:
                await conn.copy_records_to_table(table, records=rows[table], columns=columns)
            await conn.execute("ALTER TABLE users ENABLE TRIGGER users_first_device")
            # New users continue after the copied ids; envelope ids after the highest used.
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('users', 'id'),"
                " GREATEST((SELECT MAX(id) FROM users), 1))"
            )
            await raise_top(conn, top)
    except asyncpg.PostgresError as exc:
        raise StoreError(f"copying into {redact(url)} failed: {exc}") from exc
    finally:
        await conn.close()
    return {table: len(rows[table]) for table, _, _ in _COPY_TABLES}
