"""SQLite for accounts with devices (migration 0004): every statement about devices
and device lists. A mixin of `SqliteBackend` (its `_run`); the in-memory side is
store/devices.py.

A device is a principal: a `users` row with its own token, keys and mailbox (device 1
is the account's own row, so a db from before devices needs no data moved).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from hushwire.common.crypto.devices import DeviceList
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import IdentityPublic, SignedDeviceList
from hushwire.relay.devices import AccountDevices
from hushwire.relay.errors import UnknownUser

T = TypeVar("T")


def _account_id(conn: sqlite3.Connection, account: str) -> int | None:
    row = conn.execute(
        "SELECT id FROM users WHERE name = ? AND account_id IS NULL", (account,)
    ).fetchone()
    return None if row is None else int(row[0])


def _transaction(conn: sqlite3.Connection, fn: Callable[[], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _watchers(conn: sqlite3.Connection, aid: int) -> list[str]:
    """Principals that fetched a bundle or the list of any device of the account."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT u.name FROM identity_watchers w JOIN users u ON u.id = w.watcher_id"
            " JOIN devices d ON d.principal_id = w.target_id WHERE d.account_id = ?"
            " AND u.id NOT IN (SELECT principal_id FROM devices WHERE account_id = ?)",
            (aid, aid),
        )
    ]


def _save_list(
    conn: sqlite3.Connection, aid: int, version: int, signed: SignedDeviceList, now: int
) -> None:
    conn.execute(
        "INSERT INTO device_lists (account_id, version, body, sig, updated_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET"
        " version = excluded.version, body = excluded.body, sig = excluded.sig,"
        " updated_at = excluded.updated_at",
        (aid, version, signed.body, signed.sig, now),
    )


def _drop_device(conn: sqlite3.Connection, aid: int, device: int) -> str | None:
    """Unlink one device: a linked device's principal goes (its mailbox, keys and
    watcher rows with it); device 1 is the account's own row, so its credential is
    revoked and its mailbox and keys emptied instead. Returns the principal's name."""
    row = conn.execute(
        "SELECT d.principal_id, u.name FROM devices d JOIN users u ON u.id = d.principal_id"
        " WHERE d.account_id = ? AND d.device_id = ?",
        (aid, device),
    ).fetchone()
    if row is None:
        return None
    pid, name = int(row[0]), str(row[1])
    conn.execute("DELETE FROM devices WHERE account_id = ? AND device_id = ?", (aid, device))
    if pid != aid:
        conn.execute("DELETE FROM users WHERE id = ?", (pid,))
        return name
    conn.execute(
        "UPDATE users SET token_hash = ?, token_salt = ? WHERE id = ?",
        (secrets.token_bytes(32), secrets.token_bytes(16), pid),
    )
    for table in ("mailbox", "identity_keys", "signed_prekeys", "one_time_prekeys"):
        column = "recipient_id" if table == "mailbox" else "user_id"
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (pid,))  # noqa: S608
    return name


class SqliteDevices:
    """Accounts, their devices and signed lists (see the module docstring)."""

    async def multi_device_accounts(self) -> set[str]:
        def run(conn: sqlite3.Connection) -> set[str]:
            return {
                r[0]
                for r in conn.execute(
                    "SELECT u.name FROM devices d JOIN users u ON u.id = d.account_id"
                    " GROUP BY d.account_id HAVING COUNT(*) > 1"
                )
            }

        return await self._run(run)

    async def account_devices(self, accounts: Sequence[str]) -> dict[str, AccountDevices]:
        """Each existing account's devices and stored list (unknown names are left out)."""

        def run(conn: sqlite3.Connection) -> dict[str, AccountDevices]:
            out: dict[str, AccountDevices] = {}
            for name in dict.fromkeys(accounts):
                aid = _account_id(conn, name)
                if aid is None:
                    continue
                live = frozenset(
                    int(r[0])
                    for r in conn.execute(
                        "SELECT device_id FROM devices WHERE account_id = ?", (aid,)
                    )
                )
                row = conn.execute(
                    "SELECT version, body, sig FROM device_lists WHERE account_id = ?", (aid,)
                ).fetchone()
                if row is None:
                    out[name] = AccountDevices(name, 0, live, None, live)
                    continue
                signed = SignedDeviceList(bytes(row[1]), bytes(row[2]))
                listed = frozenset(_listed_ids(signed.body))
                out[name] = AccountDevices(name, int(row[0]), listed, signed, live)
            return out

        return await self._run(run)

    async def account_identity(self, account: str) -> IdentityPublic | None:
        """The identity record of one of the account's devices (they share its Ed25519
        key, which is what names the account), device 1's if it has one."""

        def run(conn: sqlite3.Connection) -> IdentityPublic | None:
            row = conn.execute(
                "SELECT k.grp, k.sign_key, k.dh_key, k.dh_sig FROM devices d"
                " JOIN users a ON a.id = d.account_id JOIN identity_keys k"
                " ON k.user_id = d.principal_id WHERE a.name = ? AND a.account_id IS NULL"
                " ORDER BY d.device_id LIMIT 1",
                (account,),
            ).fetchone()
            return None if row is None else IdentityPublic(row[0], row[1], row[2], row[3])

        return await self._run(run)

    async def watch(self, watcher: str, account: str) -> None:
        """`watcher` fetched the account's list: it hears of the next change."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO identity_watchers (watcher_id, target_id, stale)"
                " SELECT w.id, a.id, 0 FROM users w, users a WHERE w.name = ? AND a.name = ?"
                " AND a.account_id IS NULL AND w.id != a.id ON CONFLICT DO NOTHING",
                (watcher, account),
            )

        await self._run(run)

    async def device_seen(self, account: str) -> dict[int, int]:
        """device id -> last login (Unix seconds, 0 never) for the account's devices."""

        def run(conn: sqlite3.Connection) -> dict[int, int]:
            return {
                int(r[0]): int(r[1] or 0)
                for r in conn.execute(
                    "SELECT d.device_id, u.last_login_at FROM devices d"
                    " JOIN users u ON u.id = d.principal_id JOIN users a ON a.id = d.account_id"
                    " WHERE a.name = ? AND a.account_id IS NULL",
                    (account,),
                )
            }

        return await self._run(run)

    async def list_devices(self, account: str) -> list[tuple[int, int, int | None]]:
        """(device id, linked at, last login) for `hushwire-admin list-devices`."""

        def run(conn: sqlite3.Connection) -> list[tuple[int, int, int | None]]:
            aid = _account_id(conn, account)
            if aid is None:
                raise UnknownUser(f"no user named {account!r}")
            return [
                (int(r[0]), int(r[1]), None if r[2] is None else int(r[2]))
                for r in conn.execute(
                    "SELECT d.device_id, d.linked_at, u.last_login_at FROM devices d"
                    " JOIN users u ON u.id = d.principal_id WHERE d.account_id = ?"
                    " ORDER BY d.device_id",
                    (aid,),
                )
            ]

        return await self._run(run)

    async def store_device_list(
        self,
        account: str,
        version: int,
        signed: SignedDeviceList,
        *,
        removed: frozenset[int],
        now: int,
    ) -> tuple[list[str], list[str], int]:
        """Store a newer list and unlink the devices it left out, in one transaction;
        STALE_DEVICE_LIST if another list got in first. Returns (watchers, principals
        removed, devices left)."""

        def run(conn: sqlite3.Connection) -> tuple[list[str], list[str], int]:
            def body() -> tuple[list[str], list[str], int]:
                aid = _require(conn, account)
                _check_version(conn, aid, version)
                gone = [n for d in sorted(removed) if (n := _drop_device(conn, aid, d))]
                _save_list(conn, aid, version, signed, now)
                return _watchers(conn, aid), gone, _device_count(conn, aid)

            return _transaction(conn, body)

        return await self._run(run)

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
        """Create a linked device (principal `name`, credential, empty mailbox) and store
        the list that names it, in one transaction. Returns (watchers, devices now)."""

        def run(conn: sqlite3.Connection) -> tuple[list[str], int]:
            def body() -> tuple[list[str], int]:
                aid = _require(conn, account)
                _check_version(conn, aid, version)
                try:
                    cur = conn.execute(
                        "INSERT INTO users (name, token_hash, token_salt, disabled, created_at,"
                        " updated_at, account_id) VALUES (?, ?, ?, 0, ?, ?, ?)",
                        (name, token_hash, salt, now, now, aid),
                    )
                except sqlite3.IntegrityError:
                    raise RequestError(
                        ErrorCode.BAD_KEYS, f"device {device} existed before; use a new id"
                    ) from None
                conn.execute(
                    "INSERT INTO devices (account_id, device_id, principal_id, linked_at)"
                    " VALUES (?, ?, ?, ?)",
                    (aid, device, cur.lastrowid, now),
                )
                _save_list(conn, aid, version, signed, now)
                return _watchers(conn, aid), _device_count(conn, aid)

            return _transaction(conn, body)

        return await self._run(run)

    async def reset_devices(self, account: str, *, keep: int) -> tuple[list[int], list[str]]:
        """A new identity: unlink every device but `keep` and drop the account's list.
        Returns (device ids, principals removed)."""

        def run(conn: sqlite3.Connection) -> tuple[list[int], list[str]]:
            def body() -> tuple[list[int], list[str]]:
                aid = _require(conn, account)
                ids = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT device_id FROM devices WHERE account_id = ? AND device_id != ?",
                        (aid, keep),
                    )
                ]
                gone = [n for d in ids if (n := _drop_device(conn, aid, d))]
                conn.execute("DELETE FROM device_lists WHERE account_id = ?", (aid,))
                return ids, gone

            return _transaction(conn, body)

        return await self._run(run)

    async def remove_device(self, account: str, device: int) -> tuple[str, int]:
        """Operator removal: credential, mailbox and keys go. Returns (principal removed,
        devices left)."""

        def run(conn: sqlite3.Connection) -> tuple[str, int]:
            def body() -> tuple[str, int]:
                aid = _account_id(conn, account)
                if aid is None:
                    raise UnknownUser(f"no user named {account!r}")
                name = _drop_device(conn, aid, device)
                if name is None:
                    raise UnknownUser(f"{account!r} has no device {device}")
                return name, _device_count(conn, aid)

            return _transaction(conn, body)

        return await self._run(run)


def _require(conn: sqlite3.Connection, account: str) -> int:
    aid = _account_id(conn, account)
    if aid is None:
        raise RequestError(ErrorCode.UNKNOWN_USER, f"no user {account}")
    return aid


def _check_version(conn: sqlite3.Connection, aid: int, version: int) -> None:
    row = conn.execute("SELECT version FROM device_lists WHERE account_id = ?", (aid,)).fetchone()
    if row is not None and int(row[0]) >= version:
        raise RequestError(
            ErrorCode.STALE_DEVICE_LIST,
            f"device list version {version} is not above the stored {int(row[0])}",
        )


def _device_count(conn: sqlite3.Connection, aid: int) -> int:
    (n,) = conn.execute("SELECT COUNT(*) FROM devices WHERE account_id = ?", (aid,)).fetchone()
    return int(n)


def _listed_ids(body: bytes) -> list[int]:
    """Device ids of a stored list (checked when it was stored, so it parses)."""
    return sorted(DeviceList.decode(body).ids)
