"""Group commit, the same for every backend: queue work, write it in one transaction,
reply after the commit.

Callers put an operation (an envelope to store, an ack to apply, a login to stamp) on
an in-memory list and wait on its future; one writer task takes everything pending,
hands it to the backend's `write_batch` (one transaction), and only after the commit
settles the futures, so a caller hearing back means its rows are durable. While one
commit runs, the next batch accumulates. Envelopes already pushed to online recipients
wait in `unwritten` until the writer takes them: an ack arriving first drops the row
from the batch (`elide`), so it is never written nor deleted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hushwire.common.errors import HushwireError
from hushwire.relay.errors import StoreError
from hushwire.relay.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram

T = TypeVar("T")
log = logging.getLogger("hushwire.relay.store")

# Seconds the writer waits before taking a batch that holds envelopes already pushed to
# online recipients: acks that arrive meanwhile elide the insert and the delete. It delays
# only the sender's `ok`, never the delivery.
COMMIT_DELAY = 0.002


class Waiter:
    """The settling half of a future that calls back at once, not on the next loop pass:
    the relay's hot path answers a send in the same pass as the ack or commit that
    settles it, without a future and two loop callbacks per envelope. Like a future's
    callbacks, a failing one is logged and cannot break whatever settled it (an ack
    being applied, or the writer's loop)."""

    __slots__ = ("_callback", "_done")

    def __init__(self, callback: Callable[[Any, BaseException | None], None]) -> None:
        self._callback = callback
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Any) -> None:
        self._settle(value, None)

    def set_exception(self, exc: BaseException) -> None:
        self._settle(None, exc)

    def _settle(self, value: Any, exc: BaseException | None) -> None:
        self._done = True
        try:
            self._callback(value, exc)
        except Exception:
            log.exception("a store callback failed")


def fail(fut: asyncio.Future[Any] | Waiter, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def resolve(fut: asyncio.Future[T] | Waiter, value: T) -> None:
    if not fut.done():
        fut.set_result(value)


# A mailbox row: (id, recipient id, sender, created_at, body, payload id, payload bytes).
Row = tuple[int, int, str, int, bytes, int | None, int]


@dataclass(slots=True)
class Enqueue:
    """One envelope for one or more recipients: one mailbox row per recipient (the same
    body for all, or one body each for a per-device fan-out), and for a group send one
    `payload` that every row names, stored once (migration 0006)."""

    sender: str
    names: Sequence[str]
    rids: list[int]
    mids: list[int]
    body: bytes | Sequence[bytes]
    now: int
    fut: asyncio.Future[list[int]] | Waiter
    elided: set[int] | None = None  # mids the recipient acked before this was written
    payload: bytes | None = None

    def all_elided(self) -> bool:
        return self.elided is not None and len(self.elided) == len(self.mids)

    def sizes(self) -> list[int]:
        """What each row counts against its mailbox, in order: its envelope and the
        payload (which every recipient receives, though it is stored once)."""
        extra = 0 if self.payload is None else len(self.payload)
        if isinstance(self.body, bytes):
            return [len(self.body) + extra] * len(self.mids)
        return [len(b) + extra for b in self.body]

    def size(self, mid: int) -> int:
        return self.sizes()[self.mids.index(mid)]

    def rows(self) -> list[Row]:
        """(mid, recipient id, sender, created_at, body, payload id, payload bytes) of
        each row still to write."""
        elided = self.elided or ()
        payload = self.payload
        pid, plen = (None, 0) if payload is None else (self.mids[0], len(payload))
        bodies = itertools.repeat(self.body) if isinstance(self.body, bytes) else iter(self.body)
        return [
            (mid, rid, self.sender, self.now, body, pid, plen)
            for mid, rid, body in zip(self.mids, self.rids, bodies, strict=False)
            if mid not in elided
        ]

    def payload_row(self, written: int) -> tuple[int, int, bytes] | None:
        """(id, refs, body) of the payload, if this send has one and writes `written`
        rows: stored once, in the same transaction as the rows that name it."""
        if self.payload is None or not written:
            return None
        return self.mids[0], written, self.payload


@dataclass(slots=True)
class Ack:
    rid: int
    mids: list[int]
    fut: asyncio.Future[int]
    elided: int = 0  # acked rows that were never written: counted in the result


@dataclass(slots=True)
class Login:
    name: str
    now: int
    fut: asyncio.Future[None]


Op = Enqueue | Ack | Login


@dataclass(slots=True)
class Failed:
    """Per-op failure inside an otherwise committed batch."""

    error: HushwireError


def enqueued_rows(batch: Sequence[Op]) -> tuple[list[Row], list[tuple[int, int, bytes]]]:
    """The mailbox rows and the payloads (id, refs, body) the batch's enqueues write:
    a payload only for rows actually written (acked early ones are not), with that many
    refs."""
    rows: list[Row] = []
    payloads: list[tuple[int, int, bytes]] = []
    for op in batch:
        if isinstance(op, Enqueue):
            mine = op.rows()
            rows.extend(mine)
            payload = op.payload_row(len(mine))
            if payload is not None:
                payloads.append(payload)
    return rows, payloads


# write_batch(batch, top): one transaction; an outcome per op: None, Failed, or for an
# Ack the (sender, body size) of each row it deleted (the mailbox's usage drops by those).
WriteBatch = Callable[[list[Op], int], Awaitable[list[object]]]


class GroupCommit:
    """The single writer: whatever accumulated goes to `write` as one transaction, and
    each op's outcome goes to `settle` once it is committed (or failed)."""

    def __init__(self, write: WriteBatch, settle: Callable[[Op, object], None]) -> None:
        self._write = write
        self._settle = settle
        self.pending: list[Op] = []
        # mid -> its enqueue, for enqueues in `pending` (not yet handed to the writer):
        # an ack of one of these drops the row from the batch instead of deleting it.
        self.unwritten: dict[int, Enqueue] = {}
        self._top_elided = 0  # highest mid in `unwritten` elided: its id must stay used
        self.elided = 0  # rows never written because the recipient acked first
        self.group_commits = 0  # committed batch transactions, for tests and metrics
        self.commit_batch = Histogram(BATCH_BUCKETS)  # operations per group commit
        self.commit_seconds = Histogram(LATENCY_BUCKETS)  # batch handed over -> committed
        self.clock: Callable[[], float] = time.perf_counter  # measures commits only
        self.commit_delay = COMMIT_DELAY
        self.closing = False
        self._wakeup = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="hushwire-store-writer")

    def submit(self, op: Op) -> None:
        self.pending.append(op)
        self._wakeup.set()

    def elide(self, rid: int, mids: list[int]) -> set[int]:
        """Drop not-yet-written rows of `rid` among `mids` from the pending batch."""
        elided: set[int] = set()
        for mid in mids:
            op = self.unwritten.get(mid)
            if op is None or op.rids[op.mids.index(mid)] != rid:
                continue
            del self.unwritten[mid]
            if mid > self._top_elided:
                self._top_elided = mid
            if op.elided is None:
                op.elided = set()
            op.elided.add(mid)
            elided.add(mid)
            self.elided += 1
            if op.all_elided():
                resolve(op.fut, op.mids)  # every copy is with its recipient
        return elided

    async def close(self) -> bool:
        """Commit everything pending and stop; True for the call that began closing."""
        first = not self.closing
        self.closing = True
        self._wakeup.set()
        await asyncio.shield(self._writer)
        return first

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            if self.unwritten and not self.closing and self.commit_delay > 0:
                # Envelopes are already with online recipients; give their acks a moment
                # to arrive so those rows are never written (see `elide`).
                await asyncio.sleep(self.commit_delay)
            self._wakeup.clear()
            batch, self.pending = self.pending, []
            top, self._top_elided = self._top_elided, 0
            self.unwritten = {}
            # Enqueues whose every row was acked are already answered: nothing to write.
            batch = [op for op in batch if type(op) is not Enqueue or not op.all_elided()]
            if batch or top:
                await self._commit(batch, top)
            if self.closing and not self.pending:
                return

    async def _commit(self, batch: list[Op], top: int) -> None:
        start = self.clock()
        try:
            outcomes = await self._write(batch, top)
        except Exception as exc:
            # Nothing of this batch is committed: every waiter must hear so.
            err = exc if isinstance(exc, StoreError) else StoreError(f"commit failed: {exc}")
            for op in batch:
                self._settle(op, Failed(err))
            return
        self.group_commits += 1
        self.commit_batch.observe(len(batch))
        self.commit_seconds.observe(self.clock() - start)
        for op, outcome in zip(batch, outcomes, strict=True):
            self._settle(op, outcome)
