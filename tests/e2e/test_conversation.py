"""Two and three real profiles talking through a real relay over TLS."""

from __future__ import annotations

import sqlite3

import pytest

from hushwire.client.errors import (
    BadBundle,
    CertificateMismatch,
    ConnectionClosed,
    MessageHeld,
    MessageTooLong,
)
from hushwire.client.service import (
    ConnectionState,
    KeyChanged,
    MessageReceived,
    MessageRejected,
    MessageSent,
    MessagesReleased,
)
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair, KemPrekeyPair, SignedPrekeyPair
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.messages import Deliver, FetchBundle
from tests.e2e.helpers import drain, next_event, settings_for
from tests.support import Harness


async def test_first_contact_and_a_conversation_both_ways(relay, login):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    left_before = await bob.store.count_one_time_prekeys()
    sent = await alice.send("bob", "hello bob")
    assert not sent.queued
    got = await next_event(bob, MessageReceived)
    assert (got.contact, got.text, got.envelope_id) == ("alice", "hello bob", sent.envelope_id)
    # X3DH used one of bob's one-time prekeys, and bob deleted its private half.
    assert await bob.store.count_one_time_prekeys() == left_before - 1
    await bob.send("alice", "hi alice")
    back = await next_event(alice, MessageReceived)
    assert (back.contact, back.text) == ("bob", "hi alice")
    for i in range(3):
        await alice.send("bob", f"more {i}")
        assert (await next_event(bob, MessageReceived)).text == f"more {i}"
    history = await bob.history("alice", 10)
    assert [(h.direction, h.text) for h in history] == [
        ("in", "hello bob"),
        ("out", "hi alice"),
        ("in", "more 0"),
        ("in", "more 1"),
        ("in", "more 2"),
    ]
    assert [h.status for h in await alice.history("bob", 10) if h.direction == "out"] == [
        "sent"
    ] * 4


async def test_first_contact_without_one_time_prekeys(relay_factory, login):
    relay = await relay_factory(fetch_burst=1000, target_fetch_burst=1000)
    bob = await login(relay, "bob")
    await bob.close()
    carol = await relay.login("carol", version=2)
    drained = 0
    while (await carol.request(FetchBundle, user="bob")).bundle.one_time_prekey is not None:
        drained += 1
    assert drained == 100
    alice = await login(relay, "alice")
    await alice.send("bob", "no prekey left for this one")
    bob = await login(relay, "bob")
    got = await next_event(bob, MessageReceived)
    assert got.text == "no prekey left for this one"
    await bob.send("alice", "and back")
    assert (await next_event(alice, MessageReceived)).text == "and back"


async def test_three_profiles_offline_delivery_in_order(relay, login, reopen):
    bob = await login(relay, "bob")
    await bob.close()  # bob has published his keys and is offline from now on
    alice = await login(relay, "alice")
    carol = await login(relay, "carol")
    for i in range(5):
        await alice.send("bob", f"from alice {i}")
        await carol.send("bob", f"from carol {i}")
    bob = await reopen("bob")
    await bob.start()
    await bob.sync()
    texts = [(await next_event(bob, MessageReceived)).text for _ in range(10)]
    assert [t for t in texts if "alice" in t] == [f"from alice {i}" for i in range(5)]
    assert [t for t in texts if "carol" in t] == [f"from carol {i}" for i in range(5)]
    await bob.send("carol", "got them")
    assert (await next_event(carol, MessageReceived)).text == "got them"


async def _mailbox_count(relay: Harness) -> int:
    with sqlite3.connect(relay.config.db) as db:
        return db.execute("SELECT count(*) FROM mailbox").fetchone()[0]


async def _committed_mailbox_count(relay: Harness) -> int:
    """The count once the relay has committed the acks it took. A client acks without a
    reply (protocol v2), so `sync` returns when its acks are taken, not committed; a
    login stamp rides the same group commit queue, so once it is written, so are they."""
    await relay.server.relay.store.record_login("bob", now=1)
    return await _mailbox_count(relay)


async def test_stored_but_unacked_envelope_is_redelivered_and_shown_once(relay, login, reopen):
    bob = await login(relay, "bob")
    await bob.close()
    alice = await login(relay, "alice")
    await alice.send("bob", "exactly once")
    # Bob's client stores the message and dies before its ack: drive the same code the
    # client runs (SessionManager.receive), then drop the connection without acking.
    bob = await reopen("bob")
    raw = await relay.login("bob")
    deliver = await raw.pushes.get()
    assert isinstance(deliver, Deliver)
    stored = await bob.sessions.receive(deliver)
    assert stored.text == "exactly once"
    await raw.close()
    assert await _mailbox_count(relay) == 1  # never acked, so still queued
    await bob.start()
    await bob.sync()  # the redelivery has been handled and acked
    assert await _committed_mailbox_count(relay) == 0
    assert [h.text for h in await bob.history("alice", 10)] == ["exactly once"]
    while not bob.events.empty():
        assert not isinstance(bob.events.get_nowait(), MessageReceived)


async def test_reconnect_after_the_relay_restarts(relay, login):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    await alice.send("bob", "before")
    await next_event(bob, MessageReceived)
    await relay.restart()
    for c in (alice, bob):
        await next_event(c, ConnectionState, lambda e: e.state == "reconnecting")
        await next_event(c, ConnectionState, lambda e: e.state == "connected")
    await alice.send("bob", "after the restart")
    assert (await next_event(bob, MessageReceived)).text == "after the restart"
    await bob.send("alice", "still here")
    assert (await next_event(alice, MessageReceived)).text == "still here"


async def test_messages_sent_while_offline_go_out_after_reconnect(relay, login):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    await alice.send("bob", "warm up")
    await next_event(bob, MessageReceived)
    await relay.server.close()
    await next_event(alice, ConnectionState, lambda e: e.state == "reconnecting")
    result = await alice.send("bob", "typed while offline")
    assert result.queued
    with pytest.raises(ConnectionClosed):
        await alice.send("bob", "scripts want an error", queue_if_offline=False)
    await relay.restart()
    assert (await next_event(bob, MessageReceived)).text == "typed while offline"


async def test_a_second_profile_cannot_take_over_an_account_silently(
    relay, login, reopen, tmp_path
):
    """Issue #12: logging in from a second profile used to replace the first one's keys,
    so messages were lost with the sender told `ok`. Now it is refused and says how to
    link, and the first profile still decrypts everything sent meanwhile. The refusal
    comes at login (the second profile names its identity), so the first profile's live
    session is never replaced: it stays connected and keeps receiving."""
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    drain(alice)
    with pytest.raises(RequestError) as exc:
        await login(relay, "alice", profile=tmp_path / "alice-second")
    assert exc.value.code == ErrorCode.ACCOUNT_HAS_DEVICES
    assert "hushwire link" in exc.value.message and "--link CODE" in exc.value.message
    assert not (tmp_path / "alice-second").exists()  # nothing half-made is left behind
    await bob.send("alice", "still reaches the first profile")
    got = await next_event(alice, MessageReceived)
    assert got.text == "still reaches the first profile"
    assert alice.state == "connected"
    assert not [e for e in drain(alice) if isinstance(e, ConnectionState)]


async def test_new_identity_published_for_a_contact_holds_messages_until_trust(
    relay, login, tmp_path
):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    await alice.send("bob", "hi")
    await next_event(bob, MessageReceived)
    await bob.close()
    # A second profile for bob (a reinstall, or someone with bob's token) replaces bob's
    # identity on purpose; the relay pushes key_changed to alice, who fetched bob's keys.
    bob2 = await login(relay, "bob", profile=tmp_path / "bob-reinstalled", replace_identity=True)
    await next_event(alice, KeyChanged, lambda e: e.contact == "bob")
    state = await alice.contact_state("bob")
    assert state.key_changed and not state.verified
    with pytest.raises(MessageHeld, match="trust bob"):
        await alice.send("bob", "held until trust")
    assert [h.status for h in await alice.history("bob", 5)][-1] == "held"
    old_number = await alice.safety_number("bob")
    assert await alice.trust("bob") == 1
    await next_event(alice, MessagesReleased, lambda e: e.n == 1)
    got = await next_event(bob2, MessageReceived)
    assert got.text == "held until trust"
    assert await alice.safety_number("bob") != old_number
    assert not (await alice.contact_state("bob")).key_changed


async def test_relay_substituting_a_contacts_keys_is_detected(relay, login):
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    await alice.send("bob", "hi")
    await next_event(bob, MessageReceived)
    await bob.sync()  # bob's top-up after "hi" used a prekey: done before the swap
    # A malicious relay swaps bob's identity and prekeys for its own (validly
    # self-signed, so only the pin can tell) and sends no key_changed.
    forged = IdentityKeyPair.generate(X25519)
    spk = SignedPrekeyPair.generate(forged, X25519, 7).public()
    kem = KemPrekeyPair.generate(forged, 8, last_resort=True).public()
    ident = forged.public()
    with sqlite3.connect(relay.config.db) as db:
        uid = db.execute("SELECT id FROM users WHERE name = 'bob'").fetchone()[0]
        db.execute(
            "UPDATE identity_keys SET sign_key = ?, dh_key = ?, dh_sig = ? WHERE user_id = ?",
            (ident.sign_key, ident.dh_key, ident.dh_sig, uid),
        )
        db.execute(
            "UPDATE signed_prekeys SET prekey_id = 7, key = ?, sig = ? WHERE user_id = ?",
            (spk.key, spk.sig, uid),
        )
        db.execute("DELETE FROM one_time_prekeys WHERE user_id = ?", (uid,))
        db.execute("DELETE FROM kem_prekeys WHERE user_id = ?", (uid,))
        db.execute(
            "INSERT INTO kem_prekeys (user_id, prekey_id, key, sig, last_resort, created_at)"
            " VALUES (?, 8, ?, ?, 1, 0)",
            (uid, kem.key, kem.sig),
        )
    # The existing session is unaffected; a fresh one needs the (forged) bundle.
    await alice.send("bob", "still fine")
    assert (await next_event(bob, MessageReceived)).text == "still fine"
    await alice.reset_session("bob")
    with pytest.raises(MessageHeld):
        await alice.send("bob", "must not reach the forged key")
    await next_event(alice, KeyChanged, lambda e: e.contact == "bob")
    assert (await alice.contact_state("bob")).key_changed


async def test_a_bundle_whose_signature_fails_is_refused(relay, login):
    alice = await login(relay, "alice")
    await login(relay, "bob")
    with sqlite3.connect(relay.config.db) as db:
        uid = db.execute("SELECT id FROM users WHERE name = 'bob'").fetchone()[0]
        sig = bytearray(
            db.execute("SELECT sig FROM signed_prekeys WHERE user_id = ?", (uid,)).fetchone()[0]
        )
        sig[5] ^= 0x01
        db.execute("UPDATE signed_prekeys SET sig = ? WHERE user_id = ?", (bytes(sig), uid))
    with pytest.raises(BadBundle, match="do not verify"):
        await alice.send("bob", "never sent")
    assert await alice.history("bob", 5) == []


async def test_tampered_and_misaddressed_envelopes_are_rejected_and_acked(relay, login, reopen):
    bob = await login(relay, "bob")
    await bob.close()
    alice = await login(relay, "alice")
    carol = await login(relay, "carol")
    await alice.send("bob", "one")
    await alice.send("bob", "two")
    await carol.send("alice", "for alice only")
    await next_event(alice, MessageReceived)
    with sqlite3.connect(relay.config.db) as db:
        mid, body = db.execute("SELECT id, body FROM mailbox ORDER BY id LIMIT 1").fetchone()
        flipped = bytearray(body)
        flipped[-3] ^= 0x40
        db.execute("UPDATE mailbox SET body = ? WHERE id = ?", (bytes(flipped), mid))
        # A relay replaying a copy of the tampered envelope, and one meant for alice.
        bob_id = db.execute("SELECT id FROM users WHERE name = 'bob'").fetchone()[0]
        db.execute(
            "INSERT INTO mailbox (recipient_id, sender, created_at, body) "
            "VALUES (?, 'alice', 0, ?)",
            (bob_id, bytes(flipped)),
        )
    bob = await reopen("bob")
    await bob.start()
    rejected = await next_event(bob, MessageRejected)
    assert rejected.contact == "alice" and "authentication" in rejected.reason
    # The second message still decrypts (out of order: its predecessor never did).
    assert (await next_event(bob, MessageReceived)).text == "two"
    await next_event(bob, MessageRejected)
    await bob.sync()
    assert await _committed_mailbox_count(relay) == 0  # all acked: they never come back
    assert [h.text for h in await bob.history("alice", 10)] == ["two"]


async def test_envelope_for_another_recipient_is_rejected(relay, login):
    alice = await login(relay, "alice")
    await alice.close()
    carol = await login(relay, "carol")
    bob = await login(relay, "bob")
    await carol.send("alice", "for alice")
    # The relay hands carol's envelope for alice to bob as well: not ours, rejected.
    with sqlite3.connect(relay.config.db) as db:
        (body,) = db.execute("SELECT body FROM mailbox").fetchone()
        bob_id = db.execute("SELECT id FROM users WHERE name = 'bob'").fetchone()[0]
        db.execute(
            "INSERT INTO mailbox (recipient_id, sender, created_at, body) "
            "VALUES (?, 'carol', 0, ?)",
            (bob_id, body),
        )
    await bob.close()
    bob2 = await login(relay, "bob")
    rejected = await next_event(bob2, MessageRejected)
    assert rejected.contact == "carol" and "addressed to alice" in rejected.reason
    assert await bob2.history("carol", 5) == []


async def test_long_text_up_to_the_frame_limit(relay_factory, login):
    # 4 KiB frames: an initial envelope spends ~1.5 KB on keys (1,088 of them the KEM
    # ciphertext); a first key upload then takes ~35 frames, so allow them.
    relay = await relay_factory(max_frame=4096, publish_burst=1000)
    alice = await login(relay, "alice")
    bob = await login(relay, "bob")
    limit = alice.max_text_bytes("bob")
    assert 2500 < limit < 4096 - 1088
    text = ("é" * (limit // 2)) + ("x" * (limit % 2))
    assert len(text.encode()) == limit
    await alice.send("bob", text)  # the first, largest (initial) envelope
    assert (await next_event(bob, MessageReceived)).text == text
    with pytest.raises(MessageTooLong, match=f"at most {limit} bytes"):
        await alice.send("bob", text + "x")


async def test_unknown_recipient_and_full_mailbox(relay_factory, login):
    relay = await relay_factory(max_mailbox=2)
    alice = await login(relay, "alice")
    with pytest.raises(RequestError) as exc:
        await alice.send("zed", "hello?")
    assert exc.value.code is ErrorCode.UNKNOWN_USER
    bob = await login(relay, "bob")
    await bob.close()
    await alice.send("bob", "1")
    await alice.send("bob", "2")
    with pytest.raises(RequestError) as exc:
        await alice.send("bob", "3")
    assert exc.value.code is ErrorCode.MAILBOX_FULL
    assert [h.status for h in await alice.history("bob", 5)] == ["sent", "sent", "failed"]


async def test_changed_relay_certificate_is_refused(relay, login, reopen, tmp_path):
    alice = await login(relay, "alice")
    await relay.restart(cert=tmp_path / "other-cert.pem", key=tmp_path / "other-key.pem")
    gone = await next_event(alice, ConnectionState, lambda e: e.state == "disconnected")
    assert "different certificate" in gone.detail
    await alice.close()
    again = await reopen("alice")
    with pytest.raises(CertificateMismatch, match="different certificate"):
        await again.start()


async def test_wrong_token_is_a_clear_error_and_leaves_no_profile(relay, tmp_path):
    from hushwire.client.service import HushwireClient, RelaySettings
    from tests.e2e.helpers import FAST_KDF, PASSPHRASE

    wrong = RelaySettings("127.0.0.1", relay.port, "alice", relay.tokens["bob"])
    with pytest.raises(RequestError) as exc:
        await HushwireClient.login(tmp_path / "p", PASSPHRASE, wrong, kdf=FAST_KDF)
    assert exc.value.code is ErrorCode.AUTH_FAILED
    assert not (tmp_path / "p" / "profile.db").exists()
    assert settings_for(relay, "alice").token not in repr(settings_for(relay, "alice"))


async def test_mutual_tls_with_a_client_certificate(relay_factory, login, tmp_path):
    from hushwire.relay.tls import ensure_ca, issue_client_cert

    ca_cert, _ = ensure_ca(tmp_path / "ca")
    cert, key = issue_client_cert(tmp_path / "ca", "alice", tmp_path)
    relay = await relay_factory(client_ca=ca_cert)
    with pytest.raises(ConnectionClosed):
        await login(relay, "alice", profile=tmp_path / "no-cert")
    from dataclasses import replace

    from hushwire.client.service import HushwireClient
    from tests.e2e.helpers import FAST_KDF, PASSPHRASE

    settings = replace(settings_for(relay, "alice"), client_cert=str(cert), client_key=str(key))
    client = await HushwireClient.login(tmp_path / "with-cert", PASSPHRASE, settings, kdf=FAST_KDF)
    assert client.state == "connected"
    await client.close()


async def test_start_without_waiting_retries_until_the_relay_is_back(relay, login, reopen):
    bob = await login(relay, "bob")
    await bob.close()
    alice = await login(relay, "alice")
    await alice.close()
    await relay.server.close()
    alice = await reopen("alice")
    await alice.start(wait=False)
    await next_event(alice, ConnectionState, lambda e: e.state == "reconnecting")
    result = await alice.send("bob", "queued while the relay was down")
    assert result.queued and result.envelope_id == ""
    await relay.restart()
    sent = await next_event(alice, MessageSent)
    assert sent.uid == result.uid
    bob = await login(relay, "bob", profile=None)
    assert (await next_event(bob, MessageReceived)).text == "queued while the relay was down"


async def test_a_second_login_elsewhere_disconnects_without_a_fight(relay, login, tmp_path):
    alice = await login(relay, "alice")
    await login(relay, "alice", profile=tmp_path / "alice-elsewhere", replace_identity=True)
    gone = await next_event(alice, ConnectionState, lambda e: e.state == "disconnected")
    assert "session_replaced" in gone.detail
