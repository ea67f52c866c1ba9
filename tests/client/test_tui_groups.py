"""Groups in the terminal chat: the parser, completer and model alone, then the real
prompt_toolkit application (tests/client/test_tui.py's Screen) against a real relay over
TLS, with library clients as the other members."""

from __future__ import annotations

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from hushwire.client.service import GroupMessageReceived, GroupNotice, HushwireClient
from hushwire.client.tui import (
    ChatApp,
    ChatCompleter,
    ChatModel,
    Command,
    CommandError,
    parse_input,
)
from hushwire.common.chat_transcript import MAX_TEXT_BYTES
from tests.adversarial.test_group_attacks import drop_first, withhold
from tests.client import test_tui
from tests.client.test_tui import ENTER, KILL_LINE, TAB, Screen, paste
from tests.e2e.helpers import FAST_BACKOFF, PASSPHRASE, link, next_event

chat = test_tui.chat  # the fixture: a real ChatApp on a pipe, against the relay given

USERS = ("alice", "bob", "carol", "dave")


# --- parser, completer, model ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/group", Command("group")),
        ("/group info", Command("group", sub="info")),
        ("/group info #team", Command("group", "team", sub="info")),
        ("/group create team bob carol", Command("group", "team", sub="create",
                                                 members=("bob", "carol"))),
        ("/group add #team dave", Command("group", "team", sub="add", members=("dave",))),
        ("/group remove team bob", Command("group", "team", sub="remove", members=("bob",))),
        ("/group leave #team", Command("group", "team", sub="leave")),
        ("/to #team", Command("to", "#team")),
        ("/to #the whole team ", Command("to", "#the whole team")),
    ],
)  # fmt: skip
def test_parse_group_commands(text, expected):
    assert parse_input(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("/group frob", r"/group create\|add\|remove\|leave\|info: see /help"),
        ("/group create team", r"usage: /group create NAME MEMBER\.\.\."),
        ("/group add #team", r"usage: /group add #GROUP MEMBER\.\.\."),
        ("/group leave #team bob", r"usage: /group leave #GROUP"),
        ("/group create " + "x" * 65 + " bob", "group name must be 1-64 printable characters"),
        ("/to #", "group name must be 1-64 printable characters"),
        ("/group add #team Bob!", "invalid name 'Bob!'"),
        ("/group create big " + " ".join(f"u{i}" for i in range(50)), "at most 50 members"),
    ],
)
def test_parse_group_command_errors(text, error):
    with pytest.raises(CommandError, match=error):
        parse_input(text)


def test_completer_offers_groups_and_members():
    completer = ChatCompleter(
        lambda: ["bob", "carol", "dave"],
        lambda: ["#team", "#tea-time"],
        lambda group: ("bob", "carol") if group.removeprefix("#") == "team" else (),
    )

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]

    assert complete("/gr") == ["/group "]
    assert complete("/group ") == ["create", "add", "remove", "leave", "info"]
    assert complete("/group a") == ["add"]
    assert complete("/to #") == ["#team", "#tea-time"]
    assert complete("/to #team") == ["#team"]
    assert complete("/to ") == ["bob", "carol", "dave", "#team", "#tea-time"]
    assert complete("/group add #te") == ["#team", "#tea-time"]
    assert complete("/group add #team ") == ["dave"]  # not yet members
    assert complete("/group remove #team ") == ["bob", "carol"]
    assert complete("/group remove #team bob ") == ["carol"]
    assert complete("/group create crew b") == ["bob"]
    assert complete("/group leave #team ") == []
    assert complete("/verify #") == []  # people only


def test_model_keys_groups_by_id_across_renames_and_shared_names():
    model = ChatModel("alice", "relay:1")
    first = model.group("aa" * 16, "team")
    assert first.name == "#team" and model.find_group("team") is first
    model.select("#team")
    renamed = model.group("aa" * 16, "alpha")
    assert renamed is first and first.name == "#alpha" and model.current == "#alpha"
    assert "#team" not in model.conversations
    other = model.group("bb" * 16, "alpha")  # another group of the same name
    assert other.name == "#alpha~bbbbbbbb" and other is not first
    first.members = ("alice", "bob")
    assert model.groups() == ["#alpha", "#alpha~bbbbbbbb"]
    assert model.members("alpha") == ("bob",)
    model.online["bob"] = True
    assert model.names() == ["bob"]  # group conversations are not people


# --- the real application ----------------------------------------------------------------


@pytest.fixture
async def relay4(relay_factory):
    return await relay_factory(users=USERS)


def listed(screen: Screen, text: str):
    return lambda: text in screen.chat.list_text()


async def test_group_listed_with_unread_count_messages_in_order_cleared_on_open(
    relay4, chat, login
):
    bob, carol = await login(relay4, "bob"), await login(relay4, "carol")
    screen = await chat(relay4)
    await bob.groups.create("team", ["alice", "carol"])
    await screen.until(listed(screen, "#team"), lambda: screen.chat.list_text())
    await carol.sync()
    await bob.groups.send("team", "b1")
    await screen.until(listed(screen, "#team (1)"), "one unread")
    await carol.groups.send("team", "c1")
    await screen.until(listed(screen, "#team (2)"), "two unread")
    await bob.groups.send("team", "b2")
    await screen.until(listed(screen, "#team (3)"), "three unread")
    assert "b1" not in screen.pane
    await screen.run("/to #team", "members: alice, bob, carol")
    await screen.shows("bob: b2")
    pane = screen.pane
    assert pane.index("bob created the group 'team'") < pane.index("bob: b1")
    assert pane.index("bob: b1") < pane.index("carol: c1") < pane.index("bob: b2")
    assert "(3)" not in screen.chat.list_text()
    assert await screen.chat.client.groups.store.unread_counts() == {}
    assert "to: #team" in screen.chat.status_text()
    # Shown while open: marked read as it is shown.
    await carol.groups.send("team", "c2")
    await screen.shows("carol: c2")
    await screen.until(lambda: "(1)" not in screen.chat.list_text(), "no unread")
    await screen.run("/group leave #team", "* you left the group")
    await next_event(bob, GroupNotice, lambda e: e.text == "alice left the group")
    await screen.until(listed(screen, "#team (left)"), "#team left")
    screen.type("anyone?" + ENTER)
    await screen.shows("not sent: you are no longer a member of #team")


async def test_sending_to_a_group_from_the_input_line(relay4, chat, login):
    bob, carol = await login(relay4, "bob"), await login(relay4, "carol")
    screen = await chat(relay4)
    await screen.run("/group create team bob carol", "created #team: /to #team to talk there")
    await screen.until(listed(screen, "#team"), "#team listed")
    await screen.run("/to #team", "you created the group 'team' with bob, carol")
    screen.type("hello team" + ENTER)
    await screen.shows("you: hello team")
    too_long = "é" * (MAX_TEXT_BYTES // 2 + 1)
    screen.type(paste(too_long) + ENTER)
    await screen.shows(f"too long: {MAX_TEXT_BYTES + 2} bytes of UTF-8, a group message holds")
    assert screen.typed == too_long
    screen.type(KILL_LINE)
    for member in (bob, carol):
        got = await next_event(member, GroupMessageReceived)
        assert (got.group, got.sender, got.text) == ("team", "alice", "hello team")
    await bob.groups.send("team", "hi alice")
    await screen.shows("bob: hi alice")
    await screen.run("/group info", "#team: id ")
    assert "admins   alice" in screen.pane and "member   carol (devices 1)" in screen.pane
    await screen.run("/group", "1 group(s):")
    assert "#team  3 members" in screen.pane
    await screen.run("/help", "/group remove #GROUP MEMBER...")
    assert "Changes, missed messages and forks show in the group" in screen.pane


async def test_group_command_errors_are_shown(relay4, chat, login):
    bob = await login(relay4, "bob")
    screen = await chat(relay4)
    await screen.run("/group create crew zed", "no such user on this relay")
    await screen.run("/group create " + "x" * 65 + " bob", "group name must be 1-64")
    many = " ".join(f"user{i}" for i in range(50))
    await screen.run("/group create big " + many, "at most 50 members, you included")
    await screen.run("/group add #nope bob", "no group named 'nope' here; /group shows yours")
    await bob.groups.create("crew", ["alice"])
    await screen.until(listed(screen, "#crew"), "#crew listed")
    await screen.run("/group add #crew carol", "you are not an admin of #crew; ask one of: bob")
    await screen.run("/group remove #crew bob", "you are not an admin of #crew")
    await screen.run("/group create crew bob", "already in a group named 'crew'")
    assert "Traceback" not in screen.pane and "internal error" not in screen.pane


async def test_membership_changes_shown_inline_and_completion(relay4, chat, login):
    bob, dave = await login(relay4, "bob"), await login(relay4, "dave")
    await login(relay4, "carol")
    screen = await chat(relay4)
    await bob.groups.create("team", ["alice", "carol"])
    await screen.until(listed(screen, "#team"), "#team listed")
    await screen.run("/to #team", "members: alice, bob, carol")
    await bob.groups.add("team", ["dave"])
    await screen.shows("* bob added dave")
    await dave.sync()
    await dave.groups.leave("team")
    await screen.shows("* dave left the group")
    await bob.groups.promote("team", ["alice"])
    await screen.shows("bob made you admin")

    buffer = screen.chat.input.buffer

    def offered() -> list[str]:
        state = buffer.complete_state
        return [c.text for c in state.completions] if state else []

    await screen.run("/who", "4 user(s) on")
    screen.type("/to #")
    await screen.until(lambda: offered() == ["#team"], lambda: f"#team offered: {screen}")
    screen.type(TAB)
    await screen.until(lambda: screen.typed == "/to #team", "/to #team")
    screen.type(KILL_LINE + "/group add #team ")
    await screen.until(lambda: offered() == ["dave"], lambda: f"dave offered: {screen}")
    screen.type(TAB)
    await screen.until(lambda: screen.typed == "/group add #team dave", "dave completed")
    screen.type(ENTER)
    await screen.shows("* you added dave")
    screen.type("/group remove #team ")
    await screen.until(
        lambda: offered() == ["bob", "carol", "dave"], lambda: f"members offered: {screen}"
    )
    screen.type(KILL_LINE)
    await next_event(bob, GroupNotice, lambda e: "alice added dave" in e.text)
    await bob.groups.remove("team", ["alice"])
    await screen.shows("⚠ you were removed by bob: nothing more reaches you here")
    screen.type("still there?" + ENTER)
    await screen.shows("not sent: you are no longer a member of #team")
    assert screen.chat.model.groups() == []  # no longer offered
    assert "#team (left)" in screen.chat.list_text()


async def test_a_missed_message_and_a_removal_elsewhere_are_shown(relay4, chat, login):
    bob, carol = await login(relay4, "bob"), await login(relay4, "carol")
    screen = await chat(relay4)
    await bob.groups.create("team", ["alice", "carol"])
    await screen.until(listed(screen, "#team"), "#team listed")
    await screen.run("/to #team", "members: alice, bob, carol")
    drop_first(relay4, "alice", "bob")
    await bob.groups.send("team", "one")
    await bob.groups.send("team", "two")
    await screen.shows("bob: two")
    await screen.shows("⚠ you may have missed 1 message from bob")
    assert "bob: one" not in screen.pane
    # A removal from a group not on screen is pointed to from the one that is.
    await screen.run("/to carol", "no messages with carol yet")
    await bob.groups.remove("team", ["alice"])
    await screen.shows("⚠ #team: you were removed by bob: nothing more reaches you here")
    await carol.sync()
    assert await next_event(carol, GroupNotice, lambda e: "bob removed alice" in e.text)


async def test_a_key_an_admin_vouched_for_that_is_not_the_pinned_one_is_a_warning(
    relay4, chat, login, tmp_path
):
    bob, carol = await login(relay4, "bob"), await login(relay4, "carol")
    screen = await chat(relay4)
    await carol.send("alice", "hi")  # alice pins carol's key
    await screen.until(listed(screen, "carol (1)"), "carol's message")
    await carol.close()
    await login(relay4, "carol", profile=tmp_path / "carol-new", replace_identity=True)
    await bob.groups.create("team", ["alice"])
    await screen.until(listed(screen, "#team"), "#team listed")
    await bob.groups.add("team", ["carol"])  # bob vouches for carol's new key
    await screen.shows("⚠ #team: the identity key an admin vouched for carol is not the one")
    await screen.run("/to #team", "* bob added carol")
    assert "⚠ the identity key an admin vouched for carol" in screen.pane


async def test_a_forked_history_is_a_warning_in_the_group(relay4, chat, login):
    bob, _ = await login(relay4, "bob"), await login(relay4, "carol")
    await login(relay4, "dave")
    screen = await chat(relay4)
    await bob.groups.create("team", ["alice", "carol"])
    await bob.groups.promote("team", ["alice"])
    await screen.until(listed(screen, "#team"), "#team listed")
    await screen.run("/to #team", "bob made you admin")
    # The relay keeps alice's change from bob until bob has signed his own.
    _, release = withhold(relay4, "bob")
    await screen.run("/group add #team dave", "* you added dave")
    await bob.groups.remove("team", ["carol"])
    release()
    await screen.shows("⚠ the group's history forked at epoch 3")


async def test_a_group_message_from_our_other_device_shows_as_ours(relay4, chat, login, tmp_path):
    bob = await login(relay4, "bob")
    screen = await chat(relay4)
    laptop = await link(relay4, screen.chat.client, tmp_path / "alice-laptop", "laptop")
    try:
        await bob.groups.create("team", ["alice"])
        await screen.until(listed(screen, "#team"), "#team listed")
        await screen.run("/to #team", "members: alice, bob")
        await laptop.sync()
        await laptop.groups.send("team", "from the laptop")
        await screen.shows("you: from the laptop  [other device]")
        got = await next_event(bob, GroupMessageReceived)
        assert (got.sender, got.text) == ("alice", "from the laptop")
    finally:
        await laptop.close()


async def test_unread_group_messages_in_the_profile_are_counted_at_start(relay4, login, tmp_path):
    bob = await login(relay4, "bob")
    profile = tmp_path / "tui-alice"
    await test_tui.make_profile(relay4, "alice", profile)
    await bob.groups.create("team", ["alice"])
    await bob.groups.send("team", "while you were away")
    await bob.groups.send("team", "and again")
    fetch = await HushwireClient.open(profile, PASSPHRASE, backoff=FAST_BACKOFF)
    await fetch.start()
    await fetch.sync()  # stored in the profile, unread
    await fetch.close()
    client = await HushwireClient.open(profile, PASSPHRASE, backoff=FAST_BACKOFF)
    with create_pipe_input() as pipe:
        screen = Screen(ChatApp(client, input=pipe, output=DummyOutput()), pipe)
        try:
            # Two messages; the notice that bob created the group is not counted.
            await screen.until(listed(screen, "#team (2)"), lambda: screen.chat.list_text())
            await screen.run("/to #team", "bob: and again")
            assert "(2)" not in screen.chat.list_text()
        finally:
            await screen.stop()
