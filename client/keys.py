"""Key upkeep against the relay: publish our identity and prekeys (DH and KEM) after
login, top up one-time prekeys and rotate the signed prekey and the last-resort KEM
prekey later, in frames that fit `max_frame`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, Final

import msgpack

from hushwire.client.connection import RelayConnection
from hushwire.client.prekeys import KeyUpload
from hushwire.client.session import SessionManager
from hushwire.common import messages as wire
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import PQ_BUNDLE_VERSION

MAX_PREKEYS_PER_UPLOAD: Final = 200  # protocol.md publish_keys


class KeyUpkeep:
    """One profile's published keys; `notify` tells the user what could not be uploaded."""

    def __init__(self, sessions: SessionManager, notify: Callable[[str], None]) -> None:
        self._sessions = sessions
        self._notify = notify
        self._lock = asyncio.Lock()
        # Set by `login --replace-identity`: the first upload may replace the account's
        # identity (and so unlink its other devices); never set on its own.
        self.replace_identity = False

    async def upload(
        self,
        conn: RelayConnection,
        *,
        relay_has_identity: bool,
        prekeys_left: int,
        kem_prekeys_left: int,
        key_version: int,
    ) -> None:
        async with self._lock:
            upload = await self._sessions.keys.plan_upload(
                relay_has_identity=relay_has_identity,
                prekeys_left=prekeys_left,
                kem_prekeys_left=kem_prekeys_left,
                key_version=key_version,
            )
            if upload is None:
                return
            try:
                await self._publish(conn, upload)
            except RequestError as exc:
                if exc.code == ErrorCode.ACCOUNT_HAS_DEVICES:
                    raise  # this profile must not become the account: login says why
                self._notify(f"could not upload keys: {exc.message}")

    async def _publish(self, conn: RelayConnection, upload: KeyUpload) -> None:
        """Publish in as many frames as the relay's max_frame needs (identity first)."""
        for i, part in enumerate(split_upload(upload, conn.max_frame)):
            await conn.request(
                wire.PublishKeys,
                **publish_fields(part),
                replace_identity=self.replace_identity and part.identity is not None,
            )
            if i == 0:
                self.replace_identity = False
                await self._sessions.keys.upload_done(upload)

    async def maintain(self, conn: RelayConnection) -> None:
        """Top up one-time prekeys and rotate the signed prekey when due."""
        count = await conn.request(wire.PrekeyCount)
        await self.upload(
            conn,
            relay_has_identity=True,
            prekeys_left=count.count,
            kem_prekeys_left=count.kem_count,
            key_version=PQ_BUNDLE_VERSION,
        )


def publish_fields(part: KeyUpload) -> dict[str, Any]:
    return {
        "identity": part.identity,
        "signed_prekey": part.signed_prekey,
        "one_time_prekeys": part.one_time_prekeys,
        "kem_last_resort": part.kem_last_resort,
        "one_time_kem_prekeys": part.one_time_kem_prekeys,
    }


def split_upload(upload: KeyUpload, max_frame: int) -> list[KeyUpload]:
    """Cut an upload into parts whose `publish_keys` frames fit under `max_frame`.

    The identity, signed prekey and last-resort KEM prekey go in the first part; the
    one-time DH and KEM prekeys fill it and the parts after it.
    """

    def size(part: KeyUpload) -> int:
        frame = wire.PublishKeys(id=2**63 - 1, **publish_fields(part)).to_wire()
        return len(msgpack.packb(frame, use_bin_type=True))

    parts: list[KeyUpload] = []
    current = dataclasses.replace(upload, one_time_prekeys=(), one_time_kem_prekeys=())
    empty = KeyUpload(None, None, ())
    keys: list[tuple[str, Any]] = [("one_time_prekeys", k) for k in upload.one_time_prekeys]
    keys += [("one_time_kem_prekeys", k) for k in upload.one_time_kem_prekeys]
    for name, key in keys:
        grown = dataclasses.replace(current, **{name: (*getattr(current, name), key)})
        if len(getattr(grown, name)) > MAX_PREKEYS_PER_UPLOAD or size(grown) > max_frame:
            parts.append(current)
            current = dataclasses.replace(empty, **{name: (key,)})
        else:
            current = grown
    parts.append(current)
    return parts
