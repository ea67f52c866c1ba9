"""A session that cannot decrypt any more heals itself: more than MAX_SKIP messages of one
chain lost, then both sides read each other again, and both users are told."""

from __future__ import annotations

from hushwire.client.service import MessageReceived, MessageRejected, SessionRestarted
from hushwire.common.crypto.ratchet import RatchetConfig
from tests.e2e.helpers import drain, link, next_event, sync, texts


async def no_fetch(name: str):
    raise AssertionError("a live session needs no bundle")


async def test_more_than_max_skip_lost_messages_heal_with_a_fresh_session(relay, login, figures):
    alice, bob = await login(relay, "alice"), await login(relay, "bob")
    await alice.send("bob", "hi")
    await next_event(bob, MessageReceived)
    await bob.send("alice", "hello")
    await next_event(alice, MessageReceived)
    lost = RatchetConfig().max_skip + 1
    for i in range(lost):  # sealed and committed, never delivered: lost on the way
        out = await alice.sessions.prepare_send("bob", f"lost {i}", no_fetch)
        await alice.sessions.mark_failed(out.uid)
    await alice.send("bob", "after the gap")
    rejected = await next_event(bob, MessageRejected)
    assert "too many skipped" in rejected.reason
    assert await next_event(bob, SessionRestarted) == SessionRestarted("alice", by_peer=False)
    assert await next_event(alice, SessionRestarted) == SessionRestarted("bob", by_peer=True)
    await alice.send("bob", "healed")
    assert (await next_event(bob, MessageReceived)).text == "healed"
    await bob.send("alice", "and back")
    assert (await next_event(alice, MessageReceived)).text == "and back"
    # The relay forging more "dead" envelopes cannot make bob restart again at once.
    for i in range(lost):
        out = await alice.sessions.prepare_send("bob", f"lost again {i}", no_fetch)
        await alice.sessions.mark_failed(out.uid)
    await alice.send("bob", "gap two")
    await next_event(bob, MessageRejected)
    await bob.sync()
    assert not any(isinstance(e, SessionRestarted) for e in drain(bob))
    figures.add(
        f"{lost} messages of one chain lost between alice and bob (MAX_SKIP {lost - 1})",
        "the next is rejected; bob starts a fresh session automatically (at most once an "
        "hour), both are told, and later messages go both ways",
    )


async def test_a_dead_session_with_one_device_restarts_with_that_device_only(
    relay, login, tmp_path
):
    """Both accounts have two devices: the session between bob's phone and alice's laptop
    dies; the phone restarts it with the laptop alone (a partial send_devices), the
    sessions with the other devices are untouched, and the laptop reads the phone again."""
    alice, bob = await login(relay, "alice"), await login(relay, "bob")
    laptop = await link(relay, alice, tmp_path / "alice-laptop", "laptop")
    phone = await link(relay, bob, tmp_path / "bob-phone", "phone")
    try:
        await alice.send("bob", "zero")
        await laptop.send("bob", "one")
        await sync(alice, bob, phone)
        await phone.send("alice", "two")
        await sync(alice, laptop, bob)
        # The phone loses its session with the laptop (a restored backup, say).
        await phone.sessions.store.save_device_sessions("alice", 2, [], 0)
        untouched = {
            "alice/bob": await alice.sessions.store.load_sessions("bob"),
            "bob/alice": await bob.sessions.store.load_sessions("alice"),
        }
        drain(alice), drain(bob), drain(laptop), drain(phone)
        await laptop.send("bob", "lost on the phone")
        rejected = await next_event(phone, MessageRejected)
        assert rejected.contact == "alice"
        assert await next_event(phone, SessionRestarted) == SessionRestarted("alice", by_peer=False)
        assert await next_event(laptop, SessionRestarted) == SessionRestarted("bob", by_peer=True)
        await laptop.send("bob", "healed")
        assert (await next_event(phone, MessageReceived)).text == "healed"
        await phone.send("alice", "and back")
        assert (await next_event(laptop, MessageReceived)).text == "and back"
        await sync(alice, bob)
        assert ("in", "healed") in await texts(bob, "alice")
        assert ("in", "and back") in await texts(alice, "bob")
        # Nobody else restarted anything; the device 1 sessions are as they were.
        for device in (alice, bob):
            assert not any(isinstance(e, SessionRestarted) for e in drain(device))
        assert untouched["alice/bob"] == await alice.sessions.store.load_sessions("bob") != []
        assert untouched["bob/alice"] == await bob.sessions.store.load_sessions("alice") != []
    finally:
        await laptop.close()
        await phone.close()
