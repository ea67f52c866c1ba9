"""A relay that misbehaves during fan-out, between the real relay and the real client:
it answers a send with an older list or one naming a device of its own, pushes such a
list as a device change, or withholds one device's envelopes. Lists are refused and
shown, never used; withholding is silence on that device (the limit, as in 1:1)."""

from __future__ import annotations

import pytest

from hushwire.client.service import (
    HushwireClient,
    MessageReceived,
    MessageRejected,
    Notice,
    RelaySettings,
)
from hushwire.common.crypto.devices import DeviceList
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import SignedDeviceList
from hushwire.common.messages import DevicesChanged, Error
from tests.adversarial.relay_proxy import FrameProxy, Pipe
from tests.e2e.helpers import (
    FAST_BACKOFF,
    FAST_KDF,
    PASSPHRASE,
    drain,
    link,
    next_event,
    sync,
    texts,
)


@pytest.fixture
async def proxy(relay):
    proxy = await FrameProxy(relay).start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def via(relay, proxy, tmp_path):
    """via(user) -> a started client whose relay is the proxy."""
    clients: list[HushwireClient] = []

    async def make(user: str) -> HushwireClient:
        settings = RelaySettings("127.0.0.1", proxy.port, user, relay.tokens[user])
        client = await HushwireClient.login(
            tmp_path / f"proxied-{user}", PASSPHRASE, settings, kdf=FAST_KDF, backoff=FAST_BACKOFF
        )
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


async def _held(client: HushwireClient, account: str) -> tuple[SignedDeviceList, DeviceList]:
    held = await client._devices.held(account)
    assert held is not None
    return held


@pytest.fixture
async def unlinked(relay, login, via, tmp_path):
    """alice (through the proxy) talked to bob's two devices; bob then unlinked his
    phone. Returns alice, bob, the list naming the phone (v2) and one the relay made up
    (v4: bob's current v3 plus a device of its own, signed by its own key)."""
    alice = await via("alice")
    bob = await login(relay, "bob")
    phone = await link(relay, bob, tmp_path / "bob-phone", "phone")
    await alice.send("bob", "to both of bob's devices")
    old, _ = await _held(alice, "bob")
    await sync(bob, phone)
    await phone.close()
    await bob.unlink(2)
    await next_event(alice, Notice, lambda e: "unlinked device 2" in e.text)
    _, current = await _held(alice, "bob")
    assert (current.version, [d.id for d in current.devices]) == (3, [1])
    mallory = IdentityKeyPair.generate(X25519)
    added, _ = current.with_device("the relay's", mallory.dh.public, 1)
    forged = DeviceList(added.account, added.group, 4, added.devices).sign(mallory)
    return alice, bob, {"older": old, "added": forged}


def _bob_devices(sends: list[dict]) -> set[int]:
    return {e["device"] for f in sends for e in f["envelopes"] if e["user"] == "bob"}


@pytest.mark.parametrize("lie", ["older", "added"])
async def test_a_list_the_relay_answers_a_send_with_is_refused_and_never_used(proxy, unlinked, lie):
    alice, _, lists = unlinked
    sends: list[dict] = []

    def answer(pipe: Pipe, frame: dict) -> list[dict]:
        if frame["t"] != "send_devices":
            return [frame]
        sends.append(frame)
        pipe.inject(
            Error(
                id=frame["id"], code="mismatched_devices", message="lists changed",
                device_lists=(lists[lie],),
            ).to_wire()
        )  # fmt: skip
        return []

    proxy.to_relay = answer
    drain(alice)
    with pytest.raises(RequestError) as exc:
        await alice.send("bob", "only for the devices bob signed")
    assert exc.value.code == ErrorCode.MISMATCHED_DEVICES
    # Shown to the user, each time the relay tried; the view is the one bob signed.
    notices = [e.text for e in drain(alice) if isinstance(e, Notice)]
    assert len(notices) >= 2 and all("refused" in n for n in notices)
    assert ("older" if lie == "older" else "signature") in notices[0]
    _, dlist = await _held(alice, "bob")
    assert (dlist.version, [d.id for d in dlist.devices]) == (3, [1])
    # Every attempt was sealed for bob's device 1 alone: nothing for the phone or the
    # relay's device.
    assert len(sends) == 3 and _bob_devices(sends) == {1}
    assert [h.status for h in await alice.history("bob", 5)][-1] == "failed"


@pytest.mark.parametrize("lie", ["older", "added"])
async def test_a_list_the_relay_pushes_as_a_device_change_is_refused_and_never_used(
    proxy, unlinked, lie
):
    alice, bob, lists = unlinked
    drain(alice)
    proxy.pipe_of("alice").inject(DevicesChanged(user="bob", device_list=lists[lie]).to_wire())
    notice = await next_event(alice, Notice)
    assert "refused" in notice.text and "bob" in notice.text
    assert not any("linked a new device" in e.text for e in drain(alice) if isinstance(e, Notice))
    _, dlist = await _held(alice, "bob")
    assert (dlist.version, [d.id for d in dlist.devices]) == (3, [1])
    sends: list[dict] = []

    def record(pipe: Pipe, frame: dict) -> list[dict]:
        if frame["t"] == "send_devices":
            sends.append(frame)
        return [frame]

    proxy.to_relay = record
    await alice.send("bob", "still to bob's one device")
    assert _bob_devices(sends) == {1}
    await bob.sync()
    assert ("in", "still to bob's one device") in await texts(bob, "alice")


async def test_envelopes_withheld_from_one_device_are_silence_on_that_device(
    relay, login, proxy, tmp_path, figures
):
    """The relay drops what one of bob's devices should get: that device shows nothing
    and is told nothing (as in 1:1, a relay can withhold); the others show everything."""
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    phone = await link(relay, bob, tmp_path / "bob-phone", "phone", port=proxy.port)
    try:
        dropped: list[dict] = []
        seen = [0]

        def withhold(pipe: Pipe, frame: dict) -> list[dict]:
            to_phone = (pipe.user, pipe.device) == ("bob", 2)
            if to_phone and (frame["t"], frame.get("sender")) == ("deliver", "alice"):
                seen[0] += 1
                if seen[0] == 2:  # alice's second message, to this device only
                    dropped.append(frame)
                    return []
            return [frame]

        proxy.to_client = withhold
        for text in ("first", "second", "third"):
            await alice.send("bob", text)
        await sync(bob, phone)
        assert [t for _, t in await texts(bob, "alice")] == ["first", "second", "third"]
        assert [t for _, t in await texts(phone, "alice")] == ["first", "third"]
        assert len(dropped) == 1
        # What the phone's user sees: the two messages, nothing about the gap.
        events = drain(phone)
        assert [e.text for e in events if isinstance(e, MessageReceived)] == ["first", "third"]
        assert not [e for e in events if isinstance(e, MessageRejected | Notice)]
        figures.add(
            "relay withholds 1 of 3 envelopes from one of bob's two devices",
            "that device shows the other 2 and no warning (silence, as in 1:1); bob's other "
            "device shows all 3",
        )
    finally:
        await phone.close()
