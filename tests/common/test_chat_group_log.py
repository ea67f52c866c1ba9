"""A client's group log: persisted and restored exactly, and nothing else restored."""

from __future__ import annotations

import dataclasses

import pytest

from hushwire.common.chat_group_log import (
    LOG_VERSION,
    GroupLog,
    apply_change,
    create_group,
    join_from_welcome,
    make_welcome,
    propose,
)
from hushwire.common.chat_groups import ChangeOp
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.encoding import pack, unpack_canonical
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.errors import CryptoError, StaleGroupChange

IDS = {name: IdentityKeyPair.generate(X25519) for name in ("alice", "bob", "dave")}
KEYS = {name: identity.sign_key for name, identity in IDS.items()}
T0 = 1_700_000_000_000


def pins(*names: str) -> dict[str, bytes]:
    """The identity keys a creator pinned for these members."""
    return {name: KEYS[name] for name in names}


def busy_log() -> GroupLog:
    log, _ = create_group(IDS["alice"], "alice", "g", pins("bob"), T0)
    for op, kw in [
        (ChangeOp.ADD, {"users": ["dave"], "keys": KEYS}),
        (ChangeOp.RENAME, {"name": "renamed"}),
        (ChangeOp.PROMOTE, {"users": ["bob"]}),
    ]:
        log, _ = propose(log, IDS["alice"], op, T0, **kw)
    return log


def test_a_log_restores_exactly_and_keeps_working():
    log = busy_log()
    restored = GroupLog.from_bytes(log.to_bytes())
    assert restored == log
    # The restored log still knows a replay from a fork, and still moves on.
    with pytest.raises(StaleGroupChange):
        apply_change(restored, log.changes[2], KEYS)
    moved, _ = propose(restored, IDS["alice"], ChangeOp.RENAME, T0, name="again")
    assert moved.current.epoch == 5


def test_a_log_that_started_from_a_welcome_restores():
    alice, _ = create_group(IDS["alice"], "alice", "g", pins("bob"), T0)
    alice, add = propose(alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], keys=KEYS)
    dave = join_from_welcome("dave", "alice", make_welcome(alice), KEYS)
    assert GroupLog.from_bytes(dave.to_bytes()) == dave
    assert dave.changes == (add,)


def test_a_broken_chain_does_not_restore():
    log = busy_log()
    me, states, changes, vouched = unpack_canonical(log.to_bytes()[1:])
    for broken in (
        [states[0], states[2], states[3]],  # an epoch missing
        [states[0], [*states[1][:3], bytes(32), *states[1][4:]], states[2], states[3]],
    ):
        data = bytes([LOG_VERSION]) + pack([me, broken, changes[: len(broken)], vouched])
        with pytest.raises(CryptoError, match="chain"):
            GroupLog.from_bytes(data)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b"\x02" + b[1:],
        lambda b: b[:1],
        lambda b: b[:-1],
        lambda b: bytes([LOG_VERSION]) + pack(["Alice", *unpack_canonical(b[1:])[1:]]),
        lambda b: bytes([LOG_VERSION]) + pack([*unpack_canonical(b[1:])[:2], []]),
    ],
)
def test_malformed_logs_are_rejected(mutate):
    with pytest.raises(CryptoError):
        GroupLog.from_bytes(mutate(busy_log().to_bytes()))


def test_join_epoch_and_membership_survive_a_restore():
    log = busy_log()
    bob = dataclasses.replace(log, me="bob")
    restored = GroupLog.from_bytes(bob.to_bytes())
    assert restored.join_epoch == 1 and restored.active and restored.current.is_admin("bob")
