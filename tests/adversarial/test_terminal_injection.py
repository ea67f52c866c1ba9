"""Terminal injection: strings the relay or a peer supplies (sender names, error
messages, rejection reasons) reach the CLI's stderr and the TUI neutralised."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path

import pytest

from hushwire.client.cli import main
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.messages import SendDevices
from tests.e2e.helpers import PASSPHRASE

# Window title, OSC 52 clipboard write, erase line, cursor up, C1 CSI, bidi overrides.
HOSTILE = "\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07\x1b[2K\x1b[1A\x9b31m\u202eevil\u2066x\u2069"


def terminal_safe(text: str) -> bool:
    """No escape, control (but newline) or bidi character: nothing a terminal acts on."""
    return not any(
        (ord(c) < 32 and c != "\n")
        or 0x7F <= ord(c) <= 0x9F
        or 0x202A <= ord(c) <= 0x202E
        or 0x2066 <= ord(c) <= 0x2069
        for c in text
    )


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
async def profiles(relay, login, tmp_path, monkeypatch) -> dict[str, Path]:
    monkeypatch.setenv("HUSHWIRE_PASSPHRASE", PASSPHRASE)
    made = {}
    for user in ("alice", "bob"):
        made[user] = tmp_path / f"profile-{user}"
        await (await login(relay, user, profile=made[user])).close()
    return made


async def test_relay_error_messages_reach_stderr_neutralised(relay, profiles, figures):
    handlers = relay.server.relay
    real = handlers._dispatch[SendDevices]

    async def refuse(peer, req, now):
        raise RequestError(ErrorCode.BAD_REQUEST, HOSTILE + "A" * 40_000)

    handlers._dispatch[SendDevices] = refuse
    # A send to cached device lists takes the task-free path; make it take `_dispatch`.
    handlers.sends.send_devices_nowait = lambda peer, req, now, answer: False
    code, _, err = await asyncio.to_thread(
        run, "--profile", str(profiles["alice"]), "send", "bob", "hi"
    )
    handlers._dispatch[SendDevices] = real
    del handlers.sends.send_devices_nowait
    assert code == 1 and "evil" in err
    assert terminal_safe(err) and "owned" not in err and "ZXZpbA" not in err
    assert len(err) < 1_000  # an echoed 40,000-character message is cut
    figures.add(
        "relay answers a send with an error message carrying OSC 0/52, CSI, C1 and bidi "
        "controls, 40,000 characters long",
        f"stderr: one line of {len(err)} characters, no control or bidi character",
    )


async def test_a_relay_supplied_sender_name_reaches_stderr_neutralised(relay, profiles, login):
    alice = await login(relay, "alice", profile=profiles["alice"])
    await alice.send("bob", "hi")
    await alice.close()
    store = relay.server.relay.store
    real = store.pending

    async def lying(recipient, *, after=0, limit=100):
        rows = await real(recipient, after=after, limit=limit)
        return [dataclasses.replace(r, sender=HOSTILE) for r in rows]

    store.pending = lying
    code, out, err = await asyncio.to_thread(run, "--profile", str(profiles["bob"]), "recv")
    store.pending = real
    assert code == 0 and out == ""
    assert "rejected a message" in err and terminal_safe(err), err
