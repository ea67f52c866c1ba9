"""Group conversations between real clients through a real relay over real TLS:
membership changes reach every device of every member, an added member starts from
its welcome, a removed member learns it and reads nothing after."""

from __future__ import annotations

import dataclasses

import pytest

from hushwire.client.errors import GroupCommandError, UnknownGroup
from hushwire.client.group_fanout import send_to_devices
from hushwire.client.service import GroupNotice, MessageQuarantined, MessageRejected
from hushwire.common.chat_groups import ChangeOp, ContentType, GroupChange, encode_content
from tests.adversarial.test_group_attacks import spy, withhold
from tests.adversarial.test_malicious_relay import connection_of
from tests.e2e.helpers import next_event
from tests.e2e.test_fanout import link

FIVE = ("alice", "bob", "carol", "dave", "erin")


@pytest.fixture
async def relay5(relay_factory):
    return await relay_factory(users=FIVE)


def notice_of(text: str):
    return lambda e: text in e.text


async def test_create_add_remove_reach_every_member(relay5, login):
    alice, bob, carol, dave = [await login(relay5, u) for u in FIVE[:4]]
    info = await alice.groups.create("team", ["bob", "carol"])
    assert info.members == ("alice", "bob", "carol") and info.admins == ("alice",)
    for c in (bob, carol):
        e = await next_event(c, GroupNotice, notice_of("alice created the group 'team'"))
        assert e.group == "team" and e.gid == info.gid
        assert (await c.groups.info("#team")).epoch == 1
    await alice.groups.add("team", ["dave"])
    await next_event(dave, GroupNotice, notice_of("alice added you"))
    for c in (bob, carol):
        await next_event(c, GroupNotice, notice_of("alice added dave"))
    for c in (alice, bob, carol, dave):
        got = await c.groups.info("team")
        assert (got.epoch, got.members) == (2, ("alice", "bob", "carol", "dave"))
    await alice.groups.remove("team", ["bob"])
    await next_event(bob, GroupNotice, notice_of("you were removed by alice"))
    assert not (await bob.groups.info("team")).active
    for c in (carol, dave):
        await next_event(c, GroupNotice, notice_of("alice removed bob"))
        assert (await c.groups.info("team")).members == ("alice", "carol", "dave")


async def test_clear_errors_for_bad_group_commands(relay5, login):
    alice, bob = await login(relay5, "alice"), await login(relay5, "bob")
    with pytest.raises(GroupCommandError, match="printable"):
        await alice.groups.create("bad\x07name", ["bob"])
    with pytest.raises(GroupCommandError, match="at least one member"):
        await alice.groups.create("solo", ["alice"])
    with pytest.raises(GroupCommandError, match="at most 50"):
        await alice.groups.create("big", [f"user{i}" for i in range(50)])
    with pytest.raises(UnknownGroup):
        await alice.groups.info("nope")
    await alice.groups.create("team", ["bob"])
    await next_event(bob, GroupNotice)
    with pytest.raises(GroupCommandError, match="not an admin"):
        await bob.groups.add("team", ["carol"])
    with pytest.raises(GroupCommandError, match="already in a group named"):
        await alice.groups.create("team", ["carol"])


async def shown(client, group: str = "team") -> list[tuple[str, str]]:
    """(sender, text) of the group's messages as this device shows them, oldest first."""
    return [
        (i.sender, i.text) for i in await client.groups.history(group, 500) if i.kind != "event"
    ]


async def events_of(client, group: str = "team") -> list[str]:
    return [i.text for i in await client.groups.history(group, 500) if i.kind == "event"]


async def sync(*clients) -> None:
    for c in clients:
        await c.sync()


async def test_five_members_two_with_two_devices_each_see_every_message_once_in_order(
    relay5, login, reopen, tmp_path
):
    alice, bob, carol, dave, erin = [await login(relay5, u) for u in FIVE]
    alice2 = await link(relay5, alice, tmp_path / "alice-laptop", "laptop")
    bob2 = await link(relay5, bob, tmp_path / "bob-phone", "phone")
    try:
        await alice.groups.create("team", ["bob", "carol", "dave", "erin"])
        devices = [alice, alice2, bob, bob2, carol, dave, erin]
        await sync(*devices)
        sent: list[tuple[str, str]] = []

        async def say(device, text: str) -> None:
            await device.sync()
            await device.groups.send("team", text)
            sent.append((device.user, text))

        await say(alice, "hello team, from alice's first device")
        await say(bob2, "bob from his phone")
        await say(carol, "carol here")
        await say(alice2, "alice from the laptop")
        # dave goes offline for part of the conversation.
        await dave.close()
        devices.remove(dave)
        await say(erin, "erin, while dave is away")
        await say(bob, "bob from his first device")
        await say(alice, "alice again")
        dave = await reopen("dave")
        await dave.start()
        devices.append(dave)
        await say(dave, "dave is back")
        await say(carol, "carol's last word")
        await sync(*devices)
        for device in devices:
            got = await shown(device)
            # Every message exactly once (their own included: sent here or by their
            # other device), nothing else, in order per sender.
            assert sorted(got) == sorted(sent), (device.user, device.settings.device)
            for who in FIVE:
                assert [t for s, t in got if s == who] == [t for s, t in sent if s == who]
            assert not [e for e in await events_of(device) if "missed" in e or "fork" in e]
    finally:
        await alice2.close()
        await bob2.close()


async def test_a_removed_member_cannot_read_what_follows_even_if_the_relay_forwards_it(
    relay5, login
):
    alice, bob, carol = [await login(relay5, u) for u in FIVE[:3]]
    await alice.groups.create("team", ["bob", "carol"])
    await sync(bob, carol)
    await alice.groups.send("team", "before the removal")
    await alice.groups.remove("team", ["carol"])
    await sync(bob, carol)
    captured = spy(relay5, "bob")
    await alice.groups.send("team", "after the removal: not for carol")
    await bob.sync()
    assert ("alice", "after the removal: not for carol") in await shown(bob)
    # The relay hands carol what bob got (the payload and bob's envelope): she cannot
    # open the envelope, holds no key for the payload, and shows nothing.
    (group_send,) = [d for d in captured if d.payload is not None]
    assert b"not for carol" not in group_send.payload
    relay_conn = connection_of(relay5, "carol")
    relay_conn.push(dataclasses.replace(group_send, mid=group_send.mid + 1_000_000))
    rejected = await next_event(carol, MessageRejected)
    assert "addressed to bob" in rejected.reason
    await carol.sync()
    assert await shown(carol) == [("alice", "before the removal")]
    assert "you were removed by alice: nothing more reaches you here" in await events_of(carol)


async def test_an_added_member_cannot_read_what_came_before(relay5, login):
    alice, bob, dave = [await login(relay5, u) for u in ("alice", "bob", "dave")]
    await alice.groups.create("team", ["bob"])
    await bob.sync()
    captured = spy(relay5, "bob")
    await alice.groups.send("team", "secret from before dave")
    await bob.sync()
    await alice.groups.add("team", ["dave"])
    await alice.groups.send("team", "welcome dave")
    await sync(bob, dave)
    assert await shown(dave) == [("alice", "welcome dave")]
    assert await events_of(dave) == ["alice added you"]
    # Even handed the old group send by the relay, dave reads nothing of it.
    old = next(d for d in captured if d.payload is not None)  # "secret from before dave"
    connection_of(relay5, "dave").push(dataclasses.replace(old, mid=old.mid + 1_000_000))
    await next_event(dave, MessageRejected)
    assert await shown(dave) == [("alice", "welcome dave")]
    assert [t for _, t in await shown(bob)] == ["secret from before dave", "welcome dave"]


async def test_a_change_that_arrives_early_is_held_until_the_missing_one_comes(relay5, login):
    alice, _, carol, _ = [await login(relay5, u) for u in FIVE[:4]]
    await alice.groups.create("team", ["bob", "carol"])
    await carol.sync()
    # The relay holds carol's deliveries back, then hands them over newest first.
    held, release = withhold(relay5, "carol")
    await alice.groups.rename("team", "renamed")
    await alice.groups.add("renamed", ["dave"])
    assert len(held) == 2
    connection_of(relay5, "carol").push(dataclasses.replace(held[1], mid=held[1].mid + 1_000_000))
    await carol.sync()
    assert (await carol.groups.info("team")).epoch == 1  # epoch 3 waits for epoch 2
    release()
    await carol.sync()
    info = await carol.groups.info("renamed")
    assert (info.epoch, info.members) == (3, ("alice", "bob", "carol", "dave"))
    assert await events_of(carol, "renamed") == [
        "alice created the group 'team' with bob, you",
        "alice renamed the group to 'renamed'",
        "alice added dave",
    ]


async def test_group_input_under_a_changed_key_waits_for_trust(relay5, login, tmp_path):
    alice, bob = await login(relay5, "alice"), await login(relay5, "bob")
    await login(relay5, "carol")
    info = await alice.groups.create("team", ["bob", "carol"])
    await bob.sync()
    await bob.close()
    # bob reinstalls: a new identity. His first group input reaches alice under it.
    new_bob = await login(relay5, "bob", profile=tmp_path / "bob-new", replace_identity=True)
    state = (await alice.groups.store.get(bytes.fromhex(info.gid))).log.current
    leave = GroupChange(
        group_id=state.group_id, epoch=state.epoch + 1, prev=state.hash, signer="bob",
        issued_at_ms=1, op=ChangeOp.LEAVE,
    ).sign(new_bob.sessions.identity)  # fmt: skip

    async def prepare():
        return encode_content(ContentType.GROUP_CHANGE, leave), None

    await send_to_devices(
        new_bob._require_conn(), new_bob.sessions, new_bob._devices, ["alice"], prepare
    )
    await next_event(alice, MessageQuarantined, lambda e: e.contact == "bob")
    await alice.sync()
    assert (await alice.groups.info("team")).members == ("alice", "bob", "carol")
    # Accepted, the new key is bob's: his leave now verifies and applies.
    await alice.trust("bob")
    await next_event(alice, GroupNotice, lambda e: e.text == "bob left the group")
    assert (await alice.groups.info("team")).members == ("alice", "carol")
