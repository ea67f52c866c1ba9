"""What protocol version 2 (PQXDH, ML-KEM-768) costs next to version 1 (X3DH), X25519.

Run: .venv/bin/python bench/pqxdh_bench.py [--rounds N]
Prints key generation, sizes on the wire (bundle reply, first message, key upload) and
session setup times, median of N rounds on one core. Not a test: times drift between
runs; sizes are exact.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.crypto_bench import median_ms
from hushwire.client.keys import publish_fields, split_upload
from hushwire.client.prekeys import KeyUpload
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.envelope import Session
from hushwire.common.crypto.identity import (
    IdentityKeyPair,
    KemPrekeyPair,
    OneTimePrekeyPair,
    SignedPrekeyPair,
    generate_one_time_prekeys,
)
from hushwire.common.crypto.kem import KemKeyPair, decapsulate, encapsulate
from hushwire.common.crypto.x3dh import PrekeySet, initiate, respond
from hushwire.common.keys import PQ_BUNDLE_VERSION, PrekeyBundle
from hushwire.common.messages import BundleOk, PublishKeys, Send

TEXT = b"\x01" + b"x" * 100  # a 100-character chat message


def frame_size(message: object) -> int:
    return 4 + len(msgpack.packb(message.to_wire(), use_bin_type=True))  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    rounds = parser.parse_args().rounds
    group = X25519
    alice, bob = IdentityKeyPair.generate(group), IdentityKeyPair.generate(group)
    spk = SignedPrekeyPair.generate(bob, group, 1)
    opk: OneTimePrekeyPair = generate_one_time_prekeys(group, 2, 1)[0]
    kem = KemPrekeyPair.generate(bob, 3, last_resort=False)
    prekeys = PrekeySet.of([spk], [opk], [kem])
    bundles = {
        1: PrekeyBundle("bob", bob.public(), spk.public(), opk.public()),
        2: PrekeyBundle(
            "bob", bob.public(), spk.public(), opk.public(), PQ_BUNDLE_VERSION, kem.public()
        ),
    }

    ct, _ = encapsulate(kem.kem.public)
    times = {
        "X25519 key pair": median_ms(group.generate, rounds),
        "ML-KEM-768 key pair": median_ms(KemKeyPair.generate, rounds),
        "signed KEM prekey (key pair + Ed25519 sign)": median_ms(
            lambda: KemPrekeyPair.generate(bob, 9, last_resort=False), rounds
        ),
        "ML-KEM encapsulate + export (HPKE)": median_ms(
            lambda: encapsulate(kem.kem.public), rounds
        ),
        "ML-KEM decapsulate + export (HPKE)": median_ms(
            lambda: decapsulate(kem.kem.private, ct), rounds
        ),
    }
    setup: dict[int, dict[str, float]] = {}
    sizes: dict[int, dict[str, int]] = {}
    for version, bundle in bundles.items():
        header = initiate(alice, "alice", bundle, group).header
        _, first = Session.initiate(alice, "alice", bundle, group, 0, TEXT)

        def full_setup(bundle: PrekeyBundle = bundle) -> None:
            _, envelope = Session.initiate(alice, "alice", bundle, group, 0, TEXT)
            Session.respond(bob, "bob", prekeys, envelope)

        setup[version] = {
            "initiator: verify bundle + DH (+ encapsulate)": median_ms(
                lambda bundle=bundle: initiate(alice, "alice", bundle, group), rounds
            ),
            "responder: DH (+ decapsulate)": median_ms(
                lambda header=header: respond(bob, "bob", "alice", header, prekeys, group),
                rounds,
            ),
            "first message sealed and opened (whole setup)": median_ms(full_setup, rounds),
        }
        sizes[version] = {
            "fetch_bundle reply frame": frame_size(BundleOk(id=1, bundle=bundle)),
            "first message envelope (100-char text)": len(first),
            "its send frame": frame_size(Send(id=1, to=("bob",), body=first)),
        }
    opks = tuple(p.public() for p in generate_one_time_prekeys(group, 10, 100))
    kems = tuple(
        KemPrekeyPair.generate(bob, 200 + i, last_resort=False).public() for i in range(100)
    )
    last = KemPrekeyPair.generate(bob, 199, last_resort=True).public()
    uploads = {
        1: KeyUpload(bob.public(), spk.public(), opks),
        2: KeyUpload(bob.public(), spk.public(), opks, last, kems),
    }
    for version, upload in uploads.items():
        parts = split_upload(upload, 65536)
        sizes[version]["first key upload, bytes (100 one-time prekeys of each kind)"] = sum(
            frame_size(PublishKeys(id=1, **publish_fields(p))) for p in parts
        )
        sizes[version]["first key upload, publish_keys requests at 64 KiB"] = len(parts)

    print(f"median of {rounds} rounds, one core, X25519 group\n")
    print("| operation | ms |")
    print("|---|---|")
    for name, ms in times.items():
        print(f"| {name} | {ms:.3f} |")
    print("\n| session setup, ms | version 1 (X3DH) | version 2 (PQXDH) |")
    print("|---|---|---|")
    for name in setup[1]:
        print(f"| {name} | {setup[1][name]:.3f} | {setup[2][name]:.3f} |")
    print("\n| size | version 1 | version 2 |")
    print("|---|---|---|")
    for name in sizes[1]:
        print(f"| {name} | {sizes[1][name]:,} | {sizes[2][name]:,} |")


if __name__ == "__main__":
    main()
