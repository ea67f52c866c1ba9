"""PROXY protocol v2 from trusted load balancers: the client's address it names is the
one limits and logs see; a trusted proxy's connection without a valid header is
refused; everyone else is served directly, as before."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import struct

import pytest

from hushwire.client.connection import RelayConnection
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.relay import proxy_protocol as pp
from hushwire.relay.config import ConfigError, RelayConfig
from hushwire.relay.errors import ProxyHeaderError
from tests.support import WAIT, RawClient


def header(client: str | None, *, version: int = 2, family: int | None = None) -> bytes:
    """What HAProxy's send-proxy-v2 writes: PROXY for `client`, LOCAL for None."""
    if client is None:
        return pp.SIGNATURE + bytes([version << 4 | 0x0, 0x00]) + struct.pack(">H", 0)
    ip = ipaddress.ip_address(client)
    fam = family if family is not None else (0x1 if ip.version == 4 else 0x2)
    dst = ipaddress.ip_address("192.0.2.1" if ip.version == 4 else "2001:db8::1")
    body = ip.packed + dst.packed + struct.pack(">HH", 40000, 7443) + b"\x04\x00\x01\x00"
    return (
        pp.SIGNATURE
        + bytes([version << 4 | 0x1, fam << 4 | 0x1])
        + struct.pack(">H", len(body))
        + body
    )


def parse(raw: bytes) -> str | None:
    head = raw[: pp.HEADER]
    return pp.source_address(head, raw[pp.HEADER : pp.HEADER + pp.body_length(head)])


def test_headers_parse_or_are_refused_with_a_reason():
    assert parse(header("203.0.113.7")) == "203.0.113.7"
    assert parse(header("2001:db8::7")) == "2001:db8::7"
    assert parse(header(None)) is None  # LOCAL: the proxy's own (health check)
    for raw, reason in (
        (b"\x16\x03\x01" + header("203.0.113.7")[3:], "signature"),  # a TLS ClientHello
        (header("203.0.113.7", version=1), "version 1"),
        (header("203.0.113.7", family=0x3), "family 3"),
        (header("203.0.113.7")[:16] + b"\x00" * 5, "shorter"),
        (pp.SIGNATURE + b"\x21\x11" + struct.pack(">H", pp.MAX_BODY + 1), "at most"),
    ):
        with pytest.raises(ProxyHeaderError, match=reason):
            parse(raw)


def test_trusted_networks_and_the_setting():
    nets = pp.parse_networks("10.0.0.0/24, 192.0.2.5,2001:db8::/32")
    assert pp.trusted("10.0.0.77", nets) and pp.trusted("192.0.2.5", nets)
    assert pp.trusted("::ffff:10.0.0.9", nets) and pp.trusted("2001:db8::1", nets)
    assert not pp.trusted("10.0.1.1", nets) and not pp.trusted("unknown", nets)
    with pytest.raises(ConfigError, match="proxy_protocol: not an address or network: 'lb1'"):
        RelayConfig(proxy_protocol="10.0.0.1,lb1").validate()


async def through_proxy(port: int, client: str | None, *, raw: bytes | None = None):
    """A TLS connection to the relay that first writes a PROXY header, as HAProxy does."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall(header(client) if raw is None else raw)
    sock.setblocking(False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=""), WAIT
    )
    return RelayConnection(reader, writer)


async def login_code(port: int, client: str, user: str, token: str) -> str:
    conn = await through_proxy(port, client)
    try:
        await conn.handshake(user, token)
    except RequestError as exc:
        return exc.code.value
    finally:
        await conn.close()
    return "ok"


async def test_limits_and_logs_see_the_client_the_proxy_names(relay_factory, caplog):
    caplog.set_level(logging.INFO, logger="hushwire.relay")
    relay = await relay_factory(proxy_protocol="127.0.0.1/32")
    attacker, victim_home = "203.0.113.7", "198.51.100.9"
    codes = [await login_code(relay.port, attacker, "alice", "hw_wrong") for _ in range(6)]
    assert codes == [ErrorCode.AUTH_FAILED.value] * 5 + [ErrorCode.RATE_LIMITED.value]
    # Alice behind the same proxy, from her own address, is not locked out by it.
    assert await login_code(relay.port, victim_home, "alice", relay.tokens["alice"]) == "ok"
    failed = [r for r in caplog.records if getattr(r, "event", "") == "login_failed"]
    assert failed and {r.peer for r in failed} == {attacker}
    ok = [r for r in caplog.records if getattr(r, "event", "") == "login"]
    assert [r.peer for r in ok] == [victim_home]
    # LOCAL (HAProxy's health check): served as the proxy itself.
    conn = await through_proxy(relay.port, None)
    assert (await conn.say_hello()).version == 2
    await conn.close()


async def test_a_trusted_proxy_without_a_header_is_refused_others_are_served(relay_factory, caplog):
    caplog.set_level(logging.INFO, logger="hushwire.relay.accept")
    relay = await relay_factory(proxy_protocol="127.0.0.1")
    with pytest.raises((ssl.SSLError, ConnectionError, TimeoutError)):
        # TLS straight away: its ClientHello is not a PROXY header.
        conn = await through_proxy(relay.port, None, raw=b"")
        await asyncio.wait_for(conn.say_hello(), WAIT)
    refused = [r for r in caplog.records if getattr(r, "event", "") == "handshake_refused"]
    assert refused and "no PROXY protocol v2 signature" in refused[0].getMessage()
    assert relay.server._server.failures["handshake"] == 1
    # 127.0.0.2 is not a proxy: a plain TLS client there, as without the setting.
    direct = await RawClient.connect(relay.port, source="127.0.0.2")
    reply = await direct.request({"t": "hello", "id": 1, "versions": [2], "client": "t"})
    assert reply is not None and reply["t"] == "ok"
    direct.close()
