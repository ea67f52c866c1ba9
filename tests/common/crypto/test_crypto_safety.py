"""Safety numbers: libsignal's known answers, symmetry, and sensitivity to every input."""

from __future__ import annotations

import pytest

from hushwire.common.crypto.safety import SafetyNumber, pair_safety_number, safety_number
from hushwire.common.errors import CryptoError

from .conftest import make_user

# libsignal rust/protocol/src/fingerprint.rs, fingerprint_test_v1 (5200 iterations).
ALICE_KEY = bytes.fromhex("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")
BOB_KEY = bytes.fromhex("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
DISPLAY = "300354477692869396892869876765458257569162576843440918079131"
ALICE_SCAN = (
    "080112220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df1a220a20"
    "d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
)
BOB_SCAN = (
    "080112220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d1a220a20"
    "1e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
)


def test_libsignal_known_answer():
    a = pair_safety_number(b"+14152222222", ALICE_KEY, b"+14153333333", BOB_KEY)
    b = pair_safety_number(b"+14153333333", BOB_KEY, b"+14152222222", ALICE_KEY)
    assert a.digits == b.digits == DISPLAY
    assert a.scannable.hex() == ALICE_SCAN
    assert b.scannable.hex() == BOB_SCAN
    assert a.matches_scan(b.scannable) and b.matches_scan(a.scannable)
    assert not a.matches_scan(a.scannable)


def test_same_on_both_sides_and_formatted(group):
    alice, bob = make_user("alice", group), make_user("bob", group)
    mine = safety_number("alice", alice.identity.public(), "bob", bob.identity.public())
    theirs = safety_number("bob", bob.identity.public(), "alice", alice.identity.public())
    assert mine.digits == theirs.digits
    assert len(mine.digits) == 60 and mine.digits.isdigit()
    assert len(mine.groups()) == 12 and all(len(g) == 5 for g in mine.groups())
    assert str(mine).split() == mine.groups()
    assert mine.matches_scan(theirs.scannable)


def test_changes_when_either_identity_or_name_changes(group):
    alice, bob, mallory = (make_user(n, group) for n in ("alice", "bob", "mallory"))
    base = safety_number("alice", alice.identity.public(), "bob", bob.identity.public())
    changed = [
        safety_number("alice", mallory.identity.public(), "bob", bob.identity.public()),
        safety_number("alice", alice.identity.public(), "bob", mallory.identity.public()),
        safety_number("alice", alice.identity.public(), "bobby", bob.identity.public()),
    ]
    for other in changed:
        assert other.digits != base.digits
        assert not base.matches_scan(other.scannable)


def test_malformed_scans_raise():
    a = pair_safety_number(b"a", ALICE_KEY, b"b", BOB_KEY)
    with pytest.raises(CryptoError):
        a.matches_scan(b"short")
    with pytest.raises(CryptoError):
        a.matches_scan(b"\x08\x02" + a.scannable[2:])  # other version
    with pytest.raises(CryptoError):
        a.matches_scan(a.scannable[:2] + b"\x00" + a.scannable[3:])


def test_value_type_is_frozen():
    number = SafetyNumber(digits="0" * 60, scannable=b"")
    with pytest.raises(AttributeError):
        number.digits = "1" * 60  # type: ignore[misc]
