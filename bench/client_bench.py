"""The client's end-to-end cost per message, for X25519 and ffdhe3072.

Two real `HushwireClient` profiles talk through a real relay (TLS on 127.0.0.1, relay on
core 0, clients on core 1). `send` is `HushwireClient.send` from call to the relay's `ok`
(ratchet encrypt, the profile transaction that keeps the envelope until it is
confirmed, frame, TLS, the relay's group commit); `shown` is from that call until the
recipient's client has decrypted and stored the message (the relay pushes before its
commit, so this can be shorter than `send`).
Both sides alternate, so every message carries a new ratchet key (one DH each way).

    .venv/bin/python bench/client_bench.py [--messages 300] [--size 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.servers import hushwire, login_client, make_db, tls_material  # noqa: E402
from hushwire.client.service import HushwireClient, MessageReceived  # noqa: E402


async def measure(group: str, messages: int, size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hushwire-client-bench-") as tmp:
        work = Path(tmp)
        token = await make_db(work / "relay.db", 2)
        _, _, pin = tls_material(work)
        relay = hushwire(work, core=0, extra=("--dh-group", group)).start()
        try:
            clients = [
                await login_client(
                    work, relay.port, i, token, pin, profile=f"profile{i}", kdf_n=2**14
                )
                for i in range(2)
            ]
            send_ms, shown_ms = [], []
            text = "x" * size
            for n in range(messages + 1):
                sender, receiver = clients[n % 2], clients[1 - n % 2]
                t0 = time.perf_counter()
                shown = asyncio.create_task(_shown(receiver))
                await sender.send(receiver.user, text)
                t1 = time.perf_counter()
                t2 = await shown
                if n:  # the first message also runs X3DH: reported by crypto_bench
                    send_ms.append((t1 - t0) * 1000)
                    shown_ms.append((t2 - t0) * 1000)
            for c in clients:
                await c.close()
        finally:
            relay.stop()
    return {
        "send": statistics.median(send_ms),
        "send_p99": _p99(send_ms),
        "shown": statistics.median(shown_ms),
        "shown_p99": _p99(shown_ms),
    }


async def _shown(client: HushwireClient) -> float:
    while not isinstance(await client.events.get(), MessageReceived):
        pass
    return time.perf_counter()


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--size", type=int, default=100, help="message text bytes")
    args = parser.parse_args()
    print(
        f"client end-to-end cost per message, {args.size} B text, {args.messages} messages "
        "alternating directions (ms; median / p99)"
    )
    print(f"{'group':<10} {'send (call to relay ok)':>24} {'shown (call to stored)':>24}")
    for group in ("x25519", "ffdhe3072"):
        r = asyncio.run(measure(group, args.messages, args.size))
        print(
            f"{group:<10} {r['send']:>15.2f} / {r['send_p99']:<6.2f} "
            f"{r['shown']:>15.2f} / {r['shown_p99']:<6.2f}"
        )


if __name__ == "__main__":
    main()
