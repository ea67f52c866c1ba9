"""The local profile: one SQLite file (aiosqlite), encrypted at rest, one process at a time.

Layout of a profile directory (default ~/.hushwire, mode 0700):

    profile.db   SQLite (WAL, synchronous=FULL: a message we acked to the relay must
                 survive a power loss, because the relay deletes it on our ack)
    lock         held with an exclusive fcntl.flock while a process uses the profile;
                 two processes would fork the ratchet state and lose messages

Secrets and history are AES-256-GCM blobs (`nonce || ciphertext || tag`, pycryptodome
via common.crypto.primitives) under a key derived from the passphrase:

    master   = scrypt(NFC(passphrase), salt, N, r, p)        (salt + params in `meta`)
    aead key = HKDF-SHA256(master, info="hushwire/profile/v1/aead")
    blind    = HKDF-SHA256(master, info="hushwire/profile/v1/blind")  (seen envelope ids)
    AD       = fields("hushwire/profile/v1", table.column, row key)

A verifier blob in `meta` tells a wrong passphrase (WrongPassphrase) from a damaged
file (ProfileCorrupt). Because the AD names the table, column and row, a blob moved to
another row or column does not open. Every SQL statement of the client is in this
module; callers group writes with `async with store.transaction():` (re-entrant within
a task), so a decrypted message, the advanced ratchet and the seen envelope id are
committed together before the envelope is acked (STYLE habit 7).

The schema is the numbered SQL files in `client/schema/`, applied in order; the version
is PRAGMA user_version. A profile newer than this code is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import secrets
import sqlite3
import unicodedata
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

import aiosqlite
import msgpack
from Crypto.Protocol.KDF import scrypt

from hushwire.client.errors import (
    ClientError,
    ProfileCorrupt,
    ProfileLocked,
    ProfileMissing,
    WrongPassphrase,
)
from hushwire.common.crypto.encoding import expect_bytes, expect_int, expect_list, expect_str, pack
from hushwire.common.crypto.encoding import fields as encode_fields
from hushwire.common.crypto.primitives import aead_open, aead_seal, hkdf_sha256, hmac_sha256
from hushwire.common.errors import DecryptionError
from hushwire.common.keys import IdentityPublic

DB_NAME: Final = "profile.db"
LOCK_NAME: Final = "lock"
KDF_VERSION: Final = 1
_AD_PREFIX: Final = b"hushwire/profile/v1"
_VERIFIER: Final = b"hushwire profile verifier v1"
_NONCE_LEN: Final = 12
_SCHEMA_FILE: Final = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_BUSY_TIMEOUT_MS: Final = 5000

# Every message query selects these, in this order (see `_message`). Built into SQL
# text only from these constants, never from input.
_MSG_COLS: Final = "id, uid, contact, direction, status, sent_at, stored_at, body, envelope"
_MSG_SELECT: Final = f"SELECT {_MSG_COLS} FROM messages"  # noqa: S608

IN_STATUSES: Final = ("received", "read")
OUT_STATUSES: Final = ("queued", "held", "pending", "sent", "failed")


@dataclass(frozen=True, slots=True)
class KdfParams:
    """scrypt cost parameters; stored with the profile so they can be raised later."""

    n: int = 2**15
    r: int = 8
    p: int = 1


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact as stored: the pinned identity and, if it changed, the new one."""

    name: str
    identity: IdentityPublic
    pending: IdentityPublic | None
    verified: bool
    created_at: int
    updated_at: int
    checked_at: int = 0  # when a fetched bundle last confirmed the pinned identity

    @property
    def key_changed(self) -> bool:
        return self.pending is not None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One row of history or outbox, decrypted."""

    row_id: int
    uid: str
    contact: str
    direction: str  # "in" or "out"
    status: str
    sent_at_ms: int
    stored_at_ms: int
    text: str
    envelope_id: bytes  # empty until an outgoing message has been encrypted
    envelope: bytes | None = field(default=None, repr=False)


@cache
def schema_files() -> tuple[tuple[int, str], ...]:
    """(version, sql) for every file in client/schema, checked to be numbered 1..N."""
    found = []
    for entry in resources.files("hushwire.client.schema").iterdir():
        m = _SCHEMA_FILE.fullmatch(entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text("utf-8")))
    found.sort()
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise ProfileCorrupt("client schema files are not numbered 1..N without gaps")
    return tuple(found)


def latest_version() -> int:
    return len(schema_files())


def normalise_passphrase(passphrase: str) -> bytes:
    """NFC, so the same passphrase typed on another keyboard layout derives the same key."""
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def encode_identity_record(identity: IdentityPublic) -> bytes:
    return pack([identity.group, identity.sign_key, identity.dh_key, identity.dh_sig])


def decode_identity_record(data: bytes) -> IdentityPublic:
    try:
        group, sign_key, dh_key, dh_sig = expect_list(_unpack(data), 4)
        return IdentityPublic(
            group=expect_str(group),
            sign_key=expect_bytes(sign_key, 32),
            dh_key=expect_bytes(dh_key),
            dh_sig=expect_bytes(dh_sig, 64),
        )
    except ValueError as exc:
        raise ProfileCorrupt(f"stored identity record is malformed: {exc}") from None


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProfileCorrupt(f"stored record is malformed: {type(exc).__name__}") from None


class Vault:
    """AES-256-GCM under the profile key; the AD binds each blob to its place."""

    def __init__(self, master: bytes) -> None:
        self._key = hkdf_sha256(master, 32, salt=None, info=b"hushwire/profile/v1/aead")
        self._blind = hkdf_sha256(master, 32, salt=None, info=b"hushwire/profile/v1/blind")

    @staticmethod
    def _ad(place: str, ref: str) -> bytes:
        return encode_fields(_AD_PREFIX, place.encode(), ref.encode())

    def seal(self, place: str, ref: str, data: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_LEN)
        return nonce + aead_seal(self._key, nonce, data, self._ad(place, ref))

    def open(self, place: str, ref: str, blob: bytes) -> bytes:
        """Decrypt a blob; ProfileCorrupt if it was altered or belongs elsewhere."""
        if not isinstance(blob, bytes) or len(blob) < _NONCE_LEN + 16:
            raise ProfileCorrupt(f"stored {place} for {ref!r} is truncated")
        try:
            return aead_open(self._key, blob[:_NONCE_LEN], blob[_NONCE_LEN:], self._ad(place, ref))
        except DecryptionError:
            raise ProfileCorrupt(
                f"stored {place} for {ref!r} fails authentication (altered or moved)"
            ) from None

    def blind(self, value: bytes) -> bytes:
        """A keyed hash, so the seen-ids table reveals nothing about envelope ids."""
        return hmac_sha256(self._blind, value)


def _derive(passphrase: bytes, salt: bytes, kdf: KdfParams) -> bytes:
    key = scrypt(passphrase, salt, 32, N=kdf.n, r=kdf.r, p=kdf.p)  # type: ignore[arg-type]
    return key if isinstance(key, bytes) else key[0]


def _lock(profile_dir: Path) -> int:
    """Take the profile's exclusive lock or raise ProfileLocked; returns the fd to keep."""
    fd = os.open(profile_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ProfileLocked(
            f"profile {profile_dir} is in use by another hushwire process; close it first"
        ) from None
    return fd


def _prepare(profile_dir: Path, passphrase: str, *, create: bool) -> tuple[Path, Path, int]:
    """Check or create the directory and db file (0700/0600) and take the lock."""
    profile_dir = profile_dir.expanduser()
    db_path = profile_dir / DB_NAME
    if not db_path.exists():
        if not create:
            raise ProfileMissing(
                f"no hushwire profile in {profile_dir}; create one with `hushwire login`"
            )
        if not passphrase:
            raise ClientError("a new profile needs a non-empty passphrase")
        profile_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_fd = _lock(profile_dir)
    try:
        if not db_path.exists():
            os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError:
        os.close(lock_fd)
        raise
    return profile_dir, db_path, lock_fd


class ProfileStore:
    """The open profile: every SQL statement of the client lives in this class."""

    def __init__(self, profile_dir: Path, db: aiosqlite.Connection, lock_fd: int) -> None:
        self.profile_dir = profile_dir
        self._db = db
        self._lock_fd: int | None = lock_fd
        self._vault: Vault | None = None
        self._tx_lock = asyncio.Lock()
        self._tx_owner: asyncio.Task[Any] | None = None
        self._closed = False

    # --- opening, closing, transactions --------------------------------------------

    @staticmethod
    def exists(profile_dir: Path) -> bool:
        return (Path(profile_dir) / DB_NAME).exists()

    @classmethod
    async def open(
        cls,
        profile_dir: Path,
        passphrase: str,
        *,
        create: bool = False,
        kdf: KdfParams | None = None,
    ) -> ProfileStore:
        """Lock, open, migrate and unlock a profile (create it if `create`).

        Raises ProfileMissing, ProfileLocked, WrongPassphrase or ProfileCorrupt.
        """
        profile_dir, db_path, lock_fd = _prepare(Path(profile_dir), passphrase, create=create)
        try:
            db = await aiosqlite.connect(db_path, isolation_level=None)
        except BaseException:
            os.close(lock_fd)
            raise
        store = cls(profile_dir, db, lock_fd)
        try:
            await store._setup()
            await store._unlock(normalise_passphrase(passphrase), kdf or KdfParams())
        except BaseException:
            await store.close()
            raise
        return store

    async def _setup(self) -> None:
        try:
            await self._db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute("PRAGMA synchronous = FULL")
            await self._db.execute("PRAGMA foreign_keys = ON")
            await self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ProfileCorrupt(f"{self.profile_dir / DB_NAME} is not usable: {exc}") from None

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        files = schema_files()
        if current > len(files):
            raise ProfileCorrupt(
                f"this profile has schema version {current}, newer than this hushwire "
                f"({len(files)}); upgrade hushwire"
            )
        for version, sql in files[current:]:
            try:
                await self._db.executescript(
                    f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
                )
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
                raise

    async def _unlock(self, passphrase: bytes, kdf: KdfParams) -> None:
        stored = await self._meta("kdf")
        if stored is None:
            salt = secrets.token_bytes(16)
            master = await asyncio.to_thread(_derive, passphrase, salt, kdf)
            vault = Vault(master)
            async with self.transaction():
                await self._set_meta("kdf", pack([KDF_VERSION, salt, kdf.n, kdf.r, kdf.p]))
                await self._set_meta("verifier", vault.seal("meta", "verifier", _VERIFIER))
            self._vault = vault
            return
        try:
            version, salt, n, r, p = expect_list(_unpack(stored), 5)
            if version != KDF_VERSION:
                raise ValueError(f"unknown key derivation version {version}")
            params = KdfParams(
                n=expect_int(n, 2, 2**24), r=expect_int(r, 1, 64), p=expect_int(p, 1, 64)
            )
            salt = expect_bytes(salt, 16)
        except ValueError as exc:
            raise ProfileCorrupt(f"profile key parameters are malformed: {exc}") from None
        master = await asyncio.to_thread(_derive, passphrase, salt, params)
        vault = Vault(master)
        verifier = await self._meta("verifier")
        try:
            ok = verifier is not None and vault.open("meta", "verifier", verifier) == _VERIFIER
        except ProfileCorrupt:
            ok = False
        if not ok:
            raise WrongPassphrase(f"wrong passphrase for the profile in {self.profile_dir}")
        self._vault = vault

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            raise ClientError("the profile is not unlocked")
        return self._vault

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """One SQLite transaction; nested use within the same task joins the outer one."""
        task = asyncio.current_task()
        if task is not None and self._tx_owner is task:
            yield
            return
        async with self._tx_lock:
            self._tx_owner = task
            try:
                # BEGIN and COMMIT are inside: a cancel (a dropped connection cancels the
                # task storing a delivery) can land while either is queued on the db
                # thread, which runs it anyway. The ROLLBACK queued behind it then leaves
                # the connection outside any transaction ("no transaction" is fine).
                try:
                    await self._db.execute("BEGIN IMMEDIATE")
                    yield
                    await self._db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error, ValueError):
                        await self._db.execute("ROLLBACK")
                    raise
            finally:
                self._tx_owner = None

    async def close(self) -> None:
        """Idempotent: close the db, then release the profile lock."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(sqlite3.Error, ValueError):
            await self._db.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- small helpers --------------------------------------------------------------

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        async with self._db.execute(sql, args) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def _write(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self.transaction():
            cur = await self._db.execute(sql, args)
            rowcount, lastrow = cur.rowcount, cur.lastrowid
            await cur.close()
        return lastrow if sql.lstrip().upper().startswith("INSERT") else rowcount

    async def _meta(self, key: str) -> bytes | None:
        row = await self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else bytes(row[0])

    async def _set_meta(self, key: str, value: bytes) -> None:
        await self._write(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def schema_version(self) -> int:
        row = await self._one("PRAGMA user_version")
        return int(row[0])

    # --- settings (sealed key/value pairs; values are msgpack) ----------------------

    async def get_setting(self, key: str) -> Any:
        row = await self._one("SELECT value FROM settings WHERE key = ?", (key,))
        if row is None:
            return None
        return _unpack(self.vault.open("settings.value", key, bytes(row[0])))

    async def set_setting(self, key: str, value: Any) -> None:
        blob = self.vault.seal("settings.value", key, pack(value))
        await self._write(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, blob),
        )

    async def next_prekey_ids(self, count: int) -> int:
        """Reserve `count` consecutive prekey ids; returns the first (never reused)."""
        async with self.transaction():
            raw = await self._meta("next_prekey_id")
            first = int.from_bytes(raw, "big") if raw else 1
            await self._set_meta("next_prekey_id", (first + count).to_bytes(8, "big"))
        return first

    # --- identity and prekeys -------------------------------------------------------

    async def load_identity(self) -> bytes | None:
        row = await self._one("SELECT secret FROM identity WHERE id = 1")
        return None if row is None else self.vault.open("identity.secret", "1", bytes(row[0]))

    async def save_identity(self, secret: bytes, now_ms: int) -> None:
        await self._write(
            "INSERT INTO identity (id, secret, created_at) VALUES (1, ?, ?)",
            (self.vault.seal("identity.secret", "1", secret), now_ms),
        )

    async def add_signed_prekey(self, prekey_id: int, secret: bytes, now_ms: int) -> None:
        await self._write(
            "INSERT INTO signed_prekeys (prekey_id, secret, created_at) VALUES (?, ?, ?)",
            (prekey_id, self.vault.seal("signed_prekeys.secret", str(prekey_id), secret), now_ms),
        )

    async def signed_prekeys(self) -> list[tuple[int, bytes, int, int | None]]:
        """(id, secret, created_at, retired_at) of every signed prekey still kept."""
        rows = await self._all(
            "SELECT prekey_id, secret, created_at, retired_at FROM signed_prekeys "
            "ORDER BY prekey_id"
        )
        return [
            (r[0], self.vault.open("signed_prekeys.secret", str(r[0]), bytes(r[1])), r[2], r[3])
            for r in rows
        ]

    async def retire_signed_prekeys(self, current_id: int, now_ms: int, purge_before: int) -> None:
        """Mark all but `current_id` retired now; forget those retired before the cutoff."""
        async with self.transaction():
            await self._write(
                "UPDATE signed_prekeys SET retired_at = ? "
                "WHERE prekey_id != ? AND retired_at IS NULL",
                (now_ms, current_id),
            )
            await self._write(
                "DELETE FROM signed_prekeys WHERE retired_at IS NOT NULL AND retired_at < ?",
                (purge_before,),
            )

    async def add_one_time_prekeys(self, keys: Sequence[tuple[int, bytes]], now_ms: int) -> None:
        rows = [
            (pid, self.vault.seal("one_time_prekeys.secret", str(pid), secret), now_ms)
            for pid, secret in keys
        ]
        async with self.transaction():
            await self._db.executemany(
                "INSERT INTO one_time_prekeys (prekey_id, secret, created_at) VALUES (?, ?, ?)",
                rows,
            )

    async def one_time_prekey(self, prekey_id: int) -> bytes | None:
        row = await self._one(
            "SELECT secret FROM one_time_prekeys WHERE prekey_id = ?", (prekey_id,)
        )
        if row is None:
            return None
        return self.vault.open("one_time_prekeys.secret", str(prekey_id), bytes(row[0]))

    async def delete_one_time_prekey(self, prekey_id: int) -> None:
        await self._write("DELETE FROM one_time_prekeys WHERE prekey_id = ?", (prekey_id,))

    async def count_one_time_prekeys(self) -> int:
        row = await self._one("SELECT count(*) FROM one_time_prekeys")
        return int(row[0])

    async def add_kem_prekeys(self, keys: Sequence[tuple[int, bytes, bool]], now_ms: int) -> None:
        """Store (id, sealed-to-be secret, last_resort) KEM prekeys in one transaction."""
        rows = [
            (pid, self.vault.seal("kem_prekeys.secret", str(pid), secret), int(last), now_ms)
            for pid, secret, last in keys
        ]
        async with self.transaction():
            await self._db.executemany(
                "INSERT INTO kem_prekeys (prekey_id, secret, last_resort, created_at)"
                " VALUES (?, ?, ?, ?)",
                rows,
            )

    async def kem_prekey(self, prekey_id: int) -> bytes | None:
        row = await self._one("SELECT secret FROM kem_prekeys WHERE prekey_id = ?", (prekey_id,))
        if row is None:
            return None
        return self.vault.open("kem_prekeys.secret", str(prekey_id), bytes(row[0]))

    async def kem_last_resort(self) -> tuple[int, int] | None:
        """(id, created_at) of the current (unretired) last-resort KEM prekey, if any."""
        row = await self._one(
            "SELECT prekey_id, created_at FROM kem_prekeys"
            " WHERE last_resort = 1 AND retired_at IS NULL ORDER BY prekey_id DESC LIMIT 1"
        )
        return None if row is None else (int(row[0]), int(row[1]))

    async def delete_kem_prekey(self, prekey_id: int) -> None:
        """Forget a used one-time KEM prekey (a last-resort one is never deleted here)."""
        await self._write(
            "DELETE FROM kem_prekeys WHERE prekey_id = ? AND last_resort = 0", (prekey_id,)
        )

    async def retire_kem_last_resort(self, current_id: int, now_ms: int, purge_before: int) -> None:
        """As `retire_signed_prekeys`, for last-resort KEM prekeys."""
        async with self.transaction():
            await self._write(
                "UPDATE kem_prekeys SET retired_at = ? "
                "WHERE last_resort = 1 AND prekey_id != ? AND retired_at IS NULL",
                (now_ms, current_id),
            )
            await self._write(
                "DELETE FROM kem_prekeys WHERE retired_at IS NOT NULL AND retired_at < ?",
                (purge_before,),
            )

    # --- contacts ------------------------------------------------------------------

    def _contact(self, row: Any) -> Contact:
        name = row[0]
        identity = decode_identity_record(self.vault.open("contacts.identity", name, bytes(row[1])))
        pending = None
        if row[2] is not None:
            pending = decode_identity_record(
                self.vault.open("contacts.pending", name, bytes(row[2]))
            )
        return Contact(name, identity, pending, bool(row[3]), row[4], row[5], row[6])

    async def get_contact(self, name: str) -> Contact | None:
        row = await self._one(
            "SELECT name, identity, pending, verified, created_at, updated_at, checked_at "
            "FROM contacts WHERE name = ?",
            (name,),
        )
        return None if row is None else self._contact(row)

    async def list_contacts(self) -> list[Contact]:
        rows = await self._all(
            "SELECT name, identity, pending, verified, created_at, updated_at, checked_at "
            "FROM contacts ORDER BY name"
        )
        return [self._contact(r) for r in rows]

    async def add_contact(self, name: str, identity: IdentityPublic, now_ms: int) -> None:
        """Pin `identity` for a new contact (trust on first use)."""
        blob = self.vault.seal("contacts.identity", name, encode_identity_record(identity))
        await self._write(
            "INSERT INTO contacts (name, identity, created_at, updated_at, checked_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, blob, now_ms, now_ms, now_ms),
        )

    async def set_pending_identity(
        self, name: str, identity: IdentityPublic | None, now_ms: int
    ) -> None:
        blob = None
        if identity is not None:
            blob = self.vault.seal("contacts.pending", name, encode_identity_record(identity))
        await self._write(
            "UPDATE contacts SET pending = ?, updated_at = ? WHERE name = ?",
            (blob, now_ms, name),
        )

    async def accept_identity(self, name: str, identity: IdentityPublic, now_ms: int) -> None:
        """Pin a new identity: unverified, no pending key, no sessions with any of the
        contact's devices (they were the old key's)."""
        blob = self.vault.seal("contacts.identity", name, encode_identity_record(identity))
        async with self.transaction():
            await self._write(
                "UPDATE contacts SET identity = ?, pending = NULL, verified = 0, "
                "sessions = NULL, updated_at = ?, checked_at = 0 WHERE name = ?",
                (blob, now_ms, name),
            )
            await self._write("DELETE FROM device_sessions WHERE contact = ?", (name,))

    async def delete_setting(self, key: str) -> None:
        await self._write("DELETE FROM settings WHERE key = ?", (key,))

    async def set_checked(self, name: str, now_ms: int) -> None:
        await self._write("UPDATE contacts SET checked_at = ? WHERE name = ?", (now_ms, name))

    async def set_verified(self, name: str, verified: bool, now_ms: int) -> None:
        await self._write(
            "UPDATE contacts SET verified = ?, updated_at = ? WHERE name = ?",
            (int(verified), now_ms, name),
        )

    async def load_sessions(self, name: str) -> list[bytes]:
        """The contact's serialised sessions, current first."""
        row = await self._one("SELECT sessions FROM contacts WHERE name = ?", (name,))
        if row is None or row[0] is None:
            return []
        items = _unpack(self.vault.open("contacts.sessions", name, bytes(row[0])))
        if not isinstance(items, list) or not all(isinstance(i, bytes) for i in items):
            raise ProfileCorrupt(f"stored sessions for {name!r} are malformed")
        return items

    async def save_sessions(self, name: str, sessions: Sequence[bytes], now_ms: int) -> None:
        blob = None
        if sessions:
            blob = self.vault.seal("contacts.sessions", name, pack(list(sessions)))
        await self._write(
            "UPDATE contacts SET sessions = ?, updated_at = ? WHERE name = ?",
            (blob, now_ms, name),
        )

    async def load_device_sessions(self, name: str, device: int) -> list[bytes]:
        """The sessions with one device of `name` kept in device_sessions, current first."""
        row = await self._one(
            "SELECT sessions FROM device_sessions WHERE contact = ? AND device = ?",
            (name, device),
        )
        if row is None:
            return []
        ref = f"{name}/{device}"
        items = _unpack(self.vault.open("device_sessions.sessions", ref, bytes(row[0])))
        if not isinstance(items, list) or not all(isinstance(i, bytes) for i in items):
            raise ProfileCorrupt(f"stored sessions for {ref!r} are malformed")
        return items

    async def save_device_sessions(
        self, name: str, device: int, sessions: Sequence[bytes], now_ms: int
    ) -> None:
        if not sessions:
            await self._write(
                "DELETE FROM device_sessions WHERE contact = ? AND device = ?", (name, device)
            )
            return
        blob = self.vault.seal("device_sessions.sessions", f"{name}/{device}", pack(list(sessions)))
        await self._write(
            "INSERT INTO device_sessions (contact, device, sessions, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (contact, device)"
            " DO UPDATE SET sessions = excluded.sessions, updated_at = excluded.updated_at",
            (name, device, blob, now_ms),
        )

    # --- messages -------------------------------------------------------------------

    def _message(self, row: Any) -> StoredMessage:
        row_id, uid, contact, direction, status, sent_at, stored_at, body, envelope = row
        try:
            text, envelope_id = expect_list(
                _unpack(self.vault.open("messages.body", uid, bytes(body))), 2
            )
            text, envelope_id = expect_str(text), expect_bytes(envelope_id)
        except ValueError as exc:
            raise ProfileCorrupt(f"stored message {uid} is malformed: {exc}") from None
        env = None
        if envelope is not None:
            env = self.vault.open("messages.envelope", uid, bytes(envelope))
        return StoredMessage(
            row_id, uid, contact, direction, status, sent_at, stored_at, text, envelope_id, env
        )

    async def add_message(
        self,
        *,
        contact: str,
        direction: str,
        status: str,
        sent_at_ms: int,
        now_ms: int,
        text: str,
        envelope_id: bytes = b"",
        envelope: bytes | None = None,
        uid: str | None = None,
    ) -> str:
        """Store one message (history or outbox); returns its uid."""
        uid = uid or secrets.token_hex(16)
        body = self.vault.seal("messages.body", uid, pack([text, envelope_id]))
        env = None if envelope is None else self.vault.seal("messages.envelope", uid, envelope)
        await self._write(
            "INSERT INTO messages (uid, contact, direction, status, sent_at, stored_at, body, "
            "envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (uid, contact, direction, status, sent_at_ms, now_ms, body, env),
        )
        return uid

    async def update_outgoing(
        self,
        uid: str,
        status: str,
        *,
        text: str | None = None,
        envelope_id: bytes | None = None,
        envelope: bytes | None = None,
        sent_at_ms: int | None = None,
    ) -> None:
        """Move an outgoing message on (queued/held -> pending -> sent/failed).

        The envelope is kept only while `pending` (it is resent as-is after a reconnect).
        """
        if text is not None and envelope_id is not None:
            body = self.vault.seal("messages.body", uid, pack([text, envelope_id]))
            await self._write("UPDATE messages SET body = ? WHERE uid = ?", (body, uid))
        env = None if envelope is None else self.vault.seal("messages.envelope", uid, envelope)
        if status == "pending":
            await self._write(
                "UPDATE messages SET status = ?, envelope = coalesce(?, envelope), "
                "sent_at = coalesce(?, sent_at) WHERE uid = ?",
                (status, env, sent_at_ms, uid),
            )
        else:
            await self._write(
                "UPDATE messages SET status = ?, envelope = NULL, "
                "sent_at = coalesce(?, sent_at) WHERE uid = ?",
                (status, sent_at_ms, uid),
            )

    async def get_message(self, uid: str) -> StoredMessage | None:
        row = await self._one(_MSG_SELECT + " WHERE uid = ?", (uid,))
        return None if row is None else self._message(row)

    async def history(self, contact: str, limit: int) -> list[StoredMessage]:
        """The last `limit` messages with `contact`, both directions, oldest first.

        Incoming `held` messages (quarantined: sealed under an identity the user has not
        accepted) are left out until `trust` makes them `received`.
        """
        rows = await self._all(
            _MSG_SELECT + " WHERE contact = ? AND NOT (direction = 'in' AND status = 'held') "
            "ORDER BY id DESC LIMIT ?",
            (contact, limit),
        )
        return [self._message(r) for r in reversed(rows)]

    async def messages_with_status(
        self, statuses: Sequence[str], contact: str | None = None
    ) -> list[StoredMessage]:
        """Messages in any of `statuses` (optionally for one contact), oldest first."""
        marks = ",".join("?" * len(statuses))
        sql = _MSG_SELECT + f" WHERE status IN ({marks})"  # only "?" placeholders
        args: list[Any] = list(statuses)
        if contact is not None:
            sql += " AND contact = ?"
            args.append(contact)
        return [self._message(r) for r in await self._all(sql + " ORDER BY id", args)]

    async def release_incoming(self, contact: str) -> None:
        """Quarantined (incoming `held`) messages of `contact` become `received`."""
        await self._write(
            "UPDATE messages SET status = 'received' "
            "WHERE contact = ? AND direction = 'in' AND status = 'held'",
            (contact,),
        )

    async def mark_read(self, uids: Sequence[str] = (), contact: str | None = None) -> None:
        """Mark received messages read: these uids, or all of one contact's."""
        async with self.transaction():
            if contact is not None:
                await self._write(
                    "UPDATE messages SET status = 'read' WHERE status = 'received' AND contact = ?",
                    (contact,),
                )
            for uid in uids:
                await self._write(
                    "UPDATE messages SET status = 'read' WHERE status = 'received' AND uid = ?",
                    (uid,),
                )

    async def unread_counts(self) -> dict[str, int]:
        rows = await self._all(
            "SELECT contact, count(*) FROM messages WHERE status = 'received' GROUP BY contact"
        )
        return {r[0]: int(r[1]) for r in rows}

    # --- duplicates -----------------------------------------------------------------

    async def seen(self, envelope_id: bytes) -> bool:
        row = await self._one(
            "SELECT 1 FROM seen_envelopes WHERE blinded = ?", (self.vault.blind(envelope_id),)
        )
        return row is not None

    async def mark_seen(self, envelope_id: bytes, now_ms: int) -> None:
        await self._write(
            "INSERT OR IGNORE INTO seen_envelopes (blinded, seen_at) VALUES (?, ?)",
            (self.vault.blind(envelope_id), now_ms),
        )
