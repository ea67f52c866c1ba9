"""client/group_store.py: groups, their conversations and held input, sealed at rest."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from hushwire.client.errors import ProfileCorrupt
from hushwire.client.group_store import MAX_HELD, GroupSend, GroupStore
from hushwire.client.store import DB_NAME, KdfParams, ProfileStore
from hushwire.common.chat_group_log import create_group
from hushwire.common.chat_transcript import compose, new_transcript
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.messages import DeviceEnvelope

PASS = "pw"


@pytest.fixture
async def store(tmp_path):
    s = await ProfileStore.open(tmp_path / "p", PASS, create=True, kdf=KdfParams(n=2**10))
    yield s
    await s.close()


def a_group(name: str = "team"):
    alice = IdentityKeyPair.generate(X25519)
    bob = IdentityKeyPair.generate(X25519)
    log, _ = create_group(alice, "alice", name, {"bob": bob.sign_key}, 1000)
    transcript, _ = compose(log, new_transcript(log, 1), "hi")
    return log, transcript


async def test_a_group_round_trips_and_nothing_about_it_is_in_the_clear(store, tmp_path):
    groups = GroupStore(store)
    log, transcript = a_group("secret-team-name")
    await groups.save(log, transcript, 1)
    uid = await groups.add_line(
        log.group_id.hex(), "in", "received", sender="bob", device=2, sent_at_ms=5, now_ms=6,
        text="a secret text",
    )  # fmt: skip
    got = await groups.get(log.group_id)
    assert got is not None and got.log == log and got.transcript.to_bytes() == transcript.to_bytes()
    (line,) = await groups.lines(log.group_id.hex(), 10)
    assert (line.uid, line.sender, line.device, line.text) == (uid, "bob", 2, "a secret text")
    assert await groups.unread_counts() == {log.group_id.hex(): 1}
    await groups.mark_read(gid=log.group_id.hex())
    assert await groups.unread() == []
    await store.close()
    raw = (tmp_path / "p" / DB_NAME).read_bytes()
    for secret in (b"secret-team-name", b"a secret text", b"bob"):
        assert secret not in raw


async def test_a_blob_moved_to_another_group_does_not_open(store, tmp_path):
    groups = GroupStore(store)
    one, t1 = a_group("one")
    two, t2 = a_group("two")
    await groups.save(one, t1, 1)
    await groups.save(two, t2, 1)
    await store.close()
    db = sqlite3.connect(tmp_path / "p" / DB_NAME)
    db.execute(
        "UPDATE groups SET log = (SELECT log FROM groups WHERE gid = ?) WHERE gid = ?",
        (one.group_id.hex(), two.group_id.hex()),
    )
    db.commit()
    db.close()
    again = await ProfileStore.open(tmp_path / "p", PASS)
    try:
        with pytest.raises(ProfileCorrupt, match="fails authentication"):
            await GroupStore(again).get(two.group_id)
    finally:
        await again.close()


async def test_held_input_is_bounded_and_kept_in_order(store):
    groups = GroupStore(store)
    for i in range(MAX_HELD + 5):
        await groups.hold("missing", 3, "bob", 1, i, i.to_bytes(2, "big"), i)
    await groups.hold("quarantine", 2, "carol", 2, 7, b"q", 7)
    held = await groups.held("missing")
    assert len(held) == MAX_HELD - 1  # the newest MAX_HELD rows in all, one quarantined
    assert [h.sent_at_ms for h in held] == list(range(6, MAX_HELD + 5))
    (q,) = await groups.held("quarantine", "carol")
    assert (q.kind, q.sender, q.device, q.data) == (2, "carol", 2, b"q")
    await groups.drop_held(q.uid)
    assert await groups.held("quarantine") == []


async def test_kept_sends_come_back_in_order_with_their_envelopes_and_sealed_at_rest(
    store, tmp_path
):
    groups = GroupStore(store)
    first = GroupSend.new(("bob", "carol"), b"secret change", line="")
    second = GroupSend.new(("bob",), b"a welcome", own_devices=False)
    third = GroupSend.new(("bob",), b"secret note", b"secret payload", line="l1")
    for send in (first, second, third):
        await groups.keep_send(send, 1)
    sealed = {("bob", 2): DeviceEnvelope("bob", 2, b"secret envelope")}
    await groups.keep_send(dataclasses.replace(first, sealed=sealed), 2)  # updated in place
    got = await groups.sends()
    assert [s.uid for s in got] == [first.uid, second.uid, third.uid]
    assert got[0] == dataclasses.replace(first, sealed=sealed)
    assert (got[1].own_devices, got[1].payload) == (False, None)
    assert got[2] == third
    await groups.drop_send(first.uid)
    assert [s.uid for s in await groups.sends()] == [second.uid, third.uid]
    await store.close()
    raw = (tmp_path / "p" / DB_NAME).read_bytes()
    for secret in (b"secret change", b"secret note", b"secret payload", b"secret envelope"):
        assert secret not in raw


async def test_a_kept_send_moved_to_another_row_does_not_open(store, tmp_path):
    groups = GroupStore(store)
    one, two = GroupSend.new(("bob",), b"one"), GroupSend.new(("bob",), b"two")
    await groups.keep_send(one, 1)
    await groups.keep_send(two, 1)
    await store.close()
    db = sqlite3.connect(tmp_path / "p" / DB_NAME)
    db.execute(
        "UPDATE group_outbox SET body = (SELECT body FROM group_outbox WHERE uid = ?) "
        "WHERE uid = ?",
        (one.uid, two.uid),
    )
    db.commit()
    db.close()
    reopened = await ProfileStore.open(tmp_path / "p", PASS, kdf=KdfParams(n=2**10))
    try:
        with pytest.raises(ProfileCorrupt):
            await GroupStore(reopened).sends()
    finally:
        await reopened.close()
