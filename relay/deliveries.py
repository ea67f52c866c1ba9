"""The delivery window of a connection, a mixin of `Connection` (relay/connection.py,
which holds its state and flushes): envelopes pushed at most `delivery_window` unacked,
live from the sender while the recipient is caught up, otherwise read from the mailbox
in order, and the random wire ids they go out under.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable

from hushwire.common.messages import Ack, Deliver
from hushwire.common.states import ConnState
from hushwire.relay.devices import split_principal
from hushwire.relay.errors import StoreUnavailable

log = logging.getLogger("hushwire.relay.connection")


def random_mid() -> int:
    """A fresh wire id for one delivery: 63 random bits (the wire allows < 2**63)."""
    return secrets.randbits(63)


class Deliveries:
    """Mailbox ids on the wire are not the store's: each delivery gets a random id, valid
    for acks on this connection only. The store's ids are one counter for the whole
    relay, so showing them let any user count everyone's traffic between two of its own
    deliveries (issue #11.8). A redelivery after a reconnect has a new id; clients
    drop duplicates by the id inside the sealed envelope, never by this one."""

    # --- peer interface used by the Relay -------------------------------------------

    def offer_early(self, delivery: Deliver) -> bool:
        """Before its commit: push now if caught up (True), else hold its place (False)."""
        full = len(self._inflight) + len(self._live) >= self.config.delivery_window
        if (
            self._held
            or self._backlog
            or self._reading_mailbox
            or full
            or self._closing
            or self.state is not ConnState.READY
        ):
            self._held.add(delivery.mid)
            return False
        self._live.append(delivery)
        self._schedule_flush()
        return True

    def unhold(self, mid: int) -> None:
        self._held.discard(mid)

    def offer(self, delivery: Deliver) -> None:
        """After its commit (or for one held by offer_early)."""
        self._held.discard(delivery.mid)
        full = len(self._inflight) + len(self._live) >= self.config.delivery_window
        if self._backlog or self._reading_mailbox or full or self.state is not ConnState.READY:
            # It is committed: the mailbox read will take it in order. (Before READY,
            # login has not yet asked for the backlog; that read will include it.)
            self._backlog = True
        else:
            self._live.append(delivery)
        self._schedule_flush()

    def wake(self) -> None:
        """Committed envelopes may wait in the mailbox (a shared store: sent through
        this relay or another): read it once the window has room."""
        if self.state is ConnState.READY and not self._closing:
            self._backlog = True
            self._schedule_flush()

    def acked(self, mids: Iterable[int]) -> None:
        inflight, by_wire = self._inflight, self._by_wire
        for mid in mids:
            wire = inflight.pop(mid, None)
            if wire is not None:
                by_wire.pop(wire, None)
        self._schedule_flush()

    def _store_ids(self, ack: Ack) -> Ack:
        """The store's ids for the wire ids of an ack (ids not pushed here are dropped)."""
        by_wire = self._by_wire
        return Ack(id=ack.id, mids=tuple(by_wire[w] for w in ack.mids if w in by_wire))

    # --- pushing -------------------------------------------------------------------

    def _pump_live(self) -> int:
        """Deliver queued live envelopes while the window has room; return the room left."""
        room = self.config.delivery_window - len(self._inflight)
        while self._live and room > 0:
            d = self._live.popleft()
            if d.mid > self._cursor:
                self._deliver(d)
                room -= 1
        return room

    def _read_mailbox(self, user: str, limit: int) -> None:
        self._backlog = False
        self._reading_mailbox = True
        self._mailbox_task = asyncio.create_task(self._deliver_backlog(user, limit))
        self._mailbox_task.add_done_callback(self._mailbox_done)

    async def _deliver_backlog(self, user: str, limit: int) -> None:
        try:
            rows = await self.relay.store.pending(user, after=self._cursor, limit=limit)
        finally:
            self._reading_mailbox = False
        for row in rows:
            sender, device = split_principal(row.sender)
            self._deliver(
                Deliver(
                    mid=row.mid,
                    sender=sender,
                    ts=row.created_at,
                    body=row.body,
                    sender_device=device,
                    payload=row.payload,
                )
            )
        if len(rows) == limit:
            self._backlog = True  # there may be more once acks make room
        if self._backlog:
            self._schedule_flush()

    def _mailbox_done(self, task: asyncio.Task[None]) -> None:
        self._mailbox_task = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, StoreUnavailable) and not self._closing:
                # The database is down or restarting: nothing was delivered, read again
                # later (the client keeps its connection, and its sends get the same
                # `unavailable` answer meanwhile).
                self._backlog = True
                self._arm("mailbox", exc.retry_after, self._schedule_flush)
            else:
                if not self._closing:
                    log.error("mailbox read for %s failed: %r", self.peer_address, exc)
                if not self._lost:
                    self.transport.abort()
        self._maybe_finished()

    def _deliver(self, d: Deliver) -> None:
        self._counters.deliveries += 1
        wire = self._new_mid()
        while wire in self._by_wire:  # one in 2**63 / window: never, but stay exact
            wire = self._new_mid()
        self._inflight[d.mid] = wire
        self._by_wire[wire] = d.mid
        self._cursor = d.mid
        self._queue(
            Deliver(
                mid=wire,
                sender=d.sender,
                ts=d.ts,
                body=d.body,
                sender_device=d.sender_device,
                payload=d.payload,
            )
        )
