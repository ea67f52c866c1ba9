"""Regenerate the protocol test vectors: `python -m tests.vectors.generate [--check]`.

A full exchange between alice and bob (bundle, X3DH, three messages, safety number) run
through hushwire's own code with scripted randomness, written out with every
intermediate value a second implementation needs to check itself against. Every random
value is SHAKE-256 of a label, so the file only changes when the protocol does; run this
deliberately after a protocol change and review the diff. `--check` compares instead of
writing (the test suite does the same).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from Crypto.PublicKey import MLKEM

from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.encoding import fields, pack
from hushwire.common.crypto.envelope import Envelope, Session
from hushwire.common.crypto.identity import (
    IdentityKeyPair,
    KemPrekeyPair,
    OneTimePrekeyPair,
    SignedPrekeyPair,
    identity_dh_message,
    kem_prekey_message,
    signed_prekey_message,
)
from hushwire.common.crypto.kem import EXPORT_CONTEXT, HPKE_INFO, KemKeyPair, decapsulate
from hushwire.common.crypto.ratchet import RatchetConfig, kdf_ck, message_key_material
from hushwire.common.crypto.safety import safety_number
from hushwire.common.crypto.x3dh import (
    PrekeySet,
    associated_data,
    derive_shared_key,
    pqxdh_info,
    x3dh_info,
)
from hushwire.common.keys import PrekeyBundle

HERE = Path(__file__).parent
FILES = {1: HERE / "protocol_v1.json", 2: HERE / "protocol_v2.json"}
GROUP = X25519
TIMES = (1_767_225_600_000, 1_767_225_601_000, 1_767_225_602_000)  # 2026-01-01T00:00:0xZ
TEXTS = ("hello bob", "hi alice, got it", "third message, a plain one")


class Scripted:
    """A `Random` that hands out labelled values and records them in order of use.

    Every draw is SHAKE-256(label || "/" || index) truncated to the size asked for, so a
    value depends only on its label and position, never on what other steps drew.
    """

    def __init__(self, label: str, values: list[str] | None = None) -> None:
        self.label = label
        self.drawn: list[str] = []
        self._replay: Iterator[str] | None = None if values is None else iter(values)

    def __call__(self, n: int) -> bytes:
        if self._replay is not None:
            value = bytes.fromhex(next(self._replay))
            if len(value) != n:
                raise ValueError(f"{self.label}: recorded {len(value)} bytes, {n} asked")
        else:
            seed = f"hushwire test vector/{self.label}/{len(self.drawn)}".encode()
            value = hashlib.shake_256(seed).digest(n)
        self.drawn.append(value.hex())
        return value


def _hex(value: bytes) -> str:
    return value.hex()


def _message(sender: Session, plaintext: bytes, now_ms: int) -> tuple[bytes, dict[str, Any]]:
    """Seal one message and record what the sender derived on the way."""
    state = sender.ratchet
    chain_key = state.cks
    assert chain_key is not None
    _, message_key = kdf_ck(chain_key)
    envelope = sender.encrypt(plaintext, now_ms)
    env = Envelope.from_bytes(envelope)
    aes_key, nonce = message_key_material(message_key, env.header.salt)
    record: dict[str, Any] = {
        "sender": env.sender,
        "recipient": env.recipient,
        "type": int(env.type),
        "plaintext": _hex(plaintext),
        "sent_at_ms": now_ms,
        "envelope_id": _hex(env.envelope_id),
        "sending_chain_key": _hex(chain_key),
        "message_key": _hex(message_key),
        "salt": _hex(env.header.salt),
        "aes_key": _hex(aes_key),
        "nonce": _hex(nonce),
        "ratchet_header": _hex(env.header.to_bytes()),
        "extra_ad": _hex(env.associated_data()),
        "message_ad": _hex(fields(state.ad, env.header.to_bytes(), env.associated_data())),
        "ciphertext": _hex(env.ciphertext),
        "envelope": _hex(envelope),
    }
    return envelope, record


DESCRIPTIONS = {
    1: "hushwire protocol version 1 (X3DH, version-1 envelopes and message keys)",
    2: "hushwire protocol version 2 (PQXDH, version-2 envelopes, salted message keys)",
}


class ScriptedKem:
    """PQXDH's encapsulation with fixed coins, recording what a checker needs.

    HPKE's public interface draws its own randomness, so only here (never in the
    product) pycryptodome's private `MLKEMKey._encaps(coins)` (FIPS 203 ML-KEM.Encaps
    with the 32-byte message m given) makes the ciphertext reproducible; SS then comes
    from the public HPKE path, decapsulating with bob's key.
    """

    def __init__(self, rand: Scripted, receiver: KemKeyPair) -> None:
        self.rand = rand
        self.receiver = receiver
        self.record: dict[str, str] = {}

    def __call__(self, public: bytes) -> tuple[bytes, bytes]:
        coins = self.rand(32)
        raw_secret, ciphertext = MLKEM.construct(param_set=MLKEM.ML_KEM_768, ek=public)._encaps(
            coins
        )
        secret = decapsulate(self.receiver.private, ciphertext)
        self.record = {
            "encapsulation_coins": _hex(coins),
            "ciphertext": _hex(ciphertext),
            "ml_kem_shared_secret": _hex(raw_secret),
            "hpke_info": _hex(HPKE_INFO),
            "hpke_exporter_context": _hex(EXPORT_CONTEXT),
            "ss": _hex(secret),
        }
        return ciphertext, secret


def build(version: int) -> dict[str, Any]:
    """One protocol version's exchange as a JSON-ready dict."""
    rands = {
        name: Scripted(name)
        for name in ("alice.identity", "bob.identity", "bob.signed_prekey", "bob.one_time_prekey")
    }
    alice = IdentityKeyPair.generate(GROUP, rands["alice.identity"])
    bob = IdentityKeyPair.generate(GROUP, rands["bob.identity"])
    spk = SignedPrekeyPair.generate(bob, GROUP, 1, rands["bob.signed_prekey"])
    opk = OneTimePrekeyPair.generate(GROUP, 2, rands["bob.one_time_prekey"])
    kem_prekeys: list[KemPrekeyPair] = []
    if version == 2:
        rands["bob.kem_prekey"] = Scripted("bob.kem_prekey")
        rands["alice.kem"] = Scripted("alice.kem")
        kem_prekeys = [
            KemPrekeyPair.generate(bob, 3, last_resort=False, rand=rands["bob.kem_prekey"])
        ]
        bundle = PrekeyBundle(
            "bob", bob.public(), spk.public(), opk.public(), 2, kem_prekeys[0].public()
        )
        kem = ScriptedKem(rands["alice.kem"], kem_prekeys[0].kem)
    else:
        bundle = PrekeyBundle("bob", bob.public(), spk.public(), opk.public())
        kem = ScriptedKem(Scripted("unused"), KemKeyPair.generate(Scripted("unused")))

    alice_rand, bob_rand = Scripted("alice.session"), Scripted("bob.session")
    session_a = Session.start(
        alice, "alice", bundle, GROUP, config=RatchetConfig(rand=alice_rand), encapsulate_to=kem
    )
    header = session_a.x3dh
    assert header is not None
    ek_private = bytes.fromhex(alice_rand.drawn[0])
    dh = [
        GROUP.agree(alice.dh.private, spk.dh.public),
        GROUP.agree(ek_private, bob.dh.public),
        GROUP.agree(ek_private, spk.dh.public),
        GROUP.agree(ek_private, opk.dh.public),
    ]
    kem_secret = bytes.fromhex(kem.record["ss"]) if kem.record else None
    first, rec1 = _message(session_a, TEXTS[0].encode(), TIMES[0])
    session_b, _, used = Session.respond(
        bob,
        "bob",
        PrekeySet.of([spk], [opk], kem_prekeys),
        first,
        config=RatchetConfig(rand=bob_rand),
    )
    assert used.one_time == opk.id
    bob_ratchet = bob_rand.drawn[0]  # drawn when bob's first decrypt ratcheted
    reply, rec2 = _message(session_b, TEXTS[1].encode(), TIMES[1])
    session_a.decrypt(reply)
    alice_ratchet_2 = alice_rand.drawn[-1]
    third, rec3 = _message(session_a, TEXTS[2].encode(), TIMES[2])
    session_b.decrypt(third)

    numbers = safety_number("alice", alice.public(), "bob", bob.public())
    return {
        "description": (
            f"{DESCRIPTIONS[version]}: alice starts a session with bob from his bundle "
            "(with a one-time prekey), bob replies, alice sends a plain message. "
            "All byte strings are hex. docs/security.md defines every value; "
            "tests/vectors/generate.py wrote this file."
        ),
        "version": version,
        "group": GROUP.name,
        "randomness": {
            name: r.drawn
            for name, r in {**rands, "alice.session": alice_rand, "bob.session": bob_rand}.items()
        },
        "alice": _identity_record(alice),
        "bob": {
            **_identity_record(bob),
            "signed_prekey": {
                "id": spk.id,
                "private": _hex(spk.dh.private),
                "public": _hex(spk.dh.public),
                "signed_message": _hex(signed_prekey_message(GROUP.name, spk.id, spk.dh.public)),
                "signature": _hex(spk.sig),
            },
            "one_time_prekey": {
                "id": opk.id,
                "private": _hex(opk.dh.private),
                "public": _hex(opk.dh.public),
            },
            **({"kem_prekey": _kem_prekey_record(kem_prekeys[0])} if kem_prekeys else {}),
        },
        **({"kem": kem.record} if version == 2 else {}),
        "x3dh": {
            "ephemeral_private": alice_rand.drawn[0],
            "ephemeral_public": _hex(header.ephemeral_key),
            "dh1": _hex(dh[0]),
            "dh2": _hex(dh[1]),
            "dh3": _hex(dh[2]),
            "dh4": _hex(dh[3]),
            "kdf_info": _hex(pqxdh_info(GROUP) if version == 2 else x3dh_info(GROUP)),
            "shared_key": _hex(derive_shared_key(GROUP, dh, kem_secret)),
            "associated_data": _hex(associated_data(alice.public(), "alice", bob.public(), "bob")),
            "initial_header": _hex(pack(header.to_wire())),
        },
        "ratchet_keys": {
            "alice_first_private": alice_rand.drawn[1],
            "bob_first_private": _hex(spk.dh.private),
            "bob_second_private": bob_ratchet,
            "alice_second_private": alice_ratchet_2,
        },
        "messages": [rec1, rec2, rec3],
        "safety_number": {
            "alice_key": _hex(alice.public().sign_key),
            "bob_key": _hex(bob.public().sign_key),
            "digits": numbers.digits,
            "alice_scannable": _hex(numbers.scannable),
        },
    }


def _kem_prekey_record(prekey: KemPrekeyPair) -> dict[str, Any]:
    return {
        "id": prekey.id,
        "last_resort": prekey.last_resort,
        "private_seed": _hex(prekey.kem.private),
        "public": _hex(prekey.kem.public),
        "signed_message": _hex(kem_prekey_message(prekey.id, prekey.kem.public)),
        "signature": _hex(prekey.sig),
    }


def _identity_record(identity: IdentityKeyPair) -> dict[str, Any]:
    return {
        "sign_seed": _hex(identity.sign_seed),
        "sign_key": _hex(identity.sign_key),
        "dh_private": _hex(identity.dh.private),
        "dh_public": _hex(identity.dh.public),
        "dh_signed_message": _hex(identity_dh_message(identity.group, identity.dh.public)),
        "dh_signature": _hex(identity.dh_sig),
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def main(argv: list[str]) -> int:
    status = 0
    for version, path in FILES.items():
        text = render(build(version))
        if "--check" not in argv:
            path.write_text(text)
            print(f"wrote {path}")
        elif path.read_text() != text:
            print(f"{path} differs from what the code produces now", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
