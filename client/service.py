"""The connected client: login, key upkeep, the receive and reconnect loops, and the API
the TUI and the CLI are built on. No UI here.

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
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgpack

from hushwire.client.connection import RelayConnection, TlsSettings
from hushwire.client.errors import (
    CertificateMismatch,
    ClientError,
    ConnectionClosed,
    MessageHeld,
    MessageTooLong,
    ProfileCorrupt,
    ProfileMismatch,
    ProfileMissing,
)
from hushwire.client.session import (
    Fetch,
    KeyUpload,
    Outgoing,
    Received,
    Rejected,
    SessionManager,
    load_or_create_identity,
    max_text_bytes,
)
from hushwire.client.store import KdfParams, ProfileStore, StoredMessage
from hushwire.common import messages as wire
from hushwire.common.crypto.dh import DHGroup, group_by_name
from hushwire.common.errors import CryptoError, ErrorCode, HushwireError, RequestError
from hushwire.common.frames import DEFAULT_MAX_FRAME
from hushwire.common.keys import PrekeyBundle
from hushwire.common.names import check_username

log = logging.getLogger("hushwire.client")

# The relay closed us on purpose and retrying cannot help until a person acts.
FATAL_CODES: Final = frozenset({"auth_failed", "user_disabled", "session_replaced"})
HISTORY_DEFAULT: Final = 200


# --- events (what the TUI renders) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A message that authenticated and is stored. Display `text` via safe_for_terminal."""

    contact: str
    envelope_id: str  # hex, stable across redeliveries
    sent_at: datetime  # the sender's clock, UTC
    text: str
    uid: str  # the local history row


@dataclass(frozen=True, slots=True)
class KeyChanged:
    """`contact`'s identity key changed: messages to them are held until `trust`."""

    contact: str


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """An envelope that was not shown (tampered, replayed, not for us...); it was acked."""

    contact: str
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """state: "connected", "reconnecting" or "disconnected" (gave up: see detail)."""

    state: str
    detail: str


@dataclass(frozen=True, slots=True)
class Presence:
    user: str
    online: bool


@dataclass(frozen=True, slots=True)
class MessagesReleased:
    """`n` held messages to `contact` went out after `trust`."""

    contact: str
    n: int


@dataclass(frozen=True, slots=True)
class MessageSent:
    """A queued or unconfirmed message was accepted by the relay after a (re)connect."""

    contact: str
    uid: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should know that is not about one message (e.g. key upload)."""

    text: str


ClientEvent = (
    MessageReceived
    | KeyChanged
    | MessageRejected
    | ConnectionState
    | Presence
    | MessagesReleased
    | MessageSent
    | Notice
)


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendResult:
    contact: str
    uid: str
    envelope_id: str  # hex; empty while queued (not yet encrypted)
    sent_at: datetime
    queued: bool  # True: not confirmed by the relay yet; it goes out on reconnect


@dataclass(frozen=True, slots=True)
class ContactInfo:
    name: str
    verified: bool
    key_changed: bool
    unread: int
    online: bool | None  # None until the relay said (after `who` or a presence push)


@dataclass(frozen=True, slots=True)
class HistoryItem:
    contact: str
    direction: str  # "in" or "out"
    text: str  # raw: display via safe_for_terminal
    sent_at: datetime
    status: str  # in: received/read; out: queued/held/pending/sent/failed
    envelope_id: str  # hex ("" for an outgoing message not yet encrypted)
    uid: str


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Where and as whom to connect, as stored in the profile (sealed)."""

    host: str
    port: int
    user: str
    token: str
    pin: str | None = None  # SHA-256 fingerprint pinned on first use
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def __repr__(self) -> str:  # never let the token reach a log line
        return f"RelaySettings(host={self.host!r}, port={self.port}, user={self.user!r})"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def tls(self) -> TlsSettings:
        return TlsSettings(
            pin=None if self.ca_file else self.pin,
            ca_file=Path(self.ca_file) if self.ca_file else None,
            client_cert=Path(self.client_cert) if self.client_cert else None,
            client_key=Path(self.client_key) if self.client_key else None,
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "host": self.host, "port": self.port, "user": self.user, "token": self.token,
            "pin": self.pin, "ca_file": self.ca_file, "client_cert": self.client_cert,
            "client_key": self.client_key,
        }  # fmt: skip

    @classmethod
    def from_record(cls, record: Any) -> RelaySettings:
        try:
            return cls(**record)
        except TypeError:
            raise ProfileCorrupt("stored relay settings are malformed") from None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: exponential, capped, with jitter so clients do not stampede."""

    initial: float = 0.5
    maximum: float = 60.0
    factor: float = 2.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before reconnect `attempt` (0-based): uniform in [cap/2, cap]."""
        cap = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        jitter = secrets.randbelow(1_000_001) / 1_000_000
        return max(cap / 2 + jitter * cap / 2, retry_after or 0.0)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _history_item(m: StoredMessage) -> HistoryItem:
    return HistoryItem(
        m.contact, m.direction, m.text, _utc(m.sent_at_ms), m.status, m.envelope_id.hex(), m.uid
    )


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
        self._keys_lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self._closing = False
        self._closed = False
        self.fingerprint_learned = False  # set by login(): the pin was learned just now
        # For sync(): pushes taken off the queue, and those fully handled (and acked).
        self._taken = 0
        self._handled = 0
        self._progress = asyncio.Condition()

    @property
    def user(self) -> str:
        return self.settings.user

    @property
    def relay(self) -> str:
        return self.settings.address

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
                SessionManager(store, settings.user, identity, group, clock=clock),
                clock=clock,
                backoff=backoff,
            )
            client._max_frame = await store.get_setting("max_frame") or DEFAULT_MAX_FRAME
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
    ) -> HushwireClient:
        """Create or update a profile, connect, pin the relay, log in, publish keys.

        Pinning: with a CA file the certificate is validated instead; with `fingerprint`
        exactly that one is accepted; else a pin stored for the same address is kept;
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
                elif old is not None and old.address == settings.address:
                    pin = old.pin
            conn = await RelayConnection.connect(
                settings.host,
                settings.port,
                TlsSettings(
                    pin=pin,
                    ca_file=Path(settings.ca_file) if settings.ca_file else None,
                    client_cert=Path(settings.client_cert) if settings.client_cert else None,
                    client_key=Path(settings.client_key) if settings.client_key else None,
                ),
            )
            ok = await conn.handshake(settings.user, settings.token)
            hello = conn.hello
            if hello is None:
                raise ConnectionClosed("the relay did not answer hello")
            group = group_by_name(hello.group, hello.group_params)
            stored_group = await store.get_setting("group")
            if stored_group is not None and stored_group != group.name:
                raise ProfileMismatch(
                    f"the relay now uses DH group {group.name}, this profile's keys are "
                    f"{stored_group}; a new profile is needed"
                )
            now_ms = int(clock() * 1000)
            settings = RelaySettings(
                **{**settings.to_record(), "pin": None if settings.ca_file else conn.fingerprint}
            )
            async with store.transaction():
                await store.set_setting("relay", settings.to_record())
                await store.set_setting("group", group.name)
                await store.set_setting("group_params", hello.group_params)
            identity = await load_or_create_identity(store, group, now_ms)
            client = cls(
                store,
                settings,
                SessionManager(store, settings.user, identity, group, clock=clock),
                clock=clock,
                backoff=backoff,
            )
            client.fingerprint_learned = pin is None and settings.ca_file is None
            await client._adopt(conn, ok)
            client._runner = asyncio.create_task(client._run())
        except BaseException:
            if conn is not None:
                await conn.close()
            await store.close()
            if fresh:
                _remove_profile_files(Path(profile_dir))
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

    def _set_state(self, state: str, detail: str) -> None:
        changed = state != self.state
        self.state = state
        if changed or state != "connected":
            self.events.put_nowait(ConnectionState(state, detail))

    async def _connect(self) -> tuple[RelayConnection, wire.LoginOk]:
        s = self.settings
        conn = await RelayConnection.connect(s.host, s.port, s.tls())
        try:
            ok = await conn.handshake(s.user, s.token)
            hello = conn.hello
            if hello is not None and hello.group != self.sessions.group.name:
                raise ProfileMismatch(
                    f"the relay now uses DH group {hello.group}, this profile's keys are "
                    f"{self.sessions.group.name}"
                )
        except BaseException:
            await conn.close()
            raise
        return conn, ok

    async def _adopt(self, conn: RelayConnection, ok: wire.LoginOk) -> None:
        """A fresh logged-in connection: start its loops, upload keys, flush the outbox."""
        self._conn = conn
        if conn.hello is not None and conn.hello.max_frame != self._max_frame:
            self._max_frame = conn.hello.max_frame
            await self.store.set_setting("max_frame", self._max_frame)
        for coro in (self._pump(conn), self._keepalive(conn)):
            task = asyncio.create_task(coro)
            self._conn_tasks.add(task)
            task.add_done_callback(self._conn_tasks.discard)
        self._set_state("connected", f"logged in to {self.relay} as {self.user}")
        try:
            await self._upload_keys(
                conn, relay_has_identity=ok.has_identity, prekeys_left=ok.prekeys_left
            )
            await self.who()
            await self.flush_outbox()
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
        while not self._closing:
            if self._conn is None:
                try:
                    conn, ok = await self._connect()
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
                attempt = 0
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
            self._set_state("reconnecting", detail)

    async def _wait_retry(self, attempt: int, detail: str, retry_after: float | None) -> None:
        delay = self._backoff.delay(attempt, retry_after)
        self._set_state("reconnecting", f"{detail}; retrying in {delay:.1f} s")
        await asyncio.sleep(delay)

    async def _keepalive(self, conn: RelayConnection) -> None:
        """Ping at half the idle timeout; check prekeys and signed-prekey age meanwhile."""
        interval = (conn.hello.idle_timeout if conn.hello else 120.0) / 2
        while not conn.is_closed:
            await asyncio.sleep(interval)
            try:
                await conn.request(wire.Ping)
                await self._maintain_keys(conn)
            except ConnectionClosed:
                return
            except RequestError as exc:
                self.events.put_nowait(Notice(f"key upkeep: {relay_error_text(exc)}"))

    # --- keys -----------------------------------------------------------------------

    async def _upload_keys(
        self, conn: RelayConnection, *, relay_has_identity: bool, prekeys_left: int
    ) -> None:
        async with self._keys_lock:
            upload = await self.sessions.plan_upload(
                relay_has_identity=relay_has_identity, prekeys_left=prekeys_left
            )
            if upload is None:
                return
            try:
                await self._publish(conn, upload)
            except RequestError as exc:
                self.events.put_nowait(Notice(f"could not upload keys: {exc.message}"))

    async def _publish(self, conn: RelayConnection, upload: KeyUpload) -> None:
        """Publish in as many frames as the relay's max_frame needs (identity first)."""
        for i, part in enumerate(_split_upload(upload, conn.max_frame)):
            await conn.request(
                wire.PublishKeys,
                identity=part.identity,
                signed_prekey=part.signed_prekey,
                one_time_prekeys=part.one_time_prekeys,
            )
            if i == 0:
                await self.sessions.upload_done(upload)

    async def _maintain_keys(self, conn: RelayConnection) -> None:
        """Top up one-time prekeys and rotate the signed prekey when due."""
        count = await conn.request(wire.PrekeyCount)
        await self._upload_keys(conn, relay_has_identity=True, prekeys_left=count.count)

    # --- receiving ------------------------------------------------------------------

    async def _pump(self, conn: RelayConnection) -> None:
        while True:
            if conn.pushes.empty() and conn.is_closed:
                return
            getter = asyncio.ensure_future(conn.pushes.get())
            closer = asyncio.ensure_future(conn.wait_closed())
            try:
                done, _ = await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closer.cancel()
                if not getter.done():
                    getter.cancel()
            if getter not in done:
                continue
            self._taken += 1
            try:
                await self._handle_push(conn, getter.result())
            except ConnectionClosed:
                pass  # unacked deliveries come again after the next login
            except HushwireError as exc:
                # One bad push must not stop the receive loop; the user hears of it.
                self.events.put_nowait(Notice(f"could not handle a push: {exc.message}"))
            finally:
                async with self._progress:
                    self._handled += 1
                    self._progress.notify_all()

    async def _handle_push(self, conn: RelayConnection, push: wire.Push) -> None:
        if isinstance(push, wire.Deliver):
            await self._on_deliver(conn, push)
        elif isinstance(push, wire.KeyChanged):
            if await self.sessions.on_key_changed(push.user, push.identity):
                self.events.put_nowait(KeyChanged(push.user))
        elif isinstance(push, wire.PresenceChanged):
            self._online[push.user] = push.online
            self.events.put_nowait(Presence(push.user, push.online))

    async def _on_deliver(self, conn: RelayConnection, deliver: wire.Deliver) -> None:
        try:
            outcome = await self.sessions.receive(deliver)
        except ProfileCorrupt as exc:
            # Not acked: the envelope stays at the relay until the profile is repaired.
            self.events.put_nowait(Notice(f"cannot store a message: {exc.message}"))
            return
        if isinstance(outcome, Received):
            if outcome.key_changed:
                self.events.put_nowait(KeyChanged(outcome.contact))
            self.events.put_nowait(
                MessageReceived(
                    outcome.contact,
                    outcome.envelope_id.hex(),
                    _utc(outcome.sent_at_ms),
                    outcome.text,
                    outcome.uid,
                )
            )
        elif isinstance(outcome, Rejected):
            log.warning("rejected an envelope from %s: %s", outcome.contact, outcome.reason)
            self.events.put_nowait(MessageRejected(outcome.contact, outcome.reason))
        # A Duplicate was stored before: nothing to show, but ack it again.
        # Stored (or deliberately dropped) first, acked second (protocol.md "ack").
        with contextlib.suppress(ConnectionClosed, RequestError):
            await conn.request(wire.Ack, mids=(deliver.mid,))
        if isinstance(outcome, Received) and outcome.used_one_time_prekey:
            with contextlib.suppress(ConnectionClosed, RequestError):
                await self._maintain_keys(conn)

    async def sync(self, limit: float = 30.0) -> None:
        """Return once every envelope the relay has queued for us is handled and acked.

        The relay writes queued deliveries ahead of later replies, so: ping, wait until
        everything that arrived before the pong is handled; repeat until a round brings
        nothing new. ConnectionClosed if not connected.
        """
        async with asyncio.timeout(limit):
            previous = -1
            while True:
                conn = self._require_conn()
                await conn.request(wire.Ping)
                target = self._taken + conn.pushes.qsize()
                async with self._progress:
                    await self._progress.wait_for(lambda t=target: self._handled >= t)
                if target == previous:
                    return
                previous = target

    # --- sending --------------------------------------------------------------------

    def _require_conn(self) -> RelayConnection:
        conn = self._conn
        if conn is None or conn.is_closed:
            raise ConnectionClosed(f"not connected to the relay at {self.relay}")
        return conn

    def _fetcher(self, conn: RelayConnection) -> Fetch:
        async def fetch(name: str) -> PrekeyBundle:
            reply = await conn.request(wire.FetchBundle, user=name)
            return reply.bundle

        return fetch

    def max_text_bytes(self, contact: str) -> int:
        """The longest UTF-8 text (in bytes) one message to `contact` may carry."""
        return max_text_bytes(self._max_frame, self.sessions.group, self.user, contact)

    async def send(self, contact: str, text: str, *, queue_if_offline: bool = True) -> SendResult:
        """Encrypt and send one message; returns once the relay has committed it.

        Raises MessageHeld (key changed; kept in the outbox), MessageTooLong,
        RequestError (unknown_user, mailbox_full, rate_limited with retry_after...),
        BadBundle, ConnectionClosed (only with queue_if_offline=False; otherwise the
        message is kept and sent after the next login: `SendResult.queued`).
        """
        name = check_username(contact)
        if name == self.user:
            raise ClientError("you cannot send a message to yourself")
        if not text:
            raise ClientError("empty message: nothing to send")
        size, limit = len(text.encode("utf-8")), self.max_text_bytes(name)
        if size > limit:
            raise MessageTooLong(size, limit)
        # One lock for everything that leaves this client, so a new message never
        # overtakes one still waiting in the outbox: each contact sees them in order.
        async with self._flush_lock:
            return await self._send_locked(name, text, queue_if_offline=queue_if_offline)

    async def _send_locked(self, name: str, text: str, *, queue_if_offline: bool) -> SendResult:
        conn = self._conn
        if conn is None or conn.is_closed:
            if not queue_if_offline:
                raise ConnectionClosed(f"not connected to the relay at {self.relay}")
            uid = await self.sessions.queue(name, text)
            return SendResult(name, uid, "", _utc(self.sessions.now_ms()), queued=True)
        if await self.sessions.waiting():
            # Connected, but the outbox has not gone out yet: join the queue behind it.
            uid = await self.sessions.queue(name, text)
            with contextlib.suppress(ConnectionClosed):  # then it stays queued: reported
                await self._flush_locked(conn)
            return SendResult(
                name,
                uid,
                "",
                _utc(self.sessions.now_ms()),
                queued=any(m.uid == uid for m in await self.sessions.waiting()),
            )
        try:
            out = await self.sessions.prepare_send(name, text, self._fetcher(conn))
        except MessageHeld:
            self.events.put_nowait(KeyChanged(name))
            raise
        except ConnectionClosed:
            if not queue_if_offline:
                raise
            uid = await self.sessions.queue(name, text)
            return SendResult(name, uid, "", _utc(self.sessions.now_ms()), queued=True)
        return await self._transmit(conn, out, keep=queue_if_offline)

    async def _transmit(self, conn: RelayConnection, out: Outgoing, *, keep: bool) -> SendResult:
        try:
            await conn.request(wire.Send, to=(out.contact,), body=out.envelope)
        except RequestError:
            await self.sessions.mark_failed(out.uid)
            raise
        except ConnectionClosed:
            if not keep:
                await self.sessions.mark_failed(out.uid)
                raise
            return SendResult(
                out.contact, out.uid, out.envelope_id.hex(), _utc(out.sent_at_ms), queued=True
            )
        await self.sessions.mark_sent(out.uid)
        return SendResult(
            out.contact, out.uid, out.envelope_id.hex(), _utc(out.sent_at_ms), queued=False
        )

    async def flush_outbox(self) -> int:
        """Send what waited for a connection: unconfirmed envelopes as they are, then
        queued messages (encrypted now). Returns how many the relay accepted."""
        conn = self._require_conn()
        async with self._flush_lock:
            return await self._flush_locked(conn)

    async def _flush_locked(self, conn: RelayConnection) -> int:
        sent = 0
        for m in await self.sessions.pending():
            if m.envelope is None:
                await self.sessions.mark_failed(m.uid)
                continue
            out = Outgoing(m.uid, m.contact, m.envelope, m.envelope_id, m.sent_at_ms)
            sent += await self._flush_one(conn, out)
        for m in await self.sessions.queued():
            try:
                out = await self.sessions.prepare_send(
                    m.contact, m.text, self._fetcher(conn), uid=m.uid
                )
            except MessageHeld:
                self.events.put_nowait(KeyChanged(m.contact))
                continue
            except ConnectionClosed:
                raise
            except (RequestError, ClientError, CryptoError) as exc:
                await self.sessions.mark_failed(m.uid)
                self.events.put_nowait(
                    Notice(f"could not send a queued message to {m.contact}: {exc.message}")
                )
                continue
            sent += await self._flush_one(conn, out)
        return sent

    async def _flush_one(self, conn: RelayConnection, out: Outgoing) -> int:
        try:
            await self._transmit(conn, out, keep=True)
        except RequestError as exc:
            self.events.put_nowait(
                Notice(f"the relay refused a message to {out.contact}: {exc.message}")
            )
            return 0
        if conn.is_closed:
            raise ConnectionClosed("connection lost while sending the outbox")
        self.events.put_nowait(MessageSent(out.contact, out.uid))
        return 1

    # --- contacts, trust, history -----------------------------------------------------

    async def who(self) -> list[tuple[str, bool]]:
        """Every user of the relay and whether they are online (starts presence pushes)."""
        conn = self._require_conn()
        users: list[tuple[str, bool]] = []
        after: str | None = None
        while True:  # the relay answers in pages that each fit one frame
            reply = await conn.request(wire.Who, after=after)
            users += [(p.user, p.online) for p in reply.users]
            if reply.next is None or reply.next == after:
                break
            after = reply.next
        for user, online in users:
            self._online[user] = online
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
        return [_history_item(m) for m in await self.store.history(contact, limit)]

    async def unread(self) -> list[HistoryItem]:
        """Received messages not yet marked read, oldest first."""
        return [_history_item(m) for m in await self.store.messages_with_status(("received",))]

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
        held = await self.sessions.trust(contact)
        released = 0
        for m in held:
            conn = self._conn
            if conn is None or conn.is_closed:
                await self.store.update_outgoing(m.uid, "queued")
                released += 1
                continue
            try:
                out = await self.sessions.prepare_send(
                    contact, m.text, self._fetcher(conn), uid=m.uid
                )
            except MessageHeld:
                self.events.put_nowait(KeyChanged(contact))
                break
            except ConnectionClosed:
                await self.store.update_outgoing(m.uid, "queued")
                released += 1
                continue
            await self._transmit(conn, out, keep=True)
            released += 1
        if released:
            self.events.put_nowait(MessagesReleased(contact, released))
        return released


MAX_PREKEYS_PER_UPLOAD: Final = 200  # protocol.md publish_keys


def _split_upload(upload: KeyUpload, max_frame: int) -> list[KeyUpload]:
    """Cut an upload into parts whose `publish_keys` frames fit under `max_frame`."""

    def size(part: KeyUpload) -> int:
        frame = wire.PublishKeys(
            id=2**63 - 1,
            identity=part.identity,
            signed_prekey=part.signed_prekey,
            one_time_prekeys=part.one_time_prekeys,
        ).to_wire()
        return len(msgpack.packb(frame, use_bin_type=True))

    parts: list[KeyUpload] = []
    current = KeyUpload(upload.identity, upload.signed_prekey, ())
    for key in upload.one_time_prekeys:
        grown = KeyUpload(current.identity, current.signed_prekey, (*current.one_time_prekeys, key))
        if len(grown.one_time_prekeys) > MAX_PREKEYS_PER_UPLOAD or size(grown) > max_frame:
            parts.append(current)
            current = KeyUpload(None, None, (key,))
        else:
            current = grown
    parts.append(current)
    return parts


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
