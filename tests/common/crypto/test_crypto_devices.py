"""Signed device lists: each rule a client applies, attacked."""

from __future__ import annotations

import dataclasses

import pytest

from hushwire.common.crypto.devices import (
    DEVICE_LIST_CONTEXT,
    MAX_DEVICES,
    DeviceList,
    accept_update,
    check_device_identity,
    first_device_list,
    verify_device_list,
)
from hushwire.common.crypto.dh import FFDHE3072, X25519
from hushwire.common.crypto.encoding import pack
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.errors import (
    DeviceListError,
    InvalidKey,
    InvalidSignature,
    StaleDeviceList,
    UnknownDevice,
)
from hushwire.common.keys import IdentityPublic, SignedDeviceList

T0 = 1_780_000_000


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.fixture
def alice(group):
    """Alice's account identity, with her first device's DH key."""
    return IdentityKeyPair.generate(group)


def _two_devices(alice, group):
    v1 = first_device_list("alice", group.name, "laptop", alice.dh.public, T0)
    v2, phone = v1.with_device("phone", group.generate().public, T0 + 60)
    return v1, v2, phone


def _verify(signed, alice, group, account="alice"):
    return verify_device_list(signed, account=account, identity=alice.public(), group=group)


def test_a_signed_list_verifies_and_round_trips(alice, group):
    _, v2, phone = _two_devices(alice, group)
    assert _verify(v2.sign(alice), alice, group) == v2
    assert phone.id == 2 and v2.version == 2 and v2.ids == {1, 2}
    assert DeviceList.decode(v2.encode()) == v2


def test_every_bit_flip_of_the_signature_is_rejected(alice, group):
    signed = _two_devices(alice, group)[1].sign(alice)
    for bit in range(len(signed.sig) * 8):
        with pytest.raises(InvalidSignature):
            _verify(dataclasses.replace(signed, sig=_flip(signed.sig, bit)), alice, group)


def test_every_bit_flip_of_the_body_is_rejected(alice, group):
    signed = _two_devices(alice, group)[1].sign(alice)
    for bit in range(0, len(signed.body) * 8, 7):
        with pytest.raises(InvalidSignature):
            _verify(dataclasses.replace(signed, body=_flip(signed.body, bit)), alice, group)


def test_a_list_signed_by_another_identity_is_rejected(alice, group):
    mallory = IdentityKeyPair.generate(group)
    forged = _two_devices(alice, group)[1].sign(mallory)
    with pytest.raises(InvalidSignature):
        _verify(forged, alice, group)


def test_an_unsigned_list_is_rejected(alice, group):
    body = _two_devices(alice, group)[1].encode()
    for sig in (b"", bytes(64), b"\x00" * 63):
        with pytest.raises((DeviceListError, InvalidSignature)):
            _verify(SignedDeviceList(body, sig), alice, group)


def test_a_signature_over_the_bare_body_is_not_a_device_list_signature(alice, group):
    """The context prefix keeps a signature made for anything else from passing."""
    body = _two_devices(alice, group)[1].encode()
    with pytest.raises(InvalidSignature):
        _verify(SignedDeviceList(body, alice.sign(body)), alice, group)
    assert _verify(SignedDeviceList(body, alice.sign(DEVICE_LIST_CONTEXT + body)), alice, group)


def test_a_genuine_list_for_another_account_or_group_is_rejected(alice, group):
    signed = _two_devices(alice, group)[1].sign(alice)
    with pytest.raises(DeviceListError, match="expected 'bob'"):
        _verify(signed, alice, group, account="bob")
    other = FFDHE3072 if group == X25519 else X25519
    with pytest.raises(DeviceListError, match="group"):
        verify_device_list(signed, account="alice", identity=alice.public(), group=other)


def test_a_signed_but_malformed_body_is_rejected(alice, group):
    """Even a body the identity signed is refused if it breaks the format's rules."""
    key = alice.dh.public
    bad_bodies = [
        pack([1, group.name, "alice", 0, [[1, "a", key, T0]]]),  # version 0
        pack([2, group.name, "alice", 1, [[1, "a", key, T0]]]),  # unknown format
        pack([1, group.name, "alice", 1, []]),  # no device
        pack([1, group.name, "alice", 1, [[2, "a", key, T0], [1, "b", b"k" + key, T0]]]),
        pack([1, group.name, "alice", 1, [[1, "a", key, T0], [2, "b", key, T0]]]),  # shared key
        pack([1, group.name, "alice", 1, [[1, "a\n", key, T0]]]),  # unprintable name
        pack([1, group.name, "Alice!", 1, [[1, "a", key, T0]]]),  # invalid account
        pack([1, group.name, "alice", 1, [[0, "a", key, T0]]]),  # device id 0
        pack([1, group.name, "alice", 1, [[1, "a", key, T0]]]) + b"\x00",  # trailing byte
    ]
    for body in bad_bodies:
        with pytest.raises(DeviceListError):
            _verify(SignedDeviceList(body, alice.sign(DEVICE_LIST_CONTEXT + body)), alice, group)


def test_an_invalid_dh_key_in_a_signed_list_is_rejected(alice, group):
    body = pack([1, group.name, "alice", 1, [[1, "a", b"\x00" * len(alice.dh.public), T0]]])
    with pytest.raises(InvalidKey):
        _verify(SignedDeviceList(body, alice.sign(DEVICE_LIST_CONTEXT + body)), alice, group)


def test_a_replayed_older_list_is_refused(alice, group):
    v1, v2, _ = _two_devices(alice, group)
    s1, s2 = v1.sign(alice), v2.sign(alice)
    accept_update(s1, v1, s2, v2)
    with pytest.raises(StaleDeviceList, match="older"):
        accept_update(s2, v2, s1, _verify(s1, alice, group))


def test_a_fork_with_the_same_version_is_refused(alice, group):
    v1, v2, _ = _two_devices(alice, group)
    fork, _ = v1.with_device("tablet", group.generate().public, T0 + 90)
    assert fork.version == v2.version
    with pytest.raises(StaleDeviceList, match="two different"):
        accept_update(v2.sign(alice), v2, fork.sign(alice), fork)


def test_the_same_list_again_changes_nothing(alice, group):
    _, v2, _ = _two_devices(alice, group)
    s2 = v2.sign(alice)
    changes = accept_update(s2, v2, s2, v2)
    assert changes.added == changes.removed == changes.rekeyed == ()


def test_changes_name_added_removed_and_rekeyed_devices(alice, group):
    v1, v2, phone = _two_devices(alice, group)
    assert accept_update(None, None, v1.sign(alice), v1).added == v1.devices
    assert accept_update(v1.sign(alice), v1, v2.sign(alice), v2).added == (phone,)
    v3 = v2.without_device(1)
    assert accept_update(v2.sign(alice), v2, v3.sign(alice), v3).removed == (v2.devices[0],)
    new_key = group.generate().public
    v4 = DeviceList("alice", group.name, 4, (dataclasses.replace(phone, dh_key=new_key),))
    changes = accept_update(v3.sign(alice), v3, v4.sign(alice), v4)
    assert [d.dh_key for d in changes.rekeyed] == [new_key]


def test_a_device_outside_the_signed_list_is_refused(alice, group):
    """A bundle or envelope from a device the relay injected, or with swapped keys."""
    _, v2, phone = _two_devices(alice, group)
    account = alice.public()
    laptop = check_device_identity(v2, 1, account, account)
    assert laptop.name == "laptop"
    with pytest.raises(UnknownDevice, match="not in"):
        check_device_identity(v2, 3, account, account)
    injected = IdentityKeyPair.generate(group)  # the relay's own keys for device 2
    with pytest.raises(UnknownDevice, match="not signed"):
        check_device_identity(v2, 2, injected.public(), account)
    swapped = IdentityPublic(account.group, account.sign_key, group.generate().public, b"")
    with pytest.raises(UnknownDevice, match="differs"):
        check_device_identity(v2, 2, swapped, account)
    assert (
        check_device_identity(v2, 2, dataclasses.replace(account, dh_key=phone.dh_key), account)
        == phone
    )


def test_ids_are_never_reused_and_the_last_device_stays(alice, group):
    v1, v2, _ = _two_devices(alice, group)
    v3 = v2.without_device(2)
    v4, tablet = v3.with_device("tablet", group.generate().public, T0 + 120)
    assert tablet.id == 2  # the highest listed is 1 again: v3 no longer names 2
    with pytest.raises(DeviceListError, match="at least one"):
        v1.without_device(1)
    with pytest.raises(UnknownDevice):
        v4.without_device(9)


def test_the_device_limit(alice, group):
    dlist = first_device_list("alice", group.name, "d1", alice.dh.public, T0)
    for i in range(2, MAX_DEVICES + 1):
        dlist, _ = dlist.with_device(f"d{i}", X25519.generate().public, T0)
    with pytest.raises(DeviceListError, match="at most"):
        dlist.with_device("one too many", X25519.generate().public, T0)
