"""A profile from before per-device fan-out (schema 2) upgrades with nothing queued
lost: its unconfirmed envelope and its queued message go out as fan-outs, in order,
over a real relay and real TLS. The held device lists and their in-memory cache."""

from __future__ import annotations

import sqlite3

import pytest

from hushwire.client.fanout import HeldLists
from hushwire.client.store import DB_NAME, KdfParams, ProfileStore, latest_version
from hushwire.common.crypto.devices import first_device_list
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.keys import PrekeyBundle


async def _no_fetch(name: str, device: int = 1) -> PrekeyBundle:
    raise AssertionError(f"the session with {name} exists: nothing to fetch")


async def test_a_profile_from_before_fan_out_upgrades_and_sends_what_waited(
    relay, login, reopen, tmp_path
):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    await alice.send("bob", "before the upgrade")
    await bob.sync()
    await alice.close()
    # What the previous release left in an outbox: an encrypted envelope the relay never
    # confirmed (stored as one raw envelope) and a message queued while offline.
    old = await reopen("alice")
    out = await old.sessions.prepare_send("bob", "unconfirmed", _no_fetch)
    await old.sessions.queue("bob", "queued")
    assert out.copies == ()
    await old.close()
    db = sqlite3.connect(tmp_path / "profile-alice" / DB_NAME)
    for table in ("device_sessions", "groups", "group_messages", "group_held", "group_outbox"):
        db.execute(f"DROP TABLE {table}")  # what schema 3 and later added
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()

    upgraded = await reopen("alice")
    assert await upgraded.sessions.store.schema_version() == latest_version() == 5
    await upgraded.start()
    await upgraded.flush_outbox()
    await bob.sync()
    assert [h.text for h in await bob.history("alice", 10)] == [
        "before the upgrade",
        "unconfirmed",
        "queued",
    ]
    assert {h.status for h in await upgraded.history("bob", 10)} == {"sent"}


async def test_held_lists_are_cached_and_every_change_is_seen(tmp_path):
    """Lists are read from the profile once, not on every send; holding a newer one,
    forgetting one, or a hold rolled back with its transaction are all seen at once."""
    store = await ProfileStore.open(tmp_path / "p", "pw", create=True, kdf=KdfParams(n=2**10))
    try:
        reads = []
        real_get = store.get_setting

        async def counting(key):
            reads.append(key)
            return await real_get(key)

        store.get_setting = counting
        lists = HeldLists(store)
        identity = IdentityKeyPair.generate(X25519)
        v1 = first_device_list("bob", "x25519", "first", identity.dh.public, 1)
        v2, _ = v1.with_device("phone", X25519.generate().public, 2)
        assert await lists.get("bob") is None
        await lists.hold("bob", v1.sign(identity))
        for _ in range(5):
            assert await lists.get("bob") == v1
            assert await lists.listed_key("bob", 2) is None
        assert reads == ["device_list/bob", "device_list/bob"]  # once before, once after
        await lists.hold("bob", v2.sign(identity))
        assert await lists.listed_key("bob", 2) == v2.device(2).dh_key
        with pytest.raises(RuntimeError):
            async with store.transaction():
                await lists.hold("bob", v1.sign(identity))
                raise RuntimeError("rolled back")
        assert await lists.get("bob") == v2
        await lists.forget("bob")
        assert await lists.get("bob") is None
        assert await HeldLists(store).get("bob") is None  # what the profile holds
    finally:
        await store.close()
