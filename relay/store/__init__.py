"""The relay's persistent state: accounts, the key directory, account events and the
mailbox, behind one interface over interchangeable backends.

`Store` (core.py, mailbox.py) is what the handlers and the admin CLI use; it holds every
check and all in-memory state once. A backend runs the SQL: `Backend` below is all a
backend must do. Sends, acks and login stamps ride the group commit (batching.py): many
operations, one transaction, every caller answered after the commit, so `enqueue`
returning means the rows are durable. Records and limits are in records.py.

Layout: records.py (record types, limits), batching.py (group commit), mailbox.py
(reservation, limits, acks, id cache), keys.py (checks on uploads), devices.py
(accounts with devices), core.py (`Store`), sqlite.py (the embedded default backend)
with sqlite_devices.py and sqlite_batch.py (its group commit), postgres.py (asyncpg,
imported only for a postgresql:// URL) with postgres_devices.py and postgres_batch.py (its
group commit), urls.py (telling a path from a URL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hushwire.common.keys import IdentityPublic, PrekeyBundle, SignedDeviceList, SignedPrekey
from hushwire.relay.devices import AccountDevices
from hushwire.relay.store.batching import Op
from hushwire.relay.store.core import Store
from hushwire.relay.store.quota import DiskGuard, QuotaLimits, Usage
from hushwire.relay.store.records import (
    DISCONNECTING_EVENTS,
    MAX_KEY_BYTES,
    MAX_ONE_TIME_PREKEYS,
    MAX_PENDING_LIMIT,
    MAX_PREKEY_ID,
    USER_EVENTS_KEPT,
    KemUpload,
    PublishResult,
    StoredEnvelope,
    UserEvent,
    UserEventKind,
    UserRecord,
)


class Backend(Protocol):
    """What a storage backend must do. Each method is one transaction.

    Errors: StoreError for a database failure, UserExists / UnknownUser for the admin
    operations, RequestError(UNKNOWN_USER | NO_KEYS | BAD_KEYS) for publish_keys.
    Inputs are already checked by `Store`; users are addressed by name, mailbox rows by
    the recipient's numeric id (`recipients` hands ids out).
    """

    async def close(self) -> None: ...

    async def high_water(self) -> tuple[int, int]:
        """(highest envelope id ever used, even if deleted; newest user_events seq)."""
        ...

    # accounts
    async def add_user(self, name: str, token_hash: bytes, salt: bytes, *, now: int) -> None: ...
    async def get_user(self, name: str) -> UserRecord | None: ...
    async def list_users(self) -> list[UserRecord]: ...
    async def page_users(self, after: str | None, limit: int) -> list[str]:
        """Up to `limit` enabled account names above `after`, in byte order."""
        ...

    async def set_disabled(self, name: str, disabled: bool, *, now: int) -> None: ...
    async def set_token(self, name: str, token_hash: bytes, salt: bytes, *, now: int) -> None: ...
    async def remove_user(self, name: str) -> None: ...
    async def user_exists(self, name: str) -> bool: ...
    async def stats(self) -> dict[str, int]: ...
    async def queued_by_user(self) -> dict[str, int]:
        """Committed envelopes waiting per recipient, for users with any."""
        ...

    # account events (written by the schema's triggers, whoever changes users)
    async def user_events(self, after: int, limit: int) -> list[UserEvent]: ...
    async def last_user_event(self, seen: int) -> tuple[int, list[str]]:
        """(newest seq, names added or removed after `seen`)."""
        ...

    # key directory
    async def publish_keys(
        self,
        user: str,
        *,
        identity: IdentityPublic | None,
        signed_prekey: SignedPrekey | None,
        one_time: Sequence[tuple[int, bytes]],
        now: int,
        kem: KemUpload,
        version: int,
    ) -> PublishResult: ...
    async def fetch_bundle(
        self, fetcher: str, target: str, version: int, *, one_time: bool
    ) -> PrekeyBundle | None:
        """RequestError(UNSUPPORTED_VERSION), consuming nothing, if the target's keys are
        for the other protocol version."""
        ...

    async def contacts(self, user: str) -> set[str]:
        """Users of whom `user` fetched the bundle, or who fetched `user`'s."""
        ...

    async def changed_identities(self, watcher: str) -> list[tuple[str, IdentityPublic]]: ...
    async def prekey_count(self, user: str) -> int: ...
    async def key_status(self, user: str) -> tuple[bool, int]: ...
    async def kem_status(self, user: str) -> tuple[int, int]: ...

    # devices (store/devices.py, sqlite_devices.py; migration 0004)
    async def list_principals(self) -> list[UserRecord]:
        """Accounts and their linked devices (`list_users` gives accounts only)."""
        ...

    async def multi_device_accounts(self) -> set[str]: ...
    async def account_devices(self, accounts: Sequence[str]) -> dict[str, AccountDevices]: ...
    async def account_identity(self, account: str) -> IdentityPublic | None: ...
    async def watch(self, watcher: str, account: str) -> None: ...
    async def device_seen(self, account: str) -> dict[int, int]: ...
    async def list_devices(self, account: str) -> list[tuple[int, int, int | None]]: ...
    async def store_device_list(
        self,
        account: str,
        version: int,
        signed: SignedDeviceList,
        *,
        removed: frozenset[int],
        now: int,
    ) -> tuple[list[str], list[str], int]:
        """(watchers, principals removed, devices left); STALE_DEVICE_LIST if not newer."""
        ...

    async def add_device(
        self,
        account: str,
        device: int,
        version: int,
        signed: SignedDeviceList,
        *,
        name: str,
        token_hash: bytes,
        salt: bytes,
        now: int,
    ) -> tuple[list[str], int]:
        """(watchers, devices now)."""
        ...

    async def reset_devices(self, account: str, *, keep: int) -> tuple[list[int], list[str]]:
        """(device ids unlinked, principals removed)."""
        ...

    async def remove_device(self, account: str, device: int) -> tuple[str, int]:
        """(principal removed, devices left); UnknownUser if there is no such device."""
        ...

    # mailbox
    async def pending(self, recipient: str, after: int, limit: int) -> list[StoredEnvelope]: ...
    async def recipients(self, names: Sequence[str]) -> dict[str, tuple[int, Usage]]:
        """name -> (user id, its mailbox's usage: [(sender, envelopes, bytes)]) for each
        of `names` that exists."""
        ...

    async def write_batch(self, batch: list[Op], top: int) -> list[object]:
        """One group commit (see batching.py): insert rows and the payloads they name,
        delete, stamp; keep `top` used. An ack's outcome lists (sender, size) of each row
        it deleted, size being its body and payload bytes (what quotas count)."""
        ...

    async def purge(self, older_than: int) -> list[tuple[int, str, int]]:
        """Delete envelopes created before `older_than` and trim user_events to the
        newest USER_EVENTS_KEPT; return (recipient id, sender, size) per row (body and
        payload bytes). A payload goes with the last row naming it (migration 0006)."""
        ...

    async def checkpoint(self) -> None: ...


__all__ = [
    "DISCONNECTING_EVENTS",
    "MAX_KEY_BYTES",
    "MAX_ONE_TIME_PREKEYS",
    "MAX_PENDING_LIMIT",
    "MAX_PREKEY_ID",
    "USER_EVENTS_KEPT",
    "Backend",
    "DiskGuard",
    "PublishResult",
    "QuotaLimits",
    "Store",
    "StoredEnvelope",
    "UserEvent",
    "UserEventKind",
    "UserRecord",
]
