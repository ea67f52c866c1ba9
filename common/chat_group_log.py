"""The membership log one client holds for a group, and the operations on it.

`common/chat_groups.py` says what a valid state and change are; this module keeps the
chain of states a client has accepted since it joined, creates and proposes changes,
applies received ones, builds and reads welcomes, and persists the log.

    persisted = 0x01 || msgpack [me, [state...], [change bytes...]]   (keep it encrypted)
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from hushwire.common.chat_groups import (
    GROUP_FORMAT,
    NO_STATE,
    NONCE_LEN,
    ChangeOp,
    GroupChange,
    GroupState,
    SignedChange,
    genesis,
    group_id_for,
    next_state,
    sorted_unique,
)
from hushwire.common.crypto.encoding import expect_bytes, expect_list, pack, unpack_canonical
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.errors import (
    CryptoError,
    GroupChangeRejected,
    GroupForked,
    StaleGroupChange,
)
from hushwire.common.names import is_valid_username

LOG_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class GroupLog:
    """The states one client holds for a group, from the epoch it joined to now.

    `changes[i]` is the signed change that made `states[i]` (for the first state, the
    create or the add that let this client in), kept to tell a harmless duplicate from
    a concurrent change signed for an epoch already applied.
    """

    me: str
    states: tuple[GroupState, ...]
    changes: tuple[bytes, ...]

    @property
    def current(self) -> GroupState:
        return self.states[-1]

    @property
    def group_id(self) -> bytes:
        return self.current.group_id

    @property
    def join_epoch(self) -> int:
        return self.states[0].epoch

    @property
    def active(self) -> bool:
        """Whether this client is still a member (a removed member's log stays readable)."""
        return self.current.is_member(self.me)

    def state_at(self, epoch: int) -> GroupState | None:
        index = epoch - self.join_epoch
        return self.states[index] if 0 <= index < len(self.states) else None

    def to_bytes(self) -> bytes:
        """Version byte, then msgpack; for the client's store (encrypted at rest)."""
        states = [state.to_wire() for state in self.states]
        return bytes([LOG_VERSION]) + pack([self.me, states, list(self.changes)])

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupLog:
        """Inverse of `to_bytes`; CryptoError unless the states form one unbroken chain."""
        if not data or data[0] != LOG_VERSION:
            raise CryptoError("unsupported group log version")
        try:
            me, states, changes = expect_list(unpack_canonical(data[1:]), 3)
            if not is_valid_username(me) or not isinstance(states, list) or not states:
                raise ValueError("expected a member and at least one state")
            parsed = tuple(GroupState.from_wire(state) for state in states)
            wires = tuple(expect_bytes(change) for change in expect_list(changes, len(parsed)))
            for before, after in pairwise(parsed):
                if (after.group_id, after.epoch, after.prev) != (
                    before.group_id,
                    before.epoch + 1,
                    before.hash,
                ):
                    raise ValueError("states do not form a chain")
        except ValueError as exc:
            raise CryptoError(f"malformed group log: {exc}") from None
        return cls(me, parsed, wires)


def create_group(
    identity: IdentityKeyPair,
    creator: str,
    name: str,
    members: Iterable[str],
    now_ms: int,
    *,
    admins: Iterable[str] = (),
    nonce: bytes | None = None,
) -> tuple[GroupLog, bytes]:
    """A new group with `creator` as admin; returns the creator's log and the change
    to send (content type GROUP_CHANGE) to every other member."""
    users = sorted_unique([creator, *members])
    chosen = nonce if nonce is not None else secrets.token_bytes(NONCE_LEN)
    change = GroupChange(
        group_id=group_id_for(creator, chosen),
        epoch=1,
        prev=NO_STATE,
        signer=creator,
        issued_at_ms=now_ms,
        op=ChangeOp.CREATE,
        users=users,
        admins=sorted_unique([creator, *admins]),
        name=name,
        nonce=chosen,
    )
    wire = _sign_checked(change, identity)
    signed = SignedChange.from_bytes(wire)
    state = genesis(signed, {creator: identity.sign_key})
    return GroupLog(creator, (state,), (wire,)), wire


def propose(
    log: GroupLog,
    identity: IdentityKeyPair,
    op: ChangeOp,
    now_ms: int,
    *,
    users: Iterable[str] = (),
    admins: Iterable[str] = (),
    name: str = "",
) -> tuple[GroupLog, bytes]:
    """Sign a change to `log`'s current state and apply it locally.

    Returns the new log and the change to send to every member of the old and the new
    state (a removed member learns of its removal). Raises GroupChangeRejected if the
    change is not allowed, exactly as a receiving member would.
    """
    state = log.current
    change = GroupChange(
        group_id=state.group_id,
        epoch=state.epoch + 1,
        prev=state.hash,
        signer=log.me,
        issued_at_ms=now_ms,
        op=op,
        users=sorted_unique(users),
        admins=sorted_unique(admins),
        name=name,
    )
    wire = _sign_checked(change, identity)
    return apply_change(log, wire, {log.me: identity.sign_key}), wire


def _sign_checked(change: GroupChange, identity: IdentityKeyPair) -> bytes:
    """Sign, then parse back: what we send must pass the same strict parse as input."""
    try:
        wire = change.sign(identity)
    except ValueError as exc:
        raise GroupChangeRejected(f"cannot encode change: {exc}") from None
    SignedChange.from_bytes(wire)
    return wire


def apply_change(log: GroupLog, data: bytes, identity_keys: Mapping[str, bytes]) -> GroupLog:
    """A member's client applies a received change, or raises without changing anything.

    A change for an epoch already applied is a StaleGroupChange when it is that very
    change (a duplicate) or does not verify against that epoch; a different change that
    does verify there is a GroupForked (two admins changed the same state, or someone is
    showing members different histories): the client shows it, never picks silently.
    """
    signed = SignedChange.from_bytes(data)
    epoch = signed.change.epoch
    if epoch <= log.current.epoch:
        _check_old_change(log, signed, identity_keys)
    state = next_state(log.current, signed, identity_keys)
    return GroupLog(log.me, (*log.states, state), (*log.changes, data))


def _check_old_change(
    log: GroupLog, signed: SignedChange, identity_keys: Mapping[str, bytes]
) -> None:
    epoch = signed.change.epoch
    before = log.state_at(epoch - 1)
    if before is None or log.changes[epoch - log.join_epoch] == signed.wire:
        raise StaleGroupChange(f"epoch {epoch} already applied")
    try:
        next_state(before, signed, identity_keys)
    except CryptoError:
        raise StaleGroupChange(f"epoch {epoch} already applied") from None
    raise GroupForked(f"two different changes signed for epoch {epoch}")


def join_group(
    me: str, data: bytes, identity_keys: Mapping[str, bytes], *, welcome: bool
) -> GroupLog:
    """Start a log from a create change (`welcome=False`) or a welcome, as member `me`.

    A welcome is the state an add applies to and the add itself: the admin's signature
    over the state hash vouches for that state, so no earlier history is needed, and none
    is given (an added member reads only what is sent after it joined).
    """
    if not welcome:
        state = genesis(SignedChange.from_bytes(data), identity_keys)
        change = data
    else:
        before, change = parse_welcome(data)
        signed = SignedChange.from_bytes(change)
        if signed.change.op is not ChangeOp.ADD or signed.change.prev != before.hash:
            raise GroupChangeRejected("a welcome carries an add to the state it comes with")
        state = next_state(before, signed, identity_keys)
        if me not in signed.change.users:
            raise GroupChangeRejected("the welcome does not add us")
    if not state.is_member(me):
        raise GroupChangeRejected("we are not a member of this group")
    return GroupLog(me, (state,), (change,))


def make_welcome(log: GroupLog) -> bytes:
    """The welcome for the members added by `log`'s last change (an add)."""
    if (
        len(log.states) < 2
        or SignedChange.from_bytes(log.changes[-1]).change.op is not ChangeOp.ADD
    ):
        raise GroupChangeRejected("the last change is not an add")
    return pack([GROUP_FORMAT, log.states[-2].to_wire(), log.changes[-1]])


def parse_welcome(data: bytes) -> tuple[GroupState, bytes]:
    try:
        version, state, change = expect_list(unpack_canonical(data), 3)
        if version != GROUP_FORMAT:
            raise ValueError("unsupported welcome version")
        return GroupState.from_wire(state), expect_bytes(change)
    except ValueError as exc:
        raise GroupChangeRejected(f"malformed welcome: {exc}") from None


def change_recipients(before: GroupState | None, after: GroupState, me: str) -> tuple[str, ...]:
    """Who must receive a change: every member before or after it, except the sender."""
    old = before.members if before is not None else ()
    return tuple(user for user in sorted_unique([*old, *after.members]) if user != me)
