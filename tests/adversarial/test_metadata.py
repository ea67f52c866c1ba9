"""What the relay's users and its files give away about others' traffic."""

from __future__ import annotations

import asyncio
import os
import stat

from hushwire.common.messages import Ack, Deliver, Ping, PresenceChanged, Send, Who
from tests.support import WAIT, add_users


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


async def test_mailbox_ids_do_not_count_other_peoples_traffic(relay_factory, figures):
    relay = await relay_factory(users=("alice", "bob", "mallory", "mole"))
    mallory, mole = await relay.login("mallory"), await relay.login("mole")
    alice, bob = await relay.login("alice"), await relay.login("bob")

    async def probe() -> int:
        ok = await mole.request(Send, to=("mallory",), body=b"probe")
        assert ok.mids == ()  # a sender learns no id at all
        push = await asyncio.wait_for(mallory.pushes.get(), WAIT)
        while not isinstance(push, Deliver):
            push = await asyncio.wait_for(mallory.pushes.get(), WAIT)
        await mallory.request(Ack, mids=(push.mid,))
        return push.mid

    gaps, traffic = [], [37, 5, 0, 12]
    for n in traffic:
        first = await probe()
        for i in range(n):  # traffic between others, which the probes must not reveal
            await alice.request(Send, to=("bob",), body=b"%d" % i)
        second = await probe()
        gaps.append(second - first)
    got = 0
    while got < sum(traffic):
        if isinstance(await asyncio.wait_for(bob.pushes.get(), WAIT), Deliver):
            got += 1
    # Before the fix the gap was exactly the traffic + 1 (one global counter).
    assert all(gap != n + 1 for gap, n in zip(gaps, traffic, strict=True)), gaps
    figures.add(
        "two accounts probe with sends to each other around 37, 5, 0 and 12 sends by others",
        "id gaps bear no relation to the traffic (random 63-bit ids per delivery, none to "
        "the sender); before: gaps 38, 6, 1, 13 exactly",
    )


async def test_strangers_do_not_see_each_others_logins(relay_factory, figures):
    relay = await relay_factory(users=("alice", "bob", "mallory"))
    mallory = await relay.login("mallory")
    await mallory.request(Who)  # asks for presence pushes of everyone it can
    seen = 0
    for _ in range(5):  # alice comes and goes; she and mallory never exchanged keys
        alice = await relay.login("alice")
        who = await mallory.request(Who)
        assert ("alice", False) in {(p.user, p.online) for p in who.users}
        await alice.close()
    await mallory.request(Ping)  # every push sent before this reply has arrived
    while not mallory.pushes.empty():
        seen += isinstance(mallory.pushes.get_nowait(), PresenceChanged)
    assert seen == 0
    figures.add(
        "a user watches presence while a stranger (no bundle fetched either way) logs "
        "in and out 5 times",
        f"{seen} presence pushes, `who` shows her offline throughout (before: every login "
        "and logout of every user pushed to every user who asked `who`)",
    )


async def test_acked_envelopes_leave_the_db_and_its_wal(relay_factory, tmp_path, figures):
    relay = await relay_factory(users=("alice", "bob"))
    alice = await relay.login("alice")
    secret = os.urandom(3000)  # stands in for a sealed envelope
    await alice.request(Send, to=("bob",), body=secret)  # bob offline: it is written
    bob = await relay.login("bob")
    push = await asyncio.wait_for(bob.pushes.get(), WAIT)
    while not isinstance(push, Deliver):
        push = await asyncio.wait_for(bob.pushes.get(), WAIT)
    assert push.body == secret
    assert (await bob.request(Ack, mids=(push.mid,))).deleted == 1
    store = relay.server.relay.store
    await store.checkpoint()  # what the relay runs every 30 s
    files = [p for p in tmp_path.iterdir() if p.name in ("relay.db", "relay.db-wal")]
    found = [p.name for p in files if secret[:64] in p.read_bytes()]
    assert found == [], found
    figures.add(
        "an envelope stored, delivered and acked, then the periodic checkpoint",
        "its bytes are in neither relay.db nor its WAL (secure_delete on, WAL truncated "
        "at each checkpoint; before: still in the WAL after the checkpoint, 35 s in the "
        "review)",
    )
