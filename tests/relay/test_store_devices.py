"""Migration 0004 and the store's device operations on a real SQLite file."""

from __future__ import annotations

import asyncio

import pytest

from hushwire.common.crypto.devices import first_device_list
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.messages import Deliver
from hushwire.relay import migrate as mg
from hushwire.relay.errors import UnknownUser
from hushwire.relay.store import Store
from hushwire.relay.tokens import hash_token, new_salt, new_token

WAIT = 10.0


def _db_from_the_previous_release(path, tokens):
    """A db as the single-device release (schema 3) leaves it: users, keys, queued mail."""
    mg.migrate(path, target=3)
    conn = mg.connect(path)
    for i, name in enumerate(("alice", "bob"), start=1):
        salt = new_salt()
        conn.execute(
            "INSERT INTO users (name, token_hash, token_salt, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (name, hash_token(tokens[name], salt), salt, 100 + i, 100 + i),
        )
        conn.execute(
            "INSERT INTO identity_keys VALUES (?, 1, 'x25519', ?, ?, ?, 1)",
            (i, bytes([i]) * 32, bytes([i]) * 32, bytes([i]) * 64),
        )
    conn.executemany(
        "INSERT INTO mailbox (recipient_id, sender, created_at, body) VALUES (1, 'bob', ?, ?)",
        [(200 + n, f"queued {n}".encode()) for n in range(3)],
    )
    conn.close()


async def test_an_upgraded_db_keeps_every_queued_envelope_and_login(tmp_path, relay_factory):
    db = tmp_path / "relay.db"
    tokens = {"alice": new_token(), "bob": new_token()}
    _db_from_the_previous_release(db, tokens)
    async with await Store.open(db) as store:
        assert [e.body for e in await store.pending("alice")] == [
            b"queued 0",
            b"queued 1",
            b"queued 2",
        ]
        devices = await store.account_devices(["alice", "bob"])
        assert devices["alice"].device_ids == devices["alice"].live_ids == {1}
        assert devices["alice"].version == 0 and devices["alice"].signed is None
        assert (await store.account_identity("bob")).sign_key == bytes([2]) * 32
        assert [u.name for u in await store.list_users()] == ["alice", "bob"]
        assert await store.list_devices("alice") == [(1, 101, None)]
    relay = await relay_factory(db=db, tokens=tokens)
    alice = await relay.login("alice")
    got = [await asyncio.wait_for(alice.pushes.get(), WAIT) for _ in range(3)]
    assert [(d.body, d.sender, d.sender_device) for d in got if isinstance(d, Deliver)] == [
        (b"queued 0", "bob", 1),
        (b"queued 1", "bob", 1),
        (b"queued 2", "bob", 1),
    ]


async def test_every_new_account_is_its_own_first_device(tmp_path):
    async with await Store.open(tmp_path / "r.db") as store:
        salt = new_salt()
        await store.add_user("carol", hash_token(new_token(), salt), salt, now=7)
        assert await store.list_devices("carol") == [(1, 7, None)]
        assert store.single_device(["carol"])
        with pytest.raises(UnknownUser):
            await store.list_devices("nobody")
        with pytest.raises(UnknownUser):
            await store.remove_device("carol", 3)


def _signed_lists(n: int):
    """Versions 1..n of one account's list (device i+1 added at version i+1), signed."""
    identity = IdentityKeyPair.generate(X25519)
    lists = [first_device_list("alice", "x25519", "d1", identity.dh.public, 1)]
    for _ in range(n - 1):
        lists.append(lists[-1].with_device("d", X25519.generate().public, 2)[0])
    return [(d, d.sign(identity)) for d in lists]


async def test_devices_on_every_backend(store_target):
    """The same device operations on SQLite and PostgreSQL: link, fan-out, unlink,
    stale versions, operator removal, identity reset."""
    (_, s1), (_, s2), (_, s3) = _signed_lists(3)
    async with await Store.open(store_target) as store:
        for name in ("alice", "bob"):
            await store.add_user(name, b"h" * 32, b"s" * 16, now=5)
        await store.store_device_list("alice", 1, s1, removed=frozenset(), now=6)
        await store.add_device("alice", 2, 2, s2, token_hash=b"t" * 32, salt=b"u" * 16, now=7)
        await store.add_device("alice", 3, 3, s3, token_hash=b"t" * 32, salt=b"u" * 16, now=8)
        cur = await store.account_devices(["alice", "bob", "ghost"])
        assert set(cur) == {"alice", "bob"}
        assert cur["alice"].device_ids == cur["alice"].live_ids == {1, 2, 3}
        assert cur["alice"].version == 3 and cur["alice"].signed == s3
        assert not store.single_device(["alice"]) and store.single_device(["bob"])
        assert [u.name for u in await store.list_users()] == ["alice", "bob"]
        assert {u.name for u in await store.list_principals()} == {
            "alice", "alice/2", "alice/3", "bob",
        }  # fmt: skip
        assert await store.page_users(None, 10) == ["alice", "bob"]  # no device principals
        assert await store.enqueue_each("bob", ["alice", "alice/2"], [b"1", b"2"], now=9)
        assert [e.body for e in await store.pending("alice/2")] == [b"2"]
        with pytest.raises(RequestError) as exc:
            await store.store_device_list("alice", 3, s3, removed=frozenset(), now=9)
        assert exc.value.code == ErrorCode.STALE_DEVICE_LIST
        # The store keeps what the handlers checked (relay/devices.py); it only orders
        # versions and unlinks what it is told.
        await store.store_device_list("alice", 4, s3, removed=frozenset({3}), now=10)
        assert (await store.account_devices(["alice"]))["alice"].live_ids == {1, 2}
        await store.remove_device("alice", 2)
        assert await store.pending("alice/2") == []
        assert store.single_device(["alice"])
        assert await store.list_devices("alice") == [(1, 5, None)]
        assert await store.reset_devices("alice", keep=1) == frozenset()
        assert (await store.account_devices(["alice"]))["alice"].signed is None


async def test_the_devices_cache_follows_every_change(store_target):
    """send_devices is checked against `cached_devices` without a query: every change
    must drop the account from it, and a shared store (several relays) keeps none."""
    (_, s1), (_, s2), (_, s3) = _signed_lists(3)
    async with await Store.open(store_target) as store:
        for name in ("alice", "bob"):
            await store.add_user(name, b"h" * 32, b"s" * 16, now=5)
        await store.store_device_list("alice", 1, s1, removed=frozenset(), now=6)
        assert store.cached_devices(["alice", "bob"]) is None  # nothing read yet
        await store.account_devices(["alice", "bob"])
        if store.shared:  # another relay's change would never reach this cache
            assert store.cached_devices(["alice"]) is None
            return
        assert store.cached_devices(["alice", "bob"])["alice"].version == 1
        assert store.cached_devices(["alice", "ghost"]) is None
        changes = [
            lambda: store.add_device(
                "alice", 2, 2, s2, token_hash=b"t" * 32, salt=b"u" * 16, now=7
            ),
            lambda: store.store_device_list("alice", 3, s3, removed=frozenset(), now=8),
            lambda: store.remove_device("alice", 2),
            lambda: store.reset_devices("alice", keep=1),
        ]
        for change in changes:
            await store.account_devices(["alice"])
            assert store.cached_devices(["alice"]) is not None
            await change()
            assert store.cached_devices(["alice"]) is None
        # The admin CLI changes the db from another process: the relay's user-events
        # poll drops the names it reports (`_forget`), the account's devices with them.
        await store.account_devices(["alice"])
        store._forget("alice/2")
        assert store.cached_devices(["alice"]) is None
        assert store.cached_devices(["bob"]) is not None
