"""Open link channels: which account's device is waiting for a new device to join.

A channel lives in memory only, on the relay of the device that opened it (a relay
restart cancels open links; the user runs `hushwire link` again); with several relays
the bus tells the others where it is (`SharedLink`, bus_redis.py). Each account has at
most one open channel; a channel serves one join and dies at its expiry. Every refusal
a new device can see is the same `link_failed` with one message, so probing channels
tells nothing about which exist. Time is passed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from hushwire.common.crypto.link import CHANNEL_LEN
from hushwire.common.errors import ErrorCode, RequestError

_FAILED = "no such link code, or it has expired or was used; run `hushwire link` again"


def link_failed() -> RequestError:
    return RequestError(ErrorCode.LINK_FAILED, _FAILED)


@dataclass(eq=False, slots=True)
class Channel:
    """One open link: the old device that started it and, once joined, the new one's
    request, waiting for `link_accept` to resolve `granted`."""

    account: str
    device: int  # the old device, the only one that may accept
    channel: bytes
    ephemeral: bytes
    expires_at: float
    joined: bool = False
    granted: asyncio.Future[tuple[int, str, bytes]] | None = field(default=None)


@dataclass(frozen=True, slots=True)
class SharedLink:
    """A channel open on another relay, as the bus tells it (bus.py): which relay holds
    it (`origin`, where a join is forwarded) and what `link_fetch` answers."""

    channel: bytes
    origin: str
    account: str
    ephemeral: bytes
    expires_at: float


class LinkChannels:
    """The relay's open channels, by channel id and by account. `closed` hears of every
    channel forgotten (so other relays stop forwarding joins to it)."""

    def __init__(self, closed: Callable[[bytes], None] | None = None) -> None:
        self._by_channel: dict[bytes, Channel] = {}
        self._by_account: dict[str, Channel] = {}
        self._closed = closed

    def start(
        self, account: str, device: int, channel: bytes, ephemeral: bytes, *, now: float, ttl: float
    ) -> Channel:
        """Open a channel for `account`, replacing (and failing) its earlier one."""
        if len(channel) != CHANNEL_LEN:
            raise RequestError(ErrorCode.BAD_REQUEST, f"a link channel is {CHANNEL_LEN} bytes")
        if channel in self._by_channel:
            raise RequestError(ErrorCode.BAD_REQUEST, "this link channel is already open")
        old = self._by_account.get(account)
        if old is not None:
            self.close(old)
        opened = Channel(account, device, channel, ephemeral, now + ttl)
        self._by_channel[channel] = opened
        self._by_account[account] = opened
        return opened

    def find(self, channel: bytes, *, now: float) -> Channel:
        """The open, unexpired channel with this id (for `link_fetch`), else link_failed."""
        found = self._by_channel.get(channel)
        if found is None or now >= found.expires_at:
            if found is not None:
                self.close(found)
            raise link_failed()
        return found

    def join(self, channel: bytes, *, now: float) -> Channel:
        """Take the channel for one new device; a second join gets link_failed."""
        found = self.find(channel, now=now)
        if found.joined:
            raise link_failed()
        found.joined = True
        found.granted = asyncio.get_running_loop().create_future()
        return found

    def for_accept(self, account: str, device: int, channel: bytes, *, now: float) -> Channel:
        """The joined channel this old device may answer, else link_failed."""
        found = self._by_channel.get(channel)
        if (
            found is None
            or found.account != account
            or found.device != device
            or not found.joined
            or found.granted is None
            or found.granted.done()
            or now >= found.expires_at
        ):
            raise link_failed()
        return found

    def close(self, channel: Channel) -> None:
        """Forget a channel; a new device still waiting on it gets link_failed."""
        if self._by_channel.get(channel.channel) is channel:
            del self._by_channel[channel.channel]
            if self._closed is not None:
                self._closed(channel.channel)
        if self._by_account.get(channel.account) is channel:
            del self._by_account[channel.account]
        if channel.granted is not None and not channel.granted.done():
            channel.granted.set_exception(link_failed())

    def close_device(self, account: str, device: int) -> None:
        """The old device disconnected: its open channel cannot be answered any more."""
        found = self._by_account.get(account)
        if found is not None and found.device == device:
            self.close(found)

    def sweep(self, *, now: float) -> int:
        """Close every expired channel; returns how many."""
        expired = [c for c in self._by_channel.values() if now >= c.expires_at]
        for c in expired:
            self.close(c)
        return len(expired)
