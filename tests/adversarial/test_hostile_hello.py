"""A relay announcing absurd settings in `hello`: the client bounds or refuses them."""

from __future__ import annotations

import dataclasses

import pytest

from hushwire.client.connection import MAX_FRAME, MIN_IDLE, ConnectionClosed
from hushwire.common.messages import Hello


def bend_hello(relay, **fields) -> None:
    handlers = relay.server.relay
    real = handlers._dispatch[Hello]

    async def hostile(peer, req, now):
        return dataclasses.replace(await real(peer, req, now), **fields)

    handlers._dispatch[Hello] = hostile


async def test_a_zero_idle_timeout_is_clamped(relay, login, figures):
    bend_hello(relay, idle_timeout=0.0)
    conn = await relay.login("alice")
    assert conn.hello.idle_timeout == MIN_IDLE
    client = await login(relay, "bob")  # the library client uses the same bound
    assert client.state == "connected"
    assert client._conn.hello.idle_timeout == MIN_IDLE
    figures.add(
        "relay announces idle_timeout 0 (the client pinged ~800 times a second)",
        f"clamped to {MIN_IDLE:.0f} s: one keepalive ping per {MIN_IDLE / 2:.0f} s at most",
    )


@pytest.mark.parametrize("max_frame", [0, 100, MAX_FRAME + 1, 2**40])
async def test_an_absurd_frame_limit_is_refused(relay, max_frame):
    bend_hello(relay, max_frame=max_frame)
    conn = await relay.connect()
    with pytest.raises(ConnectionClosed, match="frame limit"):
        await conn.handshake("alice", relay.tokens["alice"])
