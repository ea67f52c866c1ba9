"""The group part of the local profile: every SQL statement about groups.

Split from client/store.py along its seam: it runs on the same connection and vault
(`ProfileStore`), inside the same transactions, and seals every blob the same way (the
associated data names the table, the column and the row). Schema: client/schema/
0004_groups.sql. A group is stored as its membership log and its transcript (both
`to_bytes` of common/chat_group_log.py and common/chat_transcript.py); its conversation
is `group_messages`; input that must wait (a missing change, a key not yet accepted) is
`group_held`; sends not yet committed by the relay are `group_outbox` (0005).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final

from hushwire.client.errors import ProfileCorrupt
from hushwire.client.store import ProfileStore, _unpack
from hushwire.common.chat_group_log import GroupLog
from hushwire.common.chat_transcript import Transcript
from hushwire.common.crypto.encoding import expect_bytes, expect_int, expect_list, expect_str, pack
from hushwire.common.errors import CryptoError
from hushwire.common.messages import DeviceEnvelope

GROUP_KINDS: Final = ("in", "out", "event")
MAX_HELD: Final = 1000  # held group input per profile; past it the oldest goes


def _items(value: object) -> list:
    if not isinstance(value, list):
        raise ValueError("expected a list")
    return value


@dataclass(frozen=True, slots=True)
class StoredGroup:
    log: GroupLog
    transcript: Transcript

    @property
    def gid(self) -> str:
        return self.log.group_id.hex()


@dataclass(frozen=True, slots=True)
class GroupLine:
    """One row of a group's conversation, decrypted."""

    row_id: int
    uid: str
    gid: str
    kind: str  # in / out / event
    status: str
    sender: str  # "" for an event
    device: int
    sent_at_ms: int
    text: str


@dataclass(frozen=True, slots=True)
class GroupSend:
    """A change or message committed locally, kept until the relay's `ok`: `content` is
    sealed for every device of `accounts` (and our other devices with `own_devices`),
    `payload` goes beside it; `sealed` holds the envelopes sealed so far."""

    uid: str
    accounts: tuple[str, ...]
    own_devices: bool
    content: bytes
    payload: bytes | None
    line: str  # the uid of its conversation line, "" for a change
    sealed: dict[tuple[str, int], DeviceEnvelope]

    @classmethod
    def new(
        cls, accounts: tuple[str, ...], content: bytes, payload: bytes | None = None, *,
        line: str = "", own_devices: bool = True,
    ) -> GroupSend:  # fmt: skip
        return cls(secrets.token_hex(16), accounts, own_devices, content, payload, line, {})


@dataclass(frozen=True, slots=True)
class HeldInput:
    """Group input waiting to be tried again (see the module docstring)."""

    row_id: int
    uid: str
    reason: str  # missing / quarantine
    kind: int  # the content type (common.chat_groups.ContentType)
    sender: str
    device: int
    sent_at_ms: int
    data: bytes


class GroupStore:
    """Groups, their conversations and held input, in one open profile."""

    def __init__(self, store: ProfileStore) -> None:
        self.store = store

    # --- groups -------------------------------------------------------------------

    def _group(self, gid: str, log: bytes, transcript: bytes) -> StoredGroup:
        vault = self.store.vault
        try:
            return StoredGroup(
                GroupLog.from_bytes(vault.open("groups.log", gid, log)),
                Transcript.from_bytes(vault.open("groups.transcript", gid, transcript)),
            )
        except CryptoError as exc:
            raise ProfileCorrupt(f"stored group {gid} is unusable: {exc.message}") from None

    async def get(self, group_id: bytes) -> StoredGroup | None:
        gid = group_id.hex()
        row = await self.store._one("SELECT log, transcript FROM groups WHERE gid = ?", (gid,))
        return None if row is None else self._group(gid, bytes(row[0]), bytes(row[1]))

    async def all(self) -> list[StoredGroup]:
        rows = await self.store._all("SELECT gid, log, transcript FROM groups ORDER BY gid")
        return [self._group(r[0], bytes(r[1]), bytes(r[2])) for r in rows]

    async def save(self, log: GroupLog, transcript: Transcript, now_ms: int) -> None:
        gid = log.group_id.hex()
        vault = self.store.vault
        await self.store._write(
            "INSERT INTO groups (gid, log, transcript, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (gid) DO UPDATE SET log = excluded.log, "
            "transcript = excluded.transcript, updated_at = excluded.updated_at",
            (
                gid,
                vault.seal("groups.log", gid, log.to_bytes()),
                vault.seal("groups.transcript", gid, transcript.to_bytes()),
                now_ms,
            ),
        )

    # --- the conversation -----------------------------------------------------------

    async def add_line(
        self,
        gid: str,
        kind: str,
        status: str,
        *,
        sender: str,
        device: int,
        sent_at_ms: int,
        now_ms: int,
        text: str,
    ) -> str:
        """Store one line of a group's conversation; returns its uid."""
        uid = secrets.token_hex(16)
        body = self.store.vault.seal("group_messages.body", uid, pack([sender, device, text]))
        await self.store._write(
            "INSERT INTO group_messages (uid, gid, kind, status, sent_at, stored_at, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (uid, gid, kind, status, sent_at_ms, now_ms, body),
        )
        return uid

    async def set_status(self, uid: str, status: str) -> None:
        await self.store._write("UPDATE group_messages SET status = ? WHERE uid = ?", (status, uid))

    def _line(self, row: tuple) -> GroupLine:
        row_id, uid, gid, kind, status, sent_at, body = row
        try:
            sender, device, text = expect_list(
                _unpack(self.store.vault.open("group_messages.body", uid, bytes(body))), 3
            )
            sender, text = expect_str(sender), expect_str(text)
            device = expect_int(device, 0, 2**32)
        except ValueError as exc:
            raise ProfileCorrupt(f"stored group message {uid} is malformed: {exc}") from None
        return GroupLine(row_id, uid, gid, kind, status, sender, device, sent_at, text)

    async def lines(self, gid: str, limit: int) -> list[GroupLine]:
        """The last `limit` lines of a group's conversation, oldest first."""
        rows = await self.store._all(
            "SELECT id, uid, gid, kind, status, sent_at, body FROM group_messages "
            "WHERE gid = ? ORDER BY id DESC LIMIT ?",
            (gid, limit),
        )
        return [self._line(r) for r in reversed(rows)]

    async def unread(self) -> list[GroupLine]:
        """Received lines not yet marked read, over all groups, oldest first."""
        rows = await self.store._all(
            "SELECT id, uid, gid, kind, status, sent_at, body FROM group_messages "
            "WHERE status = 'received' ORDER BY id"
        )
        return [self._line(r) for r in rows]

    async def unread_counts(self) -> dict[str, int]:
        rows = await self.store._all(
            "SELECT gid, count(*) FROM group_messages WHERE status = 'received' GROUP BY gid"
        )
        return {r[0]: int(r[1]) for r in rows}

    async def mark_read(self, uids: tuple[str, ...] = (), gid: str | None = None) -> None:
        async with self.store.transaction():
            if gid is not None:
                await self.store._write(
                    "UPDATE group_messages SET status = 'read' "
                    "WHERE status = 'received' AND gid = ?",
                    (gid,),
                )
            for uid in uids:
                await self.store._write(
                    "UPDATE group_messages SET status = 'read' "
                    "WHERE status = 'received' AND uid = ?",
                    (uid,),
                )

    # --- the outbox -----------------------------------------------------------------

    async def keep_send(self, send: GroupSend, now_ms: int) -> None:
        """Store `send` (a new row goes after every other) or update its envelopes."""
        sealed = [[e.user, e.device, e.body] for e in send.sealed.values()]
        body = self.store.vault.seal(
            "group_outbox.body",
            send.uid,
            pack([list(send.accounts), send.own_devices, send.content, send.payload or b"",
                  send.line, sealed]),
        )  # fmt: skip
        await self.store._write(
            "INSERT INTO group_outbox (uid, stored_at, body) VALUES (?, ?, ?) "
            "ON CONFLICT (uid) DO UPDATE SET body = excluded.body",
            (send.uid, now_ms, body),
        )

    async def sends(self) -> list[GroupSend]:
        """The sends waiting for the relay, oldest first."""
        rows = await self.store._all("SELECT uid, body FROM group_outbox ORDER BY id")
        sends = []
        for uid, body in rows:
            try:
                accounts, own, content, payload, line, sealed = expect_list(
                    _unpack(self.store.vault.open("group_outbox.body", uid, bytes(body))), 6
                )
                envelopes = [expect_list(e, 3) for e in _items(sealed)]
                sends.append(
                    GroupSend(
                        uid, tuple(expect_str(a) for a in _items(accounts)), own is True,
                        expect_bytes(content), expect_bytes(payload) or None, expect_str(line),
                        {
                            (expect_str(u), expect_int(d, 1, 2**32)): DeviceEnvelope(
                                expect_str(u), expect_int(d, 1, 2**32), expect_bytes(b)
                            )
                            for u, d, b in envelopes
                        },
                    )
                )  # fmt: skip
            except ValueError as exc:
                raise ProfileCorrupt(f"stored group send {uid} is malformed: {exc}") from None
        return sends

    async def drop_send(self, uid: str) -> None:
        await self.store._write("DELETE FROM group_outbox WHERE uid = ?", (uid,))

    # --- held input -----------------------------------------------------------------

    async def hold(
        self, reason: str, kind: int, sender: str, device: int, sent_at_ms: int, data: bytes,
        now_ms: int,
    ) -> None:  # fmt: skip
        """Keep input to try again later; past MAX_HELD rows the oldest is dropped."""
        uid = secrets.token_hex(16)
        body = self.store.vault.seal(
            "group_held.body", uid, pack([kind, sender, device, sent_at_ms, data])
        )
        async with self.store.transaction():
            await self.store._write(
                "INSERT INTO group_held (uid, reason, sender, stored_at, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (uid, reason, sender, now_ms, body),
            )
            await self.store._write(
                "DELETE FROM group_held WHERE id NOT IN "
                "(SELECT id FROM group_held ORDER BY id DESC LIMIT ?)",
                (MAX_HELD,),
            )

    async def held(self, reason: str, sender: str | None = None) -> list[HeldInput]:
        sql = "SELECT id, uid, reason, body FROM group_held WHERE reason = ?"
        args: list[object] = [reason]
        if sender is not None:
            sql += " AND sender = ?"
            args.append(sender)
        rows = await self.store._all(sql + " ORDER BY id", args)
        held = []
        for row_id, uid, why, body in rows:
            try:
                kind, sender_, device, sent_at, data = expect_list(
                    _unpack(self.store.vault.open("group_held.body", uid, bytes(body))), 5
                )
                held.append(
                    HeldInput(
                        row_id, uid, why, expect_int(kind, 0, 255), expect_str(sender_),
                        expect_int(device, 0, 2**32), expect_int(sent_at, 0, 2**63),
                        expect_bytes(data),
                    )
                )  # fmt: skip
            except ValueError as exc:
                raise ProfileCorrupt(f"held group input {uid} is malformed: {exc}") from None
        return held

    async def drop_held(self, uid: str) -> None:
        await self.store._write("DELETE FROM group_held WHERE uid = ?", (uid,))
