"""The client's device lists against a real relay over real TLS: its own account's list
published and checked, a relay that forges or replays one, contacts' device changes."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from hushwire.client.connection import RelayConnection
from hushwire.client.errors import CertificateMismatch
from hushwire.client.service import HushwireClient, Notice
from hushwire.common.crypto.devices import DeviceList, first_device_list
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.crypto.link import LinkCode, LinkJoiner
from hushwire.common.errors import (
    DeviceListError,
    ErrorCode,
    LinkError,
    RequestError,
    UnknownDevice,
)
from hushwire.common.keys import SignedDeviceList
from hushwire.common.messages import LinkFetch, LinkJoin, Login
from tests.e2e.helpers import FAST_BACKOFF, FAST_KDF, PASSPHRASE, next_event
from tests.relay.test_server_devices import publish


async def link_phone(relay, old_client, name: str = "phone") -> RelayConnection:
    """A new device joins through the relay with the link code the old client offers;
    returns its logged-in connection (keys published)."""
    offer, _ = await old_client.offer_link()
    new = await relay.connect()
    await new.say_hello()
    fetched = await new.request(LinkFetch, channel=offer.code.channel)
    joiner = LinkJoiner(X25519, LinkCode.parse(offer.code.text()), name, X25519.generate())
    n_pub, sealed = joiner.request(fetched.ephemeral)
    joining = asyncio.create_task(
        new.request(LinkJoin, channel=offer.code.channel, ephemeral=n_pub, sealed=sealed)
    )
    device = await old_client.accept_link(offer)
    joined = await asyncio.wait_for(joining, 15)
    grant = joiner.open_grant(joined.sealed)
    assert (
        grant.device == device and grant.identity.sign_key == old_client.sessions.identity.sign_key
    )
    await new.request(Login, user=joined.user, token=joined.token, device=joined.device)
    await publish(new, grant.identity)
    return new


def _set_relay_list(db, account: str, signed: SignedDeviceList, version: int) -> None:
    """What a malicious relay can do: store any list it likes for an account."""
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE device_lists SET version = ?, body = ?, sig = ? WHERE account_id ="
        " (SELECT id FROM users WHERE name = ?)",
        (version, signed.body, signed.sig, account),
    )
    conn.commit()
    conn.close()


def _notice(text: str):
    return lambda e: text in e.text


async def test_a_new_account_publishes_its_first_device_list(relay, login):
    alice = await login(relay, "alice")
    (only,) = await alice.devices()
    assert (only.id, only.this) == (1, True)
    assert only.last_seen is not None
    held = await alice._devices.held("alice")
    assert held is not None and held[1].device(1).dh_key == alice.sessions.identity.dh.public


async def test_a_forged_list_for_our_own_account_is_refused_and_shown(relay, login):
    alice = await login(relay, "alice")
    await alice.devices()
    mallory = IdentityKeyPair.generate(X25519)
    forged = first_device_list("alice", "x25519", "relay's", mallory.dh.public, 1)
    _set_relay_list(relay.config.db, "alice", dataclass_version(forged, 5).sign(mallory), 5)
    with pytest.raises(DeviceListError):
        await alice.devices()
    await next_event(alice, Notice, _notice("refused"))


async def test_an_older_list_replayed_by_the_relay_is_refused(relay, login):
    alice = await login(relay, "alice")
    identity = alice.sessions.identity
    v1 = (await alice._devices.held("alice"))[1]
    v2 = dataclass_version(v1, 2)
    _set_relay_list(relay.config.db, "alice", v2.sign(identity), 2)
    assert [d.id for d in await alice.devices()] == [1]  # v2 accepted (same devices)
    _set_relay_list(relay.config.db, "alice", v1.sign(identity), 1)
    with pytest.raises(DeviceListError):
        await alice.devices()
    await next_event(alice, Notice, _notice("older"))


async def test_contacts_see_a_linked_and_an_unlinked_device(relay, login):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    await alice.send("bob", "hello")  # alice fetched bob's keys: she watches his devices
    await bob.sync()
    phone = await link_phone(relay, bob)
    await next_event(alice, Notice, _notice("bob linked a new device: 2 (phone)"))
    assert [d.id for d in await bob.devices()] == [1, 2]
    await bob.unlink(2)
    await asyncio.wait_for(phone.wait_closed(), 15)
    await next_event(alice, Notice, _notice("bob unlinked device 2 (phone)"))
    assert [d.id for d in await bob.devices()] == [1]
    with pytest.raises(UnknownDevice):
        await bob.unlink(2)
    with pytest.raises(DeviceListError, match="at least one"):
        await bob.unlink(1)


def dataclass_version(dlist: DeviceList, version: int) -> DeviceList:
    return DeviceList(dlist.account, dlist.group, version, dlist.devices)


async def _link_client(relay, old, profile, code=None, **kwargs):
    """The new device's side, as `hushwire login --link CODE` runs it."""
    return await HushwireClient.login_link(
        profile,
        PASSPHRASE,
        host="127.0.0.1",
        port=relay.port,
        code=code,
        name="laptop",
        fingerprint=relay.server.fingerprint,
        kdf=FAST_KDF,
        backoff=FAST_BACKOFF,
        **kwargs,
    )


async def test_a_new_profile_links_with_the_code_and_logs_in_again_later(
    relay, login, reopen, tmp_path
):
    alice = await login(relay, "alice")
    offer, _ = await alice.offer_link()
    joining = asyncio.create_task(
        _link_client(relay, alice, tmp_path / "alice-laptop", code=offer.code.text())
    )
    device = await alice.accept_link(offer)
    laptop = await asyncio.wait_for(joining, 15)
    try:
        assert (laptop.user, laptop.settings.device, device.id) == ("alice", 2, 2)
        assert laptop.sessions.identity.sign_key == alice.sessions.identity.sign_key
        assert laptop.sessions.identity.dh.public != alice.sessions.identity.dh.public
        seen = await laptop.devices()
        assert [(d.id, d.this) for d in seen] == [(1, False), (2, True)]
        # The code worked once: the same code again is refused, and nothing is left.
        with pytest.raises(RequestError) as exc:
            await _link_client(relay, alice, tmp_path / "again", code=offer.code.text())
        assert exc.value.code == ErrorCode.LINK_FAILED
        assert not (tmp_path / "again").exists()
        with pytest.raises(LinkError):
            await _link_client(relay, alice, tmp_path / "typo", code=offer.code.text()[:-2])
    finally:
        await laptop.close()
    # The linked profile reconnects on its own credential (device 2).
    again = await reopen("alice", profile=tmp_path / "alice-laptop")
    await again.start()
    assert [d.id for d in await again.devices() if d.this] == [2]


async def _join(relay, old_client, profile, *, port=None, fingerprint=None):
    """`hushwire login --link` with the code `old_client` offers (no --fingerprint)."""
    offer, _ = await old_client.offer_link()
    return offer, HushwireClient.login_link(
        profile,
        PASSPHRASE,
        host="127.0.0.1",
        port=port or relay.port,
        code=offer.code.text(),
        name="laptop",
        fingerprint=fingerprint,
        kdf=FAST_KDF,
        backoff=FAST_BACKOFF,
    )


async def test_the_link_code_pins_the_relay_certificate_for_the_new_device(
    relay, relay_factory, login, tmp_path
):
    alice = await login(relay, "alice")
    offer, joining = await _join(relay, alice, tmp_path / "laptop")
    assert offer.code.fingerprint() == relay.server.fingerprint
    task = asyncio.create_task(joining)
    await alice.accept_link(offer)
    laptop = await asyncio.wait_for(task, 15)
    try:
        # Pinned from the code, not learned on first use.
        assert laptop.settings.pin == relay.server.fingerprint
        assert laptop.fingerprint_learned is False
    finally:
        await laptop.close()


async def test_a_relay_other_than_the_one_the_code_pins_is_refused(
    relay, relay_factory, login, tmp_path
):
    """An impostor (another certificate) at the address the new device was given: the
    link stops before anything is sent, with an error that says why."""
    alice = await login(relay, "alice")
    (tmp_path / "impostor").mkdir()
    impostor = await relay_factory(db=tmp_path / "impostor" / "relay.db")
    assert impostor.server.fingerprint != relay.server.fingerprint
    _, joining = await _join(relay, alice, tmp_path / "laptop", port=impostor.port)
    with pytest.raises(CertificateMismatch, match="pinned in the link code") as exc:
        await joining
    assert relay.server.fingerprint in exc.value.message
    assert impostor.server.fingerprint in exc.value.message
    assert not (tmp_path / "laptop").exists()  # no half-made profile left behind
    # A --fingerprint that contradicts the code is refused before connecting.
    _, joining = await _join(
        relay, alice, tmp_path / "laptop", fingerprint=impostor.server.fingerprint
    )
    with pytest.raises(LinkError, match="link code pins"):
        await joining
