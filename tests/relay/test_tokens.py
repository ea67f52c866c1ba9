"""Tokens: format, salted hash pinned to HMAC-SHA256, constant-time verification."""

from __future__ import annotations

import base64

from hushwire.relay import tokens
from hushwire.relay.tokens import DUMMY, hash_token, new_salt, new_token, verify_token


def test_new_token_has_prefix_and_at_least_128_random_bits() -> None:
    tok = new_token()
    assert tok.startswith("hw_")
    body = tok[len("hw_") :]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    assert len(raw) >= 16
    assert all(c.isalnum() or c in "-_" for c in body)


def test_new_tokens_and_salts_are_distinct() -> None:
    assert len({new_token() for _ in range(1000)}) == 1000
    assert len({new_salt() for _ in range(1000)}) == 1000
    assert len(new_salt()) == tokens.SALT_BYTES


def test_hash_is_hmac_sha256_keyed_by_salt() -> None:
    # RFC 4231 test case 2 pins the construction: changing it would orphan every
    # stored token hash.
    got = hash_token("what do ya want for nothing?", b"Jefe")
    assert got.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_hash_depends_on_token_and_salt() -> None:
    salt = new_salt()
    tok = new_token()
    assert hash_token(tok, salt) == hash_token(tok, salt)
    assert hash_token(tok, salt) != hash_token(tok, new_salt())
    assert hash_token(tok, salt) != hash_token(tok + "x", salt)


def test_verify_accepts_right_token_only() -> None:
    salt = new_salt()
    tok = new_token()
    stored = hash_token(tok, salt)
    assert verify_token(tok, salt, stored)
    flipped = tok[:-1] + ("A" if tok[-1] != "A" else "B")
    assert not verify_token(flipped, salt, stored)
    assert not verify_token(tok, new_salt(), stored)
    assert not verify_token("", salt, stored)


def test_verify_rejects_overlong_and_non_str() -> None:
    salt = new_salt()
    long_tok = "hw_" + "a" * 300
    assert not verify_token(long_tok, salt, hash_token(long_tok, salt))
    assert not verify_token(b"hw_bytes", salt, hash_token("hw_bytes", salt))  # type: ignore[arg-type]


def test_dummy_has_the_shape_of_a_real_record_and_matches_nothing() -> None:
    salt, digest = DUMMY
    assert len(salt) == tokens.SALT_BYTES
    assert len(digest) == tokens.HASH_BYTES
    assert not any(verify_token(new_token(), salt, digest) for _ in range(100))
