"""One client connection: the asyncio shell around the sans-I/O protocol.

Two tasks per connection. The reader feeds bytes to the FrameDecoder, checks each
request against the state table and hands it to the Relay; once logged in, requests run
concurrently (pipelining), up to a bound. The writer coalesces everything queued into one
TLS write per wakeup and pushes deliveries, at most `delivery_window` unacked at a time:
live from the sender when the recipient is caught up, otherwise read from the mailbox in
order. Memory per connection is bounded: a client that does not read stops being read
from, and is dropped when a write stalls past the idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from common.errors import ErrorCode, HushwireError, RemoteProtocolError, RequestError
from common.frames import FrameDecoder, encode_frame
from common.messages import (
    Deliver,
    Error,
    Message,
    PresenceChanged,
    Request,
    Send,
    decode_request,
    request_id,
)
from common.states import ConnState, advance, check
from relay.handlers import Relay
from relay.tls import peer_name

log = logging.getLogger("hushwire.relay.connection")

READ_CHUNK = 64 * 1024
OUT_HIGH_WATER = 1024 * 1024  # stop reading requests while this much output is queued
MAX_PIPELINE = 256  # concurrent requests per logged-in connection


class Connection:
    def __init__(
        self,
        relay: Relay,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.relay = relay
        self.config = relay.config
        self._reader = reader
        self._writer = writer
        peer = writer.get_extra_info("peername")
        self.peer_address: str = str(peer[0]) if peer else "unknown"
        ssl_object = writer.get_extra_info("ssl_object")
        # With --client-ca, the verified certificate's CN names the only user it may be.
        self.cert_name: str | None = peer_name(ssl_object) if ssl_object is not None else None
        self.state = ConnState.AWAIT_HELLO
        self.user: str | None = None
        self.token_hash: bytes | None = None
        self.wants_presence = False
        self._decoder = FrameDecoder(self.config.max_frame)
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._last_read = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._stopping = False
        self._reader_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: set[asyncio.Future[Message]] = set()  # sends taken without a task
        self._slots = asyncio.Semaphore(MAX_PIPELINE)
        # Deliveries (see the module docstring).
        self._inflight: set[int] = set()
        self._live: deque[Deliver] = deque()
        self._backlog = False
        self._reading_mailbox = False
        self._cursor = 0
        # Ids offered before their commit but refused (not caught up): until they are
        # committed and offered again, later envelopes must not overtake them.
        self._held: set[int] = set()

    # --- Peer interface used by the Relay -------------------------------------------

    def push(self, message: Message) -> None:
        if self._closing:
            return
        if isinstance(message, PresenceChanged) and self._backed_up():
            return  # advisory; a client can always ask `who` again
        self._queue(message)

    def offer_early(self, delivery: Deliver) -> bool:
        """Before its commit: push now if caught up (True), else hold its place (False)."""
        full = len(self._inflight) + len(self._live) >= self.config.delivery_window
        if (self._held or self._backlog or self._reading_mailbox or full or self._closing
                or self.state is not ConnState.READY):
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
        if (self._backlog or self._reading_mailbox or full
                or self.state is not ConnState.READY):
            # It is committed: the writer will read it in order. (Before READY, login
            # has not yet asked for the backlog; that read will include it.)
            self._backlog = True
        else:
            self._live.append(delivery)
        self._schedule_flush()

    def acked(self, mids: Iterable[int]) -> None:
        self._inflight.difference_update(mids)
        self._schedule_flush()

    def kick(self, code: ErrorCode, message: str) -> None:
        """Tell the client why, flush, and close."""
        if self._closing:
            return
        self._queue(Error(id=None, code=code, message=message))
        self._closing = True
        self._wake.set()

    # --- lifecycle -----------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.config.handshake_timeout, self._handshake_expired)
        self._last_read = loop.time()
        self._idle_timer = loop.call_later(self.config.idle_timeout, self._idle_check)
        writer_task = asyncio.create_task(self._write_loop())
        self._reader_task = asyncio.create_task(self._read_loop())
        await asyncio.wait([self._reader_task])
        timer.cancel()
        self._idle_timer.cancel()
        if not self._reader_task.cancelled() and self._reader_task.exception() is not None:
            exc = self._reader_task.exception()
            if not isinstance(exc, ConnectionError | ssl.SSLError | OSError):
                log.error("reader for %s failed: %r", self.peer_address, exc)
        self.relay.disconnected(self)
        if self._tasks or self._waiting:
            # Requests already taken (a send waiting for its commit) finish and reply.
            await asyncio.wait(self._tasks | self._waiting,
                               timeout=self.config.handshake_timeout)
        if self._stopping:
            self.kick(ErrorCode.SHUTTING_DOWN, "the relay is shutting down")
        self._closing = True
        self._wake.set()
        done, _ = await asyncio.wait([writer_task], timeout=self.config.handshake_timeout)
        if not done:
            writer_task.cancel()
            self._writer.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    def shutdown(self) -> None:
        """Relay shutdown: stop reading; `run` finishes the requests it took, then closes."""
        self._stopping = True
        if self._reader_task is not None:
            self._reader_task.cancel()

    def _idle_check(self) -> None:
        # One timer per connection, re-armed lazily, instead of a timeout per read.
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_read
        if quiet >= self.config.idle_timeout:
            self.kick(ErrorCode.IDLE_TIMEOUT, "no frame within the idle timeout")
        else:
            self._idle_timer = loop.call_later(self.config.idle_timeout - quiet,
                                               self._idle_check)

    def _handshake_expired(self) -> None:
        if self.state is not ConnState.READY:
            log.info("handshake timeout for %s", self.peer_address)
            self.kick(ErrorCode.HANDSHAKE_TIMEOUT, "hello and login took too long")

    # --- reading -------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while not self._closing:
            if self._backed_up():
                self._room.clear()
                self._wake.set()  # the writer drains, then sets _room
                await self._room.wait()
                continue
            data = await self._reader.read(READ_CHUNK)
            self._last_read = self._loop.time()
            if self._closing:
                return
            if not data:
                if self._decoder.buffered:
                    log.info("%s disconnected mid-frame", self.peer_address)
                return
            try:
                frames = self._decoder.feed(data)
            except RemoteProtocolError as exc:
                log.info("bad frame from %s: %s", self.peer_address, exc.message)
                self.kick(exc.code, exc.message)
                return
            for raw in frames:
                await self._take(raw)
                if self._closing:
                    return

    async def _take(self, raw: dict[str, Any]) -> None:
        rid = request_id(raw)
        try:
            request = decode_request(raw)
            check(self.state, request, remote=True)
        except HushwireError as exc:
            self._queue(Error(id=rid, code=exc.code, message=exc.message))
            return
        if self.state is ConnState.READY:
            await self._slots.acquire()
            if type(request) is Send and self._send_nowait(request):
                return
            task = asyncio.create_task(self._serve(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            await self._serve(request, pipelined=False)

    def _send_nowait(self, request: Send) -> bool:
        """The hot path: a send answered from a future callback, no task (True if taken)."""
        try:
            fut = self.relay.send_nowait(self, request, time.time())
        except Exception as exc:
            self._slots.release()
            self._queue(self._error_reply(request, exc))
            return True
        if fut is None:
            return False  # a recipient needs a lookup: take the task path
        self._waiting.add(fut)
        fut.add_done_callback(lambda f: self._sent(request, f))
        return True

    def _sent(self, request: Send, fut: asyncio.Future[Message]) -> None:
        self._waiting.discard(fut)
        self._slots.release()
        if fut.cancelled():
            reply: Message = Error(id=request.id, code=ErrorCode.INTERNAL,
                                   message="internal error")
        elif (exc := fut.exception()) is not None:
            reply = self._error_reply(request, exc)
        else:
            reply = fut.result()
        self._queue(reply)

    @staticmethod
    def _error_reply(request: Request, exc: BaseException) -> Error:
        if isinstance(exc, RequestError):
            return Error(id=request.id, code=exc.code, message=exc.message,
                         retry_after=exc.retry_after)
        if isinstance(exc, HushwireError):
            return Error(id=request.id, code=exc.code, message=exc.message)
        log.error("internal error handling %s", request.TYPE, exc_info=exc)
        return Error(id=request.id, code=ErrorCode.INTERNAL, message="internal error")

    async def _serve(self, request: Request, *, pipelined: bool = True) -> None:
        try:
            reply: Message = await self.relay.handle(self, request, time.time())
            self.state = advance(self.state, request)
            if self.state is ConnState.READY and self.user is not None and not pipelined:
                self._backlog = True  # just logged in: deliver what waited
        except Exception as exc:
            reply = self._error_reply(request, exc)
        finally:
            if pipelined:
                self._slots.release()
        self._queue(reply)

    # --- writing -------------------------------------------------------------------

    def _queue(self, message: Message) -> None:
        frame = encode_frame(message.to_wire(), max_size=self.config.max_frame + 1024)
        self._out.append(frame)
        self._out_bytes += len(frame)
        self._schedule_flush()

    def _backed_up(self) -> bool:
        """Too much output waiting (ours or the transport's): stop reading requests."""
        return self._out_bytes + self._writer.transport.get_write_buffer_size() > OUT_HIGH_WATER

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Once per loop iteration: push live deliveries, then ONE TLS write of it all.

        Only what needs awaiting goes to the writer task: a mailbox read, a drain when
        the transport is backed up, and closing.
        """
        self._flush_scheduled = False
        if self._closing:
            self._wake.set()
            return
        if self.user is not None:
            room = self._pump_live()
            if self._backlog and not self._live and room > 0:
                self._wake.set()
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._out_bytes = 0
            if self._writer.transport.is_closing():
                return
            self._writer.write(data)
            if self._backed_up():
                self._wake.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self.user is not None and not self._closing:
                    await self._pump_deliveries()
                if self._out:
                    data = b"".join(self._out)
                    self._out.clear()
                    self._out_bytes = 0
                    self._writer.write(data)
                if self._writer.transport.get_write_buffer_size() > 0:
                    async with asyncio.timeout(self.config.idle_timeout):
                        await self._writer.drain()
                self._room.set()
                if self._closing and not self._out:
                    break
        except TimeoutError:
            log.info("%s stopped reading; dropping it", self.peer_address)
            self._writer.transport.abort()
        except (ConnectionError, ssl.SSLError, OSError):
            self._writer.transport.abort()
        finally:
            self._closing = True
            self._room.set()
            # Closing ends the reader too (EOF), if it is still waiting for data.
            self._writer.close()

    def _pump_live(self) -> int:
        """Deliver queued live envelopes while the window has room; return the room left."""
        room = self.config.delivery_window - len(self._inflight)
        while self._live and room > 0:
            d = self._live.popleft()
            if d.mid > self._cursor:
                self._deliver(d)
                room -= 1
        return room

    async def _pump_deliveries(self) -> None:
        room = self._pump_live()
        if self._backlog and not self._live and room > 0 and self.user is not None:
            self._backlog = False
            self._reading_mailbox = True
            try:
                rows = await self.relay.store.pending(self.user, after=self._cursor, limit=room)
            finally:
                self._reading_mailbox = False
            for row in rows:
                self._deliver(Deliver(mid=row.mid, sender=row.sender, ts=row.created_at,
                                      body=row.body))
            if len(rows) == room:
                self._backlog = True  # there may be more once acks make room
            if self._backlog and len(self._inflight) < self.config.delivery_window:
                self._wake.set()

    def _deliver(self, d: Deliver) -> None:
        self._inflight.add(d.mid)
        self._cursor = d.mid
        self._queue(d)
