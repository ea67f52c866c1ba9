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
    INTERNAL = "internal"
    # Local-only codes (never sent by the relay).
    CRYPTO = "crypto"
    CONNECTION = "connection"


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

    `retry_after` (seconds) is set for rate limits so a client can say when to retry.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retry_after: float | None = None,
        versions: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.versions = versions  # unsupported_version: the versions the relay speaks


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
