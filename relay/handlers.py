"""The relay's domain logic: what each request does, independent of sockets.

A `Relay` knows the store, the limits and who is online. Connections (relay/connection.py)
call `handle()` with a typed request and the current time, and implement `Peer` so the
relay can push to them. Tests can drive this with any `Peer`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.messages import (
    RELAY_FEATURES,
    SUPPORTED_VERSIONS,
    Ack,
    AckOk,
    Deliver,
    FetchBundle,
    Hello,
    HelloOk,
    KeyChanged,
    Login,
    LoginOk,
    Message,
    Ping,
    Pong,
    Presence,
    PresenceChanged,
    PublishKeys,
    Reply,
    Request,
    Send,
    SendDevices,
    Who,
    WhoOk,
)
from hushwire.common.names import is_valid_username
from hushwire.relay.addresses import address_prefix
from hushwire.relay.bus import REPLACED, Bus, LocalBus, RelayEvents
from hushwire.relay.config import RelayConfig
from hushwire.relay.device_handlers import DeviceHandlers
from hushwire.relay.devices import principal, split_principal
from hushwire.relay.errors import StoreError
from hushwire.relay.key_handlers import KeyHandlers
from hushwire.relay.metrics import RelayCounters
from hushwire.relay.ratelimit import RateLimiter
from hushwire.relay.sending import SendHandlers
from hushwire.relay.shared_limits import Spending
from hushwire.relay.store import Store
from hushwire.relay.tokens import DUMMY, verify_token

log = logging.getLogger("hushwire.relay")

RELAY_NAME = "hushwire-relay/0.1"
# `who` pages: a presence entry is at most 48 bytes of msgpack (a 32-character name), so
# a page sized from max_frame always fits one frame, however many users there are.
PRESENCE_WIRE_MAX = 48
WHO_OVERHEAD = 128
WHO_PAGE_MAX = 1000
# Ids per `ack`: a client has at most delivery_window envelopes unacked per connection;
# 7,000 ids in one frame (x 256 pipelined) was a way to hold the db writer.
MAX_ACK_IDS = 1024


# How a request taken without a task is answered: its reply, or the error to send.
Answer = Callable[[Message | BaseException], None]


class Peer(Protocol):
    """What the relay needs from a connection. `user` is the logged-in principal (the
    store's name for one device, relay/devices.py), `account` and `device` say whose
    and which."""

    peer_address: str
    cert_name: str | None
    user: str | None
    account: str | None
    device: int
    token_hash: bytes | None
    wants_presence: bool
    version: int  # the protocol version agreed in `hello` (0 before)

    def push(self, message: Message) -> None: ...
    def offer_early(self, delivery: Deliver) -> bool: ...
    def unhold(self, mid: int) -> None: ...
    def offer(self, delivery: Deliver) -> None: ...
    def acked(self, mids: Iterable[int]) -> None: ...
    def wake(self) -> None: ...
    def kick(self, code: ErrorCode, message: str) -> None: ...
    def hold_handshake(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """The DH group this relay's users share, as announced in `hello`."""

    name: str
    public_size: int  # encoded length of a public value, to reject junk uploads
    params_pem: str | None = None


class Relay:
    def __init__(
        self, config: RelayConfig, store: Store, group: GroupInfo, bus: Bus | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.group = group
        self.online: dict[str, Peer] = {}  # by principal: one live session per device
        # What other relays are told (bus.py); `events` is what their messages do here.
        self.bus: Bus = bus or LocalBus()
        self.events = RelayEvents(self)
        # Where a committed send goes: live to the recipients online here, or (a shared
        # store) a wake-up, through the bus, of their connections wherever they are.
        self.delivery = (self.online, self.bus if store.shared else None)
        self._sessions: dict[str, set[Peer]] = {}  # account -> its devices online
        self.counters = RelayCounters()
        # Failed logins per (user, address prefix): see _login.
        self._login_failures = RateLimiter(config.login_limit)
        # Who each online user may see come and go (see _announce).
        self._contacts: dict[str, set[str]] = {}
        # Every request type after login has a per-user limit: send, fetch_bundle and
        # publish_keys their own (in their handlers), the rest in check_rate.
        self._acks = RateLimiter(config.ack_limit)
        self._requests = RateLimiter(config.request_limit)
        self._who_page = max(
            1, min(WHO_PAGE_MAX, (config.max_frame - WHO_OVERHEAD) // PRESENCE_WIRE_MAX)
        )
        self._dispatch: dict[type[Request], Callable[[Peer, Request, float], Awaitable[Reply]]] = {
            Hello: self._hello,  # type: ignore[dict-item]
            Login: self._login,  # type: ignore[dict-item]
            Ack: self._ack,  # type: ignore[dict-item]
            Who: self._who,  # type: ignore[dict-item]
            Ping: self._ping,  # type: ignore[dict-item]
        }
        self.keys = KeyHandlers(self)
        self._dispatch.update(self.keys.dispatch)
        self.devices = DeviceHandlers(self)
        self._dispatch.update(self.devices.dispatch)
        self.sends = SendHandlers(self)
        self._dispatch.update(self.sends.dispatch)
        # The per-user limits other relays report spending against (shared_limits.py).
        self._shared = {"send": self.sends.limiter, "fetch": self.keys.fetches}

    async def handle(self, peer: Peer, request: Request, now: float) -> Reply:
        """Answer one request (the connection has already checked the state table)."""
        return await self._dispatch[type(request)](peer, request, now)

    def check_rate(self, peer: Peer, request: Request, now: float) -> None:
        """Before a logged-in request is taken: raise RequestError if it is over its
        user's limit (send, fetch_bundle and publish_keys are limited in their handlers,
        which know their cost)."""
        kind = type(request)
        if kind is Send or kind is SendDevices or kind is FetchBundle or kind is PublishKeys:
            return
        user = self.user_of(peer)
        if kind is Ack:
            ids = len(request.mids)  # type: ignore[attr-defined]
            if ids > MAX_ACK_IDS:
                raise RequestError(ErrorCode.BAD_REQUEST, f"at most {MAX_ACK_IDS} ids per ack")
            self.limit(self._acks, "ack", user, now, "acked ids", cost=ids)
        else:
            self.limit(self._requests, request.TYPE, (user, kind), now, f"{request.TYPE} requests")

    def disconnected(self, peer: Peer) -> None:
        user = peer.user
        if user is not None and self.online.get(user) is peer:
            del self.online[user]
            self.events.ended(user)
            self.devices.disconnected(peer)
            account = peer.account or user
            live = self._sessions.get(account)
            if live is not None:
                live.discard(peer)
                if not live:
                    del self._sessions[account]
                    self._announce(account, online=False)
                    self._contacts.pop(account, None)

    # --- handshake ---------------------------------------------------------------

    async def _hello(self, peer: Peer, req: Hello, now: float) -> HelloOk:
        # The newest version both speak; version 1 only while the operator serves it.
        served = tuple(v for v in SUPPORTED_VERSIONS if v >= self.config.min_protocol)
        common = set(req.versions) & set(served)
        if not common:
            raise RequestError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"this relay speaks protocol version(s) {list(served)}",
                versions=served,
            )
        peer.version = max(common)
        return HelloOk(
            id=req.id,
            version=peer.version,
            relay=RELAY_NAME,
            group=self.group.name,
            group_params=self.group.params_pem,
            max_frame=self.config.max_frame,
            idle_timeout=self.config.idle_timeout,
            features=RELAY_FEATURES if peer.version >= 2 else (),
        )

    def check_login_rate(self, peer: Peer, user: str, now: float) -> tuple[str, str]:
        """RATE_LIMITED while (user, address prefix) is over its failed-login budget;
        the limiter key. Link attempts count under the user name ''."""
        key = (user, address_prefix(peer.peer_address))
        wait = self._login_failures.retry_after(key, now)
        logins = self.counters.logins
        if wait:
            logins["rate_limited"] += 1
            self.counters.rate_limited["login"] += 1
            raise RequestError(
                ErrorCode.RATE_LIMITED,
                f"too many failed logins; retry in {math.ceil(wait)} s",
                retry_after=wait,
            )
        return key

    async def failed_login(self, peer: Peer, user: str, now: float) -> None:
        """Charge a failed login (or link attempt, user '') to (user, address prefix),
        here and in the deployment's shared counter (bus.py), before the refusal goes
        out: the next guess, on any relay, already counts it."""
        key = (user, address_prefix(peer.peer_address))
        self._login_failures.consume(key, now)
        await self.bus.spend(self._shared_key(key), self._shared_window())

    async def check_shared_login_rate(self, peer: Peer, user: str) -> None:
        """RATE_LIMITED while (user, address prefix) used its failed-login budget on the
        relays of the deployment together: guesses spread over N relays get one budget,
        not N. (One relay: its own limiter is the whole budget; nothing to ask.)"""
        key = self._shared_key((user, address_prefix(peer.peer_address)))
        spent, wait = await self.bus.spent(key)
        if spent >= self.config.login_failures:
            self.counters.logins["rate_limited"] += 1
            self.counters.rate_limited["login"] += 1
            raise RequestError(
                ErrorCode.RATE_LIMITED,
                f"too many failed logins; retry in {math.ceil(wait)} s",
                retry_after=wait,
            )

    @staticmethod
    def _shared_key(key: tuple[str, str]) -> str:
        return f"login:{key[0]}:{key[1]}"

    def _shared_window(self) -> float:
        """A fixed window with the token bucket's long-run rate: `login_failures` per
        `login_failures` x `login_failure_period` seconds."""
        return self.config.login_failures * self.config.login_failure_period

    async def _login(self, peer: Peer, req: Login, now: float) -> LoginOk:
        logins = self.counters.logins
        if not is_valid_username(req.user):
            # A name that cannot exist costs nothing: no lookup, no hash, no limiter entry
            # (a key per arbitrary 64 KB string was a memory leak), and it is not echoed.
            logins["auth_failed"] += 1
            log.info(
                "failed login (invalid user name) from %s",
                peer.peer_address,
                extra={"event": "login_failed", "peer": peer.peer_address},
            )
            raise RequestError(ErrorCode.AUTH_FAILED, "unknown user or wrong token")
        # Failures count per (user, address prefix): guesses from one network lock out
        # only that network's attempts for that user, never the user's own logins from
        # elsewhere. Tokens are 256 random bits; the limit bounds work, not guessing odds.
        self.check_login_rate(peer, req.user, now)
        await self.check_shared_login_rate(peer, req.user)
        device = 1 if req.device is None else req.device
        name = principal(req.user, device)
        record = await self.store.get_user(name) if device > 0 else None
        # Hash even for an unknown user, so timing does not reveal which names exist.
        salt, expected = (record.token_salt, record.token_hash) if record else DUMMY
        if not verify_token(req.token, salt, expected) or record is None:
            await self.failed_login(peer, req.user, now)
            logins["auth_failed"] += 1
            log.info(
                "failed login for %s from %s",
                req.user,
                peer.peer_address,
                extra={"event": "login_failed", "user": req.user, "peer": peer.peer_address},
            )
            raise RequestError(ErrorCode.AUTH_FAILED, "unknown user or wrong token")
        self._login_failures.forget((req.user, address_prefix(peer.peer_address)))
        if record.disabled:
            logins["user_disabled"] += 1
            raise RequestError(ErrorCode.USER_DISABLED, f"user {req.user} is disabled")
        if self.config.client_ca is not None and peer.cert_name != req.user:
            # Mutual TLS: a token alone is not enough; it must come with that user's cert.
            logins["wrong_certificate"] += 1
            raise RequestError(
                ErrorCode.AUTH_FAILED, f"the client certificate is not for user {req.user}"
            )
        if req.sign_key is not None:
            await self.keys.check_login_identity(req.user, req.sign_key)
        contacts = await self.store.contacts(req.user)
        if not await self.bus.claim(name):
            raise RequestError(ErrorCode.SESSION_REPLACED, REPLACED)
        previous = self.online.get(name)
        if previous is not None and previous is not peer:
            # One live session per device: the newest login wins, as a reconnecting client
            # must not be locked out by its own half-dead earlier connection.
            previous.kick(ErrorCode.SESSION_REPLACED, REPLACED)
        first = not self._sessions.get(req.user)
        peer.user, peer.account, peer.device = name, req.user, device
        peer.token_hash = record.token_hash
        self.online[name] = peer
        self._sessions.setdefault(req.user, set()).add(peer)
        self._contacts[req.user] = contacts
        await self.store.record_login(name, now=int(now))
        has_identity, left = await self.store.key_status(name)
        key_version, kem_left = await self.store.kem_status(name)
        # Key changes that happened while this user was offline: tell them now (again at
        # every login until they fetch the new bundle).
        for target, identity in await self.store.changed_identities(name):
            peer.push(KeyChanged(user=split_principal(target)[0], identity=identity))
        logins["ok"] += 1
        log.info(
            "login %s device %d from %s",
            req.user,
            device,
            peer.peer_address,
            extra={"event": "login", "user": req.user, "device": device, "peer": peer.peer_address},
        )
        if first:
            self._announce(req.user, online=True)
        return LoginOk(
            id=req.id,
            user=req.user,
            prekeys_left=left,
            has_identity=has_identity,
            kem_prekeys_left=kem_left,
            key_version=key_version,
        )

    # --- mailbox -----------------------------------------------------------------

    def send_nowait(self, peer: Peer, req: Send, now: float, reply: Answer) -> bool:
        """`send` without a task (relay/sending.py); False: await `handle()` instead."""
        return self.sends.send_nowait(peer, req, now, reply)

    def ack_nowait(self, peer: Peer, req: Ack, reply: Answer) -> bool:
        """`ack` without a task: `reply` is called now if every row was elided, else once
        the deletes commit. False means "not now": await `handle()` instead.
        """
        user = self.user_of(peer)
        deleted = self.store.ack_nowait(user, req.mids)
        if deleted is None:
            return False
        counters = self.counters
        if isinstance(deleted, int):
            counters.acks += deleted
            peer.acked(req.mids)
            reply(AckOk(id=req.id, deleted=deleted))
            return True

        def done(f: asyncio.Future[int]) -> None:
            if f.cancelled():
                reply(StoreError("the store was closed"))
            elif (exc := f.exception()) is not None:
                reply(exc)
            else:
                counters.acks += f.result()
                peer.acked(req.mids)
                reply(AckOk(id=req.id, deleted=f.result()))

        deleted.add_done_callback(done)
        return True

    async def _ack(self, peer: Peer, req: Ack, now: float) -> AckOk:
        user = self.user_of(peer)
        deleted = await self.store.ack(user, req.mids)
        self.counters.acks += deleted
        peer.acked(req.mids)
        return AckOk(id=req.id, deleted=deleted)

    # --- presence ----------------------------------------------------------------

    async def _who(self, peer: Peer, req: Who, now: float) -> WhoOk:
        self.user_of(peer)
        peer.wants_presence = True
        users = await self.store.page_users(req.after, self._who_page + 1)
        page = users[: self._who_page]
        me = peer.account or self.user_of(peer)
        visible = self._contacts.get(me, set())
        return WhoOk(
            id=req.id,
            users=tuple(
                Presence(
                    user=name,
                    online=(name in visible or name == me) and self.is_online(name),
                )
                for name in page
            ),
            next=page[-1] if len(users) > len(page) else None,
        )

    async def _ping(self, peer: Peer, req: Ping, now: float) -> Pong:
        return Pong(id=req.id)

    def _announce(self, user: str, *, online: bool) -> None:
        """Presence goes only to the user's contacts (users in a session relation: one
        fetched the other's bundle) that asked `who`: nobody else learns when someone
        logs in or out, and a login costs O(contacts), not O(online)."""
        push = PresenceChanged(user=user, online=online)
        for name in self._contacts.get(user, ()):
            for other in self._sessions.get(name, ()):
                if other.wants_presence:
                    other.push(push)
        self.bus.presence(user, online=online)

    def tell_contacts(self, push: PresenceChanged) -> None:
        """Presence of an account on another relay, to the contacts of it online here."""
        for me, contacts in self._contacts.items():
            if push.user in contacts:
                for peer in self._sessions.get(me, ()):
                    if peer.wants_presence:
                        peer.push(push)

    def is_local(self, account: str) -> bool:
        return account in self._sessions

    def is_online(self, account: str) -> bool:
        """Online here or on another relay of the deployment."""
        return account in self._sessions or self.events.remote_online(account)

    def online_accounts(self) -> list[str]:
        return list(self._sessions)

    def sessions_of(self, account: str) -> Iterable[Peer]:
        return tuple(self._sessions.get(account, ()))

    def met(self, user: str, target: str) -> None:
        """`user` fetched `target`'s bundle: from now on each sees the other's presence."""
        for me, other in ((user, target), (target, user)):
            contacts = self._contacts.get(me)
            if contacts is None or other in contacts:
                continue
            contacts.add(other)
            if self.is_online(other):
                for peer in self._sessions.get(me, ()):
                    if peer.wants_presence:
                        peer.push(PresenceChanged(user=other, online=True))

    # --- admin changes made while running ------------------------------------------

    async def enforce_accounts(self) -> int:
        """Drop sessions of users disabled, removed or re-tokened since they logged in."""
        if not self.online:
            return 0
        records = {u.name: u for u in await self.store.list_principals()}
        dropped = 0
        for name, peer in list(self.online.items()):
            record = records.get(name)
            if record is None:
                reason = "account removed"
            elif record.disabled:
                reason = "account disabled"
            elif peer.token_hash is not None and record.token_hash != peer.token_hash:
                reason = "token reset"
            else:
                continue
            code = ErrorCode.USER_DISABLED if record and record.disabled else ErrorCode.AUTH_FAILED
            log.info("disconnecting %s: %s", name, reason, extra={"event": "kicked", "user": name})
            peer.kick(code, reason)
            self.disconnected(peer)
            dropped += 1
        return dropped

    # --- helpers -------------------------------------------------------------------

    @staticmethod
    def user_of(peer: Peer) -> str:
        if peer.user is None:  # the state table makes this unreachable; keep it typed
            raise RequestError(ErrorCode.OUT_OF_ORDER, "log in first")
        return peer.user

    @staticmethod
    def account_of(peer: Peer) -> tuple[str, int]:
        """(account, device) of a logged-in connection."""
        if peer.account is None:
            raise RequestError(ErrorCode.OUT_OF_ORDER, "log in first")
        return peer.account, peer.device

    def charge(self, spent: Spending, now: float) -> None:
        """Spending another relay reported: its users' costs taken from the same limits
        here, so the relays together hold each user to about one budget. A malformed
        report raises TypeError or ValueError and charges nothing."""
        if not isinstance(spent, dict):
            raise TypeError("a spending report is a map")
        charges = []
        for kind, costs in spent.items():
            limiter = self._shared.get(kind)
            if limiter is None:
                continue  # a limit a newer relay shares and this one does not
            if not isinstance(costs, dict):
                raise TypeError(f"a bad {kind} spending report")
            for user, cost in costs.items():
                if not isinstance(user, str) or not math.isfinite(cost) or cost <= 0:
                    raise ValueError(f"a bad {kind} spending report")
                charges.append((limiter, user, cost))
        for limiter, user, cost in charges:
            limiter.charge(user, now, cost)

    def limit(
        self,
        limiter: RateLimiter,
        kind: str,
        key: object,
        now: float,
        what: str,
        *,
        cost: float = 1.0,
    ) -> None:
        if cost > limiter.rate.burst:
            self.counters.rate_limited[kind] += 1
            raise RequestError(ErrorCode.RATE_LIMITED, f"too many {what} in one request")
        wait = limiter.consume(key, now, cost)
        if wait:
            self.counters.rate_limited[kind] += 1
            raise RequestError(
                ErrorCode.RATE_LIMITED,
                f"too many {what}; retry in {wait:.1f} s",
                retry_after=wait,
            )
