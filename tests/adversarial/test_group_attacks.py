"""Attacks on groups end to end: a relay (bent in-process, as in test_malicious_relay)
or a member who is not an admin tries to add a member, replay an old change, pass off a
message as another member's, drop a message for one member, or fork the history. The
clients under test are real, over real TLS; each attack is refused or shown."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from hushwire.client.fanout import fetcher
from hushwire.client.group_fanout import send_to_devices
from hushwire.client.service import GroupMessageReceived, GroupNotice, MessageRejected
from hushwire.common.chat_groups import ChangeOp, ContentType, GroupChange, encode_content
from hushwire.common.messages import Deliver
from tests.adversarial.test_malicious_relay import connection_of
from tests.e2e.helpers import drain, next_event

USERS = ("alice", "bob", "carol", "dave")


@pytest.fixture
async def team(relay_factory, login):
    """alice (admin), bob and carol in #team; dave outside."""
    relay = await relay_factory(users=USERS)
    clients = [await login(relay, u) for u in USERS]
    alice, bob, carol, dave = clients
    await alice.groups.create("team", ["bob", "carol"])
    for c in (bob, carol):
        await c.sync()
    return relay, alice, bob, carol, dave


def withhold(relay, user: str) -> tuple[list[Deliver], Callable[[], None]]:
    """The relay keeps what it would push to `user` (the list) until `release()`, which
    pushes it all, in order, and delivers normally again."""
    held: list[Deliver] = []
    conn = connection_of(relay, user)
    real = conn._deliver
    conn._deliver = held.append

    def release() -> None:
        conn._deliver = real
        for d in held:
            real(d)

    return held, release


def spy(relay, user: str) -> list[Deliver]:
    """Every deliver the relay pushes to `user` from now on (still delivered)."""
    captured: list[Deliver] = []
    conn = connection_of(relay, user)
    real = conn._deliver
    conn._deliver = lambda d: (captured.append(d), real(d))[1]
    return captured


def drop_first(relay, user: str, sender: str) -> list[Deliver]:
    """The relay drops the next deliver from `sender` to `user` (returned in the list) and
    delivers everything else."""
    dropped: list[Deliver] = []
    conn = connection_of(relay, user)
    real = conn._deliver

    def deliver(d: Deliver) -> None:
        if d.sender == sender and not dropped:
            dropped.append(d)
            return
        real(d)

    conn._deliver = deliver
    return dropped


async def insider_send(client, to: list[str], kind: ContentType, data: bytes, payload=None):
    """A member's real client seals whatever it likes to other members (as an attacker
    who controls its own client can)."""

    async def prepare():
        return encode_content(kind, data), payload

    await send_to_devices(client._require_conn(), client.sessions, client._devices, to, prepare)


async def members(client) -> tuple[str, ...]:
    return (await client.groups.info("team")).members


async def events_of(client) -> list[str]:
    return [i.text for i in await client.groups.history("team", 500) if i.kind == "event"]


async def test_neither_the_relay_nor_a_plain_member_can_add_a_member(team):
    relay, alice, bob, carol, dave = team
    group = await bob.groups.store.get(bytes.fromhex((await bob.groups.info("team")).gid))
    state = group.log.current
    await bob.sessions.pin("dave", fetcher(bob._require_conn()))
    dave_key = (await bob.sessions.contact("dave")).identity.sign_key

    def add_dave(signer: str) -> bytes:
        return GroupChange(
            group_id=state.group_id, epoch=state.epoch + 1, prev=state.hash, signer=signer,
            issued_at_ms=1, op=ChangeOp.ADD, users=("dave",), keys=(dave_key,),
        ).sign(bob.sessions.identity)  # fmt: skip

    # bob is no admin: his add, and one naming alice as its signer, are both refused.
    await insider_send(bob, ["carol"], ContentType.GROUP_CHANGE, add_dave("bob"))
    await next_event(carol, GroupNotice, lambda e: "refused a membership change from bob" in e.text)
    await insider_send(bob, ["carol"], ContentType.GROUP_CHANGE, add_dave("alice"))
    await next_event(carol, GroupNotice, lambda e: "refused a membership change from bob" in e.text)
    # The relay itself cannot even seal one: a change envelope it alters is rejected.
    conn = connection_of(relay, "carol")
    real = conn._deliver

    def tamper(d: Deliver) -> None:
        body = bytearray(d.body)
        body[-5] ^= 1
        real(dataclasses.replace(d, body=bytes(body)))

    conn._deliver = tamper
    await alice.groups.rename("team", "renamed")
    await next_event(carol, MessageRejected, lambda e: e.contact == "alice")
    assert await members(carol) == ("alice", "bob", "carol")
    assert (await carol.groups.info("team")).name == "team"
    await dave.sync()
    assert await dave.groups.list() == []


async def test_an_old_membership_change_replayed_is_refused(team):
    relay, alice, bob, carol, _ = team
    captured = spy(relay, "carol")
    await alice.groups.add("team", ["dave"])
    await carol.sync()
    (add,) = [d for d in captured]
    await alice.groups.remove("team", ["dave"])
    await carol.sync()
    assert await members(carol) == ("alice", "bob", "carol")
    # The relay replays the envelope: dropped as a duplicate, nothing changes or shows.
    connection_of(relay, "carol").push(dataclasses.replace(add, mid=add.mid + 1_000_000))
    await carol.sync()
    assert await members(carol) == ("alice", "bob", "carol")
    # A member re-seals the old signed add in a fresh envelope: refused as stale, shown.
    group = await carol.groups.store.get(bytes.fromhex((await carol.groups.info("team")).gid))
    old_add = group.log.changes[1]
    await insider_send(bob, ["carol"], ContentType.GROUP_CHANGE, old_add)
    notice = await next_event(carol, GroupNotice, lambda e: "stale" in e.text)
    assert "replay or a rollback" in notice.text
    assert await members(carol) == ("alice", "bob", "carol")
    assert (await carol.groups.info("team")).epoch == 3


async def test_a_forked_membership_is_detected_shown_and_settled(team):
    relay, alice, bob, carol, _ = team
    await alice.groups.promote("team", ["bob"])
    await bob.sync()
    # The relay withholds alice's rename from bob until bob has signed his own.
    _, release = withhold(relay, "bob")
    await alice.groups.rename("team", "alpha")
    await bob.groups.rename("team", "bravo")
    release()
    for c in (alice, bob, carol):
        await c.sync()
    infos = [(await c.groups.list())[0] for c in (alice, bob, carol)]
    assert len({(i.name, i.epoch) for i in infos}) == 1  # everyone settled on one change
    for c in (alice, bob, carol):
        assert any("forked at epoch 3" in e for e in await events_of_gid(c))


async def events_of_gid(client) -> list[str]:
    (info,) = await client.groups.list()
    return [i.text for i in await client.groups.history(info.gid, 500) if i.kind == "event"]


async def test_a_member_cannot_pass_off_another_members_message_as_theirs(team):
    _, alice, bob, carol, _ = team
    notes = []
    real = bob._group_inbox.on_content

    async def keep(got, payload):
        notes.append((got, payload))
        return await real(got, payload)

    bob._group_inbox.on_content = keep
    await alice.groups.send("team", "from alice")
    await bob.sync()
    await carol.sync()
    (got, payload), *_ = [(g, p) for g, p in notes if g.kind == ContentType.GROUP_MESSAGE]
    # bob re-seals alice's key note, with her payload, to carol as if it were his.
    await insider_send(bob, ["carol"], ContentType.GROUP_MESSAGE, got.data, payload)
    rejected = await next_event(carol, MessageRejected, lambda e: e.contact == "bob")
    assert "chain" in rejected.reason
    history = await carol.groups.history("team", 50)
    assert [(i.sender, i.text) for i in history if i.kind == "in"] == [("alice", "from alice")]


async def test_a_message_the_relay_drops_for_one_member_is_shown_as_missed(team):
    relay, alice, bob, carol, _ = team
    dropped = drop_first(relay, "carol", "alice")
    await alice.groups.send("team", "one")
    await alice.groups.send("team", "two")
    assert len(dropped) == 1
    await carol.sync()
    seen = drain(carol)
    assert [e.text for e in seen if isinstance(e, GroupMessageReceived)] == ["two"]
    (notice,) = [e for e in seen if isinstance(e, GroupNotice) and "missed" in e.text]
    assert notice.text == "you may have missed 1 message from alice"
    # bob saw both: his next message tells carol too, without a second notice.
    await bob.sync()
    await bob.groups.send("team", "did everyone get one?")
    await next_event(carol, GroupMessageReceived, lambda e: e.sender == "bob")
    assert [e for e in await events_of(carol) if "missed" in e] == [notice.text]
