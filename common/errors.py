"""Every error hushwire raises, with the stable codes that cross the wire.

    HushwireError                 root; `code` is a stable wire code (ErrorCode)
    ├── LocalProtocolError        we misused the protocol (a bug on our side)
    ├── RemoteProtocolError       the peer sent something malformed or out of order
    │   ├── FrameTooLarge         a length prefix over the configured limit
    │   └── MalformedFrame        bytes that are not a valid frame or message
    ├── RequestError              a well-formed request the relay refused (carries code)
    └── CryptoError               anything that must never be shown as a valid message
        ├── InvalidKey            bad group element, low-order point, wrong length
        ├── InvalidSignature      a signature that does not verify
        ├── DeviceListError       a device list or device that must not be used
        │   ├── StaleDeviceList   a lower version than one already seen, or a fork
        │   └── UnknownDevice     a device not in the list the identity signed
        ├── LinkError             a link exchange that must stop here
        │   ├── LinkExpired       the link code is past its expiry
        │   └── LinkUsed          the link code was already used once
        ├── UnknownPrekey         an initial message names a prekey we do not hold
        ├── MalformedEnvelope     envelope bytes that do not parse (a DecryptionError)
        ├── DecryptionError       AEAD failure: tampered, wrong key, wrong recipient
        ├── ReplayError           a message key already used (or skipped and consumed)
        ├── TooManySkipped        a jump past MAX_SKIP, or the skipped-key store full
        └── GroupError            a group change or message that must not be applied
            ├── GroupChangeRejected   bad signature, signer not allowed, invalid change
            ├── StaleGroupChange      an epoch already passed: a replay or a rollback
            ├── MissingGroupChanges   names a later epoch: hold it until the changes come
            ├── GroupForked           another membership or history for a known position
            └── GroupMessageRejected  from a non-member, before we joined, broken chain

Errors cross the wire only as a code and a short human message, never a traceback.
"""

from __future__ import annotations

from enum import StrEnum

from hushwire.common.keys import SignedDeviceList


class ErrorCode(StrEnum):
    """Stable codes used in `error` frames; docs/protocol.md lists their meaning."""

    BAD_FRAME = "bad_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    BAD_REQUEST = "bad_request"
    UNSUPPORTED_VERSION = "unsupported_version"
    OUT_OF_ORDER = "out_of_order"
    AUTH_FAILED = "auth_failed"
    USER_DISABLED = "user_disabled"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_USER = "unknown_user"
    NO_KEYS = "no_keys"
    BAD_KEYS = "bad_keys"
    MAILBOX_FULL = "mailbox_full"
    IDLE_TIMEOUT = "idle_timeout"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    SESSION_REPLACED = "session_replaced"
    SHUTTING_DOWN = "shutting_down"
    REPLY_TOO_LARGE = "reply_too_large"
    STORAGE_FULL = "storage_full"
    UNAVAILABLE = "unavailable"  # the relay's database is unreachable: retry (retry_after)
    INTERNAL = "internal"
    # Accounts with several devices (docs/protocol.md, "Devices").
    MISMATCHED_DEVICES = "mismatched_devices"
    STALE_DEVICE_LIST = "stale_device_list"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_LIMIT = "device_limit"
    LINK_FAILED = "link_failed"
    ACCOUNT_HAS_DEVICES = "account_has_devices"
    # A send_devices over its size limits (payload, or payload and envelopes together).
    SEND_TOO_LARGE = "send_too_large"
    # Local-only codes (never sent by the relay).
    CRYPTO = "crypto"
    CONNECTION = "connection"


# The longest part of a peer's input an error message may quote, and the longest error
# message a relay sends: a reply must never grow with hostile input (issue #11.6).
ECHO_LIMIT = 40
MAX_ERROR_MESSAGE = 500


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """`repr(value)`, cut to `limit` characters: what an error may quote of its input."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 3]}... ({len(text)} chars)"


class HushwireError(Exception):
    """Root of every hushwire error."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str = "", *, code: ErrorCode | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or "")
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class LocalProtocolError(HushwireError):
    """We tried to do something the protocol does not allow in this state."""

    code = ErrorCode.INTERNAL


class RemoteProtocolError(HushwireError):
    """The peer sent something malformed or out of order."""

    code = ErrorCode.BAD_REQUEST


class FrameTooLarge(RemoteProtocolError):
    """A frame's length prefix exceeds the configured limit."""

    code = ErrorCode.FRAME_TOO_LARGE


class MalformedFrame(RemoteProtocolError):
    """Bytes that do not decode to a valid frame or message."""

    code = ErrorCode.BAD_FRAME


class RequestError(HushwireError):
    """The relay refused a well-formed request; `code` says why.

    `retry_after` (seconds) is set for rate limits so a client can say when to retry;
    `device_lists` (the current signed lists) comes with `mismatched_devices`.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retry_after: float | None = None,
        versions: tuple[int, ...] | None = None,
        device_lists: tuple[SignedDeviceList, ...] = (),
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.versions = versions  # unsupported_version: the versions the relay speaks
        self.device_lists = device_lists


class CryptoError(HushwireError):
    """A cryptographic check failed; the input must never be shown as valid."""

    code = ErrorCode.CRYPTO


class InvalidKey(CryptoError):
    """A public value is not a valid element of the group (or has the wrong size)."""


class InvalidSignature(CryptoError):
    """A signature does not verify under the claimed identity key."""


class GroupError(CryptoError):
    """A group membership change or group message that must not be applied or shown."""


class GroupChangeRejected(GroupError):
    """A membership change that fails a check: signature, signer's rights, or content."""


class StaleGroupChange(GroupError):
    """A membership change for an epoch already passed: a replay or a rollback."""


class MissingGroupChanges(GroupError):
    """Names an epoch above the next one: changes in between have not arrived yet.

    Not a forgery on its own: hold the input (bounded) until the changes come.
    """

    def __init__(self, message: str, *, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


class GroupForked(GroupError):
    """A different membership state or change for an epoch we already hold."""


class GroupMessageRejected(GroupError):
    """A group message that must not be shown: non-member, before we joined, bad chain."""


class DecryptionError(CryptoError):
    """Authenticated decryption failed: tampered, replayed state, or wrong recipient."""


class ReplayError(DecryptionError):
    """The message was already decrypted once (its key is gone)."""


class TooManySkipped(DecryptionError):
    """The message would need more skipped keys than the bound allows."""


class UnknownPrekey(CryptoError):
    """An initial message names a prekey we do not hold (used up, rotated, never ours)."""


class MalformedEnvelope(DecryptionError):
    """Envelope bytes that do not parse strictly; handled exactly like a tampered one."""


class DeviceListError(CryptoError):
    """A device list, or a device named by one, that must not be used."""


class StaleDeviceList(DeviceListError):
    """A list older than one already accepted (a replay), or a different list with the
    same version (a fork): the relay is lying or the account's devices disagree."""


class UnknownDevice(DeviceListError):
    """A device (or its keys) that is not in the list signed by the verified identity."""


class LinkError(CryptoError):
    """A device-link exchange that failed a check; the link must not go on."""


class LinkExpired(LinkError):
    """The link code is past its expiry."""


class LinkUsed(LinkError):
    """The link code was already used once."""
