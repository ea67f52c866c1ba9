"""How long a text one message may carry: its fan-out must fit one `send_devices` frame."""

from __future__ import annotations

import msgpack

from hushwire.client.text import encode_sent_copy
from hushwire.common.crypto.dh import DHGroup
from hushwire.common.crypto.envelope import Envelope, EnvelopeType
from hushwire.common.crypto.identity import MAX_PREKEY_ID
from hushwire.common.crypto.kem import KEM_CIPHERTEXT_LEN
from hushwire.common.crypto.ratchet import RatchetHeader
from hushwire.common.crypto.x3dh import InitialHeader
from hushwire.common.keys import IdentityPublic
from hushwire.common.messages import DeviceEnvelope, ListVersion, SendDevices


def max_text_bytes(
    max_frame: int, group: DHGroup, sender: str, recipient: str, envelopes: int = 1
) -> int:
    """The longest UTF-8 text whose fan-out to `envelopes` devices fits one
    `send_devices` frame under the relay's `max_frame`.

    Measured on a worst case envelope (version 2, initial with the KEM ciphertext,
    largest counters and ids, a sent copy's plaintext) with a body large enough that
    every msgpack length prefix has its widest form, so the bound holds for every text
    up to it.
    """
    big = 70_000
    size = group.public_size
    ident = IdentityPublic(group.name, bytes(32), bytes(size), bytes(64))
    name = max(sender, recipient, key=len)
    x3dh = InitialHeader(
        ident,
        bytes(size),
        MAX_PREKEY_ID,
        MAX_PREKEY_ID,
        MAX_PREKEY_ID,
        bytes(KEM_CIPHERTEXT_LEN),
    )
    envelope = Envelope(
        type=EnvelopeType.INITIAL,
        sender=name,
        recipient=name,
        envelope_id=bytes(16),
        sent_at_ms=2**63 - 1,
        header=RatchetHeader(bytes(size), 2**32 - 1, 2**32 - 1, bytes(32)),
        x3dh=x3dh,
        ciphertext=bytes(len(encode_sent_copy(name, "x" * big)) + 16),
        version=2,
    )
    one = DeviceEnvelope(name, 2**31, envelope.to_bytes())
    views = (ListVersion(sender, 2**63 - 1), ListVersion(recipient, 2**63 - 1))
    frame = SendDevices(id=2**63 - 1, envelopes=(one,) * envelopes, lists=views).to_wire()
    overhead = len(msgpack.packb(frame, use_bin_type=True)) - big * envelopes
    return max(0, (max_frame - overhead) // envelopes)
