"""One client connection: an `asyncio.Protocol` around the sans-I/O frame codec.

No task per connection. `data_received` feeds the FrameDecoder and takes each request
at once: `send` and `ack` are answered by a callback from whatever settles them (the
recipient's ack or the commit) when the store needs no lookup (the hot path); other
requests once logged in run as tasks, concurrently (pipelining) up to MAX_PIPELINE;
`hello` and `login` run one at a time, in order.
Everything queued for the client in one event-loop pass goes out as ONE
`transport.write` (TLS records are the dominant per-write cost, PERF-NOTES), from one
`FlushQueue` callback per pass shared by all connections. That flush also pushes
deliveries (relay/deliveries.py), at most `delivery_window` unacked: live from the
sender when the recipient is caught up, otherwise read from the mailbox in order (the
only task a connection starts on its own).

Memory per connection is bounded: reading pauses while more than OUT_HIGH_WATER of
output waits or requests are held back (one read's worth of frames at most), and a
client whose transport stays paused for writing past the idle timeout is dropped.

Ending: stop reading, tell the Relay, let requests already taken finish and reply (a
send waiting for its commit gets its `ok`; bounded by the handshake timeout), tell the
client `shutting_down` if the relay is stopping, flush, close. `kick` writes its error
and closes at once. The server learns the connection is gone through `on_finished`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from hushwire.common.codec import decode_request, request_id
from hushwire.common.errors import (
    MAX_ERROR_MESSAGE,
    ErrorCode,
    HushwireError,
    LocalProtocolError,
    RemoteProtocolError,
    RequestError,
)
from hushwire.common.frames import FrameDecoder, encode_frame
from hushwire.common.messages import (
    Ack,
    Deliver,
    Error,
    Message,
    PresenceChanged,
    Reply,
    Request,
    Send,
    SendDevices,
)
from hushwire.common.states import ConnState, advance, check
from hushwire.relay.deliveries import Deliveries, random_mid
from hushwire.relay.handlers import Relay
from hushwire.relay.tls import peer_name

log = logging.getLogger("hushwire.relay.connection")

OUT_HIGH_WATER = 1024 * 1024  # stop reading requests while this much output is queued
MAX_PIPELINE = 256  # concurrent requests per logged-in connection
# Of those, requests that need the store (a task each): the db thread serves everyone
# in arrival order, so this bounds how far one connection can queue ahead of other
# users' commits (256 pipelined `who` put every commit 256 reads back).
MAX_TASKS = 8
# Requests before login: hello, login, a few retries and pings. More is a flood (an
# unauthenticated `ping` loop kept a core busy) and closes the connection.
MAX_BEFORE_LOGIN = 16


class FlushQueue:
    """Connections with output due, flushed by ONE loop callback per pass: a callback per
    connection per pass would cost more than most flushes do."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: list[Connection] = []

    def add(self, conn: Connection) -> None:
        if not self._due:
            self._loop.call_soon(self._run)
        self._due.append(conn)

    def _run(self) -> None:
        due, self._due = self._due, []
        for conn in due:
            try:
                conn._flush()
            except Exception:  # one broken connection must not stall the others
                log.exception("flushing %s failed", conn.peer_address)
                conn.transport.abort()


class Connection(Deliveries, asyncio.Protocol):
    """One client connection (the module docstring); its deliveries are `Deliveries`."""

    def __init__(
        self,
        relay: Relay,
        *,
        flushes: FlushQueue,
        admit: Callable[[Connection], bool],
        on_finished: Callable[[Connection], None],
        new_mid: Callable[[], int] = random_mid,
        forwarded_for: str | None = None,
    ) -> None:
        self.relay = relay
        self._new_mid = new_mid
        self.config = relay.config
        self._counters = relay.counters
        self._flushes = flushes
        self._admit = admit
        self._on_finished = on_finished
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer_address = "unknown"
        self.forwarded_for = forwarded_for
        self.cert_name: str | None = None
        self.state = ConnState.AWAIT_HELLO
        self.user: str | None = None  # the logged-in principal (relay/devices.py)
        self.account: str | None = None
        self.device = 1
        self.token_hash: bytes | None = None
        self.wants_presence = False
        self.version = 0  # the protocol version `hello` agreed on
        self._decoder = FrameDecoder(self.config.max_frame)
        self._loop = asyncio.get_running_loop()
        self._last_read = 0.0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._queued: list[dict[str, Any]] = []  # frames read but not yet taken
        self._paused = False  # reading paused by us
        self._handshaking = False  # a hello or login is being answered
        self._before_login = 0  # requests taken before login
        self._ending = False  # no more requests taken
        self._closing = False  # no more output; the transport is closing
        self._settled = False  # requests taken have finished (or their grace ran out)
        self._lost = False
        self._done = False  # on_finished was called
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._owed = 0  # requests taken without a task, not answered yet
        # Sends handed to a task that has not run yet: later sends must not take the
        # task-free path before it, or they would reserve their ids first (reordering).
        self._sends_starting = 0
        self._mailbox_task: asyncio.Task[None] | None = None
        # Deliveries (relay/deliveries.py).
        self._inflight: dict[int, int] = {}  # store id -> wire id, pushed and not acked
        self._by_wire: dict[int, int] = {}  # wire id -> store id, for acks
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

    def kick(self, code: ErrorCode, message: str) -> None:
        """Tell the client why, flush, and close."""
        if self._closing:
            return
        self._counters.errors[code] += 1
        self._close_with(Error(id=None, code=code, message=message))

    def _close_with(self, error: Error) -> None:
        if self._closing:
            return
        self._queue(error)
        self._shut()
        self._end()

    # --- lifecycle -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if self.forwarded_for is None:
            self.peer_address = str(peer[0]) if peer else "unknown"
        else:  # the client's address a trusted proxy reported (relay/proxy_protocol.py)
            self.peer_address = self.forwarded_for
        ssl_object = transport.get_extra_info("ssl_object")
        # With --client-ca, the verified certificate's CN names the only user it may be.
        self.cert_name = peer_name(ssl_object) if ssl_object is not None else None
        if not self._admit(self):
            self._ending = self._closing = self._settled = self._done = True
            transport.abort()
            return
        self._last_read = self._loop.time()
        self._arm("handshake", self.config.handshake_timeout, self._handshake_expired)
        self._arm("idle", self.config.idle_timeout, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._cancel("stall")
        self._cancel("abort")
        if exc is not None and not isinstance(exc, ConnectionError | ssl.SSLError | OSError):
            log.error("connection of %s failed: %r", self.peer_address, exc)
        self._end()
        self._maybe_finished()

    def eof_received(self) -> bool:
        if self._decoder.buffered:
            log.info("%s disconnected mid-frame", self.peer_address)
        self._end()
        return False  # TLS cannot stay half-open; replies still pending are lost

    def shutdown(self) -> None:
        """Relay shutdown: stop reading, finish the requests taken, say why, close."""
        self._stopping = True
        self._end()

    def _end(self) -> None:
        """Take no more requests; close once those taken have replied (or timed out)."""
        if self._ending:
            return
        self._ending = True
        self._queued = []
        self._cancel("handshake")
        self._cancel("idle")
        if not self._lost and not self.transport.is_closing():
            self.transport.pause_reading()
        self.relay.disconnected(self)
        if self._tasks or self._owed:
            self._arm("grace", self.config.handshake_timeout, self._close)
        else:
            self._close()

    def _close(self) -> None:
        self._cancel("grace")
        if self._stopping:
            self.kick(ErrorCode.SHUTTING_DOWN, "the relay is shutting down")
        else:
            self._shut()
        self._settled = True
        self._maybe_finished()

    def _shut(self) -> None:
        """Write what is queued, then close (abort if the client does not take it)."""
        if self._closing:
            return
        self._closing = True
        self._write_out()
        if not self._lost:
            self.transport.close()
            self._arm("abort", self.config.handshake_timeout, self.transport.abort)

    def _maybe_finished(self) -> None:
        if self._done or not (self._lost and self._settled) or self._mailbox_task is not None:
            return
        self._done = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._on_finished(self)

    def _arm(self, name: str, delay: float, callback: Callable[[], object]) -> None:
        self._cancel(name)
        self._timers[name] = self._loop.call_later(delay, callback)

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _idle_check(self) -> None:
        # One timer per connection, re-armed lazily, instead of a timeout per read.
        quiet = self._loop.time() - self._last_read
        if quiet >= self.config.idle_timeout:
            self.kick(ErrorCode.IDLE_TIMEOUT, "no frame within the idle timeout")
        else:
            self._arm("idle", self.config.idle_timeout - quiet, self._idle_check)

    def hold_handshake(self, seconds: float) -> None:
        """A new device waits in `link_join` for its old device to answer: neither the
        handshake nor the idle timeout may cut that wait (the link's expiry bounds it)."""
        self._arm("handshake", seconds + self.config.handshake_timeout, self._handshake_expired)
        self._last_read = self._loop.time() + seconds  # quiet only counts from then on
        self._arm("idle", seconds + self.config.idle_timeout, self._idle_check)

    def _handshake_expired(self) -> None:
        self._timers.pop("handshake", None)
        if self.state is not ConnState.READY:
            log.info("handshake timeout for %s", self.peer_address)
            self.kick(ErrorCode.HANDSHAKE_TIMEOUT, "hello and login took too long")

    # --- reading -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        if self._ending:
            return
        try:
            frames = self._decoder.feed(data)
        except RemoteProtocolError as exc:
            log.info("bad frame from %s: %s", self.peer_address, exc.message)
            self.kick(exc.code, exc.message[:MAX_ERROR_MESSAGE])
            return
        if self._queued:
            frames = self._queued + frames
            self._queued = []
        self._take_all(frames)

    def _take_all(self, frames: list[dict[str, Any]]) -> None:
        """Take frames in order while allowed; keep the rest and stop reading."""
        if frames and self._backed_up():
            self._queued = frames
        else:
            for i, raw in enumerate(frames):
                if self._ending:
                    return
                if self._handshaking or (
                    self.state is ConnState.READY
                    and (
                        len(self._tasks) + self._owed >= MAX_PIPELINE
                        or len(self._tasks) >= MAX_TASKS
                    )
                ):
                    self._queued = frames[i:]
                    break
                self._take(raw)
        self._update_reading()

    def _update_reading(self) -> None:
        if self._ending:
            return
        pause = bool(self._queued) or self._backed_up()
        if pause is not self._paused:
            self._paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _resume(self) -> None:
        """Something that held requests back went away: take what waits, maybe read."""
        if self._ending:
            return
        frames, self._queued = self._queued, []
        self._take_all(frames)

    def _take(self, raw: dict[str, Any]) -> None:
        if self.state is not ConnState.READY:
            self._before_login += 1
            if self._before_login > MAX_BEFORE_LOGIN:
                log.info("%s: too many requests before login", self.peer_address)
                self.kick(ErrorCode.RATE_LIMITED, "too many requests before login")
                return
        request = None
        try:
            request = decode_request(raw)
            check(self.state, request, remote=True)
            if self.state is ConnState.READY:
                self.relay.check_rate(self, request, time.time())
        except HushwireError as exc:
            self._counters.errors[exc.code] += 1
            message = exc.message[:MAX_ERROR_MESSAGE]
            error = Error(id=request_id(raw), code=exc.code, message=message)
            if request is None:
                self._queue(error)
            else:
                self._reply(request, error)
            return
        if self.state is not ConnState.READY:
            self._handshaking = True
            self._start(self._serve(request, handshake=True))
            return
        kind = type(request)
        answer = partial(self._answer, request)
        self._owed += 1
        try:
            # The hot path: sends and acks answered by callbacks, no task (see the module
            # docstring). A send never overtakes one handed to a task (`_sends_starting`).
            if kind is SendDevices and not self._sends_starting:
                taken = self.relay.sends.send_devices_nowait(self, request, time.time(), answer)  # type: ignore[arg-type]
            elif kind is Send and not self._sends_starting:
                taken = self.relay.send_nowait(self, request, time.time(), answer)  # type: ignore[arg-type]
            elif kind is Ack:
                request = self._store_ids(request)  # type: ignore[arg-type]
                answer = partial(self._answer, request)
                taken = self.relay.ack_nowait(self, request, answer)
            else:
                taken = False
        except Exception as exc:
            self._owed -= 1
            self._reply(request, self._error_reply(request, exc))
            return
        if not taken:  # not send/ack, or the store needs a lookup: take a task
            self._owed -= 1
            if kind is Send or kind is SendDevices:
                self._sends_starting += 1
            self._start(self._serve(request))

    def _start(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._handshaking = False  # hello and login run alone, so this was it if any
        self._request_done()

    def _answer(self, request: Request, reply: Message | BaseException) -> None:
        """A request taken without a task is answered. This may run inside another
        connection's turn (its ack settled our send), so it only queues: frames held
        back are taken by the next flush, never from here."""
        self._owed -= 1
        self._reply(
            request, reply if isinstance(reply, Message) else self._error_reply(request, reply)
        )
        self._request_done()

    def _reply(self, request: Request, reply: Message) -> None:
        """Queue a request's reply. An `ack` with a nil `id` (protocol v2) wants none, which
        spares a frame per message: it succeeds silently, and its failure closes the
        connection (its envelopes are then pushed again after the next login)."""
        if request.id is not None:
            self._queue(reply)
        elif isinstance(reply, Error):
            self._close_with(reply)

    def _request_done(self) -> None:
        if self._ending:
            if not self._settled and not self._tasks and not self._owed:
                self._close()
        elif self._queued:
            self._schedule_flush()  # the flush resumes reading (we are paused)

    def _error_reply(self, request: Request, exc: BaseException) -> Error:
        if isinstance(exc, RequestError):
            reply = Error(
                id=request.id,
                code=exc.code,
                message=exc.message[:MAX_ERROR_MESSAGE],
                retry_after=exc.retry_after,
                versions=exc.versions,
                device_lists=exc.device_lists,
            )
        elif isinstance(exc, HushwireError):
            reply = Error(
                id=request.id,
                code=exc.code,
                message=exc.message[:MAX_ERROR_MESSAGE],
                retry_after=getattr(exc, "retry_after", None),  # StoreUnavailable has one
            )
        else:
            log.error("internal error handling %s", request.TYPE, exc_info=exc)
            reply = Error(id=request.id, code=ErrorCode.INTERNAL, message="internal error")
        self._counters.errors[reply.code] += 1
        return reply

    async def _serve(self, request: Request, *, handshake: bool = False) -> None:
        if type(request) is Send or type(request) is SendDevices:
            # It takes its turn in this step (relay/sending.py, SendOrder): later sends
            # queue behind it from here on.
            self._sends_starting -= 1
        try:
            reply: Message = await self.relay.handle(self, request, time.time())
            self.state = advance(self.state, request)
            if self.state is ConnState.READY and self.user is not None and handshake:
                self._backlog = True  # just logged in: deliver what waited
        except Exception as exc:
            reply = self._error_reply(request, exc)
        self._reply(request, reply)

    # --- writing -------------------------------------------------------------------

    def _queue(self, message: Message) -> None:
        if self._closing:
            return
        try:
            frame = encode_frame(message.to_wire(), max_size=self.config.max_frame + 1024)
        except LocalProtocolError:
            # Whatever built it, a reply that cannot be sent must still be answered, or
            # the client waits forever: it becomes a typed error (a push is dropped).
            log.error("%s too large for %s; not sent", message.TYPE, self.peer_address)
            rid = getattr(message, "id", None)
            if not isinstance(message, Reply | Error) or rid is None:
                return
            message = Error(
                id=rid, code=ErrorCode.REPLY_TOO_LARGE, message="the reply exceeds the frame limit"
            )
            frame = encode_frame(message.to_wire())
        self._out.append(frame)
        self._out_bytes += len(frame)
        self._schedule_flush()

    def _backed_up(self) -> bool:
        """Too much output waiting (ours or the transport's): stop reading requests."""
        return self._out_bytes + self.transport.get_write_buffer_size() > OUT_HIGH_WATER

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._flushes.add(self)

    def _flush(self) -> None:
        """Once per loop iteration: push live deliveries, then ONE write of it all."""
        self._flush_scheduled = False
        if self._closing:
            return
        if self.user is not None:
            room = self._pump_live()
            if self._backlog and not self._live and room > 0 and not self._reading_mailbox:
                self._read_mailbox(self.user, room)
        self._write_out()
        if self._paused:
            self._resume()

    def _write_out(self) -> None:
        if not self._out:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self._out_bytes = 0
        if not self._lost and not self.transport.is_closing():
            self.transport.write(data)

    def pause_writing(self) -> None:
        # The client is not reading what we send: drop it if that lasts.
        self._arm("stall", self.config.idle_timeout, self._stalled)

    def resume_writing(self) -> None:
        self._cancel("stall")
        if self._paused:
            self._resume()

    def _stalled(self) -> None:
        log.info("%s stopped reading; dropping it", self.peer_address)
        self.transport.abort()
