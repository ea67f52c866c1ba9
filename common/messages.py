"""Every message of the wire protocol, as frozen dataclasses.

Grammar (docs/protocol.md is the full specification):

    client -> relay   requests, each with an `id` chosen by the client
        hello login publish_keys fetch_bundle prekey_count send ack who ping
        devices: fetch_devices publish_devices send_devices
        linking: link_start link_accept (old device)  link_fetch link_join (new device)
    relay -> client   exactly one reply per request, echoing its `id`
        ok (fields depend on the request)
        error {code, message, retry_after?, device_lists?}
    relay -> client   pushes, without `id`
        deliver key_changed presence devices_changed link_request

A message's wire form is a msgpack map: `t` (its type) plus its fields under their own
names. Binary fields stay binary. `to_wire` builds that map; decoding, which validates
every field's type from these dataclass annotations, lives in `hushwire.common.codec`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from hushwire.common.errors import ErrorCode
from hushwire.common.keys import (
    IdentityPublic,
    KemPrekey,
    OneTimePrekey,
    PrekeyBundle,
    SignedDeviceList,
    SignedPrekey,
)

# Version 2 adds PQXDH keys (KEM prekeys in publish_keys, version-2 bundles, KEM counts).
# Fields it added have defaults, so a version-1 peer may leave them out.
PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)  # what this code can serve; a relay may switch 1 off

# What a version-2 relay does beyond the version it agreed (hello's `features`): a relay
# of the same version built before a feature drops or refuses its fields, so a client
# uses one only when named (docs/protocol.md "hello").
FEATURE_ACK_NO_REPLY = "ack_no_reply"  # `ack` with a nil id gets no reply
FEATURE_GROUP_PAYLOAD = "group_payload"  # `send_devices` carries a group payload
RELAY_FEATURES = (FEATURE_ACK_NO_REPLY, FEATURE_GROUP_PAYLOAD)
_SCALARS = frozenset({int, str, bytes, float, bool, type(None)})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class Message:
    """Base of all messages; `TYPE` is the wire `t`."""

    __slots__ = ()
    TYPE: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        cls = type(self)
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(
                f.name
                for f in dataclasses.fields(self)  # type: ignore[arg-type]
            )
        out: dict[str, Any] = {"t": self.TYPE}
        for name in names:
            value = getattr(self, name)
            # Scalars (int, str, bytes, None) go as they are; only records need walking.
            out[name] = value if type(value) in _SCALARS else _to_wire(value)
        return out


class Request(Message):
    """A client request; the relay answers with exactly one `REPLY` or an `Error`."""

    __slots__ = ()
    REPLY: ClassVar[type[Reply]]
    id: int


class Reply(Message):
    __slots__ = ()
    TYPE = "ok"
    id: int


class Push(Message):
    """Sent by the relay on its own initiative; carries no request id."""

    __slots__ = ()


# --- replies -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HelloOk(Reply):
    id: int
    version: int
    relay: str
    group: str  # the DH group every user of this relay uses, e.g. "x25519"
    group_params: str | None  # PEM DH parameters for a custom finite-field group
    max_frame: int
    idle_timeout: float
    features: tuple[str, ...] = ()  # v2: RELAY_FEATURES of this relay; absent: none


@dataclass(frozen=True, slots=True)
class LoginOk(Reply):
    id: int
    user: str
    prekeys_left: int
    has_identity: bool
    kem_prekeys_left: int = 0  # v2: one-time KEM prekeys left
    key_version: int = 0  # v2: bundle version of the keys the relay holds (0: none)


@dataclass(frozen=True, slots=True)
class PublishOk(Reply):
    id: int
    prekeys_left: int
    kem_prekeys_left: int = 0  # v2


@dataclass(frozen=True, slots=True)
class BundleOk(Reply):
    id: int
    bundle: PrekeyBundle


@dataclass(frozen=True, slots=True)
class CountOk(Reply):
    id: int
    count: int
    kem_count: int = 0  # v2


@dataclass(frozen=True, slots=True)
class SendOk(Reply):
    id: int
    mids: tuple[int, ...]
    ts: int

    def to_wire(self) -> dict[str, Any]:  # hot path: the generic walk, unrolled
        return {"t": "ok", "id": self.id, "mids": list(self.mids), "ts": self.ts}


@dataclass(frozen=True, slots=True)
class AckOk(Reply):
    id: int
    deleted: int


@dataclass(frozen=True, slots=True)
class Presence:
    user: str
    online: bool


@dataclass(frozen=True, slots=True)
class WhoOk(Reply):
    id: int
    users: tuple[Presence, ...]
    next: str | None = None  # more users follow: ask again with `after` set to this


@dataclass(frozen=True, slots=True)
class Pong(Reply):
    id: int


# Accounts with several devices (docs/protocol.md, "Devices" and "Linking").


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """When one of the caller's own devices was last connected (Unix seconds, 0 never)."""

    device: int
    last_seen: int


@dataclass(frozen=True, slots=True)
class DevicesOk(Reply):
    id: int
    device_list: SignedDeviceList | None  # nil: the account has not published one yet
    seen: tuple[DeviceSeen, ...]  # filled only when the caller asks for its own account


@dataclass(frozen=True, slots=True)
class PublishDevicesOk(Reply):
    id: int
    version: int


@dataclass(frozen=True, slots=True)
class LinkStartOk(Reply):
    id: int
    expires_at: int  # Unix seconds


@dataclass(frozen=True, slots=True)
class LinkFetchOk(Reply):
    id: int
    user: str
    ephemeral: bytes


@dataclass(frozen=True, slots=True)
class LinkJoinOk(Reply):
    """The new device's credential, and the old device's sealed grant."""

    id: int
    user: str
    device: int
    token: str
    sealed: bytes

    def __repr__(self) -> str:
        return (
            f"LinkJoinOk(id={self.id}, user={self.user!r}, device={self.device}, token=<redacted>)"
        )


@dataclass(frozen=True, slots=True)
class LinkAcceptOk(Reply):
    id: int
    device: int


@dataclass(frozen=True, slots=True)
class Error(Message):
    """A refused request (with its `id`) or a fatal connection error (`id` None)."""

    TYPE = "error"
    id: int | None
    code: str
    message: str
    retry_after: float | None = None
    versions: tuple[int, ...] | None = None  # unsupported_version: what the relay speaks
    # `mismatched_devices`: the current signed lists of the accounts the send got wrong.
    device_lists: tuple[SignedDeviceList, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "t": "error",
            "id": self.id,
            "code": self.code,
            "message": self.message,
            "retry_after": self.retry_after,
        }
        if self.versions is not None:  # only unsupported_version carries it
            out["versions"] = list(self.versions)
        if self.device_lists:  # only the one code that uses it pays for the field
            out["device_lists"] = [{"body": s.body, "sig": s.sig} for s in self.device_lists]
        return out

    @property
    def error_code(self) -> ErrorCode | None:
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None


# --- requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(Request):
    TYPE = "hello"
    REPLY = HelloOk
    id: int
    versions: tuple[int, ...]
    client: str


@dataclass(frozen=True, slots=True)
class Login(Request):
    TYPE = "login"
    REPLY = LoginOk
    id: int
    user: str
    token: str
    device: int | None = None  # which of the account's devices; nil means device 1
    # The account identity's Ed25519 key this device holds: a login whose key is not the
    # account's is refused (account_has_devices) before it can replace a live session.
    sign_key: bytes | None = None

    def __repr__(self) -> str:  # never let a token reach a log line
        return f"Login(id={self.id}, user={self.user!r}, device={self.device}, token=<redacted>)"


@dataclass(frozen=True, slots=True)
class PublishKeys(Request):
    TYPE = "publish_keys"
    REPLY = PublishOk
    id: int
    identity: IdentityPublic | None
    signed_prekey: SignedPrekey | None
    one_time_prekeys: tuple[OneTimePrekey, ...]
    kem_last_resort: KemPrekey | None = None  # v2
    one_time_kem_prekeys: tuple[KemPrekey, ...] = ()  # v2
    # A different identity is refused unless this is set: a new profile must link, and
    # only an explicit reset may replace the account's identity (and unlink the rest).
    replace_identity: bool = False


@dataclass(frozen=True, slots=True)
class FetchBundle(Request):
    TYPE = "fetch_bundle"
    REPLY = BundleOk
    id: int
    user: str
    device: int | None = None  # nil means device 1


@dataclass(frozen=True, slots=True)
class PrekeyCount(Request):
    TYPE = "prekey_count"
    REPLY = CountOk
    id: int


@dataclass(frozen=True, slots=True)
class Send(Request):
    TYPE = "send"
    REPLY = SendOk
    id: int
    to: tuple[str, ...]
    body: bytes

    def __repr__(self) -> str:
        return f"Send(id={self.id}, to={self.to!r}, body=<{len(self.body)} bytes>)"


@dataclass(frozen=True, slots=True)
class Ack(Request):
    """`id` nil (protocol version 2): no reply; a failure closes the connection instead."""

    TYPE = "ack"
    REPLY = AckOk
    id: int | None  # type: ignore[assignment]
    mids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Who(Request):
    TYPE = "who"
    REPLY = WhoOk
    id: int
    after: str | None = None  # the page of names sorting after this one (None: the first)


@dataclass(frozen=True, slots=True)
class Ping(Request):
    TYPE = "ping"
    REPLY = Pong
    id: int


@dataclass(frozen=True, slots=True)
class FetchDevices(Request):
    TYPE = "fetch_devices"
    REPLY = DevicesOk
    id: int
    user: str


@dataclass(frozen=True, slots=True)
class PublishDevices(Request):
    """A new signed list for the caller's account; devices it leaves out are unlinked."""

    TYPE = "publish_devices"
    REPLY = PublishDevicesOk
    id: int
    device_list: SignedDeviceList


@dataclass(frozen=True, slots=True)
class DeviceEnvelope:
    """One sealed envelope for one device of one account."""

    user: str
    device: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ListVersion:
    """The device-list version the sender encrypted for."""

    user: str
    version: int


@dataclass(frozen=True, slots=True)
class SendDevices(Request):
    """One message to every device of its recipients (and the sender's other devices),
    committed all or nothing; `lists` names the version each account's fan-out used.
    `partial`: the envelopes target some of those devices on purpose (a session reset
    goes to the one device whose session died)."""

    TYPE = "send_devices"
    REPLY = SendOk
    id: int
    envelopes: tuple[DeviceEnvelope, ...]
    lists: tuple[ListVersion, ...]
    # A session reset to one device targets some of the expected devices (docs/protocol.md).
    partial: bool = False
    # v2: a group send's encrypted message, carried once for every envelope (absent or
    # nil: none).
    payload: bytes | None = None

    def __repr__(self) -> str:
        size = "" if self.payload is None else f", payload=<{len(self.payload)} bytes>"
        return (
            f"SendDevices(id={self.id}, envelopes={len(self.envelopes)}, "
            f"lists={self.lists!r}, partial={self.partial}{size})"
        )

    def to_wire(self) -> dict[str, Any]:
        # Optional keys are left out at their defaults: a plain send is unchanged on the wire.
        out = Message.to_wire(self)
        if not self.partial:
            del out["partial"]
        if self.payload is None:
            del out["payload"]
        return out


@dataclass(frozen=True, slots=True)
class LinkStart(Request):
    TYPE = "link_start"
    REPLY = LinkStartOk
    id: int
    channel: bytes
    ephemeral: bytes


@dataclass(frozen=True, slots=True)
class LinkFetch(Request):
    TYPE = "link_fetch"
    REPLY = LinkFetchOk
    id: int
    channel: bytes


@dataclass(frozen=True, slots=True)
class LinkJoin(Request):
    TYPE = "link_join"
    REPLY = LinkJoinOk
    id: int
    channel: bytes
    ephemeral: bytes
    sealed: bytes


@dataclass(frozen=True, slots=True)
class LinkAccept(Request):
    TYPE = "link_accept"
    REPLY = LinkAcceptOk
    id: int
    channel: bytes
    device_list: SignedDeviceList
    sealed: bytes


# --- pushes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deliver(Push):
    TYPE = "deliver"
    mid: int  # the relay's mailbox id: what the recipient acks
    sender: str
    ts: int  # when the relay took it (Unix seconds); the sealed envelope has the sender's
    body: bytes
    sender_device: int = 1  # the sending device, as authenticated by its login
    # v2: the payload of the group send this envelope came with; the key is absent from
    # a deliver without one (docs/protocol.md, deliver).
    payload: bytes | None = None

    def __repr__(self) -> str:
        size = "" if self.payload is None else f", payload=<{len(self.payload)} bytes>"
        return (
            f"Deliver(mid={self.mid}, sender={self.sender!r}, body=<{len(self.body)} bytes>{size})"
        )

    def to_wire(self) -> dict[str, Any]:  # hot path: the generic walk, unrolled
        out = {
            "t": "deliver",
            "mid": self.mid,
            "sender": self.sender,
            "ts": self.ts,
            "body": self.body,
            "sender_device": self.sender_device,
        }
        if self.payload is not None:
            out["payload"] = self.payload
        return out


@dataclass(frozen=True, slots=True)
class KeyChanged(Push):
    TYPE = "key_changed"
    user: str
    identity: IdentityPublic


@dataclass(frozen=True, slots=True)
class PresenceChanged(Push):
    TYPE = "presence"
    user: str
    online: bool


@dataclass(frozen=True, slots=True)
class DevicesChanged(Push):
    TYPE = "devices_changed"
    user: str
    device_list: SignedDeviceList


@dataclass(frozen=True, slots=True)
class LinkRequestPush(Push):
    TYPE = "link_request"
    channel: bytes
    ephemeral: bytes
    sealed: bytes


REQUESTS: dict[str, type[Request]] = {
    c.TYPE: c
    for c in (
        Hello,
        Login,
        PublishKeys,
        FetchBundle,
        PrekeyCount,
        Send,
        Ack,
        Who,
        Ping,
        FetchDevices,
        PublishDevices,
        SendDevices,
        LinkStart,
        LinkFetch,
        LinkJoin,
        LinkAccept,
    )
}
PUSHES: dict[str, type[Push]] = {
    c.TYPE: c for c in (Deliver, KeyChanged, PresenceChanged, DevicesChanged, LinkRequestPush)
}


# --- encoding: records inside a message, walked into maps and arrays ---------------


def _to_wire(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_to_wire(v) for v in value]
    return value
