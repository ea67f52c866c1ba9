"""The relay's key directory: `publish_keys`, `fetch_bundle` and `prekey_count`, and
the identity checks a login and a publish make (one account identity, each device's DH
key as its signed device list gives it).

Kept apart from relay/handlers.py (login, acks, presence) as relay/device_handlers.py
and relay/sending.py are: one concern with its own state, the upload and fetch limits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from hushwire.common.crypto.devices import DeviceList
from hushwire.common.crypto.primitives import ct_equal
from hushwire.common.errors import ErrorCode, RequestError, echo
from hushwire.common.keys import (
    KEM_PUBLIC_LEN,
    PQ_BUNDLE_VERSION,
    IdentityPublic,
    OneTimePrekey,
    SignedPrekey,
)
from hushwire.common.messages import (
    BundleOk,
    CountOk,
    FetchBundle,
    KeyChanged,
    PrekeyCount,
    PublishKeys,
    PublishOk,
    Reply,
    Request,
)
from hushwire.common.names import check_username
from hushwire.relay.devices import principal
from hushwire.relay.ratelimit import RateLimiter

if TYPE_CHECKING:
    from hushwire.relay.handlers import Peer, Relay

log = logging.getLogger("hushwire.relay")

MAX_PREKEYS_PER_UPLOAD = 200
ED25519_KEY = 32
ED25519_SIG = 64


class KeyHandlers:
    """Answers the key requests for a `Relay`."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.store = relay.store
        self.group = relay.group
        config = relay.config
        self.fetches = RateLimiter(config.fetch_limit)  # shared across relays (Relay.charge)
        self.spending = relay.bus.spending
        # One-time prekeys handed out per target, by all fetchers together (X3DH 4.7).
        self._one_time_of = RateLimiter(config.target_fetch_limit)
        self._publishes = RateLimiter(config.publish_limit)
        self.dispatch: dict[type[Request], Callable[[Peer, Request, float], Awaitable[Reply]]] = {
            PublishKeys: self._publish,  # type: ignore[dict-item]
            FetchBundle: self._fetch,  # type: ignore[dict-item]
            PrekeyCount: self._count,  # type: ignore[dict-item]
        }

    def _check_identity(self, identity: IdentityPublic) -> None:
        if identity.group != self.group.name:
            raise RequestError(
                ErrorCode.BAD_KEYS,
                f"keys are for group {echo(identity.group)}; this relay uses {self.group.name!r}",
            )
        if len(identity.sign_key) != ED25519_KEY or len(identity.dh_sig) != ED25519_SIG:
            raise RequestError(ErrorCode.BAD_KEYS, "malformed identity signing key or signature")
        self._check_public(identity.dh_key, "identity key")

    def _check_public(self, key: bytes, what: str) -> None:
        if len(key) != self.group.public_size:
            raise RequestError(
                ErrorCode.BAD_KEYS,
                f"{what} must be {self.group.public_size} bytes for {self.group.name}",
            )

    async def check_login_identity(self, account: str, sign_key: bytes) -> None:
        """A login that names an identity other than the account's: refused before it
        replaces the device's live session (a copied token with a new profile)."""
        stored = await self.store.account_identity(account)
        if stored is not None and not ct_equal(stored.sign_key, sign_key):
            self.relay.counters.logins["account_has_devices"] += 1
            raise self._has_devices(account)

    @staticmethod
    def _has_devices(account: str) -> RequestError:
        return RequestError(
            ErrorCode.ACCOUNT_HAS_DEVICES,
            f"{account} already has keys on another device; to use this machine "
            f"too, run `hushwire link` on a device of {account} and "
            "`hushwire login --link CODE` here (or `--replace-identity` to start "
            "over with a new identity, which unlinks every other device)",
        )

    async def _check_account_identity(
        self, peer: Peer, identity: IdentityPublic, replace: bool
    ) -> None:
        """A device publishes the account's identity with its own DH key: a different
        account key is refused unless it is an explicit reset, and once the account has a
        device list the DH key must be the one the list gives this device."""
        account, device = self.relay.account_of(peer)
        stored = await self.store.account_identity(account)
        if stored is not None and stored.sign_key != identity.sign_key:
            if not replace:
                raise self._has_devices(account)
            removed = await self.store.reset_devices(account, keep=device)
            log.info("%s replaced its identity; %d other device(s) unlinked", account, len(removed))
            self.relay.devices.unlinked(account, removed)
            return
        cur = (await self.relay.devices.current([account]))[account]
        if cur.signed is not None:
            listed = DeviceList.decode(cur.signed.body).device(device)
            if listed is None or listed.dh_key != identity.dh_key:
                raise RequestError(
                    ErrorCode.BAD_KEYS, f"device {device}'s key is not the one in the device list"
                )

    async def _publish(self, peer: Peer, req: PublishKeys, now: float) -> PublishOk:
        user = self.relay.user_of(peer)
        account, _ = self.relay.account_of(peer)
        if req.identity is not None:
            self._check_identity(req.identity)
            await self._check_account_identity(peer, req.identity, req.replace_identity)
        spk: SignedPrekey | None = req.signed_prekey
        if spk is not None:
            self._check_public(spk.key, "signed prekey")
            if len(spk.sig) != ED25519_SIG:
                raise RequestError(ErrorCode.BAD_KEYS, "malformed signed prekey signature")
        one_time: tuple[OneTimePrekey, ...] = req.one_time_prekeys
        if len(one_time) > MAX_PREKEYS_PER_UPLOAD:
            raise RequestError(
                ErrorCode.BAD_KEYS, f"at most {MAX_PREKEYS_PER_UPLOAD} one-time prekeys per upload"
            )
        for otpk in one_time:
            self._check_public(otpk.key, "one-time prekey")
        self._check_kem(peer, req)
        self.relay.limit(self._publishes, "publish", user, now, "key uploads")
        result = await self.store.publish_keys(
            user,
            identity=req.identity,
            signed_prekey=spk,
            one_time=one_time,
            now=int(now),
            kem_last_resort=req.kem_last_resort,
            kem_one_time=req.one_time_kem_prekeys,
            version=peer.version,
        )
        if result.identity_changed and req.identity is not None:
            log.info(
                "identity key of %s changed; notifying %d watcher(s)", user, len(result.watchers)
            )
            self.relay.bus.push(
                KeyChanged(user=account, identity=req.identity), principals=result.watchers
            )
        return PublishOk(
            id=req.id, prekeys_left=result.prekeys_left, kem_prekeys_left=result.kem_prekeys_left
        )

    def _check_kem(self, peer: Peer, req: PublishKeys) -> None:
        kem = (*req.one_time_kem_prekeys, *filter(None, [req.kem_last_resort]))
        if kem and peer.version < PQ_BUNDLE_VERSION:
            raise RequestError(ErrorCode.BAD_REQUEST, "KEM prekeys need protocol version 2")
        if len(req.one_time_kem_prekeys) > MAX_PREKEYS_PER_UPLOAD:
            raise RequestError(
                ErrorCode.BAD_KEYS,
                f"at most {MAX_PREKEYS_PER_UPLOAD} one-time KEM prekeys per upload",
            )
        for key in kem:
            if len(key.key) != KEM_PUBLIC_LEN or len(key.sig) != ED25519_SIG:
                raise RequestError(
                    ErrorCode.BAD_KEYS,
                    f"a KEM prekey must be {KEM_PUBLIC_LEN} bytes (ML-KEM-768) with a"
                    f" {ED25519_SIG}-byte signature",
                )

    async def _fetch(self, peer: Peer, req: FetchBundle, now: float) -> BundleOk:
        user = self.relay.user_of(peer)
        target = check_username(req.user)
        device = 1 if req.device is None else req.device
        # X3DH 4.7: a client could drain a victim's one-time prekeys; bound the rate.
        self.relay.limit(self.fetches, "fetch", user, now, "prekey bundle fetches")
        if self.spending is not None:
            self.spending.spent("fetch", user, 1)
        name = principal(target, device)
        if device < 1 or not await self.store.user_exists(name):
            if device != 1 and await self.store.user_exists(target):
                raise RequestError(ErrorCode.UNKNOWN_DEVICE, f"{target} has no device {device}")
            raise RequestError(ErrorCode.UNKNOWN_USER, f"no user {target}")
        # Several accounts together must not drain an offline victim either: past the
        # target's own budget, fetches get the last-resort bundle (the signed prekey
        # alone, X3DH without DH4), so sessions still start and no prekey is consumed.
        one_time = self._one_time_of.consume(name, now) == 0
        bundle = await self.store.fetch_bundle(user, name, peer.version, one_time=one_time)
        if bundle is None:
            raise RequestError(ErrorCode.NO_KEYS, f"{target} has not published keys yet")
        account = peer.account or user
        if account != target:
            self.relay.met(account, target)
        return BundleOk(id=req.id, bundle=dataclasses.replace(bundle, user=target))

    async def _count(self, peer: Peer, req: PrekeyCount, now: float) -> CountOk:
        user = self.relay.user_of(peer)
        _, kem_left = await self.store.kem_status(user)
        return CountOk(id=req.id, count=await self.store.prekey_count(user), kem_count=kem_left)
