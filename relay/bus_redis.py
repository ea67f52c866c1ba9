"""The bus between relays over Redis pub/sub (redis-py's asyncio client).

Every relay publishes on one channel and subscribes to it. A message is a msgpack map:
`o` the sending relay's random id, `n` its number (1, 2, ... per sending relay), `k` the
kind, then the kind's fields. Each relay applies its own messages locally first
(`LocalBus`), then publishes them; it ignores its own when they come back.

Pub/sub delivers at most once: a relay disconnected from Redis misses what was said
meanwhile. So the database stays the truth and the bus only wakes: after every
(re)subscription, and whenever another relay's numbers skip one (a message it could not
publish, or one this relay missed), every connected device re-reads its mailbox.
Publishing never blocks a request: messages queue and one task sends them; while Redis
is down they are dropped (and counted), which the receivers see as a gap once it is back.

Shared rate limits: failed logins per (user, address prefix) count in a Redis key
(INCR, EXPIRE) that every relay reads before checking a token, so guesses spread over
the relays get one budget. Logins claim their device with INCR on a per-device key: the
highest claim wins, on whichever relay, and the other relay closes its session with
`session_replaced`.
Shared per-user limits (shared_limits.py): each relay reports what its users spent
(kind `r`) at most every REPORT_EVERY seconds, and charges the others' reports to its
own token buckets; no request waits on Redis.
Linking across relays: `link_start` stores the channel under a Redis key (its relay,
account and public ephemeral key, expiring with the channel; deleted once the channel
closes), so `link_fetch` on any relay answers from it. A `link_join` for a channel held
elsewhere goes to that relay alone, on its own channel (`hushwire:bus:<origin>`), which
joins it as if locally and sends the grant (device, token, sealed) back the same way to
the joining relay alone. These direct messages are not numbered: one lost means a
`link_failed` at the channel's expiry, never a wrong link.
Presence: each relay announces accounts coming and going, plus the whole list every
HEARTBEAT seconds; a relay not heard for PRESENCE_TTL counts as gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Sequence
from typing import Any

import msgpack
import redis.asyncio as redis
from redis.exceptions import RedisError

from hushwire.common.codec import decode_from_relay
from hushwire.common.errors import ErrorCode, HushwireError, RequestError
from hushwire.common.messages import Push
from hushwire.relay.bus import LocalBus, RelayEvents
from hushwire.relay.links import SharedLink, link_failed
from hushwire.relay.shared_limits import REPORT_EVERY, SpendLog
from hushwire.relay.store.urls import redact

log = logging.getLogger("hushwire.relay.bus")

CHANNEL = "hushwire:bus"
CLAIM_KEY = "hushwire:claim:"
COUNTER_KEY = "hushwire:count:"  # shared rate-limit counters (INCR, EXPIRE)
LINK_KEY = "hushwire:link:"  # + channel id (hex): where a link channel is open
DIRECT = "hushwire:bus:"  # + a relay's origin: link joins and grants for it alone
HEARTBEAT = 5.0
RECONNECT_MIN = 0.1  # seconds before the first retry; doubles up to RECONNECT_MAX
RECONNECT_MAX = 2.0
PUBLISH_QUEUE = 100_000  # messages waiting while Redis is slow; beyond, dropped (a gap)
_ERRORS = (RedisError, OSError)


class RedisBus(LocalBus):
    """`LocalBus` that also tells the other relays, through Redis."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = redact(url)  # for messages: never the password
        self.origin = secrets.token_hex(8)
        self._redis = redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._sent = 0  # numbers this relay's messages
        self._seen: dict[str, int] = {}  # origin -> newest number received
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(PUBLISH_QUEUE)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._direct = (DIRECT + self.origin).encode()
        self._joins: dict[str, asyncio.Future[tuple[int, str, bytes]]] = {}  # by ticket
        self._link_tasks: set[asyncio.Task[None]] = set()
        self.spending = SpendLog()
        self.dropped = 0  # messages that could not be published
        self.resyncs = 0  # times every connected device re-read its mailbox

    async def start(self, events: RelayEvents) -> None:
        """Subscribe (waiting up to a few seconds for Redis), then serve in the
        background: a relay whose Redis is down at start still starts, and catches up
        once it is back."""
        await super().start(events)
        tasks = (self._listen(), self._publish(), self._heartbeat(), self._report_spending())
        for coro in tasks:
            self._tasks.append(asyncio.create_task(coro, name="hushwire-bus"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 5.0)
        if not self._subscribed.is_set():
            log.warning("the bus at %s is unreachable; retrying in the background", self.url)

    async def close(self) -> None:
        for task in (*self._tasks, *self._link_tasks):
            task.cancel()
        for task in (*self._tasks, *self._link_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._redis.aclose()
        await super().close()

    # --- what the relay says ----------------------------------------------------------

    def envelopes(self, principals: Sequence[str]) -> None:
        super().envelopes(principals)
        self._say("w", p=list(principals))

    def push(
        self, message: Push, *, principals: Sequence[str] = (), accounts: Sequence[str] = ()
    ) -> None:
        super().push(message, principals=principals, accounts=accounts)
        self._say("m", m=message.to_wire(), p=list(principals), a=list(accounts))

    def kick(self, principals: Sequence[str], code: ErrorCode, reason: str) -> None:
        super().kick(principals, code, reason)
        self._say("x", p=list(principals), c=code.value, r=reason)

    async def claim(self, principal: str) -> bool:
        try:
            claim = int(await self._redis.incr(CLAIM_KEY + principal))
        except _ERRORS as exc:
            # Without Redis, a login elsewhere cannot be told: this one goes ahead.
            log.warning("login claim not recorded (the bus is down): %s", exc)
            return True
        self._say("c", p=principal, n=claim)
        return self._events.mine(principal, claim)

    def presence(self, account: str, *, online: bool) -> None:
        self._say("o", a=[account], on=online)

    async def spend(self, key: str, window: float) -> None:
        key = COUNTER_KEY + key
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, max(1, math.ceil(window)), nx=True)
                await pipe.execute()
        except _ERRORS as exc:
            log.warning("a shared counter was not updated (the bus is down): %s", exc)

    async def spent(self, key: str) -> tuple[int, float]:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(COUNTER_KEY + key)
                pipe.pttl(COUNTER_KEY + key)
                count, ttl = await pipe.execute()
        except _ERRORS as exc:
            # Redis down: each relay's own limiter still holds (the budget is per relay).
            log.warning("a shared counter could not be read (the bus is down): %s", exc)
            return 0, 0.0
        return int(count or 0), max(0.0, int(ttl) / 1000)

    # --- link channels across relays ---------------------------------------------------

    async def link_open(self, link: SharedLink, ttl: float) -> None:
        value = msgpack.packb(
            {"o": self.origin, "a": link.account, "e": link.ephemeral, "x": link.expires_at}
        )
        try:
            await self._redis.set(LINK_KEY + link.channel.hex(), value, px=max(1, int(ttl * 1000)))
        except _ERRORS as exc:
            log.warning("a link channel was not shared (the bus is down): %s", exc)

    def link_closed(self, channel: bytes) -> None:
        self._background(self._forget_link(channel))

    async def _forget_link(self, channel: bytes) -> None:
        try:
            await self._redis.delete(LINK_KEY + channel.hex())
        except _ERRORS as exc:
            log.warning("a closed link channel stays shared until it expires: %s", exc)

    async def link_find(self, channel: bytes) -> SharedLink | None:
        try:
            value = await self._redis.get(LINK_KEY + channel.hex())
        except _ERRORS as exc:
            log.warning("link channels of other relays are unreachable: %s", exc)
            return None
        if value is None:
            return None
        try:
            found = msgpack.unpackb(value)
            shared = SharedLink(
                channel, str(found["o"]), str(found["a"]), bytes(found["e"]), float(found["x"])
            )
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            log.warning("ignoring a malformed shared link channel")
            return None
        # Ours but not open here any more: closed, its key not yet deleted.
        return None if shared.origin == self.origin else shared

    async def link_join(
        self, link: SharedLink, ephemeral: bytes, sealed: bytes
    ) -> tuple[int, str, bytes]:
        ticket = secrets.token_hex(8)
        answer: asyncio.Future[tuple[int, str, bytes]] = asyncio.get_running_loop().create_future()
        self._joins[ticket] = answer
        try:
            await self._tell(
                link.origin, k="lj", c=link.channel, e=ephemeral, s=sealed, r=self.origin, t=ticket
            )
            return await answer
        except _ERRORS:
            raise link_failed() from None
        finally:
            self._joins.pop(ticket, None)

    async def _tell(self, origin: str, **fields: Any) -> None:
        """A message for one relay only, sent now (not numbered, not queued)."""
        await self._redis.publish(DIRECT + origin, msgpack.packb(fields))

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro, name="hushwire-bus-link")
        self._link_tasks.add(task)
        task.add_done_callback(self._link_tasks.discard)

    def _received_direct(self, data: bytes) -> None:
        try:
            msg = msgpack.unpackb(data)
            kind = msg["k"]
            if kind == "lj":
                self._background(
                    self._answer_join(bytes(msg["c"]), msg["e"], msg["s"], msg["r"], msg["t"])
                )
            elif kind == "lr":
                self._granted(msg)
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            log.warning("ignoring a malformed direct bus message")

    async def _answer_join(
        self, channel: bytes, ephemeral: bytes, sealed: bytes, origin: str, ticket: str
    ) -> None:
        """Join a channel open here for a new device on relay `origin`; tell it the grant
        (or the refusal: no fields but the ticket)."""
        try:
            device, token, grant = await self._events.link_joined(channel, ephemeral, sealed)
            fields: dict[str, Any] = {"d": device, "tk": token, "g": grant}
        except RequestError:
            fields = {}
        try:
            await self._tell(str(origin), k="lr", t=ticket, **fields)
        except _ERRORS as exc:
            log.warning("a link answer was not sent (the bus is down): %s", exc)

    def _granted(self, msg: dict[str, Any]) -> None:
        answer = self._joins.get(str(msg["t"]))
        if answer is None or answer.done():
            return  # the joining device gave up (expiry) or left
        if "d" in msg:
            answer.set_result((int(msg["d"]), str(msg["tk"]), bytes(msg["g"])))
        else:
            answer.set_exception(link_failed())

    def _say(self, kind: str, **fields: Any) -> None:
        self._sent += 1
        data = msgpack.packb({"o": self.origin, "n": self._sent, "k": kind, **fields})
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1  # the others see a gap in our numbers and re-read

    async def _publish(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while not self._queue.empty() and len(batch) < 512:
                batch.append(self._queue.get_nowait())
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for data in batch:
                        pipe.publish(CHANNEL, data)
                    await pipe.execute()
            except _ERRORS as exc:
                self.dropped += len(batch)
                log.warning("the bus dropped %d message(s): %s", len(batch), exc)

    async def _report_spending(self) -> None:
        """What this relay's users spent, every REPORT_EVERY seconds while they spend."""
        spending = self.spending
        while True:
            await spending.waiting.wait()
            await asyncio.sleep(REPORT_EVERY)
            for part in spending.take():
                self._say("r", s=part)

    # --- what the others say ----------------------------------------------------------

    async def _listen(self) -> None:
        delay = RECONNECT_MIN
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL, self._direct)
                first = not self._subscribed.is_set()
                self._subscribed.set()
                delay = RECONNECT_MIN
                if not first:
                    log.info("the bus is back; re-reading every connected device's mailbox")
                    self._seen.clear()
                    self._resync()
                async for raw in pubsub.listen():
                    if raw.get("type") != "message":
                        continue
                    if raw.get("channel") == self._direct:
                        self._received_direct(raw["data"])
                    else:
                        self._received(raw["data"])
            except _ERRORS as exc:
                log.warning("the bus at %s failed (%s); reconnecting", self.url, exc)
            finally:
                with contextlib.suppress(*_ERRORS):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _resync(self) -> None:
        self.resyncs += 1
        self._events.resync()

    def _received(self, data: bytes) -> None:
        try:
            msg = msgpack.unpackb(data)
            origin, number, kind = msg["o"], msg["n"], msg["k"]
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            log.warning("ignoring a malformed bus message")
            return
        if origin == self.origin:
            return
        last = self._seen.get(origin)
        self._seen[origin] = number
        if last is not None and number != last + 1:
            log.info("bus messages from %s were lost; re-reading mailboxes", origin)
            self._resync()
        try:
            self._apply(origin, kind, msg)
        except (HushwireError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring a bus message of kind %r: %s", kind, exc)

    def _apply(self, origin: str, kind: str, msg: dict[str, Any]) -> None:
        events = self._events
        if kind == "w":
            events.woken(msg["p"])
        elif kind == "m":
            message = decode_from_relay(msg["m"], {})
            if isinstance(message, Push):
                events.pushed(message, msg["p"], msg["a"])
        elif kind == "x":
            events.kicked(msg["p"], ErrorCode(msg["c"]), str(msg["r"]))
        elif kind == "c":
            events.claimed(str(msg["p"]), int(msg["n"]))
        elif kind == "o":
            events.presence(origin, msg["a"], online=msg["on"])
        elif kind == "r":
            events.charged(msg["s"])

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            self._say("o", a=self._events.local_accounts(), on=None)
            self._events.expire()
