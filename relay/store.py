"""The relay's SQLite store: accounts, the key directory and the mailbox.

Every SQL statement of the relay lives in this module. One aiosqlite connection (WAL)
serves the whole relay. Each public method runs as ONE function on aiosqlite's worker
thread (see `_run`), so a method is one transaction that no other coroutine's
statements can interleave with, and costs one thread hop (~120 us) instead of one per
statement.

Hot path (PERF-NOTES): `enqueue`, `ack` and `record_login` use group commit. Callers
put their work on an in-memory list and await a future; one writer task takes
everything pending, writes it in one transaction with `executemany`, commits, and only
then resolves the futures, so `enqueue` returning means the rows are durable to the
configured `synchronous` level. While one commit runs, the next batch accumulates.
Envelope ids come from an in-memory counter (only the relay inserts mailbox rows) and
per-recipient mailbox counts are kept in memory, so the limit check costs no query.

Time is always passed in (`now`, unix seconds); nothing here reads the clock.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiosqlite

from hushwire.common.errors import ErrorCode, HushwireError, RequestError
from hushwire.common.keys import (
    BUNDLE_VERSION,
    IdentityPublic,
    OneTimePrekey,
    PrekeyBundle,
    SignedPrekey,
)
from hushwire.common.names import check_username
from hushwire.relay import migrate as migrations
from hushwire.relay.errors import SchemaOutdated, StoreError, UnknownUser, UserExists

T = TypeVar("T")
log = logging.getLogger("hushwire.relay.store")

SYNCHRONOUS_MODES = ("NORMAL", "FULL")
# One-time prekeys kept per user; more is a client bug or an attempt to fill the disk.
MAX_ONE_TIME_PREKEYS = 500
# Largest key or signature field accepted (ML-KEM-768 public keys are 1,184 bytes).
MAX_KEY_BYTES = 4096
MAX_PREKEY_ID = 2**31 - 1
MAX_PENDING_LIMIT = 1000
# SQLite integers are signed 64-bit; larger ids cannot exist and must not reach bind().
_MAX_ROWID = 2**63 - 1
# Autocheckpoint only as a safety net (~40 MB of WAL at 4 KiB pages): the relay calls
# checkpoint() periodically, off the hot path, so commits do not pay for it (PERF-NOTES).
WAL_AUTOCHECKPOINT_PAGES = 10_000
# user_events rows kept: a relay polling every second is never this far behind.
USER_EVENTS_KEPT = 10_000
# Envelope ids skipped at every open. A recipient may see an id before its commit
# (`enqueue(on_reserved=...)`); if the relay dies before that commit, the id must never
# name a different envelope later (a stale ack would delete it). Every batch persists the
# highest id it reserved, so only batches in flight at a crash can be lost: far fewer
# than 2**32 ids. 2**63 / 2**32 leaves room for 2**31 restarts.
MID_GAP = 2**32
# Seconds the writer waits before taking a batch that holds envelopes already pushed to
# online recipients: acks that arrive meanwhile elide the insert and the delete. It delays
# only the sender's `ok`, never the delivery.
COMMIT_DELAY = 0.002


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    token_hash: bytes
    token_salt: bytes
    disabled: bool
    created_at: int
    last_login_at: int | None


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    mid: int
    sender: str
    created_at: int
    body: bytes


@dataclass(frozen=True, slots=True)
class PublishResult:
    identity_changed: bool
    watchers: list[str]
    prekeys_left: int


class UserEventKind(StrEnum):
    ADDED = "added"
    DISABLED = "disabled"
    ENABLED = "enabled"
    TOKEN_RESET = "token_reset"  # noqa: S105 - an event name, not a secret
    REMOVED = "removed"


# Events after which a live session of that user must be closed.
DISCONNECTING_EVENTS = frozenset(
    {UserEventKind.DISABLED, UserEventKind.TOKEN_RESET, UserEventKind.REMOVED}
)


@dataclass(frozen=True, slots=True)
class UserEvent:
    """One account change, written by triggers (migration 0002) for every writer."""

    seq: int
    name: str
    kind: UserEventKind


@dataclass(slots=True)
class _Enqueue:
    sender: str
    names: Sequence[str]
    rids: list[int]
    mids: list[int]
    body: bytes
    now: int
    fut: asyncio.Future[list[int]] | Waiter
    elided: set[int] | None = None  # mids the recipient acked before this was written

    def all_elided(self) -> bool:
        return self.elided is not None and len(self.elided) == len(self.mids)


@dataclass(slots=True)
class _Ack:
    rid: int
    mids: list[int]
    fut: asyncio.Future[int]
    elided: int = 0  # acked rows that were never written: counted in the result


@dataclass(slots=True)
class _Login:
    name: str
    now: int
    fut: asyncio.Future[None]


_Op = _Enqueue | _Ack | _Login


@dataclass(slots=True)
class _Failed:
    """Per-op failure inside an otherwise committed batch."""

    error: HushwireError


class Waiter:
    """The settling half of a future that calls back at once, not on the next loop pass:
    the relay's hot path answers a send in the same pass as the ack or commit that
    settles it, without a future and two loop callbacks per envelope. Like a future's
    callbacks, a failing one is logged and cannot break whatever settled it (an ack
    being applied, or the writer's loop)."""

    __slots__ = ("_callback", "_done")

    def __init__(self, callback: Callable[[Any, BaseException | None], None]) -> None:
        self._callback = callback
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Any) -> None:
        self._settle(value, None)

    def set_exception(self, exc: BaseException) -> None:
        self._settle(None, exc)

    def _settle(self, value: Any, exc: BaseException | None) -> None:
        self._done = True
        try:
            self._callback(value, exc)
        except Exception:
            log.exception("a store callback failed")


def _fail(fut: asyncio.Future[Any] | Waiter, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _resolve(fut: asyncio.Future[T] | Waiter, value: T) -> None:
    if not fut.done():
        fut.set_result(value)


def _user_id(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _valid_mids(mids: Sequence[int]) -> list[int]:
    """The distinct ids among `mids` that can name a row, sorted."""
    return sorted(
        {m for m in mids if isinstance(m, int) and not isinstance(m, bool) and 0 < m <= _MAX_ROWID}
    )


def _check_blob(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or not 0 < len(value) <= MAX_KEY_BYTES:
        raise RequestError(ErrorCode.BAD_KEYS, f"{what} must be 1..{MAX_KEY_BYTES} bytes")
    return value


def _check_prekey_id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(ErrorCode.BAD_KEYS, f"{what} id must be an integer")
    if not 0 <= value <= MAX_PREKEY_ID:
        raise RequestError(ErrorCode.BAD_KEYS, f"{what} id out of range 0..{MAX_PREKEY_ID}")
    return value


class Store:
    """The relay's persistent state; create with `await Store.open(path)`."""

    def __init__(self, db: aiosqlite.Connection, path: Path, max_mailbox: int) -> None:
        self._db = db
        self._path = path
        self._max_mailbox = max_mailbox
        self._ids: dict[str, int] = {}  # name -> users.id, filled on demand
        self._counts: dict[int, int] = {}  # users.id -> rows committed or in flight
        self._next_mid = 1
        self._events_seen = 0  # newest user_events seq whose cache effects are applied
        # Enqueues waiting for a recipient lookup, in call order (see _resolve_in_turn).
        self._lookup_queue: list[tuple[Sequence[str], asyncio.Future[list[int]]]] = []
        self._lookup_task: asyncio.Task[None] | None = None
        self._lookup_waiters = 0  # queued or woken but not yet resumed
        self._pending: list[_Op] = []
        # mid -> its enqueue, for enqueues in _pending (not yet handed to the writer):
        # an ack of one of these drops the row from the batch instead of deleting it.
        self._unwritten: dict[int, _Enqueue] = {}
        self.elided = 0  # rows never written because the recipient acked first
        self.commit_delay = COMMIT_DELAY
        self._wakeup = asyncio.Event()
        self._top_elided = 0  # highest mid in _unwritten elided: its id must stay used
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self.group_commits = 0  # committed batch transactions, for tests and metrics

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        max_mailbox: int = 10_000,
        migrate: bool = True,
        busy_timeout_ms: int = 5000,
    ) -> Store:
        """Open (and with `migrate`, create or upgrade) the db at `path`.

        synchronous=NORMAL survives any process crash (SIGKILL included); FULL also
        survives power loss, at several times the commit cost. Raises SchemaTooNew for
        a db newer than this code, and with migrate=False SchemaOutdated for an older
        or missing one.
        """
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        if max_mailbox < 1:
            raise ValueError("max_mailbox must be at least 1")
        path = Path(path)
        if migrate:
            await asyncio.to_thread(migrations.migrate, path)
        elif not path.exists():
            raise SchemaOutdated(f"no hushwire database at {path}; run `hushwire-admin migrate`")
        db = await aiosqlite.connect(str(path), isolation_level=None)
        store = cls(db, path, max_mailbox)

        def init(conn: sqlite3.Connection) -> tuple[int, int]:
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
            # sqlite_sequence remembers the highest id ever used, even after the newest
            # rows were acked and deleted: ids must never be reused (clients dedupe).
            row = conn.execute(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'),"
                " 0), COALESCE((SELECT MAX(id) FROM mailbox), 0))"
            ).fetchone()
            (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM user_events").fetchone()
            return int(row[0]) + 1 + MID_GAP, int(seq)

        try:
            store._next_mid, store._events_seen = await store._run(init)
        except BaseException:
            await db.close()
            raise
        store._writer = asyncio.create_task(store._write_loop(), name="hushwire-store-writer")
        return store

    async def close(self) -> None:
        """Flush every pending group commit, then close the connection. Idempotent."""
        if self._closing:
            if self._writer is not None:
                await asyncio.shield(self._writer)
            return
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            await asyncio.shield(self._writer)
        self._closed = True
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

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

    # ------------------------------------------------------------------ users

    async def add_user(self, name: str, token_hash: bytes, salt: bytes, *, now: int) -> None:
        """Create a user; raises UserExists, or RequestError(BAD_REQUEST) for a bad name."""
        check_username(name)

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
            return None if row is None else _user_record(row)

        return await self._run(run)

    async def list_users(self) -> list[UserRecord]:
        def run(conn: sqlite3.Connection) -> list[UserRecord]:
            rows = conn.execute(
                "SELECT name, token_hash, token_salt, disabled, created_at, last_login_at"
                " FROM users ORDER BY name"
            ).fetchall()
            return [_user_record(r) for r in rows]

        return await self._run(run)

    async def set_disabled(self, name: str, disabled: bool, *, now: int) -> None:
        """Disable or enable; a running relay sees it through `user_events`."""

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
        """Delete a user with its keys, watcher links and mailbox (ON DELETE CASCADE)."""

        def run(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise UnknownUser(f"no user named {name!r}")

        await self._run(run)
        self._forget(name)

    async def record_login(self, name: str, *, now: int) -> None:
        """Stamp last_login_at; rides the group commit so logins never wait on a fsync."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(_Login(name, now, fut))
        await fut

    async def user_exists(self, name: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return _user_id(conn, name) is not None

        return await self._run(run)

    async def stats(self) -> dict[str, int]:
        """Counts for `hushwire-admin stats`: users, disabled, queued, db_bytes."""

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            users, disabled = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(disabled), 0) FROM users"
            ).fetchone()
            (queued,) = conn.execute("SELECT COUNT(*) FROM mailbox").fetchone()
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
            wal = Path(f"{self._path}-wal")
            wal_bytes = wal.stat().st_size if wal.exists() else 0
            return {
                "users": int(users),
                "disabled": int(disabled),
                "queued": int(queued),
                "db_bytes": int(pages) * int(page_size) + wal_bytes,
            }

        return await self._run(run)

    async def user_events(self, after: int = 0, *, limit: int = 1000) -> list[UserEvent]:
        """Account changes with seq > `after`, oldest first.

        The relay polls this (one indexed query; empty almost always) and closes the
        live session of any user with an event in DISCONNECTING_EVENTS.
        """

        def run(conn: sqlite3.Connection) -> list[UserEvent]:
            rows = conn.execute(
                "SELECT seq, name, kind FROM user_events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, max(1, limit)),
            ).fetchall()
            return [UserEvent(int(s), n, UserEventKind(k)) for s, n, k in rows]

        events = await self._run(run)
        for ev in events:
            if ev.kind in (UserEventKind.REMOVED, UserEventKind.ADDED):
                # Another process (the admin CLI) changed who exists: drop cached ids.
                self._forget(ev.name)
        return events

    async def last_user_event(self) -> int:
        """The newest event seq: where a starting relay begins polling.

        Polling this alone is enough to keep the store's name -> id cache right: when
        the log moved, the names of added or removed users are fetched in the same call
        and dropped from the cache, so a user removed and re-added by the admin CLI is
        never addressed by a stale id.
        """
        seen = self._events_seen

        def run(conn: sqlite3.Connection) -> tuple[int, list[str]]:
            (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM user_events").fetchone()
            if seq <= seen:
                return int(seq), []
            rows = conn.execute(
                "SELECT name FROM user_events WHERE seq > ? AND kind IN ('added', 'removed')",
                (seen,),
            ).fetchall()
            return int(seq), [r[0] for r in rows]

        seq, names = await self._run(run)
        for name in names:
            self._forget(name)
        self._events_seen = max(self._events_seen, seq)
        return seq

    def _forget(self, name: str) -> None:
        rid = self._ids.pop(name, None)
        if rid is not None:
            self._counts.pop(rid, None)

    # ------------------------------------------------------------------ key directory

    async def publish_keys(
        self,
        user: str,
        *,
        identity: IdentityPublic | None,
        signed_prekey: SignedPrekey | None,
        one_time: Sequence[OneTimePrekey],
        now: int,
    ) -> PublishResult:
        """Store a user's keys in one transaction.

        A changed identity (other group, sign_key or dh_key) deletes the user's old
        prekeys, which belong to the old identity, and returns the watchers (users who
        fetched the old identity) so the relay can push key_changed.
        """
        if identity is not None:
            if not isinstance(identity.group, str) or not 0 < len(identity.group) <= 64:
                raise RequestError(ErrorCode.BAD_KEYS, "identity group must be a short name")
            _check_blob(identity.sign_key, "identity sign_key")
            _check_blob(identity.dh_key, "identity dh_key")
            _check_blob(identity.dh_sig, "identity dh_sig")
        if signed_prekey is not None:
            _check_prekey_id(signed_prekey.id, "signed prekey")
            _check_blob(signed_prekey.key, "signed prekey")
            _check_blob(signed_prekey.sig, "signed prekey signature")
        if len(one_time) > MAX_ONE_TIME_PREKEYS:
            raise RequestError(
                ErrorCode.BAD_KEYS, f"at most {MAX_ONE_TIME_PREKEYS} one-time prekeys per user"
            )
        otk_rows = [
            (_check_prekey_id(k.id, "one-time prekey"), _check_blob(k.key, "one-time prekey"))
            for k in one_time
        ]

        def run(conn: sqlite3.Connection) -> PublishResult:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = publish(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return result

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
                    (uid, BUNDLE_VERSION, *new, identity.dh_sig, now),
                )
            elif old is None and (signed_prekey is not None or otk_rows):
                raise RequestError(
                    ErrorCode.NO_KEYS, "publish an identity before publishing prekeys"
                )
            if signed_prekey is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO signed_prekeys (user_id, prekey_id, key, sig,"
                    " created_at) VALUES (?, ?, ?, ?, ?)",
                    (uid, signed_prekey.id, signed_prekey.key, signed_prekey.sig, now),
                )
            if otk_rows:
                conn.executemany(
                    "INSERT OR REPLACE INTO one_time_prekeys (user_id, prekey_id, key)"
                    " VALUES (?, ?, ?)",
                    [(uid, pid, key) for pid, key in otk_rows],
                )
            left = _prekey_count(conn, uid)
            if left > MAX_ONE_TIME_PREKEYS:
                raise RequestError(
                    ErrorCode.BAD_KEYS,
                    f"at most {MAX_ONE_TIME_PREKEYS} one-time prekeys per user"
                    f" ({left} with this upload)",
                )
            return PublishResult(changed, watchers, left)

        return await self._run(run)

    async def fetch_bundle(
        self, fetcher: str, target: str, *, one_time: bool = True
    ) -> PrekeyBundle | None:
        """A bundle for `target`, consuming its lowest one-time prekey, or None.

        With `one_time` False the bundle has no one-time prekey and consumes none (the
        last-resort bundle: X3DH without DH4, the signed prekey alone).

        None when the target does not exist or has no identity and signed prekey yet.
        DELETE ... RETURNING inside one transaction on the single connection means two
        concurrent fetches can never receive the same one-time prekey. Records
        `fetcher` as a watcher of `target` for key_changed pushes.
        """

        def run(conn: sqlite3.Connection) -> PrekeyBundle | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                bundle = fetch(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return bundle

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
            return PrekeyBundle(
                user=target,
                identity=IdentityPublic(
                    group=ident[1], sign_key=ident[2], dh_key=ident[3], dh_sig=ident[4]
                ),
                signed_prekey=SignedPrekey(id=int(spk[0]), key=spk[1], sig=spk[2]),
                one_time_prekey=None if otk is None else OneTimePrekey(int(otk[0]), otk[1]),
                version=int(ident[0]),
            )

        return await self._run(run)

    async def contacts(self, user: str) -> set[str]:
        """Users in a session relation with `user`: either fetched the other's bundle."""

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
        """Identities that changed since `watcher` last fetched them (for key_changed at login)."""

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
        """One-time prekeys left for `user` (0 for an unknown user)."""

        def run(conn: sqlite3.Connection) -> int:
            uid = _user_id(conn, user)
            return 0 if uid is None else _prekey_count(conn, uid)

        return await self._run(run)

    async def key_status(self, user: str) -> tuple[bool, int]:
        """(has an identity, one-time prekeys left): what a client needs at login."""

        def run(conn: sqlite3.Connection) -> tuple[bool, int]:
            uid = _user_id(conn, user)
            if uid is None:
                return False, 0
            row = conn.execute("SELECT 1 FROM identity_keys WHERE user_id = ?", (uid,)).fetchone()
            return row is not None, _prekey_count(conn, uid)

        return await self._run(run)

    # ------------------------------------------------------------------ mailbox

    async def enqueue(
        self,
        sender: str,
        recipients: Sequence[str],
        body: bytes,
        *,
        now: int,
        on_reserved: Callable[[list[int]], None] | None = None,
    ) -> list[int]:
        """Store one envelope per recipient; return their ids once committed.

        All or nothing: an unknown recipient (UNKNOWN_USER) or a full mailbox
        (MAILBOX_FULL) refuses the whole send before anything is written.

        `on_reserved(mids)` runs as soon as the ids are reserved, before the commit (the
        relay pushes to online recipients then). If a recipient acks its envelope before
        the commit, that row is never written and, once every row of the send is acked
        or committed, `enqueue` returns: the envelope is then safe with the recipient.
        """
        self._check_recipients(recipients, body)
        if self.cached(recipients):
            rids = [self._ids[n] for n in recipients]  # fast path: no await at all
        else:
            rids = await self._resolve_in_turn(recipients)
            self._check_open()  # close() may have begun while we resolved names
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._reserve(sender, recipients, rids, body, now, on_reserved, fut)
        return await fut

    def cached(self, recipients: Sequence[str]) -> bool:
        """True if `enqueue_nowait` can take a send to `recipients` (ids cached)."""
        return self._lookup_waiters == 0 and all(
            self._ids.get(n) in self._counts for n in recipients
        )

    def enqueue_nowait(
        self,
        sender: str,
        recipients: Sequence[str],
        body: bytes,
        *,
        now: int,
        on_done: Callable[[list[int] | None, BaseException | None], None],
        on_reserved: Callable[[list[int]], None] | None = None,
    ) -> None:
        """`enqueue` without a coroutine, for callers that found `cached(recipients)` true
        in this same step (so it still is).

        Raises at once for a refused send. Otherwise `on_done(mids, None)` or
        `on_done(None, error)` is called once, when `enqueue` would return or raise, from
        whatever settles it (the recipient's ack, or the commit).
        """
        self._check_recipients(recipients, body)
        ids = self._ids
        rids = [ids[n] for n in recipients]
        self._reserve(sender, recipients, rids, body, now, on_reserved, Waiter(on_done))

    def _check_recipients(self, recipients: Sequence[str], body: bytes) -> None:
        self._check_open()
        if not recipients:
            raise RequestError(ErrorCode.BAD_REQUEST, "no recipients")
        if len(recipients) > 1 and len(set(recipients)) != len(recipients):
            raise RequestError(ErrorCode.BAD_REQUEST, "a recipient is named twice")
        if not isinstance(body, bytes | bytearray | memoryview):
            raise RequestError(ErrorCode.BAD_REQUEST, "envelope body must be bytes")

    def _reserve(
        self,
        sender: str,
        recipients: Sequence[str],
        rids: list[int],
        body: bytes,
        now: int,
        on_reserved: Callable[[list[int]], None] | None,
        fut: asyncio.Future[list[int]] | Waiter,
    ) -> None:
        # No await between the check and the reservation: the count cannot change.
        for name, rid in zip(recipients, rids, strict=True):
            if self._counts[rid] >= self._max_mailbox:
                raise RequestError(
                    ErrorCode.MAILBOX_FULL,
                    f"the mailbox of {name!r} is full ({self._max_mailbox} envelopes)",
                )
        for rid in rids:
            self._counts[rid] += 1
        first = self._next_mid
        self._next_mid += len(rids)
        mids = list(range(first, first + len(rids)))
        op = _Enqueue(sender, list(recipients), rids, mids, bytes(body), now, fut)
        self._submit(op)
        for mid in mids:
            self._unwritten[mid] = op
        if on_reserved is not None:
            on_reserved(mids)

    async def pending(
        self, recipient: str, *, after: int = 0, limit: int = 100
    ) -> list[StoredEnvelope]:
        """Committed envelopes for `recipient` with id > `after`, oldest first."""
        limit = max(1, min(limit, MAX_PENDING_LIMIT))

        def run(conn: sqlite3.Connection) -> list[StoredEnvelope]:
            rid = _user_id(conn, recipient)
            if rid is None:
                return []
            rows = conn.execute(
                "SELECT id, sender, created_at, body FROM mailbox"
                " WHERE recipient_id = ? AND id > ? ORDER BY id LIMIT ?",
                (rid, after, limit),
            ).fetchall()
            return [StoredEnvelope(int(i), s, int(c), b) for i, s, c, b in rows]

        return await self._run(run)

    async def ack(self, recipient: str, mids: Sequence[int]) -> int:
        """Delete the recipient's own envelopes among `mids`; return how many went."""
        deleted = self.ack_nowait(recipient, mids)
        if deleted is None:  # the recipient's id is not cached yet
            try:
                (rid,) = await self._resolve([recipient])
            except RequestError:
                return 0
            deleted = self._ack_ids(rid, _valid_mids(mids))
        return deleted if isinstance(deleted, int) else await deleted

    def ack_nowait(self, recipient: str, mids: Sequence[int]) -> int | asyncio.Future[int] | None:
        """`ack` without a coroutine: the count now, or a future for it once committed.

        None means the recipient's id is not cached: await `ack` instead (nothing done).
        """
        self._check_open()
        wanted = _valid_mids(mids)
        if not wanted:
            return 0
        rid = self._ids.get(recipient)
        if rid is None:
            return None
        return self._ack_ids(rid, wanted)

    def _ack_ids(self, rid: int, wanted: list[int]) -> int | asyncio.Future[int]:
        elided = self._elide(rid, wanted) if self._unwritten else ()
        if elided:
            wanted = [m for m in wanted if m not in elided]
            if not wanted:
                return len(elided)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._submit(_Ack(rid, wanted, fut, len(elided)))
        return fut

    def _elide(self, rid: int, mids: list[int]) -> set[int]:
        """Drop not-yet-written rows of `rid` among `mids` from the pending batch."""
        elided: set[int] = set()
        for mid in mids:
            op = self._unwritten.get(mid)
            if op is None or op.rids[op.mids.index(mid)] != rid:
                continue
            del self._unwritten[mid]
            if mid > self._top_elided:
                self._top_elided = mid
            if op.elided is None:
                op.elided = set()
            op.elided.add(mid)
            elided.add(mid)
            self._counts[rid] -= 1
            self.elided += 1
            if op.all_elided():
                _resolve(op.fut, op.mids)  # every copy is with its recipient
        return elided

    async def mailbox_count(self, recipient: str) -> int:
        """Envelopes queued for `recipient`, including ones whose commit is in flight."""
        try:
            (rid,) = await self._resolve([recipient])
        except RequestError:
            return 0
        return self._counts[rid]

    async def purge(self, *, older_than: int) -> int:
        """Retention: delete envelopes created before `older_than`; return the count.

        Also trims user_events to the newest USER_EVENTS_KEPT rows.
        """

        def run(conn: sqlite3.Connection) -> Counter[int]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                gone = Counter(
                    int(r[0])
                    for r in conn.execute(
                        "DELETE FROM mailbox WHERE created_at < ? RETURNING recipient_id",
                        (older_than,),
                    ).fetchall()
                )
                conn.execute(
                    "DELETE FROM user_events WHERE seq <= (SELECT MAX(seq) FROM user_events) - ?",
                    (USER_EVENTS_KEPT,),
                )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return gone

        gone = await self._run(run)
        for rid, n in gone.items():
            if rid in self._counts:
                self._counts[rid] -= n
        return sum(gone.values())

    async def checkpoint(self) -> None:
        """PRAGMA wal_checkpoint(PASSIVE): call periodically, off the hot path."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        await self._run(run)

    async def _resolve_in_turn(self, names: Sequence[str]) -> list[int]:
        """`_resolve`, but never overtaking an earlier enqueue that had to look up.

        Mailbox ids are reserved in call order only if no enqueue overtakes another
        while one awaits a lookup; otherwise one sender's pipelined envelopes could be
        reordered (A to [carol, bob] looks carol up, B to [bob] must not pass it). So
        waiters queue in call order, one task looks up every missing name of everyone
        queued in a single db call, and wakes the waiters in order in one loop
        iteration; the fast path stays closed until all of them have resumed. A cold
        cache under a burst thus costs one lookup, not one per enqueue.
        """
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._lookup_queue.append((names, fut))
        self._lookup_waiters += 1
        if self._lookup_task is None:
            self._lookup_task = asyncio.create_task(self._lookup_worker())
        try:
            return await fut
        finally:
            self._lookup_waiters -= 1

    async def _lookup_worker(self) -> None:
        try:
            while self._lookup_queue:
                batch, self._lookup_queue = self._lookup_queue, []
                wanted = list(dict.fromkeys(n for names, _ in batch for n in names))
                try:
                    await self._load(wanted)
                except Exception as exc:
                    for _, fut in batch:
                        _fail(fut, exc)
                    continue
                for names, fut in batch:
                    try:
                        _resolve(fut, self._cached_ids(names))
                    except RequestError as exc:
                        _fail(fut, exc)
        finally:
            self._lookup_task = None

    async def _resolve(self, names: Sequence[str]) -> list[int]:
        """users.id for each name (cached), loading mailbox counts for new ones."""
        await self._load(names)
        return self._cached_ids(names)

    async def _load(self, names: Sequence[str]) -> None:
        """Cache id and mailbox count of each name not cached yet, in one db call."""
        missing = [n for n in names if self._ids.get(n) not in self._counts]
        if not missing:
            return

        def run(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
            found: dict[str, tuple[int, int]] = {}
            for name in missing:
                rid = _user_id(conn, name)
                if rid is not None:
                    (count,) = conn.execute(
                        "SELECT COUNT(*) FROM mailbox WHERE recipient_id = ?", (rid,)
                    ).fetchone()
                    found[name] = (rid, int(count))
            return found

        for name, (rid, count) in (await self._run(run)).items():
            self._ids[name] = rid
            # setdefault: a count loaded earlier already includes in-flight rows.
            self._counts.setdefault(rid, count)

    def _cached_ids(self, names: Sequence[str]) -> list[int]:
        """Cached ids for `names`; UNKNOWN_USER naming every name that is not there."""
        rids = [self._ids.get(n) for n in names]
        unknown = [
            n for n, r in zip(names, rids, strict=True) if r is None or r not in self._counts
        ]
        if unknown:
            raise RequestError(
                ErrorCode.UNKNOWN_USER, f"no such user: {', '.join(sorted(unknown))}"
            )
        return [r for r in rids if r is not None]

    # ------------------------------------------------------------------ group commit

    def _check_open(self) -> None:
        if self._closing:
            raise StoreError("the store is closing")

    def _submit(self, op: _Op) -> None:
        self._check_open()
        self._pending.append(op)
        self._wakeup.set()

    async def _write_loop(self) -> None:
        """The single writer: commit whatever accumulated, as one transaction."""
        while True:
            await self._wakeup.wait()
            if self._unwritten and not self._closing and self.commit_delay > 0:
                # Envelopes are already with online recipients; give their acks a moment
                # to arrive so those rows are never written (see `ack`).
                await asyncio.sleep(self.commit_delay)
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            top, self._top_elided = self._top_elided, 0
            self._unwritten = {}
            # Enqueues whose every row was acked are already answered: nothing to write.
            batch = [op for op in batch if type(op) is not _Enqueue or not op.all_elided()]
            if batch or top:
                await self._commit(batch, top)
            if self._closing and not self._pending:
                return

    async def _commit(self, batch: list[_Op], top: int) -> None:
        try:
            outcomes = await self._run(lambda conn: _write_batch(conn, batch, top))
        except Exception as exc:
            # Nothing of this batch is committed: every waiter must hear so.
            err = exc if isinstance(exc, StoreError) else StoreError(f"commit failed: {exc}")
            for op in batch:
                self._settle(op, _Failed(err))
            return
        self.group_commits += 1
        for op, outcome in zip(batch, outcomes, strict=True):
            self._settle(op, outcome)

    def _settle(self, op: _Op, outcome: object) -> None:
        if isinstance(op, _Enqueue):
            if isinstance(outcome, _Failed):
                for mid, rid in zip(op.mids, op.rids, strict=True):
                    if rid in self._counts and not (op.elided and mid in op.elided):
                        self._counts[rid] -= 1
                if outcome.error.code is ErrorCode.UNKNOWN_USER:
                    for name in op.names:
                        self._forget(name)
                _fail(op.fut, outcome.error)
            else:
                _resolve(op.fut, op.mids)
        elif isinstance(op, _Ack):
            if isinstance(outcome, _Failed):
                _fail(op.fut, outcome.error)
            else:
                deleted = int(outcome)  # type: ignore[call-overload]
                if op.rid in self._counts:
                    self._counts[op.rid] -= deleted
                _resolve(op.fut, deleted + op.elided)
        elif isinstance(outcome, _Failed):
            _fail(op.fut, outcome.error)
        else:
            _resolve(op.fut, None)


def _user_record(row: Sequence[Any]) -> UserRecord:
    name, token_hash, salt, disabled, created_at, last_login = row
    return UserRecord(
        name=name,
        token_hash=bytes(token_hash),
        token_salt=bytes(salt),
        disabled=bool(disabled),
        created_at=int(created_at),
        last_login_at=None if last_login is None else int(last_login),
    )


def _prekey_count(conn: sqlite3.Connection, uid: int) -> int:
    (n,) = conn.execute(
        "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = ?", (uid,)
    ).fetchone()
    return int(n)


_INSERT_ENVELOPE = (
    "INSERT INTO mailbox (id, recipient_id, sender, created_at, body) VALUES (?, ?, ?, ?, ?)"
)
_DELETE_ENVELOPE = "DELETE FROM mailbox WHERE id = ? AND recipient_id = ?"
_STAMP_LOGIN = "UPDATE users SET last_login_at = ? WHERE name = ?"


def _write_batch(conn: sqlite3.Connection, batch: list[_Op], top: int) -> list[object]:
    """Write a whole batch in one transaction (runs on the db thread).

    Fast path: all inserts in one executemany. If a constraint fails (a recipient was
    removed by the admin CLI a moment ago), redo the batch with one savepoint per
    operation so only the offending send fails and the rest still commit. `top`, if
    not 0, is the highest id of a row acked before it was written: it stays used.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            outcomes = _apply_fast(conn, batch)
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            outcomes = _apply_each(conn, batch)
        if top:
            conn.execute(_SEQ_RAISE, (top, top))
            conn.execute(_SEQ_CREATE, (top,))
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return outcomes


def _envelope_rows(op: _Enqueue) -> list[tuple[int, int, str, int, bytes]]:
    elided = op.elided or ()
    return [
        (mid, rid, op.sender, op.now, op.body)
        for mid, rid in zip(op.mids, op.rids, strict=True)
        if mid not in elided
    ]


_SEQ_RAISE = "UPDATE sqlite_sequence SET seq = ? WHERE name = 'mailbox' AND seq < ?"
_SEQ_CREATE = (
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'mailbox', ?"
    " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'mailbox')"
)


def _apply_fast(conn: sqlite3.Connection, batch: list[_Op]) -> list[object]:
    rows = [row for op in batch if isinstance(op, _Enqueue) for row in _envelope_rows(op)]
    if rows:
        conn.executemany(_INSERT_ENVELOPE, rows)
    logins = [(op.now, op.name) for op in batch if isinstance(op, _Login)]
    if logins:
        conn.executemany(_STAMP_LOGIN, logins)
    outcomes: list[object] = []
    for op in batch:
        if isinstance(op, _Ack):
            cur = conn.executemany(_DELETE_ENVELOPE, [(m, op.rid) for m in op.mids])
            outcomes.append(cur.rowcount)
        else:
            outcomes.append(None)
    return outcomes


def _apply_each(conn: sqlite3.Connection, batch: list[_Op]) -> list[object]:
    outcomes: list[object] = []
    for op in batch:
        conn.execute("SAVEPOINT op")
        try:
            outcomes.append(_apply_fast(conn, [op])[0])
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK TO op")
            if "FOREIGN KEY" in str(exc):
                outcomes.append(
                    _Failed(RequestError(ErrorCode.UNKNOWN_USER, "a recipient no longer exists"))
                )
            else:
                outcomes.append(_Failed(StoreError(f"envelope not stored: {exc}")))
        conn.execute("RELEASE op")
    return outcomes
