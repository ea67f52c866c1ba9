"""A group message encrypted once, its key sent to each device over the pairwise ratchet.

Pairwise fan-out seals a whole group message once per recipient device: O(devices)
copies of a message whose `seen` list itself grows with the group. Instead the sender
encrypts the group message once under a fresh random key K and seals only K and the
hash of that ciphertext (the "key note") in each device's Double Ratchet envelope:

    payload  = AES-256-GCM(K, nonce = 12 zero bytes, message,
                           ad = b"hushwire/group-payload/v1")      (ciphertext || tag)
    key note = msgpack [1, K bin(32), SHA-256(payload) bin(32)]

K (32 bytes from the OS CSPRNG) is used for one message only, so the fixed nonce never
repeats under a key. Every property still comes from the pairwise sessions: only
devices given a key note can read the payload (a removed member gets none, whatever the
relay forwards); K and the ratchet keys that carried it are deleted after use (forward
secrecy per message); and the note arrives over the sender's authenticated session and
names the exact payload bytes, so a member who learned K cannot pass off another payload
as the sender's (it would have to send it under its own note, as itself).
"""

from __future__ import annotations

from typing import Final

from Crypto.Hash import SHA256

from hushwire.common.crypto.encoding import (
    expect_bytes,
    expect_list,
    pack,
    unpack_canonical,
)
from hushwire.common.crypto.primitives import (
    AEAD_KEY_LEN,
    AEAD_NONCE_LEN,
    HASH_LEN,
    OS_RANDOM,
    Random,
    aead_open,
    aead_seal,
)
from hushwire.common.errors import DecryptionError, MalformedEnvelope

KEY_NOTE_VERSION: Final = 1
PAYLOAD_AD: Final = b"hushwire/group-payload/v1"
_NONCE: Final = bytes(AEAD_NONCE_LEN)


def seal_group_payload(message: bytes, rand: Random = OS_RANDOM) -> tuple[bytes, bytes]:
    """(key note to seal for every device, payload to send once) for one message."""
    key = rand(AEAD_KEY_LEN)
    payload = aead_seal(key, _NONCE, message, PAYLOAD_AD)
    return pack([KEY_NOTE_VERSION, key, SHA256.new(payload).digest()]), payload


def open_group_payload(key_note: bytes, payload: bytes) -> bytes:
    """The message, if `payload` is exactly the one the note names and decrypts.

    MalformedEnvelope for a note that does not parse, DecryptionError for a payload
    other than the named one or one that fails the AEAD check.
    """
    try:
        version, key, digest = expect_list(unpack_canonical(key_note), 3)
        if version != KEY_NOTE_VERSION:
            raise ValueError("unsupported key note version")
        key, digest = expect_bytes(key, AEAD_KEY_LEN), expect_bytes(digest, HASH_LEN)
    except ValueError as exc:
        raise MalformedEnvelope(f"malformed group key note: {exc}") from None
    if SHA256.new(payload).digest() != digest:
        raise DecryptionError("the payload is not the one the key note names")
    return aead_open(key, _NONCE, payload, PAYLOAD_AD)
