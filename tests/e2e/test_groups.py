"""Group conversations between real clients through a real relay over real TLS:
membership changes reach every device of every member, an added member starts from
its welcome, a removed member learns it and reads nothing after."""

from __future__ import annotations

import pytest

from hushwire.client.errors import GroupCommandError, UnknownGroup
from hushwire.client.service import GroupNotice
from tests.e2e.helpers import next_event

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
