"""The PostgreSQL backend (asyncpg), for relays that outgrow one machine's SQLite file.

Same tables and answers as sqlite.py (migrations/postgresql/ mirrors migrations/sqlite/
number for number); a test runs one sequence of operations on both and compares. Every
method is one transaction on a pooled connection. The group commit (batching.py) hands
`write_batch` a whole batch, written with one statement per kind of row (arrays through
unnest), so a batch costs the same few round trips whatever its size; the relay answers
`ok` only after PostgreSQL's COMMIT returned (synchronous_commit as the server sets it,
on by default: durable).

asyncpg is imported by this module only, and this module only when a postgresql:// URL
is given (install the `postgresql` extra).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import asyncpg

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import (
    BUNDLE_VERSION,
    PQ_BUNDLE_VERSION,
    IdentityPublic,
    PrekeyBundle,
    SignedPrekey,
)
from hushwire.relay import migrate as migrations
from hushwire.relay.errors import (
    NotHushwireDb,
    SchemaError,
    SchemaOutdated,
    StoreError,
    StoreUnavailable,
    UnknownUser,
    UserExists,
)
from hushwire.relay.store.batching import Failed, Op
from hushwire.relay.store.keys import check_bundle_version
from hushwire.relay.store.postgres_batch import apply_batch, raise_top
from hushwire.relay.store.postgres_devices import PostgresDevices
from hushwire.relay.store.quota import QuotaLimits, Usage
from hushwire.relay.store.records import (
    MAX_ONE_TIME_PREKEYS,
    USER_EVENTS_KEPT,
    KemUpload,
    PublishResult,
    StoredEnvelope,
    UserEvent,
    UserEventKind,
    UserRecord,
)
from hushwire.relay.store.sqlite import bundle, user_record
from hushwire.relay.store.urls import redact

POOL_SIZE = 8
# Held while migrating, so two relays starting at once never apply a migration twice.
_MIGRATE_LOCK = 0x68757368  # "hush"
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
# The server is down or restarting, or the connection to it broke: retryable.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


async def _version(conn: asyncpg.Connection) -> int:
    """Schema version: 0 for an empty database; raises for a foreign one."""
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        )
        if tables:
            raise NotHushwireDb("the database has tables but no hushwire schema_version table")
        return 0
    version = await conn.fetchval("SELECT version FROM schema_version")
    if version is None:
        raise NotHushwireDb("schema_version table is empty")
    return int(version)


async def connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url)
    except _ERRORS as exc:
        raise StoreError(f"cannot connect to {redact(url)}: {exc}") from exc


async def current_version(url: str) -> int:
    conn = await connect(url)
    try:
        return await _version(conn)
    finally:
        await conn.close()


async def migrate_schema(url: str, *, target: int | None = None) -> tuple[int, int]:
    """Bring the database at `url` to `target` (default: latest); return (from, to).

    Each migration runs in its own transaction with its version bump, under an advisory
    lock. No backup is taken here: back PostgreSQL up with its own tools (pg_dump).
    """
    latest = migrations.latest_version("postgresql")
    goal = latest if target is None else target
    if not 0 <= goal <= latest:
        raise SchemaError(f"no schema version {goal} (known: 1..{latest})")
    conn = await connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATE_LOCK)
        start = await _version(conn)
        migrations.check_not_too_new(start, redact(url), "postgresql")
        for mig in migrations.migrations("postgresql")[start:goal]:
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
                )
                await conn.execute("DELETE FROM schema_version")
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", mig.version)
        return start, max(start, goal)
    except asyncpg.PostgresError as exc:
        raise StoreError(f"migrating {redact(url)} failed: {exc}") from exc
    finally:
        await conn.close()


class PostgresBackend(PostgresDevices):
    """The store's SQL on PostgreSQL; open with `await PostgresBackend.open(url)`."""

    # Several relays may share the database: envelope ids come from it and each batch
    # checks mailbox quotas against it (mailbox.py asks for this with `shared`).
    shared = True

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url
        self._closed = False
        self.quota = QuotaLimits()  # set by the Store: checked in every group commit

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> PostgresBackend:
        """Connect (and with `migrate`, create or upgrade the schema). Raises
        SchemaTooNew for a newer schema, with migrate=False SchemaOutdated for an older
        or missing one, StoreError when the server cannot be reached."""
        if migrate:
            await migrate_schema(url)
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=POOL_SIZE)
        except _ERRORS as exc:
            raise StoreError(f"cannot connect to {redact(url)}: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                version = await _version(conn)
            migrations.check_not_too_new(version, redact(url), "postgresql")
            latest = migrations.latest_version("postgresql")
            if version < latest:
                raise SchemaOutdated(
                    f"{redact(url)} is at schema version {version}, this hushwire needs "
                    f"{latest}; run `hushwire-admin --db URL migrate`"
                )
        except BaseException:
            await pool.close()
            raise
        return cls(pool, url)

    async def close(self) -> None:
        self._closed = True
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _conn(self, *, transaction: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (in a transaction if asked); driver errors as StoreError."""
        if self._closed:
            raise StoreError("the store is closed")
        try:
            async with self._pool.acquire() as conn:
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except _UNREACHABLE as exc:
            raise StoreUnavailable(f"the database is unreachable, retry later: {exc}") from exc
        except _ERRORS as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def high_water(self) -> tuple[int, int]:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT GREATEST((SELECT id FROM mailbox_top),"
                " COALESCE((SELECT MAX(id) FROM mailbox), 0),"
                " (SELECT last_value - CASE WHEN is_called THEN 0 ELSE 1 END FROM mailbox_ids)),"
                " COALESCE((SELECT MAX(seq) FROM user_events), 0)"
            )
        return int(row[0]), int(row[1])

    # ------------------------------------------------------------------ accounts

    async def add_user(self, name: str, token_hash: bytes, salt: bytes, *, now: int) -> None:
        async with self._conn() as conn:
            try:
                await conn.execute(
                    "INSERT INTO users (name, token_hash, token_salt, disabled, created_at,"
                    " updated_at) VALUES ($1, $2, $3, FALSE, $4, $4)",
                    name,
                    token_hash,
                    salt,
                    now,
                )
            except asyncpg.UniqueViolationError as exc:
                raise UserExists(f"user {name!r} already exists") from exc

    async def get_user(self, name: str) -> UserRecord | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT name, token_hash, token_salt, disabled, created_at, last_login_at"
                " FROM users WHERE name = $1",
                name,
            )
        return None if row is None else user_record(row)

    async def list_users(self) -> list[UserRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT name, token_hash, token_salt, disabled, created_at, last_login_at"
                ' FROM users WHERE account_id IS NULL ORDER BY name COLLATE "C"'
            )
        return [user_record(r) for r in rows]

    async def page_users(self, after: str | None, limit: int) -> list[str]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT name FROM users WHERE account_id IS NULL AND NOT disabled"
                ' AND name > $1 COLLATE "C" ORDER BY name COLLATE "C" LIMIT $2',
                after or "",
                limit,
            )
        return [r["name"] for r in rows]

    async def _update_user(self, sql: str, name: str, *args: object) -> None:
        async with self._conn() as conn:
            status = await conn.execute(sql, name, *args)
        if _count(status) == 0:
            raise UnknownUser(f"no user named {name!r}")

    async def set_disabled(self, name: str, disabled: bool, *, now: int) -> None:
        await self._update_user(
            "UPDATE users SET disabled = $2, updated_at = $3 WHERE name = $1", name, disabled, now
        )

    async def set_token(self, name: str, token_hash: bytes, salt: bytes, *, now: int) -> None:
        await self._update_user(
            "UPDATE users SET token_hash = $2, token_salt = $3, updated_at = $4 WHERE name = $1",
            name,
            token_hash,
            salt,
            now,
        )

    async def remove_user(self, name: str) -> None:
        await self._update_user("DELETE FROM users WHERE name = $1", name)

    async def user_exists(self, name: str) -> bool:
        async with self._conn() as conn:
            return await conn.fetchval("SELECT id FROM users WHERE name = $1", name) is not None

    async def stats(self) -> dict[str, int]:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT COUNT(*) FROM users),"
                " (SELECT COUNT(*) FROM users WHERE disabled),"
                " (SELECT COUNT(*) FROM mailbox),"
                " (SELECT COUNT(*) FROM payloads),"
                " (SELECT COALESCE(SUM(length(body)), 0) FROM payloads),"
                " pg_database_size(current_database())"
            )
        return {
            "users": int(row[0]),
            "disabled": int(row[1]),
            "queued": int(row[2]),
            "payloads": int(row[3]),
            "payload_bytes": int(row[4]),
            "db_bytes": int(row[5]),
        }

    async def queued_by_user(self) -> dict[str, int]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT u.name, COUNT(*) FROM mailbox m JOIN users u ON u.id = m.recipient_id"
                ' GROUP BY u.name ORDER BY u.name COLLATE "C"'
            )
        return {str(name): int(n) for name, n in rows}

    # ------------------------------------------------------------------ user events

    async def user_events(self, after: int, limit: int) -> list[UserEvent]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT seq, name, kind FROM user_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                after,
                limit,
            )
        return [UserEvent(int(s), n, UserEventKind(k)) for s, n, k in rows]

    async def last_user_event(self, seen: int) -> tuple[int, list[str]]:
        async with self._conn() as conn:
            seq = int(await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM user_events"))
            if seq <= seen:
                return seq, []
            rows = await conn.fetch(
                "SELECT name FROM user_events WHERE seq > $1 AND kind IN ('added', 'removed')",
                seen,
            )
        return seq, [r[0] for r in rows]

    # ------------------------------------------------------------------ key directory

    async def publish_keys(
        self,
        user: str,
        *,
        identity: IdentityPublic | None,
        signed_prekey: SignedPrekey | None,
        one_time: Sequence[tuple[int, bytes]],
        now: int,
        kem: KemUpload = KemUpload(),  # noqa: B008 - immutable
        version: int = BUNDLE_VERSION,
    ) -> PublishResult:
        async with self._conn(transaction=True) as conn:
            uid = await conn.fetchval("SELECT id FROM users WHERE name = $1 FOR UPDATE", user)
            if uid is None:
                raise RequestError(ErrorCode.UNKNOWN_USER, f"no user named {user!r}")
            old = await conn.fetchrow(
                "SELECT grp, sign_key, dh_key FROM identity_keys WHERE user_id = $1", uid
            )
            changed = False
            watchers: list[str] = []
            if identity is not None:
                new = (identity.group, identity.sign_key, identity.dh_key)
                if old is not None and tuple(old) != new:
                    changed = True
                    await conn.execute("DELETE FROM signed_prekeys WHERE user_id = $1", uid)
                    await conn.execute("DELETE FROM one_time_prekeys WHERE user_id = $1", uid)
                    await conn.execute("DELETE FROM kem_prekeys WHERE user_id = $1", uid)
                    await conn.execute(
                        "UPDATE identity_watchers SET stale = TRUE WHERE target_id = $1", uid
                    )
                    watchers = [
                        r[0]
                        for r in await conn.fetch(
                            "SELECT u.name FROM identity_watchers w JOIN users u"
                            " ON u.id = w.watcher_id WHERE w.target_id = $1 AND w.watcher_id != $1"
                            ' ORDER BY u.name COLLATE "C"',
                            uid,
                        )
                    ]
                await conn.execute(
                    "INSERT INTO identity_keys (user_id, bundle_version, grp, sign_key, dh_key,"
                    " dh_sig, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (user_id) DO UPDATE SET bundle_version = EXCLUDED.bundle_version,"
                    " grp = EXCLUDED.grp, sign_key = EXCLUDED.sign_key, dh_key = EXCLUDED.dh_key,"
                    " dh_sig = EXCLUDED.dh_sig, updated_at = EXCLUDED.updated_at",
                    uid,
                    version,
                    *new,
                    identity.dh_sig,
                    now,
                )
                if version < PQ_BUNDLE_VERSION:
                    await conn.execute("DELETE FROM kem_prekeys WHERE user_id = $1", uid)
            elif old is None and (signed_prekey is not None or one_time or kem):
                raise RequestError(
                    ErrorCode.NO_KEYS, "publish an identity before publishing prekeys"
                )
            if signed_prekey is not None:
                await conn.execute(
                    "INSERT INTO signed_prekeys (user_id, prekey_id, key, sig, created_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET"
                    " prekey_id = EXCLUDED.prekey_id, key = EXCLUDED.key, sig = EXCLUDED.sig,"
                    " created_at = EXCLUDED.created_at",
                    uid,
                    signed_prekey.id,
                    signed_prekey.key,
                    signed_prekey.sig,
                    now,
                )
            if one_time:
                # Later duplicates of an id win, as with SQLite's INSERT OR REPLACE.
                keys = dict(one_time)
                await conn.execute(
                    "INSERT INTO one_time_prekeys (user_id, prekey_id, key)"
                    " SELECT $1, * FROM unnest($2::bigint[], $3::bytea[])"
                    " ON CONFLICT (user_id, prekey_id) DO UPDATE SET key = EXCLUDED.key",
                    uid,
                    list(keys),
                    list(keys.values()),
                )
            if kem.last_resort is not None:
                await conn.execute(
                    "DELETE FROM kem_prekeys WHERE user_id = $1 AND last_resort", uid
                )
            # Later duplicates of an id win, as with SQLite's INSERT OR REPLACE.
            rows = {k[0]: (*k, False) for k in kem.one_time}
            if kem.last_resort is not None:
                rows[kem.last_resort[0]] = (*kem.last_resort, True)
            if rows:
                await conn.executemany(
                    "INSERT INTO kem_prekeys (user_id, prekey_id, key, sig, last_resort,"
                    " created_at) VALUES ($1, $2, $3, $4, $5, $6)"
                    " ON CONFLICT (user_id, prekey_id) DO UPDATE SET key = EXCLUDED.key,"
                    " sig = EXCLUDED.sig, last_resort = EXCLUDED.last_resort,"
                    " created_at = EXCLUDED.created_at",
                    [(uid, *row, now) for row in rows.values()],
                )
            left, kem_left = await _prekey_count(conn, uid), await _kem_count(conn, uid)
            if max(left, kem_left) > MAX_ONE_TIME_PREKEYS:
                raise RequestError(
                    ErrorCode.BAD_KEYS,
                    f"at most {MAX_ONE_TIME_PREKEYS} one-time prekeys of each kind per user"
                    f" ({left} DH and {kem_left} KEM with this upload)",
                )
            return PublishResult(changed, watchers, left, kem_left)

    async def fetch_bundle(
        self, fetcher: str, target: str, version: int = BUNDLE_VERSION, *, one_time: bool
    ) -> PrekeyBundle | None:
        async with self._conn(transaction=True) as conn:
            tid = await conn.fetchval("SELECT id FROM users WHERE name = $1", target)
            if tid is None:
                return None
            ident = await conn.fetchrow(
                "SELECT bundle_version, grp, sign_key, dh_key, dh_sig FROM identity_keys"
                " WHERE user_id = $1",
                tid,
            )
            spk = await conn.fetchrow(
                "SELECT prekey_id, key, sig FROM signed_prekeys WHERE user_id = $1", tid
            )
            if ident is None or spk is None:
                return None
            check_bundle_version(target, int(ident[0]), version)
            kem = None
            if version >= PQ_BUNDLE_VERSION:
                # A one-time KEM prekey while any is left, else the last-resort one.
                kem = (
                    one_time
                    and await conn.fetchrow(
                        "DELETE FROM kem_prekeys WHERE user_id = $1 AND prekey_id ="
                        " (SELECT prekey_id FROM kem_prekeys WHERE user_id = $1"
                        " AND NOT last_resort ORDER BY prekey_id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                        " RETURNING prekey_id, key, sig",
                        tid,
                    )
                ) or await conn.fetchrow(
                    "SELECT prekey_id, key, sig FROM kem_prekeys"
                    " WHERE user_id = $1 AND last_resort",
                    tid,
                )
                if kem is None:
                    return None
            # SKIP LOCKED: a concurrent fetch takes the next key instead of waiting for
            # this one and then finding it gone; no key is ever handed out twice.
            otk = None
            if one_time:
                otk = await conn.fetchrow(
                    "DELETE FROM one_time_prekeys WHERE user_id = $1 AND prekey_id ="
                    " (SELECT prekey_id FROM one_time_prekeys WHERE user_id = $1"
                    " ORDER BY prekey_id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                    " RETURNING prekey_id, key",
                    tid,
                )
            fid = await conn.fetchval("SELECT id FROM users WHERE name = $1", fetcher)
            if fid is not None and fid != tid:
                # The fetcher now knows the current identity: fresh (again).
                await conn.execute(
                    "INSERT INTO identity_watchers (watcher_id, target_id, stale)"
                    " VALUES ($1, $2, FALSE) ON CONFLICT (watcher_id, target_id)"
                    " DO UPDATE SET stale = FALSE",
                    fid,
                    tid,
                )
            return bundle(target, ident, spk, otk, kem)

    async def contacts(self, user: str) -> set[str]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT u.name FROM identity_watchers w JOIN users u ON u.id = w.target_id"
                " WHERE w.watcher_id = (SELECT id FROM users WHERE name = $1)"
                " UNION SELECT u.name FROM identity_watchers w JOIN users u ON u.id = w.watcher_id"
                " WHERE w.target_id = (SELECT id FROM users WHERE name = $1)",
                user,
            )
        return {str(r[0]) for r in rows}

    async def changed_identities(self, watcher: str) -> list[tuple[str, IdentityPublic]]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT u.name, k.grp, k.sign_key, k.dh_key, k.dh_sig"
                " FROM identity_watchers w JOIN users u ON u.id = w.target_id"
                " JOIN identity_keys k ON k.user_id = w.target_id"
                " JOIN users me ON me.id = w.watcher_id"
                ' WHERE me.name = $1 AND w.stale ORDER BY u.name COLLATE "C"',
                watcher,
            )
        return [(r[0], IdentityPublic(r[1], r[2], r[3], r[4])) for r in rows]

    async def prekey_count(self, user: str) -> int:
        async with self._conn() as conn:
            uid = await conn.fetchval("SELECT id FROM users WHERE name = $1", user)
            return 0 if uid is None else await _prekey_count(conn, uid)

    async def key_status(self, user: str) -> tuple[bool, int]:
        async with self._conn() as conn:
            uid = await conn.fetchval("SELECT id FROM users WHERE name = $1", user)
            if uid is None:
                return False, 0
            has = await conn.fetchval("SELECT 1 FROM identity_keys WHERE user_id = $1", uid)
            return has is not None, await _prekey_count(conn, uid)

    async def kem_status(self, user: str) -> tuple[int, int]:
        async with self._conn() as conn:
            uid = await conn.fetchval("SELECT id FROM users WHERE name = $1", user)
            if uid is None:
                return 0, 0
            held = await conn.fetchval(
                "SELECT bundle_version FROM identity_keys WHERE user_id = $1", uid
            )
            return (0 if held is None else int(held)), await _kem_count(conn, uid)

    # ------------------------------------------------------------------ mailbox

    async def pending(self, recipient: str, after: int, limit: int) -> list[StoredEnvelope]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT m.id, m.sender, m.created_at, m.body, p.body FROM mailbox m"
                " JOIN users u ON u.id = m.recipient_id"
                " LEFT JOIN payloads p ON p.id = m.payload_id"
                " WHERE u.name = $1 AND m.id > $2 ORDER BY m.id LIMIT $3",
                recipient,
                after,
                limit,
            )
        return [StoredEnvelope(int(i), s, int(c), b, p) for i, s, c, b, p in rows]

    async def recipients(self, names: Sequence[str]) -> dict[str, tuple[int, Usage]]:
        async with self._conn() as conn:
            users = await conn.fetch(
                "SELECT name, id FROM users WHERE name = ANY($1::text[])", list(names)
            )
            rows = await conn.fetch(
                "SELECT recipient_id, sender, COUNT(*), SUM(length(body) + payload_bytes)"
                " FROM mailbox"
                " WHERE recipient_id = ANY($1::bigint[]) GROUP BY recipient_id, sender",
                [int(u[1]) for u in users],
            )
        usage: dict[int, Usage] = {int(u[1]): [] for u in users}
        for rid, sender, n, size in rows:
            usage[int(rid)].append((str(sender), int(n), int(size)))
        return {str(name): (int(rid), usage[int(rid)]) for name, rid in users}

    async def purge(self, older_than: int) -> list[tuple[int, str, int]]:
        async with self._conn(transaction=True) as conn:
            rows = await conn.fetch(
                "DELETE FROM mailbox WHERE created_at < $1"
                " RETURNING recipient_id, sender, length(body) + payload_bytes",
                older_than,
            )
            await conn.execute(
                "DELETE FROM user_events WHERE seq <= (SELECT MAX(seq) FROM user_events) - $1",
                USER_EVENTS_KEPT,
            )
        return [(int(rid), str(sender), int(size)) for rid, sender, size in rows]

    async def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints on its own schedule."""

    async def write_batch(self, batch: list[Op], top: int) -> list[object]:
        """One transaction for the whole batch, as sqlite_batch.py's `write_batch`: if a
        recipient vanished (foreign key), redo it with a savepoint per op so only the
        offending send fails."""
        async with self._conn() as conn:
            try:
                async with conn.transaction():
                    return await apply_batch(conn, batch, top, self.quota)
            except asyncpg.ForeignKeyViolationError:
                pass
            async with conn.transaction():
                outcomes: list[object] = []
                for op in batch:
                    try:
                        async with conn.transaction():  # a savepoint
                            outcomes.extend(await apply_batch(conn, [op], 0, self.quota))
                    except asyncpg.ForeignKeyViolationError:
                        outcomes.append(
                            Failed(
                                RequestError(ErrorCode.UNKNOWN_USER, "a recipient no longer exists")
                            )
                        )
                    except asyncpg.IntegrityConstraintViolationError as exc:
                        outcomes.append(Failed(StoreError(f"envelope not stored: {exc}")))
                await raise_top(conn, top)
                return outcomes


def _count(status: str) -> int:
    """Rows affected, from a command status such as 'UPDATE 1' or 'DELETE 0'."""
    return int(status.rsplit(" ", 1)[1])


async def _kem_count(conn: asyncpg.Connection, uid: int) -> int:
    """One-time KEM prekeys left (the last-resort one is not counted)."""
    return int(
        await conn.fetchval(
            "SELECT COUNT(*) FROM kem_prekeys WHERE user_id = $1 AND NOT last_resort", uid
        )
    )


async def _prekey_count(conn: asyncpg.Connection, uid: int) -> int:
    return int(await conn.fetchval("SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1", uid))
