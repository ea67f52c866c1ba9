"""Restarting a dead session with one device (docs/protocol.md, "Plaintext content types").

When no session of ours can open a device's messages any more (more than MAX_SKIP lost
in one chain, or none held), the session with *that* device is replaced by a fresh one
whose first message is a session reset (0x05), sent to that device alone with a
`partial` `send_devices`. The other devices of the account, and their sessions, are not
touched. The new session starts from the device's bundle, checked like any other: a
contact's device 1 must carry the pinned identity (a changed one waits for `trust`),
every other device the account's Ed25519 key and the DH key its verified list gives it.
"""

from __future__ import annotations

from typing import Final

from hushwire.client.copies import device_bundle
from hushwire.client.fanout import Target
from hushwire.client.session import MAX_ARCHIVED_SESSIONS, Fetch, SessionManager, same_identity
from hushwire.client.text import encode_reset
from hushwire.common.crypto.envelope import Session
from hushwire.common.keys import PrekeyBundle
from hushwire.common.messages import DeviceEnvelope, ListVersion

# A dead session is restarted at most this often per device: the skipped-message check
# runs before authentication, so a relay could forge "dead" envelopes, and each restart
# costs the device a one-time prekey.
RESTART_INTERVAL_MS: Final = 3_600_000


def _last_key(sessions: SessionManager, account: str, device: int) -> str:
    # A contact's device 1 keeps the key it had before devices existed.
    if account != sessions.user and device == 1:
        return f"restarted:{account}"
    return f"restarted:{account}/{device}"


async def _bundle(
    sessions: SessionManager, account: str, device: int, fetch: Fetch
) -> PrekeyBundle | None:
    """The verified bundle to restart with, or None when there is nothing to restart (a
    device no accepted list names) or the contact's identity changed (it waits for
    `trust`; a changed one found now is recorded as such)."""
    if account != sessions.user:
        contact = await sessions.contact(account)
        if contact.pending is not None:
            return None
        if device == 1 and await sessions.lists.device_one_listed(account):
            bundle = await sessions.fetch_verified(account, fetch)
            if not same_identity(bundle.identity, contact.identity):
                await sessions.on_key_changed(account, bundle.identity)
                return None
            return bundle
    dh_key = await sessions.lists.listed_key(account, device)
    if dh_key is None:
        return None
    return await device_bundle(sessions, Target(account, device, dh_key), fetch)


async def restart(
    sessions: SessionManager, account: str, device: int, fetch: Fetch
) -> DeviceEnvelope | None:
    """A fresh session with `account`'s `device` (kept in front of the old ones) whose
    first message is a session reset; its envelope, or None when not due (see
    RESTART_INTERVAL_MS) or not possible (see `_bundle`)."""
    key = _last_key(sessions, account, device)
    last = await sessions.store.get_setting(key)
    if last is not None and sessions.now_ms() - last < RESTART_INTERVAL_MS:
        return None
    bundle = await _bundle(sessions, account, device, fetch)
    if bundle is None:
        return None
    async with sessions.store.transaction():
        now = sessions.now_ms()
        session, envelope = Session.initiate(
            sessions.identity, sessions.user, bundle, sessions.group, now, encode_reset(),
            config=sessions.config,
        )  # fmt: skip
        old = await sessions.device_sessions(account, device)
        kept = [session, *old][: 1 + MAX_ARCHIVED_SESSIONS]
        await sessions.save_device_sessions(account, device, kept, now)
        await sessions.store.set_setting(key, now)
    return DeviceEnvelope(account, device, envelope)


async def views(sessions: SessionManager, account: str) -> tuple[ListVersion, ...]:
    """`lists` of a send to `account`: its version and our own (0 where none is held)."""
    names = dict.fromkeys((account, sessions.user))
    out = []
    for name in names:
        dlist = await sessions.lists.get(name)
        out.append(ListVersion(name, 0 if dlist is None else dlist.version))
    return tuple(out)
