"""Key upkeep against the relay: publish our identity and prekeys after login, top up
one-time prekeys and rotate the signed prekey later, in frames that fit `max_frame`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import msgpack

from hushwire.client.connection import RelayConnection
from hushwire.client.session import KeyUpload, SessionManager
from hushwire.common import messages as wire
from hushwire.common.errors import ErrorCode, RequestError

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
        self, conn: RelayConnection, *, relay_has_identity: bool, prekeys_left: int
    ) -> None:
        async with self._lock:
            upload = await self._sessions.plan_upload(
                relay_has_identity=relay_has_identity, prekeys_left=prekeys_left
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
                identity=part.identity,
                signed_prekey=part.signed_prekey,
                one_time_prekeys=part.one_time_prekeys,
                replace_identity=self.replace_identity and part.identity is not None,
            )
            if i == 0:
                self.replace_identity = False
                await self._sessions.upload_done(upload)

    async def maintain(self, conn: RelayConnection) -> None:
        """Top up one-time prekeys and rotate the signed prekey when due."""
        count = await conn.request(wire.PrekeyCount)
        await self.upload(conn, relay_has_identity=True, prekeys_left=count.count)


def split_upload(upload: KeyUpload, max_frame: int) -> list[KeyUpload]:
    """Cut an upload into parts whose `publish_keys` frames fit under `max_frame`."""

    def size(part: KeyUpload) -> int:
        frame = wire.PublishKeys(
            id=2**63 - 1,
            identity=part.identity,
            signed_prekey=part.signed_prekey,
            one_time_prekeys=part.one_time_prekeys,
        ).to_wire()
        return len(msgpack.packb(frame, use_bin_type=True))

    parts: list[KeyUpload] = []
    current = KeyUpload(upload.identity, upload.signed_prekey, ())
    for key in upload.one_time_prekeys:
        grown = KeyUpload(current.identity, current.signed_prekey, (*current.one_time_prekeys, key))
        if len(grown.one_time_prekeys) > MAX_PREKEYS_PER_UPLOAD or size(grown) > max_frame:
            parts.append(current)
            current = KeyUpload(None, None, (key,))
        else:
            current = grown
    parts.append(current)
    return parts
