"""`hushwire-admin backup` and `restore`: whole-db copies with SQLite's online backup API.

A backup can be taken while the relay runs and sends (relay/migrate.py,
`online_backup`). A restore replaces the db, so it takes the db lock first
(relay/dblock.py): it refuses while a relay runs on that db, and a relay cannot start
while it runs. Before overwriting, the current db is itself backed up beside it, so a
restore of the wrong file can be undone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hushwire.relay import migrate
from hushwire.relay.dblock import DbLock
from hushwire.relay.errors import BackupError, DbLocked, NotHushwireDb


@dataclass(frozen=True, slots=True)
class DbSummary:
    """What a db (or a backup of one) holds, after an integrity check."""

    version: int
    users: int
    queued: int


def summary(path: Path) -> DbSummary:
    """Open `path` read-only, check its integrity and schema, and count what it holds."""
    if not path.is_file():
        raise BackupError(f"no file at {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise NotHushwireDb(f"{path}: {exc}") from None
    try:
        try:
            version = migrate.version_of(conn)
        except NotHushwireDb as exc:
            raise NotHushwireDb(f"{path}: {exc.message}") from None
        if version == 0:
            raise NotHushwireDb(f"{path} is an empty database")
        migrate.check_not_too_new(version, path)
        (check,) = conn.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise BackupError(f"{path} fails SQLite's integrity check: {check}")
        (users,) = conn.execute("SELECT COUNT(*) FROM users").fetchone()
        (queued,) = conn.execute("SELECT COUNT(*) FROM mailbox").fetchone()
    except sqlite3.DatabaseError as exc:
        raise NotHushwireDb(f"{path}: {exc}") from None
    finally:
        conn.close()
    return DbSummary(version, int(users), int(queued))


def backup(db: Path, dest: Path) -> DbSummary:
    """Copy the db (relay running or not) to `dest`, which must not exist."""
    if dest.exists():
        raise BackupError(f"{dest} already exists; choose another file or remove it")
    summary(db)  # a hushwire db, not too new, intact
    conn = migrate.connect(db)
    try:
        migrate.online_backup(conn, dest)
    finally:
        conn.close()
    return summary(dest)


def restore(source: Path, db: Path, *, now: dt.datetime) -> tuple[DbSummary, Path | None]:
    """Replace the db with `source`; return what it holds and where the old db went."""
    lock = DbLock(db)
    try:
        lock.acquire("hushwire-admin restore")
    except DbLocked as exc:
        raise DbLocked(f"a relay is running on {db} ({exc.message}); stop it first") from None
    try:
        restored = summary(source)
        saved = None
        if db.exists() and db.stat().st_size > 0:
            saved = Path(f"{db}.pre-restore-{now.strftime('%Y%m%dT%H%M%SZ')}")
            conn = migrate.connect(db)
            try:
                migrate.online_backup(conn, saved)
            finally:
                conn.close()
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        dst = migrate.connect(db)
        try:
            src.backup(dst)
            with contextlib.suppress(sqlite3.OperationalError):
                dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            dst.close()
            src.close()
        return restored, saved
    finally:
        lock.release()
