"""The cost of a message to an account with 1, 2 and 5 devices (issue #12).

Relay: a real relay (TLS on 127.0.0.1, SQLite in a temp dir) and real client connections.
One sender pipelines `send_devices` requests (256-byte envelopes, one per device of the
recipient, 64 in flight) to an account whose K devices are all online and ack every
delivery (each receiver waits for its ack's reply before the next, as the client does);
it prints messages/s and envelopes/s end to end. The first row is the same run with the
one-body `send` of a single-device account, for comparison.
Client: the CPU one message costs the sender, sealing it for K device sessions (Double
Ratchet encrypt and envelope encoding per device, X25519), measured in-process.
Client send (`--client`): the real `HushwireClient.send` of alice (who has a second
device) to bob with K linked devices, through a relay process on core 0: the sending
process's CPU per message (plan, seal for K + 1 devices, the profile transaction, one
`send_devices`, TLS), with the accepted device lists cached in memory as shipped and,
for comparison, read from the profile on every use (`uncached`).

    .venv/bin/python bench/devices_bench.py [--messages 2000] [--devices 1 2 5]
    .venv/bin/python bench/devices_bench.py --client [--messages 200] [--devices 1 2 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import hushwire, login_client, make_db, tls_material
from hushwire.client.connection import RelayConnection, TlsSettings
from hushwire.client.service import HushwireClient
from hushwire.client.store import KdfParams
from hushwire.common.crypto.devices import first_device_list
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.envelope import Session
from hushwire.common.crypto.identity import IdentityKeyPair, SignedPrekeyPair
from hushwire.common.keys import PrekeyBundle
from hushwire.common.messages import (
    Ack,
    Deliver,
    DeviceEnvelope,
    ListVersion,
    Send,
    SendDevices,
)
from hushwire.relay.config import RelayConfig
from hushwire.relay.server import RelayServer
from hushwire.relay.store import Store
from hushwire.relay.tokens import hash_token, new_salt, new_token

IN_FLIGHT = 64
BODY = bytes(256)


async def _accounts(db: Path, devices: int) -> dict[tuple[str, int], str]:
    """alice (1 device) and bob (`devices` devices): tokens by (account, device)."""
    tokens: dict[tuple[str, int], str] = {}
    async with await Store.open(db) as store:
        for name in ("alice", "bob"):
            token, salt = new_token(), new_salt()
            await store.add_user(name, hash_token(token, salt), salt, now=0)
            tokens[(name, 1)] = token
        identity = IdentityKeyPair.generate(X25519)
        dlist = first_device_list("bob", "x25519", "d1", identity.dh.public, 0)
        for _ in range(devices - 1):
            dlist, device = dlist.with_device(
                f"d{len(dlist.devices) + 1}", X25519.generate().public, 0
            )
            token, salt = new_token(), new_salt()
            await store.add_device(
                "bob", device.id, dlist.version, dlist.sign(identity),
                token_hash=hash_token(token, salt), salt=salt, now=0,
            )  # fmt: skip
            tokens[("bob", device.id)] = token
    return tokens


async def _drain(conn: RelayConnection, want: int, done: asyncio.Event) -> None:
    got = 0
    while got < want:
        push = await conn.pushes.get()
        if isinstance(push, Deliver):
            got += 1
            await conn.request(Ack, mids=(push.mid,))
    done.set()


async def relay_run(messages: int, devices: int, *, legacy: bool = False) -> tuple[float, float]:
    """(messages/s, envelopes/s); `legacy` sends one-body `send`s (one device only)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "relay.db"
        tokens = await _accounts(db, devices)
        config = RelayConfig(db=db, port=0, send_burst=1e9, send_rate=1e9).validate()
        server = RelayServer(config)
        await server.start()
        tls = TlsSettings(pin=server.fingerprint)
        conns: list[RelayConnection] = []
        try:
            receivers = []
            for d in range(1, devices + 1):
                conn = await RelayConnection.connect("127.0.0.1", server.port, tls)
                await conn.handshake("bob", tokens[("bob", d)], None if d == 1 else d)
                conns.append(conn)
                done = asyncio.Event()
                receivers.append((asyncio.create_task(_drain(conn, messages, done)), done))
            alice = await RelayConnection.connect("127.0.0.1", server.port, tls)
            await alice.handshake("alice", tokens[("alice", 1)])
            conns.append(alice)
            envelopes = tuple(DeviceEnvelope("bob", d, BODY) for d in range(1, devices + 1))
            views = (ListVersion("bob", devices if devices > 1 else 0), ListVersion("alice", 0))
            slots = asyncio.Semaphore(IN_FLIGHT)

            async def one() -> None:
                async with slots:
                    if legacy:
                        await alice.request(Send, to=("bob",), body=BODY)
                    else:
                        await alice.request(SendDevices, envelopes=envelopes, lists=views)

            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(messages)))
            for _, done in receivers:
                await done.wait()
            elapsed = time.perf_counter() - start
        finally:
            for conn in conns:
                await conn.close()
            await server.close()
    return messages / elapsed, messages * devices / elapsed


def client_cpu_us(devices: int, rounds: int = 400) -> float:
    """CPU microseconds to seal one message for `devices` established sessions."""
    group = X25519
    sender = IdentityKeyPair.generate(group)
    sessions = []
    for _ in range(devices):
        peer = IdentityKeyPair.generate(group)
        spk = SignedPrekeyPair.generate(peer, group, 1)
        bundle = PrekeyBundle("bob", peer.public(), spk.public(), None)
        sessions.append(Session.start(sender, "alice", bundle, group))
    start = time.process_time()
    for i in range(rounds):
        for session in sessions:
            session.encrypt(b"x" * 200, i)
    return (time.process_time() - start) / rounds * 1e6


class _Forgetful(dict):
    """A cache that keeps nothing: every list read goes to the profile (the baseline)."""

    def __setitem__(self, key: object, value: object) -> None:
        return None


async def _linked(old: HushwireClient, work: Path, name: str, port: int) -> HushwireClient:
    offer, _ = await old.offer_link()
    joining = asyncio.create_task(
        HushwireClient.login_link(
            work / name, "bench", host="127.0.0.1", port=port, code=offer.code.text(),
            name=name, kdf=KdfParams(n=2**10),
        )
    )  # fmt: skip
    await old.accept_link(offer)
    return await joining


async def client_send_run(devices: int, messages: int) -> tuple[float, float, float]:
    """(CPU us per send with the list cache, without it, wall ms per send with it):
    alice, with a second device, sends to bob's `devices` devices (offline: only the
    sender's work is in this process)."""
    with tempfile.TemporaryDirectory(prefix="hushwire-devices-client-") as tmp:
        work = Path(tmp)
        token = await make_db(work / "relay.db", 2)
        _, _, pin = tls_material(work)
        relay = hushwire(work, core=0).start()
        try:
            alice, bob = [await login_client(work, relay.port, i, token, pin) for i in range(2)]
            others = [await _linked(alice, work, "alice-2", relay.port)]
            for d in range(2, devices + 1):
                others.append(await _linked(bob, work, f"bob-{d}", relay.port))
            for c in (*others, bob):
                await c.close()
            await alice.send(bob.user, "warm-up: sessions with every device")
            results = []
            for cached in (True, False):
                if not cached:
                    alice.sessions.lists._cache = _Forgetful()
                cpu, wall = time.process_time(), time.perf_counter()
                for i in range(messages):
                    await alice.send(bob.user, f"message {i}")
                cpu = time.process_time() - cpu
                wall = time.perf_counter() - wall
                results.append((cpu / messages * 1e6, wall / messages * 1e3))
            await alice.close()
        finally:
            relay.stop()
    (cached_us, cached_ms), (uncached_us, _) = results
    return cached_us, uncached_us, cached_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--client", action="store_true", help="the client send table")
    args = parser.parse_args()
    if args.client:
        print("bob's devices  envelopes  client CPU us/send  uncached lists  wall ms/send")
        for k in args.devices:
            cached, uncached, wall = asyncio.run(client_send_run(k, args.messages))
            print(f"{k:>13}  {k + 1:>9}  {cached:>18,.0f}  {uncached:>14,.0f}  {wall:>12.1f}")
        return
    print("devices  relay msgs/s  relay envelopes/s  client CPU us/msg")
    msgs, envs = asyncio.run(relay_run(args.messages, 1, legacy=True))
    print(f"{'1 send':>7}  {msgs:>12,.0f}  {envs:>17,.0f}  {client_cpu_us(1):>17,.0f}")
    for k in args.devices:
        msgs, envs = asyncio.run(relay_run(args.messages, k))
        print(f"{k:>7}  {msgs:>12,.0f}  {envs:>17,.0f}  {client_cpu_us(k):>17,.0f}")


if __name__ == "__main__":
    main()
