"""The running relay's local control socket: `DB.control` beside the db by default
(`control_socket` sets another path, e.g. for relays over PostgreSQL), mode 0600.

`hushwire-admin stats` asks it who is online and how many connections are open (only
the relay knows), and `hushwire-admin purge` asks the relay to purge through its own
store so its cached mailbox counts stay right. Why a socket and not the db: presence
written to the db would cost a write per login and logout on the relay's single db
thread, and would be wrong after a crash; the socket costs nothing until asked.

Access: the socket file is created 0600 (owner only), and each connection's peer
credentials (SO_PEERCRED) must be the relay's own uid or root, so a permissive
directory cannot widen it. Protocol: one JSON object per line each way,
`{"op": "stats"}` or `{"op": "purge", "older_than": UNIX_TIME}`; the answer has
`"ok": true` and the result, or `"ok": false` and `"error"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from hushwire.relay.errors import ControlError

log = logging.getLogger("hushwire.relay.control")

MAX_REQUEST = 4096
TIMEOUT = 10.0
_SUN_PATH = 100  # sockaddr_un holds 108 bytes; longer paths go through /proc/self/fd

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def control_path(db: Path) -> Path:
    """The default socket of a relay whose db is `db` (no `control_socket` set)."""
    return Path(f"{db}.control")


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """A name for `path` short enough for bind/connect: itself, or via its directory's fd."""
    if len(os.fsencode(path)) <= _SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _answers(path: Path) -> bool:
    """Whether a process listens on the socket at `path` (a relay, as far as we know)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            with _address(path) as address:
                sock.connect(address)
        except OSError:
            return False
    return True


class ControlServer:
    """Serves the control socket until `close()`. A socket file already there that no
    process listens on is a leftover of a relay that was killed: replaced. One that
    answers belongs to a running relay (two relays given the same `control_socket`):
    ControlError, never stolen."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if _answers(self.path):
            raise ControlError(
                f"the control socket {self.path} is in use by another running relay; "
                "give each relay its own control_socket"
            )
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)  # 0600 from the moment it exists
            try:
                with _address(self.path) as address:
                    sock.bind(address)
            finally:
                os.umask(old)
            os.chmod(self.path, 0o600)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        except BaseException:
            sock.close()
            raise

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer.get_extra_info("socket"))
            if uid not in (os.getuid(), 0):
                log.warning("control socket: refused uid %d", uid)
                return
            line = await asyncio.wait_for(reader.readline(), TIMEOUT)
            try:
                request = json.loads(line[:MAX_REQUEST])
                if not isinstance(request, dict):
                    raise ValueError("expected a JSON object")
                answer = {"ok": True, **await self._handler(request)}
            except (ValueError, KeyError, TypeError, ControlError) as exc:
                answer = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError) as exc:
            log.info("control socket: %s", exc)
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self.path.unlink(missing_ok=True)


def ask(path: Path, request: dict[str, Any], *, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request to the relay listening on the socket `path`; its answer, or
    ControlError."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            with _address(path) as address:
                sock.connect(address)
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise ControlError(f"cannot reach the relay's control socket {path}: {exc}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"no answer from the relay's control socket {path}") from None
    if not answer.get("ok"):
        raise ControlError(f"the relay refused: {answer.get('error', 'no reason given')}")
    return dict(answer)
