"""client/session.py driven without a network: two profiles and an in-memory relay
(tests/client/conftest.py)."""

from __future__ import annotations

import random

import msgpack
import pytest

from hushwire.client.errors import BadBundle, MessageHeld, UnknownContact
from hushwire.client.keys import publish_fields as _publish_fields
from hushwire.client.keys import split_upload as _split_upload
from hushwire.client.outcomes import Duplicate, Received, Rejected
from hushwire.client.prekeys import (
    PREKEY_TARGET,
    KeyUpload,
)
from hushwire.client.session import IDENTITY_RECHECK_MS, SessionManager
from hushwire.client.settings import Backoff
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.envelope import Envelope, Session
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.errors import RequestError
from hushwire.common.keys import PrekeyBundle, SignedPrekey
from hushwire.common.messages import Deliver, PublishKeys
from tests.client.conftest import send


async def test_first_contact_reply_and_prekey_consumption(make, directory):
    alice, bob = await make("alice"), await make("bob")
    assert await bob.store.count_one_time_prekeys() == PREKEY_TARGET
    first = await send(alice, "bob", "hi bob", directory)
    got = await bob.receive(first)
    assert isinstance(got, Received) and (got.contact, got.text) == ("alice", "hi bob")
    assert got.used_one_time_prekey and not got.key_changed
    assert await bob.store.count_one_time_prekeys() == PREKEY_TARGET - 1
    reply = await bob.receive(await send(alice, "bob", "second", directory))
    assert reply.text == "second"
    back = await alice.receive(await send(bob, "alice", "hi alice", directory))
    assert back.text == "hi alice"
    # alice's session left its initial phase: her next envelope is a plain message.
    out = await alice.prepare_send("bob", "plain now", directory.fetch)
    assert Envelope.from_bytes(out.envelope).x3dh is None


async def test_out_of_order_duplicates_and_replays(make, directory):
    alice, bob = await make("alice"), await make("bob")
    delivered = [await send(alice, "bob", f"m{i}", directory) for i in range(6)]
    order = delivered[:]
    random.Random(7).shuffle(order)
    texts = [(await bob.receive(d)).text for d in order]
    assert sorted(texts) == [f"m{i}" for i in range(6)]
    again = await bob.receive(delivered[2])
    assert isinstance(again, Duplicate)
    assert [h.text for h in await bob.store.history("alice", 10)] == texts


async def test_tampered_envelopes_are_rejected_without_touching_the_state(make, directory):
    alice, bob = await make("alice"), await make("bob")
    await bob.receive(await send(alice, "bob", "start", directory))
    good = await send(alice, "bob", "intact", directory)
    before = await bob.store.load_sessions("alice")
    for i in range(0, len(good.body), 7):
        body = bytearray(good.body)
        body[i] ^= 0x01
        result = await bob.receive(Deliver(good.mid, "alice", 0, bytes(body)))
        assert isinstance(result, Rejected), i
    assert await bob.store.load_sessions("alice") == before
    assert (await bob.receive(good)).text == "intact"


async def test_envelopes_not_for_us_or_not_from_the_sender_are_rejected(make, directory):
    alice, bob, carol = await make("alice"), await make("bob"), await make("carol")
    to_carol = await send(alice, "carol", "for carol", directory)
    wrong = await bob.receive(Deliver(to_carol.mid, "alice", 0, to_carol.body))
    assert isinstance(wrong, Rejected) and "addressed to carol" in wrong.reason
    spoofed = await carol.receive(Deliver(to_carol.mid, "bob", 0, to_carol.body))
    assert isinstance(spoofed, Rejected) and "claims to be from alice" in spoofed.reason
    junk = await bob.receive(Deliver(9, "alice", 0, b"\x93not an envelope"))
    assert isinstance(junk, Rejected) and "malformed" in junk.reason
    assert (await carol.receive(to_carol)).text == "for carol"


async def test_simultaneous_first_messages_converge(make, directory):
    alice, bob = await make("alice"), await make("bob")
    a1 = await send(alice, "bob", "from alice", directory)
    b1 = await send(bob, "alice", "from bob", directory)
    assert (await bob.receive(a1)).text == "from alice"
    assert (await alice.receive(b1)).text == "from bob"
    for i in range(3):
        assert (await bob.receive(await send(alice, "bob", f"a{i}", directory))).text == f"a{i}"
        assert (await alice.receive(await send(bob, "alice", f"b{i}", directory))).text == f"b{i}"


async def test_changed_identity_in_a_bundle_holds_until_trust(make, directory):
    alice, bob = await make("alice"), await make("bob")
    await bob.receive(await send(alice, "bob", "hi", directory))
    await make("bob", profile="bob-reinstalled")  # publishes a new identity for bob
    await alice.reset_session("bob")
    with pytest.raises(MessageHeld):
        await alice.prepare_send("bob", "held 1", directory.fetch)
    fetches = directory.fetches
    with pytest.raises(MessageHeld):
        await alice.prepare_send("bob", "held 2", directory.fetch)
    assert directory.fetches == fetches  # held without burning more of bob's prekeys
    assert (await alice.contact("bob")).key_changed
    held, released = await alice.trust("bob")
    assert [m.text for m in held] == ["held 1", "held 2"] and released == []
    contact = await alice.contact("bob")
    assert not contact.key_changed and not contact.verified
    out = await alice.prepare_send("bob", held[0].text, directory.fetch, uid=held[0].uid)
    assert Envelope.from_bytes(out.envelope).x3dh is not None  # a fresh session


async def test_key_changed_push_and_forged_pushes(make, directory):
    alice, bob = await make("alice"), await make("bob")
    await send(alice, "bob", "hi", directory)
    forged = IdentityKeyPair.generate(X25519).public()
    bad_sig = type(forged)(forged.group, forged.sign_key, forged.dh_key, bytes(64))
    assert not await alice.on_key_changed("bob", bad_sig)  # the relay's word binds nothing
    assert not await alice.on_key_changed("carol", forged)  # not a contact
    assert not await alice.on_key_changed("bob", bob.identity.public())  # unchanged
    assert await alice.on_key_changed("bob", forged)
    assert not await alice.on_key_changed("bob", forged)  # already known
    with pytest.raises(MessageHeld):
        await alice.prepare_send("bob", "held", directory.fetch)
    assert (await alice.safety_number("bob", pending=True)).digits != (
        await alice.safety_number("bob")
    ).digits


async def test_initial_message_from_a_changed_identity_is_flagged(make, directory):
    alice, bob = await make("alice"), await make("bob")
    await alice.receive(await send(bob, "alice", "hi", directory))
    bob2 = await make("bob", profile="bob2")
    got = await alice.receive(await send(bob2, "alice", "new phone", directory))
    assert isinstance(got, Received) and got.key_changed and got.text == "new phone"
    # Quarantined: stored, but neither history nor unread until alice accepts the key.
    assert [m.text for m in await alice.store.history("bob", 5)] == ["hi"]
    assert [m.text for m in await alice.store.messages_with_status(("received",))] == ["hi"]
    with pytest.raises(MessageHeld):
        await alice.prepare_send("bob", "wait", directory.fetch)
    held, released = await alice.trust("bob")
    assert [m.text for m in held] == ["wait"] and [m.text for m in released] == ["new phone"]
    assert [m.text for m in await alice.store.history("bob", 5)] == ["hi", "new phone", "wait"]


async def test_identity_is_rechecked_after_a_while(make, directory, clock):
    alice, bob = await make("alice"), await make("bob")
    await bob.receive(await send(alice, "bob", "hi", directory))
    fetches = directory.fetches
    await send(alice, "bob", "same session", directory)
    assert directory.fetches == fetches
    await make("bob", profile="bob2")  # alice was "offline": no push reached her
    clock.now += IDENTITY_RECHECK_MS / 1000
    with pytest.raises(MessageHeld):
        await alice.prepare_send("bob", "recheck", directory.fetch)


async def test_bad_bundles_and_unknown_contacts(make, directory):
    alice = await make("alice")
    await make("bob")
    up = directory.uploads["bob"]
    spk = up.signed_prekey
    directory.uploads["bob"] = KeyUpload(up.identity, SignedPrekey(spk.id, spk.key, bytes(64)), ())
    with pytest.raises(BadBundle, match="do not verify"):
        await alice.prepare_send("bob", "x", directory.fetch)
    with pytest.raises(RequestError):
        await alice.prepare_send("zed", "x", directory.fetch)
    with pytest.raises(UnknownContact):
        await alice.trust("bob")
    assert await alice.store.history("bob", 5) == []


def test_backoff_grows_is_capped_jittered_and_honours_retry_after():
    b = Backoff(initial=1.0, maximum=8.0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 8.0)]:
        delays = {b.delay(attempt) for _ in range(50)}
        assert all(cap / 2 <= d <= cap for d in delays) and len(delays) > 1
    assert b.delay(0, retry_after=30.0) == 30.0


async def test_uploads_are_split_to_fit_the_frame(make):
    bob = await make("bob")
    upload = await bob.keys.plan_upload(
        relay_has_identity=False, prekeys_left=0, kem_prekeys_left=0, key_version=2
    )
    parts = _split_upload(upload, 2048)
    assert len(parts) > 1 and parts[0].identity is not None
    assert all(p.identity is None and p.signed_prekey is None for p in parts[1:])
    assert sum(len(p.one_time_prekeys) for p in parts) == len(upload.one_time_prekeys)
    # 100 KEM prekeys (1,184 bytes each) never fit one 64 KiB frame: the first part keeps
    # the identity, signed prekey and last-resort KEM prekey; every key goes exactly once.
    parts = _split_upload(upload, 65536)
    assert len(parts) == 3 and parts[0].kem_last_resort == upload.kem_last_resort
    assert all(p.identity is None and p.kem_last_resort is None for p in parts[1:])
    assert [k for p in parts for k in p.one_time_prekeys] == list(upload.one_time_prekeys)
    kem = [k for p in parts for k in p.one_time_kem_prekeys]
    assert kem == list(upload.one_time_kem_prekeys) and len(kem) == PREKEY_TARGET
    for part in parts:
        frame = PublishKeys(id=2**63 - 1, **_publish_fields(part)).to_wire()
        assert len(msgpack.packb(frame, use_bin_type=True)) <= 65536


# --- protocol version 2: PQXDH only, KEM prekey upkeep ---------------------------------


async def _kem_ids(manager: SessionManager, *ids: int) -> set[int]:
    """Which of `ids` the profile still holds a KEM prekey for."""
    return {i for i in ids if await manager.store.kem_prekey(i) is not None}


async def test_sessions_are_pqxdh_and_a_used_one_time_kem_prekey_is_deleted(make, directory):
    alice, bob = await make("alice"), await make("bob")
    kem_one_time = directory.kem["bob"][0]
    last_resort = directory.uploads["bob"].kem_last_resort
    assert await _kem_ids(bob, kem_one_time.id, last_resort.id) == {
        kem_one_time.id,
        last_resort.id,
    }
    first = await send(alice, "bob", "post-quantum hello", directory)
    env = Envelope.from_bytes(first.body)
    assert env.version == 2 and env.x3dh.kem_prekey_id == kem_one_time.id
    assert (await bob.receive(first)).text == "post-quantum hello"
    assert await _kem_ids(bob, kem_one_time.id, last_resort.id) == {last_resort.id}
    # With every one-time KEM prekey gone, the last-resort one serves and stays.
    directory.kem["bob"].clear()
    carol = await make("carol")
    got = await bob.receive(await send(carol, "bob", "via last resort", directory))
    assert got.text == "via last resort"
    assert await _kem_ids(bob, last_resort.id) == {last_resort.id}


async def test_a_relay_serving_a_version_1_bundle_cannot_downgrade_us(make, directory):
    """The relay strips bob's KEM prekey and serves his keys as a version-1 bundle."""
    alice = await make("alice")
    await make("bob")
    real = directory.fetch

    async def downgrade(user: str) -> PrekeyBundle:
        b = await real(user)
        return PrekeyBundle(b.user, b.identity, b.signed_prekey, b.one_time_prekey)

    with pytest.raises(BadBundle, match="version-1"):
        await alice.prepare_send("bob", "must not leave without a KEM secret", downgrade)
    assert await alice.store.load_sessions("bob") == []
    assert await alice.pending() == []


async def test_a_version_1_session_start_is_rejected(make, directory):
    """An X3DH (version-1) initial envelope, as an old client or a downgrading relay sends."""
    alice, bob = await make("alice"), await make("bob")
    b = await directory.fetch("bob")
    v1 = PrekeyBundle(b.user, b.identity, b.signed_prekey, b.one_time_prekey)
    _, envelope = Session.initiate(alice.identity, "alice", v1, X25519, 0, b"\x01old")
    got = await bob.receive(directory.deliver("alice", envelope))
    assert isinstance(got, Rejected) and "version-1" in got.reason
    assert await bob.store.count_one_time_prekeys() == PREKEY_TARGET  # nothing consumed
