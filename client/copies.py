"""Sealing one outgoing message for the devices besides the contact's device 1.

`SessionManager.prepare_send` seals for the contact's device 1 (trust on first use, key
changes, held messages: client/session.py); `seal_copies` then seals the same message for
every other target of the plan (client/fanout.py): the contact's other devices get the
text, our own other devices a sent copy. A device without a session starts one from its
bundle, which must carry the account's identity key and the DH key its verified list
gives it, so a relay cannot slip in a device or a key of its own. All copies and the
outbox record are committed together before anything is sent.
"""

from __future__ import annotations

import dataclasses

from hushwire.client.errors import BadBundle
from hushwire.client.fanout import Plan, Target, encode_record
from hushwire.client.outcomes import Outgoing
from hushwire.client.session import MAX_ARCHIVED_SESSIONS, Fetch, SessionManager
from hushwire.client.text import encode_sent_copy, encode_text
from hushwire.common.crypto.envelope import Envelope, Session
from hushwire.common.errors import LocalProtocolError
from hushwire.common.keys import PrekeyBundle
from hushwire.common.messages import DeviceEnvelope


async def device_bundle(sessions: SessionManager, target: Target, fetch: Fetch) -> PrekeyBundle:
    """`target`'s verified bundle, refused (BadBundle) unless its identity record carries
    the account's Ed25519 key and the DH key the account's verified list gives it."""
    bundle = await sessions.fetch_verified(target.account, fetch, target.device)
    if target.account == sessions.user:
        account = sessions.identity.public()
    else:
        account = (await sessions.contact(target.account)).identity
    ident = bundle.identity
    if ident.sign_key != account.sign_key or ident.dh_key != target.dh_key:
        raise BadBundle(
            f"the relay served keys for device {target.device} of {target.account} that its "
            "signed device list does not give it; nothing was sent"
        )
    return bundle


async def seal_copies(
    sessions: SessionManager, out: Outgoing, text: str, plan: Plan, fetch: Fetch
) -> Outgoing:
    """`out` with one envelope for every target of `plan` (those it already has are
    kept as they are, those no longer targeted dropped), committed to the outbox."""
    have = {(c.user, c.device): c for c in out.copies}
    bundles: dict[tuple[str, int], PrekeyBundle] = {}
    for t in plan.targets:
        key = (t.account, t.device)
        if key not in have and not await sessions.device_sessions(*key):
            bundles[key] = await device_bundle(sessions, t, fetch)
    copy_text = encode_sent_copy(out.contact, text)
    async with sessions.store.transaction():
        now = sessions.now_ms()
        copies = []
        for t in plan.targets:
            key = (t.account, t.device)
            if key in have:
                copies.append(have[key])
                continue
            plaintext = copy_text if t.account == sessions.user else encode_text(text)
            current = await sessions.device_sessions(*key)
            if current:
                envelope = current[0].encrypt(plaintext, out.sent_at_ms)
            elif key in bundles:
                session, envelope = Session.initiate(
                    sessions.identity, sessions.user, bundles[key], sessions.group,
                    out.sent_at_ms, plaintext, config=sessions.config,
                )  # fmt: skip
                current = [session]
            else:
                raise LocalProtocolError(f"the session with {t.account}/{t.device} vanished")
            await sessions.save_device_sessions(*key, current[: 1 + MAX_ARCHIVED_SESSIONS], now)
            copies.append(DeviceEnvelope(t.account, t.device, envelope))
        sealed = dataclasses.replace(out, copies=tuple(copies), lists=plan.lists)
        first_id = None
        if not out.envelope_id and copies:  # no device 1: the message takes a copy's id
            first_id = Envelope.from_bytes(copies[0].body).envelope_id
            sealed = dataclasses.replace(sealed, envelope_id=first_id)
        await sessions.store.update_outgoing(
            out.uid,
            "pending",
            text=None if first_id is None else text,
            envelope_id=first_id,
            envelope=encode_record(sealed.envelopes(), plan.lists),
        )
    return sealed
