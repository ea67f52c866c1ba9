"""This device's own keys: the identity, and which prekeys to publish and keep.

No network: `OwnKeys.plan_upload` says what to publish after a login (everything the
first time, then top-ups and rotations), committing every new private key before it is
published, so a peer can never use a key we do not hold; `upload_done` records the
relay's acceptance and retires old signed prekeys after a grace period; `prekeys_for`
finds the private prekeys an initial message names (client/keys.py does the uploading).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from hushwire.client.errors import ProfileCorrupt
from hushwire.client.store import ProfileStore
from hushwire.common.crypto.dh import DHGroup
from hushwire.common.crypto.identity import (
    IdentityKeyPair,
    KemPrekeyPair,
    OneTimePrekeyPair,
    SignedPrekeyPair,
    generate_one_time_prekeys,
)
from hushwire.common.crypto.x3dh import InitialHeader
from hushwire.common.errors import CryptoError
from hushwire.common.keys import (
    PQ_BUNDLE_VERSION,
    IdentityPublic,
    KemPrekey,
    OneTimePrekey,
    SignedPrekey,
)

DAY_MS: Final = 86_400_000
SIGNED_PREKEY_ROTATE_MS: Final = 7 * DAY_MS
# Keep a retired signed prekey's private key past the relay's 30-day retention, so an
# initial message that waited in a mailbox that long still decrypts.
SIGNED_PREKEY_GRACE_MS: Final = 35 * DAY_MS
PREKEY_TARGET: Final = 100  # one-time prekeys (DH, and KEM) the relay should hold
PREKEY_LOW: Final = 20  # top up below this


@dataclass(frozen=True, slots=True)
class KeyUpload:
    """What to publish now (fields of `publish_keys`); `upload_done` after the relay's ok."""

    identity: IdentityPublic | None
    signed_prekey: SignedPrekey | None
    one_time_prekeys: tuple[OneTimePrekey, ...]
    kem_last_resort: KemPrekey | None = None
    one_time_kem_prekeys: tuple[KemPrekey, ...] = ()


class PrekeyLookup:
    """The responder's private prekeys by id (PQXDH PrekeyLookup) for one envelope."""

    def __init__(
        self,
        signed: dict[int, SignedPrekeyPair],
        one_time: dict[int, OneTimePrekeyPair],
        kem: dict[int, KemPrekeyPair],
    ) -> None:
        self._signed = signed
        self._one_time = one_time
        self._kem = kem

    def signed_prekey(self, prekey_id: int) -> SignedPrekeyPair | None:
        return self._signed.get(prekey_id)

    def one_time_prekey(self, prekey_id: int) -> OneTimePrekeyPair | None:
        return self._one_time.get(prekey_id)

    def kem_prekey(self, prekey_id: int) -> KemPrekeyPair | None:
        return self._kem.get(prekey_id)


async def load_or_create_identity(
    store: ProfileStore, group: DHGroup, now_ms: int
) -> IdentityKeyPair:
    """The profile's identity key pair, generated in `group` on first use."""
    secret = await store.load_identity()
    if secret is None:
        identity = IdentityKeyPair.generate(group)
        await store.save_identity(identity.to_bytes(), now_ms)
        return identity
    try:
        return IdentityKeyPair.from_bytes(secret, group)
    except CryptoError as exc:
        raise ProfileCorrupt(f"stored identity key is unusable: {exc.message}") from None


class OwnKeys:
    """This device's prekeys in its profile (see the module docstring)."""

    def __init__(
        self,
        store: ProfileStore,
        identity: IdentityKeyPair,
        group: DHGroup,
        now_ms: Callable[[], int],
    ) -> None:
        self.store = store
        self.identity = identity
        self.group = group
        self.now_ms = now_ms

    async def plan_upload(
        self,
        *,
        relay_has_identity: bool,
        prekeys_left: int,
        kem_prekeys_left: int,
        key_version: int,
    ) -> KeyUpload | None:
        """What to publish after login: everything on first login, else a top-up/rotation.

        "First" also covers a relay holding only version-1 keys for us (a profile from
        before PQXDH): everything is published again, with the KEM prekeys. New private
        keys are committed before they are published, so a peer can never use a key we
        do not hold.
        """
        now = self.now_ms()
        first = not (
            relay_has_identity
            and key_version >= PQ_BUNDLE_VERSION
            and await self.store.get_setting("published")
        )
        current_id = await self.store.get_setting("signed_prekey_id")
        current = {pid: created for pid, _, created, _ in await self.store.signed_prekeys()}
        spk = None
        due = current_id not in current or now - current[current_id] >= SIGNED_PREKEY_ROTATE_MS
        if first or due:
            pid = await self.store.next_prekey_ids(1)
            pair = SignedPrekeyPair.generate(self.identity, self.group, pid)
            await self.store.add_signed_prekey(pid, pair.to_bytes(), now)
            spk = pair.public()
        left = 0 if first else prekeys_left
        one_time: tuple[OneTimePrekey, ...] = ()
        if first or left < PREKEY_LOW:
            count = PREKEY_TARGET - left
            first_id = await self.store.next_prekey_ids(count)
            pairs = generate_one_time_prekeys(self.group, first_id, count)
            await self.store.add_one_time_prekeys([(p.id, p.to_bytes()) for p in pairs], now)
            one_time = tuple(p.public() for p in pairs)
        kem_last, kem_one_time = await self._plan_kem(
            now, first=first, rotate=spk is not None, left=0 if first else kem_prekeys_left
        )
        if not first and spk is None and not one_time and not kem_one_time:
            return None
        return KeyUpload(
            self.identity.public() if first else None, spk, one_time, kem_last, kem_one_time
        )

    async def _plan_kem(
        self, now: int, *, first: bool, rotate: bool, left: int
    ) -> tuple[KemPrekey | None, tuple[KemPrekey, ...]]:
        """PQXDH keys to publish: a new last-resort one with every signed prekey (or if
        none is held), and one-time ones topped up like the DH ones."""
        last = None
        if first or rotate or await self.store.kem_last_resort() is None:
            pid = await self.store.next_prekey_ids(1)
            pair = KemPrekeyPair.generate(self.identity, pid, last_resort=True)
            await self.store.add_kem_prekeys([(pid, pair.to_bytes(), True)], now)
            last = pair.public()
        one_time: tuple[KemPrekey, ...] = ()
        if first or left < PREKEY_LOW:
            count = PREKEY_TARGET - left
            first_id = await self.store.next_prekey_ids(count)
            pairs = [
                KemPrekeyPair.generate(self.identity, first_id + i, last_resort=False)
                for i in range(count)
            ]
            await self.store.add_kem_prekeys([(p.id, p.to_bytes(), False) for p in pairs], now)
            one_time = tuple(p.public() for p in pairs)
        return last, one_time

    async def upload_done(self, upload: KeyUpload) -> None:
        """The relay accepted `upload`: remember it; retire older signed prekeys."""
        now = self.now_ms()
        async with self.store.transaction():
            await self.store.set_setting("published", True)
            if upload.signed_prekey is not None:
                pid = upload.signed_prekey.id
                await self.store.set_setting("signed_prekey_id", pid)
                await self.store.retire_signed_prekeys(pid, now, now - SIGNED_PREKEY_GRACE_MS)
            if upload.kem_last_resort is not None:
                await self.store.retire_kem_last_resort(
                    upload.kem_last_resort.id, now, now - SIGNED_PREKEY_GRACE_MS
                )

    async def prekeys_for(self, header: InitialHeader) -> PrekeyLookup:
        """Our private prekeys that `header` names, for one initial message."""
        signed = {
            pid: SignedPrekeyPair.from_bytes(secret, self.group)
            for pid, secret, _, _ in await self.store.signed_prekeys()
        }
        one_time = {}
        if header.one_time_prekey_id is not None:
            secret = await self.store.one_time_prekey(header.one_time_prekey_id)
            if secret is not None:
                pair = OneTimePrekeyPair.from_bytes(secret, self.group)
                one_time[pair.id] = pair
        kem = {}
        if header.kem_prekey_id is not None:
            secret = await self.store.kem_prekey(header.kem_prekey_id)
            if secret is not None:
                kem_pair = KemPrekeyPair.from_bytes(secret)
                kem[kem_pair.id] = kem_pair
        return PrekeyLookup(signed, one_time, kem)
