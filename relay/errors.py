"""Errors of the relay package: storage, schema, accounts and TLS material.

    common.errors.HushwireError
    └── RelayError                 root of this module; never crosses the wire as-is
        ├── StoreError             the database failed or the store is closed (internal)
        │   └── StoreUnavailable   the database server cannot be reached (unavailable)
        ├── SchemaError            the db schema and this code do not match
        │   ├── SchemaTooNew       the db was migrated by a newer hushwire: refuse
        │   ├── SchemaOutdated     the db needs `hushwire-admin migrate` first
        │   └── NotHushwireDb      the file is some other SQLite database (or not SQLite)
        ├── UserExists             add-user for a name that is taken
        ├── UnknownUser            an admin command names a user that does not exist
        ├── DbLocked               a relay (or a restore) already holds the db's lock file
        ├── ControlError           the running relay's control socket failed to answer
        ├── BackupError            a backup target exists, or a backup file is damaged
        ├── ProxyHeaderError       a trusted proxy's connection lacks a valid PROXY v2 header
        └── TlsMaterialError       certificate/key files missing, half-present or unusable

Wire-level refusals (unknown recipient, full mailbox, bad keys) stay
`common.errors.RequestError` with their wire code, because handlers send them to
clients unchanged. Everything here is for operators and the relay itself.
"""

from __future__ import annotations

from hushwire.common.errors import ErrorCode, HushwireError


class RelayError(HushwireError):
    """A relay-side failure that is not a refusal of a client request."""

    code = ErrorCode.INTERNAL


class StoreError(RelayError):
    """The database failed (or the store was closed); nothing was reported as stored."""

    code = ErrorCode.INTERNAL


class StoreUnavailable(StoreError):
    """The database server cannot be reached (down, restarting, network): nothing was
    stored, and the same request will work once it is back."""

    code = ErrorCode.UNAVAILABLE
    retry_after = 1.0  # seconds: what the client is told to wait before retrying


class SchemaError(RelayError):
    """The database schema does not match what this version of hushwire expects."""

    code = ErrorCode.INTERNAL


class SchemaTooNew(SchemaError):
    """The db was written by a newer hushwire; running older code on it could corrupt it."""


class SchemaOutdated(SchemaError):
    """The db is at an older schema version; run `hushwire-admin migrate`."""


class NotHushwireDb(SchemaError):
    """The file is not a hushwire database."""


class UserExists(RelayError):
    """A user with this name already exists."""

    code = ErrorCode.BAD_REQUEST


class UnknownUser(RelayError):
    """No user with this name exists."""

    code = ErrorCode.UNKNOWN_USER


class TlsMaterialError(RelayError):
    """Certificate or key files are missing, inconsistent or unreadable."""


class DbLocked(RelayError):
    """Another process holds the database's lock: a running relay, or a restore."""


class ControlError(RelayError):
    """The running relay's control socket did not answer, or answered with an error."""


class BackupError(RelayError):
    """A backup would overwrite a file, or a file to restore is missing or damaged."""


class ProxyHeaderError(RelayError):
    """A connection from a trusted proxy did not open with a valid PROXY v2 header."""
