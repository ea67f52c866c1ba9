"""Group membership: every rule a member's client enforces, attacked.

The relay here is the test itself: it holds every byte that goes between clients, so it
can forge, flip bits, replay, reorder, drop and show members different things.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hushwire.common.chat_group_log import (
    GroupLog,
    adopt_change,
    apply_change,
    change_recipients,
    create_group,
    fork_winner,
    join_from_create,
    join_from_welcome,
    make_welcome,
    propose,
)
from hushwire.common.chat_groups import (
    GROUP_CHANGE_CONTEXT,
    MAX_MEMBERS,
    NO_STATE,
    ChangeOp,
    ContentType,
    GroupChange,
    GroupState,
    SignedChange,
    check_group_name,
    decode_content,
    encode_content,
    group_id_for,
)
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.encoding import pack, unpack_canonical
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.errors import (
    GroupChangeRejected,
    GroupError,
    GroupForked,
    MissingGroupChanges,
    StaleGroupChange,
)

NAMES = ("alice", "bob", "carol", "dave", "erin", "mallory")
IDS = {name: IdentityKeyPair.generate(X25519) for name in NAMES}
KEYS = {name: identity.sign_key for name, identity in IDS.items()}
T0 = 1_700_000_000_000


def pins(*names: str) -> dict[str, bytes]:
    """The identity keys a creator pinned for these members."""
    return {name: KEYS[name] for name in names}


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def one_bit_per_byte(data: bytes) -> range:
    """A bit in every byte, each of the 8 positions in turn (every bit would cost one
    slow Ed25519 verification per bit for no new path)."""
    return range(0, len(data) * 8, 9)


def forge(change: GroupChange, signer_key: str) -> bytes:
    """A change signed by `signer_key`'s identity, whoever it claims as signer."""
    return change.sign(IDS[signer_key])


def next_change(log: GroupLog, signer: str, op: ChangeOp, **kw) -> GroupChange:
    state = log.current
    if op is ChangeOp.ADD:
        kw.setdefault("keys", tuple(KEYS[user] for user in kw["users"]))
    return GroupChange(
        group_id=state.group_id,
        epoch=state.epoch + 1,
        prev=state.hash,
        signer=signer,
        issued_at_ms=T0,
        op=op,
        **kw,
    )


@pytest.fixture
def group() -> tuple[GroupLog, bytes]:
    """alice (admin) creates "family" with bob and carol."""
    return create_group(IDS["alice"], "alice", "family", pins("bob", "carol"), T0)


def members_join(create: bytes, *names: str) -> dict[str, GroupLog]:
    return {name: join_from_create(name, create, KEYS) for name in names}


# --- create and join ------------------------------------------------------------------


def test_every_member_joins_the_same_state(group):
    alice, create = group
    logs = members_join(create, "bob", "carol")
    assert alice.current.members == ("alice", "bob", "carol")
    assert alice.current.admins == ("alice",)
    assert {log.current for log in logs.values()} == {alice.current}
    assert alice.current.epoch == 1 and alice.current.prev == NO_STATE


def test_a_non_member_cannot_join_from_a_create(group):
    _, create = group
    with pytest.raises(GroupChangeRejected, match="not a member"):
        join_from_create("dave", create, KEYS)


def test_group_id_derives_from_creator_so_another_member_cannot_claim_it(group):
    alice, create = group
    signed = SignedChange.from_bytes(create)
    # bob re-signs alice's create as his own: the id does not derive from "bob".
    claimed = dataclasses.replace(signed.change, signer="bob", admins=("alice", "bob"))
    with pytest.raises(GroupChangeRejected, match="derive"):
        join_from_create("carol", forge(claimed, "bob"), KEYS)
    assert alice.group_id == group_id_for("alice", signed.change.nonce)


def test_two_groups_get_different_ids():
    a, _ = create_group(IDS["alice"], "alice", "x", pins("bob"), T0)
    b, _ = create_group(IDS["alice"], "alice", "x", pins("bob"), T0)
    assert a.group_id != b.group_id


# --- forged changes ---------------------------------------------------------------------


def test_a_change_signed_by_a_member_who_is_not_admin_is_rejected(group):
    alice, create = group
    carol = members_join(create, "carol")["carol"]
    change = next_change(alice, "bob", ChangeOp.ADD, users=("mallory",))
    with pytest.raises(GroupChangeRejected, match="not an admin"):
        apply_change(carol, forge(change, "bob"), KEYS)


def test_the_relay_cannot_inject_a_member(group):
    """Claiming alice as signer, but without her key: the signature fails."""
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    change = next_change(alice, "alice", ChangeOp.ADD, users=("mallory",))
    with pytest.raises(GroupChangeRejected, match="signature"):
        apply_change(bob, forge(change, "mallory"), KEYS)
    # A non-member signing as itself is no better.
    change = next_change(alice, "mallory", ChangeOp.ADD, users=("mallory",))
    with pytest.raises(GroupChangeRejected, match="not an admin"):
        apply_change(bob, forge(change, "mallory"), KEYS)


def test_a_member_never_pinned_is_checked_with_the_key_an_admin_vouched_for(group):
    """bob never talked to carol: her changes verify under the key alice's signed create
    gave for her, so the relay cannot pass off its own key as carol's."""
    alice, create = group
    only_alice = {"alice": KEYS["alice"]}
    bob = join_from_create("bob", create, only_alice)
    alice, promote = propose(alice, IDS["alice"], ChangeOp.PROMOTE, T0, users=["carol"])
    bob = apply_change(bob, promote, only_alice)
    by_carol = next_change(bob, "carol", ChangeOp.RENAME, name="carol's")
    with pytest.raises(GroupChangeRejected, match="signature"):
        apply_change(bob, forge(by_carol, "mallory"), only_alice)
    assert apply_change(bob, forge(by_carol, "carol"), only_alice).current.name == "carol's"
    # A pin that disagrees with the vouched key is shown, and the pin is what counts.
    substituted = {**only_alice, "carol": KEYS["mallory"]}
    assert bob.key_conflicts(substituted) == ("carol",)
    assert bob.key_conflicts(KEYS) == ()
    with pytest.raises(GroupChangeRejected, match="signature"):
        apply_change(bob, forge(by_carol, "carol"), substituted)


def test_a_creator_must_vouch_for_its_own_key(group):
    _, create = group
    change = SignedChange.from_bytes(create).change
    keys = tuple(KEYS["mallory"] if u == "alice" else KEYS[u] for u in change.users)
    with pytest.raises(GroupChangeRejected, match="other than its own"):
        join_from_create("bob", forge(dataclasses.replace(change, keys=keys), "alice"), KEYS)


def test_an_invalid_vouched_key_is_rejected(group):
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    small_order = bytes([1]) + bytes(31)  # the identity point: a torsion key
    change = next_change(alice, "alice", ChangeOp.ADD, users=("dave",), keys=(small_order,))
    with pytest.raises(GroupChangeRejected, match="invalid identity key"):
        apply_change(bob, forge(change, "alice"), KEYS)
    with pytest.raises(GroupChangeRejected, match="no pinned identity"):
        propose(alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], keys={})


def test_a_removed_admin_can_no_longer_change_the_group(group):
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    alice, promote = propose(alice, IDS["alice"], ChangeOp.PROMOTE, T0, users=["bob"])
    bob = apply_change(bob, promote, KEYS)
    alice, remove = propose(alice, IDS["alice"], ChangeOp.REMOVE, T0, users=["bob"])
    bob = apply_change(bob, remove, KEYS)
    assert not bob.active and not bob.current.is_admin("bob")
    # bob, removed, signs an add on the state he was shown last: alice's client refuses.
    change = next_change(bob, "bob", ChangeOp.ADD, users=("mallory",))
    with pytest.raises(GroupChangeRejected, match="not an admin"):
        apply_change(alice, forge(change, "bob"), KEYS)


def test_a_demoted_admin_can_no_longer_change_the_group(group):
    alice, create = group
    carol = members_join(create, "carol")["carol"]
    for op in (ChangeOp.PROMOTE, ChangeOp.DEMOTE):
        alice, change = propose(alice, IDS["alice"], op, T0, users=["bob"])
        carol = apply_change(carol, change, KEYS)
    change = next_change(carol, "bob", ChangeOp.RENAME, name="bob's")
    with pytest.raises(GroupChangeRejected, match="not an admin"):
        apply_change(carol, forge(change, "bob"), KEYS)


def test_bit_flips_anywhere_in_a_change_are_rejected(group):
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    _, change = propose(alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], keys=KEYS)
    for bit in one_bit_per_byte(change):
        with pytest.raises(GroupError):
            apply_change(bob, flip(change, bit), KEYS)
    assert apply_change(bob, change, KEYS).current.is_member("dave")


def test_bit_flips_anywhere_in_a_create_are_rejected(group):
    _, create = group
    for bit in one_bit_per_byte(create):
        with pytest.raises(GroupError):
            join_from_create("bob", flip(create, bit), KEYS)


def test_a_signature_for_another_purpose_is_not_a_change_signature(group):
    """The context string separates group changes from every other signature."""
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    change = next_change(alice, "alice", ChangeOp.RENAME, name="x")
    body = change.body()
    wrong = pack([body, IDS["alice"].sign(body)])  # no context
    with pytest.raises(GroupChangeRejected, match="signature"):
        apply_change(bob, wrong, KEYS)
    right = pack([body, IDS["alice"].sign(GROUP_CHANGE_CONTEXT + body)])
    assert apply_change(bob, right, KEYS).current.name == "x"


def test_a_change_for_another_group_is_rejected(group):
    _, create = group
    bob = members_join(create, "bob")["bob"]
    other, _ = create_group(IDS["alice"], "alice", "work", pins("bob"), T0)
    _, change = propose(other, IDS["alice"], ChangeOp.RENAME, T0, name="x")
    with pytest.raises(GroupChangeRejected, match="another group"):
        apply_change(bob, change, KEYS)


# --- replays, rollbacks, gaps, forks ------------------------------------------------------


def test_a_replayed_change_is_stale(group):
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    alice, add = propose(alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], keys=KEYS)
    alice, remove = propose(alice, IDS["alice"], ChangeOp.REMOVE, T0, users=["dave"])
    bob = apply_change(apply_change(bob, add, KEYS), remove, KEYS)
    for old in (create, add, remove):
        with pytest.raises(StaleGroupChange):
            apply_change(bob, old, KEYS)
    assert not bob.current.is_member("dave")


def test_membership_cannot_roll_back_to_an_earlier_epoch(group):
    """A change signed on an old state (held back by the relay) cannot undo later ones:
    at its own epoch it is shown as a fork, never applied."""
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    held_back = next_change(alice, "alice", ChangeOp.ADD, users=("mallory",))
    alice, remove = propose(alice, IDS["alice"], ChangeOp.RENAME, T0, name="n1")
    alice, again = propose(alice, IDS["alice"], ChangeOp.RENAME, T0, name="n2")
    bob = apply_change(apply_change(bob, remove, KEYS), again, KEYS)
    with pytest.raises(GroupForked, match="two different changes"):
        apply_change(bob, forge(held_back, "alice"), KEYS)
    # Re-numbered to the next epoch it no longer names the current state.
    moved = dataclasses.replace(held_back, epoch=bob.current.epoch + 1)
    with pytest.raises(GroupForked):
        apply_change(bob, forge(moved, "alice"), KEYS)
    assert bob.current.members == ("alice", "bob", "carol")


def test_a_skipped_change_is_held_not_applied(group):
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    alice, first = propose(alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], keys=KEYS)
    alice, second = propose(alice, IDS["alice"], ChangeOp.RENAME, T0, name="n")
    with pytest.raises(MissingGroupChanges) as caught:
        apply_change(bob, second, KEYS)
    assert caught.value.epoch == 3
    bob = apply_change(apply_change(bob, first, KEYS), second, KEYS)
    assert bob.current == alice.current


def test_two_admins_changing_the_same_epoch_is_a_fork_never_a_silent_pick(group):
    alice, create = group
    logs = members_join(create, "bob", "carol")
    alice, promote = propose(alice, IDS["alice"], ChangeOp.PROMOTE, T0, users=["bob"])
    bob, carol = (apply_change(logs[n], promote, KEYS) for n in ("bob", "carol"))
    alice, a_change = propose(alice, IDS["alice"], ChangeOp.RENAME, T0, name="alice's")
    bob, b_change = propose(bob, IDS["bob"], ChangeOp.RENAME, T0, name="bob's")
    carol = apply_change(carol, a_change, KEYS)
    with pytest.raises(GroupForked, match="two different changes"):
        apply_change(carol, b_change, KEYS)
    with pytest.raises(GroupForked):
        apply_change(bob, a_change, KEYS)
    assert carol.current.name == "alice's" and bob.current.name == "bob's"
    # Everyone settles on the same change, whichever order they saw them in.
    winner = fork_winner(a_change, b_change)
    assert winner == fork_winner(b_change, a_change)
    settled = []
    for log, other in ((alice, b_change), (bob, a_change), (carol, b_change)):
        settled.append(
            log if fork_winner(log.changes[-1], other) != other else adopt_change(log, other, KEYS)
        )
    assert len({log.current for log in settled}) == 1
    assert settled[0].current.name == ("alice's" if winner == a_change else "bob's")


def test_adopting_a_branch_is_bounded_to_what_we_hold(group):
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    with pytest.raises(GroupChangeRejected, match="no state of ours"):
        adopt_change(bob, create, KEYS)  # nothing before epoch 1 to rewind to
    _, ahead = propose(alice, IDS["alice"], ChangeOp.RENAME, T0, name="n")
    with pytest.raises(GroupChangeRejected, match="no state of ours"):
        adopt_change(bob, ahead, KEYS)
    forged = next_change(bob, "alice", ChangeOp.RENAME, name="x")
    with pytest.raises(GroupChangeRejected, match="signature"):
        adopt_change(apply_change(bob, ahead, KEYS), forge(forged, "mallory"), KEYS)


# --- content of changes -----------------------------------------------------------------


def test_leave_is_signed_by_the_member_leaving_and_only_by_them(group):
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    leave = next_change(alice, "carol", ChangeOp.LEAVE)
    with pytest.raises(GroupChangeRejected, match="signature"):
        apply_change(bob, forge(leave, "alice"), KEYS)  # even an admin cannot fake it
    bob = apply_change(bob, forge(leave, "carol"), KEYS)
    assert bob.current.members == ("alice", "bob")


def test_the_last_admin_must_promote_someone_before_leaving(group):
    alice, _ = group
    with pytest.raises(GroupChangeRejected, match="needs an admin"):
        propose(alice, IDS["alice"], ChangeOp.LEAVE, T0)
    alice, _ = propose(alice, IDS["alice"], ChangeOp.PROMOTE, T0, users=["carol"])
    alice, _ = propose(alice, IDS["alice"], ChangeOp.LEAVE, T0)
    assert not alice.active and alice.current.admins == ("carol",)


@pytest.mark.parametrize(
    ("op", "kw", "reason"),
    [
        (ChangeOp.ADD, {"users": ["bob"], "keys": KEYS}, "already a member"),
        (ChangeOp.ADD, {"users": ["dave"], "admins": ["erin"], "keys": KEYS}, "among the added"),
        (ChangeOp.REMOVE, {"users": ["dave"]}, "not a member"),
        (ChangeOp.REMOVE, {"users": ["alice"]}, "leave"),
        (ChangeOp.PROMOTE, {"users": ["alice"]}, "promoted"),
        (ChangeOp.DEMOTE, {"users": ["bob"]}, "demoted"),
        (ChangeOp.DEMOTE, {"users": ["alice"]}, "needs an admin"),
        (ChangeOp.RENAME, {"name": "bad\x1b[2Jname"}, "printable"),
        (ChangeOp.RENAME, {"name": " padded"}, "printable"),
        (ChangeOp.CREATE, {}, "malformed|created only once"),
    ],
)
def test_changes_the_state_does_not_allow_are_rejected(group, op, kw, reason):
    alice, _ = group
    with pytest.raises(GroupChangeRejected, match=reason):
        propose(alice, IDS["alice"], op, T0, **kw)


def test_a_group_holds_at_most_max_members():
    others = [f"u{i:02d}" for i in range(MAX_MEMBERS - 1)]
    full, _ = create_group(IDS["alice"], "alice", "big", dict.fromkeys(others, KEYS["bob"]), T0)
    assert len(full.current.members) == MAX_MEMBERS
    with pytest.raises(GroupChangeRejected, match=f"at most {MAX_MEMBERS}"):
        propose(full, IDS["alice"], ChangeOp.ADD, T0, users=["bob"], keys=KEYS)


def test_group_names():
    assert check_group_name("Family 🏠") == "Family 🏠"
    for bad in ("", "x" * 65, "a\nb", "\u202eevil", "tab\there", 7):
        with pytest.raises(ValueError, match="printable"):
            check_group_name(bad)


# --- welcome: an added member ---------------------------------------------------------------


def test_an_added_member_joins_from_a_welcome_without_history(group):
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    alice, _ = propose(alice, IDS["alice"], ChangeOp.RENAME, T0, name="n")
    alice, add = propose(alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], keys=KEYS)
    dave = join_from_welcome("dave", "alice", make_welcome(alice), KEYS)
    assert dave.current == alice.current and dave.join_epoch == 3
    assert dave.state_at(2) is None and dave.state_at(1) is None
    assert change_recipients(alice.state_at(2), alice.current, "alice") == ("bob", "carol", "dave")
    assert (
        apply_change(
            apply_change(bob, SignedChange.from_bytes(alice.changes[1]).wire, KEYS), add, KEYS
        ).current
        == dave.current
    )


def test_a_welcome_with_a_doctored_state_is_rejected(group):
    alice, _ = group
    alice, _ = propose(alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], keys=KEYS)
    before = alice.state_at(1)
    for doctored in (
        dataclasses.replace(before, members=("alice", "bob", "carol", "mallory")),
        dataclasses.replace(before, admins=("alice", "bob")),
        dataclasses.replace(before, name="other"),
    ):
        keys = [[user, KEYS[user]] for user in doctored.members]
        welcome = pack([1, doctored.to_wire(), alice.changes[-1], keys])
        with pytest.raises(GroupChangeRejected, match="the state it comes with"):
            join_from_welcome("dave", "alice", welcome, KEYS)


def test_a_welcome_counts_only_from_the_admin_who_signed_its_add(group):
    """Its member keys are not signed: only the adding admin's own envelope vouches."""
    alice, _ = group
    alice, _ = propose(alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], keys=KEYS)
    welcome = make_welcome(alice)
    with pytest.raises(GroupChangeRejected, match="who signed its add"):
        join_from_welcome("dave", "mallory", welcome, KEYS)
    version, state, change, keys = unpack_canonical(welcome)
    for bad in (keys[:-1], [*keys, ["mallory", KEYS["mallory"]]]):
        with pytest.raises(GroupChangeRejected, match="exactly the members"):
            join_from_welcome("dave", "alice", pack([version, state, change, bad]), KEYS)


def test_an_added_member_checks_members_it_never_met_with_vouched_keys(group):
    alice, create = group
    bob = members_join(create, "bob")["bob"]
    alice, promote = propose(alice, IDS["alice"], ChangeOp.PROMOTE, T0, users=["bob"])
    bob = apply_change(bob, promote, KEYS)
    alice, _ = propose(alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], keys=KEYS)
    only_alice = {"alice": KEYS["alice"]}
    dave = join_from_welcome("dave", "alice", make_welcome(alice), only_alice)
    assert dave.vouched == {n: KEYS[n] for n in ("alice", "bob", "carol", "dave")}
    by_bob = next_change(dave, "bob", ChangeOp.RENAME, name="bob's")
    with pytest.raises(GroupChangeRejected, match="signature"):
        apply_change(dave, forge(by_bob, "mallory"), only_alice)
    assert apply_change(dave, forge(by_bob, "bob"), only_alice).current.name == "bob's"


def test_a_welcome_must_add_the_member_it_is_given_to(group):
    alice, _ = group
    alice, _ = propose(alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], keys=KEYS)
    with pytest.raises(GroupChangeRejected, match="does not add us"):
        join_from_welcome("erin", "alice", make_welcome(alice), KEYS)
    alice, _ = propose(alice, IDS["alice"], ChangeOp.RENAME, T0, name="n")
    with pytest.raises(GroupChangeRejected, match="not an add"):
        make_welcome(alice)


def test_a_removed_members_view(group):
    alice, create = group
    carol = members_join(create, "carol")["carol"]
    alice, remove = propose(alice, IDS["alice"], ChangeOp.REMOVE, T0, users=["carol"])
    assert "carol" in change_recipients(alice.state_at(1), alice.current, "alice")
    carol = apply_change(carol, remove, KEYS)
    assert not carol.active and carol.current == alice.current
    alice, _ = propose(alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], keys=KEYS)
    assert "carol" not in change_recipients(alice.state_at(2), alice.current, "alice")


# --- encoding -----------------------------------------------------------------------------


def test_change_encoding_is_the_documented_one(group):
    alice, _ = group
    _, change = propose(
        alice, IDS["alice"], ChangeOp.ADD, T0, users=["dave"], admins=["dave"], keys=KEYS
    )
    body, sig = unpack_canonical(change)
    assert len(sig) == 64
    assert unpack_canonical(body) == [
        1,
        alice.group_id,
        2,
        alice.current.hash,
        "alice",
        T0,
        "add",
        [["dave"], ["dave"], [KEYS["dave"]]],
    ]
    state = alice.current
    assert state.to_wire() == [
        1,
        state.group_id,
        1,
        NO_STATE,
        "family",
        ["alice", "bob", "carol"],
        ["alice"],
    ]
    assert GroupState.from_wire(unpack_canonical(pack(state.to_wire()))) == state


def test_a_non_canonical_change_is_rejected(group):
    _, create = group
    body, sig = unpack_canonical(create)
    # The same array with the body length as bin16 instead of bin8: equal value, other bytes.
    header = b"\x92\xc5" + len(body).to_bytes(2, "big")
    with pytest.raises(GroupChangeRejected, match="non-canonical"):
        join_from_create("bob", header + body + pack(sig), KEYS)


def test_content_types_frame_the_plaintext():
    for kind in ContentType:
        assert decode_content(encode_content(kind, b"xyz")) == (kind, b"xyz")
    with pytest.raises(ValueError):
        decode_content(b"\x09abc")
    with pytest.raises(ValueError):
        decode_content(b"")


# --- any sequence of changes ------------------------------------------------------------------

OPS = st.sampled_from(list(ChangeOp))
SIGNERS = st.sampled_from(("alice", "alice", *NAMES))  # alice, the first admin, more often
USERS = st.lists(st.sampled_from(NAMES), min_size=1, max_size=2)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(SIGNERS, OPS, USERS, USERS), max_size=16))
def test_members_agree_on_any_sequence_of_changes(steps):
    """Whoever signs whatever: a member applies exactly the changes its signer's own
    client accepts, states keep their invariants, and the epoch only grows."""
    creator, create = create_group(IDS["alice"], "alice", "g", pins("bob", "carol"), T0)
    logs = {"alice": creator, **members_join(create, "bob", "carol")}
    watcher = logs["carol"]
    for signer, op, users, admins in steps:
        if signer not in logs or not logs[signer].active or op is ChangeOp.CREATE:
            continue
        source = logs[signer]
        change = GroupChange(
            group_id=source.group_id,
            epoch=source.current.epoch + 1,
            prev=source.current.hash,
            signer=signer,
            issued_at_ms=T0,
            op=op,
            users=tuple(sorted(set(users))),
            admins=tuple(sorted(set(admins) & set(users))),
            name="renamed" if op is ChangeOp.RENAME else "",
            keys=tuple(KEYS[u] for u in sorted(set(users))) if op is ChangeOp.ADD else (),
        )
        try:
            wire = forge(change, signer)
            accepted = apply_change(source, wire, KEYS)
        except (GroupChangeRejected, ValueError):
            if watcher.current.epoch == source.current.epoch:
                with pytest.raises(GroupError):
                    apply_change(watcher, forge(change, signer), KEYS)
            continue
        event(f"accepted {op}")
        for name, log in list(logs.items()):
            if log.current.epoch == source.current.epoch:
                logs[name] = apply_change(log, wire, KEYS)
        for name in accepted.current.members:
            if name not in logs:
                logs[name] = join_from_welcome(name, signer, make_welcome(accepted), KEYS)
        watcher = logs["carol"]
        state = accepted.current
        assert set(state.admins) <= set(state.members)
        assert state.admins or not state.members
        assert state.prev == source.current.hash and state.epoch == source.current.epoch + 1
    heads = {log.current for log in logs.values() if log.active}
    assert len(heads) <= 1
