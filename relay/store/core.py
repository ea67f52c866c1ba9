"""`Store`, what the handlers and the admin CLI call: accounts, the key directory,
account events and (from `Mailbox`) the mailbox, over one backend.

Checks and in-memory state are here, once; the backend only runs the SQL. Time is
always passed in (`now`, unix seconds); nothing here reads the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from hushwire.common.keys import (
    BUNDLE_VERSION,
    IdentityPublic,
    KemPrekey,
    OneTimePrekey,
    PrekeyBundle,
    SignedPrekey,
)
from hushwire.common.names import check_username
from hushwire.relay.devices import AccountDevices
from hushwire.relay.store.batching import Login
from hushwire.relay.store.devices import DeviceStore
from hushwire.relay.store.keys import check_kem_publish, check_publish
from hushwire.relay.store.quota import DiskGuard, QuotaLimits
from hushwire.relay.store.records import (
    PublishResult,
    UserEvent,
    UserEventKind,
    UserRecord,
)
from hushwire.relay.store.sqlite import SqliteBackend
from hushwire.relay.store.urls import is_postgres_url, postgres_module

if TYPE_CHECKING:
    from hushwire.relay.store import Backend


class Store(DeviceStore):
    """The relay's persistent state; create with `await Store.open(path)`."""

    def __init__(
        self,
        backend: Backend,
        *,
        limits: QuotaLimits,
        disk: DiskGuard,
        highest_mid: int,
        events_seen: int,
    ) -> None:
        super().__init__(backend, limits, disk, highest_mid)
        self._multi: set[str] = set()  # filled by open() (store/devices.py)
        self._lists: dict[str, AccountDevices] = {}  # filled on demand (store/devices.py)
        self._lists_epoch = 0
        self._events_seen = events_seen  # newest user_events seq whose cache effects are applied

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        target: str | Path,
        *,
        synchronous: str = "NORMAL",
        max_mailbox: int = 10_000,
        quota: QuotaLimits | None = None,
        min_free_disk: int = 0,
        migrate: bool = True,
        busy_timeout_ms: int = 5000,
    ) -> Store:
        """Open (and with `migrate`, create or upgrade) the store at `target`: a SQLite
        file path, or a postgresql:// URL.

        SQLite: synchronous=NORMAL survives any process crash (SIGKILL included); FULL
        also survives power loss, at several times the commit cost. PostgreSQL commits
        as its server is configured (synchronous_commit) and ignores both settings.
        Raises SchemaTooNew for a db newer than this code, and with migrate=False
        SchemaOutdated for an older or missing one. Several relays may open one
        PostgreSQL database (ids and quotas come from it: mailbox.py); a SQLite relay
        takes relay/dblock.py's file lock.

        `quota` (default: `max_mailbox` envelopes per mailbox, the other limits at their
        defaults) bounds each mailbox and each sender's share of it; below
        `min_free_disk` free bytes on a SQLite db's file system (0: no check) sends are
        refused with `storage_full`.
        """
        if max_mailbox < 1:
            raise ValueError("max_mailbox must be at least 1")
        limits = quota or QuotaLimits(envelopes=max_mailbox)
        backend: Backend
        if is_postgres_url(target):
            pg = await postgres_module().PostgresBackend.open(str(target), migrate=migrate)
            pg.quota = limits
            backend = pg
        else:
            backend = await SqliteBackend.open(
                target, synchronous=synchronous, migrate=migrate, busy_timeout_ms=busy_timeout_ms
            )
        try:
            highest_mid, events_seen = await backend.high_water()
        except BaseException:
            await backend.close()
            raise
        store = cls(
            backend,
            limits=limits,
            # PostgreSQL's disk is its server's to watch, not this host's.
            disk=DiskGuard(Path(target), 0 if is_postgres_url(target) else min_free_disk),
            highest_mid=highest_mid,
            events_seen=events_seen,
        )
        try:
            await store._load_multi()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Flush every pending group commit, then close the backend. Idempotent."""
        if await self._batch.close():
            await self._backend.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ accounts

    async def add_user(self, name: str, token_hash: bytes, salt: bytes, *, now: int) -> None:
        """Create a user; raises UserExists, or RequestError(BAD_REQUEST) for a bad name."""
        check_username(name)
        await self._backend.add_user(name, token_hash, salt, now=now)

    async def get_user(self, name: str) -> UserRecord | None:
        return await self._backend.get_user(name)

    async def list_users(self) -> list[UserRecord]:
        return await self._backend.list_users()

    async def page_users(self, after: str | None, limit: int) -> list[str]:
        """One page of `who`: a query sized by the page, not by the whole user list."""
        return await self._backend.page_users(after, limit)

    async def set_disabled(self, name: str, disabled: bool, *, now: int) -> None:
        """Disable or enable; a running relay sees it through `user_events`."""
        await self._backend.set_disabled(name, disabled, now=now)

    async def set_token(self, name: str, token_hash: bytes, salt: bytes, *, now: int) -> None:
        await self._backend.set_token(name, token_hash, salt, now=now)

    async def remove_user(self, name: str) -> None:
        """Delete a user with its keys, watcher links and mailbox (ON DELETE CASCADE)."""
        await self._backend.remove_user(name)
        self._forget(name)

    async def record_login(self, name: str, *, now: int) -> None:
        """Stamp last_login_at; rides the group commit so logins never wait on a fsync."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(Login(name, now, fut))
        await fut

    async def user_exists(self, name: str) -> bool:
        return await self._backend.user_exists(name)

    async def stats(self) -> dict[str, int]:
        """Counts for `hushwire-admin stats`: users, disabled, queued, payloads (group
        payloads stored, each once), payload_bytes, db_bytes."""
        return await self._backend.stats()

    async def queued_by_user(self) -> dict[str, int]:
        """Committed envelopes waiting per recipient, for `hushwire-admin stats`."""
        return await self._backend.queued_by_user()

    # ------------------------------------------------------------------ account events

    async def user_events(self, after: int = 0, *, limit: int = 1000) -> list[UserEvent]:
        """Account changes with seq > `after`, oldest first.

        The relay polls this (one indexed query; empty almost always) and closes the
        live session of any user with an event in DISCONNECTING_EVENTS.
        """
        events = await self._backend.user_events(after, max(1, limit))
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
        seq, names = await self._backend.last_user_event(self._events_seen)
        for name in names:
            self._forget(name)
        self._events_seen = max(self._events_seen, seq)
        return seq

    # ------------------------------------------------------------------ key directory

    async def publish_keys(
        self,
        user: str,
        *,
        identity: IdentityPublic | None,
        signed_prekey: SignedPrekey | None,
        one_time: Sequence[OneTimePrekey],
        now: int,
        kem_last_resort: KemPrekey | None = None,
        kem_one_time: Sequence[KemPrekey] = (),
        version: int = BUNDLE_VERSION,
    ) -> PublishResult:
        """Store a user's keys in one transaction.

        A changed identity (other group, sign_key or dh_key) deletes the user's old
        prekeys, which belong to the old identity, and returns the watchers (users who
        fetched the old identity) so the relay can push key_changed. An identity marks
        the user's keys as of protocol `version`; publishing it over version 1 drops
        any KEM prekeys (that user's client went back to X3DH).
        """
        otk_rows = check_publish(identity, signed_prekey, one_time)
        kem = check_kem_publish(kem_last_resort, kem_one_time)
        return await self._backend.publish_keys(
            user,
            identity=identity,
            signed_prekey=signed_prekey,
            one_time=otk_rows,
            now=now,
            kem=kem,
            version=version,
        )

    async def fetch_bundle(
        self, fetcher: str, target: str, version: int = BUNDLE_VERSION, *, one_time: bool = True
    ) -> PrekeyBundle | None:
        """A bundle of protocol `version` for `target`, consuming its lowest one-time
        prekey (and, for version 2, its lowest one-time KEM prekey), or None.

        None when the target does not exist or has no complete bundle yet (identity,
        signed prekey and, for version 2, a KEM prekey). RequestError(UNSUPPORTED_VERSION)
        when the target's keys are for the other version; nothing is consumed then.
        The backend takes the prekeys and returns them in one transaction, so two
        concurrent fetches can never receive the same one-time prekey. Records
        `fetcher` as a watcher of `target` for key_changed pushes. With `one_time`
        False the bundle has no one-time prekey and consumes none: the last-resort
        bundle (X3DH without DH4, the signed prekey alone).
        """
        return await self._backend.fetch_bundle(fetcher, target, version, one_time=one_time)

    async def contacts(self, user: str) -> set[str]:
        """Users in a session relation with `user`: one fetched the other's bundle."""
        return await self._backend.contacts(user)

    async def changed_identities(self, watcher: str) -> list[tuple[str, IdentityPublic]]:
        """Identities that changed since `watcher` last fetched them (for key_changed at login)."""
        return await self._backend.changed_identities(watcher)

    async def prekey_count(self, user: str) -> int:
        """One-time prekeys left for `user` (0 for an unknown user)."""
        return await self._backend.prekey_count(user)

    async def key_status(self, user: str) -> tuple[bool, int]:
        """(has an identity, one-time prekeys left): what a client needs at login."""
        return await self._backend.key_status(user)

    async def kem_status(self, user: str) -> tuple[int, int]:
        """(bundle version of the keys held, 0 if none; one-time KEM prekeys left)."""
        return await self._backend.kem_status(user)

    async def checkpoint(self) -> None:
        """Backend housekeeping (SQLite: a WAL checkpoint that truncates the WAL, so rows
        deleted since the last one are gone from it too): call periodically, off the hot
        path."""
        await self._backend.checkpoint()
