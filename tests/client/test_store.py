"""client/store.py: encryption at rest, passphrase, lock, schema."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import pytest

from hushwire.client.errors import ProfileCorrupt, ProfileLocked, ProfileMissing, WrongPassphrase
from hushwire.client.store import DB_NAME, KdfParams, ProfileStore, latest_version
from hushwire.common.keys import IdentityPublic

FAST = KdfParams(n=2**10)
IDENT = IdentityPublic("x25519", b"s" * 32, b"d" * 32, b"g" * 64)


@pytest.fixture
async def store(tmp_path):
    s = await ProfileStore.open(tmp_path / "p", "pw", create=True, kdf=FAST)
    yield s
    await s.close()


async def test_missing_profile_is_not_created_implicitly(tmp_path):
    with pytest.raises(ProfileMissing, match="hushwire login"):
        await ProfileStore.open(tmp_path / "none", "pw")
    assert not (tmp_path / "none").exists()


async def test_wrong_passphrase_and_the_right_one(tmp_path):
    s = await ProfileStore.open(tmp_path / "p", "pässwörd", create=True, kdf=FAST)
    await s.set_setting("relay", {"user": "alice"})
    await s.close()
    with pytest.raises(WrongPassphrase):
        await ProfileStore.open(tmp_path / "p", "password")
    # NFC and NFD spellings of the same passphrase open the same profile.
    s = await ProfileStore.open(tmp_path / "p", "pa\u0308sswo\u0308rd")
    assert await s.get_setting("relay") == {"user": "alice"}
    await s.close()


async def test_scrypt_parameters_are_stored_and_used(tmp_path):
    s = await ProfileStore.open(tmp_path / "p", "pw", create=True, kdf=KdfParams(n=2**11))
    await s.close()
    with sqlite3.connect(tmp_path / "p" / DB_NAME) as db:
        (blob,) = db.execute("SELECT value FROM meta WHERE key = 'kdf'").fetchone()
    import msgpack

    version, salt, n, r, p = msgpack.unpackb(blob)
    assert (version, len(salt), n, r, p) == (1, 16, 2**11, 8, 1)
    assert KdfParams() == KdfParams(n=2**15, r=8, p=1)


async def test_the_lock_admits_one_opener(store, tmp_path):
    with pytest.raises(ProfileLocked, match="in use by another hushwire process"):
        await ProfileStore.open(tmp_path / "p", "pw")
    await store.close()
    again = await ProfileStore.open(tmp_path / "p", "pw")
    await again.close()


async def test_blobs_are_bound_to_their_row_and_column(store, tmp_path):
    await store.add_contact("bob", IDENT, 1)
    await store.add_contact("carol", IDENT, 1)
    await store.add_message(
        contact="bob",
        direction="in",
        status="received",
        sent_at_ms=1,
        now_ms=1,
        text="to bob",
        envelope_id=b"1" * 16,
    )
    await store.add_message(
        contact="carol",
        direction="in",
        status="received",
        sent_at_ms=1,
        now_ms=1,
        text="to carol",
        envelope_id=b"2" * 16,
    )
    await store.close()
    with sqlite3.connect(tmp_path / "p" / DB_NAME) as db:
        bob_ident = db.execute("SELECT identity FROM contacts WHERE name='bob'").fetchone()[0]
        db.execute("UPDATE contacts SET identity = ? WHERE name = 'carol'", (bob_ident,))
        bodies = db.execute("SELECT body FROM messages ORDER BY id").fetchall()
        db.execute("UPDATE messages SET body = ? WHERE contact = 'carol'", bodies[0])
    s = await ProfileStore.open(tmp_path / "p", "pw")
    try:
        assert (await s.get_contact("bob")).identity == IDENT
        with pytest.raises(ProfileCorrupt, match="moved"):
            await s.get_contact("carol")
        assert [m.text for m in await s.history("bob", 5)] == ["to bob"]
        with pytest.raises(ProfileCorrupt):
            await s.history("carol", 5)
    finally:
        await s.close()


async def test_a_flipped_bit_in_a_secret_is_detected(store, tmp_path):
    await store.save_identity(b"secret identity bytes", 1)
    await store.close()
    with sqlite3.connect(tmp_path / "p" / DB_NAME) as db:
        blob = bytearray(db.execute("SELECT secret FROM identity").fetchone()[0])
        blob[20] ^= 1
        db.execute("UPDATE identity SET secret = ?", (bytes(blob),))
    s = await ProfileStore.open(tmp_path / "p", "pw")
    try:
        with pytest.raises(ProfileCorrupt):
            await s.load_identity()
    finally:
        await s.close()


async def test_schema_version_and_a_newer_profile_is_refused(store, tmp_path):
    assert await store.schema_version() == latest_version() >= 1
    await store.close()
    with sqlite3.connect(tmp_path / "p" / DB_NAME) as db:
        db.execute(f"PRAGMA user_version = {latest_version() + 1}")
    with pytest.raises(ProfileCorrupt, match="newer"):
        await ProfileStore.open(tmp_path / "p", "pw")


async def test_a_failed_transaction_leaves_nothing(store):
    with pytest.raises(RuntimeError):
        async with store.transaction():
            await store.add_contact("bob", IDENT, 1)
            await store.mark_seen(b"e" * 16, 1)
            raise RuntimeError("crash before commit")
    assert await store.get_contact("bob") is None
    assert not await store.seen(b"e" * 16)


@pytest.mark.parametrize("cancel_after_passes", [0, 1, 2, 3])
async def test_a_transaction_cancelled_at_any_await_leaves_the_store_usable(
    store, cancel_after_passes
):
    """A connection drop cancels the task that stores a delivery: wherever that lands
    (BEGIN sent but not yet answered, inside the body, at COMMIT), the next transaction
    must start cleanly, and the cancelled one must not be half-applied."""

    async def body() -> None:
        async with store.transaction():
            await store.add_contact("bob", IDENT, 1)
            await store.mark_seen(b"e" * 16, 1)

    task = asyncio.create_task(body())
    for _ in range(cancel_after_passes):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    async with store.transaction():
        await store.mark_seen(b"f" * 16, 2)
    assert await store.seen(b"f" * 16)
    # All or nothing for the cancelled one.
    assert (await store.get_contact("bob") is None) == (not await store.seen(b"e" * 16))


async def test_secrets_and_history_are_not_in_the_file(store, tmp_path):
    await store.set_setting("relay", {"token": "hw_SECRET_TOKEN_VALUE"})
    await store.add_message(
        contact="bob",
        direction="out",
        status="sent",
        sent_at_ms=1,
        now_ms=1,
        text="a very private sentence",
    )
    await store.mark_seen(b"ENVELOPE-ID-1234", 1)
    await store.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "p").iterdir())
    for needle in (b"hw_SECRET_TOKEN_VALUE", b"a very private sentence", b"ENVELOPE-ID-1234"):
        assert needle not in raw


async def test_upgrading_from_each_schema_version_equals_a_fresh_profile(tmp_path):
    from hushwire.client.store import schema_files

    def layout(path) -> list[tuple]:
        db = sqlite3.connect(path)
        try:
            return sorted(db.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
        finally:
            db.close()

    fresh = await ProfileStore.open(tmp_path / "fresh", "pw", create=True, kdf=FAST)
    await fresh.close()
    expected = layout(tmp_path / "fresh" / DB_NAME)
    for version in range(1, latest_version()):
        old = tmp_path / f"v{version}"
        old.mkdir()
        db = sqlite3.connect(old / DB_NAME)
        for _, sql in schema_files()[:version]:
            db.executescript(sql)
        db.execute(f"PRAGMA user_version = {version}")
        db.commit()
        db.close()
        upgraded = await ProfileStore.open(old, "pw", create=True, kdf=FAST)
        assert await upgraded.schema_version() == latest_version()
        await upgraded.close()
        assert layout(old / DB_NAME) == expected, version
