"""The relay's device rules: which lists it stores and which fan-outs it queues.

Clients never trust the relay about devices (they verify every list against the identity
they pinned); these checks keep an honest relay's state consistent and give a client with
a stale view the typed `mismatched_devices` answer it needs to catch up. Pure functions
over what the store returns, so they are tested without a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hushwire.common.crypto.devices import DEVICE_LIST_CONTEXT, Device, DeviceList
from hushwire.common.crypto.primitives import ed25519_verify
from hushwire.common.errors import CryptoError, ErrorCode, RequestError
from hushwire.common.keys import SignedDeviceList
from hushwire.common.messages import DeviceEnvelope, ListVersion

MAX_SEND_ACCOUNTS = 50
MAX_SEND_ENVELOPES = 250


def principal(account: str, device: int) -> str:
    """The store's name for a device: the account itself for device 1 (what every user
    was before devices existed), `account/id` for the others ('/' is not allowed in a
    username, so no user can ever hold such a name)."""
    return account if device == 1 else f"{account}/{device}"


def split_principal(name: str) -> tuple[str, int]:
    """Inverse of `principal`: (account, device)."""
    account, sep, device = name.partition("/")
    return (account, int(device)) if sep else (account, 1)


@dataclass(frozen=True, slots=True)
class AccountDevices:
    """An account's devices as the relay holds them.

    `device_ids` is what a sender must target: the ids of the stored signed list, or the
    relay's own devices while the account has published none (`version` 0). `live_ids`
    are the devices that still have a credential and a mailbox; they differ only after an
    operator removed a device the account's list still names (its envelopes are dropped
    until a device of the account signs a list without it)."""

    account: str
    version: int
    device_ids: frozenset[int]
    signed: SignedDeviceList | None
    live_ids: frozenset[int] = frozenset()


def check_list(
    signed: SignedDeviceList, *, account: str, sign_key: bytes, group: str, public_size: int
) -> DeviceList:
    """A list the caller wants stored: signed by the account's identity, well formed,
    for this account and group, with keys of the group's size. BAD_KEYS otherwise."""
    try:
        ed25519_verify(sign_key, DEVICE_LIST_CONTEXT + signed.body, signed.sig)
        dlist = DeviceList.decode(signed.body)
    except CryptoError as exc:
        raise RequestError(ErrorCode.BAD_KEYS, f"device list refused: {exc.message}") from None
    if dlist.account != account or dlist.group != group:
        raise RequestError(ErrorCode.BAD_KEYS, "device list is for another account or group")
    if any(len(d.dh_key) != public_size for d in dlist.devices):
        raise RequestError(ErrorCode.BAD_KEYS, f"device keys must be {public_size} bytes")
    return dlist


def _newer(dlist: DeviceList, current: AccountDevices) -> None:
    if dlist.version <= current.version:
        raise RequestError(
            ErrorCode.STALE_DEVICE_LIST,
            f"device list version {dlist.version} is not above the stored {current.version}",
        )


def removed_by(dlist: DeviceList, current: AccountDevices) -> frozenset[int]:
    """For `publish_devices`: the devices the new list unlinks. It may only rename and
    remove; a device it names must exist (new devices come from `link_accept`)."""
    _newer(dlist, current)
    unknown = dlist.ids - current.live_ids
    if unknown:
        raise RequestError(
            ErrorCode.UNKNOWN_DEVICE, f"device {min(unknown)} is not a device of this account"
        )
    return current.live_ids - dlist.ids


def linked_by(dlist: DeviceList, current: AccountDevices, *, max_devices: int) -> Device:
    """For `link_accept`: the one device the new list adds (the next version, every
    current device kept, one new id)."""
    if dlist.version != current.version + 1:
        raise RequestError(
            ErrorCode.STALE_DEVICE_LIST,
            f"a link must publish version {current.version + 1}, not {dlist.version}",
        )
    added = dlist.ids - current.device_ids
    if not current.device_ids <= dlist.ids or len(added) != 1 or added & current.live_ids:
        raise RequestError(
            ErrorCode.BAD_KEYS, "a link's list keeps every device and adds exactly one"
        )
    if len(dlist.devices) > max_devices:
        raise device_limit(max_devices)
    (new,) = (d for d in dlist.devices if d.id in added)
    return new


def device_limit(max_devices: int) -> RequestError:
    return RequestError(
        ErrorCode.DEVICE_LIMIT,
        f"this account already has the relay's maximum of {max_devices} devices; "
        "unlink one first (`hushwire devices`, `hushwire unlink ID`)",
    )


def send_accounts(
    sender: str, envelopes: Iterable[DeviceEnvelope], lists: Iterable[ListVersion]
) -> dict[str, int]:
    """The accounts a `send_devices` names, with the versions it claims; BAD_REQUEST for a
    malformed shape (repeats, an envelope for an account not in `lists`, no own view)."""
    claimed: dict[str, int] = {}
    for view in lists:
        if view.user in claimed:
            raise RequestError(ErrorCode.BAD_REQUEST, f"{view.user} is named twice in lists")
        claimed[view.user] = view.version
    if sender not in claimed:
        raise RequestError(ErrorCode.BAD_REQUEST, "lists must name the sender's own account")
    if len(claimed) > MAX_SEND_ACCOUNTS:
        raise RequestError(ErrorCode.BAD_REQUEST, f"at most {MAX_SEND_ACCOUNTS} accounts")
    seen: set[tuple[str, int]] = set()
    count = 0
    for env in envelopes:
        count += 1
        if env.user not in claimed:
            raise RequestError(ErrorCode.BAD_REQUEST, f"{env.user} has envelopes but no list view")
        if (env.user, env.device) in seen:
            raise RequestError(ErrorCode.BAD_REQUEST, f"two envelopes for {env.user}/{env.device}")
        seen.add((env.user, env.device))
    if not 0 < count <= MAX_SEND_ENVELOPES:
        raise RequestError(ErrorCode.BAD_REQUEST, f"1 to {MAX_SEND_ENVELOPES} envelopes")
    return claimed


def mismatched(
    sender: str,
    sender_device: int,
    envelopes: Iterable[DeviceEnvelope],
    claimed: Mapping[str, int],
    current: Mapping[str, AccountDevices],
    *,
    partial: bool = False,
) -> list[AccountDevices]:
    """The accounts whose claimed version or targeted devices are not the current ones
    (the sender's own device excluded; with `partial`, targets must be some of them);
    empty when the send may be queued."""
    targeted: dict[str, set[int]] = {name: set() for name in claimed}
    for env in envelopes:
        targeted[env.user].add(env.device)
    wrong = []
    for name, version in claimed.items():
        cur = current[name]
        expected = cur.device_ids - {sender_device} if name == sender else cur.device_ids
        fits = targeted[name] <= expected if partial else targeted[name] == expected
        if version != cur.version or not fits:
            wrong.append(cur)
    return wrong
