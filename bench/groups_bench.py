"""The relay's side of a group send (issue #13): one `send_devices` with a payload to
every device of 10 or 50 members.

A real relay (TLS on 127.0.0.1, SQLite in a temp dir) and real client connections, one
per member device, every one online and acking each delivery (waiting for the ack's
reply, as the client does). The sender's envelopes are 174-byte key notes (the size a
sealed note has) and the payload is sized like a 200-byte text with its `seen` list
(27 bytes per member device). Two measurements per shape:

- fan-out: the sender pipelines group sends (8 in flight); deliveries/s is every
  member device's deliveries over the time until the last device has the last message;
- latency: one group send at a time; the time from writing the request until the last
  member device has its delivery (p50, p99 over the rounds).

Shapes: a group of N members (the sender included: 50 is the most one send may name)
with 1 device each, and the same group where a fifth of the others have 2 devices.

Client send (`--client`): the real `HushwireClient.groups.send` of u0 to a group of N
real accounts (logged in once, so their keys are published, then offline: only the
sender's work is in this process), through a relay process on core 0. Sessions with
every member device are set up by the group's create and a first message; then the
sending process's CPU per group send (seal the payload once and a key note per device,
the profile transaction, one `send_devices`, TLS) and the frame bytes it writes per send
(before TLS): first while no member has answered (each note still carries its session's
first-message header), then again once every member has sent the sender one message.

    .venv/bin/python bench/groups_bench.py [--messages 300] [--rounds 200] [--members 10 50]
    .venv/bin/python bench/groups_bench.py --client [--messages 100] [--members 10 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import hushwire, login_client, make_db, tls_material, user_name
from hushwire.client.connection import RelayConnection, TlsSettings
from hushwire.client.service import HushwireClient
from hushwire.common.crypto.devices import first_device_list
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.messages import Ack, Deliver, DeviceEnvelope, ListVersion
from hushwire.relay.config import RelayConfig
from hushwire.relay.server import RelayServer
from hushwire.relay.store import Store
from hushwire.relay.tokens import hash_token, new_salt, new_token

IN_FLIGHT = 8
NOTE = 174  # a sealed key note: 0x02 + [1, K, H(payload)] in a version-2 envelope
TEXT = 200
SEEN_PER_DEVICE = 27


async def _members(db: Path, members: int, two_devices: int) -> dict[tuple[str, int], str]:
    """A group of `members` accounts: alice (the sender) and m01.., the first
    `two_devices` of those with a second device. Tokens by (account, device)."""
    tokens: dict[tuple[str, int], str] = {}
    names = [f"m{i:02d}" for i in range(1, members)]
    async with await Store.open(db) as store:
        for name in ("alice", *names):
            token, salt = new_token(), new_salt()
            await store.add_user(name, hash_token(token, salt), salt, now=0)
            tokens[(name, 1)] = token
        for name in names[:two_devices]:
            identity = IdentityKeyPair.generate(X25519)
            dlist = first_device_list(name, "x25519", "d1", identity.dh.public, 0)
            dlist, device = dlist.with_device("d2", X25519.generate().public, 0)
            token, salt = new_token(), new_salt()
            await store.add_device(
                name, device.id, dlist.version, dlist.sign(identity),
                token_hash=hash_token(token, salt), salt=salt, now=0,
            )  # fmt: skip
            tokens[(name, device.id)] = token
    return tokens


class Arrivals:
    """When each device received each message (by the sequence number in its note)."""

    def __init__(self, devices: int) -> None:
        self.devices = devices
        self.count: dict[int, int] = {}
        self.last: dict[int, float] = {}
        self.complete: dict[int, asyncio.Event] = {}

    def expect(self, seq: int) -> asyncio.Event:
        return self.complete.setdefault(seq, asyncio.Event())

    def arrived(self, seq: int, now: float) -> None:
        n = self.count[seq] = self.count.get(seq, 0) + 1
        self.last[seq] = now
        if n == self.devices:
            self.expect(seq).set()


async def _receive(conn: RelayConnection, arrivals: Arrivals) -> None:
    while True:
        push = await conn.pushes.get()
        if isinstance(push, Deliver):
            arrivals.arrived(int.from_bytes(push.body[:8], "big"), time.perf_counter())
            await conn.request(Ack, mids=(push.mid,))


async def run(members: int, two_devices: int, messages: int, rounds: int) -> dict[str, float]:
    """deliveries/s under pipelined sends, and latency to the last device (ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "relay.db"
        tokens = await _members(db, members, two_devices)
        config = RelayConfig(db=db, port=0, send_burst=1e9, send_rate=1e9).validate()
        server = RelayServer(config)
        await server.start()
        tls = TlsSettings(pin=server.fingerprint)
        conns: list[RelayConnection] = []
        tasks: list[asyncio.Task[None]] = []
        devices = [key for key in tokens if key[0] != "alice"]
        arrivals = Arrivals(len(devices))
        try:
            for account, device in devices:
                conn = await RelayConnection.connect("127.0.0.1", server.port, tls)
                await conn.handshake(account, tokens[(account, device)], device)
                conns.append(conn)
                tasks.append(asyncio.create_task(_receive(conn, arrivals)))
            alice = await RelayConnection.connect("127.0.0.1", server.port, tls)
            await alice.handshake("alice", tokens[("alice", 1)])
            conns.append(alice)
            accounts = sorted({a for a, _ in devices})
            lists = [ListVersion("alice", 0)] + [
                ListVersion(a, 2 if (a, 2) in tokens else 0) for a in accounts
            ]
            payload = bytes(TEXT + SEEN_PER_DEVICE * len(devices) + 16)

            async def send(seq: int) -> None:
                note = seq.to_bytes(8, "big") + bytes(NOTE - 8)
                envelopes = [DeviceEnvelope(a, d, note) for a, d in devices]
                await alice.send_devices(envelopes, lists, payload=payload)

            # Fan-out rate: pipelined sends until every device has every message.
            slots = asyncio.Semaphore(IN_FLIGHT)

            async def pipelined(seq: int) -> None:
                async with slots:
                    await send(seq)

            waits = [arrivals.expect(seq) for seq in range(messages)]
            start = time.perf_counter()
            await asyncio.gather(*(pipelined(seq) for seq in range(messages)))
            for event in waits:
                await event.wait()
            elapsed = time.perf_counter() - start
            # Latency: one at a time, from the request to the last device's delivery.
            latencies = []
            for seq in range(messages, messages + rounds):
                event = arrivals.expect(seq)
                sent = time.perf_counter()
                await send(seq)
                await event.wait()
                latencies.append((arrivals.last[seq] - sent) * 1000)
        finally:
            # Connections first: a receiver cancelled with an ack in flight would make
            # its reply one to an unknown request.
            for conn in conns:
                await conn.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.close()
    latencies.sort()
    return {
        "devices": len(devices),
        "payload": len(payload),
        "deliveries_s": messages * len(devices) / elapsed,
        "sends_s": messages / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


class _CountingWriter:
    """A connection's stream writer that counts the frame bytes it is given."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self._writer.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._writer, name)


async def _timed_sends(sender: HushwireClient, name: str, messages: int) -> tuple[float, ...]:
    """(CPU us, frame bytes written, wall ms) per `groups.send` of `sender` to `name`."""
    counter = _CountingWriter(sender._conn._writer)
    sender._conn._writer = counter
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(messages):
            await sender.groups.send(name, f"message {i}")
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - wall
    finally:
        sender._conn._writer = counter._writer
    return cpu / messages * 1e6, counter.written / messages, wall / messages * 1e3


async def client_send_run(members: int, messages: int) -> dict[str, tuple[float, ...]]:
    """Per `groups.send` of u0 to a group of `members` accounts (u0 included), the others
    offline: (CPU us, frame bytes written, wall ms) while no member has answered yet
    (every note still carries the session's first-message header) and once each has
    sent u0 one 1:1 message (the sessions are confirmed, as in a running group)."""
    with tempfile.TemporaryDirectory(prefix="hushwire-groups-client-") as tmp:
        work = Path(tmp)
        token = await make_db(work / "relay.db", members)
        _, _, pin = tls_material(work)
        # Both limits stop a real client's first sends to a 50-member group on a default
        # relay: one user may fetch 20 bundles at once, then one per 3 s (the create
        # fetches one per member, then one per device), and until members answer every
        # note carries its session's first-message header (~1.5 kB each: the create of
        # 50 is a 173 kB frame, over the default 64 KiB).
        extra = ("--fetch-burst", "1000000000", "--max-frame", str(1 << 20))
        relay = hushwire(work, core=0, extra=extra).start()
        try:
            for i in range(1, members):
                await (await login_client(work, relay.port, i, token, pin)).close()
            sender = await login_client(work, relay.port, 0, token, pin)
            name = f"bench{members}"
            await sender.groups.create(name, [user_name(i) for i in range(1, members)])
            await sender.groups.send(name, "warm-up: sessions with every device")
            results = {"unanswered": await _timed_sends(sender, name, messages)}
            for i in range(1, members):
                member = await HushwireClient.open(work / user_name(i), "bench")
                await member.start()
                await member.sync(120.0)
                await member.send(sender.user, "a first answer: the session is confirmed")
                await member.close()
            await sender.sync(120.0)
            results["answered"] = await _timed_sends(sender, name, messages)
            await sender.close()
        finally:
            relay.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--members", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--client", action="store_true", help="the client send table")
    args = parser.parse_args()
    if args.client:
        print("members  sessions    client CPU us/send  bytes written/send  wall ms/send")
        for members in args.members:
            for phase, (cpu, written, wall) in asyncio.run(
                client_send_run(members, args.messages)
            ).items():
                print(f"{members:>7}  {phase:<10}  {cpu:>18,.0f}  {written:>18,.0f}  {wall:>12.1f}")
        return
    print("members  devices  payload B  sends/s  deliveries/s  last-device p50 ms  p99 ms")
    for members in args.members:
        for two in (0, members // 5):
            r = asyncio.run(run(members, two, args.messages, args.rounds))
            print(
                f"{members:>7}  {r['devices']:>7.0f}  {r['payload']:>9,.0f}  {r['sends_s']:>7,.0f}"
                f"  {r['deliveries_s']:>12,.0f}  {r['p50_ms']:>18.1f}  {r['p99_ms']:>6.1f}"
            )


if __name__ == "__main__":
    main()
