"""The connected client: login, the connect/reconnect loop, and the API the TUI and the
CLI are built on. No UI here. Its parts: client/inbox.py (pushes, sync), client/outbox.py
(sending, queueing, held messages), client/keys.py (prekey upkeep), client/events.py
(events and results), client/settings.py (relay settings, backoff).

    client = await HushwireClient.open(profile_dir, passphrase)
    await client.start()                 # connect + log in; background loops from here on
    result = await client.send("bob", "hi")
    event = await client.events.get()    # MessageReceived, KeyChanged, ConnectionState, ...
    await client.close()

`start()` connects once and raises on failure (CLI); `start(wait=False)` returns at once
and keeps retrying in the background (TUI). After a lost connection the client
reconnects with capped exponential backoff with jitter (from `secrets`), logs in again,
resends what the relay never confirmed, and the relay redelivers what we never acked.
Time comes from the injected `clock`; background tasks are owned and cancelled by
`close()`, which is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, NamedTuple

from hushwire.client.connection import RelayConnection, TlsSettings
from hushwire.client.devices import DeviceInfo, DeviceLists
from hushwire.client.errors import (
    CertificateMismatch,
    ConnectionClosed,
    ProfileMismatch,
    ProfileMissing,
)
from hushwire.client.events import (
    ClientEvent,
    ConnectionState,
    ContactInfo,
    GroupInfo,
    GroupLineItem,
    GroupMessageReceived,
    GroupNotice,
    HistoryItem,
    KeyChanged,
    MessageQuarantined,
    MessageReceived,
    MessageRejected,
    MessageSent,
    MessagesReleased,
    Notice,
    Presence,
    SendResult,
    SentElsewhere,
    SessionRestarted,
    history_item,
)
from hushwire.client.failover import first_reachable
from hushwire.client.fanout import HeldLists
from hushwire.client.group_inbox import GroupInbox
from hushwire.client.groups import Groups
from hushwire.client.inbox import Inbox
from hushwire.client.keys import KeyUpkeep
from hushwire.client.outbox import Outbox
from hushwire.client.prekeys import load_or_create_identity
from hushwire.client.session import SessionManager
from hushwire.client.settings import (
    Address,
    Backoff,
    RelaySettings,
    format_address,
    parse_relays,
)
from hushwire.client.store import KdfParams, ProfileStore
from hushwire.common import messages as wire
from hushwire.common.crypto.devices import Device
from hushwire.common.crypto.dh import DHGroup, group_by_name
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.crypto.link import LinkCode, LinkJoiner, LinkOffer
from hushwire.common.errors import ErrorCode, LinkError, RequestError
from hushwire.common.frames import DEFAULT_MAX_FRAME
from hushwire.common.names import check_username, is_valid_username

# The events, results and settings live in their own modules; the UIs import them here.
__all__ = [
    "Backoff",
    "ClientEvent",
    "ConnectionState",
    "ContactInfo",
    "GroupInfo",
    "GroupLineItem",
    "GroupMessageReceived",
    "GroupNotice",
    "HistoryItem",
    "HushwireClient",
    "KeyChanged",
    "MessageQuarantined",
    "MessageReceived",
    "MessageRejected",
    "MessageSent",
    "MessagesReleased",
    "Notice",
    "Presence",
    "RelaySettings",
    "SendResult",
    "SentElsewhere",
    "SessionRestarted",
    "parse_relays",
    "relay_error_text",
    "restart_text",
]

log = logging.getLogger("hushwire.client")

# The relay closed us on purpose and retrying cannot help until a person acts.
FATAL_CODES: Final = frozenset(
    {
        "auth_failed",
        "user_disabled",
        "session_replaced",
        "unsupported_version",
        "account_has_devices",  # another profile holds the account now: retrying cannot help
    }
)
HISTORY_DEFAULT: Final = 200
LAST_RELAY: Final = "relay_last"  # profile setting: the address that last worked
MAX_WHO_PAGES: Final = 1000  # a relay that never ends its `who` pages is not followed


async def _load_group(store: ProfileStore) -> DHGroup:
    name = await store.get_setting("group")
    if name is None:
        raise ProfileMissing("the profile has never logged in; run `hushwire login` first")
    return group_by_name(name, await store.get_setting("group_params"))


class HushwireClient:
    """One profile, connected (or reconnecting) to its relay."""

    def __init__(
        self,
        store: ProfileStore,
        settings: RelaySettings,
        sessions: SessionManager,
        *,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.sessions = sessions
        self.events: asyncio.Queue[ClientEvent] = asyncio.Queue()
        self.state = "disconnected"
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._conn: RelayConnection | None = None
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._online: dict[str, bool] = {}
        self._max_frame = DEFAULT_MAX_FRAME
        self._closing = False
        self._closed = False
        self._current = 0  # index in settings.addresses of the relay that last worked
        self._state_changed = asyncio.Event()
        self._failing_over = False  # a drop is being answered by trying the next relay
        self.fingerprint_learned = False  # set by login(): the pin was learned just now
        emit = self.events.put_nowait
        self._keys = KeyUpkeep(sessions, lambda text: emit(Notice(text)))
        self._devices = DeviceLists(
            store,
            sessions.lists,
            settings.user,
            settings.device,
            sessions.identity,
            sessions.group,
            lambda text: emit(Notice(text)),
            clock,
        )
        self._outbox = Outbox(
            sessions,
            emit,
            lambda: self._conn,
            lambda: self._max_frame,
            settings.relays,
            self._devices,
        )
        self.groups = Groups(sessions, self._devices, emit, self._require_conn)
        self._group_inbox = GroupInbox(sessions, self.groups.store)
        self._inbox = Inbox(
            sessions,
            self._keys,
            emit,
            self._online,
            self._outbox.restart,
            self._devices,
            self._group_inbox,
        )

    @property
    def user(self) -> str:
        return self.settings.user

    @property
    def relay(self) -> str:
        """The relay this client is (or was last) connected to."""
        return format_address(self.settings.addresses[self._current])

    @property
    def relays(self) -> str:
        """Every relay of the profile, as `login --relay` takes them."""
        return self.settings.relays

    # --- opening --------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        profile_dir: Path,
        passphrase: str,
        *,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
    ) -> HushwireClient:
        """Unlock an existing profile (ProfileMissing, ProfileLocked, WrongPassphrase...)."""
        store = await ProfileStore.open(profile_dir, passphrase)
        try:
            record = await store.get_setting("relay")
            if record is None:
                raise ProfileMissing(
                    f"the profile in {profile_dir} has no relay yet; run `hushwire login`"
                )
            settings = RelaySettings.from_record(record)
            group = await _load_group(store)
            identity = await load_or_create_identity(store, group, int(clock() * 1000))
            client = cls(
                store,
                settings,
                SessionManager(
                    store, settings.user, identity, group, device=settings.device, clock=clock
                ),
                clock=clock,
                backoff=backoff,
            )
            client._max_frame = await store.get_setting("max_frame") or DEFAULT_MAX_FRAME
            last = await store.get_setting(LAST_RELAY)
            names = [format_address(a) for a in settings.addresses]
            client._current = names.index(last) if last in names else 0
        except BaseException:
            await store.close()
            raise
        return client

    @classmethod
    async def login(
        cls,
        profile_dir: Path,
        passphrase: str,
        settings: RelaySettings,
        *,
        fingerprint: str | None = None,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        kdf: KdfParams | None = None,
        replace_identity: bool = False,
    ) -> HushwireClient:
        """Create or update a profile, connect, pin the relay, log in, publish keys.

        A profile whose identity is not the account's is refused by the relay
        (`account_has_devices`, raised here): a second machine links instead. With
        `replace_identity` this profile's identity replaces the account's and its other
        devices are unlinked (a reinstall); contacts see a key change.

        Pinning: with a CA file the certificate is validated instead; with `fingerprint`
        exactly that one is accepted; else a pin stored for a list sharing an address is kept;
        else the presented certificate is pinned (trust on first use). Returns a started
        client; its `fingerprint_learned` says whether the pin was learned just now.
        """
        settings = RelaySettings(**{**settings.to_record(), "user": check_username(settings.user)})
        fresh = not ProfileStore.exists(profile_dir)
        store = await ProfileStore.open(profile_dir, passphrase, create=True, kdf=kdf)
        conn: RelayConnection | None = None
        try:
            old_record = await store.get_setting("relay")
            old = RelaySettings.from_record(old_record) if old_record else None
            if old is not None and old.user != settings.user and await store.load_identity():
                raise ProfileMismatch(
                    f"this profile belongs to {old.user}; use another --profile for {settings.user}"
                )
            pin = None
            if settings.ca_file is None:
                if fingerprint is not None:
                    pin = fingerprint.strip().upper()
                elif old is not None and set(old.addresses) & set(settings.addresses):
                    pin = old.pin  # the same deployment: its pin holds for every address
            tls = dataclasses.replace(settings.tls(), pin=pin)
            user, token = settings.user, settings.token

            async def attempt(address: Address) -> _FirstLogin:
                conn, hello = await _said_hello(await RelayConnection.connect(*address, tls))
                try:
                    group = group_by_name(hello.group, hello.group_params)
                    stored_group = await store.get_setting("group")
                    if stored_group is not None and stored_group != group.name:
                        raise ProfileMismatch(
                            f"the relay now uses DH group {group.name}, this profile's keys "
                            f"are {stored_group}; a new profile is needed"
                        )
                    identity = await load_or_create_identity(store, group, int(clock() * 1000))
                    # Naming our identity lets the relay refuse a second profile on a copied
                    # token before its login replaces the live device (unless we start over).
                    sign_key = None if replace_identity else identity.sign_key
                    ok = await conn.request(wire.Login, user=user, token=token, sign_key=sign_key)
                except BaseException:
                    await conn.close()
                    raise
                return _FirstLogin(conn, hello, group, identity, ok)

            current, first = await first_reachable(settings.addresses, 0, attempt)
            conn, hello, group, identity, ok = first
            settings = RelaySettings(
                **{**settings.to_record(), "pin": None if settings.ca_file else conn.fingerprint}
            )
            async with store.transaction():
                await store.set_setting("relay", settings.to_record())
                await store.set_setting(LAST_RELAY, format_address(settings.addresses[current]))
                await store.set_setting("group", group.name)
                await store.set_setting("group_params", hello.group_params)
            client = cls(
                store,
                settings,
                SessionManager(
                    store, settings.user, identity, group, device=settings.device, clock=clock
                ),
                clock=clock,
                backoff=backoff,
            )
            client.fingerprint_learned = pin is None and settings.ca_file is None
            client._current = current
            client._keys.replace_identity = replace_identity
            await client._begin(conn, ok)
        except BaseException:
            if conn is not None:
                await conn.close()
            await store.close()
            if fresh:
                _remove_profile_files(Path(profile_dir))
            raise
        return client

    @classmethod
    async def login_link(
        cls,
        profile_dir: Path,
        passphrase: str,
        *,
        host: str,
        port: int,
        code: str,
        name: str,
        alternates: tuple[Address, ...] = (),
        fingerprint: str | None = None,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        kdf: KdfParams | None = None,
    ) -> HushwireClient:
        """Make a new profile a device of the account whose device showed `code`
        (docs/security.md, "Linking a device"): the identity arrives sealed under the
        code, this device's own keys are made here, and the relay issues its credential.
        The relay's certificate must be the one the code pins (the old device's view).
        Raises LinkError (mistyped code, a relay in the middle, a `fingerprint` other than
        the code's), CertificateMismatch (the relay is not the one the code pins),
        RequestError (`link_failed`: unknown, expired or used code) or ProfileMismatch."""
        profile_dir = Path(profile_dir)
        if ProfileStore.exists(profile_dir):
            raise ProfileMismatch(f"{profile_dir} already holds a profile; link into a new one")
        link_code = LinkCode.parse(code)
        pin = _link_pin(link_code, fingerprint)
        store = await ProfileStore.open(profile_dir, passphrase, create=True, kdf=kdf)
        conn: RelayConnection | None = None
        try:
            tls = TlsSettings(pin=pin, ca_file=Path(ca_file) if ca_file else None)
            addresses = ((host, port), *alternates)

            async def attempt(address: Address) -> tuple[RelayConnection, wire.HelloOk]:
                return await _said_hello(await _connect_linking(*address, link_code, tls))

            current, (conn, hello) = await first_reachable(addresses, 0, attempt)
            group = group_by_name(hello.group, hello.group_params)
            fetched = await conn.request(wire.LinkFetch, channel=link_code.channel)
            joiner = LinkJoiner(group, link_code, name, group.generate())
            ephemeral, sealed = joiner.request(fetched.ephemeral)
            joined = await conn.request(
                wire.LinkJoin, channel=link_code.channel, ephemeral=ephemeral, sealed=sealed
            )
            grant = joiner.open_grant(joined.sealed)
            settings = RelaySettings(
                host=host,
                port=port,
                user=check_username(grant.account),
                token=joined.token,
                pin=None if ca_file else conn.fingerprint,
                ca_file=ca_file,
                device=joined.device,
                alternates=alternates,
            )
            async with store.transaction():
                await store.set_setting("relay", settings.to_record())
                await store.set_setting(LAST_RELAY, format_address(addresses[current]))
                await store.set_setting("group", group.name)
                await store.set_setting("group_params", hello.group_params)
                await store.save_identity(grant.identity.to_bytes(), int(clock() * 1000))
                await HeldLists(store).hold(grant.account, grant.signed_list)
            ok = await conn.request(
                wire.Login,
                user=grant.account,
                token=joined.token,
                device=joined.device,
                sign_key=grant.identity.sign_key,
            )
            sessions = SessionManager(
                store, grant.account, grant.identity, group, device=joined.device, clock=clock
            )
            client = cls(store, settings, sessions, clock=clock, backoff=backoff)
            client.fingerprint_learned = pin is None and ca_file is None
            client._current = current
            await client._begin(conn, ok)
        except BaseException:
            if conn is not None:
                await conn.close()
            await store.close()
            _remove_profile_files(profile_dir)
            raise
        return client

    # --- lifecycle --------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Connect and log in, then keep the connection up in the background.

        wait=True raises if the first attempt fails (ConnectionClosed, CertificateMismatch,
        RequestError such as auth_failed); wait=False retries in the background and
        reports through `ConnectionState` events.
        """
        if self._runner is not None:
            return
        if wait:
            conn, ok = await self._connect()
            await self._adopt(conn, ok)
        self._runner = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Idempotent: stop the loops, close the connection, close the profile."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self._drop_connection()
        await self.store.close()
        self._set_state("disconnected", "closed")

    def _set_state(self, state: str, detail: str, *, failover: bool = False) -> None:
        changed = state != self.state
        self.state = state
        self._failing_over = failover
        if changed or state != "connected":
            self.events.put_nowait(ConnectionState(state, detail, failover))
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    async def _connect(self, start: int | None = None) -> tuple[RelayConnection, wire.LoginOk]:
        """Log in to the first relay that answers, from `start` (default: the one that
        last worked) on; remembered, so the next run starts there too."""
        s = self.settings
        device = None if s.device == 1 else s.device
        tls = s.tls()

        async def attempt(address: Address) -> tuple[RelayConnection, wire.LoginOk]:
            conn = await RelayConnection.connect(*address, tls)
            try:
                ok = await conn.handshake(
                    s.user, s.token, device, sign_key=self.sessions.identity.sign_key
                )
            except BaseException:
                await conn.close()
                raise
            hello = conn.hello
            if hello is not None and hello.group != self.sessions.group.name:
                await conn.close()
                raise ProfileMismatch(
                    f"the relay now uses DH group {hello.group}, this profile's keys are "
                    f"{self.sessions.group.name}"
                )
            return conn, ok

        first = self._current if start is None else start
        current, (conn, ok) = await first_reachable(s.addresses, first, attempt)
        if current != self._current:
            self._current = current
            await self.store.set_setting(LAST_RELAY, self.relay)
        return conn, ok

    async def _begin(self, conn: RelayConnection, ok: wire.LoginOk) -> None:
        """A new profile's first login: keys first, so a refusal (account_has_devices)
        fails the login itself; then adopt the connection and run."""
        await self._upload_keys(conn, ok)
        await self._adopt(conn, ok, keys_uploaded=True)
        self._runner = asyncio.create_task(self._run())

    async def _upload_keys(self, conn: RelayConnection, ok: wire.LoginOk) -> None:
        """Publish or top up our keys as the login reply says they stand."""
        await self._keys.upload(
            conn,
            relay_has_identity=ok.has_identity,
            prekeys_left=ok.prekeys_left,
            kem_prekeys_left=ok.kem_prekeys_left,
            key_version=ok.key_version,
        )

    async def _adopt(
        self, conn: RelayConnection, ok: wire.LoginOk, *, keys_uploaded: bool = False
    ) -> None:
        """A fresh logged-in connection: start its loops, upload keys, flush the outbox."""
        self._conn = conn
        if conn.hello is not None and conn.hello.max_frame != self._max_frame:
            self._max_frame = conn.hello.max_frame
            await self.store.set_setting("max_frame", self._max_frame)
        for coro in (self._inbox.pump(conn), self._keepalive(conn)):
            task = asyncio.create_task(coro)
            self._conn_tasks.add(task)
            task.add_done_callback(self._conn_tasks.discard)
        self._set_state("connected", f"logged in to {self.relay} as {self.user}")
        try:
            if not keys_uploaded:  # login() uploads before adopting, to fail on refusal
                await self._upload_keys(conn, ok)
            await self._devices.refresh(conn)
            await self.who()
            await self.flush_outbox()
            await self.groups.flush(conn)
        except ConnectionClosed:
            pass  # the run loop notices and reconnects
        except RequestError as exc:
            self.events.put_nowait(Notice(f"after login: {relay_error_text(exc)}"))

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        for task in list(self._conn_tasks):
            task.cancel()
        for task in list(self._conn_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if conn is not None:
            await conn.close()

    async def _run(self) -> None:
        """Keep a connection up until close() or a fatal refusal."""
        attempt = 0
        start: int | None = None  # after a drop: the relay after the one we lost
        while not self._closing:
            if self._conn is None:
                try:
                    conn, ok = await self._connect(start)
                except (CertificateMismatch, ProfileMismatch) as exc:
                    self._set_state("disconnected", exc.message)
                    return
                except RequestError as exc:
                    if exc.code.value in FATAL_CODES:
                        self._set_state("disconnected", f"{exc.message} ({exc.code.value})")
                        return
                    await self._wait_retry(attempt, str(exc.message), exc.retry_after)
                    attempt += 1
                    continue
                except ConnectionClosed as exc:
                    await self._wait_retry(attempt, exc.message, None)
                    attempt += 1
                    continue
                attempt, start = 0, None
                await self._adopt(conn, ok)
            conn = self._conn
            if conn is None:
                continue
            await conn.wait_closed()
            reason = conn.closed_reason
            await self._drop_connection()
            if self._closing:
                return
            if reason is not None and reason.code in FATAL_CODES:
                self._set_state("disconnected", f"{reason.message} ({reason.code})")
                return
            detail = f"{reason.message} ({reason.code})" if reason else "connection lost"
            # One attempt at once, from the next address (the one we lost goes last; with
            # one address, the same: a load balancer there picks another relay). If it
            # fails, the loop above backs off as usual.
            addresses = self.settings.addresses
            start = (self._current + 1) % len(addresses)
            following = format_address(addresses[start])
            self._set_state("reconnecting", f"{detail}; trying {following}", failover=True)

    async def _wait_retry(self, attempt: int, detail: str, retry_after: float | None) -> None:
        delay = self._backoff.delay(attempt, retry_after)
        self._set_state("reconnecting", f"{detail}; retrying in {delay:.1f} s")
        await asyncio.sleep(delay)

    async def _keepalive(self, conn: RelayConnection) -> None:
        """Ping at half the idle timeout; check prekeys and signed-prekey age meanwhile, and
        retry queued messages (one to a user without keys goes once they have some)."""
        interval = (conn.hello.idle_timeout if conn.hello else 120.0) / 2
        while not conn.is_closed:
            await asyncio.sleep(interval)
            try:
                await conn.request(wire.Ping)
                await self._keys.maintain(conn)
                if await self.sessions.queued():  # e.g. for a user who had no keys yet
                    await self._outbox.flush(conn)
            except ConnectionClosed:
                return
            except RequestError as exc:
                self.events.put_nowait(Notice(f"key upkeep: {relay_error_text(exc)}"))

    # --- receiving and sending --------------------------------------------------------

    async def sync(self, limit: float = 30.0) -> None:
        """Return once every envelope the relay has queued for us is handled and acked
        (ConnectionClosed if not connected). A connection lost meanwhile is waited out
        while the client reconnects at once (failover), to the next relay if there are
        several."""
        async with asyncio.timeout(limit):
            while True:
                conn = self._conn
                try:
                    return await self._inbox.sync(self._require_conn, limit)
                except ConnectionClosed:
                    if not await self._failed_over(conn):
                        raise

    async def _failed_over(self, lost: RelayConnection | None) -> bool:
        """After `lost` dropped: True once another connection is up, False when the
        immediate attempt failed (the client backs off) or the client gave up."""
        while not self._closing:
            changed = self._state_changed
            conn = self._conn
            if self.state == "connected" and conn is not None and conn is not lost:
                return True
            if self.state != "connected" and not self._failing_over:
                return False
            await changed.wait()
        return False

    def _require_conn(self) -> RelayConnection:
        conn = self._conn
        if conn is None or conn.is_closed:
            raise ConnectionClosed(f"not connected to the relay at {self.relay}")
        return conn

    def max_text_bytes(self, contact: str) -> int:
        """The longest UTF-8 text (in bytes) one message to `contact` may carry."""
        return self._outbox.max_text_bytes(contact)

    async def send(self, contact: str, text: str, *, queue_if_offline: bool = True) -> SendResult:
        """Encrypt and send one message; returns once the relay has committed it.

        Raises MessageHeld (key changed; kept in the outbox), MessageTooLong,
        RequestError (unknown_user, mailbox_full, rate_limited with retry_after...),
        BadBundle, ConnectionClosed (only with queue_if_offline=False; otherwise the
        message is kept and sent after the next login: `SendResult.queued`).
        """
        return await self._outbox.send(contact, text, queue_if_offline=queue_if_offline)

    async def flush_outbox(self) -> int:
        """Send what waited for a connection; returns how many the relay accepted."""
        return await self._outbox.flush(self._require_conn())

    # --- devices ---------------------------------------------------------------------

    async def devices(self) -> list[DeviceInfo]:
        """This account's devices, from its signed list as verified here."""
        return await self._devices.devices(self._require_conn())

    async def offer_link(self, ttl: float = 300.0) -> tuple[LinkOffer, int]:
        """Start linking a new device: show `offer.code.text()` to the user (the relay's
        expiry, Unix seconds, is returned too), then call `accept_link(offer)`."""
        return await self._devices.offer_link(self._require_conn(), ttl=ttl)

    async def accept_link(self, offer: LinkOffer) -> Device:
        """Wait for the device that types the code, list it and hand it the identity."""
        return await self._devices.accept_link(self._require_conn(), offer)

    async def unlink(self, device_id: int) -> None:
        """Sign a device list without `device_id` and publish it: the relay revokes the
        device and contacts stop encrypting to it (UnknownDevice if it is not listed)."""
        await self._devices.unlink(self._require_conn(), device_id)

    # --- contacts, trust, history -----------------------------------------------------

    async def who(self) -> list[tuple[str, bool]]:
        """Every user of the relay and whether they are online (starts presence pushes)."""
        conn = self._require_conn()
        users: list[tuple[str, bool]] = []
        after: str | None = None
        for _ in range(MAX_WHO_PAGES):  # the relay answers in pages that each fit a frame
            reply = await conn.request(wire.Who, after=after)
            users += [(p.user, p.online) for p in reply.users if is_valid_username(p.user)]
            if reply.next is None or reply.next == after:
                break
            after = reply.next
        self._online.update(users)
        return users

    async def contacts(self) -> list[ContactInfo]:
        unread = await self.store.unread_counts()
        return [
            ContactInfo(
                c.name, c.verified, c.key_changed, unread.get(c.name, 0), self._online.get(c.name)
            )
            for c in await self.store.list_contacts()
        ]

    async def history(self, contact: str, limit: int = HISTORY_DEFAULT) -> list[HistoryItem]:
        """Both directions, oldest first (the last `limit` messages)."""
        return [history_item(m) for m in await self.store.history(contact, limit)]

    async def unread(self) -> list[HistoryItem]:
        """Received messages not yet marked read, oldest first."""
        return [history_item(m) for m in await self.store.messages_with_status(("received",))]

    async def mark_read(self, contact: str | None = None, uids: tuple[str, ...] = ()) -> None:
        await self.store.mark_read(uids, contact)

    async def safety_number(self, contact: str, *, pending: bool = False) -> str:
        """60 digits in 12 groups of 5, for the pinned key (or the changed one)."""
        number = await self.sessions.safety_number(contact, pending=pending)
        return " ".join(number.groups())

    async def contact_state(self, contact: str) -> ContactInfo:
        c = await self.sessions.contact(contact)
        unread = (await self.store.unread_counts()).get(contact, 0)
        return ContactInfo(c.name, c.verified, c.key_changed, unread, self._online.get(c.name))

    async def mark_verified(self, contact: str) -> None:
        """The user compared safety numbers out of band and they matched."""
        await self.sessions.mark_verified(contact)

    async def reset_session(self, contact: str) -> None:
        """Start a fresh session (new X3DH) with the next message."""
        await self.sessions.reset_session(contact)

    async def trust(self, contact: str) -> int:
        """Accept `contact`'s changed key and send the held messages; returns how many.

        Offline, held messages become queued and go out after the next login.
        """
        released = await self._outbox.release(contact)
        async with self.store.transaction():
            events = await self._group_inbox.release_quarantined(contact)
        for event in events:
            self.events.put_nowait(event)
        return released


class _FirstLogin(NamedTuple):
    """What a profile's first login learns from the relay that answered."""

    conn: RelayConnection
    hello: wire.HelloOk
    group: DHGroup
    identity: IdentityKeyPair
    ok: wire.LoginOk


async def _said_hello(conn: RelayConnection) -> tuple[RelayConnection, wire.HelloOk]:
    """`conn` once it has said hello (closed again if that fails)."""
    try:
        return conn, await conn.say_hello()
    except BaseException:
        await conn.close()
        raise


def _link_pin(code: LinkCode, fingerprint: str | None) -> str | None:
    """The certificate a linking device accepts: the code's pin (and the user's
    `--fingerprint`, which must then be the same), else the user's, else none (TOFU)."""
    given = None if fingerprint is None else fingerprint.strip().upper()
    pinned = code.fingerprint()
    if pinned is not None and given is not None and given != pinned:
        raise LinkError(
            "the --fingerprint given is not the relay certificate your other device uses "
            f"(the link code pins {pinned}); leave --fingerprint out or check it"
        )
    return pinned or given


async def _connect_linking(
    host: str, port: int, code: LinkCode, tls: TlsSettings
) -> RelayConnection:
    """Connect for `login --link`; a certificate other than the one the code pins is
    refused with a message that says where that pin came from."""
    if code.pin is None:
        return await RelayConnection.connect(host, port, tls)
    conn = await RelayConnection.connect(host, port, TlsSettings(ca_file=tls.ca_file))
    if conn.fingerprint != code.fingerprint():
        await conn.close()
        raise CertificateMismatch(
            f"the relay at {host}:{port} presented a certificate other than the one your "
            f"other device uses (pinned in the link code).\n  link code: {code.fingerprint()}"
            f"\n  presented: {conn.fingerprint}\nSomeone may be intercepting the connection, "
            "or --relay names another relay than your other device's. Nothing was sent and "
            "no device was linked."
        )
    return conn


def _remove_profile_files(profile_dir: Path) -> None:
    """Undo a profile created by a login that failed, so the next attempt starts clean."""
    profile_dir = profile_dir.expanduser()
    for name in ("profile.db", "profile.db-wal", "profile.db-shm", "lock"):
        with contextlib.suppress(FileNotFoundError):
            (profile_dir / name).unlink()
    with contextlib.suppress(OSError):
        profile_dir.rmdir()


def relay_error_text(exc: RequestError) -> str:
    """A relay refusal as one clear line, with the retry time for rate limits."""
    if exc.code is ErrorCode.RATE_LIMITED and exc.retry_after:
        return f"{exc.message} (rate limited; retry in {exc.retry_after:.0f} s)"
    return f"{exc.message} ({exc.code.value})"


def restart_text(event: SessionRestarted) -> str:
    """What a healed session means for the user, in one line (the CLI and the TUI)."""
    if event.by_peer:
        return (
            f"{event.contact} could not decrypt your recent messages and started a new "
            f"session: some messages you sent to {event.contact} may not have arrived"
        )
    return (
        f"messages from {event.contact} could no longer be decrypted (too many lost); a new "
        f"session was started: some messages from {event.contact} are lost"
    )
