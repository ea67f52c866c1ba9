"""Group sends kept until the relay's `ok`, and sent again after a lost connection.

A change or a message is stored as a `GroupSend` (client/group_store.py) in the
transaction that advances the group's log or transcript; delivering it seals the content
for every listed device in a transaction that stores the envelopes beside the ratchets
they advanced, then sends them in one `send_devices` (client/group_fanout.py). Rows go
out in the order they were stored, one lock around it all, so a member never gets a
newer change or message before an older one from this device. A re-send goes out with
the envelopes already sealed; `mismatched_devices` is answered as for a first send (a
device listed meanwhile gets the same content sealed for it, the payload unchanged).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Final

from hushwire.client.connection import RelayConnection
from hushwire.client.devices import DeviceLists
from hushwire.client.errors import ClientError, ConnectionClosed, MessageHeld
from hushwire.client.events import ClientEvent, Notice
from hushwire.client.group_fanout import Device, send_to_devices
from hushwire.client.group_store import GroupSend, GroupStore
from hushwire.client.session import SessionManager
from hushwire.common.errors import CryptoError, ErrorCode, RequestError
from hushwire.common.messages import DeviceEnvelope

# Refusals that say "later" (the relay's database is unreachable, it is stopping): the
# send stays queued, as after a lost connection.
RETRY_LATER: Final = frozenset(
    {ErrorCode.UNAVAILABLE, ErrorCode.SHUTTING_DOWN, ErrorCode.INTERNAL, ErrorCode.RATE_LIMITED}
)


class GroupOutbox:
    """The group sends of one profile waiting for the relay."""

    def __init__(
        self,
        sessions: SessionManager,
        devices: DeviceLists,
        store: GroupStore,
        emit: Callable[[ClientEvent], None],
    ) -> None:
        self._sessions = sessions
        self._devices = devices
        self._store = store
        self._emit = emit
        self.lock = asyncio.Lock()

    async def flush(self, conn: RelayConnection, mine: frozenset[str] = frozenset()) -> int:
        """Send every waiting row, oldest first; returns how many the relay committed.

        A row the relay refuses for good is dropped (its line marked failed): raised if
        its uid is in `mine`, else shown as a notice. ConnectionClosed, a refusal in
        RETRY_LATER and MessageHeld (a member's key changed: until `trust`) stop the flush
        and keep that row and all after it. Call with `lock` held."""
        sent = 0
        for send in await self._store.sends():
            try:
                await self._deliver(conn, send)
            except (ConnectionClosed, MessageHeld):
                raise
            except RequestError as exc:
                if exc.code in RETRY_LATER:
                    raise
                await self._refused(send, exc, mine)
                continue
            except (ClientError, CryptoError) as exc:
                await self._refused(send, exc, mine)
                continue
            sent += 1
        return sent

    async def _deliver(self, conn: RelayConnection, send: GroupSend) -> None:
        async def content() -> tuple[bytes, bytes | None]:
            return send.content, send.payload

        async def keep(sealed: dict[Device, DeviceEnvelope]) -> None:
            await self._store.keep_send(
                dataclasses.replace(send, sealed=sealed), self._sessions.now_ms()
            )

        await send_to_devices(
            conn, self._sessions, self._devices, send.accounts, content,
            own_devices=send.own_devices, sealed=send.sealed, keep=keep,
        )  # fmt: skip
        async with self._sessions.store.transaction():
            await self._store.drop_send(send.uid)
            if send.line:
                await self._store.set_status(send.line, "sent")

    async def _refused(
        self, send: GroupSend, exc: RequestError | ClientError | CryptoError, mine: frozenset[str]
    ) -> None:
        async with self._sessions.store.transaction():
            await self._store.drop_send(send.uid)
            if send.line:
                await self._store.set_status(send.line, "failed")
        if send.uid in mine:
            raise exc
        self._emit(Notice(f"a group send was refused and is dropped: {exc.message}"))
