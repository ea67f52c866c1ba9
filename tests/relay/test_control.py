"""The relay's control socket: owner-only, and reachable however long the db path is."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from hushwire.relay import control
from hushwire.relay.errors import ControlError
from tests.support import WAIT

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
        answer = await asyncio.to_thread(control.ask, relay.config.db, {"op": "stats"})
        assert answer["ok"] is True
        await relay.close()
        assert not path.exists()


async def test_control_socket_with_a_db_path_longer_than_sun_path(tmp_path, relay_factory):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    relay = await relay_factory(db=deep / "relay.db")
    assert len(str(control.control_path(relay.config.db))) > 108
    alice = await relay.login("alice")
    answer = await asyncio.to_thread(control.ask, relay.config.db, {"op": "stats"})
    assert answer["online"] == ["alice"]
    await alice.close()


async def test_control_socket_refuses_unknown_requests(relay):
    db = relay.config.db
    with pytest.raises(ControlError, match="unknown op"):
        await asyncio.to_thread(control.ask, db, {"op": "drop-tables"})
    with pytest.raises(ControlError, match="older_than"):
        await asyncio.to_thread(control.ask, db, {"op": "purge", "older_than": "yesterday"})


def test_ask_without_a_relay_says_so(tmp_path):
    with pytest.raises(ControlError, match="cannot reach"):
        control.ask(tmp_path / "relay.db", {"op": "stats"})
