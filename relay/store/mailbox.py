"""The mailbox's in-memory side, the same for every backend.

On a store that one relay owns (SQLite), envelope ids come from an in-memory counter
(only the relay inserts mailbox rows) and each mailbox's usage (envelopes and bytes, in
total and per sender: quota.py) is kept in memory, so the quota check costs no query.
On a store several relays share (the backend says `shared`: PostgreSQL), the backend
numbers the envelopes and checks the quotas inside each group commit instead, against
the database; ids are then known only after the commit, so there is no early push.
Sends and acks ride the group commit (`batching.py`); a send to recipients whose ids
are cached, and an ack, run without a single await (`enqueue_nowait`, `ack_nowait`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.relay.errors import StoreError
from hushwire.relay.metrics import Histogram
from hushwire.relay.store.batching import (
    Ack,
    Enqueue,
    Failed,
    GroupCommit,
    Op,
    Waiter,
    fail,
    resolve,
)
from hushwire.relay.store.quota import DiskGuard, Mailboxes, QuotaLimits
from hushwire.relay.store.records import MAX_PENDING_LIMIT, MAX_ROWID, StoredEnvelope

if TYPE_CHECKING:
    from hushwire.relay.store import Backend

# Envelope ids skipped at every open. A recipient may see an id before its commit
# (`enqueue(on_reserved=...)`); if the relay dies before that commit, the id must never
# name a different envelope later (a stale ack would delete it). Every batch persists the
# highest id it reserved, so only batches in flight at a crash can be lost: far fewer
# than 2**32 ids. 2**63 / 2**32 leaves room for 2**31 restarts.
MID_GAP = 2**32


def valid_mids(mids: Sequence[int]) -> list[int]:
    """The distinct ids among `mids` that can name a row, sorted."""
    return sorted(
        {m for m in mids if isinstance(m, int) and not isinstance(m, bool) and 0 < m <= MAX_ROWID}
    )


class Mailbox:
    """Queued envelopes: reservation, limits, acks and the name -> id cache."""

    def __init__(
        self, backend: Backend, limits: QuotaLimits, disk: DiskGuard, highest_mid: int
    ) -> None:
        self._backend = backend
        # Ids and quotas from the database (several relays), or from memory (one relay).
        self.shared: bool = getattr(backend, "shared", False)
        self._disk = disk
        self._ids: dict[str, int] = {}  # name -> users.id, filled on demand
        # users.id -> usage of rows committed or in flight; a key here means "loaded"
        self._usage = Mailboxes(limits)
        self._next_mid = highest_mid + 1 + MID_GAP
        # Enqueues waiting for a recipient lookup, in call order (see _resolve_in_turn).
        self._lookup_queue: list[tuple[Sequence[str], asyncio.Future[list[int]]]] = []
        self._lookup_task: asyncio.Task[None] | None = None
        self._lookup_waiters = 0  # queued or woken but not yet resumed
        self._batch = GroupCommit(backend.write_batch, self._settle)

    @property
    def group_commits(self) -> int:
        """Committed batch transactions, for tests and metrics."""
        return self._batch.group_commits

    @property
    def commit_batch(self) -> Histogram:
        """Operations per group commit, for metrics."""
        return self._batch.commit_batch

    @property
    def commit_seconds(self) -> Histogram:
        """Seconds from handing a batch to the backend until it is committed."""
        return self._batch.commit_seconds

    @property
    def elided(self) -> int:
        """Rows never written because the recipient acked first."""
        return self._batch.elided

    async def enqueue(
        self,
        sender: str,
        recipients: Sequence[str],
        body: bytes,
        *,
        now: int,
        on_reserved: Callable[[list[int]], None] | None = None,
    ) -> list[int]:
        """Store one envelope per recipient; return their ids once committed.

        All or nothing: an unknown recipient (UNKNOWN_USER) or a full mailbox
        (MAILBOX_FULL) refuses the whole send before anything is written.

        `on_reserved(mids)` runs as soon as the ids are reserved, before the commit (the
        relay pushes to online recipients then). If a recipient acks its envelope before
        the commit, that row is never written and, once every row of the send is acked
        or committed, `enqueue` returns: the envelope is then safe with the recipient.
        """
        self._check_recipients(recipients, body)
        if self.cached(recipients):
            rids = [self._ids[n] for n in recipients]  # fast path: no await at all
        else:
            rids = await self._resolve_in_turn(recipients)
            self._check_open()  # close() may have begun while we resolved names
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._reserve(sender, recipients, rids, body, now, on_reserved, fut)
        return await fut

    async def enqueue_each(
        self,
        sender: str,
        recipients: Sequence[str],
        bodies: Sequence[bytes],
        *,
        now: int,
        on_reserved: Callable[[list[int]], None] | None = None,
        payload: bytes | None = None,
    ) -> list[int]:
        """`enqueue` with one body per recipient (a per-device fan-out): still one
        operation, so the group commit writes all of its rows or none. A group send's
        `payload` is written once with them; each row counts it against its mailbox."""
        self._check_each(recipients, bodies, payload)
        if self.cached(recipients):
            rids = [self._ids[n] for n in recipients]
        else:
            rids = await self._resolve_in_turn(recipients)
            self._check_open()
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._reserve(sender, recipients, rids, bodies, now, on_reserved, fut, payload)
        return await fut

    def cached(self, recipients: Sequence[str]) -> bool:
        """True if `enqueue_nowait` can take a send to `recipients` (ids cached)."""
        return self._lookup_waiters == 0 and all(
            self._ids.get(n) in self._usage for n in recipients
        )

    def enqueue_nowait(
        self,
        sender: str,
        recipients: Sequence[str],
        body: bytes | Sequence[bytes],
        *,
        now: int,
        on_done: Callable[[list[int] | None, BaseException | None], None],
        on_reserved: Callable[[list[int]], None] | None = None,
        payload: bytes | None = None,
    ) -> None:
        """`enqueue` (one `body` for all) or `enqueue_each` (a sequence of bodies, one per
        recipient, maybe a `payload`) without a coroutine, for callers that found
        `cached(recipients)` true in this same step (so it still is).

        Raises at once for a refused send. Otherwise `on_done(mids, None)` or
        `on_done(None, error)` is called once, when `enqueue` would return or raise, from
        whatever settles it (the recipient's ack, or the commit).
        """
        if isinstance(body, bytes):
            self._check_recipients(recipients, body)
        else:
            self._check_each(recipients, body, payload)
        ids = self._ids
        rids = [ids[n] for n in recipients]
        self._reserve(sender, recipients, rids, body, now, on_reserved, Waiter(on_done), payload)

    def _check_each(
        self, recipients: Sequence[str], bodies: Sequence[bytes], payload: bytes | None
    ) -> None:
        if len(bodies) != len(recipients) or not all(isinstance(b, bytes) for b in bodies):
            raise RequestError(ErrorCode.BAD_REQUEST, "one envelope body per recipient")
        if payload is not None and not isinstance(payload, bytes):
            raise RequestError(ErrorCode.BAD_REQUEST, "the payload must be bytes")
        self._check_recipients(recipients, b"")

    def _check_recipients(self, recipients: Sequence[str], body: bytes) -> None:
        self._check_open()
        if not recipients:
            raise RequestError(ErrorCode.BAD_REQUEST, "no recipients")
        if len(recipients) > 1 and len(set(recipients)) != len(recipients):
            raise RequestError(ErrorCode.BAD_REQUEST, "a recipient is named twice")
        if not isinstance(body, bytes | bytearray | memoryview):
            raise RequestError(ErrorCode.BAD_REQUEST, "envelope body must be bytes")

    def _reserve(
        self,
        sender: str,
        recipients: Sequence[str],
        rids: list[int],
        body: bytes | Sequence[bytes],
        now: int,
        on_reserved: Callable[[list[int]], None] | None,
        fut: asyncio.Future[list[int]] | Waiter,
        payload: bytes | None = None,
    ) -> None:
        # No await between the check and the reservation: the usage cannot change.
        if self.shared:
            # The backend checks the quotas and numbers the rows in the commit; the
            # recipients are told once it is done (no early push without ids).
            body = _body(body)
            self._submit(
                Enqueue(sender, list(recipients), rids, [], body, now, fut, payload=payload)
            )
            return
        self._disk.check(now)
        first = self._next_mid
        mids = list(range(first, first + len(rids)))
        op = Enqueue(sender, list(recipients), rids, mids, _body(body), now, fut, payload=payload)
        usage, sizes = self._usage, op.sizes()
        for name, rid, size in zip(recipients, rids, sizes, strict=True):
            usage.check(sender, rid, name, size)
        for rid, size in zip(rids, sizes, strict=True):
            usage.add(sender, rid, size)
        self._next_mid += len(rids)
        self._submit(op)
        unwritten = self._batch.unwritten
        for mid in mids:
            unwritten[mid] = op
        if on_reserved is not None:
            on_reserved(mids)

    async def pending(
        self, recipient: str, *, after: int = 0, limit: int = 100
    ) -> list[StoredEnvelope]:
        """Committed envelopes for `recipient` with id > `after`, oldest first."""
        limit = max(1, min(limit, MAX_PENDING_LIMIT))
        return await self._backend.pending(recipient, after, limit)

    async def ack(self, recipient: str, mids: Sequence[int]) -> int:
        """Delete the recipient's own envelopes among `mids`; return how many went."""
        deleted = self.ack_nowait(recipient, mids)
        if deleted is None:  # the recipient's id is not cached yet
            try:
                (rid,) = await self._resolve([recipient])
            except RequestError:
                return 0
            deleted = self._ack_ids(rid, valid_mids(mids))
        return deleted if isinstance(deleted, int) else await deleted

    def ack_nowait(self, recipient: str, mids: Sequence[int]) -> int | asyncio.Future[int] | None:
        """`ack` without a coroutine: the count now, or a future for it once committed.

        None means the recipient's id is not cached: await `ack` instead (nothing done).
        """
        self._check_open()
        wanted = valid_mids(mids)
        if not wanted:
            return 0
        rid = self._ids.get(recipient)
        if rid is None:
            return None
        return self._ack_ids(rid, wanted)

    def _ack_ids(self, rid: int, wanted: list[int]) -> int | asyncio.Future[int]:
        batch = self._batch
        unwritten = batch.unwritten
        ops = {m: unwritten[m] for m in wanted if m in unwritten}
        elided = batch.elide(rid, wanted) if ops else ()
        if elided:
            for mid in elided:
                op = ops[mid]
                self._usage.remove(op.sender, rid, op.size(mid))
            wanted = [m for m in wanted if m not in elided]
            if not wanted:
                return len(elided)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._submit(Ack(rid, wanted, fut, len(elided)))
        return fut

    async def mailbox_count(self, recipient: str) -> int:
        """Envelopes queued for `recipient`, including ones whose commit is in flight."""
        if self.shared:  # other relays add and ack too: ask the database
            found = await self._backend.recipients([recipient])
            return sum(n for _, n, _ in found[recipient][1]) if recipient in found else 0
        try:
            (rid,) = await self._resolve([recipient])
        except RequestError:
            return 0
        return self._usage.count(rid)

    async def purge(self, *, older_than: int) -> int:
        """Retention: delete envelopes created before `older_than`; return the count.

        Also trims user_events to the newest USER_EVENTS_KEPT rows.
        """
        gone = await self._backend.purge(older_than)
        for rid, sender, size in gone:
            self._usage.remove(sender, rid, size)
        return len(gone)

    async def _resolve_in_turn(self, names: Sequence[str]) -> list[int]:
        """`_resolve`, but never overtaking an earlier enqueue that had to look up.

        Mailbox ids are reserved in call order only if no enqueue overtakes another
        while one awaits a lookup; otherwise one sender's pipelined envelopes could be
        reordered (A to [carol, bob] looks carol up, B to [bob] must not pass it). So
        waiters queue in call order, one task looks up every missing name of everyone
        queued in a single db call, and wakes the waiters in order in one loop
        iteration; the fast path stays closed until all of them have resumed. A cold
        cache under a burst thus costs one lookup, not one per enqueue.
        """
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._lookup_queue.append((names, fut))
        self._lookup_waiters += 1
        if self._lookup_task is None:
            self._lookup_task = asyncio.create_task(self._lookup_worker())
        try:
            return await fut
        finally:
            self._lookup_waiters -= 1

    async def _lookup_worker(self) -> None:
        try:
            while self._lookup_queue:
                batch, self._lookup_queue = self._lookup_queue, []
                wanted = list(dict.fromkeys(n for names, _ in batch for n in names))
                try:
                    await self._load(wanted)
                except Exception as exc:
                    for _, fut in batch:
                        fail(fut, exc)
                    continue
                for names, fut in batch:
                    try:
                        resolve(fut, self._cached_ids(names))
                    except RequestError as exc:
                        fail(fut, exc)
        finally:
            self._lookup_task = None

    async def _resolve(self, names: Sequence[str]) -> list[int]:
        """users.id for each name (cached), loading mailbox counts for new ones."""
        await self._load(names)
        return self._cached_ids(names)

    async def _load(self, names: Sequence[str]) -> None:
        """Cache id and mailbox count of each name not cached yet, in one db call."""
        missing = [n for n in names if self._ids.get(n) not in self._usage]
        if not missing:
            return
        for name, (rid, rows) in (await self._backend.recipients(missing)).items():
            self._ids[name] = rid
            # A usage loaded earlier already includes in-flight rows: load keeps it.
            self._usage.load(rid, rows)

    def _cached_ids(self, names: Sequence[str]) -> list[int]:
        """Cached ids for `names`; UNKNOWN_USER naming every name that is not there."""
        rids = [self._ids.get(n) for n in names]
        unknown = [n for n, r in zip(names, rids, strict=True) if r is None or r not in self._usage]
        if unknown:
            raise RequestError(
                ErrorCode.UNKNOWN_USER, f"no such user: {', '.join(sorted(unknown))}"
            )
        return [r for r in rids if r is not None]

    def _forget(self, name: str) -> None:
        rid = self._ids.pop(name, None)
        if rid is not None:
            self._usage.forget(rid)

    def _check_open(self) -> None:
        if self._batch.closing:
            raise StoreError("the store is closing")

    def _submit(self, op: Op) -> None:
        self._check_open()
        self._batch.submit(op)

    def _settle(self, op: Op, outcome: object) -> None:
        """Apply a committed (or failed) op to the in-memory counts and answer it."""
        if self.shared:  # no counts in memory
            if isinstance(outcome, Failed):
                if outcome.error.code is ErrorCode.UNKNOWN_USER and isinstance(op, Enqueue):
                    for name in op.names:
                        self._forget(name)
                fail(op.fut, outcome.error)
            elif isinstance(op, Ack):
                resolve(op.fut, len(outcome))  # type: ignore[arg-type]
            else:
                resolve(op.fut, op.mids if isinstance(op, Enqueue) else None)
        elif isinstance(op, Enqueue):
            if isinstance(outcome, Failed):
                for mid, rid, size in zip(op.mids, op.rids, op.sizes(), strict=True):
                    if not (op.elided and mid in op.elided):
                        self._usage.remove(op.sender, rid, size)
                if outcome.error.code is ErrorCode.UNKNOWN_USER:
                    for name in op.names:
                        self._forget(name)
                fail(op.fut, outcome.error)
            else:
                resolve(op.fut, op.mids)
        elif isinstance(op, Ack):
            if isinstance(outcome, Failed):
                fail(op.fut, outcome.error)
            else:
                deleted: list[tuple[str, int]] = outcome  # type: ignore[assignment]
                for sender, size in deleted:
                    self._usage.remove(sender, op.rid, size)
                resolve(op.fut, len(deleted) + op.elided)
        elif isinstance(outcome, Failed):
            fail(op.fut, outcome.error)
        else:
            resolve(op.fut, None)


def _body(body: bytes | Sequence[bytes]) -> bytes | list[bytes]:
    """One body for every recipient (bytes), or one body each (a list)."""
    return bytes(body) if isinstance(body, bytes | bytearray | memoryview) else list(body)
