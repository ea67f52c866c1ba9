"""The membership log one client holds for a group, and the operations on it.

`common/chat_groups.py` says what a valid state and change are; this module keeps the
chain of states a client has accepted since it joined, creates and proposes changes,
applies received ones, builds and reads welcomes, and persists the log.

    welcome   = [1, state the add applies to, the add, [[member, identity key]...]]
    persisted = 0x01 || msgpack [me, [state...], [change bytes...], [[member, key]...]]
                (in the client's store, encrypted at rest)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from Crypto.Hash import SHA256

from hushwire.common.chat_groups import (
    GROUP_FORMAT,
    MAX_MEMBERS,
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
    strictly_ascending,
)
from hushwire.common.crypto.encoding import expect_bytes, expect_list, pack, unpack_canonical
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.crypto.primitives import (
    ED25519_KEY_LEN,
    OS_RANDOM,
    Random,
    ed25519_check_public,
)
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
    a concurrent change signed for an epoch already applied. `vouched` maps each member
    to the identity key an admin vouched for when adding it (in a signed create or add,
    or in the welcome that admin sent us): the key to check that member's signatures
    with when this client has pinned none of its own, so a member it never talked to is
    not taken on the relay's word.
    """

    me: str
    states: tuple[GroupState, ...]
    changes: tuple[bytes, ...]
    vouched: Mapping[str, bytes]

    def keys(self, pinned: Mapping[str, bytes]) -> dict[str, bytes]:
        """The key per member to verify its changes: the pinned one, else the vouched."""
        return {**self.vouched, **pinned}

    def key_conflicts(self, pinned: Mapping[str, bytes]) -> tuple[str, ...]:
        """Members whose pinned key differs from the vouched one: show them (a changed
        identity, or a key someone substituted) before trusting either."""
        return tuple(
            user
            for user in self.current.members
            if user in pinned and user in self.vouched and pinned[user] != self.vouched[user]
        )

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
        vouched = [[user, key] for user, key in sorted(self.vouched.items())]
        return bytes([LOG_VERSION]) + pack([self.me, states, list(self.changes), vouched])

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupLog:
        """Inverse of `to_bytes`; CryptoError unless the states form one unbroken chain."""
        if not data or data[0] != LOG_VERSION:
            raise CryptoError("unsupported group log version")
        try:
            me, states, changes, vouched = expect_list(unpack_canonical(data[1:]), 4)
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
            keys = _key_list(vouched)
        except ValueError as exc:
            raise CryptoError(f"malformed group log: {exc}") from None
        return cls(me, parsed, wires, keys)


def _key_list(value: object) -> dict[str, bytes]:
    """[[user, Ed25519 key]...], sorted by user, at most MAX_MEMBERS, as a dict."""
    if not isinstance(value, list) or len(value) > MAX_MEMBERS:
        raise ValueError(f"expected at most {MAX_MEMBERS} keys")
    pairs = [expect_list(item, 2) for item in value]
    if not strictly_ascending([user for user, _ in pairs]):
        raise ValueError("keys must be sorted by user, one each")
    keys = {}
    for user, key in pairs:
        if not is_valid_username(user):
            raise ValueError("invalid username")
        keys[user] = expect_bytes(key, ED25519_KEY_LEN)
    return keys


def create_group(
    identity: IdentityKeyPair,
    creator: str,
    name: str,
    members: Mapping[str, bytes],
    now_ms: int,
    *,
    admins: Iterable[str] = (),
    rand: Random = OS_RANDOM,
) -> tuple[GroupLog, bytes]:
    """A new group with `creator` as admin; returns the creator's log and the change
    to send (content type GROUP_CHANGE) to every other member.

    `members` maps each member to the identity key the creator pinned for it: the
    create vouches for those keys to every member.
    """
    keys = {**members, creator: identity.sign_key}
    users = sorted_unique(keys)
    chosen = rand(NONCE_LEN)
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
        keys=tuple(keys[user] for user in users),
    )
    wire = _sign_checked(change, identity)
    return join_from_create(creator, wire, {creator: identity.sign_key}), wire


def propose(
    log: GroupLog,
    identity: IdentityKeyPair,
    op: ChangeOp,
    now_ms: int,
    *,
    users: Iterable[str] = (),
    admins: Iterable[str] = (),
    name: str = "",
    keys: Mapping[str, bytes] | None = None,
) -> tuple[GroupLog, bytes]:
    """Sign a change to `log`'s current state and apply it locally.

    Returns the new log and the change to send to every member of the old and the new
    state (a removed member learns of its removal). For an add, `keys` maps each added
    member to the identity key this client pinned for it (the add vouches for it).
    Raises GroupChangeRejected if the change is not allowed, exactly as a receiving
    member would.
    """
    state = log.current
    whom = sorted_unique(users)
    vouch = ()
    if op is ChangeOp.ADD:
        missing = [user for user in whom if user not in (keys or {})]
        if missing:
            raise GroupChangeRejected(f"no pinned identity for {', '.join(missing)}")
        vouch = tuple((keys or {})[user] for user in whom)
    change = GroupChange(
        group_id=state.group_id,
        epoch=state.epoch + 1,
        prev=state.hash,
        signer=log.me,
        issued_at_ms=now_ms,
        op=op,
        users=whom,
        admins=sorted_unique(admins),
        name=name,
        keys=vouch,
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


def apply_change(log: GroupLog, data: bytes, pinned: Mapping[str, bytes]) -> GroupLog:
    """A member's client applies a received change, or raises without changing anything.

    `pinned` maps users to the identity keys this client pinned (first contact or
    safety-number verified); members it never talked to are checked with the key an
    admin vouched for (`GroupLog.keys`).

    A change for an epoch already applied is a StaleGroupChange when it is that very
    change (a duplicate) or does not verify against that epoch; a different change that
    does verify there is a GroupForked (two admins changed the same state, or someone is
    showing members different histories): the client shows it, never picks silently.
    """
    signed = SignedChange.from_bytes(data)
    keys = log.keys(pinned)
    if signed.change.epoch <= log.current.epoch:
        _check_old_change(log, signed, keys)
    state = next_state(log.current, signed, keys)
    vouched = {**log.vouched, **signed.change.vouched()}
    kept = {user: key for user, key in vouched.items() if state.is_member(user)}
    return GroupLog(log.me, (*log.states, state), (*log.changes, data), kept)


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


def fork_winner(first: bytes, second: bytes) -> bytes:
    """Of two valid changes signed for one epoch, the one every member can settle on
    without talking: the lower SHA-256 of its bytes (the relay cannot choose it)."""
    return min(first, second, key=lambda wire: SHA256.new(wire).digest())


def adopt_change(log: GroupLog, data: bytes, pinned: Mapping[str, bytes]) -> GroupLog:
    """Settle a fork by taking the other branch: drop our states from the change's epoch
    on and apply `data` to the state before it.

    Only as a decision the user sees (what it undoes must be shown): when the user picks
    a branch, or by `fork_winner` while nothing has been built on our own branch yet
    (its change is the last we hold), so a change the relay withheld for long cannot
    undo later ones. GroupChangeRejected for a change we cannot rewind to (before we
    joined, or after our current epoch: apply it instead).
    """
    signed = SignedChange.from_bytes(data)
    keep = signed.change.epoch - log.join_epoch
    if keep < 1 or signed.change.epoch > log.current.epoch:
        raise GroupChangeRejected("no state of ours to adopt this change onto")
    trimmed = GroupLog(log.me, log.states[:keep], log.changes[:keep], log.vouched)
    return apply_change(trimmed, data, pinned)


def join_from_create(me: str, data: bytes, pinned: Mapping[str, bytes]) -> GroupLog:
    """Start a log, as member `me`, from the create that names it (verified under the
    key pinned for the creator)."""
    signed = SignedChange.from_bytes(data)
    state = genesis(signed, pinned)
    if not state.is_member(me):
        raise GroupChangeRejected("we are not a member of this group")
    return GroupLog(me, (state,), (data,), signed.change.vouched())


def join_from_welcome(me: str, sender: str, data: bytes, pinned: Mapping[str, bytes]) -> GroupLog:
    """Start a log, as member `me`, from a welcome that `sender` sealed for us.

    A welcome is the state an add applies to, the add, and the identity keys the adding
    admin vouches for the members already there. The admin's signature over the state
    hash vouches for that state, so no earlier history is needed, and none is given (an
    added member reads only what is sent after it joined). The keys are not signed: they
    count only because the admin who signed the add sealed the welcome itself.
    """
    before, change, keys = parse_welcome(data)
    signed = SignedChange.from_bytes(change)
    add = signed.change
    if add.op is not ChangeOp.ADD or add.prev != before.hash:
        raise GroupChangeRejected("a welcome carries an add to the state it comes with")
    if add.signer != sender:
        raise GroupChangeRejected("a welcome comes from the admin who signed its add")
    if set(keys) != set(before.members):
        raise GroupChangeRejected("a welcome vouches for exactly the members already there")
    for user, key in keys.items():
        try:
            ed25519_check_public(key)
        except CryptoError:
            raise GroupChangeRejected(f"invalid identity key for {user}") from None
    state = next_state(before, signed, {**keys, **pinned})
    if me not in add.users:
        raise GroupChangeRejected("the welcome does not add us")
    return GroupLog(me, (state,), (change,), {**keys, **add.vouched()})


def make_welcome(log: GroupLog) -> bytes:
    """The welcome for the members added by `log`'s last change (an add)."""
    if (
        len(log.states) < 2
        or SignedChange.from_bytes(log.changes[-1]).change.op is not ChangeOp.ADD
    ):
        raise GroupChangeRejected("the last change is not an add")
    before = log.states[-2]
    keys = [[user, log.vouched[user]] for user in before.members]
    return pack([GROUP_FORMAT, before.to_wire(), log.changes[-1], keys])


def parse_welcome(data: bytes) -> tuple[GroupState, bytes, dict[str, bytes]]:
    try:
        version, state, change, keys = expect_list(unpack_canonical(data), 4)
        if version != GROUP_FORMAT:
            raise ValueError("unsupported welcome version")
        return GroupState.from_wire(state), expect_bytes(change), _key_list(keys)
    except ValueError as exc:
        raise GroupChangeRejected(f"malformed welcome: {exc}") from None


def change_recipients(before: GroupState | None, after: GroupState, me: str) -> tuple[str, ...]:
    """Who must receive a change: every member before or after it, except the sender."""
    old = before.members if before is not None else ()
    return tuple(user for user in sorted_unique([*old, *after.members]) if user != me)
