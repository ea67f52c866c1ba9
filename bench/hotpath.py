"""The relay's own Python cost per chat message, without sockets or TLS.

Runs the real Relay, Store (SQLite in a temp dir, its writer thread included) and
Connection objects in one process, wired to bench/clients.py's HushwireClient through
in-memory transports, in the chat shape of bench/run.py: N users, user i sends to user
i+1, 2 messages in flight, 256 B, every delivery acked once per read. The clients' own
CPU is measured and subtracted, so what it prints is the part of `server us/msg` that
the Python code of relay/ and common/ decides, minus what the kernel and TLS cost; two
versions compare in seconds, with far less noise than bench/run.py.

    .venv/bin/python bench/hotpath.py                 # 200 users, 100k messages
    .venv/bin/python bench/hotpath.py --profile       # and where the time goes
    .venv/bin/python bench/hotpath.py --devices       # send_devices, as real clients send
    PYTHONPATH=<links to an older checkout> .venv/bin/python bench/hotpath.py --devices \
        --acks-with-ids                               # the same against a relay from before
    .venv/bin/python bench/hotpath.py --store postgresql://...   # an empty database

With --store the Store runs on PostgreSQL: the figure then includes asyncpg's work in
this process, not the server's CPU (measure that with the server's own process).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clients import HushwireClient, Stats
from bench.servers import RELAY_FLAGS, make_db, user_name
from hushwire.relay.cli import tune_gc
from hushwire.relay.config import from_args
from hushwire.relay.connection import Connection, FlushQueue
from hushwire.relay.handlers import Relay
from hushwire.relay.server import load_group
from hushwire.relay.store import Store


class Pipe(asyncio.Transport):
    """One direction of an in-memory connection: writes arrive on the next loop pass."""

    def __init__(self, receive: Callable[[bytes], None]) -> None:
        super().__init__()
        self._receive = receive
        self._loop = asyncio.get_running_loop()
        self._closing = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self._loop.call_soon(self._receive, bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 0) if name == "peername" else default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class ClientClock:
    """Thread CPU spent inside the clients' own code, to subtract from the total."""

    def __init__(self) -> None:
        self.spent = 0.0

    def wrap(self, fn: Callable[..., None]) -> Callable[..., None]:
        def timed(*args: Any) -> None:
            t = time.thread_time()
            fn(*args)
            self.spent += time.thread_time() - t

        return timed


async def run(
    users: int,
    messages: int,
    profile: bool,
    store_url: str | None,
    devices: bool,
    quiet_acks: bool,
) -> None:
    work = Path(tempfile.mkdtemp(prefix="hushwire-hotpath-"))
    token = await make_db(store_url or work / "relay.db", users)
    extra = ["--store", store_url] if store_url else []
    config = from_args(["--db", str(work / "relay.db"), *extra, *RELAY_FLAGS])
    store = await Store.open(config.store_target, max_mailbox=config.max_mailbox)
    relay = Relay(config, store, load_group(config))
    names = [user_name(i) for i in range(users)]
    stats = Stats(2)
    clock = ClientClock()
    clients: list[HushwireClient] = []
    flushes = FlushQueue(asyncio.get_running_loop())
    for i in range(users):
        client = HushwireClient(
            stats, i, names[i], token, names, devices=devices, quiet_acks=devices and quiet_acks
        )
        conn = Connection(relay, flushes=flushes, admit=lambda c: True, on_finished=lambda c: None)
        client._flush = clock.wrap(client._flush)  # type: ignore[method-assign]
        conn.connection_made(Pipe(clock.wrap(client.data_received)))
        client.connection_made(Pipe(conn.data_received))
        clients.append(client)
    await asyncio.gather(*(c.ready for c in clients))
    tune_gc()  # as the daemon does

    for i, c in enumerate(clients):
        c.window, c.dest = 2, (i + 1) % users
    done = asyncio.Event()
    stats.drain_target = 0
    stats.measuring = True
    target = messages

    def finished() -> None:
        if stats.delivered >= target and not done.is_set():
            stats.running = False
            done.set()

    deliver = stats.deliver

    def counting(seq: int) -> None:
        deliver(seq)
        finished()

    stats.deliver = counting  # type: ignore[method-assign]
    profiler = cProfile.Profile() if profile else None
    clock.spent = 0.0
    cpu = time.process_time()
    if profiler:
        profiler.enable()
    for c in clients:
        c.refill()
    await done.wait()
    if profiler:
        profiler.disable()
    cpu = time.process_time() - cpu
    n = stats.delivered
    relay_us = (cpu - clock.spent) / n * 1e6
    client_us = clock.spent / n * 1e6
    # This machine's speed drifts by +-20% from run to run; the clients' fixed work drifts
    # with it, so relay/clients is the figure to compare between versions.
    print("| users | messages | relay us/msg | clients us/msg | relay / clients |")
    print("|---|---|---|---|---|")
    print(f"| {users} | {n} | {relay_us:.1f} | {client_us:.1f} | {relay_us / client_us:.2f} |")
    print(f"\nrows written {n - store.elided} of {n} (the rest acked before their commit)")
    await store.close()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--profile", action="store_true", help="print the cProfile top 30")
    p.add_argument("--store", metavar="URL", help="an empty PostgreSQL database instead")
    p.add_argument(
        "--devices", action="store_true", help="send with send_devices, as real clients do"
    )
    p.add_argument(
        "--acks-with-ids",
        action="store_true",
        help="with --devices: ack with ids, each answered (a relay from before quiet acks)",
    )
    args = p.parse_args()
    import uvloop

    uvloop.run(
        run(
            args.users,
            args.messages,
            args.profile,
            args.store,
            args.devices,
            not args.acks_with_ids,
        )
    )


if __name__ == "__main__":
    main()
