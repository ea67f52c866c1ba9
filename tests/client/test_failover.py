"""Several relay addresses in one profile: try them in order, fail over on what says
nothing about who answers (refused, broken TLS, a dropped session), never on a
certificate that is not the pinned one (client/failover.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hushwire.client.errors import (
    CertificateMismatch,
    ClientError,
    ConnectionClosed,
    ProfileCorrupt,
)
from hushwire.client.service import (
    ConnectionState,
    HushwireClient,
    MessageReceived,
    RelaySettings,
    parse_relays,
)
from hushwire.client.store import ProfileStore
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.messages import Login
from tests.e2e.helpers import FAST_BACKOFF, FAST_KDF, PASSPHRASE, WAIT, drain, next_event
from tests.services import free_port
from tests.support import Cutter, Dropper, add_users

LOCAL = "127.0.0.1"


@pytest.fixture
async def cutters():
    made: list[Cutter] = []

    async def make(port: int) -> Cutter:
        made.append(await Cutter(port).start())
        return made[-1]

    yield make
    for c in made:
        await c.cut()


def settings(user: str, token: str, *ports: int, **extra) -> RelaySettings:
    first, *more = ports
    return RelaySettings(
        LOCAL, first, user, token, alternates=tuple((LOCAL, p) for p in more), **extra
    )


async def login_with(profile: Path, s: RelaySettings, **kwargs) -> HushwireClient:
    return await HushwireClient.login(
        profile, PASSPHRASE, s, kdf=FAST_KDF, backoff=FAST_BACKOFF, **kwargs
    )


def test_relay_lists_parse_or_name_the_bad_entry():
    assert parse_relays("a:7443, b.example:7444,[::1]:7445") == (
        ("a", 7443),
        ("b.example", 7444),
        ("::1", 7445),
    )
    for bad, fragment in (
        ("a:7443,", "got ''"),
        ("a:7443,b", "got 'b'"),
        ("a:0", "got 'a:0'"),
        ("a:7443,a:7443", "listed twice"),
        ("a:7443;b:7443", "got 'a:7443;b:7443'"),
        ("::1:7443", r"\[brackets\]"),
        (",".join(f"h{i}:1" for i in range(17)), "at most 16"),
    ):
        with pytest.raises(ClientError, match=fragment):
            parse_relays(bad)


def test_the_stored_record_keeps_the_list_and_a_one_relay_profile_stays_as_before():
    one = RelaySettings("a", 7443, "alice", "hw_t")
    assert "alternates" not in one.to_record()  # what an older hushwire can still read
    assert RelaySettings.from_record(one.to_record()) == one
    many = RelaySettings("a", 7443, "alice", "hw_t", alternates=(("b", 7444), ("::1", 7445)))
    assert RelaySettings.from_record(many.to_record()) == many
    assert many.relays == "a:7443,b:7444,[::1]:7445"
    for bad in ([["b"]], [["b", "x"]], "b:7444", [None]):
        with pytest.raises(ProfileCorrupt):
            RelaySettings.from_record({**one.to_record(), "alternates": bad})


async def test_login_passes_a_dead_and_a_broken_relay_and_next_time_starts_where_it_worked(
    relay, tmp_path
):
    dead = free_port()  # nothing listens: refused
    broken = await Dropper().start()  # accepts, then the TLS handshake breaks
    try:
        s = settings("alice", relay.tokens["alice"], dead, broken.port, relay.port)
        client = await login_with(tmp_path / "p", s)
        assert client.relay == f"{LOCAL}:{relay.port}" and broken.accepted == 1
        assert client.relays == f"{LOCAL}:{dead},{LOCAL}:{broken.port},{LOCAL}:{relay.port}"
        assert client.settings.pin == relay.server.fingerprint
        await client.close()
        again = await HushwireClient.open(tmp_path / "p", PASSPHRASE, backoff=FAST_BACKOFF)
        assert again.settings.addresses == s.addresses  # the profile keeps the list
        assert again.relay == f"{LOCAL}:{relay.port}"
        await again.start()
        assert again.state == "connected" and broken.accepted == 1  # not tried again
        await again.close()
    finally:
        await broken.close()


async def test_every_relay_down_is_one_error_naming_each(tmp_path):
    a, b = free_port(), free_port()
    with pytest.raises(ConnectionClosed) as err:
        await login_with(tmp_path / "p", settings("alice", "hw_x", a, b))
    assert err.value.message.startswith(f"could not reach any of {LOCAL}:{a}, {LOCAL}:{b} (")
    assert f"cannot connect to {LOCAL}:{a}" in err.value.message
    assert f"cannot connect to {LOCAL}:{b}" in err.value.message
    assert not ProfileStore.exists(tmp_path / "p")
    # One address: its own error, as before there were lists.
    with pytest.raises(ConnectionClosed, match=rf"^cannot connect to {LOCAL}:{a}: "):
        await login_with(tmp_path / "p", settings("alice", "hw_x", a))


async def test_a_dropped_session_fails_over_at_once_and_the_mailbox_resumes(
    relay, login, cutters, tmp_path
):
    front = await cutters(relay.port)  # address a; address b is the relay itself
    bob = await login_with(
        tmp_path / "bob", settings("bob", relay.tokens["bob"], front.port, relay.port)
    )
    try:
        assert bob.relay == f"{LOCAL}:{front.port}"
        alice = await login(relay, "alice")
        await alice.send("bob", "before")
        got = await next_event(bob, MessageReceived)
        assert got.text == "before"
        # sync() in flight when the session drops waits the failover out instead of
        # failing on the dropped connection.
        syncing = asyncio.create_task(bob.sync())
        await asyncio.sleep(0)  # its ping is on the wire through front
        await front.cut()
        await alice.send("bob", "while failing over")  # queued at the relay meanwhile
        await asyncio.wait_for(syncing, WAIT)
        seen: list[object] = []
        async with asyncio.timeout(WAIT):
            while not any(isinstance(e, MessageReceived) for e in seen):
                seen.append(await bob.events.get())
        states = [e for e in seen if isinstance(e, ConnectionState)]
        assert states[0].state == "reconnecting" and states[0].failover
        assert f"trying {LOCAL}:{relay.port}" in states[0].detail
        assert any(e.state == "connected" for e in states)
        texts = [e.text for e in seen if isinstance(e, MessageReceived)]
        assert texts == ["while failing over"]  # resumed, nothing shown twice
        assert bob.relay == f"{LOCAL}:{relay.port}"
        await alice.send("bob", "after")
        assert (await next_event(bob, MessageReceived)).text == "after"
    finally:
        await bob.close()


async def test_a_different_certificate_on_the_next_address_is_refused_not_skipped(
    relay, relay_factory, cutters, tmp_path
):
    (tmp_path / "other").mkdir()
    other = await relay_factory(db=tmp_path / "other" / "relay.db")  # its own certificate
    assert other.server.fingerprint != relay.server.fingerprint
    front = await cutters(relay.port)
    s = settings("alice", relay.tokens["alice"], front.port, other.port, relay.port)
    alice = await login_with(tmp_path / "alice", s)  # pins the certificate front passes on
    try:
        await front.cut()
        event = await next_event(alice, ConnectionState, lambda e: e.state == "disconnected")
        assert "different certificate" in event.detail and f"{LOCAL}:{other.port}" in event.detail
        assert alice.state == "disconnected"  # stopped there: the third address is not tried
        assert alice.relay == f"{LOCAL}:{front.port}"
    finally:
        await alice.close()
    again = await HushwireClient.open(tmp_path / "alice", PASSPHRASE, backoff=FAST_BACKOFF)
    try:
        with pytest.raises(CertificateMismatch, match=str(other.port)):
            await again.start()
    finally:
        await again.close()


async def test_with_a_ca_a_certificate_it_does_not_validate_is_refused_not_skipped(
    relay, relay_factory, tmp_path
):
    (tmp_path / "other").mkdir()
    other = await relay_factory(db=tmp_path / "other" / "relay.db")
    ca = str(relay.config.cert_path)  # the self-signed certificate is its own CA
    dead = free_port()
    alice = await login_with(
        tmp_path / "alice", settings("alice", relay.tokens["alice"], dead, relay.port, ca_file=ca)
    )
    assert alice.relay == f"{LOCAL}:{relay.port}" and alice.settings.pin is None
    await alice.close()
    with pytest.raises(CertificateMismatch, match="does not validate"):
        await login_with(
            tmp_path / "bob",
            settings("bob", relay.tokens["bob"], other.port, relay.port, ca_file=ca),
        )


async def test_a_relay_that_cannot_serve_now_is_passed_over_a_refusal_is_not(
    relay, relay_factory, tmp_path
):
    (tmp_path / "sick").mkdir()
    # Another relay of the deployment (same certificate) whose database link is down.
    sick = await relay_factory(
        db=tmp_path / "sick" / "relay.db",
        cert=relay.config.cert_path,
        key=relay.config.key_path,
    )

    async def database_down(peer, req, now):
        raise RequestError(ErrorCode.INTERNAL, "database error: connection refused")

    sick.server.relay._dispatch[Login] = database_down
    s = settings("alice", relay.tokens["alice"], sick.port, relay.port)
    alice = await login_with(tmp_path / "alice", s)
    assert alice.relay == f"{LOCAL}:{relay.port}"
    await alice.close()
    # A wrong token is the deployment's answer: not tried elsewhere.
    with pytest.raises(RequestError) as refused:
        await login_with(tmp_path / "bob", settings("bob", "hw_wrong", relay.port, sick.port))
    assert refused.value.code is ErrorCode.AUTH_FAILED


async def test_a_client_fails_over_between_relays_on_one_postgresql(
    daemons, pg_url, redis_server, tmp_path
):
    """Two relay processes on one PostgreSQL with the Redis bus, one certificate: bob's
    relay is SIGKILLed and bob carries on through the other; nothing lost or doubled."""
    tokens = await add_users(pg_url, ("alice", "bob"))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    relays = []
    for i in range(2):
        home = tmp_path / f"relay{i}"
        home.mkdir()
        relays.append(
            await daemons(
                home / "relay.db",
                *("--store", pg_url, "--bus", redis_server.url()),
                *("--cert", str(cert), "--key", str(key)),
            )
        )
    assert relays[0].fingerprint == relays[1].fingerprint
    first, second = relays[0].port, relays[1].port
    bob = await login_with(tmp_path / "bob", settings("bob", tokens["bob"], first, second))
    alice = await login_with(tmp_path / "alice", settings("alice", tokens["alice"], second))
    try:
        await alice.send("bob", "across relays")
        assert (await next_event(bob, MessageReceived)).text == "across relays"
        relays[0].proc.kill()  # SIGKILL: bob's relay is gone mid-session
        await alice.send("bob", "after the kill")
        got = await next_event(bob, MessageReceived)
        assert got.text == "after the kill" and bob.relay == f"{LOCAL}:{second}"
        await bob.send("alice", "still here")
        assert (await next_event(alice, MessageReceived)).text == "still here"
        await asyncio.wait_for(bob.sync(), WAIT)
        assert not any(isinstance(e, MessageReceived) for e in drain(bob))  # no duplicate
    finally:
        await bob.close()
        await alice.close()
