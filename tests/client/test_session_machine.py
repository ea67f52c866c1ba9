"""A hypothesis state machine over two real profiles and a hostile network.

Rules send, deliver in any order, duplicate, drop, and restart a client from its profile
on disk. Whatever the interleaving: every message shown was sent by that peer to that
recipient, nothing is shown twice, and every envelope delivered for the first time is
shown (out-of-order and lost messages never break the session).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hushwire.client.outcomes import Duplicate, Received
from hushwire.client.prekeys import load_or_create_identity
from hushwire.client.session import SessionManager
from hushwire.client.store import KdfParams, ProfileStore
from hushwire.common.crypto.dh import X25519
from hushwire.common.messages import Deliver
from tests.client.conftest import Clock, Directory

USERS = ("alice", "bob")


class ChatMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="hushwire-machine-"))
        self.clock = Clock()
        self.directory = Directory()
        self.managers: dict[str, SessionManager] = {}
        self.network: list[tuple[str, Deliver, str]] = []  # (recipient, deliver, text)
        self.sent: dict[tuple[str, str], set[str]] = {}
        self.shown: list[tuple[str, str, str]] = []  # (sender, recipient, text)
        self.delivered_once: set[int] = set()
        self.counter = 0
        for user in USERS:
            self.managers[user] = self.run(self._open(user, first=True))

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _open(self, user: str, *, first: bool = False) -> SessionManager:
        store = await ProfileStore.open(self.dir / user, "pw", create=first, kdf=KdfParams(n=2**10))
        identity = await load_or_create_identity(store, X25519, 0)
        manager = SessionManager(store, user, identity, X25519, clock=self.clock)
        if first:
            upload = await manager.keys.plan_upload(
                relay_has_identity=False, prekeys_left=0, kem_prekeys_left=0, key_version=2
            )
            self.directory.publish(user, upload)
            await manager.keys.upload_done(upload)
        return manager

    def teardown(self) -> None:
        for manager in self.managers.values():
            self.run(manager.store.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(sender=st.sampled_from(USERS))
    def send(self, sender: str) -> None:
        recipient = USERS[1] if sender == USERS[0] else USERS[0]
        self.counter += 1
        text = f"{sender}->{recipient} {self.counter}"
        manager = self.managers[sender]
        out = self.run(manager.prepare_send(recipient, text, self.directory.fetch))
        self.run(manager.mark_sent(out.uid))
        self.network.append((recipient, self.directory.deliver(sender, out.envelope), text))
        self.sent.setdefault((sender, recipient), set()).add(text)

    def _receive(self, recipient: str, deliver: Deliver, text: str) -> None:
        outcome = self.run(self.managers[recipient].receive(deliver))
        first_time = deliver.mid not in self.delivered_once
        self.delivered_once.add(deliver.mid)
        if isinstance(outcome, Received):
            assert first_time, "a redelivered envelope was shown again"
            assert outcome.text == text and outcome.contact == deliver.sender
            self.shown.append((deliver.sender, recipient, outcome.text))
        else:
            assert not first_time, f"a first delivery was not shown: {outcome}"
            assert isinstance(outcome, Duplicate), outcome

    @precondition(lambda self: self.network)
    @rule(data=st.data())
    def deliver(self, data) -> None:
        i = data.draw(st.integers(0, len(self.network) - 1), label="which in-flight envelope")
        self._receive(*self.network.pop(i))

    @precondition(lambda self: self.network)
    @rule(data=st.data())
    def duplicate(self, data) -> None:
        i = data.draw(st.integers(0, len(self.network) - 1), label="which to duplicate")
        self._receive(*self.network[i])
        self.network.append(self.network[i])

    @precondition(lambda self: self.network)
    @rule(data=st.data())
    def drop(self, data) -> None:
        self.network.pop(data.draw(st.integers(0, len(self.network) - 1), label="which lost"))

    @rule(user=st.sampled_from(USERS))
    def restart(self, user: str) -> None:
        self.run(self.managers[user].store.close())
        self.managers[user] = self.run(self._open(user))

    @invariant()
    def shown_once_and_only_what_was_sent(self) -> None:
        assert len(self.shown) == len(set(self.shown))
        for sender, recipient, text in self.shown:
            assert text in self.sent[(sender, recipient)]


ChatMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
TestChat = ChatMachine.TestCase
