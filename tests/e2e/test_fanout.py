"""Accounts with several devices talking through a real relay over real TLS: every
message is shown once on every device of both accounts (per-device fan-out, sent
copies), through an offline device and a relay restart; a relay that adds a device, a
stale view and an unlink during a conversation."""

from __future__ import annotations

import sqlite3

import pytest

from hushwire.client.errors import BadBundle, MessageHeld, UnknownContact
from hushwire.client.service import (
    ConnectionState,
    HushwireClient,
    KeyChanged,
    Notice,
    SentElsewhere,
)
from hushwire.common.crypto.devices import DeviceList
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.crypto.safety import safety_number
from hushwire.common.errors import ErrorCode, RequestError
from tests.e2e.helpers import FAST_BACKOFF, PASSPHRASE, link, next_event, sync, texts


def in_order(shown: list[tuple[str, str]], expected: list[tuple[str, str]]) -> bool:
    """`expected` appears in `shown` in this order (other senders may interleave)."""
    it = iter(shown)
    return all(item in it for item in expected)


@pytest.fixture
async def accounts(relay, login, tmp_path):
    """alice and bob, each with two devices; closes the linked ones at the end."""
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    alice2 = await link(relay, alice, tmp_path / "alice-laptop", "laptop")
    bob2 = await link(relay, bob, tmp_path / "bob-phone", "phone")
    linked = [alice2, bob2]
    yield alice, alice2, bob, bob2, linked
    for c in linked:
        await c.close()


async def test_every_device_of_both_accounts_shows_one_safety_number(accounts):
    """Verifying a person is done once: the four devices (each with its own identity DH
    key) show the same 60 digits, and they are the account keys' number."""
    alice, alice2, bob, bob2, _ = accounts
    await alice.send("bob", "hi")
    await bob2.send("alice", "hi from the phone")
    await sync(alice, alice2, bob, bob2)
    views = {
        (d.user, d.settings.device): await d.safety_number("bob" if d.user == "alice" else "alice")
        for d in (alice, alice2, bob, bob2)
    }
    assert len(set(views.values())) == 1, views
    dh_keys = {d.sessions.identity.public().dh_key for d in (alice, alice2)}
    assert len(dh_keys) == 2  # the devices do have different identity DH keys
    expected = safety_number("alice", alice.sessions.identity.public(), "bob",
                             bob.sessions.identity.public())  # fmt: skip
    assert views[("alice", 1)] == " ".join(expected.groups())


async def test_two_devices_each_see_the_whole_conversation_once(relay, reopen, tmp_path, accounts):
    alice, alice2, bob, bob2, linked = accounts
    sent: list[tuple[HushwireClient, str, str]] = []  # (device, account, text)

    async def say(device: HushwireClient, text: str) -> None:
        await device.send("bob" if device.user == "alice" else "alice", text)
        sent.append((device, device.user, text))

    await say(alice, "hi bob, from alice's first device")
    await sync(alice2, bob, bob2)
    copy = await next_event(alice2, SentElsewhere)
    assert (copy.contact, copy.text) == ("bob", "hi bob, from alice's first device")
    await say(bob2, "hi alice, from bob's phone")
    await say(alice2, "and from alice's laptop")
    await sync(alice, alice2, bob, bob2)
    # bob's phone goes offline; the conversation goes on and the relay restarts.
    await bob2.close()
    linked.remove(bob2)
    await say(bob, "bob's first device, while the phone is off")
    await say(alice, "alice answers")
    await relay.restart()
    for c in (alice, alice2, bob):
        await next_event(c, ConnectionState, lambda e: e.state == "reconnecting")
        await next_event(c, ConnectionState, lambda e: e.state == "connected")
    await say(alice2, "alice's laptop after the restart")
    await say(bob, "bob after the restart")
    await sync(alice, alice2, bob)
    phone = await reopen("bob", profile=tmp_path / "bob-phone")
    await phone.start()
    await say(phone, "bob's phone is back")
    await sync(alice, alice2, bob, phone)

    devices = {"alice": (alice, alice2), "bob": (bob, phone)}
    for account, contact in (("alice", "bob"), ("bob", "alice")):
        for device in devices[account]:
            shown = await texts(device, contact)
            expected_all = [("out" if who == account else "in", text) for _, who, text in sent]
            # Exactly once each, nothing else.
            assert sorted(shown) == sorted(expected_all), (account, device.settings.device)
            # In order per sending device (a device that was offline shows what its
            # account's other device sent meanwhile when it catches up).
            for sender in {id(d) for d, _, _ in sent}:
                theirs = [
                    ("out" if who == account else "in", text)
                    for d, who, text in sent
                    if id(d) == sender
                ]
                assert in_order(shown, theirs), (account, device.settings.device)


async def test_a_stale_view_is_corrected_without_the_user_seeing_it(relay, login, tmp_path):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    await alice.send("bob", "before bob's phone")
    await bob.sync()
    await alice.close()  # offline: never hears of the phone, so its view goes stale
    bob2 = await link(relay, bob, tmp_path / "bob-phone", "phone")
    try:
        again = await HushwireClient.open(
            tmp_path / "profile-alice", PASSPHRASE, backoff=FAST_BACKOFF
        )
        await again.start()
        held = await again._devices.held("bob")
        assert held is not None and [d.id for d in held[1].devices] == [1]
        result = await again.send("bob", "after bob's phone")
        assert not result.queued
        for device in (bob, bob2):
            await device.sync()
            assert ("in", "after bob's phone") in await texts(device, "alice")
        held = await again._devices.held("bob")
        assert [d.id for d in held[1].devices] == [1, 2]
        await again.close()
    finally:
        await bob2.close()


def _forge_list(db, account: str, forged_body: bytes, sig: bytes, version: int) -> None:
    """What a malicious relay can do: store any list it likes for an account."""
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE device_lists SET version = ?, body = ?, sig = ? WHERE account_id ="
        " (SELECT id FROM users WHERE name = ?)",
        (version, forged_body, sig, account),
    )
    conn.commit()
    conn.close()


async def test_a_device_the_relay_adds_to_a_list_is_refused(relay, login, tmp_path):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    await alice.send("bob", "hello")
    await bob.sync()
    held = (await alice._devices.held("bob"))[1]
    mallory = IdentityKeyPair.generate(X25519)
    added, _ = held.with_device("relay's own", mallory.dh.public, 1)
    forged = DeviceList(added.account, added.group, held.version + 1, added.devices)
    signed = forged.sign(mallory)  # the relay cannot sign with bob's identity
    _forge_list(relay.config.db, "bob", signed.body, signed.sig, forged.version)
    # The relay caches device lists it read: let this one read the forged row again.
    relay.server.relay.store._drop_devices("bob")
    with pytest.raises(RequestError) as exc:
        await alice.send("bob", "not for the relay's device")
    assert exc.value.code == ErrorCode.MISMATCHED_DEVICES
    await next_event(alice, Notice, lambda e: "refused" in e.text)
    held_after = (await alice._devices.held("bob"))[1]
    assert [d.id for d in held_after.devices] == [1]
    assert [h.status for h in await alice.history("bob", 5)][-1] == "failed"


async def test_an_unlinked_device_gets_nothing_after_the_next_send(relay, login, tmp_path):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    bob2 = await link(relay, bob, tmp_path / "bob-phone", "phone")
    try:
        await alice.send("bob", "to both of bob's devices")
        await sync(bob, bob2)
        assert ("in", "to both of bob's devices") in await texts(bob2, "alice")
        await bob.unlink(2)
        await alice.send("bob", "after the unlink")
        await bob.sync()
        assert ("in", "after the unlink") in await texts(bob, "alice")
        assert ("in", "after the unlink") not in await texts(bob2, "alice")
        held = (await alice._devices.held("bob"))[1]
        assert [d.id for d in held.devices] == [1]
        assert await alice.sessions.store.load_device_sessions("bob", 2) == []
        mailbox = sqlite3.connect(relay.config.db)
        try:
            (left,) = mailbox.execute("SELECT count(*) FROM users WHERE name = 'bob/2'").fetchone()
        finally:
            mailbox.close()
        assert left == 0
    finally:
        await bob2.close()


async def test_a_first_message_from_a_contacts_second_device_is_shown_as_theirs(
    relay, login, tmp_path
):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    phone = await link(relay, bob, tmp_path / "bob-phone", "phone")
    try:
        await phone.send("alice", "first words, from bob's phone")
        await alice.sync()
        # alice pinned bob from his device 1's bundle and checked the phone against the
        # list signed by that identity; bob's first device shows the sent copy.
        assert await texts(alice, "bob") == [("in", "first words, from bob's phone")]
        assert (await alice.contact_state("bob")).key_changed is False
        await bob.sync()
        assert await texts(bob, "alice") == [("out", "first words, from bob's phone")]
        await alice.send("bob", "hello to both")
        await sync(bob, phone)
        for device in (bob, phone):
            assert ("in", "hello to both") in await texts(device, "alice")
    finally:
        await phone.close()


async def test_after_trusting_a_new_identity_its_new_device_list_is_used(relay, login, tmp_path):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    phone = await link(relay, bob, tmp_path / "bob-phone", "phone")
    await alice.send("bob", "to bob's two devices")
    assert (await alice._devices.held("bob"))[1].version == 2
    await phone.close()
    await bob.close()
    # bob starts over with a new identity: his old devices and list are gone, and his new
    # list (version 1, signed by the new identity) is lower than the one alice held.
    again = await login(relay, "bob", profile=tmp_path / "bob-new", replace_identity=True)
    await next_event(alice, KeyChanged, lambda e: e.contact == "bob")
    with pytest.raises(MessageHeld):
        await alice.send("bob", "after the reinstall")
    assert await alice.trust("bob") == 1
    await again.sync()
    assert await texts(again, "alice") == [("in", "after the reinstall")]
    assert (await alice._devices.held("bob"))[1].version == 1


async def test_a_bundle_the_list_does_not_give_a_device_is_refused(relay, login, tmp_path):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    phone = await link(relay, bob, tmp_path / "bob-phone", "phone")
    store = relay.server.relay.store
    real_fetch = store.fetch_bundle

    async def evil_fetch(fetcher, target, *args, **kwargs):
        # bob's device 1 keys (validly signed by bob) served as his phone's.
        return await real_fetch(fetcher, "bob" if target == "bob/2" else target, *args, **kwargs)

    store.fetch_bundle = evil_fetch
    try:
        with pytest.raises(BadBundle, match="signed device list does not give it"):
            await alice.send("bob", "never sealed to a key bob did not list")
        assert [h.status for h in await alice.history("bob", 5)] == ["failed"]
        await sync(bob, phone)
        assert await texts(bob, "alice") == [] and await texts(phone, "alice") == []
    finally:
        store.fetch_bundle = real_fetch
        await phone.close()


async def test_an_account_whose_list_leaves_out_device_1_gets_exactly_its_devices(
    relay, login, reopen, tmp_path
):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    phone = await link(relay, bob, tmp_path / "bob-phone", "phone")
    try:
        await alice.send("bob", "to both")
        await sync(bob, phone)
        await alice.close()  # offline: its view of bob's list goes stale
        await phone.unlink(1)  # bob retires his first machine
        again = await reopen("alice")
        await again.start()
        # The stale view targets device 1; the relay's answer drops it, unseen.
        result = await again.send("bob", "after device 1 left")
        assert not result.queued
        held = (await again._devices.held("bob"))[1]
        assert [d.id for d in held.devices] == [2]
        # The next send is sealed for the listed devices only from the start.
        await again.send("bob", "and again")
        await phone.sync()
        shown = await texts(phone, "alice")
        assert ("in", "after device 1 left") in shown and ("in", "and again") in shown
        assert [h.status for h in await again.history("bob", 5)][-2:] == ["sent", "sent"]
        await phone.send("alice", "from the phone")
        await again.sync()
        assert ("in", "from the phone") in await texts(again, "bob")
        # Offline, the message waits; after the login it goes to the phone alone.
        await again.close()
        offline = await reopen("alice")
        assert (await offline.send("bob", "written offline")).queued
        await offline.start()
        await offline.sync()
        await phone.sync()
        assert ("in", "written offline") in await texts(phone, "alice")
    finally:
        await phone.close()


async def test_a_first_contact_whose_device_1_is_gone_reaches_its_listed_devices(
    relay, login, tmp_path
):
    alice = await login(relay, "alice")
    laptop = await link(relay, alice, tmp_path / "alice-laptop", "laptop")
    tablet = await link(relay, alice, tmp_path / "alice-tablet", "tablet")
    try:
        await laptop.unlink(1)  # alice retires her first machine
        await alice.close()
        carol = await login(relay, "carol")  # has never talked to alice
        result = await carol.send("alice", "hello alice, from carol")
        assert not result.queued
        # carol pinned alice's identity from a listed device's bundle and holds the list
        # that verified under it: exactly devices 2 and 3.
        held = (await carol._devices.held("alice"))[1]
        assert [d.id for d in held.devices] == [2, 3]
        pinned = (await carol.sessions.contact("alice")).identity
        assert pinned.sign_key == alice.sessions.identity.public().sign_key
        assert pinned.dh_key == held.device(2).dh_key  # the lowest listed device's record
        for device in (laptop, tablet):
            await device.sync()
            assert await texts(device, "carol") == [("in", "hello alice, from carol")]
        await tablet.send("carol", "hi carol, from the tablet")
        await carol.sync()
        assert ("in", "hi carol, from the tablet") in await texts(carol, "alice")
        assert (await carol.contact_state("alice")).key_changed is False
        assert await carol.safety_number("alice") == await laptop.safety_number("carol")
    finally:
        await laptop.close()
        await tablet.close()


async def test_a_first_message_from_an_account_whose_device_1_is_gone_is_shown(
    relay, login, tmp_path
):
    alice = await login(relay, "alice")
    laptop = await link(relay, alice, tmp_path / "alice-laptop", "laptop")
    try:
        await laptop.unlink(1)
        await alice.close()
        carol = await login(relay, "carol")
        await laptop.send("carol", "first words, from alice's laptop")
        await carol.sync()
        assert await texts(carol, "alice") == [("in", "first words, from alice's laptop")]
        await carol.send("alice", "answer")
        await laptop.sync()
        assert ("in", "answer") in await texts(laptop, "carol")
    finally:
        await laptop.close()


async def test_a_list_signed_by_another_key_at_first_contact_is_refused(relay, login, tmp_path):
    bob = await login(relay, "bob")
    phone = await link(relay, bob, tmp_path / "bob-phone", "phone")
    try:
        await phone.unlink(1)
        await bob.close()
        held = (await phone._devices.held("bob"))[1]
        mallory = IdentityKeyPair.generate(X25519)
        added, _ = held.with_device("relay's own", mallory.dh.public, 1)
        forged = DeviceList(added.account, added.group, held.version + 1, added.devices)
        signed = forged.sign(mallory)  # bob's identity did not sign this
        _forge_list(relay.config.db, "bob", signed.body, signed.sig, forged.version)
        carol = await login(relay, "carol")
        with pytest.raises(BadBundle, match="does not verify"):
            await carol.send("bob", "not for the relay's device")
        await next_event(carol, Notice, lambda e: "device list for bob that is refused" in e.text)
        # Nothing pinned, nothing held, nothing stored or sent.
        assert await carol._devices.held("bob") is None
        with pytest.raises(UnknownContact):
            await carol.contact_state("bob")
        assert await carol.history("bob", 5) == []
        await phone.sync()
        assert await texts(phone, "carol") == []
    finally:
        await phone.close()
