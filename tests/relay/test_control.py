"""The relay's control socket: owner-only, and reachable however long the db path is."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from hushwire.common.messages import Send
from hushwire.relay import control
from hushwire.relay.admin import main
from hushwire.relay.errors import ControlError
from tests.support import DEMO_USERS, WAIT, add_users

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("refused at connect")
    sys.exit()
try:
    s.sendall(b'{"op": "stats"}\\n')
    answer = s.recv(4096)
except (BrokenPipeError, ConnectionResetError):
    answer = b""
print("answer:", answer)
"""


async def probe_as_nobody(path: Path) -> str:
    # The system python: this checkout's venv may sit where nobody cannot read.
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, "-c", PROBE, str(path), user=NOBODY, stdout=subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    return out.decode().strip()


async def test_control_socket_is_owner_only(relay_factory):
    if os.getuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs root and /usr/bin/python3 to connect as another user")
    with tempfile.TemporaryDirectory() as shared:
        os.chmod(shared, 0o755)  # a directory others may enter: the socket alone must refuse
        relay = await relay_factory(db=Path(shared) / "relay.db")
        path = control.control_path(relay.config.db)
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await probe_as_nobody(path) == "refused at connect"
        # Even if someone loosens the file mode, the relay checks the peer's uid.
        os.chmod(path, 0o666)
        assert await probe_as_nobody(path) == "answer: b''"
        answer = await asyncio.to_thread(control.ask, relay.config.control_path, {"op": "stats"})
        assert answer["ok"] is True
        await relay.close()
        assert not path.exists()


async def test_control_socket_with_a_db_path_longer_than_sun_path(tmp_path, relay_factory):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    relay = await relay_factory(db=deep / "relay.db")
    assert len(str(control.control_path(relay.config.db))) > 108
    alice = await relay.login("alice")
    answer = await asyncio.to_thread(control.ask, relay.config.control_path, {"op": "stats"})
    assert answer["online"] == ["alice"]
    await alice.close()


async def test_control_socket_refuses_unknown_requests(relay):
    sock = relay.config.control_path
    with pytest.raises(ControlError, match="unknown op"):
        await asyncio.to_thread(control.ask, sock, {"op": "drop-tables"})
    with pytest.raises(ControlError, match="older_than"):
        await asyncio.to_thread(control.ask, sock, {"op": "purge", "older_than": "yesterday"})


def test_ask_without_a_relay_says_so(tmp_path):
    with pytest.raises(ControlError, match="cannot reach"):
        control.ask(control.control_path(tmp_path / "relay.db"), {"op": "stats"})


async def test_relay_over_postgresql_answers_admin_on_its_configured_socket(
    tmp_path, relay_factory, pg_url
):
    tokens = await add_users(pg_url, DEMO_USERS)
    sock = tmp_path / "relay-a.control"
    relay = await relay_factory(tokens=tokens, store=pg_url, control_socket=sock)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert not control.control_path(relay.config.db).exists()
    alice = await relay.login("alice")
    await alice.request(Send, to=("bob",), body=b"queued for bob")

    def admin(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["--db", pg_url, "--control", str(sock), *argv])
        return code, out.getvalue()

    code, out = await asyncio.to_thread(admin, "stats", "--json")
    stats = json.loads(out)
    assert code == 0 and stats["relay"]["online"] == ["alice"] and stats["queued"] == 1
    answer = await asyncio.to_thread(control.ask, sock, {"op": "purge", "older_than": 2**40})
    assert answer["purged"] == 1
    code, out = await asyncio.to_thread(admin, "purge", "--older-than", "1")
    assert code == 0 and "by the running relay" in out
    # A second relay given the same socket is refused; the first keeps it.
    with pytest.raises(ControlError, match="in use by another running relay"):
        await relay_factory(db=tmp_path / "other.db", control_socket=sock)
    assert (await asyncio.to_thread(control.ask, sock, {"op": "stats"}))["online"] == ["alice"]
    await alice.close()
    await relay.close()
    assert not sock.exists()


async def test_a_stale_socket_file_is_replaced(tmp_path, relay_factory):
    sock = tmp_path / "left-behind.control"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(sock))  # bound, never listening: what a killed relay leaves
    relay = await relay_factory(control_socket=sock)
    assert (await asyncio.to_thread(control.ask, sock, {"op": "stats"}))["online"] == []
    await relay.close()
