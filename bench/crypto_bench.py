"""Per-operation costs of hushwire's end-to-end crypto, for X25519 and ffdhe3072.

Run: .venv/bin/python bench/crypto_bench.py [--rounds N]
Prints a table (median of N rounds, one core). Not a test: numbers drift between runs.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hushwire.common.crypto.dh import FFDHE3072, X25519, DHGroup
from hushwire.common.crypto.envelope import Session
from hushwire.common.crypto.identity import (
    IdentityKeyPair,
    SignedPrekeyPair,
    generate_one_time_prekeys,
)
from hushwire.common.crypto.safety import safety_number
from hushwire.common.crypto.x3dh import PrekeySet, initiate, respond
from hushwire.common.keys import PrekeyBundle


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def bench_group(group: DHGroup, rounds: int) -> dict[str, float]:
    alice = IdentityKeyPair.generate(group)
    bob = IdentityKeyPair.generate(group)
    spk = SignedPrekeyPair.generate(bob, group, 1)
    opks = generate_one_time_prekeys(group, 1, rounds + 1)
    prekeys = PrekeySet.of([spk], opks)

    def bundle() -> PrekeyBundle:
        return PrekeyBundle("bob", bob.public(), spk.public(), opks[0].public())

    out: dict[str, float] = {}
    out["DH key generation"] = median_ms(group.generate, rounds)
    out["identity key generation"] = median_ms(lambda: IdentityKeyPair.generate(group), rounds)
    out["X3DH initiator (verify + 4 DH)"] = median_ms(
        lambda: initiate(alice, "alice", bundle(), group), rounds
    )
    header = initiate(alice, "alice", bundle(), group).header
    out["X3DH responder (verify + 4 DH)"] = median_ms(
        lambda: respond(bob, "bob", "alice", header, prekeys, group), rounds
    )
    session_a, first = Session.initiate(alice, "alice", bundle(), group, 0, b"hi")
    session_b, _, _ = Session.respond(bob, "bob", prekeys, first)
    session_a.decrypt(session_b.encrypt(b"ack", 0))
    for size in (100, 4096):
        payload = secrets.token_bytes(size)

        def same_chain(payload: bytes = payload) -> None:
            session_b.decrypt(session_a.encrypt(payload, 0))

        def ping_pong(payload: bytes = payload) -> None:
            session_b.decrypt(session_a.encrypt(payload, 0))
            session_a.decrypt(session_b.encrypt(payload, 0))

        label = "100 B" if size == 100 else "4 KiB"
        out[f"ratchet encrypt+decrypt {label}, same chain"] = median_ms(same_chain, rounds)
        out[f"ratchet round trip {label} (2 DH steps)"] = median_ms(ping_pong, rounds) / 2
    out["safety number (2 x 5200 SHA-512)"] = median_ms(
        lambda: safety_number("alice", alice.public(), "bob", bob.public()), max(3, rounds // 5)
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    results = {g.name: bench_group(g, args.rounds) for g in (X25519, FFDHE3072)}
    rows = list(next(iter(results.values())))
    width = max(len(r) for r in rows)
    print(f"median of {args.rounds} rounds, milliseconds per operation\n")
    print(f"| {'operation':<{width}} | {'x25519':>8} | {'ffdhe3072':>9} |")
    print(f"|{'-' * (width + 2)}|{'-' * 10}|{'-' * 11}|")
    for row in rows:
        a, b = results["x25519"][row], results["ffdhe3072"][row]
        print(f"| {row:<{width}} | {a:8.3f} | {b:9.3f} |")


if __name__ == "__main__":
    main()
