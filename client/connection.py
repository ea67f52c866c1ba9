"""One TLS connection from a client to the relay: requests, replies and pushes.

The byte-level protocol is `common/`; this shell owns the socket. Each request gets an
id and a future; the reader task resolves futures from replies and queues pushes. The
relay's certificate is checked against a pinned SHA-256 fingerprint (trust on first use,
like SSH's known_hosts) or against a CA file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from hushwire.client.errors import CertificateMismatch, ConnectionClosed
from hushwire.client.text import safe_line
from hushwire.common.codec import decode_from_relay
from hushwire.common.errors import (
    ErrorCode,
    RemoteProtocolError,
    RequestError,
)
from hushwire.common.fingerprint import cert_fingerprint
from hushwire.common.frames import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from hushwire.common.messages import (
    PROTOCOL_VERSION,
    DeviceEnvelope,
    Error,
    Hello,
    HelloOk,
    ListVersion,
    Login,
    LoginOk,
    Push,
    Reply,
    Request,
    SendDevices,
    SendOk,
)
from hushwire.common.states import ConnState, advance, check

log = logging.getLogger("hushwire.client")

# Defined in client/errors.py (the client's one exception module); re-exported here so
# `from client.connection import ConnectionClosed` keeps working.
__all__ = [
    "CertificateMismatch",
    "ConnectionClosed",
    "RelayConnection",
    "TlsSettings",
    "cert_fingerprint",
]

R = TypeVar("R", bound=Reply)
CLIENT_NAME = "hushwire/0.1"

# Bounds on the relay's `hello` settings (docs/protocol.md "hello").
MIN_FRAME: Final = 1024  # the relay's own configuration minimum
MAX_FRAME: Final = 16 * 1024 * 1024
MIN_IDLE: Final = 10.0  # seconds: the keepalive pings at half of this at most
MAX_IDLE: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """How to trust the relay: a pinned fingerprint (None: learn it), or a CA file."""

    pin: str | None = None
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def context(self) -> ssl.SSLContext:
        if self.ca_file is not None:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
        else:
            # Pinning replaces CA validation: the fingerprint check after the handshake
            # is what authenticates the relay.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_cert is not None:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


class RelayConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.fingerprint = ""
        self.state = ConnState.AWAIT_HELLO
        self.hello: HelloOk | None = None
        self.max_frame = max_frame
        self.pushes: asyncio.Queue[Push] = asyncio.Queue()
        self.closed_reason: Error | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[type[Reply], asyncio.Future[Any]]] = {}
        self._expected: dict[int, type[Reply]] = {}
        self._closed = asyncio.Event()
        self._read_task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        tls: TlsSettings,
        *,
        connect_timeout: float = 15.0,
    ) -> RelayConnection:
        """Open TLS and check the relay's certificate; the caller then says hello."""
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=tls.context(),
                    server_hostname=host if tls.ca_file else None,
                    limit=DEFAULT_MAX_FRAME * 2,
                )
        except TimeoutError:
            raise ConnectionClosed(f"timed out connecting to {host}:{port}") from None
        except ssl.SSLCertVerificationError as exc:
            # Like a pin mismatch: who answered is not the relay; never failed over.
            raise CertificateMismatch(
                f"the relay at {host}:{port} presented a certificate that {tls.ca_file} "
                f"does not validate: {exc.verify_message}. Someone may be intercepting the "
                "connection, or the relay's certificate is not from that CA."
            ) from None
        except ssl.SSLError as exc:
            raise ConnectionClosed(f"TLS with {host}:{port} failed: {exc.reason}") from None
        except OSError as exc:
            raise ConnectionClosed(f"cannot connect to {host}:{port}: {exc.strerror}") from None
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        conn = cls(reader, writer)
        conn.fingerprint = cert_fingerprint(der)
        if tls.pin is not None and conn.fingerprint != tls.pin:
            await conn.close()
            raise CertificateMismatch(
                f"the relay at {host}:{port} presented a different certificate than the one "
                f"pinned for it.\n  pinned:    {tls.pin}\n  presented: {conn.fingerprint}\n"
                "Someone may be intercepting the connection. If the operator really replaced "
                "the certificate, remove the pin (`hushwire login` again) after checking the "
                "new fingerprint with them."
            )
        return conn

    async def handshake(
        self,
        user: str,
        token: str,
        device: int | None = None,
        *,
        sign_key: bytes | None = None,
        versions: tuple[int, ...] = (PROTOCOL_VERSION,),
    ) -> LoginOk:
        """hello then login; raises RequestError (auth_failed, rate_limited,
        account_has_devices for a `sign_key` that is not the account's...) on refusal.

        The client offers only version 2: it starts PQXDH sessions only (security.md,
        "PQXDH"), so a relay that cannot store KEM prekeys answers unsupported_version
        with its list. (Tests of the relay's version-1 service pass `versions=(1,)`.)
        """
        await self.say_hello(versions)
        return await self.request(Login, user=user, token=token, device=device, sign_key=sign_key)

    def supports(self, feature: str) -> bool:
        """Whether the relay named `feature` in its hello (messages.RELAY_FEATURES)."""
        return self.hello is not None and feature in self.hello.features

    async def say_hello(self, versions: tuple[int, ...] = (PROTOCOL_VERSION,)) -> HelloOk:
        """hello alone: what a new device does before it links (it has no login yet)."""
        hello = await self.request(Hello, versions=versions, client=CLIENT_NAME)
        self.hello = checked_hello(hello)
        self.max_frame = self.hello.max_frame
        return self.hello

    async def request(self, cls: type[Request], **fields: Any) -> Any:
        """Send `cls(**fields)` with a fresh id and wait for its reply."""
        rid = next(self._ids)
        req = cls(id=rid, **fields)  # type: ignore[call-arg]
        check(self.state, req, remote=False)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (cls.REPLY, fut)
        self._expected[rid] = cls.REPLY
        try:
            self._send(req)
            reply = await fut
        finally:
            self._pending.pop(rid, None)
            self._expected.pop(rid, None)
        self.state = advance(self.state, req)
        return reply

    def notify(self, req: Request) -> None:
        """Send a request that wants no reply (an `ack` with a nil `id`, protocol v2)."""
        check(self.state, req, remote=False)
        self._send(req)

    async def send_devices(
        self,
        envelopes: Sequence[DeviceEnvelope],
        lists: Sequence[ListVersion],
        *,
        payload: bytes | None = None,
    ) -> SendOk:
        """One `send_devices`: a sealed envelope per device, all or nothing. A group send
        gives `payload` (the once-encrypted group message, common/crypto/group_payload.py):
        the relay carries it once and hands it out with every one of these envelopes, as
        `Deliver.payload` (protocol version 2; docs/protocol.md, send_devices)."""
        return await self.request(  # type: ignore[no-any-return]
            SendDevices, envelopes=tuple(envelopes), lists=tuple(lists), payload=payload
        )

    def _send(self, req: Request) -> None:
        if self._closed.is_set():
            raise ConnectionClosed("the connection to the relay is closed", self.closed_reason)
        self._writer.write(encode_frame(req.to_wire(), max_size=self.max_frame))

    async def drain(self) -> None:
        await self._writer.drain()

    async def _read_loop(self) -> None:
        decoder = FrameDecoder(max(self.max_frame, DEFAULT_MAX_FRAME) + 1024)
        message = "the relay closed the connection"
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                for raw in decoder.feed(data):
                    self._dispatch(decode_from_relay(raw, self._expected))
        except RemoteProtocolError as exc:
            message = f"the relay sent a bad frame: {exc.message}"
            log.warning("%s", message)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            message = f"connection to the relay lost: {exc}"
        finally:
            if self.closed_reason is not None:
                reason = self.closed_reason
                message = safe_line(f"{reason.message} ({reason.code})")
            self._fail_all(ConnectionClosed(message, self.closed_reason))
            self._closed.set()

    def _dispatch(self, msg: Reply | Error | Push) -> None:
        if isinstance(msg, Push):
            self.pushes.put_nowait(msg)
            return
        if msg.id is None:  # a fatal error: the relay closes next
            self.closed_reason = msg  # type: ignore[assignment]
            return
        entry = self._pending.get(msg.id)
        if entry is None or entry[1].done():
            return
        if isinstance(msg, Error):
            entry[1].set_exception(
                RequestError(
                    _code(msg.code),
                    safe_line(msg.message),
                    retry_after=msg.retry_after,
                    versions=msg.versions,
                    device_lists=msg.device_lists,
                )
            )
        else:
            entry[1].set_result(msg)

    def _fail_all(self, exc: Exception) -> None:
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        """Idempotent."""
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_task
        self._closed.set()


def checked_hello(hello: HelloOk) -> HelloOk:
    """The relay's settings, held to what a client can live with: a `max_frame` outside
    MIN_FRAME..MAX_FRAME is refused (too small to send a key bundle, or a promise to
    buffer gigabytes); `idle_timeout` is clamped to MIN_IDLE..MAX_IDLE (0 made the
    keepalive ping about 800 times a second)."""
    if not MIN_FRAME <= hello.max_frame <= MAX_FRAME:
        raise ConnectionClosed(
            f"the relay announced a frame limit of {hello.max_frame} bytes, outside the "
            f"{MIN_FRAME}..{MAX_FRAME} this client accepts; refusing to use it"
        )
    idle = min(max(hello.idle_timeout, MIN_IDLE), MAX_IDLE)
    return hello if idle == hello.idle_timeout else dataclasses.replace(hello, idle_timeout=idle)


def _code(code: str) -> ErrorCode:
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.INTERNAL
