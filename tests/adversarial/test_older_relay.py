"""A version-2 relay from before hello's `features` (played by a proxy that strips them
from the real relay's hello): the client must not use what such a relay drops or
refuses. An ack without a reply would be a malformed request there (the connection
closes, the envelope comes back, forever), and a group payload would be dropped (every
member would count the message as missed)."""

from __future__ import annotations

import pytest

from hushwire.client.errors import GroupCommandError
from hushwire.client.service import GroupNotice, HushwireClient, MessageReceived, RelaySettings
from tests.adversarial.relay_proxy import FrameProxy, Pipe
from tests.e2e.helpers import FAST_BACKOFF, FAST_KDF, PASSPHRASE, next_event, sync


@pytest.fixture
async def older(relay, tmp_path):
    """alice, logged in through a relay whose hello names no features; the acks she
    sends are collected."""
    proxy = await FrameProxy(relay).start()
    acks: list[dict] = []

    def strip_features(pipe: Pipe, frame: dict) -> list[dict]:
        if frame.get("t") == "ok" and "idle_timeout" in frame:  # the hello reply
            frame = {k: v for k, v in frame.items() if k != "features"}
        return [frame]

    def watch_acks(pipe: Pipe, frame: dict) -> list[dict]:
        if frame.get("t") == "ack":
            acks.append(frame)
        return [frame]

    proxy.to_client, proxy.to_relay = strip_features, watch_acks
    settings = RelaySettings("127.0.0.1", proxy.port, "alice", relay.tokens["alice"])
    alice = await HushwireClient.login(
        tmp_path / "alice", PASSPHRASE, settings, kdf=FAST_KDF, backoff=FAST_BACKOFF
    )
    yield alice, acks
    await alice.close()
    await proxy.close()


async def test_acks_wait_for_their_reply_when_the_relay_does_not_offer_otherwise(
    relay, login, older
):
    alice, acks = older
    bob = await login(relay, "bob")
    for i in range(3):
        await bob.send("alice", f"m{i}")
    for i in range(3):
        await next_event(alice, MessageReceived, lambda e, i=i: e.text == f"m{i}")
    await sync(alice)
    assert len(acks) >= 3
    assert all(isinstance(a.get("id"), int) for a in acks), acks


async def test_a_group_message_is_refused_before_anything_is_stored(relay, login, older):
    alice, _ = older
    bob = await login(relay, "bob")
    await alice.groups.create("team", ["bob"])  # changes are ordinary envelopes
    await next_event(bob, GroupNotice, lambda e: "created the group" in e.text)
    assert (await bob.groups.info("team")).members == ("alice", "bob")
    with pytest.raises(GroupCommandError, match="cannot carry group messages"):
        await alice.groups.send("team", "lost on an older relay")
    lines = await alice.groups.history("team", 50)
    assert not [ln for ln in lines if ln.kind == "out"]
