"""Signed, versioned device lists: which devices speak for an account.

An account has one identity (the Ed25519 key its safety number is computed from) and up
to `MAX_DEVICES` devices, each with its own DH identity key. The identity signs the list:

    body = canonical msgpack [1, group, account, version, [[id, name, dh_key, linked_at], ...]]
    sig  = Ed25519(identity, b"hushwire/device-list/v1" || body)

Devices are sorted by id, ids unique. `version` only grows: every change (link, unlink,
rename) signs a new list with a higher version. A client accepts a list only if

1. the signature verifies under the identity it pinned (checked before the body is
   parsed, so nothing the relay made up is ever interpreted),
2. it names the expected account and group, and every DH key is a valid group element,
3. its version is not below the highest it has accepted for that account, and a list with
   the same version is byte-for-byte the one it holds (else the relay replays or forks).

A device's bundle is used only if its identity record carries the account's Ed25519 key
and exactly the DH key the signed list gives that device id (Matrix's lesson from
CVE-2022-39250: never take a device key on the server's word).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from hushwire.common.crypto.dh import DHGroup
from hushwire.common.crypto.encoding import (
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
    pack,
    unpack_canonical,
)
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.crypto.primitives import ED25519_SIG_LEN, ed25519_verify
from hushwire.common.errors import (
    DeviceListError,
    InvalidKey,
    StaleDeviceList,
    UnknownDevice,
)
from hushwire.common.keys import IdentityPublic, SignedDeviceList
from hushwire.common.names import is_valid_username

DEVICE_LIST_CONTEXT: Final = b"hushwire/device-list/v1"
DEVICE_LIST_FORMAT: Final = 1
MAX_DEVICES: Final = 16  # the format's ceiling; a relay's limit is at most this
MAX_DEVICE_NAME: Final = 64
MAX_DEVICE_ID: Final = 2**32 - 1
MAX_VERSION: Final = 2**63 - 1
MAX_BODY: Final = 8192  # 16 devices with 512-byte ffdhe4096 keys and long names fit


@dataclass(frozen=True, slots=True)
class Device:
    """One device of an account, as its signed list names it."""

    id: int
    name: str
    dh_key: bytes  # the device's DH identity public key, encoded by the group
    linked_at: int  # Unix seconds, as the device that signed the list saw it


@dataclass(frozen=True, slots=True)
class DeviceChanges:
    """What a newly accepted list changed compared with the one held before."""

    added: tuple[Device, ...]
    removed: tuple[Device, ...]
    rekeyed: tuple[Device, ...]  # same id, another DH key (shown like a new device)


def check_device_name(name: object) -> str:
    """A device name: 1-64 printable characters without surrounding spaces."""
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= MAX_DEVICE_NAME
        or not name.isprintable()
        or name != name.strip()
    ):
        raise ValueError(f"a device name is 1-{MAX_DEVICE_NAME} printable characters")
    return name


@dataclass(frozen=True, slots=True)
class DeviceList:
    """The content of a signed list; build new versions with `with_device` and friends."""

    account: str
    group: str
    version: int
    devices: tuple[Device, ...]

    def __post_init__(self) -> None:
        _check_shape(self)

    def encode(self) -> bytes:
        """The canonical body the identity signs."""
        rows = [[d.id, d.name, d.dh_key, d.linked_at] for d in self.devices]
        return pack([DEVICE_LIST_FORMAT, self.group, self.account, self.version, rows])

    @classmethod
    def decode(cls, body: bytes) -> DeviceList:
        """Strict inverse of `encode`; DeviceListError for anything else."""
        if not isinstance(body, bytes) or len(body) > MAX_BODY:
            raise DeviceListError("device list body too large")
        try:
            fmt, group, account, version, rows = expect_list(unpack_canonical(body), 5)
            if expect_int(fmt, 0, 255) != DEVICE_LIST_FORMAT:
                raise ValueError(f"unsupported device list format {fmt}")
            if not isinstance(rows, list):
                raise ValueError("devices must be a list")
            devices = tuple(Device(*expect_list(row, 4)) for row in rows)
            return cls(expect_str(account), expect_str(group), version, devices)
        except ValueError as exc:
            raise DeviceListError(f"malformed device list: {exc}") from None

    def device(self, device_id: int) -> Device | None:
        for d in self.devices:
            if d.id == device_id:
                return d
        return None

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(d.id for d in self.devices)

    def sign(self, identity: IdentityKeyPair) -> SignedDeviceList:
        """The wire record: this body signed by the account identity."""
        if identity.group != self.group:
            raise InvalidKey("the identity is for another group than the list")
        body = self.encode()
        return SignedDeviceList(body=body, sig=identity.sign(DEVICE_LIST_CONTEXT + body))

    def with_device(self, name: str, dh_key: bytes, linked_at: int) -> tuple[DeviceList, Device]:
        """The next version with one more device (id: one above the highest ever listed
        here, so a removed device's id is not handed to a new one while it is known)."""
        if len(self.devices) >= MAX_DEVICES:
            raise DeviceListError(f"an account has at most {MAX_DEVICES} devices")
        new = Device(max(self.ids, default=0) + 1, check_device_name(name), dh_key, linked_at)
        return DeviceList(self.account, self.group, self.version + 1, (*self.devices, new)), new

    def without_device(self, device_id: int) -> DeviceList:
        """The next version without `device_id` (UnknownDevice if it is not listed, and
        DeviceListError for the last device: an account keeps at least one)."""
        if self.device(device_id) is None:
            raise UnknownDevice(f"device {device_id} is not in the list")
        rest = tuple(d for d in self.devices if d.id != device_id)
        if not rest:
            raise DeviceListError("an account keeps at least one device")
        return DeviceList(self.account, self.group, self.version + 1, rest)


def first_device_list(
    account: str, group: str, name: str, dh_key: bytes, linked_at: int
) -> DeviceList:
    """Version 1: the account's first device, id 1 (also what an upgrade produces)."""
    return DeviceList(account, group, 1, (Device(1, check_device_name(name), dh_key, linked_at),))


def _check_shape(dlist: DeviceList) -> None:
    if not is_valid_username(dlist.account):
        raise DeviceListError("device list names an invalid account")
    if type(dlist.version) is not int or not 1 <= dlist.version <= MAX_VERSION:
        raise DeviceListError("device list version must be in [1, 2^63)")
    if not 1 <= len(dlist.devices) <= MAX_DEVICES:
        raise DeviceListError(f"a device list has 1 to {MAX_DEVICES} devices")
    try:
        for d in dlist.devices:
            expect_int(d.id, 1, MAX_DEVICE_ID)
            check_device_name(d.name)
            expect_bytes(d.dh_key)
            expect_int(d.linked_at, 0, MAX_VERSION)
    except ValueError as exc:
        raise DeviceListError(f"bad device entry: {exc}") from None
    ids = [d.id for d in dlist.devices]
    if ids != sorted(set(ids)):
        raise DeviceListError("device ids must be unique and sorted")
    keys = [d.dh_key for d in dlist.devices]
    if len(set(keys)) != len(keys):
        raise DeviceListError("two devices share one DH key")


def verify_device_list(
    signed: SignedDeviceList, *, account: str, identity: IdentityPublic, group: DHGroup
) -> DeviceList:
    """Check a list against the identity the client pinned for `account` (rules 1-2).

    InvalidSignature or InvalidKey if the signature fails (before any parsing);
    DeviceListError if the body is malformed or names another account or group.
    """
    if not isinstance(signed.body, bytes) or len(signed.body) > MAX_BODY:
        raise DeviceListError("device list body too large")
    if not isinstance(signed.sig, bytes) or len(signed.sig) != ED25519_SIG_LEN:
        raise DeviceListError("device list signature must be 64 bytes")
    ed25519_verify(identity.sign_key, DEVICE_LIST_CONTEXT + signed.body, signed.sig)
    dlist = DeviceList.decode(signed.body)
    if dlist.account != account:
        raise DeviceListError(f"device list is for {dlist.account!r}, expected {account!r}")
    if dlist.group != group.name or identity.group != group.name:
        raise DeviceListError(f"device list is for group {dlist.group!r}, not {group.name!r}")
    for d in dlist.devices:
        group.check_public(d.dh_key)
    return dlist


def accept_update(
    held: SignedDeviceList | None,
    held_list: DeviceList | None,
    new: SignedDeviceList,
    new_list: DeviceList,
) -> DeviceChanges:
    """Rule 3: may the verified `new_list` replace the one held? Returns what changed.

    StaleDeviceList for a lower version (a replayed old list) or for a different list
    under the same version (a fork); an identical list changes nothing.
    """
    if held is None or held_list is None:
        return DeviceChanges(new_list.devices, (), ())
    if new_list.version < held_list.version:
        raise StaleDeviceList(
            f"device list version {new_list.version} is older than {held_list.version}"
        )
    if new_list.version == held_list.version:
        if new.body != held.body:
            raise StaleDeviceList(f"two different device lists claim version {new_list.version}")
        return DeviceChanges((), (), ())
    old = {d.id: d for d in held_list.devices}
    cur = {d.id: d for d in new_list.devices}
    return DeviceChanges(
        added=tuple(d for i, d in cur.items() if i not in old),
        removed=tuple(d for i, d in old.items() if i not in cur),
        rekeyed=tuple(d for i, d in cur.items() if i in old and old[i].dh_key != d.dh_key),
    )


def check_device_identity(
    dlist: DeviceList, device_id: int, identity: IdentityPublic, account_identity: IdentityPublic
) -> Device:
    """The listed device whose bundle or envelope carries `identity`, else UnknownDevice.

    The identity record must use the account's Ed25519 key (which also signed its DH key
    and prekeys, see crypto.identity) and the DH key the signed list gives `device_id`.
    """
    device = dlist.device(device_id)
    if device is None:
        raise UnknownDevice(f"device {device_id} is not in {dlist.account}'s signed list")
    if identity.sign_key != account_identity.sign_key or identity.group != dlist.group:
        raise UnknownDevice(f"device {device_id} is not signed by {dlist.account}'s identity")
    if identity.dh_key != device.dh_key:
        raise UnknownDevice(f"device {device_id}'s key differs from the signed list")
    return device


__all__ = [
    "DEVICE_LIST_CONTEXT",
    "MAX_DEVICES",
    "Device",
    "DeviceChanges",
    "DeviceList",
    "accept_update",
    "check_device_identity",
    "check_device_name",
    "first_device_list",
    "verify_device_list",
]
