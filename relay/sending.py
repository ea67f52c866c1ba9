"""The relay's send path: `send` (one body, the hot path) and `send_devices` (one
envelope per device, with a group send's payload carried once).

Kept apart from relay/handlers.py (login, keys, acks, presence) because the send path
has its own state: the early pushes of each send in flight (`_Outgoing`) and the order
in which one connection's sends reserve their mailbox ids (`SendOrder`). Envelopes from
one sender reach each device in the order its requests arrived (docs/protocol.md,
"Ordering"), group sends included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import PQ_BUNDLE_VERSION
from hushwire.common.messages import Deliver, Reply, Request, Send, SendDevices, SendOk
from hushwire.common.names import check_username
from hushwire.relay.devices import AccountDevices, mismatched, principal, send_accounts
from hushwire.relay.ratelimit import RateLimiter

if TYPE_CHECKING:
    from hushwire.relay.bus import Bus
    from hushwire.relay.handlers import Answer, Peer, Relay

MAX_RECIPIENTS: Final = 50
# A group payload is one encrypted group message: at most 65,536 bytes of message
# (docs/protocol.md, "Group messages") and the 16-byte AES-GCM tag.
MAX_PAYLOAD: Final = 65_536 + 16
# Payload plus every envelope of one send_devices. The frame limit (default 64 KiB)
# binds first; this bounds one send's commit on a relay configured for larger frames.
MAX_SEND_BYTES: Final = 256 * 1024


class _Outgoing:
    """One send between the reservation of its ids and its `ok`: where the early push
    went, so that the commit (or a failure) finishes what it started, in order."""

    __slots__ = (
        "bodies",
        "bus",
        "device",
        "early",
        "online",
        "payload",
        "recipients",
        "ts",
        "user",
    )

    def __init__(
        self,
        delivery: tuple[dict[str, Peer], Bus | None],
        sender: Peer,
        recipients: Sequence[str],
        ts: int,
        bodies: Sequence[bytes],
        payload: bytes | None = None,
    ) -> None:
        # The relay's live map (who is online when each step runs), and the bus when the
        # store is shared: then recipients are woken wherever they are and read it.
        self.online, self.bus = delivery
        self.user = sender.account or ""
        self.device = sender.device
        self.recipients = recipients  # principals
        self.ts = ts
        self.bodies = bodies  # one per recipient
        self.payload = payload  # a group send's, the same in every delivery
        self.early: dict[int, tuple[Peer, bool]] = {}  # mid -> (session offered, taken)

    def _deliver(self, mid: int, i: int) -> Deliver:
        return Deliver(
            mid=mid,
            sender=self.user,
            ts=self.ts,
            body=self.bodies[i],
            sender_device=self.device,
            payload=self.payload,
        )

    def push_early(self, mids: list[int]) -> None:
        """Runs when the ids are reserved, before the commit: an online recipient that is
        caught up gets the envelope at once, and if it acks before the commit the store
        never writes the row. The sender still hears `ok` only once the envelope is
        committed or acked (docs/protocol.md, send)."""
        for i, (recipient, mid) in enumerate(zip(self.recipients, mids, strict=True)):
            online = self.online.get(recipient)
            if online is not None:
                self.early[mid] = (online, online.offer_early(self._deliver(mid, i)))

    def unhold(self) -> None:
        """The send failed: release the places held for it."""
        for mid, (peer, taken) in self.early.items():
            if not taken:
                peer.unhold(mid)

    def offer_committed(self, mids: list[int]) -> None:
        """After the commit: offer what the early push did not deliver."""
        if self.bus is not None:
            # Other relays' envelopes to these devices commit too: a live offer could
            # overtake one of them, so the connection reads its mailbox instead.
            self.bus.envelopes(self.recipients)
            return
        for i, (recipient, mid) in enumerate(zip(self.recipients, mids, strict=True)):
            peer, taken = self.early.get(mid, (None, False))
            online = self.online.get(recipient)
            if peer is not None and not taken and peer is not online:
                peer.unhold(mid)  # that session is gone; its successor gets it below
            if online is not None and not (taken and online is peer):
                online.offer(self._deliver(mid, i))


class SendOrder:
    """One connection's sends reserve their mailbox ids in the order they arrived.

    `send_devices` reads the device lists before it can reserve (an await; on PostgreSQL
    on any of several pooled connections), so a later send of the same connection could
    otherwise overtake it. Each send takes a turn when its handler starts (tasks start in
    arrival order) and waits for the turn before it to have reserved, or failed.
    """

    def __init__(self) -> None:
        self._last: dict[Peer, asyncio.Future[None]] = {}

    def busy(self, peer: Peer) -> bool:
        """A send of `peer` has not reserved yet: a new one must queue behind it."""
        return peer in self._last

    def take(self, peer: Peer) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """(the turn to wait for, ours): take it before the handler's first await."""
        before = self._last.get(peer)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last[peer] = mine
        return before, mine

    def release(self, peer: Peer, mine: asyncio.Future[None]) -> None:
        """Our ids are reserved (or the send failed): the next send may go."""
        if not mine.done():
            mine.set_result(None)
        if self._last.get(peer) is mine:
            del self._last[peer]


async def _wait_turn(before: asyncio.Future[None] | None) -> None:
    if before is not None and not before.done():
        # asyncio.wait, not await: cancelling this send must not cancel the turn of the
        # one before (the sends after us wait on ours, released in a finally).
        await asyncio.wait([before])


class SendHandlers:
    """`send` and `send_devices` for a `Relay`."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.store = relay.store
        self.counters = relay.counters
        self.limiter = RateLimiter(relay.config.send_limit)
        self.spending = relay.bus.spending  # None: one relay, nobody to tell
        self.order = SendOrder()
        self.dispatch: dict[type[Request], Callable[[Peer, Request, float], Awaitable[Reply]]] = {
            Send: self._send,  # type: ignore[dict-item]
            SendDevices: self._send_devices,  # type: ignore[dict-item]
        }

    def _limit(self, user: str, now: float, envelopes: int) -> None:
        self.relay.limit(self.limiter, "send", user, now, "envelopes", cost=envelopes)
        if self.spending is not None:
            self.spending.spent("send", user, envelopes)

    # --- send: one body ---------------------------------------------------------------

    def _send_checks(self, peer: Peer, req: Send) -> tuple[str, tuple[str, ...]]:
        user = self.relay.user_of(peer)
        recipients = tuple(check_username(r) for r in req.to)
        # One mid per named recipient, in order: a name given twice is refused, not merged
        # (merging would hand back fewer mids than names; docs/protocol.md, send).
        if len(recipients) > 1 and len(set(recipients)) != len(recipients):
            raise RequestError(ErrorCode.BAD_REQUEST, "a recipient is named twice")
        if not recipients or len(recipients) > MAX_RECIPIENTS:
            raise RequestError(
                ErrorCode.BAD_REQUEST, f"send needs 1 to {MAX_RECIPIENTS} distinct recipients"
            )
        if not req.body:
            raise RequestError(ErrorCode.BAD_REQUEST, "empty envelope")
        return user, recipients

    def send_nowait(self, peer: Peer, req: Send, now: float, reply: Answer) -> bool:
        """`send` without a task or coroutine: the hot path, when every recipient's id is
        cached in the store. Raises RequestError at once for a refused send; otherwise
        `reply(SendOk or exception)` is called once, later. False means "not now": await
        `handle()` instead (nothing was consumed).
        """
        if self.order.busy(peer):
            return False  # an earlier send of this connection has not reserved yet
        recipients = req.to
        if len(recipients) == 1 and req.body and self.store.cached(recipients):
            user = self.relay.user_of(peer)  # one known user: a valid name, nothing to dedupe
        else:
            user, recipients = self._send_checks(peer, req)
            if not self.store.cached(recipients):
                return False
        if not self.store.single_device((peer.account or user, *recipients)):
            return False  # `_send` answers mismatched_devices with the lists
        self._limit(user, now, len(recipients))
        out = _Outgoing(
            self.relay.delivery, peer, recipients, int(now), (req.body,) * len(recipients)
        )
        self._enqueue_nowait(out, user, req.body, SendOk(id=req.id, mids=(), ts=out.ts), reply)
        return True

    def _enqueue_nowait(
        self,
        out: _Outgoing,
        user: str,
        body: bytes | Sequence[bytes],
        ok: SendOk,
        reply: Answer,
        payload: bytes | None = None,
    ) -> None:
        """Reserve the ids now (pushing early to caught-up recipients); `reply(ok)` once
        the envelopes are committed or all acked, `reply(error)` if the commit fails."""
        counters = self.counters

        def done(mids: list[int] | None, exc: BaseException | None) -> None:
            if exc is not None:
                out.unhold()
                reply(exc)
            elif mids is not None:
                counters.sends += 1
                counters.envelopes += len(mids)
                out.offer_committed(mids)
                reply(ok)

        self.store.enqueue_nowait(
            user,
            out.recipients,
            body,
            now=out.ts,
            on_done=done,
            on_reserved=out.push_early,
            payload=payload,
        )

    async def _send(self, peer: Peer, req: Send, now: float) -> SendOk:
        before, mine = self.order.take(peer)
        try:
            user, recipients = self._send_checks(peer, req)
            account = peer.account or user
            if not self.store.single_device((account, *recipients)):
                # A one-body send reaches device 1 only: with more devices it would lose
                # messages silently, so the client is told to fan out (send_devices).
                names = list(dict.fromkeys((account, *recipients)))
                wrong = await self.relay.devices.current(names)
                raise RequestError(
                    ErrorCode.MISMATCHED_DEVICES,
                    "a recipient or the sender has several devices: use send_devices",
                    device_lists=tuple(a.signed for a in wrong.values() if a.signed is not None),
                )
            await _wait_turn(before)
            self._limit(user, now, len(recipients))
            out = _Outgoing(
                self.relay.delivery, peer, recipients, int(now), (req.body,) * len(recipients)
            )
            # Nothing may await before enqueue reserves: the store takes sends in call
            # order, which keeps one sender's envelopes in order even when pipelined.
            reserved = self._reserved(peer, mine, out)
            mids = await self._committed(
                out,
                self.store.enqueue(user, recipients, req.body, now=out.ts, on_reserved=reserved),
            )
        finally:
            self.order.release(peer, mine)
        self.counters.sends += 1
        self.counters.envelopes += len(mids)
        out.offer_committed(mids)
        return SendOk(id=req.id, mids=(), ts=out.ts)

    def _reserved(
        self, peer: Peer, mine: asyncio.Future[None], out: _Outgoing
    ) -> Callable[[list[int]], None]:
        """The enqueue's `on_reserved`: our turn is over as soon as the ids are reserved
        (the next send may reserve after us), then the early push."""

        def reserved(mids: list[int]) -> None:
            self.order.release(peer, mine)
            out.push_early(mids)

        return reserved

    @staticmethod
    async def _committed(out: _Outgoing, pending: Awaitable[list[int]]) -> list[int]:
        try:
            return await pending
        except BaseException:
            out.unhold()
            raise

    # --- send_devices: one envelope per device, maybe one payload for all ---------------

    def _check_payload(self, peer: Peer, req: SendDevices) -> None:
        payload = req.payload
        if payload is None:
            return
        if peer.version < PQ_BUNDLE_VERSION:
            raise RequestError(ErrorCode.BAD_REQUEST, "a payload needs protocol version 2")
        if not payload:
            raise RequestError(ErrorCode.BAD_REQUEST, "empty payload")
        if len(payload) > MAX_PAYLOAD:
            raise RequestError(
                ErrorCode.SEND_TOO_LARGE,
                f"the payload is {len(payload)} bytes; at most {MAX_PAYLOAD}",
            )
        total = len(payload) + sum(len(env.body) for env in req.envelopes)
        if total > MAX_SEND_BYTES:
            raise RequestError(
                ErrorCode.SEND_TOO_LARGE,
                f"payload and envelopes are {total} bytes; at most {MAX_SEND_BYTES} per send",
            )

    async def _send_devices(self, peer: Peer, req: SendDevices, now: float) -> SendOk:
        before, mine = self.order.take(peer)
        try:
            return await self._fan_out(peer, req, now, before, mine)
        finally:
            self.order.release(peer, mine)

    def send_devices_nowait(self, peer: Peer, req: SendDevices, now: float, reply: Answer) -> bool:
        """`send_devices` without a task or coroutine: every real client's send, when no
        earlier send of the connection waits for its turn and the store has every named
        account's devices and every target mailbox cached. Raises RequestError at once for
        a refused send; otherwise `reply` is called once, later (see `send_nowait`). False
        means "not now": await `handle()` instead (nothing was consumed)."""
        if self.order.busy(peer):
            return False
        account, device, user, claimed = self._fan_out_checks(peer, req)
        cur = self.store.cached_devices(claimed)
        if cur is None:
            return False
        recipients, bodies, keep = _targets(account, device, req, claimed, cur)
        if recipients and not self.store.cached(recipients):
            return False
        self._limit(user, now, max(len(keep), 1))
        out = _Outgoing(self.relay.delivery, peer, recipients, int(now), bodies, req.payload)
        # Never the internal mailbox ids (see protocol.md, send): 1 queued, 0 dropped.
        ok = SendOk(id=req.id, mids=tuple(int(k) for k in keep), ts=out.ts)
        if recipients:
            self._enqueue_nowait(out, user, bodies, ok, reply, req.payload)
        else:
            reply(ok)  # every envelope was for a removed device: nothing to queue
        return True

    def _fan_out_checks(self, peer: Peer, req: SendDevices) -> tuple[str, int, str, dict[str, int]]:
        """(account, device, principal, the accounts named with their claimed versions)."""
        account, device = self.relay.account_of(peer)
        user = self.relay.user_of(peer)
        claimed = send_accounts(account, req.envelopes, req.lists)
        for name in claimed:
            check_username(name)
        if not all(env.body for env in req.envelopes):
            raise RequestError(ErrorCode.BAD_REQUEST, "empty envelope")
        self._check_payload(peer, req)
        return account, device, user, claimed

    async def _fan_out(
        self,
        peer: Peer,
        req: SendDevices,
        now: float,
        before: asyncio.Future[None] | None,
        mine: asyncio.Future[None],
    ) -> SendOk:
        account, device, user, claimed = self._fan_out_checks(peer, req)
        cur = self.store.cached_devices(claimed) or await self.relay.devices.current(list(claimed))
        recipients, bodies, keep = _targets(account, device, req, claimed, cur)
        await _wait_turn(before)
        self._limit(user, now, max(len(keep), 1))
        out = _Outgoing(self.relay.delivery, peer, recipients, int(now), bodies, req.payload)
        if recipients:
            pending = self.store.enqueue_each(
                user,
                recipients,
                bodies,
                now=out.ts,
                on_reserved=self._reserved(peer, mine, out),
                payload=req.payload,
            )
            mids = await self._committed(out, pending)
            out.offer_committed(mids)
            self.counters.sends += 1
            self.counters.envelopes += len(mids)
        # Never the internal mailbox ids (see protocol.md, send): 1 queued, 0 dropped.
        return SendOk(id=req.id, mids=tuple(int(k) for k in keep), ts=out.ts)


def _targets(
    account: str,
    device: int,
    req: SendDevices,
    claimed: dict[str, int],
    cur: Mapping[str, AccountDevices],
) -> tuple[list[str], list[bytes], list[bool]]:
    """(recipient principals, their bodies, which of the request's envelopes are kept),
    or MISMATCHED_DEVICES with the current lists if the sender's view is stale."""
    wrong = mismatched(account, device, req.envelopes, claimed, cur, partial=req.partial)
    if wrong:
        raise RequestError(
            ErrorCode.MISMATCHED_DEVICES,
            "the device lists of " + ", ".join(a.account for a in wrong) + " changed",
            device_lists=tuple(a.signed for a in wrong if a.signed is not None),
        )
    # Devices the operator removed but the signed list still names: dropped (mid 0).
    keep = [env.device in cur[env.user].live_ids for env in req.envelopes]
    live = [env for env, kept in zip(req.envelopes, keep, strict=True) if kept]
    return [principal(env.user, env.device) for env in live], [env.body for env in live], keep
