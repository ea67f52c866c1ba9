"""hushwire-admin, run in-process through main() and once as the console script."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hushwire.common.crypto.dh import load_pem
from hushwire.common.keys import IdentityPublic, OneTimePrekey, SignedDeviceList, SignedPrekey
from hushwire.relay import admin, tls
from hushwire.relay import migrate as mg
from hushwire.relay.admin import main
from hushwire.relay.make_example_db import DEMO_TOKENS, build
from hushwire.relay.store import Store, UserEventKind
from hushwire.relay.tokens import verify_token

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "users.db"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def add(capsys: pytest.CaptureFixture[str], db: Path, name: str) -> str:
    code, out, _ = run(capsys, "--db", str(db), "add-user", name, "--json")
    assert code == 0
    return json.loads(out)["token"]


def stored(db: Path, name: str) -> tuple[bytes, bytes, int]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT token_salt, token_hash, disabled FROM users WHERE name = ?", (name,)
        ).fetchone()
    finally:
        conn.close()


def assert_one_line_error(err: str, fragment: str) -> None:
    assert err.count("\n") == 1 and err.startswith("hushwire-admin"), err
    assert "error: " in err
    assert fragment in err
    assert "Traceback" not in err


def test_add_user_prints_token_once_and_stores_only_its_hash(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    code, out, err = run(capsys, "--db", str(db), "add-user", "alice")
    assert code == 0 and err == ""
    token = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("token:"))
    assert token.startswith("hw_")
    assert "will not be shown again" in out
    salt, digest, disabled = stored(db, "alice")
    assert verify_token(token, salt, digest) and disabled == 0
    assert token.encode() not in db.read_bytes()
    assert mg.current_version(db) == mg.latest_version()  # add-user created the db


def test_add_user_json_is_exactly_one_object(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = run(capsys, "--db", str(db), "add-user", "bob", "--json")
    assert code == 0
    obj = json.loads(out)
    assert set(obj) == {"user", "token"} and obj["user"] == "bob"
    salt, digest, _ = stored(db, "bob")
    assert verify_token(obj["token"], salt, digest)


def test_add_user_errors(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    add(capsys, db, "alice")
    code, out, err = run(capsys, "--db", str(db), "add-user", "alice")
    assert code == 1 and out == ""
    assert_one_line_error(err, "already exists")
    code, out, err = run(capsys, "--db", str(db), "add-user", "Not Valid")
    assert code == 2 and out == ""
    assert_one_line_error(err, "invalid username")


def test_list_users_table_and_json(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    add(capsys, db, "bob")
    add(capsys, db, "alice")
    run(capsys, "--db", str(db), "disable-user", "bob")
    code, out, _ = run(capsys, "--db", str(db), "list-users")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "CREATED", "LAST", "LOGIN"]
    assert lines[1].split()[:2] == ["alice", "active"] and lines[1].endswith("never")
    assert lines[2].split()[:2] == ["bob", "disabled"]
    assert lines[-1] == "2 user(s)"
    code, out, _ = run(capsys, "--db", str(db), "list-users", "--json")
    users = json.loads(out)
    assert [(u["user"], u["disabled"]) for u in users] == [("alice", False), ("bob", True)]
    assert all(set(u) == {"user", "disabled", "created_at", "last_login_at"} for u in users)


def test_disable_enable(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    add(capsys, db, "alice")
    code, out, _ = run(capsys, "--db", str(db), "disable-user", "alice")
    assert code == 0 and "disabled alice" in out
    assert stored(db, "alice")[2] == 1
    code, out, _ = run(capsys, "--db", str(db), "enable-user", "alice")
    assert code == 0 and stored(db, "alice")[2] == 0


def test_reset_token(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    old = add(capsys, db, "alice")
    code, out, _ = run(capsys, "--db", str(db), "reset-token", "alice", "--json")
    assert code == 0
    new = json.loads(out)["token"]
    salt, digest, _ = stored(db, "alice")
    assert verify_token(new, salt, digest) and not verify_token(old, salt, digest)
    code, out, _ = run(capsys, "--db", str(db), "reset-token", "alice")
    assert code == 0 and "will not be shown again" in out and "old token no longer works" in out


def test_remove_user_takes_mailbox(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    add(capsys, db, "alice")
    add(capsys, db, "bob")

    async def send() -> None:
        async with await Store.open(db) as s:
            await s.enqueue("alice", ["bob"], b"x", now=1)
            await s.enqueue("alice", ["bob"], b"y", now=1)

    asyncio.run(send())
    code, out, _ = run(capsys, "--db", str(db), "remove-user", "bob")
    assert code == 0 and "2 queued envelope(s)" in out
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM mailbox").fetchone() == (0,)
    assert conn.execute("SELECT name FROM users").fetchall() == [("alice",)]
    conn.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["disable-user", "ghost"],
        ["enable-user", "ghost"],
        ["reset-token", "ghost"],
        ["remove-user", "ghost"],
        ["issue-client-cert", "ghost", "--out", "certs"],
    ],
)
def test_unknown_user_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], db: Path, argv: list[str]
) -> None:
    add(capsys, db, "alice")
    code, out, err = run(capsys, "--db", str(db), *argv)
    assert code == 1 and out == ""
    assert_one_line_error(err, "ghost")


@pytest.mark.parametrize(
    "argv",
    [
        ["list-users"],
        ["stats"],
        ["disable-user", "alice"],
        ["enable-user", "alice"],
        ["reset-token", "alice"],
        ["remove-user", "alice"],
        ["issue-client-cert", "alice", "--out", "certs"],
    ],
)
def test_missing_db_is_an_error_and_not_created(
    capsys: pytest.CaptureFixture[str], db: Path, argv: list[str]
) -> None:
    code, out, err = run(capsys, "--db", str(db), *argv)
    assert code == 1 and out == ""
    assert_one_line_error(err, "no database")
    assert not db.exists()


def test_outdated_too_new_and_foreign_dbs(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    mg.migrate(db, target=1)
    code, _, err = run(capsys, "--db", str(db), "list-users")
    assert code == 1
    assert_one_line_error(err, "hushwire-admin migrate")
    assert mg.current_version(db) == 1  # never migrated behind the operator's back
    code, _, err = run(capsys, "--db", str(db), "add-user", "alice")
    assert code == 1
    code, out, _ = run(capsys, "--db", str(db), "migrate")
    assert code == 0 and f"v1 -> v{mg.latest_version()}" in out and "backup" in out
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    for argv in (["migrate"], ["stats"]):
        code, _, err = run(capsys, "--db", str(db), *argv)
        assert code == 1
        assert_one_line_error(err, "version 99")
    junk = db.with_name("junk.db")
    junk.write_bytes(b"definitely not sqlite " * 200)
    code, _, err = run(capsys, "--db", str(junk), "stats")
    assert code == 1
    assert_one_line_error(err, "not")


def test_migrate_creates_then_reports_up_to_date(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    code, out, _ = run(capsys, "--db", str(db), "migrate")
    assert code == 0 and f"v0 -> v{mg.latest_version()}" in out
    code, out, _ = run(capsys, "--db", str(db), "migrate")
    assert code == 0 and "up to date" in out


def test_every_user_command_works_on_a_postgresql_url(
    capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    code, _, err = run(capsys, "--db", pg_url, "list-users")
    assert code == 1  # an empty database is not migrated behind the operator's back
    assert_one_line_error(err, "schema version 0")
    code, out, _ = run(capsys, "--db", pg_url, "migrate")
    assert code == 0 and f"v0 -> v{mg.latest_version('postgresql')}" in out
    assert "backup" not in out  # PostgreSQL is backed up with its own tools
    code, out, _ = run(capsys, "--db", pg_url, "migrate")
    assert code == 0 and "up to date" in out
    token = add(capsys, pg_url, "alice")  # type: ignore[arg-type]
    add(capsys, pg_url, "bob")  # type: ignore[arg-type]
    assert run(capsys, "--db", pg_url, "disable-user", "bob")[0] == 0
    code, out, _ = run(capsys, "--db", pg_url, "list-users", "--json")
    assert [(u["user"], u["disabled"]) for u in json.loads(out)] == [
        ("alice", False),
        ("bob", True),
    ]
    code, out, _ = run(capsys, "--db", pg_url, "stats", "--json")
    stats = json.loads(out)
    assert (stats["users"], stats["disabled"], stats["queued"]) == (2, 1, 0)

    async def alice() -> tuple[bytes, bytes]:
        async with await Store.open(pg_url, migrate=False) as store:
            rec = await store.get_user("alice")
            assert rec is not None
            return rec.token_hash, rec.token_salt

    digest, salt = asyncio.run(alice())
    assert verify_token(token, salt, digest)
    code, out, _ = run(capsys, "--db", pg_url, "remove-user", "bob")
    assert code == 0 and "0 queued" in out
    # What only a SQLite file has is refused, pointing at PostgreSQL's own way.
    for argv, instead in (
        (["backup", "x.db"], "pg_dump"),
        (["restore", "x.db"], "pg_restore"),
        (["purge", "--older-than", "1"], "retention_days"),
    ):
        code, _, err = run(capsys, "--db", pg_url, *argv)
        assert code == 1
        assert_one_line_error(err, instead)
    code, _, err = run(capsys, "--db", pg_url, "remove-user", "bob")
    assert code == 1
    assert_one_line_error(err, "bob")


def test_every_other_command_works_on_a_postgresql_url_or_refuses_clearly(
    capsys: pytest.CaptureFixture[str], pg_url: str, tmp_path: Path
) -> None:
    assert run(capsys, "--db", pg_url, "migrate")[0] == 0
    old = add(capsys, pg_url, "alice")  # type: ignore[arg-type]
    code, out, _ = run(capsys, "--db", pg_url, "reset-token", "alice", "--json")
    new = json.loads(out)["token"]
    assert code == 0 and new != old
    assert run(capsys, "--db", pg_url, "disable-user", "alice")[0] == 0
    assert run(capsys, "--db", pg_url, "enable-user", "alice")[0] == 0

    async def look() -> tuple[bool, bytes, bytes]:
        async with await Store.open(pg_url, migrate=False) as s:
            await s.add_device(
                "alice", 2, 2, SignedDeviceList(b"b", b"s"), token_hash=b"h", salt=b"s", now=9
            )
            rec = await s.get_user("alice")
            assert rec is not None
            return rec.disabled, rec.token_hash, rec.token_salt

    disabled, digest, salt = asyncio.run(look())
    assert not disabled and verify_token(new, salt, digest)
    code, out, _ = run(capsys, "--db", pg_url, "list-devices", "alice", "--json")
    assert code == 0 and [d["device"] for d in json.loads(out)] == [1, 2]
    code, out, _ = run(capsys, "--db", pg_url, "remove-device", "alice", "2")
    assert code == 0 and "removed device 2" in out
    code, out, _ = run(capsys, "--db", pg_url, "list-devices", "alice", "--json")
    assert [d["device"] for d in json.loads(out)] == [1]
    # A client CA has no "beside the db" on a server: it must be named.
    certs = tmp_path / "certs"
    code, _, err = run(capsys, "--db", pg_url, "issue-client-cert", "alice", "--out", str(certs))
    assert code == 1
    assert_one_line_error(err, "--ca-dir")
    assert not certs.exists()
    code, out, _ = run(
        capsys,
        "--db",
        pg_url,
        "issue-client-cert",
        "alice",
        "--out",
        str(certs),
        "--ca-dir",
        str(tmp_path / "ca"),
    )
    assert code == 0 and (certs / "alice-cert.pem").exists()
    assert (tmp_path / "ca" / tls.CA_CERT).exists()
    # Nothing to find a relay by: stats says so, purge refuses and names the way.
    code, out, _ = run(capsys, "--db", pg_url, "stats")
    assert code == 0 and "not asked (--control SOCKET" in out
    code, _, err = run(capsys, "--db", pg_url, "purge", "--older-than", "1")
    assert code == 1
    assert_one_line_error(err, "--control SOCKET")
    code, _, err = run(
        capsys, "--db", pg_url, "--control", str(tmp_path / "none.sock"), "stats", "--json"
    )
    assert code == 1
    assert_one_line_error(err, "cannot reach the relay's control socket")
    # copy-store only goes from a file to a URL.
    code, _, err = run(capsys, "copy-store", "--from", str(tmp_path / "x.db"), "--to", "y.db")
    assert code == 1
    assert_one_line_error(err, "must be a postgresql:// URL")


def test_stats(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    add(capsys, db, "alice")
    add(capsys, db, "bob")
    run(capsys, "--db", str(db), "disable-user", "bob")
    code, out, _ = run(capsys, "--db", str(db), "stats", "--json")
    stats = json.loads(out)
    assert code == 0
    assert (stats["users"], stats["disabled"], stats["queued"]) == (2, 1, 0)
    assert stats["db_bytes"] > 0
    code, out, _ = run(capsys, "--db", str(db), "stats")
    assert "users:    2 (1 disabled)" in out and "queued:   0" in out


def test_issue_client_cert(capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path) -> None:
    add(capsys, db, "alice")
    out_dir = tmp_path / "certs"
    code, out, _ = run(capsys, "--db", str(db), "issue-client-cert", "alice", "--out", str(out_dir))
    assert code == 0 and "alice-cert.pem" in out
    assert (out_dir / "alice-cert.pem").exists() and (out_dir / "alice-key.pem").exists()
    assert (tmp_path / tls.CA_CERT).exists()  # the CA lives next to the db by default
    code, _, err = run(capsys, "--db", str(db), "issue-client-cert", "alice", "--out", str(out_dir))
    assert code == 1
    assert_one_line_error(err, "already exists")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["frobnicate"], ["add-user"], ["issue-client-cert", "alice"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "error" in err
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "add-user" in out and "insecure" not in out


async def test_disable_reaches_a_running_relay(store_target: Path | str) -> None:
    """The relay's open Store sees admin changes via user_events (SQLite's WAL or
    PostgreSQL, two connections)."""
    async with await Store.open(store_target) as relay_store:
        await relay_store.add_user("alice", b"h", b"s", now=1)
        cursor = await relay_store.last_user_event()
        code = await asyncio.to_thread(main, ["--db", str(store_target), "disable-user", "alice"])
        assert code == 0
        events = await relay_store.user_events(cursor)
        assert [(e.name, e.kind) for e in events] == [("alice", UserEventKind.DISABLED)]
        # The relay keeps working on the same db meanwhile.
        await relay_store.add_user("bob", b"h", b"s", now=1)
        assert await relay_store.enqueue("bob", ["alice"], b"x", now=1)


def test_dhparams_refuses_small_groups(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "group.pem"
    code, _, err = run(capsys, "dhparams", "--bits", "1024", "--out", str(out))
    assert code == 2 and "at least 2048" in err
    assert not out.exists()


def test_dhparams_writes_a_valid_group(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("hushwire.common.crypto.dhparams")
    out = tmp_path / "group.pem"
    argv = ["dhparams", "--bits", "256", "--out", str(out), "--workers", "1"]
    code, stdout, err = run(capsys, *argv, "--insecure-test-bits")
    assert code == 0, err
    assert "wrote a 256-bit" in stdout
    assert "\r[" in err and "candidates" in err  # the progress bar
    group = load_pem(out.read_text(), min_bits=256)
    assert group.p.bit_length() == 256
    code, _, err = run(capsys, *argv, "--insecure-test-bits")
    assert code == 1
    assert_one_line_error(err, "already exists")


def test_console_script(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "hushwire-admin"
    if not exe.exists():
        exe = Path(shutil.which("hushwire-admin") or "hushwire-admin")
    db = tmp_path / "users.db"
    ok = subprocess.run(
        [str(exe), "--db", str(db), "add-user", "alice", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["user"] == "alice"
    bad = subprocess.run(
        [str(exe), "--db", str(db), "remove-user", "ghost"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "ghost" in bad.stderr


# ---------------------------------------------------------------- users.db.example


def test_example_db_is_current_and_demo_tokens_verify(tmp_path: Path) -> None:
    example = REPO / "users.db.example"
    assert not any(Path(f"{example}{s}").exists() for s in ("-wal", "-shm", "-journal"))
    assert example.read_bytes()[18:20] == b"\x01\x01"  # rollback journal, not WAL
    conn = sqlite3.connect(f"file:{example}?mode=ro", uri=True)
    try:
        assert mg.version_of(conn) == mg.latest_version()
        rows = dict(
            (n, (s, h))
            for n, s, h in conn.execute("SELECT name, token_salt, token_hash FROM users")
        )
    finally:
        conn.close()
    assert set(rows) == set(DEMO_TOKENS) == {"alice", "bob", "carol"}
    for name, token in DEMO_TOKENS.items():
        assert token.startswith(f"hw_demo_{name}_") and len(token) >= 40
        salt, digest = rows[name]
        assert verify_token(token, salt, digest)
        assert not verify_token(DEMO_TOKENS["alice" if name != "alice" else "bob"], salt, digest)


def test_example_db_rebuild_is_reproducible(tmp_path: Path) -> None:
    rebuilt = build(tmp_path / "example.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.db"]

    def dump(path: Path) -> list[str]:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return list(conn.iterdump())
        finally:
            conn.close()

    assert dump(rebuilt) == dump(REPO / "users.db.example")


def test_admin_module_has_no_stray_defaults() -> None:
    assert admin.DEFAULT_DB == "users.db" and admin.MIN_DH_BITS == 2048


def test_list_and_remove_devices(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    add(capsys, db, "alice")

    async def link_one() -> None:
        async with await Store.open(db) as s:
            await s.add_device(
                "alice", 2, 2, SignedDeviceList(b"b", b"s"), token_hash=b"h", salt=b"s", now=9
            )
            await s.enqueue("alice", ["alice/2"], b"queued", now=9)

    asyncio.run(link_one())
    code, out, _ = run(capsys, "--db", str(db), "list-devices", "alice", "--json")
    assert code == 0
    assert [d["device"] for d in json.loads(out)] == [1, 2]
    code, out, _ = run(capsys, "--db", str(db), "list-devices", "alice")
    assert "2 device(s) of alice" in out
    code, out, _ = run(capsys, "--db", str(db), "remove-device", "alice", "2")
    assert code == 0 and "hushwire unlink 2" in out
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM mailbox").fetchone() == (0,)
    assert conn.execute("SELECT name FROM users").fetchall() == [("alice",)]
    conn.close()
    code, _, err = run(capsys, "--db", str(db), "remove-device", "alice", "2")
    assert code == 1
    assert_one_line_error(err, "no device 2")
    code, _, err = run(capsys, "--db", str(db), "list-devices", "ghost")
    assert_one_line_error(err, "ghost")


def test_copy_store_moves_every_user_key_and_queued_envelope_to_postgresql(
    capsys: pytest.CaptureFixture[str], db: Path, pg_url: str
) -> None:
    ident = IdentityPublic("x25519", b"\x01" * 32, b"\x02" * 32, b"\x03" * 64)
    spk = SignedPrekey(1, b"\x05" * 32, b"\x06" * 64)

    async def fill() -> list[int]:
        async with await Store.open(db) as s:
            for name in ("alice", "bob", "carol"):
                await s.add_user(name, name.encode(), b"salt", now=10)
            await s.set_disabled("carol", True, now=11)
            otks = [OneTimePrekey(i, bytes([i]) * 32) for i in range(3)]
            await s.publish_keys("bob", identity=ident, signed_prekey=spk, one_time=otks, now=12)
            await s.fetch_bundle("alice", "bob")  # alice watches bob; one prekey gone
            mids = await s.enqueue("alice", ["bob", "carol"], b"queued", now=13)
            # A queued group send: two notes, one payload stored once.
            mids += await s.enqueue_each(
                "alice", ["bob", "carol"], [b"note-b", b"note-c"], now=13, payload=b"group"
            )
            acked = await s.enqueue("alice", ["bob"], b"acked", now=14)
            await s.ack("bob", acked)  # the highest id ever used is gone from the mailbox
            return mids + acked

    mids = asyncio.run(fill())

    async def look(target: Path | str) -> tuple[object, ...]:
        async with await Store.open(target) as s:
            return (
                await s.list_users(),
                await s.pending("bob"),
                await s.pending("carol"),
                await s.key_status("bob"),
                await s.mailbox_count("bob"),
                {k: v for k, v in (await s.stats()).items() if k != "db_bytes"},
            )

    before = asyncio.run(look(db))
    assert [e.payload for e in before[1]] == [None, b"group"]  # type: ignore[attr-defined]
    code, out, _ = run(capsys, "copy-store", "--from", str(db), "--to", pg_url)
    assert code == 0, out
    assert "3 user(s), 4 queued envelope(s) with 1 group payload(s), 2 one-time" in out
    assert asyncio.run(look(pg_url)) == before

    async def ack_group_send() -> tuple[int, int]:
        """The copied payload is still shared: it goes with the last row naming it."""
        async with await Store.open(pg_url) as s:
            (bob_note,) = [e.mid for e in await s.pending("bob") if e.payload]
            await s.ack("bob", [bob_note])
            left = (await s.stats())["payloads"]
            (carol_note,) = [e.mid for e in await s.pending("carol") if e.payload]
            await s.ack("carol", [carol_note])
            return left, (await s.stats())["payloads"]

    assert asyncio.run(ack_group_send()) == (1, 0)

    async def carry_on() -> tuple[list[int], object, bool]:
        async with await Store.open(pg_url) as s:
            new = await s.enqueue("bob", ["alice"], b"after the move", now=20)
            result = await s.publish_keys(
                "bob",
                identity=IdentityPublic("x25519", b"\x01" * 32, b"\x09" * 32, b"\x03" * 64),
                signed_prekey=None,
                one_time=[],
                now=21,
            )
            await s.add_user("dave", b"d", b"s", now=22)  # ids continue after the copy
            return new, result.watchers, await s.user_exists("dave")

    new, watchers, dave = asyncio.run(carry_on())
    assert new[0] > max(mids)  # ids are never reused, not even the acked one
    assert watchers == ["alice"] and dave
    # Only into an empty store, and never from a URL or to a file.
    code, _, err = run(capsys, "copy-store", "--from", str(db), "--to", pg_url)
    assert code == 1
    assert_one_line_error(err, "already has users")
    code, _, err = run(capsys, "copy-store", "--from", pg_url, "--to", pg_url)
    assert code == 1
    assert_one_line_error(err, "SQLite file")
