"""Schema migrations: numbered SQL files in the `migrations` package, applied in order.

Each backend has its own folder (migrations/sqlite/, migrations/postgresql/) with the
same numbers: version N means the same tables and answers in both. This module applies
the SQLite ones; relay/store/postgres.py applies the PostgreSQL ones from the same list.

The db records its version in `schema_version` (one row). `migrate()` applies every
pending file, each in its own transaction together with the version bump, so a crash
leaves the db at a whole version. Before upgrading a db that already holds a schema it
takes a copy with SQLite's online backup API (`<db>.bak-v<N>`); a brand-new db is built
in a temporary file and renamed into place, so a half-built db never appears under the
configured name. A db newer than this code is refused: older code cannot know what a
newer schema means.

This module is synchronous on purpose: it runs before the relay's event loop starts,
from `Store.open` via a thread, and from the admin CLI.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from hushwire.relay.errors import NotHushwireDb, SchemaError, SchemaTooNew

_FILE = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")

# How long a migration waits for a running relay to finish its current write.
BUSY_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


BACKENDS = ("sqlite", "postgresql")


@cache
def migrations(backend: str = "sqlite") -> tuple[Migration, ...]:
    """A backend's migrations shipped as package data, checked to be numbered 1..N
    without gaps."""
    if backend not in BACKENDS:
        raise SchemaError(f"no migrations for backend {backend!r}")
    found = []
    for entry in resources.files("hushwire.migrations").joinpath(backend).iterdir():
        m = _FILE.fullmatch(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    numbers = [mig.version for mig in found]
    if numbers != list(range(1, len(found) + 1)):
        raise SchemaError(
            f"{backend} migration files are not numbered 1..N without gaps: {numbers}"
        )
    return tuple(found)


def latest_version(backend: str = "sqlite") -> int:
    """The schema version this code builds and expects."""
    return len(migrations(backend))


# Owner-only: the db holds token hashes, key directories and queued envelopes. SQLite
# gives its -wal, -shm and -journal files the mode of the db file.
PRIVATE_MODE = 0o600
_COMPANIONS = ("", "-wal", "-shm", "-journal")


def make_private(path: str | Path) -> None:
    """Create `path` empty with mode 0600 if absent; take group and other access away
    from it and its SQLite companion files if present (dbs made before this rule)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    for suffix in _COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            name = f"{path}{suffix}"
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, PRIVATE_MODE)


def connect(path: str | Path) -> sqlite3.Connection:
    """A plain connection with the settings every hushwire connection needs."""
    make_private(path)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    # Deleted rows (acked envelopes, used prekeys, old tokens) are overwritten with
    # zeros, whatever the SQLite build's default.
    conn.execute("PRAGMA secure_delete = ON")
    return conn


def version_of(conn: sqlite3.Connection) -> int:
    """Schema version of an open db: 0 for an empty db; raises for a foreign one."""
    try:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as exc:
        raise NotHushwireDb(f"not a SQLite database: {exc}") from exc
    if "schema_version" not in tables:
        if tables:
            raise NotHushwireDb(
                "the file is a SQLite database without a hushwire schema_version table"
            )
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        raise NotHushwireDb("schema_version table is empty")
    return int(row[0])


def current_version(path: str | Path) -> int:
    """Schema version of the db at `path`; 0 when the file does not exist or is empty."""
    if not Path(path).exists():
        return 0
    conn = connect(path)
    try:
        return version_of(conn)
    finally:
        conn.close()


def check_not_too_new(version: int, where: str | Path, backend: str = "sqlite") -> None:
    if version > latest_version(backend):
        raise SchemaTooNew(
            f"{where} is at schema version {version}, but this hushwire only knows versions "
            f"up to {latest_version(backend)}; upgrade hushwire (or restore a backup), never "
            "run older code on a newer db"
        )


def _statements(sql: str) -> list[str]:
    """Split a migration into statements; sqlite3.complete_statement knows triggers."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        raise SchemaError(f"unterminated SQL statement in migration: {buf.strip()[:60]!r}")
    return out


def _apply(conn: sqlite3.Connection, mig: Migration) -> None:
    """Apply one migration and its version bump in a single transaction."""
    # Table rebuilds in later migrations need foreign keys off while they run (SQLite's
    # documented 12-step ALTER procedure); foreign_key_check below keeps them honest.
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _statements(mig.sql):
                conn.execute(stmt)
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise SchemaError(f"{mig.name} leaves broken foreign keys: {broken[:3]}")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (mig.version,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def _upgrade(conn: sqlite3.Connection, start: int, target: int) -> None:
    for mig in migrations()[start:target]:
        _apply(conn, mig)


def backup_path(path: str | Path, version: int) -> Path:
    return Path(f"{path}.bak-v{version}")


def online_backup(conn: sqlite3.Connection, dest: Path) -> None:
    """Copy the db behind `conn` to `dest` with SQLite's online backup API.

    Consistent even while the relay writes: one backup step reads a single snapshot
    (in WAL mode a reader never blocks the writer). The copy is written to a temp file
    (mode 0600: it holds token hashes), switched out of WAL so it is one self-contained
    file, synced, then renamed into place.
    """
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    make_private(tmp)
    out = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        conn.backup(out)
        out.execute("PRAGMA journal_mode = DELETE")
    finally:
        out.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dest)


def _build_fresh(path: Path, target: int) -> None:
    """Build a new db next to `path` and rename it into place only when complete."""
    tmp = path.with_name(f".{path.name}.building-{os.getpid()}")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    conn = connect(tmp)
    try:
        _upgrade(conn, 0, target)
        # Switch to WAL after building, so the renamed file is one self-contained db.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    # Closing the last connection checkpoints and removes -wal/-shm; only the db remains.
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, path)


def migrate(path: str | Path, *, target: int | None = None) -> tuple[int, int]:
    """Bring the db at `path` to `target` (default: latest); return (from, to).

    Creates the db when missing. Raises SchemaTooNew for a db newer than the code and
    NotHushwireDb for a foreign file. `target` below latest exists for tests that
    build every intermediate version.
    """
    path = Path(path)
    goal = latest_version() if target is None else target
    if not 0 <= goal <= latest_version():
        raise SchemaError(f"no schema version {goal} (known: 1..{latest_version()})")
    if not path.exists() or path.stat().st_size == 0:
        if path.exists():
            path.unlink()
        if goal > 0:
            _build_fresh(path, goal)
        return 0, goal
    conn = connect(path)
    try:
        start = version_of(conn)
        check_not_too_new(start, path)
        if start >= goal:
            return start, start
        if start > 0:
            online_backup(conn, backup_path(path, start))
        _upgrade(conn, start, goal)
        with contextlib.suppress(sqlite3.OperationalError):
            # Best effort: a running relay may hold the db; WAL is then already on.
            conn.execute("PRAGMA journal_mode = WAL")
        return start, goal
    finally:
        conn.close()
