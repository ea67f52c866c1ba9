"""The client as a user meets it: `hushwire send` from invocation to exit, and TUI memory.

    .venv/bin/python bench/client_cli.py send [--runs 10]   # ~1 minute
    .venv/bin/python bench/client_cli.py tui [--messages 10000]

`send` starts a relay (core 0), makes two profiles with the default scrypt cost (alice
and bob, one message exchanged so the session exists), then times, each --runs times
in fresh processes: `python -c pass` (the interpreter alone); `import
hushwire.client.cli` (what the `hushwire` entry point imports); `hushwire send bob
TEXT` itself, from spawn to exit; and the same steps as `cmd_send` in a child that
stamps each phase: interpreter start, imports, profile unlock (scrypt + SQLite), TLS
connect, hello + login, the rest of `start()` (key upload check, outbox), `send`
(ratchet, profile commits, the relay's `ok`), `close`, and exit.

`tui` makes alice's profile with --messages stored messages with bob, then runs the real
`ChatApp` (prompt_toolkit, a VT100 output of 50x160 to /dev/null, keys through a pipe)
in a child process, against the relay, and reports its RSS: started, after `/to bob`,
after `/history 2000`, and after --messages more arrive live while the conversation is
open (stored as received beforehand, then announced as the service does once it has
stored one: a `MessageReceived` event, which the TUI shows and marks read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PASSPHRASE = "bench passphrase"
TEXT = "the quick brown fox jumps over the lazy dog, then checks that the relay said ok"
STAGE_TIMEOUT = 600.0


def _rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def _profiles(work: Path, port: int, token: str, pin: str) -> None:
    from bench.servers import user_name
    from hushwire.client.service import HushwireClient, MessageReceived, RelaySettings

    clients = []
    for name, i in (("alice", 0), ("bob", 1)):
        settings = RelaySettings("127.0.0.1", port, user_name(i), token, pin=pin)
        clients.append(await HushwireClient.login(work / name, PASSPHRASE, settings))
    alice, bob = clients
    await alice.send(bob.user, "hello")  # X3DH once, so later sends are ratchet steps
    while not isinstance(await bob.events.get(), MessageReceived):
        pass
    for c in clients:
        await c.close()


def _relay(work: Path) -> Any:
    from bench.servers import hushwire, make_db, tls_material

    token = asyncio.run(make_db(work / "relay.db", 2))
    _, _, pin = tls_material(work)
    relay = hushwire(work, core=0).start()
    asyncio.run(_profiles(work, relay.port, token, pin))
    return relay


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.time()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=60)
    return time.time() - t, out.stdout


def _ms(values: list[float]) -> str:
    values = [v * 1000 for v in values]
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def cmd_send(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="hushwire-client-cli-") as tmp:
        work = Path(tmp)
        relay = _relay(work)
        try:
            env = {**os.environ, "HUSHWIRE_PASSPHRASE": PASSPHRASE}
            py = sys.executable
            cli = str(Path(py).parent / "hushwire")
            rows: dict[str, list[float]] = {}
            phases: dict[str, list[float]] = {}
            bob = "u1"
            for _ in range(args.runs):  # interleaved, so drift hits every row alike
                for label, argv in (
                    ("interpreter (python -c pass)", [py, "-c", "pass"]),
                    (
                        "interpreter + imports (import hushwire.client.cli)",
                        [py, "-c", "import hushwire.client.cli"],
                    ),
                    (
                        "hushwire send, spawn to exit",
                        [cli, "--profile", str(work / "alice"), "send", bob, TEXT],
                    ),
                ):
                    rows.setdefault(label, []).append(_timed(argv, env)[0])
                # the stamps start in `-c`, before any import but the interpreter's own
                code = (
                    "import time; t = time.time(); import sys; "
                    f"sys.path.insert(0, {str(ROOT)!r}); from bench.client_cli import "
                    f"child_phases; child_phases({str(work / 'alice')!r}, {bob!r}, t)"
                )
                spawned = time.time()
                took, out = _timed([py, "-c", code], env)
                report = json.loads(out)
                first = report["started"] - spawned
                phases.setdefault("interpreter start (spawn to first statement)", []).append(first)
                last = 0.0
                for name, at in report["stamps"]:
                    phases.setdefault(name, []).append(at - last)
                    last = at
                rest = took - first - last
                phases.setdefault("exit (interpreter teardown)", []).append(rest)
        finally:
            relay.stop()
    print(f"`hushwire send` cost, {args.runs} runs each, ms median (min-max)\n")
    print("| what | ms |\n|---|---|")
    for label, values in rows.items():
        print(f"| {label} | {_ms(values)} |")
    print("\nphases of the same steps as `cmd_send`, in a fresh process:\n")
    print("| phase | ms |\n|---|---|")
    for label, values in phases.items():
        print(f"| {label} | {_ms(values)} |")


def child_phases(profile: str, contact: str, started: float) -> None:
    """Runs in a fresh interpreter: the steps of `hushwire send`, stamped from `started`
    (the first statement of `-c`); the parent adds the time before it."""
    stamps: list[tuple[str, float]] = []

    def stamp(name: str) -> None:
        stamps.append((name, time.time() - started))

    from hushwire.client import cli  # the entry point's import

    stamp("imports (hushwire.client.cli)")
    from hushwire.client.connection import RelayConnection
    from hushwire.client.service import HushwireClient

    connect, handshake = RelayConnection.connect, RelayConnection.handshake

    async def timed_connect(*a: Any, **kw: Any) -> Any:
        conn = await connect(*a, **kw)
        stamp("TLS connect")
        return conn

    async def timed_handshake(self: Any, *a: Any, **kw: Any) -> Any:
        ok = await handshake(self, *a, **kw)
        stamp("hello + login")
        return ok

    RelayConnection.connect = timed_connect  # type: ignore[method-assign]
    RelayConnection.handshake = timed_handshake  # type: ignore[method-assign]

    async def run() -> None:
        client = await HushwireClient.open(Path(profile), cli.read_passphrase())
        stamp("profile unlock (scrypt, SQLite)")
        await client.start()
        stamp("rest of start() (keys, outbox)")
        await client.send(contact, TEXT, queue_if_offline=False)
        stamp("send (ratchet, commits, relay ok)")
        await client.close()
        stamp("close")

    asyncio.run(run())
    print(json.dumps({"started": started, "stamps": stamps}))


# --- TUI memory ---------------------------------------------------------------------------


def cmd_tui(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="hushwire-client-tui-") as tmp:
        work = Path(tmp)
        relay = _relay(work)
        try:
            asyncio.run(_fill(work / "alice", args.messages))
            child = [sys.executable, __file__, "tui-child", str(work / "alice"), "u1"]
            out = subprocess.run(
                [*child, str(args.messages)],
                capture_output=True,
                text=True,
                check=True,
                timeout=STAGE_TIMEOUT,
            )
        finally:
            relay.stop()
    print(f"TUI RSS, conversation with {args.messages} stored messages (KiB)\n")
    print("| stage | RSS | peak RSS | took |\n|---|---|---|---|")
    for stage, rss, hwm, took in json.loads(out.stdout):
        print(f"| {stage} | {rss} | {hwm} | {took:.1f} s |")


async def _fill(profile: Path, n: int) -> None:
    """n messages of history with u1, both directions, all read."""
    from hushwire.client.service import HushwireClient

    client = await HushwireClient.open(profile, PASSPHRASE)
    await _store(client, n, "read", prefix="old")
    await client.close()


async def _store(client: Any, n: int, status: str, prefix: str) -> list[tuple[str, str]]:
    """n messages with u1 in one transaction (incoming ones with `status`); (uid, text)."""
    now = int(time.time() * 1000)
    rows = []
    async with client.store.transaction():
        for i in range(n):
            incoming = status == "received" or i % 2 == 0
            text = f"{prefix} {i:05d} {TEXT}"
            uid = await client.store.add_message(
                contact="u1",
                direction="in" if incoming else "out",
                status=status if incoming else "sent",
                sent_at_ms=now - (n - i),
                now_ms=now,
                text=text,
            )
            rows.append((uid, text))
    return rows


async def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + STAGE_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def child_tui(profile: str, contact: str, n: int, sink: TextIO) -> None:
    """Runs in a fresh interpreter: the real ChatApp, driven through a key pipe; the
    profile holds n stored messages with `contact`, and n more arrive live."""
    from prompt_toolkit.data_structures import Size
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output.vt100 import Vt100_Output

    from hushwire.client.service import HushwireClient, MessageReceived
    from hushwire.client.tui import ChatApp

    stages: list[tuple[str, int, int, float]] = []
    t = time.monotonic()

    def stage(name: str) -> None:
        nonlocal t
        stages.append((name, *_rss_kib(), time.monotonic() - t))
        t = time.monotonic()

    client = await HushwireClient.open(Path(profile), PASSPHRASE)
    with create_pipe_input() as keys:
        output = Vt100_Output(sink, lambda: Size(rows=50, columns=160), term="xterm")
        chat = ChatApp(client, input=keys, output=output)
        running = asyncio.ensure_future(chat.run())
        await _until(lambda: chat.model.connection == "connected", "connected")
        stage("started, connected")
        keys.send_text(f"/to {contact}\r")
        conv = chat.model.conversation(contact)

        def loaded(count: int) -> bool:  # stored messages shown (they carry a uid)
            return sum(1 for line in conv.lines if line.uid) >= min(count, n)

        await _until(lambda: loaded(50), "/to")
        stage(f"/to {contact} (50 loaded)")
        keys.send_text("/history 2000\r")
        await _until(lambda: loaded(2000), "/history")
        stage("/history 2000")
        # as the service does once it has stored a message: the row, then the event
        live = await _store(client, n, "received", prefix="new")
        t = time.monotonic()
        now = datetime.now(UTC)
        for uid, text in live:
            client.events.put_nowait(MessageReceived(contact, uid, now, text, uid))
        last = live[-1][1]
        await _until(lambda: conv.lines[-1].text == last, "live messages")
        deadline = time.monotonic() + STAGE_TIMEOUT
        while (await client.store.unread_counts()).get(contact):
            if time.monotonic() > deadline:
                raise TimeoutError("mark read")
            await asyncio.sleep(0.02)
        stage(f"{n} more arrived live (conversation open; each marked read)")
        keys.send_text("/quit\r")
        await running
    print(json.dumps(stages))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send", help="time `hushwire send`")
    s.add_argument("--runs", type=int, default=10)
    s = sub.add_parser("tui", help="TUI memory with a long conversation")
    s.add_argument("--messages", type=int, default=10_000)
    s = sub.add_parser("tui-child")  # internal: the child of `tui`
    s.add_argument("profile")
    s.add_argument("contact")
    s.add_argument("live", type=int)
    args = p.parse_args()
    if args.cmd == "send":
        cmd_send(args)
    elif args.cmd == "tui":
        cmd_tui(args)
    else:
        with open(os.devnull, "w") as sink:
            asyncio.run(child_tui(args.profile, args.contact, args.live, sink))


if __name__ == "__main__":
    main()
