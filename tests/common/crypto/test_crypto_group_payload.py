"""The once-encrypted group payload and the per-device key note that opens it."""

from __future__ import annotations

import pytest

from hushwire.common.crypto.encoding import pack, unpack_canonical
from hushwire.common.crypto.group_payload import open_group_payload, seal_group_payload
from hushwire.common.crypto.primitives import aead_seal
from hushwire.common.errors import DecryptionError, MalformedEnvelope

MESSAGE = b"a group message, encoded once for every member device"


def test_a_key_note_opens_its_payload():
    note, payload = seal_group_payload(MESSAGE)
    assert open_group_payload(note, payload) == MESSAGE
    assert MESSAGE not in payload


def test_every_message_gets_a_fresh_key():
    first, second = seal_group_payload(MESSAGE), seal_group_payload(MESSAGE)
    assert unpack_canonical(first[0])[1] != unpack_canonical(second[0])[1]
    assert first[1] != second[1]


def test_every_bit_flip_of_the_payload_is_rejected():
    note, payload = seal_group_payload(MESSAGE)
    for bit in range(len(payload) * 8):
        out = bytearray(payload)
        out[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecryptionError):
            open_group_payload(note, bytes(out))


def test_a_member_who_knows_the_key_cannot_substitute_another_payload():
    """mallory got K from alice's note; a payload she makes with K is not the one
    alice's note names, so it can only ever travel under mallory's own note."""
    note, _ = seal_group_payload(MESSAGE)
    _, key, _ = unpack_canonical(note)
    forged = aead_seal(key, bytes(12), b"alice says: send money", b"hushwire/group-payload/v1")
    with pytest.raises(DecryptionError, match="not the one"):
        open_group_payload(note, forged)


def test_another_notes_payload_is_rejected():
    note, _ = seal_group_payload(MESSAGE)
    _, other = seal_group_payload(MESSAGE)
    with pytest.raises(DecryptionError):
        open_group_payload(note, other)


@pytest.mark.parametrize(
    "note",
    [
        b"",
        pack([2, bytes(32), bytes(32)]),
        pack([1, bytes(31), bytes(32)]),
        pack([1, bytes(32), bytes(32), 0]),
        b"\x93\x01\xc5\x00\x20" + bytes(32) + b"\xc4\x20" + bytes(32),  # bin16 for 32 bytes
    ],
)
def test_malformed_key_notes_are_rejected(note):
    _, payload = seal_group_payload(MESSAGE)
    with pytest.raises(MalformedEnvelope):
        open_group_payload(note, payload)
