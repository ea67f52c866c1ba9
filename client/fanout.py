"""Which devices one message goes to, and the outbox record of a fan-out.

A message to bob is sealed once per device of bob and once per other device of ours
(a sent copy), every device taken from a signed list this profile verified (client/
devices.py): a device the relay adds on its own is never a target. docs/security.md,
"Fan-out", gives the rules; docs/protocol.md, `send_devices`, the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from hushwire.client.connection import RelayConnection
from hushwire.client.store import ProfileStore
from hushwire.common import messages as wire
from hushwire.common.crypto.devices import DeviceList
from hushwire.common.crypto.encoding import (
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
    pack,
    unpack_strict,
)
from hushwire.common.keys import PrekeyBundle, SignedDeviceList
from hushwire.common.messages import DeviceEnvelope, ListVersion

HELD_LIST = "device_list/"  # profile setting + account: the newest list accepted, [body, sig]
_RECORD = "fanout/1"


@dataclass(frozen=True, slots=True)
class Target:
    """A device to seal for besides the contact's device 1, with the DH key its
    account's verified list gives it (its bundle and envelopes must carry that key)."""

    account: str
    device: int
    dh_key: bytes


@dataclass(frozen=True, slots=True)
class Plan:
    """The extra devices of one send and the list versions it claims (`lists`).
    `primary`: the contact's device 1 is a target (sealed by `prepare_send`, not here):
    true unless the contact's verified list leaves device 1 out."""

    targets: tuple[Target, ...]
    lists: tuple[ListVersion, ...]
    primary: bool = True


class HeldLists:
    """The newest verified list of each account as this profile holds it (the setting
    `device_list/ACCOUNT`, checked by client/devices.py before it is held), cached in
    memory: every send and every envelope from a device reads it. Every change goes
    through `hold` or `forget`, which drop the cached entry after writing, so the next
    read comes from the profile (also after a transaction that rolled the write back)."""

    def __init__(self, store: ProfileStore) -> None:
        self._store = store
        self._cache: dict[str, tuple[SignedDeviceList, DeviceList] | None] = {}

    async def signed(self, account: str) -> tuple[SignedDeviceList, DeviceList] | None:
        """The list held for `account`, as signed and as read; None if none is held."""
        if account in self._cache:
            return self._cache[account]
        record = await self._store.get_setting(HELD_LIST + account)
        held = None
        if record is not None:
            signed = SignedDeviceList(bytes(record[0]), bytes(record[1]))
            held = signed, DeviceList.decode(signed.body)
        self._cache[account] = held
        return held

    async def get(self, account: str) -> DeviceList | None:
        held = await self.signed(account)
        return None if held is None else held[1]

    async def listed_key(self, account: str, device: int) -> bytes | None:
        """The DH key `account`'s verified list gives `device` (None: not listed)."""
        dlist = await self.get(account)
        listed = None if dlist is None else dlist.device(device)
        return None if listed is None else listed.dh_key

    async def device_one_listed(self, account: str) -> bool:
        """Whether `account`'s device 1 is a target: no verified list yet, or one naming it."""
        dlist = await self.get(account)
        return dlist is None or dlist.device(1) is not None

    async def hold(self, account: str, signed: SignedDeviceList) -> None:
        """Keep `signed` as the newest list accepted for `account` (checked by the caller)."""
        try:
            await self._store.set_setting(HELD_LIST + account, [signed.body, signed.sig])
        finally:
            self._cache.pop(account, None)

    async def forget(self, account: str) -> None:
        """Drop the list held for `account` (its identity changed)."""
        try:
            await self._store.delete_setting(HELD_LIST + account)
        finally:
            self._cache.pop(account, None)


async def plan(
    lists: HeldLists, user: str, device: int, contact: str, *, first_sealed: bool = True
) -> Plan:
    """The devices a message to `contact` goes to besides the one `prepare_send` sealed
    for (the contact's device 1, when `first_sealed`): the contact's other listed devices
    and our own other devices. An account without a verified list counts as device 1
    only (version 0); a stale view is corrected by the relay's `mismatched_devices`
    answer. A contact whose list leaves device 1 out gets exactly its listed devices."""
    targets: list[Target] = []
    views: list[ListVersion] = []
    primary = True
    for account, skip in ((contact, 1), (user, device)):
        dlist = await lists.get(account)
        views.append(ListVersion(account, 0 if dlist is None else dlist.version))
        if account == contact and dlist is not None and dlist.device(1) is None:
            primary = False
        if account == contact and not first_sealed:
            skip = 0
        for d in () if dlist is None else dlist.devices:
            if d.id != skip:
                targets.append(Target(account, d.id, d.dh_key))
    return Plan(tuple(targets), tuple(views), primary)


def encode_record(envelopes: Sequence[DeviceEnvelope], lists: Sequence[ListVersion]) -> bytes:
    """What the outbox keeps for a pending fan-out, resent as it is after a reconnect."""
    return pack(
        [
            _RECORD,
            [[e.user, e.device, e.body] for e in envelopes],
            [[v.user, v.version] for v in lists],
        ]
    )


def decode_record(
    data: bytes, contact: str
) -> tuple[tuple[DeviceEnvelope, ...], tuple[ListVersion, ...]]:
    """Inverse of `encode_record`. A row from before devices holds one envelope for the
    contact's device 1: it goes out as a fan-out of that one envelope (ValueError if
    neither)."""
    try:
        value = unpack_strict(data)
    except ValueError:
        value = None
    if not (isinstance(value, list) and value and value[0] == _RECORD):
        return (DeviceEnvelope(contact, 1, data),), ()
    _, rows, views = expect_list(value, 3)
    envelopes = tuple(
        DeviceEnvelope(expect_str(u), expect_int(d, 1, 2**31), expect_bytes(b))
        for u, d, b in (expect_list(r, 3) for r in rows)
    )
    lists = tuple(
        ListVersion(expect_str(u), expect_int(v, 0, 2**63))
        for u, v in (expect_list(r, 2) for r in views)
    )
    return envelopes, lists


def fetcher(
    conn: RelayConnection, primed: tuple[str, int, PrekeyBundle] | None = None
) -> Callable[..., Awaitable[PrekeyBundle]]:
    """Bundles of one account's devices from the relay (verified by the caller).
    `primed` (account, device, bundle): a bundle already fetched (at first contact),
    answered once instead of fetching again (which would use up another prekey)."""
    held = [primed] if primed is not None else []

    async def fetch(name: str, device: int = 1) -> PrekeyBundle:
        if held and held[0][:2] == (name, device):
            return held.pop()[2]
        one = None if device == 1 else device
        reply = await conn.request(wire.FetchBundle, user=name, device=one)
        return reply.bundle

    return fetch
