"""Helpers shared by the test tree (imported by conftest.py and by tests)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import signal
import ssl
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from hushwire.client.connection import RelayConnection, TlsSettings
from hushwire.common.frames import FrameDecoder, encode_frame
from hushwire.relay.config import RelayConfig
from hushwire.relay.server import RelayServer
from hushwire.relay.store import Store
from hushwire.relay.tokens import hash_token, new_salt, new_token

DEMO_USERS = ("alice", "bob", "carol")


async def add_users(db: Path | str, names: tuple[str, ...]) -> dict[str, str]:
    tokens = {}
    async with await Store.open(db) as store:
        for name in names:
            token, salt = new_token(), new_salt()
            await store.add_user(name, hash_token(token, salt), salt, now=0)
            tokens[name] = token
    return tokens


@dataclass
class Harness:
    server: RelayServer
    config: RelayConfig
    tokens: dict[str, str]
    conns: list[RelayConnection] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def tls(self) -> TlsSettings:
        return TlsSettings(pin=self.server.fingerprint)

    async def connect(self) -> RelayConnection:
        conn = await RelayConnection.connect("127.0.0.1", self.port, self.tls)
        self.conns.append(conn)
        return conn

    async def login(self, user: str, *, version: int = 1) -> RelayConnection:
        """A logged-in connection. Version 1 by default: these tests publish hand-made
        keys without KEM prekeys; the version-2 key directory has its own tests."""
        conn = await self.connect()
        await conn.handshake(user, self.tokens[user], versions=(version,))
        return conn

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()
        await self.server.close()

    async def restart(self, **overrides: object) -> None:
        """Stop the relay and start a new one on the same db and port (e.g. another cert)."""
        await self.server.close()
        config = dataclasses.replace(self.config, port=self.port, **overrides).validate()
        server = RelayServer(config)
        await server.start()
        self.server, self.config = server, config


WAIT = 20.0
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
FINGERPRINT = re.compile(r"fingerprint ([0-9A-F:]{95})")


class Daemon:
    def __init__(self, db, *extra: str, **popen) -> None:
        """`popen`: more create_subprocess_exec arguments (env, preexec_fn)."""
        self.db = db
        self.extra = extra
        self.popen = popen
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.fingerprint = ""
        self.log: list[str] = []
        self._grew = asyncio.Condition()
        self._pump: asyncio.Task | None = None

    async def start(self) -> Daemon:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hushwire.relay.cli",
            "--db",
            str(self.db),
            "--port",
            "0",
            *self.extra,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **self.popen,
        )
        while not self.port:
            line = await asyncio.wait_for(self.proc.stderr.readline(), WAIT)
            if not line:
                raise AssertionError("relay exited:\n" + "".join(self.log))
            text = line.decode()
            self.log.append(text)
            if m := FINGERPRINT.search(text):
                self.fingerprint = m.group(1)
            if m := LISTENING.search(text):
                self.port = int(m.group(1))
        self._pump = asyncio.create_task(self._read_rest())
        return self

    async def _read_rest(self) -> None:
        async for line in self.proc.stderr:
            self.log.append(line.decode())
            async with self._grew:
                self._grew.notify_all()

    async def wait_log(self, pattern: str) -> str:
        """The first log line matching `pattern`, waiting for it to be written."""
        rx = re.compile(pattern)

        async def find() -> str:
            async with self._grew:
                while True:
                    for line in self.log:
                        if rx.search(line):
                            return line
                    await self._grew.wait()

        return await asyncio.wait_for(find(), WAIT)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = await asyncio.wait_for(self.proc.wait(), WAIT)
        await asyncio.wait_for(self._pump, WAIT)
        return rc

    async def login(self, user: str, token: str) -> RelayConnection:
        conn = await RelayConnection.connect(
            "127.0.0.1", self.port, TlsSettings(pin=self.fingerprint)
        )
        await conn.handshake(user, token)
        return conn


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RawClient:
    """A bare TLS connection speaking frames by hand, from a chosen source address
    (any 127.x.y.z is loopback on Linux, so tests can come from other /24 networks)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._decoder = FrameDecoder(1 << 20)
        self._frames: list[dict] = []

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1") -> RawClient:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, local_addr=(source, 0)), WAIT
        )
        return cls(reader, writer)

    def send(self, frame: dict) -> None:
        self.writer.write(encode_frame(frame, max_size=1 << 20))

    async def recv(self) -> dict | None:
        """The next frame, or None once the relay has closed the connection."""
        while not self._frames:
            try:
                data = await asyncio.wait_for(self.reader.read(1 << 16), WAIT)
            except (ConnectionError, ssl.SSLError):
                return None
            if not data:
                return None
            self._frames += self._decoder.feed(data)
        return self._frames.pop(0)

    async def request(self, frame: dict) -> dict | None:
        """Send one request and return its reply (pushes skipped), None if closed."""
        self.send(frame)
        while (reply := await self.recv()) is not None:
            fatal = reply["t"] == "error" and reply.get("id") is None
            if fatal or reply.get("id") == frame["id"]:
                return reply
        return None

    def close(self) -> None:
        self.writer.transport.abort()


class Listener(ABC):
    """A TCP server on a free loopback port counting what it accepts; subclasses say
    what happens to each connection (`_on_client`)."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None

    async def start(self):
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader, writer) -> None:
        self.accepted += 1
        await self._on_client(reader, writer)

    @abstractmethod
    async def _on_client(self, reader, writer) -> None: ...

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()


class Cutter(Listener):
    """A TCP forwarder in front of a relay: a second address for the same relay that
    can die. `cut()` stops listening (connects are refused) and drops every connection
    through it, as a relay machine that fails mid-session would."""

    def __init__(self, target_port: int) -> None:
        super().__init__()
        self.target_port = target_port
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    async def _on_client(self, creader, cwriter) -> None:
        rreader, rwriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((cwriter, rwriter))
        pipes = [
            asyncio.create_task(self._pipe(creader, rwriter)),
            asyncio.create_task(self._pipe(rreader, cwriter)),
        ]
        self._tasks.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for w in (cwriter, rwriter):
            w.transport.abort()

    @staticmethod
    async def _pipe(reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    async def cut(self) -> None:
        self._server.close()
        for w in self._writers:
            w.transport.abort()
        for t in self._tasks:
            t.cancel()
        await self._server.wait_closed()


class Dropper(Listener):
    """Accepts TCP connections and closes them at once: a TLS handshake there fails."""

    async def _on_client(self, reader, writer) -> None:
        writer.transport.abort()
