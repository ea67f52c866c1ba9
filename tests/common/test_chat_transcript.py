"""Group messages and transcript consistency, attacked by a relay that holds every byte.

Each member device is a (log, transcript) pair; the test moves message bytes between
them as a relay would, and drops, reorders, duplicates or forwards them as an attacker
would. The last tests run the same over real X3DH + Double Ratchet sessions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushwire.common.chat_group_log import (
    GroupLog,
    adopt_change,
    apply_change,
    create_group,
    join_from_create,
    join_from_welcome,
    make_welcome,
    propose,
)
from hushwire.common.chat_groups import (
    ChangeOp,
    ContentType,
    decode_content,
    encode_content,
)
from hushwire.common.chat_transcript import (
    KEEP_CHAINS,
    KEEP_EXPECTED,
    KEEP_EXTRAS,
    MAX_VIEWS,
    SEEN_HASH_LEN,
    EpochView,
    Fork,
    GroupMessage,
    Missed,
    Received,
    Transcript,
    chain_start,
    compose,
    fan_out,
    missed,
    new_transcript,
    receive,
)
from hushwire.common.crypto.dh import X25519
from hushwire.common.crypto.encoding import pack, unpack_canonical
from hushwire.common.crypto.envelope import DecryptedMessage, Envelope, Session
from hushwire.common.crypto.group_payload import open_group_payload, seal_group_payload
from hushwire.common.crypto.identity import IdentityKeyPair
from hushwire.common.errors import (
    CryptoError,
    DecryptionError,
    GroupError,
    GroupForked,
    GroupMessageRejected,
    LocalProtocolError,
    MissingGroupChanges,
)

from .crypto.conftest import make_user

NAMES = ("alice", "bob", "carol", "dave", "mallory")
IDS = {name: IdentityKeyPair.generate(X25519) for name in NAMES}
KEYS = {name: identity.sign_key for name, identity in IDS.items()}
T0 = 1_700_000_000_000


def pins(*names: str) -> dict[str, bytes]:
    """The identity keys a creator pinned for these members."""
    return {name: KEYS[name] for name in names}


@dataclasses.dataclass
class Device:
    """One member device: its membership log and its transcript."""

    log: GroupLog
    transcript: Transcript

    @property
    def name(self) -> str:
        return self.log.me

    @property
    def source(self) -> tuple[str, int]:
        return self.name, self.transcript.device

    def send(self, text: str) -> bytes:
        self.transcript, data = compose(self.log, self.transcript, text)
        return data

    def get(self, sender: Device, data: bytes) -> Received:
        result = receive(self.log, self.transcript, *sender.source, data)
        self.transcript = result.transcript
        return result

    def change(self, data: bytes) -> None:
        self.log = apply_change(self.log, data, KEYS)

    def missed(self) -> dict[str, int]:
        return {m.user: m.count for m in missed(self.transcript)}


def start(*members: str, device: int = 1) -> tuple[Device, ...]:
    """alice (admin) creates a group with `members`; every member's device joins."""
    log, create = create_group(IDS["alice"], "alice", "g", pins(*members), T0)
    devices = [Device(log, new_transcript(log, device))]
    for name in members:
        joined = join_from_create(name, create, KEYS)
        devices.append(Device(joined, new_transcript(joined, device)))
    return tuple(devices)


def admin_change(alice: Device, op: ChangeOp, **kw) -> bytes:
    alice.log, data = propose(alice.log, IDS["alice"], op, T0, **kw)
    return data


# --- honest runs ------------------------------------------------------------------------


def test_members_exchange_messages_with_nothing_missed_or_forked():
    alice, bob, carol = start("bob", "carol")
    for speaker, text in [(alice, "hi"), (bob, "hello"), (carol, "hey"), (alice, "bye")]:
        data = speaker.send(text)
        for other in (alice, bob, carol):
            if other is not speaker:
                got = other.get(speaker, data)
                assert (got.message.text, got.sender, got.duplicate, got.forks) == (
                    text,
                    speaker.name,
                    False,
                    (),
                )
    assert alice.missed() == bob.missed() == carol.missed() == {}


def test_a_message_names_what_its_sender_has_seen():
    alice, bob, _carol = start("bob", "carol")
    bob.get(alice, alice.send("a1"))
    a2 = alice.send("a2")
    bob.get(alice, a2)
    seen = GroupMessage.from_bytes(bob.send("b1")).seen
    assert [(e.user, e.device, e.epoch, e.seq) for e in seen] == [("alice", 1, 1, 2)]
    assert seen[0].chain16 == GroupMessage.from_bytes(a2).chain[:SEEN_HASH_LEN]


def test_a_duplicate_is_reported_as_such_and_changes_nothing():
    alice, bob = start("bob")
    data = alice.send("once")
    bob.get(alice, data)
    before = bob.transcript
    again = bob.get(alice, data)
    assert again.duplicate and bob.transcript == before


# --- drops --------------------------------------------------------------------------------


def test_a_dropped_message_is_detected_from_the_senders_next_one():
    alice, bob = start("bob")
    m1, _dropped, m3 = (alice.send(t) for t in ("1", "2", "3"))
    bob.get(alice, m1)
    bob.get(alice, m3)
    assert bob.missed() == {"alice": 1}
    bob.get(alice, _dropped)  # arrives late after all
    assert bob.missed() == {}


def test_a_dropped_last_message_is_detected_from_another_members_message():
    """The relay drops alice's message for bob only; alice says nothing more, but carol's
    next message says she saw it: bob is told he may have missed 1 message from alice."""
    alice, bob, carol = start("bob", "carol")
    data = alice.send("the plan")
    carol.get(alice, data)
    got = bob.get(carol, carol.send("ok, agreed"))
    assert got.forks == ()
    assert bob.missed() == {"alice": 1}
    assert missed(bob.transcript) == (Missed("alice", 1),)
    bob.get(alice, data)
    assert bob.missed() == {}


def test_drops_across_an_epoch_change_are_counted():
    alice, bob = start("bob")
    m1, m2 = alice.send("1"), alice.send("2")
    bob.get(alice, m1)  # m2 dropped for bob
    change = admin_change(alice, ChangeOp.RENAME, name="new")
    bob.change(change)
    m3 = alice.send("3")
    assert GroupMessage.from_bytes(m3).prev == (1, 2)
    bob.get(alice, m3)
    assert bob.missed() == {"alice": 1}
    bob.get(alice, m2)
    assert bob.missed() == {}


# --- forks --------------------------------------------------------------------------------


def _equivocate(alice: Device) -> tuple[bytes, bytes]:
    """Two different messages at the same position (alice's client is malicious)."""
    before = alice.transcript
    first = alice.send("meet at 5")
    alice.transcript = before
    return first, alice.send("meet at 9")


def test_different_messages_to_different_members_are_detected():
    alice, bob, carol = start("bob", "carol")
    to_bob, to_carol = _equivocate(alice)
    bob.get(alice, to_bob)
    carol.get(alice, to_carol)
    got = bob.get(carol, carol.send("see you then"))
    assert got.forks == (Fork("alice", 1, 1, 1, reported_by="carol"),)


def test_a_fork_is_detected_when_the_report_comes_first():
    alice, bob, carol = start("bob", "carol")
    to_bob, to_carol = _equivocate(alice)
    carol.get(alice, to_carol)
    assert bob.get(carol, carol.send("ok")).forks == ()
    assert bob.missed() == {"alice": 1}
    assert bob.get(alice, to_bob).forks == (Fork("alice", 1, 1, 1, reported_by="carol"),)
    assert bob.missed() == {}


def test_a_report_of_a_message_from_me_that_i_never_sent_is_a_fork():
    alice, bob, carol = start("bob", "carol")
    bob.get(alice, alice.send("1"))
    bob.get(carol, carol.send("x"))
    view = bob.transcript.view("carol", 1, 1)
    # bob's client says carol sent a second message: carol learns of the forgery.
    bob.transcript = bob.transcript.with_view("carol", 1, 1, view.record(2, bytes(32)))
    assert carol.get(bob, bob.send("y")).forks == (Fork("carol", 1, 1, 2, reported_by="bob"),)


def test_the_same_position_twice_with_other_content_is_rejected():
    alice, bob = start("bob")
    first, second = _equivocate(alice)
    bob.get(alice, first)
    with pytest.raises(GroupMessageRejected, match="different message"):
        bob.get(alice, second)


def two_admins_rename_at_once() -> tuple[Device, Device, Device, bytes, bytes]:
    """alice and bob (both admins) rename epoch 2 at once; carol applies alice's change."""
    alice, bob, carol = start("bob", "carol")
    promote = admin_change(alice, ChangeOp.PROMOTE, users=["bob"])
    bob.change(promote)
    carol.change(promote)
    a_change = admin_change(alice, ChangeOp.RENAME, name="alice's")
    bob.log, b_change = propose(bob.log, IDS["bob"], ChangeOp.RENAME, T0, name="bob's")
    carol.change(a_change)
    return alice, bob, carol, a_change, b_change


def test_a_message_under_another_membership_state_is_a_fork():
    """Two admins changed the same epoch; members who applied different changes cannot
    read each other's messages as the same group state."""
    _, bob, carol, _, _ = two_admins_rename_at_once()
    with pytest.raises(GroupForked, match="another membership state"):
        carol.get(bob, bob.send("hello"))


# --- who may send -------------------------------------------------------------------------


def test_a_member_cannot_pass_off_another_members_message_as_theirs():
    """mallory forwards alice's bytes over her own pairwise session: the receiver takes
    the sender from the session, and alice's chain does not start from mallory."""
    alice, bob, mallory = start("bob", "mallory")
    first = alice.send("1")
    with pytest.raises(GroupMessageRejected, match="chain"):
        bob.get(mallory, first)
    bob.get(mallory, mallory.send("m1"))
    second = alice.send("2")
    with pytest.raises(GroupMessageRejected, match="chain"):
        bob.get(mallory, second)
    assert bob.get(alice, first).sender == "alice"


def test_a_non_member_cannot_post():
    alice, bob = start("bob")
    outsider_log, _ = create_group(IDS["mallory"], "mallory", "g", pins("bob"), T0)
    outsider = Device(outsider_log, new_transcript(outsider_log, 1))
    data = outsider.send("spam")
    with pytest.raises(GroupMessageRejected, match="another group"):
        bob.get(outsider, data)
    # The right group id and state, but mallory is not in it.
    stolen = dataclasses.replace(alice.log, me="mallory")
    forged = Device(stolen, new_transcript(stolen, 1))
    with pytest.raises(LocalProtocolError):
        forged.send("spam")
    alice_state = alice.log.current
    msg = GroupMessage(alice_state.group_id, 1, alice_state.hash, 1, None, (), "spam", b"")
    msg = dataclasses.replace(
        msg, chain=msg.link(chain_start(msg.group_id, 1, msg.state_hash, ("mallory", 1)))
    )
    with pytest.raises(GroupMessageRejected, match="not a member"):
        receive(bob.log, bob.transcript, "mallory", 1, msg.to_bytes())


def test_a_removed_members_view():
    alice, bob, carol = start("bob", "carol")
    last_for_carol = alice.send("sent while carol was a member")
    remove = admin_change(alice, ChangeOp.REMOVE, users=["carol"])
    in_flight = carol.send("sent before I saw it")
    bob.change(remove)
    carol.change(remove)
    assert carol.get(alice, last_for_carol).message.epoch == 1  # hers to read
    with pytest.raises(GroupMessageRejected, match="not a member"):
        bob.get(carol, in_flight)
    with pytest.raises(LocalProtocolError, match="not a member"):
        carol.send("still here?")
    devices = {"alice": [1], "bob": [1], "carol": [1]}
    assert fan_out(alice.log, 1, devices).targets == (("bob", 1),)
    # Whatever carol's client still holds, a new message is not for her.
    data = alice.send("after removal")
    with pytest.raises(GroupMessageRejected, match="we were not a member"):
        carol.get(alice, data)


def test_a_message_in_flight_across_a_change_is_accepted_from_a_remaining_member():
    alice, bob, carol = start("bob", "carol")
    old = carol.send("sent at epoch 1")
    change = admin_change(alice, ChangeOp.ADD, users=["dave"], keys=KEYS)
    bob.change(change)
    assert bob.get(carol, old).message.epoch == 1


def test_a_message_from_a_later_epoch_is_held_until_the_change_arrives():
    alice, bob = start("bob")
    change = admin_change(alice, ChangeOp.RENAME, name="n")
    data = alice.send("after the rename")
    with pytest.raises(MissingGroupChanges) as caught:
        bob.get(alice, data)
    assert caught.value.epoch == 2
    bob.change(change)
    assert bob.get(alice, data).message.text == "after the rename"


def test_an_added_member_gets_no_history_and_no_false_alarms():
    alice, bob = start("bob")
    old = alice.send("before dave")
    bob.get(alice, old)
    bob.get(alice, alice.send("also before"))
    bob.change(admin_change(alice, ChangeOp.ADD, users=["dave"], keys=KEYS))
    dave_log = join_from_welcome("dave", "alice", make_welcome(alice.log), KEYS)
    dave = Device(dave_log, new_transcript(dave_log, 1))
    with pytest.raises(GroupMessageRejected, match="before we joined"):
        dave.get(alice, old)
    first = alice.send("welcome dave")
    dave.get(bob, bob.send("hi dave"))  # bob's seen names alice's 2nd message, of epoch 1
    assert dave.missed() == {}
    bob.get(alice, first)
    dave.get(bob, bob.send("did you see alice's?"))
    assert dave.missed() == {"alice": 1}  # "welcome dave", dropped for dave
    dave.get(alice, first)
    assert dave.missed() == {}


def test_a_message_from_this_very_device_is_rejected():
    (alice,) = start()
    data = alice.send("me")
    with pytest.raises(GroupMessageRejected, match="this very device"):
        alice.get(alice, data)


# --- several devices per member -------------------------------------------------------------


def test_every_device_is_a_sender_and_a_target():
    alice, bob = start("bob")
    alice2 = Device(alice.log, new_transcript(alice.log, 2))
    devices = {"alice": [1, 2], "bob": [1, 7]}
    assert fan_out(alice.log, 1, devices).targets == (("alice", 2), ("bob", 1), ("bob", 7))
    assert fan_out(alice.log, 1, {"alice": [1]}).unknown == ("bob",)
    from_phone, from_laptop = alice.send("phone"), alice2.send("laptop")
    alice2.get(alice, from_phone)  # sync of a sent message to the sender's other device
    bob.get(alice2, from_laptop)
    assert bob.missed() == {}
    bob.get(alice, from_phone)
    got = alice.get(bob, bob.send("both seen"))
    seen = GroupMessage.from_bytes(got.message.to_bytes()).seen
    assert [(e.user, e.device) for e in seen] == [("alice", 1), ("alice", 2)]
    assert alice.missed() == {"alice": 1}  # bob saw the laptop's message; the phone did not


# --- encoding ---------------------------------------------------------------------------------


def test_message_encoding_and_chain_are_the_documented_ones():
    """Recomputed here with hashlib and msgpack alone, as an independent client would."""
    alice, bob = start("bob")
    bob.get(alice, alice.send("one"))
    data = bob.send("two")
    items = msgpack.unpackb(data, raw=False)
    state = bob.log.current
    gid, a1 = state.group_id, alice.transcript.view("alice", 1, 1).chains[1]
    assert items[:8] == [1, gid, 1, state.hash, 1, None, [["alice", 1, 1, 1, a1[:16]]], "two"]

    def field(b: bytes) -> bytes:
        return struct.pack(">H", len(b)) + b

    start_value = hashlib.sha256(
        b"hushwire/group-chain-start/v1"
        + field(gid)
        + field((1).to_bytes(4, "big"))
        + field(state.hash)
        + field(b"bob")
        + field((1).to_bytes(4, "big"))
    ).digest()
    body = msgpack.packb(items[:8], use_bin_type=True)
    expected = hashlib.sha256(b"hushwire/group-chain/v1" + field(start_value) + field(body))
    assert items[8] == expected.digest()


def test_every_bit_flip_of_a_group_message_is_rejected_but_one_of_its_position():
    """The chain covers every field, so any flip fails it, except a flip of `seq` itself:
    a position whose predecessor we do not hold cannot be checked (only the sender could
    make that flip: the envelope's AEAD covers every byte). It then counts as a gap, and
    the real message at that position is rejected later as a second, different one."""
    alice, bob = start("bob")
    data = alice.send("hello")
    original = GroupMessage.from_bytes(data)
    for bit in range(len(data) * 8):
        out = bytearray(data)
        out[bit // 8] ^= 1 << (bit % 8)
        try:
            got = receive(bob.log, bob.transcript, "alice", 1, bytes(out))
        except GroupError:
            continue
        assert got.message.seq != 1
        assert dataclasses.replace(got.message, seq=1) == original
    assert bob.get(alice, data).message.text == "hello"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m.__setitem__(5, [1, 1]), "earlier epoch"),  # prev in the same epoch
        (lambda m: m.__setitem__(5, [2, 1]), "earlier epoch"),  # prev in a later epoch
        (
            lambda m: m.__setitem__(6, [["b", 1, 1, 1, bytes(16)], ["a", 1, 1, 1, bytes(16)]]),
            "sorted",
        ),
        (lambda m: m.__setitem__(6, [["bob", 1, 2, 1, bytes(16)]]), "later epoch"),
        (lambda m: m.__setitem__(6, [["Bob", 1, 1, 1, bytes(16)]]), "username"),
        (lambda m: m.__setitem__(7, "x" * 16385), "too long"),
        (lambda m: m.append(0), "list of 9"),
    ],
)
def test_malformed_messages_are_rejected(mutate, reason):
    alice, bob = start("bob")
    items = unpack_canonical(alice.send("x"))
    mutate(items)
    with pytest.raises(GroupMessageRejected, match=reason):
        receive(bob.log, bob.transcript, "alice", 1, pack(items))


# --- any drop pattern -------------------------------------------------------------------------


def assert_missed_after_a_final_round(
    devices: tuple[Device, ...], dropped: list[dict[str, int]]
) -> None:
    """Each member sends one last message that arrives everywhere: then every member's
    missed count is exactly what was dropped for it, and nobody was shown a fork."""
    for speaker in devices:
        data = speaker.send("final")
        for other in devices:
            if other is not speaker:
                assert other.get(speaker, data).forks == ()
    for index, device in enumerate(devices):
        assert device.missed() == {name: n for name, n in dropped[index].items() if n}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sets(st.integers(0, 2))), max_size=15))
def test_every_drop_is_counted_exactly_once_all_have_spoken(plan):
    """Each step: one member speaks and the relay drops it for some others. After every
    member sends one final message that arrives everywhere, each member's "missed"
    equals exactly what was dropped for it, and an honest run never shows a fork."""
    devices = start("bob", "carol")
    dropped = [dict.fromkeys((d.name for d in devices), 0) for _ in devices]
    for speaker_index, drops in plan:
        speaker = devices[speaker_index]
        data = speaker.send("m")
        for index, other in enumerate(devices):
            if other is speaker:
                continue
            if index in drops:
                dropped[index][speaker.name] += 1
            else:
                assert other.get(speaker, data).forks == ()
    assert_missed_after_a_final_round(devices, dropped)


# --- over real pairwise sessions --------------------------------------------------------------


def test_a_group_conversation_over_real_double_ratchet_sessions():
    """The whole design without the relay: the message encrypted once, its key note
    sealed per device over real X3DH + Double Ratchet sessions, the sender taken from
    the envelope. mallory, a member, cannot make bob accept a message as alice's, and
    carol, removed, cannot read what follows even with the payload in hand."""
    names = ("alice", "bob", "carol", "mallory")
    users = {name: make_user(name, X25519) for name in names}
    sessions: dict[tuple[str, str], Session] = {}

    def seal(sender: str, recipient: str, plaintext: bytes) -> bytes:
        if (sender, recipient) not in sessions:
            me, peer = users[sender], users[recipient]
            session, envelope = Session.initiate(
                me.identity, sender, peer.bundle(), X25519, T0, plaintext
            )
            sessions[sender, recipient] = session
            return envelope
        return sessions[sender, recipient].encrypt(plaintext, T0)

    def open_(recipient: str, envelope: bytes) -> DecryptedMessage:
        sender = Envelope.from_bytes(envelope).sender
        if (recipient, sender) not in sessions:
            session, message, _ = Session.respond(
                users[recipient].identity, recipient, users[recipient].prekeys(), envelope
            )
            sessions[recipient, sender] = session
            return message
        return sessions[recipient, sender].decrypt(envelope)

    alice, bob, carol, mallory = start("bob", "carol", "mallory")
    by_name = {"alice": alice, "bob": bob, "carol": carol, "mallory": mallory}

    def post(speaker: Device, text: str) -> tuple[dict[str, bytes], bytes]:
        """What the relay would carry: one envelope per target, one payload."""
        note, payload = seal_group_payload(speaker.send(text))
        targets = fan_out(speaker.log, 1, {n: [1] for n in by_name}).targets
        plaintext = encode_content(ContentType.GROUP_MESSAGE, note)
        return {name: seal(speaker.name, name, plaintext) for name, _ in targets}, payload

    notes: dict[str, bytes] = {}

    def deliver(name: str, envelope: bytes, payload: bytes) -> Received:
        message = open_(name, envelope)
        kind, note = decode_content(message.plaintext)
        assert kind is ContentType.GROUP_MESSAGE
        notes[name] = note
        return by_name[name].get(by_name[message.sender], open_group_payload(note, payload))

    script = [(alice, "hello all"), (mallory, "hi"), (mallory, "me again"), (alice, "again")]
    for speaker, text in script:
        envelopes, payload = post(speaker, text)
        for name, envelope in envelopes.items():
            got = deliver(name, envelope, payload)
            assert (got.sender, got.message.text) == (speaker.name, text)

    # alice posts; mallory re-seals the key note she was given, first claiming alice.
    envelopes, payload = post(alice, "pay mallory")
    deliver("mallory", envelopes["mallory"], payload)
    draft = seal("mallory", "bob", encode_content(ContentType.GROUP_MESSAGE, notes["mallory"]))
    lying = dataclasses.replace(Envelope.from_bytes(draft), sender="alice").to_bytes()
    with pytest.raises(DecryptionError):
        sessions["bob", "alice"].decrypt(lying)
    with pytest.raises(DecryptionError):
        sessions["bob", "mallory"].decrypt(lying)
    # As mallory's own, the payload is a message of alice's chain, not of mallory's.
    with pytest.raises(GroupMessageRejected, match="chain"):
        deliver("bob", draft, payload)
    assert deliver("bob", envelopes["bob"], payload).sender == "alice"
    assert bob.missed() == {}

    # carol is removed; the relay still hands her the next payload.
    remove = admin_change(alice, ChangeOp.REMOVE, users=["carol"])
    for member in (bob, carol, mallory):
        member.change(remove)
    envelopes, payload = post(alice, "carol is gone")
    assert set(envelopes) == {"bob", "mallory"}
    for name, envelope in envelopes.items():
        assert deliver(name, envelope, payload).message.text == "carol is gone"
    with pytest.raises(DecryptionError, match="not the one"):
        open_group_payload(notes["carol"], payload)  # the last key carol was given


def test_what_a_transcript_remembers_is_bounded():
    """Claims in `seen` about many devices cannot grow a client's memory without end:
    past MAX_VIEWS the oldest epoch's views are dropped, never the one just recorded."""
    _, bob = start("bob")
    transcript = bob.transcript
    for device in range(MAX_VIEWS + 10):
        epoch = 1 if device < 100 else 2
        transcript = transcript.with_view("alice", device, epoch, EpochView(known=1))
    assert len(transcript.views) <= MAX_VIEWS
    assert ("alice", MAX_VIEWS + 9, 2) in transcript.views
    assert all(epoch == 2 for (_, _, epoch) in transcript.views)
    view = EpochView()
    for seq in range(1, KEEP_CHAINS + 50):
        view = view.record(seq, bytes(32))
    assert len(view.chains) == KEEP_CHAINS and view.floor == KEEP_CHAINS + 49
    for seq in range(KEEP_CHAINS + 100, KEEP_CHAINS + 100 + KEEP_EXPECTED + 20):
        view = view.expect(seq, bytes(16), "carol")
    assert len(view.expected) == KEEP_EXPECTED


def test_a_gap_that_never_fills_stays_counted_but_not_remembered_forever():
    view = EpochView()
    total = KEEP_EXTRAS + 300
    for seq in range(3, total + 1):  # 1 and 2 never arrive
        view = view.record(seq, bytes(32))
    assert view.missing == 2 and len(view.extras) <= KEEP_EXTRAS
    assert view.lost == 2 and view.floor == total


def test_a_transcript_restores_exactly_and_keeps_working():
    alice, bob, carol = start("bob", "carol")
    to_bob, to_carol = _equivocate(alice)
    bob.get(alice, to_bob)
    carol.get(alice, to_carol)
    bob.get(carol, carol.send("c1"))
    _, dropped = alice.send("a2"), alice.send("a3")
    carol.get(alice, dropped)
    bob.get(carol, carol.send("c2"))
    assert bob.missed() == {"alice": 2}
    restored = Transcript.from_bytes(bob.transcript.to_bytes())
    assert restored == bob.transcript
    bob.transcript = restored
    assert bob.get(alice, dropped).forks == ()
    assert bob.missed() == {"alice": 1}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda items: items.__setitem__(0, bytes(15)),
        lambda items: items.__setitem__(1, "Bob"),
        lambda items: items.__setitem__(3, 0),
        lambda items: items[4][0].__setitem__(4, list(range(1, KEEP_EXTRAS + 2))),
        lambda items: items[4][0].__setitem__(6, [[1, bytes(31)]]),
        lambda items: items[4][0].pop(),
    ],
)
def test_malformed_transcripts_are_rejected(mutate):
    alice, bob = start("bob")
    bob.get(alice, alice.send("x"))
    data = bob.transcript.to_bytes()
    items = unpack_canonical(data[1:])
    mutate(items)
    with pytest.raises(CryptoError, match="malformed transcript"):
        Transcript.from_bytes(data[:1] + pack(items))
    with pytest.raises(CryptoError, match="version"):
        Transcript.from_bytes(b"\x09" + data[1:])


def test_a_member_removed_and_added_again_counts_nothing_from_the_epoch_it_was_out():
    alice, bob, carol = start("bob", "carol")
    remove = admin_change(alice, ChangeOp.REMOVE, users=["bob"])
    bob.change(remove)
    carol.change(remove)
    while_out = [alice.send("bob is out"), alice.send("still out")]
    for data in while_out:
        carol.get(alice, data)
    add = admin_change(alice, ChangeOp.ADD, users=["bob"], keys=KEYS)
    bob.change(add)
    carol.change(add)
    back = alice.send("welcome back")
    assert GroupMessage.from_bytes(back).prev == (2, 2)
    bob.get(alice, back)
    bob.get(carol, carol.send("hi bob"))  # carol's seen names alice's epoch-2 messages
    assert bob.missed() == {}
    with pytest.raises(GroupMessageRejected, match="we were not a member"):
        bob.get(alice, while_out[0])


def test_after_adopting_the_winning_change_the_losing_branch_counts_for_nothing():
    alice, bob, carol, _, b_change = two_admins_rename_at_once()
    on_a = alice.send("under alice's rename")
    carol.get(alice, on_a)
    # Everyone settles on bob's change (as if it had the lower hash).
    for member in (alice, carol):
        member.log = adopt_change(member.log, b_change, KEYS)
        member.transcript = member.transcript.forget_from(3)
    assert alice.log.current == bob.log.current == carol.log.current
    with pytest.raises(GroupForked):
        bob.get(alice, on_a)
    again = alice.send("under bob's rename")
    assert GroupMessage.from_bytes(again).seq == 1
    for member in (bob, carol):
        assert member.get(alice, again).message.text == "under bob's rename"
    assert bob.missed() == carol.missed() == {}


@settings(max_examples=40, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.integers(0, 2), st.sets(st.integers(0, 2)), st.booleans()), max_size=12
    ),
    change_at=st.integers(0, 12),
    data=st.data(),
)
def test_drops_reorders_and_duplicates_across_an_epoch_are_counted_exactly(plan, change_at, data):
    """The relay drops any messages for any members, delivers the rest in any order and
    some twice, while the membership moves to a new epoch. After a final message from
    each member, each one's missed count is exactly what was dropped for it, every
    duplicate is flagged, and no fork is reported."""
    devices = start("bob", "carol")
    dropped = [dict.fromkeys((d.name for d in devices), 0) for _ in devices]
    queues: list[list[tuple[Device, bytes]]] = [[] for _ in devices]
    for step, (speaker_index, drops, twice) in enumerate(plan):
        if step == change_at:
            change = admin_change(devices[0], ChangeOp.RENAME, name=f"step {step}")
            for member in devices[1:]:
                member.change(change)
        speaker = devices[speaker_index]
        message = speaker.send(f"{step}")
        for index, other in enumerate(devices):
            if other is speaker:
                continue
            if index in drops:
                dropped[index][speaker.name] += 1
            else:
                queues[index] += [(speaker, message)] * (2 if twice else 1)
    for index, queue in enumerate(queues):
        seen = set()
        for speaker, message in data.draw(st.permutations(queue)):
            got = devices[index].get(speaker, message)
            assert got.forks == ()
            assert got.duplicate == (message in seen)
            seen.add(message)
    assert_missed_after_a_final_round(devices, dropped)
