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

    .venv/bin/python bench/groups_bench.py [--messages 300] [--rounds 200] [--members 10 50]
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

from hushwire.client.connection import RelayConnection, TlsSettings
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--members", type=int, nargs="+", default=[10, 50])
    args = parser.parse_args()
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
