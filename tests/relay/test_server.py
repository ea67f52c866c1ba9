"""The relay over real TLS on 127.0.0.1, once with a real SQLite file and once with a
real PostgreSQL server (the `relay_store` param below)."""

from __future__ import annotations

import asyncio
import ssl
import struct
import time

import msgpack
import pytest

from hushwire.client.connection import ConnectionClosed, RelayConnection, TlsSettings
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.frames import FrameDecoder, encode_frame
from hushwire.common.keys import IdentityPublic, OneTimePrekey, SignedPrekey
from hushwire.common.messages import (
    Ack,
    Deliver,
    FetchBundle,
    Hello,
    KeyChanged,
    Login,
    Ping,
    PrekeyCount,
    PresenceChanged,
    PublishKeys,
    Send,
    Who,
)
from hushwire.relay.store import Store
from tests.support import RawClient

WAIT = 10.0  # generous: these wait on events, the timeout only bounds a failure


@pytest.fixture(params=["sqlite", "postgresql"])
def relay_store(request: pytest.FixtureRequest) -> str | None:
    """Every test here runs on both backends (overrides tests/conftest.py's)."""
    return str(request.getfixturevalue("pg_url")) if request.param == "postgresql" else None


def identity(seed: int) -> IdentityPublic:
    return IdentityPublic("x25519", bytes([seed]) * 32, bytes([seed]) * 32, bytes([seed]) * 64)


def spk(seed: int) -> SignedPrekey:
    return SignedPrekey(seed, bytes([seed]) * 32, bytes([seed]) * 64)


def otpks(start: int, n: int) -> tuple[OneTimePrekey, ...]:
    return tuple(OneTimePrekey(i, i.to_bytes(32, "big")) for i in range(start, start + n))


async def expect_error(code: ErrorCode, coro) -> RequestError:
    with pytest.raises(RequestError) as exc:
        await coro
    assert exc.value.code == code, exc.value.message
    return exc.value


async def next_push(conn: RelayConnection, kind=Deliver):
    while True:
        push = await asyncio.wait_for(conn.pushes.get(), WAIT)
        if isinstance(push, kind):
            return push


async def raw_tls(harness):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return await asyncio.open_connection("127.0.0.1", harness.port, ssl=ctx)


async def read_frames_until_eof(reader) -> list[dict]:
    dec, out = FrameDecoder(1 << 20), []
    while True:
        data = await asyncio.wait_for(reader.read(65536), WAIT)
        if not data:
            return out
        out += dec.feed(data)


# --- handshake and login ------------------------------------------------------------


async def test_hello_announces_version_group_and_limits(relay):
    conn = await relay.connect()
    ok = await conn.request(Hello, versions=(1,), client="test")
    assert ok.version == 1 and ok.group == "x25519" and ok.max_frame == relay.config.max_frame


async def test_unsupported_version_is_refused(relay):
    conn = await relay.connect()
    await expect_error(
        ErrorCode.UNSUPPORTED_VERSION, conn.request(Hello, versions=(99,), client="test")
    )


async def test_login_right_and_wrong(relay):
    ok = await (await relay.connect()).handshake("alice", relay.tokens["alice"])
    assert ok.user == "alice" and ok.has_identity is False
    wrong = await expect_error(
        ErrorCode.AUTH_FAILED, (await relay.connect()).handshake("bob", relay.tokens["alice"])
    )
    unknown = await expect_error(
        ErrorCode.AUTH_FAILED, (await relay.connect()).handshake("mallory", "hw_x")
    )
    assert wrong.message == unknown.message  # no hint which names exist


async def test_failed_logins_are_rate_limited_even_for_the_right_token(relay_factory):
    relay = await relay_factory(login_failures=3, login_failure_period=60)
    conn = await relay.connect()
    await conn.request(Hello, versions=(1,), client="t")
    for _ in range(3):
        await expect_error(ErrorCode.AUTH_FAILED, conn.request(Login, user="bob", token="hw_no"))
    err = await expect_error(
        ErrorCode.RATE_LIMITED, conn.request(Login, user="bob", token=relay.tokens["bob"])
    )
    assert err.retry_after and 0 < err.retry_after <= 60
    assert "retry in" in err.message


async def test_disabled_user_cannot_log_in_and_is_disconnected(relay):
    live = await relay.login("bob")
    async with await Store.open(relay.config.store_target) as admin:  # as hushwire-admin would
        await admin.set_disabled("bob", True, now=1)
    await asyncio.wait_for(live.wait_closed(), WAIT)
    assert live.closed_reason is not None and live.closed_reason.code == "user_disabled"
    await expect_error(ErrorCode.USER_DISABLED, relay.login("bob"))


async def test_second_login_replaces_the_first(relay):
    first = await relay.login("alice")
    second = await relay.login("alice")
    await asyncio.wait_for(first.wait_closed(), WAIT)
    assert first.closed_reason.code == "session_replaced"
    assert isinstance(await second.request(Ping), object)
    assert relay.server.relay.online["alice"] is not None


async def test_requests_out_of_order_get_errors_and_the_connection_survives(relay):
    conn = await relay.connect()
    raw = conn._writer  # send a request the client library would refuse to send
    raw.write(encode_frame(Send(id=99, to=("bob",), body=b"x").to_wire()))
    ok = await conn.request(Hello, versions=(1,), client="t")
    assert ok.version == 1
    await conn.request(Login, user="alice", token=relay.tokens["alice"])
    raw.write(encode_frame(Login(id=100, user="alice", token="t").to_wire()))
    await conn.request(Ping)  # still serving


async def test_pin_mismatch_is_refused(relay):
    from hushwire.client.connection import CertificateMismatch

    with pytest.raises(CertificateMismatch, match="different certificate"):
        await RelayConnection.connect("127.0.0.1", relay.port, TlsSettings(pin="AA:BB"))


# --- key directory -----------------------------------------------------------------


async def test_publish_and_concurrent_fetches_never_share_a_prekey(relay):
    bob = await relay.login("bob")
    ok = await bob.request(
        PublishKeys, identity=identity(2), signed_prekey=spk(2), one_time_prekeys=otpks(1, 10)
    )
    assert ok.prekeys_left == 10
    alice, carol = await relay.login("alice"), await relay.login("carol")
    replies = await asyncio.gather(
        *[c.request(FetchBundle, user="bob") for c in (alice, carol) for _ in range(6)]
    )
    ids = [r.bundle.one_time_prekey.id for r in replies if r.bundle.one_time_prekey]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert sum(r.bundle.one_time_prekey is None for r in replies) == 2
    assert all(
        r.bundle.identity == identity(2) and r.bundle.signed_prekey == spk(2) for r in replies
    )
    assert (await bob.request(PrekeyCount)).count == 0


async def test_fetch_errors(relay):
    alice = await relay.login("alice")
    await expect_error(ErrorCode.UNKNOWN_USER, alice.request(FetchBundle, user="zed"))
    await expect_error(ErrorCode.NO_KEYS, alice.request(FetchBundle, user="bob"))
    await expect_error(ErrorCode.BAD_REQUEST, alice.request(FetchBundle, user="Bad Name"))


async def test_bundle_fetches_are_rate_limited(relay_factory):
    relay = await relay_factory(fetch_burst=2, fetch_period=600)
    bob = await relay.login("bob")
    await bob.request(
        PublishKeys, identity=identity(2), signed_prekey=spk(2), one_time_prekeys=otpks(1, 10)
    )
    alice = await relay.login("alice")
    await alice.request(FetchBundle, user="bob")
    await alice.request(FetchBundle, user="bob")
    await expect_error(ErrorCode.RATE_LIMITED, alice.request(FetchBundle, user="bob"))
    assert (await bob.request(PrekeyCount)).count == 8  # the refused fetch took nothing


async def test_malformed_keys_are_refused(relay):
    bob = await relay.login("bob")
    bad = IdentityPublic("x25519", b"k" * 31, b"d" * 32, b"s" * 64)
    await expect_error(
        ErrorCode.BAD_KEYS,
        bob.request(PublishKeys, identity=bad, signed_prekey=None, one_time_prekeys=()),
    )
    wrong_group = IdentityPublic("ffdhe3072", b"k" * 32, b"d" * 384, b"s" * 64)
    await expect_error(
        ErrorCode.BAD_KEYS,
        bob.request(PublishKeys, identity=wrong_group, signed_prekey=None, one_time_prekeys=()),
    )
    await expect_error(
        ErrorCode.NO_KEYS,
        bob.request(PublishKeys, identity=None, signed_prekey=None, one_time_prekeys=otpks(1, 1)),
    )


async def test_identity_change_is_pushed_to_those_who_fetched_it(relay):
    bob = await relay.login("bob")
    await bob.request(
        PublishKeys, identity=identity(2), signed_prekey=spk(2), one_time_prekeys=otpks(1, 3)
    )
    alice, carol = await relay.login("alice"), await relay.login("carol")
    await alice.request(FetchBundle, user="bob")
    await bob.request(
        PublishKeys,
        identity=identity(9),
        signed_prekey=spk(9),
        one_time_prekeys=otpks(1, 3),
        replace_identity=True,
    )
    push = await next_push(alice, KeyChanged)
    assert push.user == "bob" and push.identity == identity(9)
    await carol.request(Ping)
    assert not any(isinstance(p, KeyChanged) for p in _drain(carol))


def _drain(conn):
    out = []
    while not conn.pushes.empty():
        out.append(conn.pushes.get_nowait())
    return out


# --- mailbox -----------------------------------------------------------------------


async def test_offline_envelopes_arrive_in_order_on_login_and_ack_deletes(relay):
    alice = await relay.login("alice")
    sent = [f"envelope {i}".encode() for i in range(30)]
    for body in sent:
        ok = await alice.request(Send, to=("bob",), body=body)
        assert ok.mids == ()  # ids are for the recipient only (docs/protocol.md, send)
    bob = await relay.login("bob")
    got = [await next_push(bob) for _ in sent]
    assert [d.body for d in got] == sent and all(d.sender == "alice" for d in got)
    ack = await bob.request(Ack, mids=tuple(d.mid for d in got))
    assert ack.deleted == 30
    await bob.close()
    bob2 = await relay.login("bob")
    await bob2.request(Ping)
    await asyncio.sleep(0)  # give a (wrong) redelivery its chance to show up
    assert not _drain(bob2)


async def _raw_bob(relay) -> RawClient:
    bob = await RawClient.connect(relay.port)
    assert (await bob.request({"t": "hello", "id": 1, "versions": [2], "client": "raw"}))[
        "t"
    ] == "ok"
    login = {"t": "login", "id": 2, "user": "bob", "token": relay.tokens["bob"], "device": None}
    assert (await bob.request(login))["t"] == "ok"
    return bob


async def _deliveries(raw: RawClient, n: int) -> list[dict]:
    got = []
    while len(got) < n:
        frame = await raw.recv()
        assert frame is not None
        if frame["t"] == "deliver":
            got.append(frame)
    return got


async def test_an_ack_without_an_id_deletes_and_gets_no_reply(relay):
    """Protocol v2: `ack` with a nil id spares the reply frame; it still deletes."""
    alice = await relay.login("alice")
    for body in (b"one", b"two"):
        await alice.request(Send, to=("bob",), body=body)
    bob = await _raw_bob(relay)
    got = await _deliveries(bob, 2)
    bob.send({"t": "ack", "id": None, "mids": [d["mid"] for d in got]})
    bob.send({"t": "ping", "id": 3})
    # The next frame is the pong: nothing answered the ack (and nothing was refused).
    assert await bob.recv() == {"t": "ok", "id": 3}
    bob.close()
    again = await relay.login("bob")
    await again.request(Ping)
    await asyncio.sleep(0)  # give a (wrong) redelivery its chance to show up
    assert not _drain(again)


async def test_a_failed_ack_without_an_id_closes_and_loses_nothing(relay):
    """It has no id to answer with, so the error is fatal; what it did not ack comes back."""
    alice = await relay.login("alice")
    await alice.request(Send, to=("bob",), body=b"kept")
    bob = await _raw_bob(relay)
    (got,) = await _deliveries(bob, 1)
    bob.send({"t": "ack", "id": None, "mids": [got["mid"]] * 1025})  # over MAX_ACK_IDS
    error = await bob.recv()
    assert (error["t"], error["id"], error["code"]) == ("error", None, "bad_request")
    assert await bob.recv() is None  # closed
    again = await relay.login("bob")
    assert (await next_push(again)).body == b"kept"


async def test_unacked_envelopes_are_redelivered_after_reconnect(relay):
    alice = await relay.login("alice")
    await alice.request(Send, to=("bob",), body=b"one")
    await alice.request(Send, to=("bob",), body=b"two")
    bob = await relay.login("bob")
    first = await next_push(bob)
    await bob.request(Ack, mids=(first.mid,))
    await next_push(bob)  # "two" arrives but is never acked
    await bob.close()
    bob = await relay.login("bob")
    again = await next_push(bob)
    assert again.body == b"two"


async def test_online_recipient_gets_envelopes_at_once(relay):
    alice, bob = await relay.login("alice"), await relay.login("bob")
    await alice.request(Send, to=("bob", "carol"), body=b"hi")
    d = await next_push(bob)
    assert (d.sender, d.body) == ("alice", b"hi")
    carol = await relay.login("carol")
    assert (await next_push(carol)).body == b"hi"


async def test_pipelined_sends_keep_their_order(relay):
    alice, bob = await relay.login("alice"), await relay.login("bob")
    bodies = [str(i).encode() for i in range(100)]
    await asyncio.gather(*[alice.request(Send, to=("bob",), body=b) for b in bodies])
    got = []
    while len(got) < len(bodies):
        d = await next_push(bob)
        got.append(d.body)
        await bob.request(Ack, mids=(d.mid,))
    assert got == bodies


async def test_delivery_window_bounds_unacked_pushes(relay_factory):
    relay = await relay_factory(delivery_window=4)
    alice = await relay.login("alice")
    for i in range(10):
        await alice.request(Send, to=("bob",), body=bytes([i]))
    bob = await relay.login("bob")
    first = [await next_push(bob) for _ in range(4)]
    await bob.request(Ping)
    assert not _drain(bob)  # nothing past the window until acks
    await bob.request(Ack, mids=tuple(d.mid for d in first))
    rest = []
    for _ in range(6):
        rest.append(await next_push(bob))
        await bob.request(Ack, mids=(rest[-1].mid,))
    assert [d.body[0] for d in first + rest] == list(range(10))


async def test_mailbox_limit_and_unknown_recipient(relay_factory):
    relay = await relay_factory(max_mailbox=3)
    alice = await relay.login("alice")
    for _ in range(3):
        await alice.request(Send, to=("bob",), body=b"x")
    err = await expect_error(ErrorCode.MAILBOX_FULL, alice.request(Send, to=("bob",), body=b"x"))
    assert "bob" in err.message
    await expect_error(ErrorCode.UNKNOWN_USER, alice.request(Send, to=("zed",), body=b"x"))
    # all or nothing: carol gets nothing from a send that bob's full mailbox refused
    await expect_error(ErrorCode.MAILBOX_FULL, alice.request(Send, to=("carol", "bob"), body=b"x"))
    carol = await relay.login("carol")
    await carol.request(Ping)
    assert not _drain(carol)


async def test_a_recipient_named_twice_is_refused_not_merged(relay):
    alice = await relay.login("alice")
    err = await expect_error(
        ErrorCode.BAD_REQUEST, alice.request(Send, to=("bob", "bob"), body=b"x")
    )
    assert "twice" in err.message
    bob = await relay.login("bob")
    await bob.request(Ping)
    assert not _drain(bob)  # nothing was queued


async def test_omitted_fields_are_bad_frame_even_when_nil_is_allowed(relay):
    """protocol.md, Fields: every field is present; `T?` only allows nil as its value."""
    reader, writer = await raw_tls(relay)
    writer.write(encode_frame({"t": "hello", "id": 1, "versions": [1]}))  # no `client`
    writer.write(encode_frame(Hello(id=2, versions=(1,), client="raw").to_wire()))
    dec, frames = FrameDecoder(), []
    while len(frames) < 2:
        frames += dec.feed(await asyncio.wait_for(reader.read(65536), WAIT))
    assert (frames[0]["t"], frames[0]["id"], frames[0]["code"]) == ("error", 1, "bad_frame")
    assert (frames[1]["t"], frames[1]["id"]) == ("ok", 2)
    writer.close()


async def test_send_rate_limit(relay_factory):
    relay = await relay_factory(send_burst=5, send_rate=0.01)
    alice = await relay.login("alice")
    for _ in range(5):
        await alice.request(Send, to=("bob",), body=b"x")
    err = await expect_error(ErrorCode.RATE_LIMITED, alice.request(Send, to=("bob",), body=b"x"))
    assert err.retry_after > 0


async def test_spending_reported_by_another_relay_is_charged_and_bad_reports_are_not(
    relay_factory,
):
    """Another relay's report of alice's sends (relay/shared_limits.py) empties her
    bucket here; a malformed report is refused whole and charges nothing."""
    relay = await relay_factory(send_burst=5, send_rate=0.01, fetch_burst=5)
    alice = await relay.login("alice")
    here = relay.server.relay
    now = time.time()
    bad_reports = (
        {"send": {"alice": 4, "bob": float("nan")}},
        {"send": {"alice": 4, "bob": -4}},
        {"send": {"alice": 4}, "fetch": [1]},
        [1],
    )
    for bad in bad_reports:
        with pytest.raises((TypeError, ValueError)):
            here.charge(bad, now)  # type: ignore[arg-type]
    here.charge({"send": {"alice": 4}, "newer_limit": {"alice": 9}}, now)
    await alice.request(Send, to=("bob",), body=b"x")  # 5 - 4: one left
    err = await expect_error(ErrorCode.RATE_LIMITED, alice.request(Send, to=("bob",), body=b"x"))
    assert err.retry_after > 0
    here.charge({"fetch": {"alice": 5}}, now)
    await expect_error(ErrorCode.RATE_LIMITED, alice.request(FetchBundle, user="bob"))


async def test_who_and_presence_only_between_contacts(relay):
    bob = await relay.login("bob")
    await bob.request(
        PublishKeys, identity=identity(2), signed_prekey=spk(2), one_time_prekeys=otpks(1, 3)
    )
    await bob.close()
    alice = await relay.login("alice")
    await alice.request(FetchBundle, user="bob")  # alice and bob are contacts now
    who = await alice.request(Who)
    assert {(p.user, p.online) for p in who.users} == {
        ("alice", True),
        ("bob", False),
        ("carol", False),
    }
    carol = await relay.login("carol")
    await carol.request(Who)
    bob = await relay.login("bob")
    push = await next_push(alice, PresenceChanged)
    assert (push.user, push.online) == ("bob", True)
    await bob.close()
    push = await next_push(alice, PresenceChanged)
    assert (push.user, push.online) == ("bob", False)
    # carol, a stranger to both, saw none of it and sees alice as offline.
    assert not any(isinstance(p, PresenceChanged) for p in carol.pushes._queue)
    who = await carol.request(Who)
    assert ("alice", False) in {(p.user, p.online) for p in who.users}


# --- hostile and broken clients ----------------------------------------------------


async def test_oversized_frame_is_answered_and_closed_and_others_still_served(relay):
    reader, writer = await raw_tls(relay)
    writer.write(struct.pack(">I", relay.config.max_frame + 1) + b"x" * 100)
    frames = await read_frames_until_eof(reader)
    assert frames[-1]["t"] == "error" and frames[-1]["code"] == "frame_too_large"
    alice = await relay.login("alice")
    await alice.request(Ping)


async def test_malformed_msgpack_is_answered_and_closed(relay):
    reader, writer = await raw_tls(relay)
    writer.write(struct.pack(">I", 1) + b"\xc1")
    frames = await read_frames_until_eof(reader)
    assert frames[-1]["code"] == "bad_frame"


async def test_well_framed_bad_request_gets_its_id_back(relay):
    reader, writer = await raw_tls(relay)
    writer.write(encode_frame({"t": "hello", "id": 5, "versions": "1"}))
    writer.write(encode_frame({"t": "nonsense", "id": 6}))
    writer.write(encode_frame(Hello(id=7, versions=(1,), client="raw").to_wire()))
    dec, frames = FrameDecoder(), []
    while len(frames) < 3:
        frames += dec.feed(await asyncio.wait_for(reader.read(65536), WAIT))
    assert [(f["t"], f["id"]) for f in frames] == [("error", 5), ("error", 6), ("ok", 7)]
    writer.close()


async def test_disconnect_mid_frame_leaves_the_relay_serving(relay):
    _, writer = await raw_tls(relay)
    writer.write(encode_frame(Hello(id=1, versions=(1,), client="x").to_wire())[:-3])
    await writer.drain()
    writer.close()
    alice = await relay.login("alice")
    await alice.request(Ping)


async def test_deeply_nested_msgpack_is_rejected(relay):
    reader, writer = await raw_tls(relay)
    payload = b"\x81\xa1t\xa4ping" + b"\x91" * 5000 + b"\xc0"
    writer.write(struct.pack(">I", len(payload)) + payload)
    frames = await read_frames_until_eof(reader)
    assert frames[-1]["code"] == "bad_frame"


async def test_idle_timeout(relay_factory):
    relay = await relay_factory(idle_timeout=0.5)
    alice = await relay.login("alice")
    await asyncio.wait_for(alice.wait_closed(), WAIT)
    assert alice.closed_reason.code == "idle_timeout"


async def test_pings_keep_a_connection_alive(relay_factory):
    relay = await relay_factory(idle_timeout=0.6)
    alice = await relay.login("alice")
    for _ in range(6):
        await asyncio.sleep(0.2)
        await alice.request(Ping)
    assert not alice.is_closed


async def test_handshake_timeout(relay_factory):
    relay = await relay_factory(handshake_timeout=0.5)
    conn = await relay.connect()
    await conn.request(Hello, versions=(1,), client="slow")  # but never logs in
    await asyncio.wait_for(conn.wait_closed(), WAIT)
    assert conn.closed_reason.code == "handshake_timeout"


async def test_a_client_that_never_reads_cannot_make_the_relay_buffer_without_bound(
    relay_factory,
):
    relay = await relay_factory(delivery_window=64, send_burst=10_000, send_rate=10_000)
    _reader, writer = await raw_tls(relay)  # bob, who will never read again
    writer.write(encode_frame(Hello(id=1, versions=(1,), client="x").to_wire()))
    writer.write(encode_frame(Login(id=2, user="bob", token=relay.tokens["bob"]).to_wire()))
    await writer.drain()
    alice = await relay.login("alice")
    body = b"z" * 4000
    for _ in range(50):
        await asyncio.gather(*[alice.request(Send, to=("bob",), body=body) for _ in range(20)])
    (bob_conn,) = [c for c in relay.server.connections if c.user == "bob"]
    queued = bob_conn._out_bytes + bob_conn.transport.get_write_buffer_size()
    assert len(bob_conn._inflight) <= 64
    assert queued <= 64 * (len(body) + 200) + 1024 * 1024
    await alice.request(Ping)  # others unaffected
    writer.close()


async def test_connection_closed_error_for_requests_after_close(relay):
    alice = await relay.login("alice")
    await alice.close()
    with pytest.raises(ConnectionClosed):
        await alice.request(Ping)


async def test_frames_after_close_are_not_read(relay):
    reader, writer = await raw_tls(relay)
    writer.write(struct.pack(">I", 1) + b"\xc1" + encode_frame({"t": "hello", "id": 1}))
    frames = await read_frames_until_eof(reader)
    assert len(frames) == 1
    assert msgpack.packb(frames[0])  # a single error frame, then EOF


# --- mutual TLS --------------------------------------------------------------------


async def test_mutual_tls_requires_a_certificate_for_that_user(relay_factory, tmp_path):
    from hushwire.relay.tls import ensure_ca, issue_client_cert

    ca_dir = tmp_path / "ca"
    ca_cert, _ = ensure_ca(ca_dir)
    alice_cert, alice_key = issue_client_cert(ca_dir, "alice", tmp_path / "certs")
    relay = await relay_factory(client_ca=ca_cert)
    pin = relay.server.fingerprint

    with pytest.raises(ConnectionClosed):  # no client certificate: the handshake fails
        conn = await RelayConnection.connect("127.0.0.1", relay.port, TlsSettings(pin=pin))
        await conn.handshake("alice", relay.tokens["alice"])

    tls = TlsSettings(pin=pin, client_cert=alice_cert, client_key=alice_key)
    conn = await RelayConnection.connect("127.0.0.1", relay.port, tls)
    assert (await conn.handshake("alice", relay.tokens["alice"])).user == "alice"
    await conn.close()

    conn = await RelayConnection.connect("127.0.0.1", relay.port, tls)
    err = await expect_error(ErrorCode.AUTH_FAILED, conn.handshake("bob", relay.tokens["bob"]))
    assert "certificate" in err.message
    await conn.close()


async def test_given_certificate_is_used(relay_factory, tmp_path):
    from hushwire.relay.tls import ensure_server_cert, fingerprint

    cert, key = tmp_path / "mine-cert.pem", tmp_path / "mine-key.pem"
    ensure_server_cert(cert, key, ["relay.example"])
    relay = await relay_factory(cert=cert, key=key)
    assert relay.server.fingerprint == fingerprint(cert)
    conn = await relay.connect()
    assert conn.fingerprint == fingerprint(cert)


async def test_custom_dh_group_is_announced_and_enforced(relay_factory):
    from pathlib import Path

    from hushwire.common.crypto.dh import load_pem

    pem_file = Path(__file__).parents[1] / "common" / "crypto" / "data" / "dh2048.pem"
    relay = await relay_factory(dh_params=pem_file)
    conn = await relay.connect()
    ok = await conn.request(Hello, versions=(1,), client="t")
    group = load_pem(ok.group_params)  # validated by the client, as protocol.md says
    assert ok.group == group.name and ok.group.startswith("ffdh2048-")
    await conn.request(Login, user="bob", token=relay.tokens["bob"])
    x25519_sized = IdentityPublic(ok.group, b"k" * 32, b"d" * 32, b"s" * 64)
    await expect_error(
        ErrorCode.BAD_KEYS,
        conn.request(PublishKeys, identity=x25519_sized, signed_prekey=None, one_time_prekeys=()),
    )
    right = IdentityPublic(ok.group, b"k" * 32, b"d" * group.public_size, b"s" * 64)
    await conn.request(PublishKeys, identity=right, signed_prekey=None, one_time_prekeys=())


async def test_ffdhe3072_relay(relay_factory):
    relay = await relay_factory(dh_group="ffdhe3072")
    ok = await (await relay.connect()).request(Hello, versions=(1,), client="t")
    assert (ok.group, ok.group_params) == ("ffdhe3072", None)


async def test_unknown_dh_group_is_a_config_error(relay_factory, tmp_path):
    from hushwire.relay.config import ConfigError

    with pytest.raises(ConfigError, match="unknown dh_group"):
        await relay_factory(dh_group="curve9000")
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN DH PARAMETERS-----\nAAAA\n-----END DH PARAMETERS-----\n")
    with pytest.raises(ConfigError, match=r"bad\.pem"):
        await relay_factory(dh_params=bad, db=tmp_path / "other.db")


async def test_a_watcher_offline_during_a_key_change_hears_of_it_at_login(relay):
    bob = await relay.login("bob")
    await bob.request(
        PublishKeys, identity=identity(2), signed_prekey=spk(2), one_time_prekeys=otpks(1, 3)
    )
    alice = await relay.login("alice")
    await alice.request(FetchBundle, user="bob")
    await alice.close()
    await bob.request(
        PublishKeys,
        identity=identity(7),
        signed_prekey=spk(7),
        one_time_prekeys=otpks(1, 3),
        replace_identity=True,
    )
    for _ in range(2):  # at every login, until alice looks at bob's new keys
        alice = await relay.login("alice")
        push = await next_push(alice, KeyChanged)
        assert (push.user, push.identity) == ("bob", identity(7))
        await alice.close()
    alice = await relay.login("alice")
    await alice.request(FetchBundle, user="bob")
    await alice.close()
    alice = await relay.login("alice")
    await alice.request(Ping)
    assert not any(isinstance(p, KeyChanged) for p in _drain(alice))
