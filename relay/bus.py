"""What one relay tells the others, behind one interface: `LocalBus` for a single relay
(everything stays in the process, no Redis) and `RedisBus` (bus_redis.py) for several
relays sharing one PostgreSQL store.

The database stays the only source of truth: a bus message only wakes a connection
(which then reads its mailbox), pushes a notice, or closes a session. A lost message
delays a delivery, never loses it: after a reconnect to Redis, or a gap in another
relay's numbered messages, every relay re-reads the mailbox of each device connected
to it (`RelayEvents.resync`).

`RelayEvents` is the relay's side: what a message does here, whichever relay sent it.
Each bus applies its messages here first, then (Redis) tells the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from hushwire.common.errors import ErrorCode
from hushwire.common.messages import PresenceChanged, Push
from hushwire.relay.config import ConfigError
from hushwire.relay.links import SharedLink, link_failed
from hushwire.relay.shared_limits import Spending, SpendLog

if TYPE_CHECKING:
    from hushwire.relay.handlers import Peer, Relay

log = logging.getLogger("hushwire.relay.bus")

# Seconds after which a relay that sent no presence heartbeat counts as gone (its users
# as offline): three missed heartbeats (bus_redis.HEARTBEAT).
PRESENCE_TTL = 15.0
REPLACED = "logged in from another connection"


class Bus(Protocol):
    """What the relay tells every relay, itself included."""

    # Where the relay notes what its users spent of the limits shared across relays
    # (shared_limits.py); None when there is no other relay to tell.
    spending: SpendLog | None

    async def start(self, events: RelayEvents) -> None: ...
    def envelopes(self, principals: Sequence[str]) -> None:
        """Committed envelopes wait for these devices: wake their connections."""
        ...

    def push(
        self, message: Push, *, principals: Sequence[str] = (), accounts: Sequence[str] = ()
    ) -> None:
        """Push `message` to these devices and to every device of these accounts."""
        ...

    def kick(self, principals: Sequence[str], code: ErrorCode, reason: str) -> None: ...
    async def claim(self, principal: str) -> bool:
        """A login of `principal` here: False if a newer login elsewhere already won.
        Other relays close their session of it (`session_replaced`)."""
        ...

    def presence(self, account: str, *, online: bool) -> None:
        """The account's first device came online here, or its last one left."""
        ...

    async def spend(self, key: str, window: float) -> None:
        """Count one more against the deployment's shared counter `key`, which starts
        at the first count and lasts `window` seconds."""
        ...

    async def spent(self, key: str) -> tuple[int, float]:
        """(count of the shared counter `key`, seconds until it resets)."""
        ...

    async def link_open(self, link: SharedLink, ttl: float) -> None:
        """A link channel opened here: other relays may find it for `ttl` seconds."""
        ...

    def link_closed(self, channel: bytes) -> None:
        """A link channel opened here is gone (used, replaced, expired)."""
        ...

    async def link_find(self, channel: bytes) -> SharedLink | None:
        """The link channel open on another relay, or None."""
        ...

    async def link_join(
        self, link: SharedLink, ephemeral: bytes, sealed: bytes
    ) -> tuple[int, str, bytes]:
        """Join `link` on its relay; (device, token, sealed grant) once its old device
        accepts, else link_failed (refused there). The caller bounds the wait."""
        ...

    async def close(self) -> None: ...


class LocalBus:
    """One relay: every message goes straight to its own `RelayEvents`."""

    def __init__(self) -> None:
        self.events: RelayEvents | None = None
        self.spending: SpendLog | None = None  # the relay's own limits are the whole budget

    @property
    def _events(self) -> RelayEvents:
        if self.events is None:
            raise RuntimeError("the bus has not started")
        return self.events

    async def start(self, events: RelayEvents) -> None:
        self.events = events

    def envelopes(self, principals: Sequence[str]) -> None:
        self._events.woken(principals)

    def push(
        self, message: Push, *, principals: Sequence[str] = (), accounts: Sequence[str] = ()
    ) -> None:
        self._events.pushed(message, principals, accounts)

    def kick(self, principals: Sequence[str], code: ErrorCode, reason: str) -> None:
        self._events.kicked(principals, code, reason)

    async def claim(self, principal: str) -> bool:
        return True  # one relay: the login itself replaces an earlier session

    def presence(self, account: str, *, online: bool) -> None:
        """Nothing to tell: the relay announced it to its own sessions."""

    async def spend(self, key: str, window: float) -> None:
        """Nothing to share: the relay's own limiters hold the whole budget."""

    async def spent(self, key: str) -> tuple[int, float]:
        return 0, 0.0

    async def link_open(self, link: SharedLink, ttl: float) -> None:
        """Nothing to tell: every link channel is on this relay."""

    def link_closed(self, channel: bytes) -> None:
        """Nothing to tell: every link channel is on this relay."""

    async def link_find(self, channel: bytes) -> SharedLink | None:
        return None  # one relay: a channel not open here is open nowhere

    async def link_join(
        self, link: SharedLink, ephemeral: bytes, sealed: bytes
    ) -> tuple[int, str, bytes]:
        raise link_failed()  # never reached: link_find found nothing to join

    async def close(self) -> None:
        self.events = None


class RelayEvents:
    """What a bus message does on this relay."""

    def __init__(
        self,
        relay: Relay,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.relay = relay
        self._clock = clock
        self._now = now  # the wall clock the relay's rate limits run on
        self._mine: dict[str, int] = {}  # principal -> claim of its session here
        self._newest: dict[str, int] = {}  # principal -> newest claim seen anywhere
        # Accounts online on other relays: origin -> (accounts, when last heard).
        self._remote: dict[str, tuple[set[str], float]] = {}

    def woken(self, principals: Iterable[str]) -> None:
        online = self.relay.online
        for name in principals:
            peer = online.get(name)
            if peer is not None:
                peer.wake()

    def pushed(self, message: Push, principals: Iterable[str], accounts: Iterable[str]) -> None:
        online = self.relay.online
        targets: dict[int, Peer] = {}
        for name in principals:
            peer = online.get(name)
            if peer is not None:
                targets[id(peer)] = peer
        for account in accounts:
            for peer in self.relay.sessions_of(account):
                targets[id(peer)] = peer
        for peer in targets.values():
            peer.push(message)

    def kicked(self, principals: Iterable[str], code: ErrorCode, reason: str) -> None:
        for name in principals:
            peer = self.relay.online.get(name)
            if peer is not None:
                log.info("disconnecting %s: %s", name, reason, extra={"event": "kicked"})
                peer.kick(code, reason)
                self.relay.disconnected(peer)

    def charged(self, spent: Spending) -> None:
        """Another relay's users spent this of the shared limits: charge it here too."""
        self.relay.charge(spent, self._now())

    def resync(self) -> None:
        """Bus messages may have been lost: every connected device reads its mailbox."""
        for peer in list(self.relay.online.values()):
            peer.wake()

    async def link_joined(
        self, channel: bytes, ephemeral: bytes, sealed: bytes
    ) -> tuple[int, str, bytes]:
        """A new device on another relay joins a link channel open here."""
        return await self.relay.devices.joined(channel, ephemeral, sealed, now=self._now())

    # --- one session per device across relays ---------------------------------------

    def mine(self, principal: str, claim: int) -> bool:
        """Our login of `principal` drew `claim`; False if a newer one already won."""
        self._mine[principal] = claim
        return claim >= self._newest.get(principal, 0)

    def claimed(self, principal: str, claim: int) -> None:
        """Another relay logged `principal` in: the newest login wins."""
        if claim > self._newest.get(principal, 0):
            self._newest[principal] = claim
        peer = self.relay.online.get(principal)
        if peer is not None and self._mine.get(principal, 0) < claim:
            self.kicked(
                [principal], ErrorCode.SESSION_REPLACED, "logged in from another connection"
            )

    def ended(self, principal: str) -> None:
        self._mine.pop(principal, None)
        self._newest.pop(principal, None)

    # --- presence of accounts online on other relays ----------------------------------

    def remote_online(self, account: str) -> bool:
        return any(account in accounts for accounts, _ in self._remote.values())

    def local_accounts(self) -> list[str]:
        return self.relay.online_accounts()

    def presence(self, origin: str, accounts: Iterable[str], *, online: bool | None) -> None:
        """`online` True/False: these accounts came or went on `origin`; None: `accounts`
        is everything online there (a heartbeat)."""
        before = {a for a in self._touched(origin, accounts) if self._visible(a)}
        held, _ = self._remote.get(origin, (set(), 0.0))
        if online is None:
            held = set(accounts)
        elif online:
            held |= set(accounts)
        else:
            held -= set(accounts)
        self._remote[origin] = (held, self._clock())
        self._announce_changes(origin, before, accounts)

    def expire(self) -> None:
        """Relays silent for PRESENCE_TTL are gone: their accounts go offline."""
        now = self._clock()
        for origin, (_, seen) in list(self._remote.items()):
            if now - seen > PRESENCE_TTL:
                self.presence(origin, (), online=None)
                del self._remote[origin]

    def _touched(self, origin: str, accounts: Iterable[str]) -> set[str]:
        return set(accounts) | self._remote.get(origin, (set(), 0.0))[0]

    def _visible(self, account: str) -> bool:
        return self.relay.is_local(account) or self.remote_online(account)

    def _announce_changes(self, origin: str, before: set[str], accounts: Iterable[str]) -> None:
        touched = set(accounts) | before | self._remote[origin][0]
        for account in touched:
            now_online = self._visible(account)
            if now_online != (account in before):
                self.relay.tell_contacts(PresenceChanged(user=account, online=now_online))


def open_bus(url: str | None) -> Bus:
    """The bus a relay runs with: Redis for a URL (redis-py imported only then), else
    the in-process one."""
    if url is None:
        return LocalBus()
    try:
        from hushwire.relay.bus_redis import RedisBus
    except ImportError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "redis":
            raise  # our own import error is a bug, not a missing extra
        raise ConfigError(f"bus needs redis-py (pip install 'hushwire[cluster]'): {exc}") from None
    return RedisBus(url)
