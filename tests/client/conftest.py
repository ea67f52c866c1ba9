"""Two profiles' session managers and an in-memory key directory in place of a relay:
the fixtures of the tests of client/session.py and the modules split from it."""

from __future__ import annotations

import itertools

import pytest

from hushwire.client.prekeys import KeyUpload, load_or_create_identity
from hushwire.client.session import SessionManager
from hushwire.client.store import KdfParams, ProfileStore
from hushwire.common.crypto.dh import X25519
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.keys import PrekeyBundle
from hushwire.common.messages import Deliver


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Directory:
    """What the relay's version-2 key directory does: hand out bundles, one one-time
    prekey and one one-time KEM prekey each (the last-resort KEM prekey when none left)."""

    def __init__(self) -> None:
        self.uploads: dict[str, KeyUpload] = {}
        self.one_time: dict[str, list] = {}
        self.kem: dict[str, list] = {}
        self.fetches = 0
        self.mids = itertools.count(1)

    def publish(self, user: str, upload: KeyUpload) -> None:
        old = self.uploads.get(user)
        identity = upload.identity or old.identity
        spk = upload.signed_prekey or old.signed_prekey
        last = upload.kem_last_resort or old.kem_last_resort
        if upload.identity is not None and old is not None and upload.identity != old.identity:
            self.one_time[user] = []
            self.kem[user] = []
        self.uploads[user] = KeyUpload(identity, spk, (), last)
        self.one_time.setdefault(user, []).extend(upload.one_time_prekeys)
        self.kem.setdefault(user, []).extend(upload.one_time_kem_prekeys)

    async def fetch(self, user: str) -> PrekeyBundle:
        self.fetches += 1
        if user not in self.uploads:
            raise RequestError(ErrorCode.UNKNOWN_USER, f"no user {user}")
        up = self.uploads[user]
        otpks, kems = self.one_time[user], self.kem[user]
        return PrekeyBundle(
            user,
            up.identity,
            up.signed_prekey,
            otpks.pop(0) if otpks else None,
            2,
            kems.pop(0) if kems else up.kem_last_resort,
        )

    def deliver(self, sender: str, envelope: bytes) -> Deliver:
        return Deliver(mid=next(self.mids), sender=sender, ts=0, body=envelope)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def directory() -> Directory:
    return Directory()


@pytest.fixture
async def make(tmp_path, clock, directory):
    stores = []

    async def new(user: str, profile: str | None = None) -> SessionManager:
        store = await ProfileStore.open(
            tmp_path / (profile or user), "pw", create=True, kdf=KdfParams(n=2**10)
        )
        stores.append(store)
        identity = await load_or_create_identity(store, X25519, 0)
        manager = SessionManager(store, user, identity, X25519, clock=clock)
        upload = await manager.keys.plan_upload(
            relay_has_identity=False, prekeys_left=0, kem_prekeys_left=0, key_version=2
        )
        directory.publish(user, upload)
        await manager.keys.upload_done(upload)
        return manager

    yield new
    for s in stores:
        await s.close()


async def send(a: SessionManager, to: str, text: str, directory: Directory) -> Deliver:
    """`a` seals `text` for `to`'s device 1 and the directory hands it over."""
    out = await a.prepare_send(to, text, directory.fetch)
    await a.mark_sent(out.uid)
    return directory.deliver(a.user, out.envelope)
