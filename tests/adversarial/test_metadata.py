"""What the relay's users and its files give away about others' traffic."""

from __future__ import annotations

import os
import stat

from hushwire.common.messages import Ack, Deliver, Send
from tests.support import add_users


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_db_and_its_wal_and_shm_are_owner_only(tmp_path, daemons, figures):
    old = os.umask(0o022)  # the usual umask, which made them 0644
    try:
        db = tmp_path / "relay.db"
        tokens = await add_users(db, ("alice", "bob"))
        relay = await daemons(db)
        alice = await relay.login("alice", tokens["alice"])
        bob = await relay.login("bob", tokens["bob"])
        await alice.request(Send, to=("bob",), body=b"x")
        push = await bob.pushes.get()
        while not isinstance(push, Deliver):
            push = await bob.pushes.get()
        await bob.request(Ack, mids=(push.mid,))
        modes = {p.name: _mode(p) for p in tmp_path.iterdir() if p.name.startswith("relay.db")}
        await alice.close()
        await bob.close()
        assert await relay.stop() == 0
    finally:
        os.umask(old)
    assert {"relay.db", "relay.db-wal", "relay.db-shm"} <= set(modes), modes
    assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
    figures.add(
        "file modes of the relay's db files under umask 022",
        ", ".join(f"{k} {oct(v)}" for k, v in sorted(modes.items())) + " (before: 0o644)",
    )


async def test_an_existing_world_readable_db_is_tightened(tmp_path):
    db = tmp_path / "relay.db"
    await add_users(db, ("alice",))
    os.chmod(db, 0o644)
    await add_users(db, ("bob",))  # any open goes through the same door
    assert _mode(db) == 0o600
