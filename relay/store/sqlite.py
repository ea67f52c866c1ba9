"""The embedded default backend: one SQLite file through one aiosqlite connection (WAL).

Each public method runs as ONE function on aiosqlite's worker thread (see `_run`), so a
method is one transaction that no other coroutine's statements can interleave with, and
costs one thread hop (~120 us) instead of one per statement. The relay's SQL on SQLite
lives here, but for the group-commit write path (sqlite_batch.py) and devices
(sqlite_devices.py); migrations live in `relay/migrate.py`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import (
    BUNDLE_VERSION,
    PQ_BUNDLE_VERSION,
    IdentityPublic,
    KemPrekey,
    OneTimePrekey,
    PrekeyBundle,
    SignedPrekey,
)
from hushwire.relay import migrate as migrations
from hushwire.relay.errors import SchemaOutdated, StoreError, UnknownUser, UserExists
from hushwire.relay.store.batching import Op
from hushwire.relay.store.keys import check_bundle_version
from hushwire.relay.store.quota import Usage
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
from hushwire.relay.store.sqlite_batch import rollback, write_batch
from hushwire.relay.store.sqlite_devices import SqliteDevices

T = TypeVar("T")

SYNCHRONOUS_MODES = ("NORMAL", "FULL")
# Autocheckpoint only as a safety net (~40 MB of WAL at 4 KiB pages): the relay calls
# checkpoint() periodically, off the hot path, so commits do not pay for it (PERF-NOTES).
WAL_AUTOCHECKPOINT_PAGES = 10_000


def _user_id(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def _in_transaction(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """`fn` wrapped in BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""

    def run(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return result

    return run


class SqliteBackend(SqliteDevices):
    """The store's SQL on SQLite; open with `await SqliteBackend.open(path)`."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self._path = path
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        migrate: bool = True,
        busy_timeout_ms: int = 5000,
    ) -> SqliteBackend:
        """Open (and with `migrate`, create or upgrade) the db at `path`.

        synchronous=NORMAL survives any process crash (SIGKILL included); FULL also
        survives power loss, at several times the commit cost. Raises SchemaTooNew for
        a db newer than this code, and with migrate=False SchemaOutdated for an older
        or missing one.
        """
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        path = Path(path)
        if migrate:
            await asyncio.to_thread(migrations.migrate, path)
        elif not path.exists():
            raise SchemaOutdated(f"no hushwire database at {path}; run `hushwire-admin migrate`")
        migrations.make_private(path)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        backend = cls(db, path)

        def init(conn: sqlite3.Connection) -> None:
            version = migrations.version_of(conn)
            migrations.check_not_too_new(version, path)
            if version < migrations.latest_version():
                raise SchemaOutdated(
                    f"{path} is at schema version {version}, this hushwire needs "
                    f"{migrations.latest_version()}; run `hushwire-admin migrate`"
                )
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {mode}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            # Acked envelopes and used prekeys are overwritten with zeros when deleted,
            # whatever the SQLite build's default (see also `checkpoint`).
            conn.execute("PRAGMA secure_delete = ON")

        try:
            await backend._run(init)
        except BaseException:
            await db.close()
            raise
        return backend

    async def close(self) -> None:
        self._closed = True
        await self._db.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on aiosqlite's worker thread as one uninterrupted unit.

        aiosqlite's public API is one thread hop per statement and lets statements of
        concurrent coroutines interleave on the shared connection (one coroutine's
        COMMIT would commit another's half-done work). Its `Connection._execute(fn)`
        (private, present since 0.17) runs a whole function on that thread instead.
        This helper is the only place that touches it.
        """
        if self._closed:
            raise StoreError("the store is closed")
        db = self._db

        def call() -> T:
            return fn(db._conn)

        try:
            return await db._execute(call)
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc
        except ValueError as exc:
            if not db._running:
                raise StoreError("the store is closed") from exc
            raise

    async def high_water(self) -> tuple[int, int]:
        """(highest envelope id ever used, newest user_events seq)."""

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            # sqlite_sequence remembers the highest id ever used, even after the newest
            # rows were acked and deleted: ids must never be reused (clients dedupe).
            row = conn.execute(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'),"
                " 0), COALESCE((SELECT MAX(id) FROM mailbox), 0))"
            ).fetchone()
            (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM user_events").fetchone()
            return int(row[0]), int(seq)

        return await self._run(run)

    # ------------------------------------------------------------------ accounts

    async def add_user(self, name: str, token_hash: bytes, salt: bytes, *, now: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO users (name, token_hash, token_salt, disabled, created_at,"
                    " updated_at) VALUES (?, ?, ?, 0, ?, ?)",
                    (name, token_hash, salt, now, now),
                )
            except sqlite3.IntegrityError as exc:
                raise UserExists(f"user {name!r} already exists") from exc

        await self._run(run)

    async def get_user(self, name: str) -> UserRecord | None:
        def run(conn: sqlite3.Connection) -> UserRecord | None:
            row = conn.execute(
                "SELECT name, token_hash, token_salt, disabled, created_at, last_login_at"
                " FROM users WHERE name = ?",
                (name,),
            ).fetchone()
            return None if row is None else user_record(row)

        return await self._run(run)

    async def list_users(self) -> list[UserRecord]:
        return await self._list(_LIST_ACCOUNTS)

    async def page_users(self, after: str | None, limit: int) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT name FROM users WHERE account_id IS NULL AND disabled = 0"
                " AND name > ? ORDER BY name LIMIT ?",
                (after or "", limit),
            )
            return [r[0] for r in rows]

        return await self._run(run)

    async def list_principals(self) -> list[UserRecord]:
        return await self._list(_LIST_PRINCIPALS)

    async def _list(self, query: str) -> list[UserRecord]:
        def run(conn: sqlite3.Connection) -> list[UserRecord]:
            return [user_record(r) for r in conn.execute(query).fetchall()]

        return await self._run(run)

    async def set_disabled(self, name: str, disabled: bool, *, now: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE users SET disabled = ?, updated_at = ? WHERE name = ?",
                (int(disabled), now, name),
            )
            if cur.rowcount == 0:
                raise UnknownUser(f"no user named {name!r}")

        await self._run(run)

    async def set_token(self, name: str, token_hash: bytes, salt: bytes, *, now: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE users SET token_hash = ?, token_salt = ?, updated_at = ? WHERE name = ?",
                (token_hash, salt, now, name),
            )
            if cur.rowcount == 0:
                raise UnknownUser(f"no user named {name!r}")

        await self._run(run)

    async def remove_user(self, name: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise UnknownUser(f"no user named {name!r}")

        await self._run(run)

    async def user_exists(self, name: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return _user_id(conn, name) is not None

        return await self._run(run)

    async def stats(self) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            users, disabled = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(disabled), 0) FROM users"
            ).fetchone()
            (queued,) = conn.execute("SELECT COUNT(*) FROM mailbox").fetchone()
            payloads, payload_bytes = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM payloads"
            ).fetchone()
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
            wal = Path(f"{self._path}-wal")
            wal_bytes = wal.stat().st_size if wal.exists() else 0
            return {
                "users": int(users),
                "disabled": int(disabled),
                "queued": int(queued),
                "payloads": int(payloads),
                "payload_bytes": int(payload_bytes),
                "db_bytes": int(pages) * int(page_size) + wal_bytes,
            }

        return await self._run(run)

    # ------------------------------------------------------------------ user events

    async def queued_by_user(self) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT u.name, COUNT(*) FROM mailbox m JOIN users u ON u.id = m.recipient_id"
                " GROUP BY m.recipient_id ORDER BY u.name"
            ).fetchall()
            return {str(name): int(n) for name, n in rows}

        return await self._run(run)

    async def user_events(self, after: int, limit: int) -> list[UserEvent]:
        def run(conn: sqlite3.Connection) -> list[UserEvent]:
            rows = conn.execute(
                "SELECT seq, name, kind FROM user_events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
            return [UserEvent(int(s), n, UserEventKind(k)) for s, n, k in rows]

        return await self._run(run)

    async def last_user_event(self, seen: int) -> tuple[int, list[str]]:
        def run(conn: sqlite3.Connection) -> tuple[int, list[str]]:
            (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM user_events").fetchone()
            if seq <= seen:
                return int(seq), []
            rows = conn.execute(
                "SELECT name FROM user_events WHERE seq > ? AND kind IN ('added', 'removed')",
                (seen,),
            ).fetchall()
            return int(seq), [r[0] for r in rows]

        return await self._run(run)

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
        def publish(conn: sqlite3.Connection) -> PublishResult:
            uid = _user_id(conn, user)
            if uid is None:
                raise RequestError(ErrorCode.UNKNOWN_USER, f"no user named {user!r}")
            old = conn.execute(
                "SELECT grp, sign_key, dh_key FROM identity_keys WHERE user_id = ?", (uid,)
            ).fetchone()
            changed = False
            watchers: list[str] = []
            if identity is not None:
                new = (identity.group, identity.sign_key, identity.dh_key)
                if old is not None and tuple(old) != new:
                    changed = True
                    conn.execute("DELETE FROM signed_prekeys WHERE user_id = ?", (uid,))
                    conn.execute("DELETE FROM one_time_prekeys WHERE user_id = ?", (uid,))
                    conn.execute("DELETE FROM kem_prekeys WHERE user_id = ?", (uid,))
                    conn.execute(
                        "UPDATE identity_watchers SET stale = 1 WHERE target_id = ?", (uid,)
                    )
                    watchers = [
                        r[0]
                        for r in conn.execute(
                            "SELECT u.name FROM identity_watchers w JOIN users u"
                            " ON u.id = w.watcher_id WHERE w.target_id = ? AND w.watcher_id != ?"
                            " ORDER BY u.name",
                            (uid, uid),
                        )
                    ]
                conn.execute(
                    "INSERT OR REPLACE INTO identity_keys (user_id, bundle_version, grp,"
                    " sign_key, dh_key, dh_sig, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (uid, version, *new, identity.dh_sig, now),
                )
                if version < PQ_BUNDLE_VERSION:
                    conn.execute("DELETE FROM kem_prekeys WHERE user_id = ?", (uid,))
            elif old is None and (signed_prekey is not None or one_time or kem):
                raise RequestError(
                    ErrorCode.NO_KEYS, "publish an identity before publishing prekeys"
                )
            if signed_prekey is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO signed_prekeys (user_id, prekey_id, key, sig,"
                    " created_at) VALUES (?, ?, ?, ?, ?)",
                    (uid, signed_prekey.id, signed_prekey.key, signed_prekey.sig, now),
                )
            if one_time:
                conn.executemany(
                    "INSERT OR REPLACE INTO one_time_prekeys (user_id, prekey_id, key)"
                    " VALUES (?, ?, ?)",
                    [(uid, pid, key) for pid, key in one_time],
                )
            if kem.last_resort is not None:
                conn.execute(
                    "DELETE FROM kem_prekeys WHERE user_id = ? AND last_resort = 1", (uid,)
                )
            conn.executemany(
                "INSERT OR REPLACE INTO kem_prekeys (user_id, prekey_id, key, sig, last_resort,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(uid, *k, 0, now) for k in kem.one_time]
                + ([] if kem.last_resort is None else [(uid, *kem.last_resort, 1, now)]),
            )
            left, kem_left = _prekey_count(conn, uid), _kem_count(conn, uid)
            if max(left, kem_left) > MAX_ONE_TIME_PREKEYS:
                raise RequestError(
                    ErrorCode.BAD_KEYS,
                    f"at most {MAX_ONE_TIME_PREKEYS} one-time prekeys of each kind per user"
                    f" ({left} DH and {kem_left} KEM with this upload)",
                )
            return PublishResult(changed, watchers, left, kem_left)

        return await self._run(_in_transaction(publish))

    async def fetch_bundle(
        self, fetcher: str, target: str, version: int = BUNDLE_VERSION, *, one_time: bool
    ) -> PrekeyBundle | None:
        def fetch(conn: sqlite3.Connection) -> PrekeyBundle | None:
            tid = _user_id(conn, target)
            if tid is None:
                return None
            ident = conn.execute(
                "SELECT bundle_version, grp, sign_key, dh_key, dh_sig FROM identity_keys"
                " WHERE user_id = ?",
                (tid,),
            ).fetchone()
            spk = conn.execute(
                "SELECT prekey_id, key, sig FROM signed_prekeys WHERE user_id = ?", (tid,)
            ).fetchone()
            if ident is None or spk is None:
                return None
            check_bundle_version(target, int(ident[0]), version)
            kem = None
            if version >= PQ_BUNDLE_VERSION:
                # A one-time KEM prekey while any is left (each handed out once), else the
                # last-resort one (PQXDH 3.2); past the target's one-time budget, the
                # last-resort one directly, consuming nothing.
                kem = (
                    one_time
                    and conn.execute(
                        "DELETE FROM kem_prekeys WHERE user_id = ? AND prekey_id ="
                        " (SELECT MIN(prekey_id) FROM kem_prekeys WHERE user_id = ?"
                        " AND last_resort = 0) RETURNING prekey_id, key, sig",
                        (tid, tid),
                    ).fetchone()
                ) or conn.execute(
                    "SELECT prekey_id, key, sig FROM kem_prekeys"
                    " WHERE user_id = ? AND last_resort = 1",
                    (tid,),
                ).fetchone()
                if kem is None:
                    return None
            otk = None
            if one_time:
                otk = conn.execute(
                    "DELETE FROM one_time_prekeys WHERE user_id = ? AND prekey_id ="
                    " (SELECT MIN(prekey_id) FROM one_time_prekeys WHERE user_id = ?)"
                    " RETURNING prekey_id, key",
                    (tid, tid),
                ).fetchone()
            fid = _user_id(conn, fetcher)
            if fid is not None and fid != tid:
                # The fetcher now knows the current identity: fresh (again).
                conn.execute(
                    "INSERT INTO identity_watchers (watcher_id, target_id, stale) VALUES (?, ?, 0)"
                    " ON CONFLICT DO UPDATE SET stale = 0",
                    (fid, tid),
                )
            return bundle(target, ident, spk, otk, kem)

        return await self._run(_in_transaction(fetch))

    async def contacts(self, user: str) -> set[str]:
        def run(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT u.name FROM identity_watchers w JOIN users u ON u.id = w.target_id"
                " WHERE w.watcher_id = (SELECT id FROM users WHERE name = ?)"
                " UNION SELECT u.name FROM identity_watchers w JOIN users u ON u.id = w.watcher_id"
                " WHERE w.target_id = (SELECT id FROM users WHERE name = ?)",
                (user, user),
            ).fetchall()
            return {name for (name,) in rows}

        return await self._run(run)

    async def changed_identities(self, watcher: str) -> list[tuple[str, IdentityPublic]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, IdentityPublic]]:
            rows = conn.execute(
                "SELECT u.name, k.grp, k.sign_key, k.dh_key, k.dh_sig"
                " FROM identity_watchers w JOIN users u ON u.id = w.target_id"
                " JOIN identity_keys k ON k.user_id = w.target_id"
                " JOIN users me ON me.id = w.watcher_id"
                " WHERE me.name = ? AND w.stale = 1 ORDER BY u.name",
                (watcher,),
            ).fetchall()
            return [(r[0], IdentityPublic(r[1], r[2], r[3], r[4])) for r in rows]

        return await self._run(run)

    async def prekey_count(self, user: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            uid = _user_id(conn, user)
            return 0 if uid is None else _prekey_count(conn, uid)

        return await self._run(run)

    async def key_status(self, user: str) -> tuple[bool, int]:
        def run(conn: sqlite3.Connection) -> tuple[bool, int]:
            uid = _user_id(conn, user)
            if uid is None:
                return False, 0
            row = conn.execute("SELECT 1 FROM identity_keys WHERE user_id = ?", (uid,)).fetchone()
            return row is not None, _prekey_count(conn, uid)

        return await self._run(run)

    async def kem_status(self, user: str) -> tuple[int, int]:
        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            uid = _user_id(conn, user)
            if uid is None:
                return 0, 0
            row = conn.execute(
                "SELECT bundle_version FROM identity_keys WHERE user_id = ?", (uid,)
            ).fetchone()
            return (0 if row is None else int(row[0])), _kem_count(conn, uid)

        return await self._run(run)

    # ------------------------------------------------------------------ mailbox

    async def pending(self, recipient: str, after: int, limit: int) -> list[StoredEnvelope]:
        def run(conn: sqlite3.Connection) -> list[StoredEnvelope]:
            rid = _user_id(conn, recipient)
            if rid is None:
                return []
            rows = conn.execute(
                "SELECT m.id, m.sender, m.created_at, m.body, p.body FROM mailbox m"
                " LEFT JOIN payloads p ON p.id = m.payload_id"
                " WHERE m.recipient_id = ? AND m.id > ? ORDER BY m.id LIMIT ?",
                (rid, after, limit),
            ).fetchall()
            return [StoredEnvelope(int(i), s, int(c), b, p) for i, s, c, b, p in rows]

        return await self._run(run)

    async def recipients(self, names: Sequence[str]) -> dict[str, tuple[int, Usage]]:
        """name -> (users.id, [(sender, envelopes, bytes)] queued) for each existing name."""

        def run(conn: sqlite3.Connection) -> dict[str, tuple[int, Usage]]:
            found: dict[str, tuple[int, Usage]] = {}
            for name in names:
                rid = _user_id(conn, name)
                if rid is not None:
                    rows = conn.execute(
                        "SELECT sender, COUNT(*), SUM(length(body) + payload_bytes) FROM mailbox"
                        " WHERE recipient_id = ? GROUP BY sender",
                        (rid,),
                    ).fetchall()
                    found[name] = (rid, [(s, int(n), int(b)) for s, n, b in rows])
            return found

        return await self._run(run)

    async def purge(self, older_than: int) -> list[tuple[int, str, int]]:
        def run(conn: sqlite3.Connection) -> list[tuple[int, str, int]]:
            gone = [
                (int(rid), sender, int(size))
                for rid, sender, size in conn.execute(
                    "DELETE FROM mailbox WHERE created_at < ?"
                    " RETURNING recipient_id, sender, length(body) + payload_bytes",
                    (older_than,),
                ).fetchall()
            ]
            conn.execute(
                "DELETE FROM user_events WHERE seq <= (SELECT MAX(seq) FROM user_events) - ?",
                (USER_EVENTS_KEPT,),
            )
            return gone

        return await self._run(_in_transaction(run))

    async def checkpoint(self) -> None:
        def run(conn: sqlite3.Connection) -> None:
            # TRUNCATE, not PASSIVE: the WAL keeps every page version written since the
            # last reset, acked envelopes included, until it is truncated.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

        await self._run(run)

    async def write_batch(self, batch: list[Op], top: int) -> list[object]:
        return await self._run(lambda conn: write_batch(conn, batch, top))


def user_record(row: Sequence[Any]) -> UserRecord:
    name, token_hash, salt, disabled, created_at, last_login = row
    return UserRecord(
        name=name,
        token_hash=bytes(token_hash),
        token_salt=bytes(salt),
        disabled=bool(disabled),
        created_at=int(created_at),
        last_login_at=None if last_login is None else int(last_login),
    )


def bundle(
    target: str,
    ident: Sequence[Any],
    spk: Sequence[Any],
    otk: Sequence[Any] | None,
    kem: Sequence[Any] | None = None,
) -> PrekeyBundle:
    """A bundle from the rows (bundle_version, grp, sign_key, dh_key, dh_sig),
    (prekey_id, key, sig), if any left (prekey_id, key) and for version 2 the KEM
    prekey's (prekey_id, key, sig)."""
    return PrekeyBundle(
        user=target,
        identity=IdentityPublic(
            group=ident[1], sign_key=ident[2], dh_key=ident[3], dh_sig=ident[4]
        ),
        signed_prekey=SignedPrekey(id=int(spk[0]), key=spk[1], sig=spk[2]),
        one_time_prekey=None if otk is None else OneTimePrekey(int(otk[0]), otk[1]),
        version=int(ident[0]),
        kem_prekey=None if kem is None else KemPrekey(int(kem[0]), kem[1], kem[2]),
    )


def _kem_count(conn: sqlite3.Connection, uid: int) -> int:
    """One-time KEM prekeys left (the last-resort one is not counted)."""
    (n,) = conn.execute(
        "SELECT COUNT(*) FROM kem_prekeys WHERE user_id = ? AND last_resort = 0", (uid,)
    ).fetchone()
    return int(n)


def _prekey_count(conn: sqlite3.Connection, uid: int) -> int:
    (n,) = conn.execute(
        "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = ?", (uid,)
    ).fetchone()
    return int(n)


_USER_COLUMNS = "SELECT name, token_hash, token_salt, disabled, created_at, last_login_at"
_LIST_ACCOUNTS = _USER_COLUMNS + " FROM users WHERE account_id IS NULL ORDER BY name"
_LIST_PRINCIPALS = _USER_COLUMNS + " FROM users ORDER BY name"
