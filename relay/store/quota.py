"""Mailbox quotas: what one recipient's mailbox may hold, and each sender's share of it.

A mailbox has a limit in envelopes and in bytes, and every (sender, recipient) pair a
smaller one of each: one sender fills only its own share, so others can still write
(SimpleX gives each contact its own queue for the same reason). On top, the relay
refuses new envelopes while the disk holding the db has less free space than a floor,
so a full disk is a typed refusal, not a failed commit.

Pure bookkeeping, in memory: the store loads a mailbox's usage once from the db,
then keeps it current on every reserve, delete and purge. Time is passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hushwire.common.errors import ErrorCode, RequestError

DISK_CHECK_EVERY = 1.0  # seconds between free-space checks (statvfs)

# A mailbox's usage as a backend reports it: (sender, envelopes, bytes) per sender.
Usage = list[tuple[str, int, int]]


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    envelopes: int = 10_000  # per mailbox
    bytes: int = 256 * 1024 * 1024  # per mailbox
    sender_envelopes: int = 2_000  # per (sender, recipient)
    sender_bytes: int = 32 * 1024 * 1024  # per (sender, recipient)


class _Usage:
    __slots__ = ("bytes", "count", "senders")

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.senders: dict[str, list[int]] = {}  # sender -> [envelopes, bytes]


class Mailboxes:
    """Usage of each loaded mailbox (by recipient id) and of each sender's share."""

    def __init__(self, limits: QuotaLimits) -> None:
        self.limits = limits
        self._usage: dict[int, _Usage] = {}

    def __contains__(self, rid: object) -> bool:
        return rid in self._usage

    def load(self, rid: int, rows: Usage) -> None:
        """Usage from the db, as (sender, envelopes, bytes); kept if already loaded
        (a count loaded earlier already includes rows whose commit is in flight)."""
        if rid in self._usage:
            return
        usage = self._usage[rid] = _Usage()
        for sender, count, size in rows:
            usage.senders[sender] = [count, size]
            usage.count += count
            usage.bytes += size

    def count(self, rid: int) -> int:
        return self._usage[rid].count

    def check(self, sender: str, rid: int, name: str, size: int) -> None:
        """Raise MAILBOX_FULL if one more envelope of `size` bytes does not fit."""
        usage, limits = self._usage[rid], self.limits
        mine = usage.senders.get(sender)
        if mine is not None and (
            mine[0] >= limits.sender_envelopes or mine[1] + size > limits.sender_bytes
        ):
            raise RequestError(
                ErrorCode.MAILBOX_FULL,
                f"your share of the mailbox of {name} is full ({limits.sender_envelopes} "
                f"envelopes or {limits.sender_bytes} bytes from one sender)",
            )
        if usage.count >= limits.envelopes or usage.bytes + size > limits.bytes:
            raise RequestError(
                ErrorCode.MAILBOX_FULL,
                f"the mailbox of {name} is full ({limits.envelopes} envelopes or "
                f"{limits.bytes} bytes)",
            )

    def add(self, sender: str, rid: int, size: int) -> None:
        usage = self._usage[rid]
        usage.count += 1
        usage.bytes += size
        mine = usage.senders.get(sender)
        if mine is None:
            usage.senders[sender] = [1, size]
        else:
            mine[0] += 1
            mine[1] += size

    def remove(self, sender: str, rid: int, size: int) -> None:
        """An envelope left the mailbox (acked, purged, or its commit failed)."""
        usage = self._usage.get(rid)
        if usage is None:
            return
        usage.count -= 1
        usage.bytes -= size
        mine = usage.senders.get(sender)
        if mine is not None:
            mine[0] -= 1
            mine[1] -= size
            if mine[0] <= 0:
                del usage.senders[sender]

    def forget(self, rid: int) -> None:
        """Drop a mailbox's usage (its user is gone); loaded again on next use."""
        self._usage.pop(rid, None)


class DiskGuard:
    """Refuses new envelopes while the db's file system has less than `floor` bytes
    free. Checked at most once a second; `free` is injectable for tests."""

    def __init__(
        self, path: Path, floor: int, *, free: Callable[[Path], int] | None = None
    ) -> None:
        self.path = path
        self.floor = floor
        self._free = free or _free_bytes
        self._checked = float("-inf")
        self._ok = True

    def check(self, now: float) -> None:
        if self.floor <= 0:
            return
        if now - self._checked >= DISK_CHECK_EVERY or now < self._checked:
            self._checked = now
            self._ok = self._free(self.path) >= self.floor
        if not self._ok:
            raise RequestError(
                ErrorCode.STORAGE_FULL,
                "the relay is low on disk space and takes no new envelopes; retry later",
                retry_after=60.0,
            )


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path.parent if not path.is_dir() else path)
    return st.f_bavail * st.f_frsize
