"""contrib/haproxy/hushwire.cfg: valid for `haproxy -c`, and, run for real in front of
two addresses of a relay (which requires HAProxy's PROXY v2 header), its health check
passes them, fails what is not a relay, and a client whose relay goes away is carried
to the other through the one address."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hushwire.client.service import (
    ConnectionState,
    HushwireClient,
    MessageReceived,
    RelaySettings,
)
from tests.e2e.helpers import FAST_BACKOFF, FAST_KDF, PASSPHRASE, WAIT, next_event
from tests.services import free_port
from tests.support import Cutter, Dropper

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "contrib" / "haproxy" / "hushwire.cfg"


def haproxy() -> str:
    # Debian puts it in /usr/sbin, which a non-root PATH often leaves out.
    path = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if path is None:
        reason = "haproxy not found (Debian package `haproxy`; dev.sh installs it): NOT TESTED"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must check the shipped HAProxy config")
        pytest.skip(reason)
    return path


def test_the_shipped_config_is_valid():
    result = subprocess.run(
        [haproxy(), "-c", "-f", str(CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout


def local_variant(listen: int, stats: Path, servers: dict[str, int]) -> str:
    """The shipped file on loopback: its bind and servers replaced, no user switch,
    syslog or system stats socket (a real install's), a stats socket in the test's dir,
    logs on stdout, fewer connections (descriptors are capped here), and `balance
    first` so the test knows which server a client lands on."""
    kept = []
    for line in CONFIG.read_text().splitlines():
        word = line.strip()
        if word.startswith(("log /dev/log", "user ", "group ", "stats socket", "server ")):
            continue
        if word.startswith("bind "):
            line = f"    bind 127.0.0.1:{listen}"
        elif word == "balance leastconn":
            line = "    balance first"
        elif word == "maxconn 60000":  # needs twice that many descriptors; not here
            line = "    maxconn 1000"
            kept.append(f"    stats socket {stats} mode 600 level admin")
            kept.append("    log stdout format raw local0")
        kept.append(line)
    kept += [f"    server {name} 127.0.0.1:{port}" for name, port in servers.items()]
    return "\n".join(kept) + "\n"


async def server_states(stats: Path) -> dict[str, tuple[str, str]]:
    """{server: (status, last check status)} from HAProxy's `show stat`."""
    reader, writer = await asyncio.open_unix_connection(str(stats))
    writer.write(b"show stat\n")
    await writer.drain()
    text = (await reader.read()).decode()
    writer.close()
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return {
        r["svname"]: (r["status"], r["check_status"])
        for r in rows
        if r["pxname"] == "relays" and r["svname"] not in ("FRONTEND", "BACKEND")
    }


async def wait_checked(stats: Path) -> dict[str, tuple[str, str]]:
    """Server states once every server is settled UP or DOWN by its checks (the
    socket is polled: HAProxy pushes nothing)."""
    async with asyncio.timeout(WAIT):
        while not await asyncio.to_thread(stats.exists):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        while True:
            states = await server_states(stats)
            if all(
                status in ("UP", "DOWN") and check.startswith(("L4", "L6", "L7"))
                for status, check in states.values()
            ):
                return states
            await asyncio.sleep(0.1)


async def test_real_haproxy_checks_relays_and_carries_a_client_to_the_other(
    relay_factory, tmp_path
):
    # The relay takes connections from 127.0.0.1 only with a PROXY v2 header: HAProxy's
    # sessions and health checks must carry one, or nothing here connects.
    relay = await relay_factory(proxy_protocol="127.0.0.1")
    first = await Cutter(relay.port).start()  # relay-a: the relay, through a forwarder
    broken = await Dropper().start()  # not a relay: its TLS breaks at once
    listen, stats = free_port(), tmp_path / "haproxy.sock"
    config = tmp_path / "haproxy.cfg"
    servers = {"relay-a": first.port, "relay-b": relay.port, "junk": broken.port}
    config.write_text(local_variant(listen, stats, servers))
    proc = await asyncio.create_subprocess_exec(
        haproxy(), "-db", "-f", str(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    clients: list[HushwireClient] = []

    async def login(user: str) -> HushwireClient:
        settings = RelaySettings("127.0.0.1", listen, user, relay.tokens[user])
        clients.append(
            await HushwireClient.login(
                tmp_path / user, PASSPHRASE, settings, kdf=FAST_KDF, backoff=FAST_BACKOFF
            )
        )
        return clients[-1]

    try:
        states = await wait_checked(stats)
        # The hello check passes both addresses of the relay, and fails the impostor.
        assert states["relay-a"] == ("UP", "L7OK") and states["relay-b"] == ("UP", "L7OK")
        assert states["junk"][0] == "DOWN" and states["junk"][1].startswith(("L4", "L6"))
        bob = await login("bob")
        assert bob.settings.pin == relay.server.fingerprint  # TLS passed through untouched
        alice = await login("alice")
        await alice.send("bob", "via relay-a")
        assert (await next_event(bob, MessageReceived)).text == "via relay-a"
        await first.cut()  # relay-a goes away with bob's session
        await alice.send("bob", "via relay-b")
        await next_event(bob, ConnectionState, lambda e: e.state == "reconnecting")
        await next_event(bob, ConnectionState, lambda e: e.state == "connected")
        assert (await next_event(bob, MessageReceived)).text == "via relay-b"
        assert bob.relay == f"127.0.0.1:{listen}"  # the one address it knows
    finally:
        for client in clients:
            await client.close()
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
        await broken.close()
        await first.cut()
    assert re.search(rb"Server relays/junk is DOWN", out), out
