"""The relay's device requests: device lists and linking (the per-device fan-out,
`send_devices`, is relay/sending.py's).

Kept apart from relay/handlers.py (which owns login, acks and presence; keys are
relay/key_handlers.py's) because it is one concern with its own state, the open link
channels. A connection's `user` is its principal (relay/devices.py: `alice` for device
1, `alice/2` for others); `account` and `device` name the account and which of its
devices it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from hushwire.common.crypto.devices import DeviceList
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import IdentityPublic, SignedDeviceList
from hushwire.common.messages import (
    DevicesChanged,
    DeviceSeen,
    DevicesOk,
    FetchDevices,
    LinkAccept,
    LinkAcceptOk,
    LinkFetch,
    LinkFetchOk,
    LinkJoin,
    LinkJoinOk,
    LinkRequestPush,
    LinkStart,
    LinkStartOk,
    PublishDevices,
    PublishDevicesOk,
    Reply,
    Request,
)
from hushwire.common.names import check_username
from hushwire.relay.devices import (
    AccountDevices,
    check_list,
    device_limit,
    linked_by,
    principal,
    removed_by,
)
from hushwire.relay.links import LinkChannels, link_failed
from hushwire.relay.tokens import hash_token, new_salt, new_token

if TYPE_CHECKING:
    from hushwire.relay.handlers import Peer, Relay

log = logging.getLogger("hushwire.relay")


class DeviceHandlers:
    """Answers the device and link requests for a `Relay`."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.store = relay.store
        self.config = relay.config
        self.links = LinkChannels()
        self.dispatch: dict[type[Request], Callable[[Peer, Request, float], Awaitable[Reply]]] = {
            FetchDevices: self._fetch,  # type: ignore[dict-item]
            PublishDevices: self._publish,  # type: ignore[dict-item]
            LinkStart: self._link_start,  # type: ignore[dict-item]
            LinkFetch: self._link_fetch,  # type: ignore[dict-item]
            LinkJoin: self._link_join,  # type: ignore[dict-item]
            LinkAccept: self._link_accept,  # type: ignore[dict-item]
        }

    # --- lookups -----------------------------------------------------------------

    async def current(self, accounts: Sequence[str]) -> dict[str, AccountDevices]:
        """Each account's devices; UNKNOWN_USER if one does not exist."""
        found = await self.store.account_devices(accounts)
        for name in accounts:
            if name not in found:
                raise RequestError(ErrorCode.UNKNOWN_USER, f"no user {name}")
        return found

    async def identity(self, account: str) -> IdentityPublic:
        identity = await self.store.account_identity(account)
        if identity is None:
            raise RequestError(ErrorCode.NO_KEYS, f"{account} has not published keys yet")
        return identity

    def _check(
        self, signed: SignedDeviceList, account: str, identity: IdentityPublic
    ) -> DeviceList:
        group = self.relay.group
        return check_list(
            signed,
            account=account,
            sign_key=identity.sign_key,
            group=group.name,
            public_size=group.public_size,
        )

    def announce(self, account: str, signed: SignedDeviceList, watchers: Sequence[str]) -> None:
        """`devices_changed` to online watchers and to the account's own devices."""
        push = DevicesChanged(user=account, device_list=signed)
        self.relay.bus.push(push, principals=watchers, accounts=[account])

    def unlinked(self, account: str, devices: frozenset[int]) -> None:
        """Close the live sessions of devices that no longer exist, on every relay."""
        self.relay.bus.kick(
            [principal(account, device) for device in devices],
            ErrorCode.AUTH_FAILED,
            "this device was unlinked from its account",
        )

    def disconnected(self, peer: Peer) -> None:
        if peer.account is not None:
            self.links.close_device(peer.account, peer.device)

    # --- device lists --------------------------------------------------------------

    async def _fetch(self, peer: Peer, req: FetchDevices, now: float) -> DevicesOk:
        account, _ = self.relay.account_of(peer)
        target = check_username(req.user)
        cur = (await self.current([target]))[target]
        await self.store.watch(peer.user, target)
        seen: tuple[DeviceSeen, ...] = ()
        if target == account:
            times = await self.store.device_seen(target)
            seen = tuple(DeviceSeen(device=d, last_seen=t) for d, t in sorted(times.items()))
        return DevicesOk(id=req.id, device_list=cur.signed, seen=seen)

    async def _publish(self, peer: Peer, req: PublishDevices, now: float) -> PublishDevicesOk:
        account, _ = self.relay.account_of(peer)
        dlist = self._check(req.device_list, account, await self.identity(account))
        cur = (await self.current([account]))[account]
        removed = removed_by(dlist, cur)
        watchers = await self.store.store_device_list(
            account, dlist.version, req.device_list, removed=removed, now=int(now)
        )
        log.info("%s published device list v%d", account, dlist.version)
        self.unlinked(account, removed)
        self.announce(account, req.device_list, watchers)
        return PublishDevicesOk(id=req.id, version=dlist.version)

    # --- linking -------------------------------------------------------------------

    async def _link_start(self, peer: Peer, req: LinkStart, now: float) -> LinkStartOk:
        account, _ = self.relay.account_of(peer)
        if len(req.ephemeral) != self.relay.group.public_size:
            raise RequestError(ErrorCode.BAD_REQUEST, "the link key has the wrong size")
        cur = (await self.current([account]))[account]
        if len(cur.device_ids | cur.live_ids) >= self.config.max_devices:
            raise device_limit(self.config.max_devices)
        channel = self.links.start(
            account, peer.device, req.channel, req.ephemeral, now=now, ttl=self.config.link_ttl
        )
        return LinkStartOk(id=req.id, expires_at=int(channel.expires_at))

    def _before_login(self, peer: Peer, now: float) -> None:
        """Link attempts count like failed logins per address: guessing channels is slow."""
        self.relay.check_login_rate(peer, "", now)

    async def _link_fetch(self, peer: Peer, req: LinkFetch, now: float) -> LinkFetchOk:
        self._before_login(peer, now)
        try:
            channel = self.links.find(req.channel, now=now)
        except RequestError:
            await self.relay.failed_login(peer, "", now)
            raise
        return LinkFetchOk(id=req.id, user=channel.account, ephemeral=channel.ephemeral)

    async def _link_join(self, peer: Peer, req: LinkJoin, now: float) -> LinkJoinOk:
        self._before_login(peer, now)
        try:
            channel = self.links.join(req.channel, now=now)
        except RequestError:
            await self.relay.failed_login(peer, "", now)
            raise
        old = self.relay.online.get(principal(channel.account, channel.device))
        if old is None or channel.granted is None:
            self.links.close(channel)
            raise link_failed()
        old.push(LinkRequestPush(channel=req.channel, ephemeral=req.ephemeral, sealed=req.sealed))
        left = channel.expires_at - now
        peer.hold_handshake(left)
        try:
            async with asyncio.timeout(left):
                device, token, sealed = await asyncio.shield(channel.granted)
        except TimeoutError:
            self.links.close(channel)
            raise link_failed() from None
        return LinkJoinOk(
            id=req.id, user=channel.account, device=device, token=token, sealed=sealed
        )

    async def _link_accept(self, peer: Peer, req: LinkAccept, now: float) -> LinkAcceptOk:
        account, _ = self.relay.account_of(peer)
        channel = self.links.for_accept(account, peer.device, req.channel, now=now)
        dlist = self._check(req.device_list, account, await self.identity(account))
        cur = (await self.current([account]))[account]
        new = linked_by(dlist, cur, max_devices=self.config.max_devices)
        token, salt = new_token(), new_salt()
        watchers = await self.store.add_device(
            account,
            new.id,
            dlist.version,
            req.device_list,
            token_hash=hash_token(token, salt),
            salt=salt,
            now=int(now),
        )
        if channel.granted is not None and not channel.granted.done():
            channel.granted.set_result((new.id, token, req.sealed))
        self.links.close(channel)
        log.info("%s linked device %d", account, new.id)
        self.announce(account, req.device_list, watchers)
        return LinkAcceptOk(id=req.id, device=new.id)
