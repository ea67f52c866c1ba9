"""Accepting connections: the listening sockets, accept(), and the TLS handshake.

`loop.create_server(ssl=...)` drops a refused TLS handshake (a client without the
certificate mutual TLS requires, a scanner, a handshake timeout) without a word: the
protocol never hears of it and, outside debug mode, neither asyncio nor uvloop logs it.
uvloop (libuv) also hides a failed accept() such as EMFILE. So the relay accepts
itself: one reader callback per listening socket accepts every pending connection and
hands it to `loop.connect_accepted_socket(ssl=...)`, whose failure names the peer.
Each failure is one log line with the peer address and the reason, never a secret.

Behind a load balancer speaking the PROXY protocol (relay/proxy_protocol.py), a
connection from a trusted proxy first has its header read (within the handshake
timeout); the client's address it names is what admission, rate limits and logs see.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from hushwire.relay import proxy_protocol
from hushwire.relay.admission import Admission
from hushwire.relay.errors import ProxyHeaderError

log = logging.getLogger("hushwire.relay.accept")

ACCEPT_RETRY = 0.5  # seconds without accepting after the process ran out of descriptors
ACCEPT_BATCH = 64  # connections accepted per readable event, so reads still get a turn
# Out of a resource the process shares: retrying at once would only spin.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "unknown"


def _reason(exc: BaseException) -> str:
    """What went wrong, from OpenSSL's reason code where there is one (no secrets)."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, TimeoutError | ConnectionAbortedError) and exc.errno is None:
        return "handshake timeout"  # what asyncio's and uvloop's sslproto raise for it
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


class Acceptor:
    """Listens on `host:port`; each accepted socket does the TLS handshake in a task and,
    once it succeeds, gets a protocol from `factory` (as create_server would), called
    with the client's address when a trusted proxy reported it, else None."""

    def __init__(
        self,
        factory: Callable[[str | None], asyncio.Protocol],
        admission: Admission,
        *,
        handshake_timeout: float,
        backlog: int = 1024,
        proxies: tuple[proxy_protocol.Network, ...] = (),
    ) -> None:
        self._factory = factory
        self._admission = admission
        self._context: ssl.SSLContext | None = None
        self._handshake_timeout = handshake_timeout
        self._backlog = backlog
        self._proxies = proxies
        self._loop = asyncio.get_running_loop()
        self.sockets: list[socket.socket] = []
        self._handshakes: set[asyncio.Task[None]] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        # Plain ints, read by the metrics exporter (relay/metrics.py).
        # "admission": refused at accept (relay/admission.py), closed before any TLS.
        self.failures = {"accept": 0, "handshake": 0, "admission": 0}

    async def bind(self, host: str, port: int) -> None:
        """Bind every address `host` resolves to (as create_server does); `start` then
        accepts. Binding first lets a relay that cannot listen fail before it creates
        any file."""
        infos = await self._loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(self._backlog)
                sock.setblocking(False)
        except OSError:
            self.close()
            raise

    def start(self, context: ssl.SSLContext) -> None:
        """Accept connections, doing the TLS handshake with `context`."""
        self._context = context
        self._start_reading()

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    def _start_reading(self) -> None:
        self._retry = None
        if not self._closed:
            for sock in self.sockets:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _stop_reading(self) -> None:
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.failures["accept"] += 1
                log.warning(
                    "accept failed: %s",
                    exc.strerror or exc,
                    extra={"event": "accept_failed", "reason": _reason(exc)},
                )
                if exc.errno in _EXHAUSTED:
                    # The connection waits in the backlog; try again shortly.
                    self._stop_reading()
                    self._retry = self._loop.call_later(ACCEPT_RETRY, self._start_reading)
                    return
                continue
            source = str(address[0]) if address else "unknown"
            if self._proxies and proxy_protocol.trusted(source, self._proxies):
                # Admitted once its header names the client (the proxy is one address
                # for many clients); its own time is bounded by the handshake timeout.
                self._track(self._proxied(sock, source))
                continue
            # Counted from here, not from login: a handshake holds a descriptor too.
            prefix = self._admit(sock, source)
            if prefix is not None:
                self._track(self._handshake(sock, prefix, None))

    def _admit(self, sock: socket.socket, address: str) -> str | None:
        prefix = self._admission.accept(address)
        if prefix is None:
            self.failures["admission"] += 1
            sock.close()
        return prefix

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _proxied(self, sock: socket.socket, proxy: str) -> None:
        """Read the PROXY v2 header a trusted proxy sends first, exactly (the TLS
        ClientHello follows it), then admit and shake hands as the client it names."""
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self._handshake_timeout):
                header = await self._read_exactly(sock, proxy_protocol.HEADER)
                body = await self._read_exactly(sock, proxy_protocol.body_length(header))
            client = proxy_protocol.source_address(header, body)
        except asyncio.CancelledError:
            sock.close()
            raise
        except (OSError, TimeoutError, EOFError, ProxyHeaderError) as exc:
            sock.close()
            self.failures["handshake"] += 1
            reason = exc.message if isinstance(exc, ProxyHeaderError) else _reason(exc)
            log.info(
                "PROXY header from %s refused: %s",
                proxy,
                reason,
                extra={"event": "handshake_refused", "peer": proxy, "reason": reason},
            )
            return
        prefix = self._admit(sock, client or proxy)
        if prefix is not None:
            await self._handshake(sock, prefix, client)

    async def _read_exactly(self, sock: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = await self._loop.sock_recv(sock, size - len(data))
            if not chunk:
                raise EOFError("closed before the PROXY header ended")
            data += chunk
        return data

    async def _handshake(self, sock: socket.socket, prefix: str, client: str | None) -> None:
        peer = client or _peer(sock)
        sock.setblocking(False)
        ok = False
        try:
            await self._loop.connect_accepted_socket(
                lambda: self._factory(client),
                sock,
                ssl=self._context,
                ssl_handshake_timeout=self._handshake_timeout,
            )
            ok = True
        except asyncio.CancelledError:
            sock.close()
            raise
        except (OSError, TimeoutError, EOFError) as exc:
            # ssl.SSLError and ConnectionError are OSErrors too.
            sock.close()
            self.failures["handshake"] += 1
            log.info(
                "TLS handshake with %s refused: %s",
                peer,
                _reason(exc),
                extra={"event": "handshake_refused", "peer": peer, "reason": _reason(exc)},
            )
        except Exception:  # a bug, not the peer: say so, and keep accepting others
            sock.close()
            log.exception("accepting a connection from %s failed", peer)
        finally:
            self._admission.handshake_done(prefix, ok=ok)

    @property
    def handshaking(self) -> int:
        """TLS handshakes in progress."""
        return len(self._handshakes)

    def close(self) -> None:
        """Stop accepting and abandon handshakes in progress. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
                sock.close()
        for task in self._handshakes:
            task.cancel()
