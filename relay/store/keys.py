"""Checks on published keys, made before any backend sees them."""

from __future__ import annotations

from collections.abc import Sequence

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import IdentityPublic, KemPrekey, OneTimePrekey, SignedPrekey
from hushwire.relay.store.records import (
    MAX_KEY_BYTES,
    MAX_ONE_TIME_PREKEYS,
    MAX_PREKEY_ID,
    KemUpload,
)


def _check_blob(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or not 0 < len(value) <= MAX_KEY_BYTES:
        raise RequestError(ErrorCode.BAD_KEYS, f"{what} must be 1..{MAX_KEY_BYTES} bytes")
    return value


def _check_prekey_id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(ErrorCode.BAD_KEYS, f"{what} id must be an integer")
    if not 0 <= value <= MAX_PREKEY_ID:
        raise RequestError(ErrorCode.BAD_KEYS, f"{what} id out of range 0..{MAX_PREKEY_ID}")
    return value


def check_publish(
    identity: IdentityPublic | None,
    signed_prekey: SignedPrekey | None,
    one_time: Sequence[OneTimePrekey],
) -> list[tuple[int, bytes]]:
    """Raise BAD_KEYS for a malformed upload; return the one-time prekeys as (id, key)."""
    if identity is not None:
        if not isinstance(identity.group, str) or not 0 < len(identity.group) <= 64:
            raise RequestError(ErrorCode.BAD_KEYS, "identity group must be a short name")
        _check_blob(identity.sign_key, "identity sign_key")
        _check_blob(identity.dh_key, "identity dh_key")
        _check_blob(identity.dh_sig, "identity dh_sig")
    if signed_prekey is not None:
        _check_prekey_id(signed_prekey.id, "signed prekey")
        _check_blob(signed_prekey.key, "signed prekey")
        _check_blob(signed_prekey.sig, "signed prekey signature")
    if len(one_time) > MAX_ONE_TIME_PREKEYS:
        raise RequestError(
            ErrorCode.BAD_KEYS, f"at most {MAX_ONE_TIME_PREKEYS} one-time prekeys per user"
        )
    return [
        (_check_prekey_id(k.id, "one-time prekey"), _check_blob(k.key, "one-time prekey"))
        for k in one_time
    ]


def check_kem_publish(last_resort: KemPrekey | None, one_time: Sequence[KemPrekey]) -> KemUpload:
    """Raise BAD_KEYS for malformed KEM prekeys; return them as (id, key, sig) rows."""
    if len(one_time) > MAX_ONE_TIME_PREKEYS:
        raise RequestError(
            ErrorCode.BAD_KEYS, f"at most {MAX_ONE_TIME_PREKEYS} one-time KEM prekeys per user"
        )

    def row(key: KemPrekey, what: str) -> tuple[int, bytes, bytes]:
        return (
            _check_prekey_id(key.id, what),
            _check_blob(key.key, what),
            _check_blob(key.sig, f"{what} signature"),
        )

    return KemUpload(
        None if last_resort is None else row(last_resort, "last-resort KEM prekey"),
        tuple(row(k, "one-time KEM prekey") for k in one_time),
    )


def check_bundle_version(target: str, held: int, wanted: int) -> None:
    """UNSUPPORTED_VERSION when `target`'s keys are not for the fetcher's protocol."""
    if held < wanted:
        raise RequestError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"{target} has not published protocol version {wanted} (post-quantum) keys:"
            f" their client speaks only version {held}",
            versions=(held,),
        )
    if held > wanted:
        raise RequestError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"{target} uses protocol version {held}; this client speaks version {wanted}:"
            " upgrade it to reach them",
            versions=(held,),
        )
