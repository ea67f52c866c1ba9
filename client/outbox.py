"""The outgoing side: encrypt and send, queue while offline, flush the outbox after a
(re)connect, release held messages after `trust`. One lock covers everything that leaves
the client, so a new message never overtakes one still waiting: each contact sees them in
order.

Every message goes out as one `send_devices` fan-out (client/fanout.py, client/copies.py).
When the relay answers `mismatched_devices`, the lists it carries are checked like any
list (client/devices.py: signed by the identity pinned for that account, version not
lower); the send is then sealed again for the devices now listed and retried, without
the user seeing it. A list that is refused leaves the view as it was, so after
MAX_FANOUT_ATTEMPTS the message fails with the relay's error and the notice says why."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from typing import Final

from hushwire.client.connection import RelayConnection
from hushwire.client.copies import seal_copies
from hushwire.client.devices import DeviceLists
from hushwire.client.errors import ClientError, ConnectionClosed, MessageHeld, MessageTooLong
from hushwire.client.events import (
    ClientEvent,
    KeyChanged,
    MessageReceived,
    MessageSent,
    MessagesReleased,
    Notice,
    SendResult,
    SessionRestarted,
    utc_from_ms,
)
from hushwire.client.fanout import decode_record, fetcher, plan
from hushwire.client.limits import max_text_bytes
from hushwire.client.outcomes import Outgoing
from hushwire.client.restart import restart, views
from hushwire.client.session import Fetch, SessionManager
from hushwire.common import messages as wire
from hushwire.common.errors import CryptoError, ErrorCode, RequestError
from hushwire.common.names import check_username

# A send whose device view the relay calls stale is sealed again at most this often:
# each attempt adopts the verified lists of the previous answer.
MAX_FANOUT_ATTEMPTS: Final = 3


class Outbox:
    """Sending for one profile; `conn_of` gives the current connection (None: offline)."""

    def __init__(
        self,
        sessions: SessionManager,
        emit: Callable[[ClientEvent], None],
        conn_of: Callable[[], RelayConnection | None],
        max_frame: Callable[[], int],
        relay: str,
        devices: DeviceLists,
    ) -> None:
        self._sessions = sessions
        self._devices = devices
        self._emit = emit
        self._conn_of = conn_of
        self._max_frame = max_frame
        self._relay = relay
        self._lock = asyncio.Lock()
        self._widths: dict[str, int] = {}  # contact -> envelopes of its last planned send

    def _live(self) -> RelayConnection | None:
        conn = self._conn_of()
        return None if conn is None or conn.is_closed else conn

    def max_text_bytes(self, contact: str, envelopes: int | None = None) -> int:
        """The longest UTF-8 text (in bytes) one message to `contact` may carry, sealed
        for `envelopes` devices (default: as many as its last fan-out had)."""
        s = self._sessions
        count = envelopes or self._widths.get(contact, 1)
        return max_text_bytes(self._max_frame(), s.group, s.user, contact, count)

    async def send(self, contact: str, text: str, *, queue_if_offline: bool = True) -> SendResult:
        """See HushwireClient.send."""
        name = check_username(contact)
        if name == self._sessions.user:
            raise ClientError("you cannot send a message to yourself")
        if not text.strip():
            raise ClientError("empty message: nothing to send")
        s = self._sessions
        targets = await plan(s.lists, s.user, s.device, name)
        self._widths[name] = int(targets.primary) + len(targets.targets)
        size, limit = len(text.encode("utf-8")), self.max_text_bytes(name)
        if size > limit:
            raise MessageTooLong(size, limit)
        async with self._lock:
            return await self._send_locked(name, text, queue_if_offline=queue_if_offline)

    async def _queued(self, name: str, text: str) -> SendResult:
        uid = await self._sessions.queue(name, text)
        return SendResult(name, uid, "", utc_from_ms(self._sessions.now_ms()), queued=True)

    async def _send_locked(self, name: str, text: str, *, queue_if_offline: bool) -> SendResult:
        conn = self._live()
        if conn is None:
            if not queue_if_offline:
                raise ConnectionClosed(f"not connected to the relay at {self._relay}")
            return await self._queued(name, text)
        if await self._sessions.waiting(name):
            # Connected, but the outbox has not gone out yet: join the queue behind it.
            uid = await self._sessions.queue(name, text)
            with contextlib.suppress(ConnectionClosed):  # then it stays queued: reported
                await self._flush_locked(conn)
            return SendResult(
                name,
                uid,
                "",
                utc_from_ms(self._sessions.now_ms()),
                queued=any(m.uid == uid for m in await self._sessions.waiting()),
            )
        try:
            fetch = await self._devices.first_contact(conn, self._sessions, name)
            out = await self._sessions.prepare_send(name, text, fetch)
        except MessageHeld:
            self._emit(KeyChanged(name))
            raise
        except ConnectionClosed:
            if not queue_if_offline:
                raise
            return await self._queued(name, text)
        except RequestError as exc:
            if exc.code is not ErrorCode.NO_KEYS:
                raise
            # A user who never logged in has no keys yet: keep the message for them.
            self._emit(
                Notice(
                    f"waiting for {name}'s first login: the message is kept and sent "
                    f"once {name} has published keys"
                )
            )
            return await self._queued(name, text)
        return await self._transmit(conn, out, text, keep=queue_if_offline, fetch=fetch)

    async def _fan_out(
        self, conn: RelayConnection, out: Outgoing, text: str, fetch: Fetch | None
    ) -> None:
        """Seal `out` for every verified device and send it in one `send_devices`."""
        s = self._sessions
        fetch = fetch or fetcher(conn)
        for attempt in range(1, MAX_FANOUT_ATTEMPTS + 1):
            targets = await plan(
                s.lists, s.user, s.device, out.contact, first_sealed=bool(out.envelope)
            )
            if not targets.primary:  # the contact's list leaves device 1 out
                out = dataclasses.replace(out, envelope=b"")
            out = await seal_copies(s, out, text, targets, fetch)
            try:
                await conn.send_devices(out.envelopes(), out.lists)
            except RequestError as exc:
                if exc.code is not ErrorCode.MISMATCHED_DEVICES or attempt == MAX_FANOUT_ATTEMPTS:
                    raise
                await self._adopt(exc)
                continue
            return

    async def _adopt(self, exc: RequestError) -> None:
        """Check and hold the lists of a `mismatched_devices` answer (refused ones are
        shown and leave the view as it was)."""
        await self._devices.on_mismatch(exc.device_lists)

    async def _transmit(
        self,
        conn: RelayConnection,
        out: Outgoing,
        text: str,
        *,
        keep: bool,
        fetch: Fetch | None = None,
    ) -> SendResult:
        try:
            await self._fan_out(conn, out, text, fetch)
        except ConnectionClosed:
            if not keep:
                await self._sessions.mark_failed(out.uid)
                raise
            return SendResult(
                out.contact, out.uid, out.envelope_id.hex(), utc_from_ms(out.sent_at_ms), True
            )
        except (RequestError, ClientError, CryptoError):
            await self._sessions.mark_failed(out.uid)
            raise
        await self._sessions.mark_sent(out.uid)
        return SendResult(
            out.contact, out.uid, out.envelope_id.hex(), utc_from_ms(out.sent_at_ms), False
        )

    async def flush(self, conn: RelayConnection) -> int:
        """Send what waited for a connection: unconfirmed envelopes as they are, then
        queued messages (encrypted now). Returns how many the relay accepted."""
        async with self._lock:
            return await self._flush_locked(conn)

    async def _flush_locked(self, conn: RelayConnection) -> int:
        sent = 0
        for m in await self._sessions.pending():
            if m.envelope is None:
                await self._sessions.mark_failed(m.uid)
                continue
            try:
                envelopes, lists = decode_record(m.envelope, m.contact)
            except ValueError:
                await self._sessions.mark_failed(m.uid)
                self._emit(Notice(f"a stored message to {m.contact} is unreadable: not sent"))
                continue
            first = next((e for e in envelopes if (e.user, e.device) == (m.contact, 1)), None)
            copies = tuple(e for e in envelopes if e is not first)
            body = b"" if first is None else first.body
            out = Outgoing(m.uid, m.contact, body, m.envelope_id, m.sent_at_ms, copies, lists)
            sent += await self._flush_one(conn, out, m.text)
        for m in await self._sessions.queued():
            try:
                fetch = await self._devices.first_contact(conn, self._sessions, m.contact)
                out = await self._sessions.prepare_send(m.contact, m.text, fetch, uid=m.uid)
            except MessageHeld:
                self._emit(KeyChanged(m.contact))
                continue
            except ConnectionClosed:
                raise
            except (RequestError, ClientError, CryptoError) as exc:
                if isinstance(exc, RequestError) and exc.code is ErrorCode.NO_KEYS:
                    continue  # still waiting for their first login: stays queued
                await self._sessions.mark_failed(m.uid)
                self._emit(Notice(f"could not send a queued message to {m.contact}: {exc.message}"))
                continue
            sent += await self._flush_one(conn, out, m.text, fetch)
        return sent

    async def _flush_one(
        self, conn: RelayConnection, out: Outgoing, text: str, fetch: Fetch | None = None
    ) -> int:
        try:
            await self._transmit(conn, out, text, keep=True, fetch=fetch)
        except (RequestError, ClientError, CryptoError) as exc:
            self._emit(Notice(f"the relay refused a message to {out.contact}: {exc.message}"))
            return 0
        if conn.is_closed:
            raise ConnectionClosed("connection lost while sending the outbox")
        self._emit(MessageSent(out.contact, out.uid))
        return 1

    async def restart(self, contact: str, device: int = 1) -> None:
        """Replace a dead session with `contact`'s `device` by a fresh one and tell that
        device alone (a session reset), so both sides can read each other again."""
        async with self._lock:
            conn = self._live()
            if conn is None:
                return
            s = self._sessions
            try:
                envelope = await restart(s, contact, device, fetcher(conn))
                if envelope is None:
                    return
                for attempt in range(1, MAX_FANOUT_ATTEMPTS + 1):
                    lists = await views(s, contact)
                    try:
                        await conn.request(
                            wire.SendDevices, envelopes=(envelope,), lists=lists, partial=True
                        )
                        break
                    except RequestError as exc:
                        if (
                            exc.code is not ErrorCode.MISMATCHED_DEVICES
                            or attempt == MAX_FANOUT_ATTEMPTS
                        ):
                            raise
                        await self._adopt(exc)
            except (RequestError, ClientError, CryptoError) as exc:
                self._emit(Notice(f"could not restart the session with {contact}: {exc.message}"))
                return
            self._emit(SessionRestarted(contact, by_peer=False))

    async def release(self, contact: str) -> int:
        """Accept `contact`'s changed key, show the messages quarantined under it and send
        the held ones; returns how many were sent.

        Offline, held messages become queued and go out after the next login.
        """
        held, incoming = await self._sessions.trust(contact)
        for m in incoming:
            self._emit(
                MessageReceived(
                    m.contact, m.envelope_id.hex(), utc_from_ms(m.sent_at_ms), m.text, m.uid
                )
            )
        released = 0
        for m in held:
            conn = self._live()
            if conn is None:
                await self._sessions.store.update_outgoing(m.uid, "queued")
                released += 1
                continue
            try:
                out = await self._sessions.prepare_send(contact, m.text, fetcher(conn), uid=m.uid)
            except MessageHeld:
                self._emit(KeyChanged(contact))
                break
            except ConnectionClosed:
                await self._sessions.store.update_outgoing(m.uid, "queued")
                released += 1
                continue
            await self._transmit(conn, out, m.text, keep=True)
            released += 1
        if released:
            self._emit(MessagesReleased(contact, released))
        return released
