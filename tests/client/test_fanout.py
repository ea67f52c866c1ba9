"""A profile from before per-device fan-out (schema 2) upgrades with nothing queued
lost: its unconfirmed envelope and its queued message go out as fan-outs, in order,
over a real relay and real TLS."""

from __future__ import annotations

import sqlite3

from hushwire.client.store import DB_NAME, latest_version
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
    for table in ("device_sessions", "groups", "group_messages", "group_held"):
        db.execute(f"DROP TABLE {table}")  # what schema 3 and later added
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()

    upgraded = await reopen("alice")
    assert await upgraded.sessions.store.schema_version() == latest_version() == 4
    await upgraded.start()
    await upgraded.flush_outbox()
    await bob.sync()
    assert [h.text for h in await bob.history("alice", 10)] == [
        "before the upgrade",
        "unconfirmed",
        "queued",
    ]
    assert {h.status for h in await upgraded.history("bob", 10)} == {"sent"}
