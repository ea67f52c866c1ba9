"""client/session.py driven without a network: two profiles and an in-memory relay."""

from __future__ import annotations

import itertools
import random

import msgpack
import pytest

from hushwire.client.errors import BadBundle, MessageHeld, UnknownContact
from hushwire.client.keys import publish_fields as _publish_fields
from hushwire.client.keys import split_upload as _split_upload
from hushwire.client.session import (
    IDENTITY_RECHECK_MS,
    PREKEY_LOW,
    PREKEY_TARGET,
    SIGNED_PREKEY_GRACE_MS,
    SIGNED_PREKEY_ROTATE_MS,
    Duplicate,
    KeyUpload,
    Received,
    Rejected,
    SessionManager,
    load_or_create_identity,
    max_text_bytes,
)
from hushwire.client.settings import Backoff
from hushwire.client.store import KdfParams, ProfileStore
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.envelope import Envelope, Session
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import PrekeyBundle, SignedPrekey
from hushwire.common.messages import Deliver, ListVersion, PublishKeys, SendDevices


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Directory:
    """What the relay's version-2 key directory does: hand out bundles, one one-time
    prekey and one one-time KEM prekey each (the last-resort KEM prekey when none left)."""

    def __init__(self) -> None:
        self.uploads: dict[str, KeyUpload] = {}
        self.one_time: dict[str, list] = {}
        self.kem: dict[str, list] = {}
        self.fetches = 0
        self.mids = itertools.count(1)

    def publish(self, user: str, upload: KeyUpload) -> None:
        old = self.uploads.get(user)
        identity = upload.identity or old.identity
        spk = upload.signed_prekey or old.signed_prekey
        last = upload.kem_last_resort or old.kem_last_resort
        if upload.identity is not None and old is not None and upload.identity != old.identity:
            self.one_time[user] = []
            self.kem[user] = []
        self.uploads[user] = KeyUpload(identity, spk, (), last)
        self.one_time.setdefault(user, []).extend(upload.one_time_prekeys)
        self.kem.setdefault(user, []).extend(upload.one_time_kem_prekeys)

    async def fetch(self, user: str) -> PrekeyBundle:
        self.fetches += 1
        if user not in self.uploads:
            raise RequestError(ErrorCode.UNKNOWN_USER, f"no user {user}")
        up = self.uploads[user]
        otpks, kems = self.one_time[user], self.kem[user]
        return PrekeyBundle(
            user,
            up.identity,
            up.signed_prekey,
            otpks.pop(0) if otpks else None,
            2,
            kems.pop(0) if kems else up.kem_last_resort,
        )

    def deliver(self, sender: str, envelope: bytes) -> Deliver:
        return Deliver(mid=next(self.mids), sender=sender, ts=0, body=envelope)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def directory() -> Directory:
    return Directory()


@pytest.fixture
async def make(tmp_path, clock, directory):
    stores = []

    async def new(user: str, profile: str | None = None) -> SessionManager:
        store = await ProfileStore.open(
            tmp_path / (profile or user), "pw", create=True, kdf=KdfParams(n=2**10)
        )
        stores.append(store)
        identity = await load_or_create_identity(store, X25519, 0)
        manager = SessionManager(store, user, identity, X25519, clock=clock)
        upload = await manager.plan_upload(
            relay_has_identity=False, prekeys_left=0, kem_prekeys_left=0, key_version=2
        )
        directory.publish(user, upload)
        await manager.upload_done(upload)
        return manager

    yield new
    for s in stores:
        await s.close()


async def send(a: SessionManager, to: str, text: str, directory: Directory) -> Deliver:
    out = await a.prepare_send(to, text, directory.fetch)
    await a.mark_sent(out.uid)
    return directory.deliver(a.user, out.envelope)


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


async def test_prekey_top_up_and_signed_prekey_rotation(make, directory, clock):
    bob = await make("bob")
    assert (
        await bob.plan_upload(
            relay_has_identity=True,
            prekeys_left=PREKEY_LOW,
            kem_prekeys_left=PREKEY_LOW,
            key_version=2,
        )
        is None
    )
    top = await bob.plan_upload(
        relay_has_identity=True,
        prekeys_left=PREKEY_LOW - 1,
        kem_prekeys_left=PREKEY_LOW - 1,
        key_version=2,
    )
    assert top.identity is None and top.signed_prekey is None
    assert len(top.one_time_prekeys) == PREKEY_TARGET - PREKEY_LOW + 1
    first_spk = directory.uploads["bob"].signed_prekey.id
    clock.now += SIGNED_PREKEY_ROTATE_MS / 1000
    rot = await bob.plan_upload(
        relay_has_identity=True, prekeys_left=50, kem_prekeys_left=50, key_version=2
    )
    assert rot.signed_prekey is not None and rot.signed_prekey.id != first_spk
    await bob.upload_done(rot)
    # The previous signed prekey stays for the grace period, then goes.
    ids = [pid for pid, *_ in await bob.store.signed_prekeys()]
    assert ids == [first_spk, rot.signed_prekey.id]
    clock.now += SIGNED_PREKEY_GRACE_MS / 1000 + 1
    rot2 = await bob.plan_upload(
        relay_has_identity=True, prekeys_left=50, kem_prekeys_left=50, key_version=2
    )
    await bob.upload_done(rot2)
    assert first_spk not in [pid for pid, *_ in await bob.store.signed_prekeys()]
    # Relay lost our keys (has_identity False): publish everything again.
    again = await bob.plan_upload(
        relay_has_identity=False, prekeys_left=0, kem_prekeys_left=0, key_version=2
    )
    assert again.identity == bob.identity.public() and len(again.one_time_prekeys) == 100


async def test_initial_message_for_a_rotated_prekey_within_grace(make, directory, clock):
    alice, bob = await make("alice"), await make("bob")
    in_flight = await send(alice, "bob", "sent before rotation", directory)
    clock.now += SIGNED_PREKEY_ROTATE_MS / 1000
    rot = await bob.plan_upload(
        relay_has_identity=True, prekeys_left=99, kem_prekeys_left=99, key_version=2
    )
    await bob.upload_done(rot)
    assert (await bob.receive(in_flight)).text == "sent before rotation"


async def test_max_text_bytes_is_exact_for_a_real_initial_envelope(make, directory):
    alice, _ = await make("alice"), await make("bob")
    limit = max_text_bytes(4096, X25519, "alice", "bob")
    out = await alice.prepare_send("bob", "x" * limit, directory.fetch)
    views = (ListVersion("alice", 1), ListVersion("bob", 0))
    frame = SendDevices(id=2**40, envelopes=out.envelopes(), lists=views).to_wire()
    size = len(msgpack.packb(frame, use_bin_type=True))
    # Tight: the worst case is only a bit larger (three prekey ids at 5 bytes, not 1;
    # a sent copy's plaintext; list versions at 9 bytes).
    assert size <= 4096 and 4096 - size < 64


def test_backoff_grows_is_capped_jittered_and_honours_retry_after():
    b = Backoff(initial=1.0, maximum=8.0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 8.0)]:
        delays = {b.delay(attempt) for _ in range(50)}
        assert all(cap / 2 <= d <= cap for d in delays) and len(delays) > 1
    assert b.delay(0, retry_after=30.0) == 30.0


async def test_uploads_are_split_to_fit_the_frame(make):
    bob = await make("bob")
    upload = await bob.plan_upload(
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


async def test_a_profile_from_before_version_2_publishes_its_kem_prekeys(make):
    bob = await make("bob")
    upgrade = await bob.plan_upload(
        relay_has_identity=True, prekeys_left=100, kem_prekeys_left=0, key_version=1
    )
    assert upgrade.identity == bob.identity.public()
    assert upgrade.kem_last_resort is not None
    assert len(upgrade.one_time_kem_prekeys) == PREKEY_TARGET
