"""Signed device lists as this device keeps them: its own account's and its contacts'.

Every list is checked with the rules of docs/security.md ("The signed device list")
against the identity this profile holds or pinned for that account, so a relay that
adds a device, swaps one's key or serves an older list is reported, never believed.
After each login the device fetches its own account's list; an account that has none
yet (a new one, or one upgraded from before devices) gets version 1 from its device 1.
`unlink` signs the next version without a device; the relay then revokes it. A contact's
new list (a `devices_changed` push) is shown as "bob linked a new device" when it is
signed by the identity pinned for bob, and refused otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from hushwire.client.connection import RelayConnection
from hushwire.client.errors import BadBundle
from hushwire.client.fanout import HeldLists, fetcher
from hushwire.client.session import SessionManager
from hushwire.client.store import ProfileStore
from hushwire.common import messages as wire
from hushwire.common.crypto.devices import (
    Device,
    DeviceChanges,
    DeviceList,
    accept_update,
    first_device_list,
    verify_device_list,
)
from hushwire.common.crypto.dh import DHGroup
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.crypto.link import LinkOffer
from hushwire.common.errors import CryptoError, DeviceListError, LinkExpired
from hushwire.common.fingerprint import fingerprint_digest
from hushwire.common.keys import IdentityPublic, PrekeyBundle, SignedDeviceList

FIRST_DEVICE_NAME = "first device"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device of the account, for `hushwire devices`."""

    id: int
    name: str
    linked_at: int  # Unix seconds
    last_seen: int | None  # Unix seconds of its last login; None if never or unknown
    this: bool  # the device running this profile


class DeviceLists:
    """This device's view of its own and its contacts' devices (see the module docstring)."""

    def __init__(
        self,
        store: ProfileStore,
        lists: HeldLists,
        user: str,
        device: int,
        identity: IdentityKeyPair,
        group: DHGroup,
        notify: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._lists = lists
        self._user = user
        self._device = device
        self._identity = identity
        self._group = group
        self._notify = notify
        self._clock = clock
        # link_request pushes for the link this device offered (see `link`).
        self.link_requests: asyncio.Queue[wire.LinkRequestPush] = asyncio.Queue()

    async def held(self, account: str) -> tuple[SignedDeviceList, DeviceList] | None:
        """The newest list accepted for `account`, if any."""
        return await self._lists.signed(account)

    async def _hold(self, account: str, signed: SignedDeviceList) -> None:
        await self._lists.hold(account, signed)

    async def _check(
        self, account: str, signed: SignedDeviceList, identity: IdentityPublic, whose: str
    ) -> tuple[DeviceList, DeviceChanges, bool] | None:
        """Rules 1-3 for `account` under `identity`; the list, what changed and whether
        one was held before, or None (reported) if it must not be used."""
        try:
            dlist = verify_device_list(
                signed, account=account, identity=identity, group=self._group
            )
            held = await self.held(account)
            changes = accept_update(
                held[0] if held else None, held[1] if held else None, signed, dlist
            )
        except CryptoError as exc:
            self._notify(
                f"the relay served a device list for {whose} that is refused: {exc.message}"
            )
            return None
        await self._hold(account, signed)
        for d in changes.removed:  # unlinked: its sessions are never used again
            if account == self._user or d.id != 1:
                await self._store.save_device_sessions(account, d.id, [], int(self._clock() * 1000))
        return dlist, changes, held is not None

    async def on_changed(self, account: str, signed: SignedDeviceList) -> None:
        """A `devices_changed` push: our own account's, or a contact's."""
        if account == self._user:
            await self.accept(signed)
            return
        contact = await self._store.get_contact(account)
        if contact is None:
            return  # no identity pinned for them: nothing to check it against yet
        checked = await self._check(account, signed, contact.identity, account)
        if checked is None:
            return
        dlist, changes, had = checked
        # The first list seen: new are the devices other than the one we talked to.
        added = (
            (*changes.added, *changes.rekeyed)
            if had
            else tuple(d for d in dlist.devices if d.dh_key != contact.identity.dh_key)
        )
        for d in added:
            self._notify(f"{account} linked a new device: {d.id} ({d.name})")
        for d in changes.removed if had else ():
            self._notify(f"{account} unlinked device {d.id} ({d.name})")

    async def first_contact(
        self, conn: RelayConnection, sessions: SessionManager, account: str
    ) -> Callable[..., Awaitable[PrekeyBundle]]:
        """The bundle fetcher for talking to `account`, pinning a contact never seen first
        (trust on first use): from its signed list (`SessionManager.pin_listed`), or from
        its device 1's bundle if it has none (`SessionManager.pin`). The fetcher then
        answers the bundle that pinned it without fetching it again. A list that does not
        verify under that bundle's identity is shown and refused (BadBundle: nothing
        pinned, nothing sent)."""
        fetch = fetcher(conn)
        if account == self._user or await self._store.get_contact(account) is not None:
            return fetch
        reply = await conn.request(wire.FetchDevices, user=account)
        if reply.device_list is None:
            return fetcher(conn, (account, 1, await sessions.pin(account, fetch)))
        try:
            device, bundle = await sessions.pin_listed(account, reply.device_list, fetch)
        except CryptoError as exc:
            self._notify(
                f"the relay served a device list for {account} that is refused: {exc.message}"
            )
            raise BadBundle(
                f"{account}'s signed device list does not verify under the keys the relay "
                f"served for {account} ({exc.message}); nothing was sent"
            ) from None
        return fetcher(conn, (account, device, bundle))

    async def on_mismatch(self, lists: Iterable[SignedDeviceList]) -> None:
        """The lists of a `mismatched_devices` answer, each checked like any list (the
        relay cannot use the answer to slip in a device)."""
        for signed in lists:
            try:
                account = DeviceList.decode(signed.body).account
            except CryptoError:
                continue  # not even a list: nothing to check it against
            await self.on_changed(account, signed)

    async def refresh(
        self, conn: RelayConnection
    ) -> tuple[DeviceList | None, tuple[wire.DeviceSeen, ...]]:
        """Fetch, check and hold the account's list; publish version 1 if there is none
        and this is device 1. Problems are reported through `notify`, never adopted."""
        reply = await conn.request(wire.FetchDevices, user=self._user)
        if reply.device_list is None:
            if self._device != 1:
                self._notify("the relay has no device list for your account")
                return None, reply.seen
            first = first_device_list(
                self._user,
                self._group.name,
                FIRST_DEVICE_NAME,
                self._identity.dh.public,
                int(self._clock()),
            )
            signed = first.sign(self._identity)
            await conn.request(wire.PublishDevices, device_list=signed)
            await self._hold(self._user, signed)
            return first, reply.seen
        return await self.accept(reply.device_list), reply.seen

    async def accept(self, signed: SignedDeviceList) -> DeviceList | None:
        """Check a list the relay gave for our account (fetched or pushed) and hold it."""
        checked = await self._check(self._user, signed, self._identity.public(), "your account")
        if checked is None:
            return None
        dlist, changes, had = checked
        mine = dlist.device(self._device)
        if mine is None or mine.dh_key != self._identity.dh.public:
            self._notify(
                "this device is not in your account's device list any more: it was unlinked"
            )
        elif had:
            for d in (*changes.added, *changes.rekeyed):
                self._notify(f"device {d.id} ({d.name}) was linked to your account")
            for d in changes.removed:
                self._notify(f"device {d.id} ({d.name}) was unlinked from your account")
        return dlist

    async def devices(self, conn: RelayConnection) -> list[DeviceInfo]:
        """The account's devices from its verified list, with when each was last seen."""
        dlist, seen = await self.refresh(conn)
        if dlist is None:
            raise DeviceListError("your account has no valid device list (see the notices)")
        last = {s.device: s.last_seen for s in seen}
        return [
            DeviceInfo(d.id, d.name, d.linked_at, last.get(d.id) or None, d.id == self._device)
            for d in dlist.devices
        ]

    async def offer_link(self, conn: RelayConnection, *, ttl: float) -> tuple[LinkOffer, int]:
        """Open a link channel; returns the offer (its `code.text()` is for the user) and
        the relay's expiry (Unix seconds). The code pins the relay's certificate as this
        device's connection has it (checked against its pin or CA), for the new device."""
        pin = fingerprint_digest(conn.fingerprint)
        offer = LinkOffer(self._group, now=self._clock(), ttl=ttl, pin=pin)
        reply = await conn.request(
            wire.LinkStart, channel=offer.code.channel, ephemeral=offer.ephemeral
        )
        return offer, reply.expires_at

    async def accept_link(self, conn: RelayConnection, offer: LinkOffer) -> Device:
        """Wait for the new device's request on `offer`'s channel, check it (the code's
        secret authenticates it), list the device in the next signed version, and hand
        it the identity. Raises LinkExpired, LinkUsed, DecryptionError (a request not
        made with the code) or RequestError from the relay."""
        while True:
            remaining = offer.expires_at - self._clock()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    push = await self.link_requests.get()
            except TimeoutError:
                raise LinkExpired("the link code expired before a device used it") from None
            if push.channel == offer.code.channel:
                break
        request = offer.open_request(push.ephemeral, push.sealed, now=self._clock())
        dlist, _ = await self.refresh(conn)
        if dlist is None:
            raise DeviceListError("your account has no valid device list (see the notices)")
        new, device = dlist.with_device(request.name, request.dh_key, int(self._clock()))
        signed = new.sign(self._identity)
        grant = offer.seal_grant(self._identity, device.id, signed)
        await conn.request(
            wire.LinkAccept, channel=offer.code.channel, device_list=signed, sealed=grant
        )
        await self._hold(self._user, signed)
        return device

    async def unlink(self, conn: RelayConnection, device_id: int) -> DeviceList:
        """Sign and publish the next list without `device_id` (UnknownDevice if it is not
        listed; DeviceListError for the last device)."""
        dlist, _ = await self.refresh(conn)
        if dlist is None:
            raise DeviceListError("your account has no valid device list (see the notices)")
        new = dlist.without_device(device_id)
        signed = new.sign(self._identity)
        await conn.request(wire.PublishDevices, device_list=signed)
        await self._hold(self._user, signed)
        return new
