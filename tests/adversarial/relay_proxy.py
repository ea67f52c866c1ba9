"""A relay as its operator could bend it: a TLS endpoint with the relay's own certificate
(so a client's pin matches) that forwards frames both ways and lets a test look at,
rewrite, drop or inject any of them. The relay behind it and the client in front of it
are the real ones; only what travels between them is the operator's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any

from hushwire.common.frames import FrameDecoder, encode_frame
from tests.support import Harness

Frame = dict[str, Any]
MAX = 1 << 22  # the proxy itself never limits what it carries


class Pipe:
    """One client connection through the proxy."""

    def __init__(self, proxy: FrameProxy, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.user: str | None = None  # account and device, as its login named them
        self.device = 1
        self._client = writer

    def inject(self, frame: Frame) -> None:
        """Write a frame to the client as if the relay had sent it."""
        self._client.write(encode_frame(frame, max_size=MAX))


# to_client(pipe, frame) and to_relay(pipe, frame) return the frames to pass on in place
# of `frame` ([] drops it; [frame] passes it).
Hook = Callable[[Pipe, Frame], list[Frame]]


def passthrough(pipe: Pipe, frame: Frame) -> list[Frame]:
    return [frame]


class FrameProxy:
    def __init__(self, relay: Harness) -> None:
        self.relay = relay
        self.to_client: Hook = passthrough
        self.to_relay: Hook = passthrough
        self.pipes: list[Pipe] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = 0

    async def start(self) -> FrameProxy:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.relay.config.cert_path, self.relay.config.key_path)
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def pipe_of(self, user: str, device: int = 1) -> Pipe:
        (pipe,) = [p for p in self.pipes if (p.user, p.device) == (user, device)]
        return pipe

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.relay.port, ssl=ctx)
        pipe = Pipe(self, writer)
        self.pipes.append(pipe)
        tasks = [
            asyncio.create_task(self._pump(pipe, reader, up_writer, upstream=True)),
            asyncio.create_task(self._pump(pipe, up_reader, writer, upstream=False)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for w in (writer, up_writer):
                w.close()
            self.pipes.remove(pipe)
            self._tasks.difference_update(tasks)

    async def _pump(
        self,
        pipe: Pipe,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        decoder = FrameDecoder(MAX)
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while chunk := await reader.read(65536):
                for frame in decoder.feed(chunk):
                    if upstream and frame.get("t") == "login":
                        pipe.user, pipe.device = frame.get("user"), frame.get("device") or 1
                    hook = self.to_relay if upstream else self.to_client
                    for out in hook(pipe, frame):
                        writer.write(encode_frame(out, max_size=MAX))
                await writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
