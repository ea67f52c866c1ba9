"""The incoming side of a connection: the push pump (deliveries, key changes, presence)
and `sync`, which waits until everything the relay queued for us is handled and acked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from hushwire.client.connection import RelayConnection
from hushwire.client.devices import DeviceLists
from hushwire.client.errors import ConnectionClosed, ProfileCorrupt
from hushwire.client.events import (
    ClientEvent,
    KeyChanged,
    MessageQuarantined,
    MessageReceived,
    MessageRejected,
    Notice,
    Presence,
    SentElsewhere,
    SessionRestarted,
    utc_from_ms,
)
from hushwire.client.group_inbox import GroupInbox
from hushwire.client.keys import KeyUpkeep
from hushwire.client.outcomes import (
    GroupContent,
    Outcome,
    Received,
    Rejected,
    SentCopy,
    SessionReset,
)
from hushwire.client.session import SessionManager
from hushwire.client.text import safe_line
from hushwire.common import messages as wire
from hushwire.common.errors import HushwireError, RequestError
from hushwire.common.names import is_valid_username

log = logging.getLogger("hushwire.client")

T = TypeVar("T")


class Inbox:
    """Handles pushes one at a time, in order; events go to `emit`."""

    def __init__(
        self,
        sessions: SessionManager,
        keys: KeyUpkeep,
        emit: Callable[[ClientEvent], None],
        online: dict[str, bool],
        restart: Callable[[str, int], Awaitable[None]],
        devices: DeviceLists,
        groups: GroupInbox,
    ) -> None:
        self._sessions = sessions
        self._groups = groups
        self._keys = keys
        self._restart = restart
        self._devices = devices
        self._emit = emit
        self._online = online
        # For sync(): pushes taken off the queue, and those fully handled (and acked).
        self._taken = 0
        self._handled = 0
        self._progress = asyncio.Condition()

    async def pump(self, conn: RelayConnection) -> None:
        while True:
            if conn.pushes.empty() and conn.is_closed:
                return
            getter = asyncio.ensure_future(conn.pushes.get())
            closer = asyncio.ensure_future(conn.wait_closed())
            try:
                done, _ = await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closer.cancel()
                if not getter.done():
                    getter.cancel()
            if getter not in done:
                continue
            self._taken += 1
            try:
                await self._handle_push(conn, getter.result())
            except ConnectionClosed:
                pass  # unacked deliveries come again after the next login
            except HushwireError as exc:
                # One bad push must not stop the receive loop; the user hears of it.
                self._emit(Notice(f"could not handle a push: {exc.message}"))
            except Exception as exc:  # a bug must not end every later delivery either
                log.exception("handling a push failed")
                self._emit(Notice(f"could not handle a push (internal {type(exc).__name__})"))
            finally:
                async with self._progress:
                    self._handled += 1
                    self._progress.notify_all()

    async def _handle_push(self, conn: RelayConnection, push: wire.Push) -> None:
        # Storing a push and telling the UI about it are one step that a dropped
        # connection must not cut: cancelled between COMMIT and the event, a message
        # would be stored but never shown (its redelivery is a duplicate). The ack may be
        # cut: the relay then delivers again and the duplicate is acked.
        if isinstance(push, wire.Deliver):
            await self._know_sender(conn, push)
        outcome = await finish_before_cancel(self._apply(push))
        if not isinstance(push, wire.Deliver) or outcome is None:
            return
        # Stored (or deliberately dropped) first, acked second (protocol.md "ack"); from
        # version 2 without waiting for a reply (a failed ack closes the connection, and
        # the relay pushes the envelope again after the next login).
        with contextlib.suppress(ConnectionClosed, RequestError):
            if conn.supports(wire.FEATURE_ACK_NO_REPLY):
                conn.notify(wire.Ack(id=None, mids=(push.mid,)))
            else:
                await conn.request(wire.Ack, mids=(push.mid,))
        if (
            isinstance(outcome, Received | SessionReset | SentCopy | GroupContent)
            and outcome.used_one_time_prekey
        ):
            with contextlib.suppress(ConnectionClosed, RequestError):
                await self._keys.maintain(conn)
        if isinstance(outcome, Rejected) and outcome.dead_session:
            await self._restart(outcome.contact, outcome.device)

    async def _know_sender(self, conn: RelayConnection, push: wire.Deliver) -> None:
        """Before opening an envelope from a device other than a contact's device 1 (or
        from our own account's), hold a verified list that names it: fetch the account's
        list (and, for a contact never seen, pin their identity from it: see
        `DeviceLists.first_contact`).
        `receive` then refuses the envelope unless the list gives its key."""
        sender, device = push.sender, push.sender_device
        s = self._sessions
        if not is_valid_username(sender) or (sender != s.user and device == 1):
            return
        if await s.lists.listed_key(sender, device) is not None:
            return
        if sender != s.user and await s.store.get_contact(sender) is None:
            await self._devices.first_contact(conn, s, sender)
        reply = await conn.request(wire.FetchDevices, user=sender)
        if reply.device_list is not None:
            await self._devices.on_changed(sender, reply.device_list)

    async def _apply(self, push: wire.Push) -> Outcome | None:
        """Store what `push` changes and emit its events; the outcome of a delivery (None
        for one that must stay at the relay, unacked)."""
        if isinstance(push, wire.KeyChanged):
            if await self._sessions.on_key_changed(push.user, push.identity):
                self._emit(KeyChanged(push.user))
            return None
        if isinstance(push, wire.LinkRequestPush):
            self._devices.link_requests.put_nowait(push)
            return None
        if isinstance(push, wire.DevicesChanged):
            if is_valid_username(push.user):
                await self._devices.on_changed(push.user, push.device_list)
            return None
        if isinstance(push, wire.PresenceChanged):
            if not is_valid_username(push.user):
                return None  # only the relay could name such a user: nothing to show
            self._online[push.user] = push.online
            self._emit(Presence(push.user, push.online))
            return None
        if not isinstance(push, wire.Deliver):
            return None
        group_events: list[ClientEvent] = []
        try:
            # One transaction: the ratchet step and what group input changes commit together.
            async with self._sessions.store.transaction():
                outcome = await self._sessions.receive(push)
                if isinstance(outcome, GroupContent):
                    group_events = await self._groups.on_content(outcome, push.payload)
        except ProfileCorrupt as exc:
            # Not acked: the envelope stays at the relay until the profile is repaired.
            self._emit(Notice(f"cannot store a message: {exc.message}"))
            return None
        for event in group_events:
            self._emit(event)
        if isinstance(outcome, Received) and outcome.key_changed:
            self._emit(KeyChanged(outcome.contact))
            self._emit(MessageQuarantined(outcome.contact))
        elif isinstance(outcome, Received):
            self._emit(
                MessageReceived(
                    outcome.contact,
                    outcome.envelope_id.hex(),
                    utc_from_ms(outcome.sent_at_ms),
                    outcome.text,
                    outcome.uid,
                )
            )
        elif isinstance(outcome, SentCopy):
            self._emit(
                SentElsewhere(
                    outcome.contact, utc_from_ms(outcome.sent_at_ms), outcome.text, outcome.uid
                )
            )
        elif isinstance(outcome, SessionReset):
            if outcome.key_changed:
                self._emit(KeyChanged(outcome.contact))
            self._emit(SessionRestarted(outcome.contact, by_peer=True))
        elif isinstance(outcome, Rejected):
            log.warning(
                "rejected an envelope from %s: %s", safe_line(outcome.contact), outcome.reason
            )
            self._emit(MessageRejected(outcome.contact, outcome.reason))
        # A Duplicate was stored before: nothing to show, but ack it again.
        return outcome

    async def sync(self, conn_of: Callable[[], RelayConnection], limit: float) -> None:
        """Return once every envelope the relay has queued for us is handled and acked.

        The relay writes queued deliveries ahead of later replies, so: ping, wait until
        everything that arrived before the pong is handled; repeat until a round brings
        nothing new. `conn_of` raises ConnectionClosed if not connected.
        """
        async with asyncio.timeout(limit):
            previous = -1
            while True:
                conn = conn_of()
                await conn.request(wire.Ping)
                target = self._taken + conn.pushes.qsize()
                async with self._progress:
                    await self._progress.wait_for(lambda t=target: self._handled >= t)
                if target == previous:
                    return
                previous = target


async def finish_before_cancel(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end even if the caller is cancelled meanwhile; the caller's
    cancellation is raised after that. For steps that must not be cut in half."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        break
    if cancelled:
        raise asyncio.CancelledError
    return result
