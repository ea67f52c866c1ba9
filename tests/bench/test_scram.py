"""bench/scram.py against RFC 5802 section 5's example exchange."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from bench.scram import ScramClient, ScramError, parse_attributes, stored_keys

# RFC 5802 section 5: user "user", password "pencil".
CLIENT_NONCE = b"fyko+d2lbbFgONRv9qkxdawL"
SERVER_FIRST = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
CLIENT_FINAL = b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
SERVER_FINAL = b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="


def rfc_client() -> ScramClient:
    return ScramClient(b"user", b"pencil", CLIENT_NONCE)


def test_rfc5802_exchange() -> None:
    client = rfc_client()
    assert client.first() == b"n,,n=user,r=" + CLIENT_NONCE
    assert client.final(SERVER_FIRST) == CLIENT_FINAL
    client.verify(SERVER_FINAL)


def test_wrong_server_signature_is_refused() -> None:
    client = rfc_client()
    client.first()
    client.final(SERVER_FIRST)
    forged = bytearray(base64.b64decode(SERVER_FINAL[2:]))
    forged[0] ^= 1
    with pytest.raises(ScramError):
        client.verify(b"v=" + base64.b64encode(bytes(forged)))


def test_server_nonce_must_extend_the_client_nonce() -> None:
    client = rfc_client()
    client.first()
    with pytest.raises(ScramError):
        client.final(b"r=someoneelse,s=QSXCR+Q6sek8bf92,i=4096")


def test_stored_keys_verify_the_rfc_proof() -> None:
    # A server holding only (StoredKey, ServerKey) accepts the RFC's proof and produces
    # its signature: the keys the bench writes into Prosody's account files are right.
    stored, server = stored_keys(b"pencil", base64.b64decode(b"QSXCR+Q6sek8bf92"), 4096)
    bare = b"n=user,r=" + CLIENT_NONCE
    without_proof = CLIENT_FINAL.rsplit(b",p=", 1)[0]
    auth = bare + b"," + SERVER_FIRST + b"," + without_proof
    signature = hmac.new(stored, auth, hashlib.sha1).digest()
    proof = base64.b64decode(parse_attributes(CLIENT_FINAL)[b"p"])
    client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
    assert hashlib.sha1(client_key).digest() == stored
    assert hmac.new(server, auth, hashlib.sha1).digest() == base64.b64decode(SERVER_FINAL[2:])


def test_malformed_attribute_is_refused() -> None:
    with pytest.raises(ScramError):
        parse_attributes(b"r=abc,garbage")
