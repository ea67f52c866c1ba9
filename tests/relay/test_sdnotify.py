"""systemd integration: the notify protocol against a real datagram socket and a real
relay process, and the shipped unit file checked by systemd-analyze."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hushwire.relay.sdnotify import notify
from tests.support import WAIT, add_users

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "systemd" / "hushwire-relay.service"


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.env = address

    async def receive(self) -> dict[str, str]:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 4096), WAIT)
        return dict(line.split("=", 1) for line in data.decode().splitlines())

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("kind", ["abstract", "path"])
async def test_relay_notifies_ready_then_stopping(tmp_path, daemons, kind):
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice",))
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # sun_path is 108 bytes
        if kind == "abstract":
            address = f"@hushwire-test-{secrets.token_hex(8)}"
        else:
            address = f"{short}/notify"
        systemd = NotifySocket(address)
        try:
            env = {**os.environ, "NOTIFY_SOCKET": address}
            relay = await daemons(db, env=env)
            ready = await systemd.receive()
            assert ready["READY"] == "1"
            assert ready["STATUS"] == f"listening on 127.0.0.1:{relay.port}"
            alice = await relay.login("alice", tokens["alice"])  # ready means it serves
            await alice.close()
            relay.proc.send_signal(signal.SIGTERM)
            stopping = await systemd.receive()
            assert stopping["STOPPING"] == "1"
            assert await asyncio.wait_for(relay.proc.wait(), WAIT) == 0
        finally:
            systemd.close()


async def test_sigterm_right_at_ready_still_drains(tmp_path, daemons):
    """systemd may stop a unit the moment it is ready: the relay must drain, not die."""
    db = tmp_path / "relay.db"
    await add_users(db, ("alice",))
    address = f"@hushwire-test-{secrets.token_hex(8)}"
    systemd = NotifySocket(address)
    try:
        relay = await daemons(db, env={**os.environ, "NOTIFY_SOCKET": address})
        assert (await systemd.receive())["READY"] == "1"
        relay.proc.send_signal(signal.SIGTERM)
        assert (await systemd.receive())["STOPPING"] == "1"
        assert await asyncio.wait_for(relay.proc.wait(), WAIT) == 0
    finally:
        systemd.close()


def test_notify_without_systemd_does_nothing(tmp_path):
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False
    # A socket that is gone: logged, not raised.
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_unit_file_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not found (Debian package `systemd`; .ci/run installs it)")
    # verify checks that ExecStart exists: point it at this checkout's relay.
    relay = str(Path(sys.executable).parent / "hushwire-relay")
    text = UNIT.read_text().replace("/usr/local/bin/hushwire-relay", relay)
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    # Make sure a warning is caught at all: a misspelled key must be reported.
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSystm=strict"))
    complaint = _verify(broken)
    if "ProtectSystm" not in complaint.stderr:
        pytest.skip(f"systemd-analyze verify cannot run here: {complaint.stderr.strip()[:300]}")
    result = _verify(unit)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_unit_file_sandboxes_the_relay():
    settings = [
        line.strip() for line in UNIT.read_text().splitlines() if "=" in line and line[0] != "#"
    ]
    for required in (
        "Type=notify",
        "ProtectSystem=strict",
        "StateDirectory=hushwire",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "User=hushwire",
    ):
        assert required in settings
