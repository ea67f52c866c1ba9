"""Sessions, contacts, key changes and the outbox: the client's protocol logic.

No sockets here: `SessionManager` works on the profile store and takes the one network
operation it needs (fetching a bundle) as a callable, so every rule below is tested
without a relay (tests/client/test_session.py). Split from it along its seams: this
device's own prekeys (client/prekeys.py, `SessionManager.keys`), the results of
receiving and sending (client/outcomes.py) and the longest text (client/limits.py).

Rules it enforces:

* Trust on first use: the first identity seen for a contact (from a verified bundle or
  an initial message) is pinned. A different identity later (a `key_changed` push, a
  bundle, an initial message) is never adopted silently: it is kept as `pending`, the
  contact shows as changed, and outgoing messages are held (status `held`) until the
  user accepts it with `trust`; held messages then go out under a fresh session.
* One current ratchet session per contact, plus a few archived ones: when both sides
  start a session at the same time, each side receives the other's initial message;
  trying the archived sessions too (as libsignal does) lets both converge instead of
  failing to decrypt.
* A received envelope is committed (ratchet state, message, seen envelope id, used
  one-time prekey deleted) in one transaction; only then may the caller ack it.
  Duplicates (same authenticated envelope id) are dropped; anything that does not
  authenticate is reported, never stored as a message.
* An outgoing message is encrypted and committed (advanced ratchet and envelope) before
  it is sent, so a crash can never reuse a message key; after a reconnect the stored
  envelope is sent again as it is (the peer drops the duplicate by id).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from hushwire.client.errors import BadBundle, MessageHeld, ProfileCorrupt, UnknownContact
from hushwire.client.fanout import HeldLists
from hushwire.client.outcomes import (
    GROUP_CONTENT,
    Duplicate,
    GroupContent,
    Outcome,
    Outgoing,
    Received,
    Rejected,
    SentCopy,
    SessionReset,
    describe,
)
from hushwire.client.prekeys import DAY_MS, OwnKeys
from hushwire.client.store import Contact, ProfileStore, StoredMessage
from hushwire.client.text import (
    decode_sent_copy,
    decode_text,
    encode_reset,
    encode_text,
)
from hushwire.common.crypto.devices import DeviceList, check_device_identity, verify_device_list
from hushwire.common.crypto.dh import DHGroup
from hushwire.common.crypto.envelope import Envelope, EnvelopeType, Session
from hushwire.common.crypto.identity import (
    IdentityKeyPair,
    verify_bundle,
    verify_identity,
)
from hushwire.common.crypto.ratchet import RatchetConfig
from hushwire.common.crypto.safety import SafetyNumber, safety_number
from hushwire.common.errors import (
    CryptoError,
    DecryptionError,
    LocalProtocolError,
    MalformedEnvelope,
    TooManySkipped,
)
from hushwire.common.keys import (
    PQ_BUNDLE_VERSION,
    IdentityPublic,
    PrekeyBundle,
    SignedDeviceList,
)
from hushwire.common.messages import Deliver
from hushwire.common.names import is_valid_username

MAX_ARCHIVED_SESSIONS: Final = 3
# The relay pushes key_changed only to watchers that are online at that moment, so a
# client that was offline would keep encrypting to a replaced identity. Before sending,
# re-fetch a contact's bundle when the pinned identity was last confirmed longer ago
# than this (it costs the contact one one-time prekey per interval).
IDENTITY_RECHECK_MS: Final = DAY_MS
# The envelope format allows any 63-bit send time; a peer's clock is not trusted beyond
# what a date can show: 0001-01-01 .. 9999-12-31 (a later one broke every `recv`).
MAX_SENT_AT_MS: Final = 253_402_300_799_999

# fetch(account) or fetch(account, device): that device's bundle from the relay.
Fetch = Callable[..., Awaitable[PrekeyBundle]]


def same_identity(a: IdentityPublic, b: IdentityPublic) -> bool:
    """Equal keys (the signature is implied by them; Ed25519 signing is deterministic)."""
    return (a.group, a.sign_key, a.dh_key) == (b.group, b.sign_key, b.dh_key)


class SessionManager:
    """Contacts, sessions, prekeys and outbox of one profile; no network."""

    def __init__(
        self,
        store: ProfileStore,
        user: str,
        identity: IdentityKeyPair,
        group: DHGroup,
        *,
        device: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.user = user
        self.device = device  # which device of `user` this profile is
        self.identity = identity
        self.group = group
        self.config = RatchetConfig(groups=(group,))
        self.lists = HeldLists(store)  # the device lists this profile accepted
        self.keys = OwnKeys(store, identity, group, self.now_ms)  # our prekeys
        self._clock = clock

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _per_device(self, name: str, device: int) -> bool:
        """Sessions kept in device_sessions: every device but a contact's device 1."""
        return name == self.user or device != 1

    async def device_sessions(self, name: str, device: int) -> list[Session]:
        if self._per_device(name, device):
            blobs = await self.store.load_device_sessions(name, device)
        else:
            blobs = await self.store.load_sessions(name)
        return [self._load_session(b) for b in blobs]

    async def save_device_sessions(
        self, name: str, device: int, sessions: list[Session], now: int
    ) -> None:
        blobs = [s.to_bytes() for s in sessions]
        if self._per_device(name, device):
            await self.store.save_device_sessions(name, device, blobs, now)
        else:
            await self.store.save_sessions(name, blobs, now)

    def _load_session(self, data: bytes) -> Session:
        try:
            return Session.from_bytes(data, self.config)
        except CryptoError as exc:
            raise ProfileCorrupt(f"stored session is unusable: {exc.message}") from None

    # --- receiving --------------------------------------------------------------------

    async def receive(self, deliver: Deliver) -> Outcome:
        """Open and store one delivered envelope; the caller acks it afterwards."""
        sender = deliver.sender
        if not is_valid_username(sender):
            return Rejected(sender[:64], "the relay named an invalid sender")
        try:
            env = Envelope.from_bytes(deliver.body)
        except MalformedEnvelope as exc:
            return Rejected(sender, describe(exc))
        if env.sent_at_ms > MAX_SENT_AT_MS:
            return Rejected(sender, "send time beyond the year 9999")
        if env.recipient != self.user:
            return Rejected(sender, f"envelope is addressed to {env.recipient}, not to us")
        if env.sender != sender:
            return Rejected(sender, f"envelope claims to be from {env.sender}")
        device = deliver.sender_device
        own = sender == self.user
        if own and device == self.device:
            return Rejected(sender, "the relay says this device sent it to itself")
        per_device = self._per_device(sender, device)
        async with self.store.transaction():
            if await self.store.seen(env.envelope_id):
                return Duplicate(sender, env.envelope_id)
            contact = await self.store.get_contact(sender)
            if per_device and not own and contact is None:
                return Rejected(sender, f"device {device} of a contact whose key is not pinned")
            if not per_device and not await self.lists.device_one_listed(sender):
                # Unlinked: the contact's verified list no longer names it.
                return Rejected(sender, f"device 1 of {sender} is not in its signed device list")
            sessions = await self.device_sessions(sender, device) if contact or own else []
            message, used, chosen = None, None, -1
            error: CryptoError | None = None
            for i, session in enumerate(sessions):
                try:
                    message = session.decrypt(env)
                except CryptoError as exc:
                    error = error or exc
                    continue
                chosen = i
                break
            if message is None and env.type is EnvelopeType.INITIAL and env.version < 2:
                # Version 2 only: a new X3DH session has no KEM secret, and a relay could
                # strip PQXDH to get one (security.md, "PQXDH"). Started ones still work.
                return Rejected(
                    sender,
                    "a version-1 (not post-quantum) session start: this client accepts "
                    f"only version 2; {sender} must upgrade",
                )
            if (
                message is None
                and env.type is EnvelopeType.INITIAL
                and env.x3dh is not None
                # A repeat of an initial message we already answered must never start a
                # second session (X3DH 4.2: without a one-time prekey it could be replayed).
                and not any(s.x3dh == env.x3dh for s in sessions)
            ):
                try:
                    prekeys = await self.keys.prekeys_for(env.x3dh)
                    session, message, used = Session.respond(
                        self.identity, self.user, prekeys, env, config=self.config
                    )
                    sessions.insert(0, session)
                    chosen = 0
                except CryptoError as exc:
                    error = exc
            if message is None:
                # A known device whose messages no session of ours can open any more: the
                # caller starts a fresh session with it (as Signal does), or nothing heals.
                dead = (own or (contact is not None and contact.pending is None)) and (
                    isinstance(error, TooManySkipped)
                    or (not sessions and env.type is EnvelopeType.MESSAGE)
                )
                reason = describe(error or DecryptionError("no session"))
                return Rejected(sender, reason, dead_session=dead, device=device)
            sessions.insert(0, sessions.pop(chosen))
            del sessions[1 + MAX_ARCHIVED_SESSIONS :]
            now = self.now_ms()
            peer = sessions[0].peer_identity
            key_changed = False
            if per_device:
                # Every device but a contact's device 1 must be in the account's signed
                # list as this profile verified it, under the account's identity.
                account = self.identity.public() if own or contact is None else contact.identity
                if peer.sign_key != account.sign_key or peer.dh_key != await self.lists.listed_key(
                    sender, device
                ):
                    return Rejected(
                        sender, f"device {device} of {sender} is not in its signed device list"
                    )
            elif contact is None:
                await self.store.add_contact(sender, peer, now)  # trust on first use
            elif not same_identity(peer, contact.identity):
                key_changed = True
                if contact.pending is None or not same_identity(peer, contact.pending):
                    await self.store.set_pending_identity(sender, peer, now)
            await self.save_device_sessions(sender, device, sessions, now)
            await self.store.mark_seen(env.envelope_id, now)
            used_one_time = used is not None and used.one_time is not None
            if used is not None and used.one_time is not None:  # (narrows `used` for mypy)
                await self.store.delete_one_time_prekey(used.one_time)
            if used is not None and used.one_time_kem is not None:
                await self.store.delete_kem_prekey(used.one_time_kem)
            if message.plaintext == encode_reset():
                return SessionReset(sender, key_changed, used_one_time)
            if message.plaintext[:1] in GROUP_CONTENT:
                # Group input: client/group_inbox.py checks and stores it in this transaction.
                return GroupContent(
                    sender,
                    device,
                    message.plaintext[0],
                    message.plaintext[1:],
                    message.envelope_id,
                    message.sent_at_ms,
                    key_changed,
                    used_one_time,
                )
            try:
                copy = decode_sent_copy(message.plaintext)
                if copy is None and own:
                    raise ValueError("only sent copies come from our own devices")
                if copy is not None and not (own and is_valid_username(copy[0])):
                    raise ValueError("a sent copy from another account")
                text = decode_text(message.plaintext) if copy is None else copy[1]
            except ValueError:
                # Authentic but unreadable: keep the ratchet step, show nothing.
                return Rejected(sender, "message in an unknown format or not UTF-8")
            if copy is not None:
                uid = await self.store.add_message(
                    contact=copy[0],
                    direction="out",
                    status="sent",
                    sent_at_ms=message.sent_at_ms,
                    now_ms=now,
                    text=text,
                    envelope_id=message.envelope_id,
                )
                return SentCopy(copy[0], uid, message.sent_at_ms, text, used_one_time)
            uid = await self.store.add_message(
                contact=sender,
                direction="in",
                # Quarantined until the user accepts the new identity (`trust`): shown
                # now, it would put words in the pinned contact's mouth.
                status="held" if key_changed else "received",
                sent_at_ms=message.sent_at_ms,
                now_ms=now,
                text=text,
                envelope_id=message.envelope_id,
            )
        return Received(
            sender,
            uid,
            message.envelope_id,
            message.sent_at_ms,
            text,
            key_changed,
            used_one_time,
        )

    async def on_key_changed(self, user: str, identity: IdentityPublic) -> bool:
        """A `key_changed` push: True if `user` is a contact whose key now counts as changed.

        The relay's word binds nothing: an identity whose own signature fails is ignored.
        """
        try:
            verify_identity(identity, self.group)
        except CryptoError:
            return False
        async with self.store.transaction():
            contact = await self.store.get_contact(user)
            if contact is None or same_identity(identity, contact.identity):
                return False
            if contact.pending is not None and same_identity(identity, contact.pending):
                return False
            await self.store.set_pending_identity(user, identity, self.now_ms())
        return True

    # --- sending ----------------------------------------------------------------------

    async def _needs_bundle(self, name: str) -> bool:
        contact = await self.store.get_contact(name)
        if contact is None:
            return True
        if contact.pending is not None:
            return False  # the message will be held; fetching would only consume a prekey
        if self.now_ms() - contact.checked_at >= IDENTITY_RECHECK_MS:
            return True
        return not await self.store.load_sessions(name)

    async def fetch_verified(self, name: str, fetch: Fetch, device: int = 1) -> PrekeyBundle:
        """`name`'s bundle (of `device`), refused unless it is post-quantum and both of
        its signatures verify; which identity it must carry is the caller's check."""
        bundle = await fetch(name) if device == 1 else await fetch(name, device)
        if bundle.user != name:
            raise BadBundle(f"the relay answered a request for {name}'s keys with {bundle.user}'s")
        if bundle.version != PQ_BUNDLE_VERSION:
            # Never downgrade to X3DH: the first message would lack the KEM secret.
            raise BadBundle(
                f"the relay served version-{bundle.version} keys for {name}; this client "
                "starts only post-quantum (version 2) sessions; nothing was sent"
            )
        try:
            # X3DH 3.3 / 4.5: both signatures before anything else; the relay is not trusted.
            verify_bundle(bundle, self.group)
        except CryptoError as exc:
            raise BadBundle(
                f"the relay served keys for {name} that do not verify ({exc.message}); "
                "nothing was sent"
            ) from None
        return bundle

    async def pin(self, name: str, fetch: Fetch) -> PrekeyBundle:
        """Pin `name`'s identity (trust on first use) from their device 1's verified
        bundle: an account without a signed device list. Returns the bundle."""
        bundle = await self.fetch_verified(name, fetch)
        async with self.store.transaction():
            if await self.store.get_contact(name) is None:
                await self.store.add_contact(name, bundle.identity, self.now_ms())
        return bundle

    async def pin_listed(
        self, name: str, signed: SignedDeviceList, fetch: Fetch
    ) -> tuple[int, PrekeyBundle]:
        """Trust on first use from `name`'s signed device list (its device 1 may be gone):
        pin the identity of its lowest listed device's verified bundle, under which the
        list must verify and which must carry the DH key the list gives that device; the
        contact and the list are committed together. Returns that device and its bundle.

        The body is read before its signature can be checked only to choose the device
        (the identity comes from that device's bundle); nothing in it is used until the
        list verifies. CryptoError (InvalidSignature, DeviceListError, UnknownDevice) if
        it does not; a contact pinned meanwhile is left as it is.
        """
        device = DeviceList.decode(signed.body).devices[0].id
        bundle = await self.fetch_verified(name, fetch, device)
        dlist = verify_device_list(signed, account=name, identity=bundle.identity, group=self.group)
        check_device_identity(dlist, device, bundle.identity, bundle.identity)
        async with self.store.transaction():
            if await self.store.get_contact(name) is None:
                await self.store.add_contact(name, bundle.identity, self.now_ms())
                await self.lists.hold(name, signed)
        return device, bundle

    async def queue(self, name: str, text: str) -> str:
        """Store a message to encrypt and send once connected; returns its uid."""
        now = self.now_ms()
        return await self.store.add_message(
            contact=name, direction="out", status="queued", sent_at_ms=now, now_ms=now, text=text
        )

    async def prepare_send(
        self, name: str, text: str, fetch: Fetch, *, uid: str | None = None
    ) -> Outgoing:
        """Encrypt `text` for `name`'s device 1 and commit it as `pending`; raises
        MessageHeld.

        `uid` re-uses an outbox row (queued or held) instead of adding a new one. A held
        message is committed before MessageHeld is raised. When the contact's verified
        list leaves device 1 out, nothing is sealed here: the row stays `queued` until
        client/copies.py seals it for the listed devices.
        """
        plaintext = encode_text(text)
        primary = await self.lists.device_one_listed(name)
        for _ in range(3):
            bundle = None
            if primary and await self._needs_bundle(name):
                bundle = await self.fetch_verified(name, fetch)
            held = False
            async with self.store.transaction():
                now = self.now_ms()
                contact = await self.store.get_contact(name)
                if contact is None:
                    if bundle is None:
                        continue
                    await self.store.add_contact(name, bundle.identity, now)  # TOFU
                elif bundle is not None and not same_identity(bundle.identity, contact.identity):
                    known = contact.pending is not None and same_identity(
                        bundle.identity, contact.pending
                    )
                    if not known:
                        await self.store.set_pending_identity(name, bundle.identity, now)
                    held = True
                elif contact.pending is not None:
                    held = True
                elif bundle is not None:
                    await self.store.set_checked(name, now)
                if held:
                    if uid is None:
                        uid = await self.store.add_message(
                            contact=name,
                            direction="out",
                            status="held",
                            sent_at_ms=now,
                            now_ms=now,
                            text=text,
                        )
                    else:
                        await self.store.update_outgoing(uid, "held")
                elif not primary:
                    if uid is None:
                        uid = await self.queue(name, text)
                    else:
                        await self.store.update_outgoing(uid, "queued")
                    return Outgoing(uid, name, b"", b"", now)
                else:
                    blobs = await self.store.load_sessions(name)
                    sessions = [self._load_session(b) for b in blobs]
                    if sessions:
                        envelope = sessions[0].encrypt(plaintext, now)
                    elif bundle is not None:
                        session, envelope = Session.initiate(
                            self.identity,
                            self.user,
                            bundle,
                            self.group,
                            now,
                            plaintext,
                            config=self.config,
                        )
                        sessions = [session]
                    else:
                        continue  # the session vanished meanwhile: fetch and try again
                    envelope_id = Envelope.from_bytes(envelope).envelope_id
                    await self.store.save_sessions(name, [s.to_bytes() for s in sessions], now)
                    if uid is None:
                        uid = await self.store.add_message(
                            contact=name,
                            direction="out",
                            status="pending",
                            sent_at_ms=now,
                            now_ms=now,
                            text=text,
                            envelope_id=envelope_id,
                            envelope=envelope,
                        )
                    else:
                        await self.store.update_outgoing(
                            uid,
                            "pending",
                            text=text,
                            envelope_id=envelope_id,
                            envelope=envelope,
                            sent_at_ms=now,
                        )
            if held:
                raise MessageHeld(name)
            return Outgoing(uid, name, envelope, envelope_id, now)
        raise LocalProtocolError(f"could not start a session with {name}")

    async def mark_sent(self, uid: str) -> None:
        await self.store.update_outgoing(uid, "sent")

    async def mark_failed(self, uid: str) -> None:
        await self.store.update_outgoing(uid, "failed")

    async def pending(self) -> list[StoredMessage]:
        """Encrypted messages whose relay `ok` never came: resend as they are."""
        return await self.store.messages_with_status(("pending",))

    async def queued(self) -> list[StoredMessage]:
        return await self.store.messages_with_status(("queued",))

    async def waiting(self, name: str | None = None) -> list[StoredMessage]:
        """Outgoing messages (to `name`, or anyone) not yet at the relay: queued or
        unconfirmed."""
        return await self.store.messages_with_status(("queued", "pending"), name)

    # --- trust and verification ------------------------------------------------------

    async def contact(self, name: str) -> Contact:
        """The stored contact; UnknownContact if nothing was ever exchanged with `name`."""
        contact = await self.store.get_contact(name)
        if contact is None:
            raise UnknownContact(f"no contact named {name}: no message has been exchanged yet")
        return contact

    async def trust(self, name: str) -> tuple[list[StoredMessage], list[StoredMessage]]:
        """Accept `name`'s changed identity: (held outgoing messages to send now,
        quarantined incoming ones, released to the history as unread)."""
        view = await self.contact(name)
        async with self.store.transaction():
            if view.pending is not None:
                await self.store.accept_identity(name, view.pending, self.now_ms())
                # The held device list was signed by the old identity: the new one's
                # lists start again (the relay's mismatched_devices brings it).
                await self.lists.forget(name)
            held = await self.store.messages_with_status(("held",), name)
            await self.store.release_incoming(name)
        out = [m for m in held if m.direction == "out"]
        released = [m for m in held if m.direction == "in"]
        return out, released

    async def mark_verified(self, name: str) -> None:
        await self.contact(name)
        await self.store.set_verified(name, True, self.now_ms())

    async def reset_session(self, name: str) -> None:
        """Forget the sessions with `name`; the next message starts a fresh one (X3DH)."""
        await self.contact(name)
        await self.store.save_sessions(name, [], self.now_ms())

    async def safety_number(self, name: str, *, pending: bool = False) -> SafetyNumber:
        """For the pinned identity, or (`pending`) for the changed one awaiting `trust`."""
        view = await self.contact(name)
        peer = view.pending if pending and view.pending is not None else view.identity
        return safety_number(self.user, self.identity.public(), name, peer)
