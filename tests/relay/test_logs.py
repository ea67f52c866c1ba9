"""Logs of a real relay process: JSON lines, refused TLS handshakes, failed accepts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import socket
import ssl
import sys

import pytest

from hushwire.client.connection import RelayConnection, TlsSettings
from hushwire.client.errors import ConnectionClosed
from hushwire.common.errors import RequestError
from hushwire.relay import tls
from hushwire.relay.logs import JsonFormatter
from tests.support import WAIT, add_users


def _records(log: list[str]) -> list[dict]:
    return [json.loads(line) for line in log if line.strip()]


async def _refused(port: int, settings: TlsSettings) -> None:
    """Connect and expect the relay to end the handshake (TLS 1.3 may report it on read)."""
    with pytest.raises((ssl.SSLError, ConnectionClosed, OSError)):
        conn = await RelayConnection.connect("127.0.0.1", port, settings)
        try:
            await conn.handshake("alice", "hw_not-a-real-token")
        finally:
            await conn.close()


async def test_refused_mutual_tls_handshakes_are_logged_as_json(tmp_path, daemons):
    db = tmp_path / "relay.db"
    tokens = await add_users(db, ("alice",))
    ca_dir, other_ca = tmp_path / "ca", tmp_path / "other-ca"
    ca_dir.mkdir()
    other_ca.mkdir()
    cert, key = tls.issue_client_cert(ca_dir, "alice", tmp_path / "alice")
    bad_cert, bad_key = tls.issue_client_cert(other_ca, "alice", tmp_path / "mallory")
    relay = await daemons(
        db, "--client-ca", str(ca_dir / tls.CA_CERT), "--log-format", "json", "--log-level", "INFO"
    )
    pin = relay.fingerprint

    await _refused(relay.port, TlsSettings(pin=pin))
    line = await relay.wait_log("handshake_refused")
    record = json.loads(line)
    assert record["peer"] == "127.0.0.1"
    assert record["reason"] == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    assert record["level"] == "INFO" and record["logger"] == "hushwire.relay.accept"
    assert "127.0.0.1" in record["message"]

    await _refused(relay.port, TlsSettings(pin=pin, client_cert=bad_cert, client_key=bad_key))
    await relay.wait_log("CERTIFICATE_VERIFY_FAILED")

    # The right certificate still gets in, and a wrong token is refused at login.
    good = TlsSettings(pin=pin, client_cert=cert, client_key=key)
    conn = await RelayConnection.connect("127.0.0.1", relay.port, good)
    with pytest.raises(RequestError):
        await conn.handshake("alice", "hw_WRONG-TOKEN-never-logged")
    await conn.close()
    alice = await RelayConnection.connect("127.0.0.1", relay.port, good)
    await alice.handshake("alice", tokens["alice"])
    await alice.close()
    await relay.wait_log("login alice")
    assert await relay.stop() == 0

    records = _records(relay.log)  # every line is one JSON object
    for r in records:
        assert {"time", "level", "logger", "message"} <= set(r)
        assert r["time"].endswith("+00:00")
    refused = [r for r in records if r.get("event") == "handshake_refused"]
    assert len(refused) == 2
    logins = [(r["event"], r["user"], r["peer"]) for r in records if "login" in r.get("event", "")]
    assert logins == [("login_failed", "alice", "127.0.0.1"), ("login", "alice", "127.0.0.1")]
    text = "".join(relay.log)
    assert tokens["alice"] not in text and "WRONG-TOKEN" not in text
    assert key.read_text() not in text


async def test_handshake_timeout_is_logged_in_text_format(tmp_path, daemons):
    db = tmp_path / "relay.db"
    await add_users(db, ("alice",))
    relay = await daemons(db, "--handshake-timeout", "0.5")
    _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    line = await relay.wait_log("TLS handshake with 127.0.0.1 refused")
    assert "handshake timeout" in line
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    assert await relay.stop() == 0


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_accept_failure_is_logged(tmp_path, daemons):
    """A relay out of descriptors logs each failed accept (uvloop alone would not)."""
    db = tmp_path / "relay.db"
    await add_users(db, ("alice",))
    probe = await daemons(db)
    in_use = _fd_count(probe.proc.pid)
    assert await probe.stop() == 0

    limit = in_use + 3

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    relay = await daemons(db, "--log-format", "json", preexec_fn=low_limit)
    socks = []
    try:
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", relay.port), timeout=WAIT)
            socks.append(s)
        record = json.loads(await relay.wait_log("accept_failed"))
        assert record["reason"] in ("EMFILE", "ENFILE")
        assert record["level"] == "WARNING"
    finally:
        for s in socks:
            s.close()
    assert await relay.stop() == 0


def test_json_formatter_keeps_structured_fields_and_tracebacks():
    logger = logging.getLogger("hushwire.test")
    record = logger.makeRecord(
        "hushwire.test",
        logging.WARNING,
        __file__,
        1,
        "hello %s",
        ("world",),
        None,
        extra={"peer": "192.0.2.1", "event": "x"},
    )
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "hello world"
    assert out["peer"] == "192.0.2.1" and out["event"] == "x"
    assert out["level"] == "WARNING" and out["logger"] == "hushwire.test"
    assert "args" not in out and "msg" not in out
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logger.makeRecord(
            "hushwire.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exc"]
