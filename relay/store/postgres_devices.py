"""PostgreSQL for accounts with devices (migration 0004): the twin of sqlite_devices.py,
a mixin of `PostgresBackend` (its `_conn`). The same rules: a device is a principal (a
`users` row); device 1 is the account's own row; each method is one transaction."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import asyncpg

from hushwire.common.crypto.devices import DeviceList
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import IdentityPublic, SignedDeviceList
from hushwire.relay.devices import AccountDevices
from hushwire.relay.errors import UnknownUser
from hushwire.relay.store.records import UserRecord
from hushwire.relay.store.sqlite import user_record


async def _account_id(conn: asyncpg.Connection, account: str) -> int | None:
    value = await conn.fetchval(
        "SELECT id FROM users WHERE name = $1 AND account_id IS NULL", account
    )
    return None if value is None else int(value)


async def _require(conn: asyncpg.Connection, account: str) -> int:
    aid = await _account_id(conn, account)
    if aid is None:
        raise RequestError(ErrorCode.UNKNOWN_USER, f"no user {account}")
    return aid


async def _check_version(conn: asyncpg.Connection, aid: int, version: int) -> None:
    # FOR UPDATE: two lists racing for the same account are taken one after the other.
    stored = await conn.fetchval(
        "SELECT version FROM device_lists WHERE account_id = $1 FOR UPDATE", aid
    )
    if stored is not None and int(stored) >= version:
        raise RequestError(
            ErrorCode.STALE_DEVICE_LIST,
            f"device list version {version} is not above the stored {int(stored)}",
        )


async def _device_count(conn: asyncpg.Connection, aid: int) -> int:
    return int(await conn.fetchval("SELECT COUNT(*) FROM devices WHERE account_id = $1", aid))


async def _watchers(conn: asyncpg.Connection, aid: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT u.name FROM identity_watchers w JOIN users u ON u.id = w.watcher_id"
        " JOIN devices d ON d.principal_id = w.target_id WHERE d.account_id = $1"
        " AND u.id NOT IN (SELECT principal_id FROM devices WHERE account_id = $1)",
        aid,
    )
    return [r[0] for r in rows]


async def _save_list(
    conn: asyncpg.Connection, aid: int, version: int, signed: SignedDeviceList, now: int
) -> None:
    await conn.execute(
        "INSERT INTO device_lists (account_id, version, body, sig, updated_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id) DO UPDATE SET"
        " version = excluded.version, body = excluded.body, sig = excluded.sig,"
        " updated_at = excluded.updated_at",
        aid,
        version,
        signed.body,
        signed.sig,
        now,
    )


async def _drop_device(conn: asyncpg.Connection, aid: int, device: int) -> str | None:
    """As sqlite_devices._drop_device: a linked device's principal goes; device 1's
    credential is revoked and its mailbox and keys emptied."""
    row = await conn.fetchrow(
        "SELECT d.principal_id, u.name FROM devices d JOIN users u ON u.id = d.principal_id"
        " WHERE d.account_id = $1 AND d.device_id = $2",
        aid,
        device,
    )
    if row is None:
        return None
    pid, name = int(row[0]), str(row[1])
    await conn.execute("DELETE FROM devices WHERE account_id = $1 AND device_id = $2", aid, device)
    if pid != aid:
        await conn.execute("DELETE FROM users WHERE id = $1", pid)
        return name
    await conn.execute(
        "UPDATE users SET token_hash = $2, token_salt = $3 WHERE id = $1",
        pid,
        secrets.token_bytes(32),
        secrets.token_bytes(16),
    )
    await conn.execute("DELETE FROM mailbox WHERE recipient_id = $1", pid)
    for table in ("identity_keys", "signed_prekeys", "one_time_prekeys"):
        await conn.execute(f"DELETE FROM {table} WHERE user_id = $1", pid)  # noqa: S608
    return name


class PostgresDevices:
    """Accounts, their devices and signed lists on PostgreSQL."""

    async def list_principals(self) -> list[UserRecord]:
        async with self._conn() as conn:  # type: ignore[attr-defined]
            rows = await conn.fetch(
                "SELECT name, token_hash, token_salt, disabled, created_at, last_login_at"
                ' FROM users ORDER BY name COLLATE "C"'
            )
        return [user_record(r) for r in rows]

    async def multi_device_accounts(self) -> set[str]:
        async with self._conn() as conn:  # type: ignore[attr-defined]
            rows = await conn.fetch(
                "SELECT u.name FROM devices d JOIN users u ON u.id = d.account_id"
                " GROUP BY u.name HAVING COUNT(*) > 1"
            )
        return {r[0] for r in rows}

    async def account_devices(self, accounts: Sequence[str]) -> dict[str, AccountDevices]:
        out: dict[str, AccountDevices] = {}
        async with self._conn() as conn:  # type: ignore[attr-defined]
            for name in dict.fromkeys(accounts):
                aid = await _account_id(conn, name)
                if aid is None:
                    continue
                live = frozenset(
                    int(r[0])
                    for r in await conn.fetch(
                        "SELECT device_id FROM devices WHERE account_id = $1", aid
                    )
                )
                row = await conn.fetchrow(
                    "SELECT version, body, sig FROM device_lists WHERE account_id = $1", aid
                )
                if row is None:
                    out[name] = AccountDevices(name, 0, live, None, live)
                    continue
                signed = SignedDeviceList(bytes(row[1]), bytes(row[2]))
                listed = DeviceList.decode(signed.body).ids
                out[name] = AccountDevices(name, int(row[0]), listed, signed, live)
        return out

    async def account_identity(self, account: str) -> IdentityPublic | None:
        async with self._conn() as conn:  # type: ignore[attr-defined]
            row = await conn.fetchrow(
                "SELECT k.grp, k.sign_key, k.dh_key, k.dh_sig FROM devices d"
                " JOIN users a ON a.id = d.account_id JOIN identity_keys k"
                " ON k.user_id = d.principal_id WHERE a.name = $1 AND a.account_id IS NULL"
                " ORDER BY d.device_id LIMIT 1",
                account,
            )
        return None if row is None else IdentityPublic(row[0], row[1], row[2], row[3])

    async def watch(self, watcher: str, account: str) -> None:
        async with self._conn() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                "INSERT INTO identity_watchers (watcher_id, target_id, stale)"
                " SELECT w.id, a.id, FALSE FROM users w, users a WHERE w.name = $1 AND a.name = $2"
                " AND a.account_id IS NULL AND w.id != a.id ON CONFLICT DO NOTHING",
                watcher,
                account,
            )

    async def device_seen(self, account: str) -> dict[int, int]:
        async with self._conn() as conn:  # type: ignore[attr-defined]
            rows = await conn.fetch(
                "SELECT d.device_id, u.last_login_at FROM devices d"
                " JOIN users u ON u.id = d.principal_id JOIN users a ON a.id = d.account_id"
                " WHERE a.name = $1 AND a.account_id IS NULL",
                account,
            )
        return {int(r[0]): int(r[1] or 0) for r in rows}

    async def list_devices(self, account: str) -> list[tuple[int, int, int | None]]:
        async with self._conn() as conn:  # type: ignore[attr-defined]
            aid = await _account_id(conn, account)
            if aid is None:
                raise UnknownUser(f"no user named {account!r}")
            rows = await conn.fetch(
                "SELECT d.device_id, d.linked_at, u.last_login_at FROM devices d"
                " JOIN users u ON u.id = d.principal_id WHERE d.account_id = $1"
                " ORDER BY d.device_id",
                aid,
            )
        return [(int(r[0]), int(r[1]), None if r[2] is None else int(r[2])) for r in rows]

    async def store_device_list(
        self,
        account: str,
        version: int,
        signed: SignedDeviceList,
        *,
        removed: frozenset[int],
        now: int,
    ) -> tuple[list[str], list[str], int]:
        async with self._conn(transaction=True) as conn:  # type: ignore[attr-defined]
            aid = await _require(conn, account)
            await _check_version(conn, aid, version)
            gone = [n for d in sorted(removed) if (n := await _drop_device(conn, aid, d))]
            await _save_list(conn, aid, version, signed, now)
            return await _watchers(conn, aid), gone, await _device_count(conn, aid)

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
        async with self._conn(transaction=True) as conn:  # type: ignore[attr-defined]
            aid = await _require(conn, account)
            await _check_version(conn, aid, version)
            try:
                async with conn.transaction():
                    pid = await conn.fetchval(
                        "INSERT INTO users (name, token_hash, token_salt, disabled, created_at,"
                        " updated_at, account_id) VALUES ($1, $2, $3, FALSE, $4, $4, $5)"
                        " RETURNING id",
                        name,
                        token_hash,
                        salt,
                        now,
                        aid,
                    )
            except asyncpg.UniqueViolationError:
                raise RequestError(
                    ErrorCode.BAD_KEYS, f"device {device} existed before; use a new id"
                ) from None
            await conn.execute(
                "INSERT INTO devices (account_id, device_id, principal_id, linked_at)"
                " VALUES ($1, $2, $3, $4)",
                aid,
                device,
                pid,
                now,
            )
            await _save_list(conn, aid, version, signed, now)
            return await _watchers(conn, aid), await _device_count(conn, aid)

    async def reset_devices(self, account: str, *, keep: int) -> tuple[list[int], list[str]]:
        async with self._conn(transaction=True) as conn:  # type: ignore[attr-defined]
            aid = await _require(conn, account)
            ids = [
                int(r[0])
                for r in await conn.fetch(
                    "SELECT device_id FROM devices WHERE account_id = $1 AND device_id != $2",
                    aid,
                    keep,
                )
            ]
            gone = [n for d in ids if (n := await _drop_device(conn, aid, d))]
            await conn.execute("DELETE FROM device_lists WHERE account_id = $1", aid)
            return ids, gone

    async def remove_device(self, account: str, device: int) -> tuple[str, int]:
        async with self._conn(transaction=True) as conn:  # type: ignore[attr-defined]
            aid = await _account_id(conn, account)
            if aid is None:
                raise UnknownUser(f"no user named {account!r}")
            name = await _drop_device(conn, aid, device)
            if name is None:
                raise UnknownUser(f"{account!r} has no device {device}")
            return name, await _device_count(conn, aid)
