"""SCRAM-SHA-1 (RFC 5802), the client side and the server's stored keys, for the XMPP peers.

A bench tool, not product code: the XMPP load generator logs in with it, and the bench
writes Prosody's account files and checks ejabberd's with the same functions. Without
channel binding (gs2 header `n,,`), as both servers offer it over direct TLS.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from dataclasses import dataclass

GS2_HEADER = b"n,,"


class ScramError(Exception):
    """The server's SCRAM message is malformed or its signature is wrong."""


@functools.lru_cache(maxsize=65536)
def salted_password(password: bytes, salt: bytes, iterations: int) -> bytes:
    """Hi() of RFC 5802 section 2.2; cached, as a client may (the salt is per account)."""
    return hashlib.pbkdf2_hmac("sha1", password, salt, iterations)


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha1).digest()


def stored_keys(password: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey): what a server keeps instead of the password (section 3)."""
    salted = salted_password(password, salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return hashlib.sha1(client_key).digest(), _hmac(salted, b"Server Key")


def parse_attributes(message: bytes) -> dict[bytes, bytes]:
    """`a=1,b=2` -> {b"a": b"1", b"b": b"2"} (values may contain `=`)."""
    out: dict[bytes, bytes] = {}
    for part in message.split(b","):
        key, sep, value = part.partition(b"=")
        if not sep or len(key) != 1:
            raise ScramError(f"bad SCRAM attribute {part!r}")
        out[key] = value
    return out


@dataclass
class ScramClient:
    """One login: client-first, then client-final from the server-first, then verify."""

    user: bytes
    password: bytes
    nonce: bytes
    _bare: bytes = b""
    _server_signature: bytes = b""

    def first(self) -> bytes:
        self._bare = b"n=" + self.user + b",r=" + self.nonce
        return GS2_HEADER + self._bare

    def final(self, server_first: bytes) -> bytes:
        attrs = parse_attributes(server_first)
        try:
            nonce, salt, iterations = attrs[b"r"], base64.b64decode(attrs[b"s"]), int(attrs[b"i"])
        except (KeyError, ValueError) as exc:
            raise ScramError(f"bad server-first {server_first!r}") from exc
        if not nonce.startswith(self.nonce) or iterations < 1:
            raise ScramError(f"bad server-first {server_first!r}")
        without_proof = b"c=" + base64.b64encode(GS2_HEADER) + b",r=" + nonce
        auth_message = self._bare + b"," + server_first + b"," + without_proof
        salted = salted_password(self.password, salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        signature = _hmac(hashlib.sha1(client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return without_proof + b",p=" + base64.b64encode(proof)

    def verify(self, server_final: bytes) -> None:
        attrs = parse_attributes(server_final)
        got = base64.b64decode(attrs.get(b"v", b""))
        if not self._server_signature or not hmac.compare_digest(got, self._server_signature):
            raise ScramError(f"server signature mismatch: {server_final!r}")
