"""The relay's device rules: lists it stores, links it accepts, fan-outs it queues."""

from __future__ import annotations

import pytest

from hushwire.common.crypto.devices import first_device_list
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.errors import ErrorCode, RequestError
from hushwire.common.messages import DeviceEnvelope, ListVersion
from hushwire.common.names import is_valid_username
from hushwire.relay.devices import (
    AccountDevices,
    check_list,
    linked_by,
    mismatched,
    principal,
    removed_by,
    send_accounts,
    split_principal,
)


def _code(call):
    with pytest.raises(RequestError) as exc:
        call()
    return exc.value.code


@pytest.fixture
def alice():
    identity = IdentityKeyPair.generate(X25519)
    v1 = first_device_list("alice", "x25519", "laptop", identity.dh.public, 1)
    v2, _ = v1.with_device("phone", X25519.generate().public, 2)
    return identity, v1, v2


def _check(signed, identity, account="alice"):
    return check_list(
        signed, account=account, sign_key=identity.sign_key, group="x25519", public_size=32
    )


def test_only_a_list_signed_by_the_account_identity_is_stored(alice):
    identity, _, v2 = alice
    assert _check(v2.sign(identity), identity) == v2
    mallory = IdentityKeyPair.generate(X25519)
    assert _code(lambda: _check(v2.sign(mallory), identity)) == ErrorCode.BAD_KEYS
    assert _code(lambda: _check(v2.sign(identity), identity, "bob")) == ErrorCode.BAD_KEYS


def test_publish_may_remove_and_rename_but_not_add_or_go_back(alice):
    _, v1, v2 = alice
    current = AccountDevices("alice", 2, frozenset({1, 2}), None, frozenset({1, 2}))
    assert removed_by(v2.without_device(2), current) == {2}
    assert _code(lambda: removed_by(v1, current)) == ErrorCode.STALE_DEVICE_LIST
    one = AccountDevices("alice", 1, frozenset({1}), None, frozenset({1}))
    v3 = v2.without_device(1)
    assert _code(lambda: removed_by(v3, one)) == ErrorCode.UNKNOWN_DEVICE


def test_a_link_adds_exactly_one_device_at_the_next_version(alice):
    _, _, v2 = alice
    one = AccountDevices("alice", 1, frozenset({1}), None, frozenset({1}))
    assert linked_by(v2, one, max_devices=5).name == "phone"
    assert _code(lambda: linked_by(v2, one, max_devices=1)) == ErrorCode.DEVICE_LIMIT
    skipped = AccountDevices("alice", 0, frozenset({1}), None, frozenset({1}))
    assert _code(lambda: linked_by(v2, skipped, max_devices=5)) == ErrorCode.STALE_DEVICE_LIST
    # A link that also drops a device (one added, one removed) is refused.
    v3, _ = v2.with_device("tablet", X25519.generate().public, 3)
    two = AccountDevices("alice", 3, frozenset({1, 2}), None, frozenset({1, 2}))
    assert _code(lambda: linked_by(v3.without_device(1), two, max_devices=5)) == ErrorCode.BAD_KEYS


def _env(user, device):
    return DeviceEnvelope(user=user, device=device, body=b"x")


CURRENT = {
    "alice": AccountDevices("alice", 2, frozenset({1, 2}), None, frozenset({1, 2})),
    "bob": AccountDevices("bob", 3, frozenset({1, 4}), None, frozenset({1, 4})),
}


def test_a_send_matching_the_current_views_is_accepted():
    envs = [_env("bob", 1), _env("bob", 4), _env("alice", 2)]
    claimed = send_accounts("alice", envs, [ListVersion("bob", 3), ListVersion("alice", 2)])
    assert mismatched("alice", 1, envs, claimed, CURRENT) == []


@pytest.mark.parametrize(
    ("envs", "views", "wrong"),
    [
        ([_env("bob", 1)], [("bob", 3), ("alice", 2)], ["bob", "alice"]),  # a device missing
        (
            [_env("bob", 1), _env("bob", 4), _env("bob", 5), _env("alice", 2)],
            [("bob", 3), ("alice", 2)],
            ["bob"],
        ),  # an extra (removed) device
        (
            [_env("bob", 1), _env("bob", 4), _env("alice", 2)],
            [("bob", 2), ("alice", 2)],
            ["bob"],
        ),  # right devices, stale version
        ([_env("bob", 1), _env("bob", 4)], [("bob", 3), ("alice", 1)], ["alice"]),  # own view
    ],
)
def test_a_stale_view_names_exactly_the_accounts_it_got_wrong(envs, views, wrong):
    claimed = send_accounts("alice", envs, [ListVersion(u, v) for u, v in views])
    assert [a.account for a in mismatched("alice", 1, envs, claimed, CURRENT)] == wrong


def test_a_partial_send_targets_some_current_devices_at_current_versions():
    """A session reset goes to one device: allowed with `partial`, never to a device the
    account does not have, to the sender itself, or under a stale version."""
    views = [ListVersion("bob", 3), ListVersion("alice", 2)]
    one = [_env("bob", 4)]
    claimed = send_accounts("alice", one, views)
    assert [a.account for a in mismatched("alice", 1, one, claimed, CURRENT)] == ["bob", "alice"]
    assert mismatched("alice", 1, one, claimed, CURRENT, partial=True) == []
    for envs, stale in (
        ([_env("bob", 5)], views),  # not a device of bob
        ([_env("alice", 1)], views),  # the sending device itself
        (one, [ListVersion("bob", 2), ListVersion("alice", 2)]),  # stale version
    ):
        claimed = send_accounts("alice", envs, stale)
        assert mismatched("alice", 1, envs, claimed, CURRENT, partial=True) != []


@pytest.mark.parametrize(
    ("envs", "views"),
    [
        ([_env("bob", 1)], [("bob", 3)]),  # no view of the sender's own account
        ([_env("bob", 1), _env("bob", 1)], [("bob", 3), ("alice", 2)]),  # repeated device
        ([_env("carol", 1)], [("bob", 3), ("alice", 2)]),  # envelope without a view
        ([_env("bob", 1)], [("bob", 3), ("bob", 3), ("alice", 2)]),  # repeated view
        ([], [("bob", 3), ("alice", 2)]),  # nothing to send
    ],
)
def test_a_malformed_send_is_a_bad_request(envs, views):
    lists = [ListVersion(u, v) for u, v in views]
    assert _code(lambda: send_accounts("alice", envs, lists)) == ErrorCode.BAD_REQUEST


def test_principal_names_round_trip_and_device_one_is_the_account():
    assert principal("alice", 1) == "alice"
    assert split_principal(principal("alice", 7)) == ("alice", 7)
    assert split_principal("alice") == ("alice", 1)
    assert not is_valid_username(principal("alice", 2))
