"""One plaintext sealed for every device of several accounts, sent in one `send_devices`.

Group input (a key note, a change, a welcome: docs/protocol.md, "Groups") goes to every
device of the accounts concerned and to this account's other devices. The targets come
from the signed device lists this profile verified (client/devices.py), exactly as for a
1:1 message (client/fanout.py): a contact's device 1 (its pinned identity) and every
other device its list names, our own listed devices but this one; a device the relay
adds on its own is never a target. `mismatched_devices` is answered as for 1:1 sends:
the lists in the reply are checked, the plaintext is sealed for the devices now listed
(envelopes already sealed for a device are kept), and the send is retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from hushwire.client.connection import RelayConnection
from hushwire.client.copies import device_bundle
from hushwire.client.devices import DeviceLists
from hushwire.client.errors import MessageHeld
from hushwire.client.fanout import Target, fetcher
from hushwire.client.session import MAX_ARCHIVED_SESSIONS, Fetch, SessionManager, same_identity
from hushwire.common.crypto.envelope import Session
from hushwire.common.errors import ErrorCode, LocalProtocolError, RequestError
from hushwire.common.keys import PrekeyBundle
from hushwire.common.messages import DeviceEnvelope, ListVersion

MAX_ATTEMPTS: Final = 3  # as client/outbox.py: each retry adopts the verified lists
Device = tuple[str, int]


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """Where one group send goes: the devices (None as the key of a contact's device 1:
    its pinned identity decides) and the list version each account's fan-out used."""

    targets: tuple[tuple[Device, bytes | None], ...]
    lists: tuple[ListVersion, ...]


async def device_plan(
    sessions: SessionManager, accounts: Iterable[str], *, own_devices: bool = True
) -> DevicePlan:
    """Every device of `accounts` (this account excluded from them) and, with
    `own_devices`, this account's other devices; `lists` names them all and us. A
    contact's device 1 is a target unless its verified list leaves it out."""
    me = sessions.user
    targets: list[tuple[Device, bytes | None]] = []
    lists: list[ListVersion] = []
    for account in sorted({*accounts, me}):
        dlist = await sessions.lists.get(account)
        lists.append(ListVersion(account, 0 if dlist is None else dlist.version))
        listed = () if dlist is None else dlist.devices
        if account == me:
            if own_devices:
                targets += [((me, d.id), d.dh_key) for d in listed if d.id != sessions.device]
            continue
        if dlist is None or dlist.device(1) is not None:
            targets.append(((account, 1), None))  # sealed as for a 1:1 message
        targets += [((account, d.id), d.dh_key) for d in listed if d.id != 1]
    return DevicePlan(tuple(targets), tuple(lists))


async def pin_member(
    sessions: SessionManager, devices: DeviceLists, conn: RelayConnection, name: str
) -> bytes:
    """The identity key pinned for `name` (pinned now if we never talked: trust on first
    use, as for a first message, `DeviceLists.first_contact`). MessageHeld while their
    key changed and the user has not accepted it."""
    if name == sessions.user:
        return sessions.identity.sign_key
    contact = await sessions.store.get_contact(name)
    if contact is None:
        await devices.first_contact(conn, sessions, name)
        contact = await sessions.contact(name)
    if contact.pending is not None:
        raise MessageHeld(name)
    return contact.identity.sign_key


async def _first_bundle(
    sessions: SessionManager, device: Device, dh_key: bytes | None, fetch: Fetch
) -> PrekeyBundle:
    account, number = device
    if dh_key is not None:
        return await device_bundle(sessions, Target(account, number, dh_key), fetch)
    bundle = await sessions.fetch_verified(account, fetch)
    contact = await sessions.store.get_contact(account)
    if contact is None:  # never talked: trust on first use, as for a first 1:1 message
        await sessions.store.add_contact(account, bundle.identity, sessions.now_ms())
        return bundle
    if contact.pending is not None:
        raise MessageHeld(account)
    if not same_identity(bundle.identity, contact.identity):
        await sessions.on_key_changed(account, bundle.identity)
        raise MessageHeld(account)
    return bundle


# Run in the transaction of the first sealing: stores what the send commits to (a new
# membership state, a transcript step, a history line) and returns (plaintext, payload).
Prepare = Callable[[], Awaitable[tuple[bytes, bytes | None]]]


async def _new_bundles(
    sessions: SessionManager, plan: DevicePlan, have: Mapping[Device, DeviceEnvelope], fetch: Fetch
) -> dict[Device, PrekeyBundle]:
    """Verified bundles of the targets we hold no session with yet (fetched before the
    transaction: no network inside it)."""
    return {
        device: await _first_bundle(sessions, device, dh_key, fetch)
        for device, dh_key in plan.targets
        if device not in have and not await sessions.device_sessions(*device)
    }


async def _seal_all(
    sessions: SessionManager,
    plan: DevicePlan,
    plaintext: bytes,
    have: Mapping[Device, DeviceEnvelope],
    bundles: Mapping[Device, PrekeyBundle],
) -> dict[Device, DeviceEnvelope]:
    """`plaintext` sealed for every target of `plan` (kept from `have` where sealed
    before), the advanced ratchets stored; in the caller's transaction."""
    sealed: dict[Device, DeviceEnvelope] = {}
    now = sessions.now_ms()
    for device, _ in plan.targets:
        if device in have:
            sealed[device] = have[device]
            continue
        current = await sessions.device_sessions(*device)
        if current:
            envelope = current[0].encrypt(plaintext, now)
        elif device in bundles:
            session, envelope = Session.initiate(
                sessions.identity, sessions.user, bundles[device], sessions.group, now,
                plaintext, config=sessions.config,
            )  # fmt: skip
            current = [session]
        else:
            raise LocalProtocolError(f"the session with {device[0]}/{device[1]} vanished")
        await sessions.save_device_sessions(*device, current[: 1 + MAX_ARCHIVED_SESSIONS], now)
        sealed[device] = DeviceEnvelope(device[0], device[1], envelope)
    return sealed


# Run in each sealing transaction with every envelope sealed so far: stores them beside
# the ratchets they advanced (client/group_outbox.py keeps them for a re-send).
Keep = Callable[[dict[Device, DeviceEnvelope]], Awaitable[None]]


async def send_to_devices(
    conn: RelayConnection,
    sessions: SessionManager,
    devices: DeviceLists,
    accounts: Iterable[str],
    prepare: Prepare,
    *,
    own_devices: bool = True,
    sealed: Mapping[Device, DeviceEnvelope] | None = None,
    keep: Keep | None = None,
) -> int:
    """Seal what `prepare` gives for every device of `accounts` (and our other devices
    with `own_devices`) and send it in one `send_devices`, with the payload beside the
    envelopes when there is one. `prepare` runs once, in the transaction of the first
    sealing, and `keep` in every sealing transaction; envelopes in `sealed` (a re-send)
    go out as they are. Returns the number of envelopes sent.

    Raises RequestError (the relay's refusal, `mismatched_devices` after MAX_ATTEMPTS),
    MessageHeld (a member's key changed), BadBundle, ConnectionClosed, and whatever
    `prepare` raises (then nothing was stored or sent).
    """
    accounts = tuple(accounts)
    have: dict[Device, DeviceEnvelope] = dict(sealed or {})
    fetch = fetcher(conn)
    content: tuple[bytes, bytes | None] | None = None
    attempt = 1
    while True:
        plan = await device_plan(sessions, accounts, own_devices=own_devices)
        bundles = await _new_bundles(sessions, plan, have, fetch)
        async with sessions.store.transaction():
            if content is None:
                content = await prepare()
            have = await _seal_all(sessions, plan, content[0], have, bundles)
            if keep is not None:
                await keep(have)
        envelopes = tuple(have[device] for device, _ in plan.targets)
        try:
            await conn.send_devices(envelopes, plan.lists, payload=content[1])
        except RequestError as exc:
            if exc.code is not ErrorCode.MISMATCHED_DEVICES or attempt == MAX_ATTEMPTS:
                raise
            await devices.on_mismatch(exc.device_lists)
            attempt += 1
            continue
        return len(envelopes)
