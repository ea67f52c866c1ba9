"""Group membership that members' clients manage and check, and the relay cannot forge.

A group is a chain of membership states. Each state names the group id, an epoch, the
hash of the state before it, a name, the members and the admins. A state changes only
through a change signed by the account identity key (Ed25519) of an admin of the state
it applies to (a `leave` is signed by the member leaving). A change names the epoch it
creates (exactly one above the current one) and the hash of the state it applies to, so
a member's client applies it only if it follows the state that client holds:

- a relay cannot add or remove a member: it cannot sign as an admin;
- it cannot replay an old change or roll the membership back: the epoch only grows;
- it cannot show members different memberships unseen: a change built on another state
  fails the hash, and every group message names the state hash it was sent under.

Wire forms (canonical msgpack, `unpack_canonical`; docs/protocol.md, "Groups"):

    state  = [1, group_id bin(16), epoch, prev bin(32), name, [member...], [admin...]]
    hash   = SHA-256(b"hushwire/group-state/v1" || msgpack(state))
    body   = [1, group_id, epoch, prev, signer, issued_at_ms, op, args]
    change = [body bin, Ed25519(signer, b"hushwire/group-change/v1" || body) bin(64)]

Sans-I/O: pure functions over frozen values. What one client holds (its chain of
accepted states; creating, proposing and applying changes; welcomes) is
common/chat_group_log.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from itertools import pairwise
from typing import Any, Final

from Crypto.Hash import SHA256

from hushwire.common.crypto.encoding import (
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
    fields,
    pack,
    unpack_canonical,
)
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.crypto.primitives import (
    ED25519_KEY_LEN,
    ED25519_SIG_LEN,
    ed25519_check_public,
    ed25519_verify,
)
from hushwire.common.errors import (
    CryptoError,
    GroupChangeRejected,
    GroupForked,
    MissingGroupChanges,
    StaleGroupChange,
)
from hushwire.common.names import is_valid_username

GROUP_FORMAT: Final = 1
GROUP_ID_LEN: Final = 16
NONCE_LEN: Final = 16
STATE_HASH_LEN: Final = 32
NO_STATE: Final = bytes(STATE_HASH_LEN)  # the `prev` of a group's first state
MAX_MEMBERS: Final = 50
MAX_GROUP_NAME: Final = 64
MAX_EPOCH: Final = 2**32 - 1
MAX_TIMESTAMP: Final = 2**63 - 1
MAX_CHANGE_BYTES: Final = 4096

GROUP_ID_CONTEXT: Final = b"hushwire/group-id/v1"
GROUP_STATE_CONTEXT: Final = b"hushwire/group-state/v1"
GROUP_CHANGE_CONTEXT: Final = b"hushwire/group-change/v1"


class ContentType(IntEnum):
    """The first byte of a sealed envelope's plaintext: what the rest is.

    TEXT is client/text.py's format (UTF-8 after the byte); the group types are followed
    by a key note (common/crypto/group_payload.py), a change or a welcome.
    """

    TEXT = 1
    GROUP_MESSAGE = 2
    GROUP_CHANGE = 3
    GROUP_WELCOME = 4
    SESSION_RESET = 5  # nothing follows: "I could not decrypt you; this starts anew"
    SENT_COPY = 6  # [to: str, text: str]: what another device of ours sent to `to`


def encode_content(kind: ContentType, payload: bytes) -> bytes:
    return bytes([kind]) + payload


def decode_content(plaintext: bytes) -> tuple[ContentType, bytes]:
    """The content type and the bytes after it; ValueError for an unknown type."""
    if not plaintext:
        raise ValueError("empty plaintext")
    return ContentType(plaintext[0]), plaintext[1:]


class ChangeOp(StrEnum):
    CREATE = "create"  # args [nonce bin(16), name, [member...], [admin...], [key...]]
    RENAME = "rename"  # args [name]
    ADD = "add"  # args [[member...], [admin...], [key...]]: admins among the added
    REMOVE = "remove"  # args [[member...]]
    LEAVE = "leave"  # args []: the signer leaves (the one change a non-admin signs)
    PROMOTE = "promote"  # args [[member...]]: members become admins
    DEMOTE = "demote"  # args [[admin...]]: admins become plain members


def _sha256(data: bytes) -> bytes:
    return SHA256.new(data).digest()


def group_id_for(creator: str, nonce: bytes) -> bytes:
    """A group id only its creator can claim: a hash of the creator's name and a nonce.

    A create is accepted only if its id derives from its signer, so another member
    cannot pre-empt a group id it has seen with a create of its own.
    """
    return _sha256(GROUP_ID_CONTEXT + fields(creator.encode(), nonce))[:GROUP_ID_LEN]


def check_group_name(name: object) -> str:
    """1-64 characters, no control, format or bidi characters, no surrounding spaces."""
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= MAX_GROUP_NAME
        or name != name.strip()
        or any(not ch.isprintable() for ch in name)
    ):
        raise ValueError(f"group name must be 1-{MAX_GROUP_NAME} printable characters")
    return name


def strictly_ascending(items: list[Any]) -> bool:
    """Sorted without repeats: the one encoding a set may have on the wire."""
    return all(a < b for a, b in pairwise(items))


def _users(value: Any, *, allow_empty: bool = False) -> tuple[str, ...]:
    """A strictly ascending list of valid usernames (one form per set), as a tuple."""
    items = value if isinstance(value, list) else None
    if items is None or len(items) > MAX_MEMBERS or (not items and not allow_empty):
        raise ValueError(f"expected a list of 1-{MAX_MEMBERS} usernames")
    for user in items:
        if not is_valid_username(user):
            raise ValueError("invalid username")
    if not strictly_ascending(items):
        raise ValueError("usernames must be sorted and unique")
    return tuple(items)


def _keys(value: Any, count: int) -> tuple[bytes, ...]:
    """One 32-byte Ed25519 identity key per named member (checked when applied)."""
    items = expect_list(value, count)
    return tuple(expect_bytes(key, ED25519_KEY_LEN) for key in items)


@dataclass(frozen=True, slots=True)
class GroupState:
    """One epoch of a group's membership; `hash` chains it to every state before."""

    group_id: bytes
    epoch: int
    prev: bytes
    name: str
    members: tuple[str, ...]  # sorted, unique
    admins: tuple[str, ...]  # sorted, unique, a subset of members

    def to_wire(self) -> list[Any]:
        return [
            GROUP_FORMAT,
            self.group_id,
            self.epoch,
            self.prev,
            self.name,
            list(self.members),
            list(self.admins),
        ]

    @classmethod
    def from_wire(cls, value: Any) -> GroupState:
        """Strict parse of a state record; ValueError for anything off."""
        version, group_id, epoch, prev, name, members, admins = expect_list(value, 7)
        if version != GROUP_FORMAT:
            raise ValueError("unsupported group state version")
        state = cls(
            group_id=expect_bytes(group_id, GROUP_ID_LEN),
            epoch=expect_int(epoch, 1, MAX_EPOCH),
            prev=expect_bytes(prev, STATE_HASH_LEN),
            name=check_group_name(name),
            members=_users(members, allow_empty=True),
            admins=_users(admins, allow_empty=True),
        )
        _check_roles(state.members, state.admins)
        return state

    @property
    def hash(self) -> bytes:
        return _sha256(GROUP_STATE_CONTEXT + pack(self.to_wire()))

    def is_member(self, user: str) -> bool:
        return user in self.members

    def is_admin(self, user: str) -> bool:
        return user in self.admins


def _check_roles(members: tuple[str, ...], admins: tuple[str, ...]) -> None:
    """Admins are members, and a group with members always keeps an admin."""
    if not set(admins) <= set(members):
        raise ValueError("every admin must be a member")
    if members and not admins:
        raise ValueError("a group with members needs an admin (promote one before leaving)")


@dataclass(frozen=True, slots=True)
class GroupChange:
    """A membership change as signed: the state it applies to and what it does."""

    group_id: bytes
    epoch: int  # the epoch of the state it creates
    prev: bytes  # hash of the state it applies to (NO_STATE for create)
    signer: str
    issued_at_ms: int
    op: ChangeOp
    users: tuple[str, ...] = ()  # create: members; add/remove/promote/demote: whom
    admins: tuple[str, ...] = ()  # create: admins; add: which of the added are admins
    name: str = ""  # create, rename
    nonce: bytes = b""  # create
    keys: tuple[bytes, ...] = ()  # create, add: each of `users`' identity key, in order

    def vouched(self) -> dict[str, bytes]:
        """The identity keys this change's signer vouches for (create and add only)."""
        if self.op not in (ChangeOp.CREATE, ChangeOp.ADD):
            return {}
        return dict(zip(self.users, self.keys, strict=True))

    def _args(self) -> list[Any]:
        match self.op:
            case ChangeOp.CREATE:
                return [
                    self.nonce,
                    self.name,
                    list(self.users),
                    list(self.admins),
                    list(self.keys),
                ]
            case ChangeOp.RENAME:
                return [self.name]
            case ChangeOp.ADD:
                return [list(self.users), list(self.admins), list(self.keys)]
            case ChangeOp.LEAVE:
                return []
            case _:
                return [list(self.users)]

    def body(self) -> bytes:
        return pack(
            [
                GROUP_FORMAT,
                self.group_id,
                self.epoch,
                self.prev,
                self.signer,
                self.issued_at_ms,
                str(self.op),
                self._args(),
            ]
        )

    def sign(self, identity: IdentityKeyPair) -> bytes:
        """The wire form, signed by `identity` (the signer's account identity)."""
        body = self.body()
        return pack([body, identity.sign(GROUP_CHANGE_CONTEXT + body)])

    @classmethod
    def from_body(cls, body: bytes) -> GroupChange:
        items = expect_list(unpack_canonical(body), 8)
        version, group_id, epoch, prev, signer, issued_at, op, args = items
        if version != GROUP_FORMAT:
            raise ValueError("unsupported group change version")
        if not is_valid_username(signer):
            raise ValueError("invalid signer")
        kind = ChangeOp(expect_str(op))
        common = {
            "group_id": expect_bytes(group_id, GROUP_ID_LEN),
            "epoch": expect_int(epoch, 1, MAX_EPOCH),
            "prev": expect_bytes(prev, STATE_HASH_LEN),
            "signer": signer,
            "issued_at_ms": expect_int(issued_at, 0, MAX_TIMESTAMP),
            "op": kind,
        }
        match kind:
            case ChangeOp.CREATE:
                nonce, name, members, admins, keys = expect_list(args, 5)
                users = _users(members)
                return cls(
                    **common,
                    nonce=expect_bytes(nonce, NONCE_LEN),
                    name=check_group_name(name),
                    users=users,
                    admins=_users(admins),
                    keys=_keys(keys, len(users)),
                )
            case ChangeOp.RENAME:
                (name,) = expect_list(args, 1)
                return cls(**common, name=check_group_name(name))
            case ChangeOp.ADD:
                members, admins, keys = expect_list(args, 3)
                users = _users(members)
                return cls(
                    **common,
                    users=users,
                    admins=_users(admins, allow_empty=True),
                    keys=_keys(keys, len(users)),
                )
            case ChangeOp.LEAVE:
                expect_list(args, 0)
                return cls(**common)
            case _:
                (members,) = expect_list(args, 1)
                return cls(**common, users=_users(members))


@dataclass(frozen=True, slots=True)
class SignedChange:
    """A parsed change with the exact bytes its signature covers (not yet verified)."""

    change: GroupChange
    body: bytes
    sig: bytes
    wire: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedChange:
        """Strict parse; GroupChangeRejected for anything malformed."""
        try:
            if len(data) > MAX_CHANGE_BYTES:
                raise ValueError("group change too large")
            body, sig = expect_list(unpack_canonical(data), 2)
            body = expect_bytes(body)
            change = GroupChange.from_body(body)
            sig = expect_bytes(sig, ED25519_SIG_LEN)
        except ValueError as exc:
            raise GroupChangeRejected(f"malformed group change: {exc}") from None
        return cls(change, body, sig, data)

    def verify(self, identity_keys: Mapping[str, bytes]) -> None:
        """The signature under the signer's pinned Ed25519 key, or GroupChangeRejected.

        `identity_keys` maps usernames to the account identity keys this client has
        pinned (and perhaps verified by safety number): never a key the relay just handed
        over for this purpose (CVE-2022-39250).
        """
        key = identity_keys.get(self.change.signer)
        if key is None:
            raise GroupChangeRejected(f"no pinned identity for signer {self.change.signer!r}")
        try:
            ed25519_verify(key, GROUP_CHANGE_CONTEXT + self.body, self.sig)
        except CryptoError:
            raise GroupChangeRejected("group change signature does not verify") from None


def sorted_unique(users: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(users)))


def _next_state(state: GroupState, change: GroupChange) -> GroupState:
    """The state `change` makes from `state`, or ValueError if the change is not allowed.

    The signer's rights and the epoch/prev link are checked by the caller.
    """
    members, admins, name = set(state.members), set(state.admins), state.name
    who = set(change.users)
    match change.op:
        case ChangeOp.RENAME:
            name = change.name
        case ChangeOp.ADD:
            if who & members:
                raise ValueError("already a member")
            if not set(change.admins) <= who:
                raise ValueError("added admins must be among the added members")
            members |= who
            admins |= set(change.admins)
        case ChangeOp.REMOVE:
            if not who <= members:
                raise ValueError("not a member")
            if change.signer in who:
                raise ValueError("an admin leaves with a leave, not a remove")
            members -= who
            admins -= who
        case ChangeOp.LEAVE:
            members.discard(change.signer)
            admins.discard(change.signer)
        case ChangeOp.PROMOTE:
            if not who <= members - admins:
                raise ValueError("only members who are not admins can be promoted")
            admins |= who
        case ChangeOp.DEMOTE:
            if not who <= admins:
                raise ValueError("only admins can be demoted")
            admins -= who
        case ChangeOp.CREATE:
            raise ValueError("a group is created only once")
    if len(members) > MAX_MEMBERS:
        raise ValueError(f"a group has at most {MAX_MEMBERS} members")
    new_members, new_admins = sorted_unique(members), sorted_unique(admins)
    _check_roles(new_members, new_admins)
    return GroupState(state.group_id, change.epoch, state.hash, name, new_members, new_admins)


def _allowed(state: GroupState, change: GroupChange) -> None:
    if change.op is ChangeOp.LEAVE:
        if not state.is_member(change.signer):
            raise GroupChangeRejected(f"{change.signer} is not a member and cannot leave")
    elif not state.is_admin(change.signer):
        raise GroupChangeRejected(f"{change.signer} is not an admin of epoch {state.epoch}")


def _check_vouched(change: GroupChange, identity_keys: Mapping[str, bytes]) -> None:
    """Keys vouched for by a create or add must be valid, and the signer's must be the
    one its signature verified under."""
    for user, key in change.vouched().items():
        try:
            ed25519_check_public(key)
        except CryptoError:
            raise GroupChangeRejected(f"invalid identity key for {user}") from None
        if user == change.signer and key != identity_keys.get(user):
            raise GroupChangeRejected("the signer vouches for a key other than its own")


def genesis(signed: SignedChange, identity_keys: Mapping[str, bytes]) -> GroupState:
    """The first state of a group, from its verified `create` change."""
    change = signed.change
    if change.op is not ChangeOp.CREATE:
        raise GroupChangeRejected("a group starts with a create")
    signed.verify(identity_keys)
    if change.epoch != 1 or change.prev != NO_STATE:
        raise GroupChangeRejected("a create makes epoch 1 from no state")
    if change.group_id != group_id_for(change.signer, change.nonce):
        raise GroupChangeRejected("group id does not derive from its creator")
    if change.signer not in change.admins:
        raise GroupChangeRejected("the creator must be an admin")
    try:
        _check_roles(change.users, change.admins)
    except ValueError as exc:
        raise GroupChangeRejected(str(exc)) from None
    _check_vouched(change, identity_keys)
    return GroupState(change.group_id, 1, NO_STATE, change.name, change.users, change.admins)


def next_state(
    state: GroupState, signed: SignedChange, identity_keys: Mapping[str, bytes]
) -> GroupState:
    """Apply one change to `state` if it verifies against exactly that state.

    StaleGroupChange: epoch not above the current (replay, rollback); MissingGroupChanges:
    more than one above (hold it); GroupForked: the next epoch but built on another
    state; GroupChangeRejected: bad signature, a signer without the right, or a change
    the state does not allow. The signature is checked before anything else is trusted.
    """
    change = signed.change
    if change.group_id != state.group_id:
        raise GroupChangeRejected("change is for another group")
    signed.verify(identity_keys)
    if change.epoch <= state.epoch:
        raise StaleGroupChange(f"epoch {change.epoch} is not above the current {state.epoch}")
    if change.epoch > state.epoch + 1:
        raise MissingGroupChanges(
            f"changes before epoch {change.epoch} are missing", epoch=change.epoch
        )
    if change.prev != state.hash:
        raise GroupForked(f"epoch {change.epoch} was built on another membership state")
    _allowed(state, change)
    try:
        after = _next_state(state, change)
    except ValueError as exc:
        raise GroupChangeRejected(f"{change.op} not allowed: {exc}") from None
    _check_vouched(change, identity_keys)
    return after
