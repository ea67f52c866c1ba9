"""Open link channels: expiry, single use, one per account, only the starter accepts."""

from __future__ import annotations

import asyncio

import pytest

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.relay.links import LinkChannels

CH = b"c" * 16
T0 = 1000.0


def _failed(call):
    with pytest.raises(RequestError) as exc:
        call()
    assert exc.value.code == ErrorCode.LINK_FAILED
    return exc.value


async def test_a_channel_is_found_joined_once_and_accepted_by_its_starter():
    links = LinkChannels()
    links.start("alice", 1, CH, b"e", now=T0, ttl=300)
    assert links.find(CH, now=T0 + 1).ephemeral == b"e"
    joined = links.join(CH, now=T0 + 2)
    _failed(lambda: links.join(CH, now=T0 + 3))  # reused
    _failed(lambda: links.for_accept("alice", 2, CH, now=T0 + 3))  # another device
    _failed(lambda: links.for_accept("bob", 1, CH, now=T0 + 3))  # another account
    assert links.for_accept("alice", 1, CH, now=T0 + 3) is joined


async def test_an_expired_channel_fails_everywhere_and_wakes_the_waiting_device():
    links = LinkChannels()
    links.start("alice", 1, CH, b"e", now=T0, ttl=300)
    joined = links.join(CH, now=T0 + 299)
    _failed(lambda: links.for_accept("alice", 1, CH, now=T0 + 300))
    assert links.sweep(now=T0 + 300) == 1
    with pytest.raises(RequestError) as exc:
        await asyncio.wait_for(joined.granted, 5)
    assert exc.value.code == ErrorCode.LINK_FAILED
    _failed(lambda: links.find(CH, now=T0 + 1))


async def test_unknown_and_unjoined_channels_fail_alike():
    links = LinkChannels()
    unknown = _failed(lambda: links.find(CH, now=T0))
    links.start("alice", 1, CH, b"e", now=T0, ttl=300)
    unjoined = _failed(lambda: links.for_accept("alice", 1, CH, now=T0))
    assert unknown.message == unjoined.message


async def test_a_new_start_replaces_the_accounts_open_channel():
    links = LinkChannels()
    links.start("alice", 1, CH, b"e", now=T0, ttl=300)
    joined = links.join(CH, now=T0)
    links.start("alice", 2, b"d" * 16, b"f", now=T0, ttl=300)
    _failed(lambda: links.find(CH, now=T0))
    assert joined.granted.done()
    links.close_device("alice", 2)
    _failed(lambda: links.find(b"d" * 16, now=T0))


async def test_a_malformed_or_duplicate_channel_is_refused():
    links = LinkChannels()
    with pytest.raises(RequestError) as exc:
        links.start("alice", 1, b"short", b"e", now=T0, ttl=300)
    assert exc.value.code == ErrorCode.BAD_REQUEST
    links.start("alice", 1, CH, b"e", now=T0, ttl=300)
    with pytest.raises(RequestError):
        links.start("bob", 1, CH, b"e", now=T0, ttl=300)
