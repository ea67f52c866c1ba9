"""Resource attacks: each is bounded by a limit with a clear error, and others still chat."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import statistics
import time

import pytest

from hushwire.client.connection import RelayConnection
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.frames import encode_frame
from hushwire.common.keys import IdentityPublic, OneTimePrekey, SignedPrekey
from hushwire.common.messages import (
    Ack,
    Deliver,
    FetchBundle,
    Hello,
    Login,
    PrekeyCount,
    PublishKeys,
    Send,
)
from hushwire.relay.tokens import DUMMY, hash_token, new_salt, verify_token
from tests.support import WAIT


async def round_trips(
    sender: RelayConnection, receiver: RelayConnection, to: str, n: int
) -> list[float]:
    """Latency of n send -> deliver -> ack round trips, in seconds."""
    out = []
    for i in range(n):
        body = b"ping %d" % i
        t0 = time.perf_counter()
        await sender.request(Send, to=(to,), body=body)
        while True:
            push = await asyncio.wait_for(receiver.pushes.get(), WAIT)
            if isinstance(push, Deliver) and push.body == body:
                break
        out.append(time.perf_counter() - t0)
        await receiver.request(Ack, mids=(push.mid,))
    return out


def ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100) if len(values) > 1 else values * 99
    return f"p50 {statistics.median(values) * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms"


def _net(i: int) -> str:
    """A loopback source address: 100 per /24 network (127.0.10.x, 127.0.11.x, ...)."""
    return f"127.0.{10 + i // 100}.{1 + i % 100}"


async def test_slowloris_connections_are_reaped_and_others_unaffected(relay_factory, figures):
    relay = await relay_factory(handshake_timeout=1.0)
    alice, bob = await relay.login("alice"), await relay.login("bob")
    baseline = await round_trips(alice, bob, "bob", 30)

    # 300 that never start TLS, 300 that finish TLS but never say hello, each 100 from
    # one of 6 /24 networks (one network may have only 128 handshakes in progress).
    raw = []
    for i in range(300):
        s = socket.create_connection(("127.0.0.1", relay.port), source_address=(_net(i), 0))
        s.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        raw.append(s)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    silent = await asyncio.gather(
        *[
            asyncio.open_connection("127.0.0.1", relay.port, ssl=ctx, local_addr=(_net(300 + i), 0))
            for i in range(300)
        ]
    )
    during = await round_trips(alice, bob, "bob", 30)

    async def closed_by_relay(reader: asyncio.StreamReader) -> bool:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while await asyncio.wait_for(reader.read(65536), WAIT):
                pass
        return True

    reaped = await asyncio.gather(*[closed_by_relay(r) for r, _ in silent])
    loop = asyncio.get_running_loop()

    def tcp_reaped(s: socket.socket) -> bool:
        s.settimeout(WAIT)
        try:
            return s.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True
        finally:
            s.close()

    tcp = await asyncio.gather(*[loop.run_in_executor(None, tcp_reaped, s) for s in raw])
    for _, w in silent:
        w.transport.abort()
    assert all(reaped) and all(tcp)
    await asyncio.sleep(0)
    assert len(relay.server.connections) == 2  # only alice and bob remain
    figures.add(
        "300 connections stuck in the TLS handshake + 300 silent after TLS (handshake timeout 1 s)",
        f"all 600 closed by the relay; alice->bob before {ms(baseline)}, during {ms(during)}",
    )


async def test_mailbox_flood_is_bounded_and_other_mail_flows(relay_factory, figures):
    relay = await relay_factory(
        max_mailbox=500,
        send_burst=100_000,
        send_rate=100_000,
        users=("alice", "bob", "carol", "mallory"),
    )
    mallory = await relay.login("mallory")
    sent = refused = 0
    for _ in range(30):
        results = await asyncio.gather(
            *[mallory.request(Send, to=("bob",), body=b"spam" * 50) for _ in range(25)],
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, RequestError):
                assert r.code == ErrorCode.MAILBOX_FULL and "bob" in r.message
                refused += 1
            else:
                sent += 1
    assert sent == 500 and refused == 250
    carol, alice = await relay.login("carol"), await relay.login("alice")
    during = await round_trips(carol, alice, "alice", 30)
    figures.add(
        "750 envelopes flooded at bob's mailbox (limit 500)",
        f"500 queued, 250 refused with mailbox_full; carol->alice {ms(during)}",
    )


async def test_a_sender_flood_is_rate_limited(relay_factory, figures):
    relay = await relay_factory(users=("alice", "bob", "carol", "mallory"))
    mallory = await relay.login("mallory")
    results = await asyncio.gather(
        *[mallory.request(Send, to=("bob",), body=b"x") for _ in range(500)], return_exceptions=True
    )
    limited = [r for r in results if isinstance(r, RequestError)]
    assert all(r.code == ErrorCode.RATE_LIMITED and r.retry_after > 0 for r in limited)
    accepted = len(results) - len(limited)
    assert accepted <= relay.config.send_burst + relay.config.send_rate * 5  # generous
    carol, alice = await relay.login("carol"), await relay.login("alice")
    during = await round_trips(carol, alice, "alice", 20)
    figures.add(
        "500 sends at once from one sender (default 120 at once, 60/s)",
        f"{accepted} accepted, {len(limited)} rate_limited with retry_after; "
        f"carol->alice {ms(during)}",
    )


async def test_prekey_draining_is_rate_limited(relay_factory, figures):
    relay = await relay_factory(users=("bob", "mallory"))
    bob = await relay.login("bob")
    ident = IdentityPublic("x25519", b"s" * 32, b"d" * 32, b"g" * 64)
    await bob.request(
        PublishKeys,
        identity=ident,
        signed_prekey=SignedPrekey(1, b"p" * 32, b"q" * 64),
        one_time_prekeys=tuple(OneTimePrekey(i, i.to_bytes(32, "big")) for i in range(100)),
    )
    mallory = await relay.login("mallory")
    ok = limited = 0
    for _ in range(100):
        try:
            await mallory.request(FetchBundle, user="bob")
            ok += 1
        except RequestError as exc:
            assert exc.code == ErrorCode.RATE_LIMITED
            limited += 1
    left = (await bob.request(PrekeyCount)).count
    assert ok <= relay.config.fetch_burst + 2 and left >= 100 - ok
    figures.add(
        "100 bundle fetches of bob's keys by one user, back to back",
        f"{ok} served, {limited} rate_limited; bob keeps {left}/100 one-time prekeys",
    )


async def test_token_brute_force_is_rate_limited(relay_factory, figures):
    relay = await relay_factory(users=("alice", "bob"))
    outcomes: dict[str, int] = {}
    conn = None
    for i in range(200):
        if i % 10 == 0:  # a connection may make only 16 requests before it logs in
            conn = await relay.connect()
            await conn.request(Hello, versions=(1,), client="brute")
        try:
            await conn.request(Login, user="bob", token=f"hw_guess_{i}")
        except RequestError as exc:
            outcomes[exc.code] = outcomes.get(exc.code, 0) + 1
    assert outcomes == {"auth_failed": 5, "rate_limited": 195}
    with pytest.raises(RequestError) as exc:  # from this network, unchecked while limited
        await conn.request(Login, user="bob", token=relay.tokens["bob"])
    assert exc.value.code == ErrorCode.RATE_LIMITED
    # Another user from the same address is not: failures count per (user, prefix).
    await conn.request(Login, user="alice", token=relay.tokens["alice"])
    figures.add(
        "200 token guesses for bob from one address",
        "5 checked (auth_failed), 195 refused unchecked (rate_limited); from that /24 the "
        "right token for bob is refused too until the window passes, alice is not",
    )


def test_token_check_timing_does_not_depend_on_the_guess(figures):
    """Wrong tokens that share a long prefix with the right one take no longer to refuse.

    The comparison is over HMAC outputs with hmac.compare_digest, so there is no prefix
    to find; this measures it: interleaved medians must agree within a generous margin.
    """
    salt = new_salt()
    token = "hw_" + "A" * 43
    stored = hash_token(token, salt)
    guesses = {
        "right": token,
        "same prefix, last char wrong": token[:-1] + "B",
        "first char wrong": "B" + token[1:],
        "unknown user (dummy)": token,
    }
    samples: dict[str, list[float]] = {k: [] for k in guesses}
    for _ in range(3000):
        for name, guess in guesses.items():
            s, h = DUMMY if name.startswith("unknown") else (salt, stored)
            t0 = time.perf_counter_ns()
            verify_token(guess, s, h)
            samples[name].append(time.perf_counter_ns() - t0)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    base = medians["right"]
    assert all(0.7 < med / base < 1.4 for med in medians.values()), medians
    figures.add(
        "token check timing, 3000 interleaved samples each",
        ", ".join(f"{k}: {v / 1000:.2f} us" for k, v in medians.items()),
    )


def test_verify_token_really_uses_compare_digest(monkeypatch):
    """The margin above could hide a short-circuit compare; pin the mechanism too."""
    import hushwire.relay.tokens as tokens

    calls = []
    real = tokens.hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    salt = new_salt()
    assert not tokens.verify_token("hw_wrong", salt, hash_token("hw_right", salt))
    assert calls == [(32, 32)]


async def test_a_client_that_never_reads_does_not_hurt_others(relay_factory, figures):
    relay = await relay_factory(
        send_burst=100_000, send_rate=100_000, users=("alice", "bob", "carol", "mallory")
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    _, w = await asyncio.open_connection("127.0.0.1", relay.port, ssl=ctx)
    w.write(encode_frame(Hello(id=1, versions=(1,), client="x").to_wire()))
    w.write(encode_frame(Login(id=2, user="mallory", token=relay.tokens["mallory"]).to_wire()))
    for i in range(2000):  # requests whose replies mallory never reads
        w.write(encode_frame({"t": "who", "id": 3 + i}))
    await w.drain()
    alice = await relay.login("alice")
    for _ in range(20):
        await asyncio.gather(
            *[alice.request(Send, to=("mallory",), body=b"m" * 3000) for _ in range(25)]
        )
    carol = await relay.login("carol")
    during = await round_trips(carol, alice, "alice", 20)
    (conn,) = [c for c in relay.server.connections if c.user == "mallory"]
    buffered = conn._out_bytes + conn.transport.get_write_buffer_size()
    assert buffered < 4 * 1024 * 1024
    figures.add(
        "a logged-in client that never reads: 2000 pipelined requests + 500 "
        "envelopes of 3 KB pushed at it",
        f"relay buffers {buffered // 1024} KiB for it (bounded); carol->alice {ms(during)}",
    )
    w.transport.abort()
