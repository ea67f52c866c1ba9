"""Migrations: fresh builds, upgrades from every version, refusals, backups."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hushwire.relay import migrate as mg
from hushwire.relay.errors import NotHushwireDb, SchemaError, SchemaTooNew


def schema_of(path: Path) -> tuple[list[tuple[str, str, str]], int]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
    finally:
        conn.close()
    return [(t, n, s or "") for t, n, s in rows], version


def test_migration_files_are_numbered_without_gaps() -> None:
    migs = mg.migrations()
    assert [m.version for m in migs] == list(range(1, len(migs) + 1))
    assert mg.latest_version() == len(migs) >= 2
    assert migs[0].name == "0001_init.sql"


def test_fresh_build_has_every_table_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "users.db"
    assert mg.migrate(db) == (0, mg.latest_version())
    schema, version = schema_of(db)
    assert version == mg.latest_version() == mg.current_version(db)
    tables = {n for t, n, _ in schema if t == "table"}
    assert {
        "users",
        "identity_keys",
        "signed_prekeys",
        "one_time_prekeys",
        "identity_watchers",
        "mailbox",
        "schema_version",
        "user_events",
    } <= tables
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    # The build happened in a temp file that was renamed: nothing else is left behind.
    leftovers = {p.name for p in tmp_path.iterdir()} - {"users.db", "users.db-wal", "users.db-shm"}
    assert leftovers == set()


@pytest.mark.parametrize("start", range(mg.latest_version() + 1))
def test_upgrade_from_every_version_equals_fresh_build(tmp_path: Path, start: int) -> None:
    fresh = tmp_path / "fresh.db"
    mg.migrate(fresh)
    old = tmp_path / "old.db"
    if start:
        assert mg.migrate(old, target=start) == (0, start)
        assert mg.current_version(old) == start
        conn = mg.connect(old)
        conn.execute(
            "INSERT INTO users (name, token_hash, token_salt, created_at, updated_at)"
            " VALUES ('alice', x'00', x'01', 1, 1)"
        )
        conn.close()
    else:
        sqlite3.connect(old).close()  # an empty file, as sqlite3 creates it
    assert mg.migrate(old) == (start, mg.latest_version())
    assert schema_of(old) == schema_of(fresh)
    if 0 < start < mg.latest_version():
        assert mg.current_version(mg.backup_path(old, start)) == start
    if start:
        conn = sqlite3.connect(old)
        assert conn.execute("SELECT name FROM users").fetchall() == [("alice",)]
        conn.close()


def test_migrate_is_idempotent_and_skips_backup_when_current(tmp_path: Path) -> None:
    db = tmp_path / "users.db"
    mg.migrate(db)
    latest = mg.latest_version()
    assert mg.migrate(db) == (latest, latest)
    assert not any(p.name.startswith("users.db.bak") for p in tmp_path.iterdir())


def test_current_version_of_missing_db_is_zero_and_creates_nothing(tmp_path: Path) -> None:
    assert mg.current_version(tmp_path / "nope.db") == 0
    assert list(tmp_path.iterdir()) == []


def test_refuses_db_newer_than_code(tmp_path: Path) -> None:
    db = tmp_path / "users.db"
    mg.migrate(db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_version SET version = ?", (mg.latest_version() + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew, match=f"version {mg.latest_version() + 1}"):
        mg.migrate(db)
    assert mg.current_version(db) == mg.latest_version() + 1


def test_refuses_foreign_sqlite_db(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(NotHushwireDb):
        mg.migrate(db)


def test_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "users.db"
    db.write_bytes(b"this is not a database, just some text" * 100)
    with pytest.raises(NotHushwireDb):
        mg.migrate(db)


def test_unknown_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SchemaError):
        mg.migrate(tmp_path / "x.db", target=mg.latest_version() + 1)


def test_failing_migration_rolls_back_whole_step(tmp_path: Path) -> None:
    db = tmp_path / "users.db"
    mg.migrate(db)
    conn = mg.connect(db)
    bad = mg.Migration(99, "0099_bad.sql", "CREATE TABLE t (x);\nINSERT INTO nope VALUES (1);\n")
    with pytest.raises(sqlite3.OperationalError):
        mg._apply(conn, bad)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "t" not in tables
    assert mg.version_of(conn) == mg.latest_version()
    conn.close()


def test_statement_splitter_keeps_trigger_bodies_whole() -> None:
    sql = next(m.sql for m in mg.migrations() if m.version == 2)
    stmts = mg._statements(sql)
    assert len(stmts) == 5
    assert all(s.endswith(";") for s in stmts)
    assert sum("CREATE TRIGGER" in s for s in stmts) == 4
    with pytest.raises(SchemaError):
        mg._statements("CREATE TABLE t (x)")
