"""Every error the client package raises, each with a stable `kind` for scripts.

    common.errors.HushwireError
    └── ClientError                 root of this module; `kind` is a stable string
        ├── ProfileError            the local profile cannot be used
        │   ├── ProfileMissing      no profile in that directory (run `hushwire login`)
        │   ├── ProfileLocked       another hushwire process has the profile open
        │   ├── WrongPassphrase     the passphrase does not open the profile
        │   ├── ProfileCorrupt      a stored blob fails authentication, or a schema too new
        │   └── ProfileMismatch     the profile belongs to another user or relay group
        ├── ConnectionClosed        the relay is unreachable or the connection dropped
        ├── CertificateMismatch     the relay's certificate is not the pinned one
        ├── UnknownContact          no contact of that name in the profile
        ├── MessageHeld             the contact's identity key changed: kept until `trust`
        ├── MessageTooLong          the text does not fit the relay's frame limit
        └── BadBundle               the relay handed out keys that do not verify

Refusals by the relay stay `common.errors.RequestError` (with its wire code and
`retry_after`), and crypto failures of received envelopes are `common.errors.CryptoError`;
the client reports those as events rather than raising them at the user.
"""

from __future__ import annotations

from hushwire.common.errors import ErrorCode, HushwireError


class ClientError(HushwireError):
    """A client-side failure; `kind` is stable and safe to match in scripts."""

    code = ErrorCode.INTERNAL
    kind = "client_error"


class ProfileError(ClientError):
    """The local profile cannot be used."""

    kind = "profile_error"


class ProfileMissing(ProfileError):
    """There is no profile in that directory yet."""

    kind = "profile_missing"


class ProfileLocked(ProfileError):
    """Another hushwire process has the profile open (two would fork the ratchets)."""

    kind = "profile_locked"


class WrongPassphrase(ProfileError):
    """The passphrase does not open this profile."""

    kind = "wrong_passphrase"


class ProfileCorrupt(ProfileError):
    """Stored data fails authentication, or the profile was written by a newer hushwire."""

    code = ErrorCode.CRYPTO
    kind = "profile_corrupt"


class ProfileMismatch(ProfileError):
    """The profile belongs to another user, or the relay now uses another DH group."""

    kind = "profile_mismatch"


class ConnectionClosed(ClientError):
    """The connection to the relay is gone; `reason` is the relay's error if it sent one."""

    code = ErrorCode.CONNECTION
    kind = "connection_closed"

    def __init__(self, message: str, reason: object | None = None) -> None:
        super().__init__(message)
        # The relay's fatal `Error` frame (common.messages.Error), when there was one.
        self.reason = reason

    @property
    def fatal_code(self) -> str | None:
        """The relay's error code when it closed the connection on purpose."""
        return getattr(self.reason, "code", None)


class CertificateMismatch(ClientError):
    """The relay presented a certificate other than the pinned one."""

    code = ErrorCode.CONNECTION
    kind = "certificate_mismatch"


class UnknownContact(ClientError):
    """No contact of that name: nothing has been exchanged with them yet."""

    kind = "unknown_contact"


class MessageHeld(ClientError):
    """The contact's identity key changed; the message waits in the outbox until `trust`."""

    kind = "message_held"

    def __init__(self, contact: str) -> None:
        super().__init__(
            f"{contact}'s identity key has changed; the message is held and not sent. "
            f"Compare safety numbers (`hushwire verify {contact}`), then accept the new key "
            f"with `hushwire trust {contact}` to send it."
        )
        self.contact = contact


class MessageTooLong(ClientError):
    """The text does not fit into one envelope under the relay's frame limit."""

    kind = "message_too_long"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message is {size} bytes of UTF-8; this relay allows at most {limit} bytes "
            "per message (it is not split automatically)"
        )
        self.size = size
        self.limit = limit


class BadBundle(ClientError):
    """The relay served keys for a user that do not verify; nothing was sent."""

    code = ErrorCode.CRYPTO
    kind = "bad_bundle"


class UnknownGroup(ClientError):
    """No group of that name here (or several: then the id tells them apart)."""

    kind = "unknown_group"


class GroupCommandError(ClientError):
    """A group command this profile cannot carry out (not an admin, too many members,
    a bad name, not a member any more); nothing was changed or sent."""

    kind = "group_command"
