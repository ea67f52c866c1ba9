"""Throw hostile bytes at a real relay process while a well-behaved pair keeps chatting.

Bounded by --fuzz-seconds (default 10; CI uses the default, longer runs by the flag).
The relay must answer with errors or close, never crash, never log an internal error,
keep its memory bounded, and keep serving alice and bob the whole time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import ssl
import statistics
import struct
import time

from hushwire.common.frames import encode_frame
from hushwire.common.messages import REQUESTS, Ack, Deliver, Hello, Login, Send
from tests.support import WAIT, add_users, rss_kib

USERS = ("alice", "bob", "mallory")


def _junk(rng: random.Random, depth: int = 0) -> object:
    kinds = ["int", "neg", "str", "bin", "none", "bool", "float", "list", "map"]
    kind = rng.choice(kinds if depth < 3 else kinds[:7])
    if kind == "int":
        return rng.choice([0, 1, 2**31, 2**63 - 1, 2**64 - 1, rng.randrange(1 << 20)])
    if kind == "neg":
        return -rng.randrange(1, 1 << 40)
    if kind == "str":
        return "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randrange(40)))
    if kind == "bin":
        return rng.randbytes(rng.choice([0, 1, 31, 32, 33, 64, 384, 2000]))
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "float":
        return rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e308])
    if kind == "list":
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {
        rng.choice(["id", "t", "user", "to", "body", "mids", "key"]): _junk(rng, depth + 1)
        for _ in range(rng.randrange(5))
    }


def hostile_payload(rng: random.Random, token: str) -> tuple[str, bytes]:
    """One attack: (its kind, the bytes to send after TLS)."""
    kind = rng.choice(
        [
            "random",
            "truncated",
            "wrong_types",
            "huge_length",
            "deep",
            "out_of_order",
            "mutated_after_login",
        ]
    )
    hello = encode_frame(Hello(id=1, versions=(1,), client="fuzz").to_wire())
    login = encode_frame(Login(id=2, user="mallory", token=token).to_wire())
    if kind == "random":
        return kind, rng.randbytes(rng.randrange(1, 3000))
    if kind == "truncated":
        frame = encode_frame({"t": rng.choice(list(REQUESTS)), "id": 3, "x": rng.randbytes(500)})
        return kind, hello + frame[: rng.randrange(1, len(frame))]
    if kind == "wrong_types":
        t = rng.choice([*REQUESTS, "deliver", "ok", "error", "", "x" * 1000])
        body = {"t": t, "id": _junk(rng)} | {
            k: _junk(rng) for k in ("user", "to", "body", "mids", "versions")
        }
        return kind, encode_frame(body, max_size=1 << 20)
    if kind == "huge_length":
        return kind, struct.pack(">I", rng.randrange(65537, 2**32)) + rng.randbytes(100)
    if kind == "deep":
        depth = rng.choice([100, 1000, 5000, 100_000])
        payload = b"\x81\xa1t\xa4ping" + b"\x91" * depth + b"\xc0"
        return kind, struct.pack(">I", len(payload)) + payload
    if kind == "out_of_order":
        frames = [
            Send(id=5, to=("bob",), body=b"x").to_wire(),
            Login(id=6, user="mallory", token=token).to_wire(),
            Hello(id=7, versions=(1,), client="f").to_wire(),
            Hello(id=8, versions=(1,), client="f").to_wire(),
        ]
        rng.shuffle(frames)
        return kind, b"".join(encode_frame(f) for f in frames)
    # Authenticated, then well-framed requests with mutated fields.
    out = [hello, login]
    for i in range(rng.randrange(1, 20)):
        t = rng.choice(list(REQUESTS))
        body = {"t": t, "id": 10 + i} | {
            k: _junk(rng)
            for k in rng.sample(
                [
                    "user",
                    "to",
                    "body",
                    "mids",
                    "identity",
                    "signed_prekey",
                    "one_time_prekeys",
                    "versions",
                    "token",
                    "client",
                ],
                rng.randrange(0, 6),
            )
        }
        out.append(encode_frame(body, max_size=1 << 20))
    return kind, b"".join(out)


async def _attack(port: int, payload: bytes) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        writer.write(payload)
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError, OSError, ssl.SSLError):
            async with asyncio.timeout(0.3):
                while await reader.read(65536):
                    pass
    finally:
        writer.transport.abort()


async def test_wire_fuzz_never_crashes_the_relay_or_starves_others(
    tmp_path, daemons, figures, pytestconfig
):
    seconds = pytestconfig.getoption("--fuzz-seconds")
    db = tmp_path / "relay.db"
    tokens = await add_users(db, USERS)
    relay = await daemons(
        db,
        "--handshake-timeout",
        "2",
        "--send-burst",
        "1000000",
        "--send-rate",
        "1000000",
        "--max-mailbox",
        "1000000",
    )
    alice = await relay.login("alice", tokens["alice"])
    bob = await relay.login("bob", tokens["bob"])
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    tried: dict[str, int] = {}
    latencies: list[float] = []
    stop = asyncio.Event()

    async def fuzzer() -> None:
        while not stop.is_set():
            kind, payload = hostile_payload(rng, tokens["mallory"])
            tried[kind] = tried.get(kind, 0) + 1
            with contextlib.suppress(ConnectionError, OSError, ssl.SSLError, TimeoutError):
                await _attack(relay.port, payload)

    async def good_pair() -> None:
        i = 0
        while not stop.is_set():
            body = b"good %d" % i
            t0 = time.perf_counter()
            await alice.request(Send, to=("bob",), body=body)
            while True:  # mallory's fuzzed sends land in bob's mailbox too: skip them
                push = await asyncio.wait_for(bob.pushes.get(), WAIT)
                if isinstance(push, Deliver):
                    await bob.request(Ack, mids=(push.mid,))
                    if push.sender == "alice":
                        break
            latencies.append(time.perf_counter() - t0)
            assert push.body == body
            i += 1
            await asyncio.sleep(0.02)

    workers = [asyncio.create_task(fuzzer()) for _ in range(6)]
    pair = asyncio.create_task(good_pair())
    await asyncio.sleep(min(2.0, seconds / 4))
    rss_start = rss_kib(relay.proc.pid)
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*workers)
    await asyncio.wait_for(pair, WAIT)
    rss_end = rss_kib(relay.proc.pid)

    assert relay.proc.returncode is None, "the relay died"
    log = "".join(relay.log)
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
    assert len(latencies) >= 10
    assert rss_end - rss_start < 64 * 1024, (rss_start, rss_end)
    total = sum(tried.values())
    assert total >= 50 and len(tried) == 7
    figures.add(
        f"{total} hostile connections in {seconds:.0f} s (seed {seed}): "
        + ", ".join(f"{k} {v}" for k, v in sorted(tried.items())),
        f"relay crashes 0, internal errors 0; RSS {rss_start} -> {rss_end} KiB; "
        f"alice->bob still served: {len(latencies)} round trips, median "
        f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms",
    )
    assert await relay.stop() == 0
