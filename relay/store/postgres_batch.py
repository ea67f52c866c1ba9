"""One group commit on PostgreSQL (postgres.py's `write_batch`): admit the envelopes
under per-recipient locks (quotas checked against the database, ids drawn from the
sequence in commit order per mailbox), then write rows, payloads, login stamps and acks
with one statement per kind of row, whatever the batch's size.

Several relays may run this against one database at once; docs/operations.md, "Several
relays on one PostgreSQL", argues why a mailbox read never skips an envelope.
"""

from __future__ import annotations

import asyncpg

from hushwire.common.errors import RequestError
from hushwire.relay.store.batching import Ack, Enqueue, Failed, Login, Op, enqueued_rows
from hushwire.relay.store.quota import Mailboxes, QuotaLimits, Usage


async def raise_top(conn: asyncpg.Connection, top: int) -> None:
    """Keep ids up to `top` used: new envelopes get higher ones (copy-store)."""
    if top:
        await conn.execute("UPDATE mailbox_top SET id = GREATEST(id, $1)", top)
        await conn.execute(
            "SELECT setval('mailbox_ids', GREATEST($1, (SELECT last_value FROM mailbox_ids)))",
            top,
        )


async def _admit(
    conn: asyncpg.Connection,
    enqueues: list[tuple[int, Enqueue]],
    outcomes: list[object],
    quota: QuotaLimits,
) -> None:
    """Lock the recipients, check each send against their committed mailboxes, and give
    the admitted ones their ids (`op.mids`); a refused send's outcome becomes Failed.

    The lock (the recipients' users rows, taken in id order so relays never deadlock)
    is held until COMMIT and taken before any id is drawn: for one recipient, ids are
    drawn and become visible in the same order (docs/operations.md, "Several relays").
    It also makes the quota check exact: no other relay adds to these mailboxes until
    this batch commits. One query for all the batch's mailboxes, not one per send.
    """
    rids = sorted({r for _, op in enqueues for r in op.rids})
    await conn.execute(
        "SELECT id FROM users WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE", rids
    )
    found = await conn.fetch(
        "SELECT recipient_id, sender, COUNT(*), SUM(length(body) + payload_bytes) FROM mailbox"
        " WHERE recipient_id = ANY($1::bigint[]) GROUP BY recipient_id, sender",
        rids,
    )
    loaded: dict[int, Usage] = {rid: [] for rid in rids}
    for rid, sender, n, size in found:
        loaded[int(rid)].append((str(sender), int(n), int(size)))
    usage = Mailboxes(quota)
    for rid, rows in loaded.items():
        usage.load(rid, rows)
    wanted = 0
    for i, op in enqueues:
        sizes = [len(op.body)] * len(op.rids) if isinstance(op.body, bytes) else map(len, op.body)
        extra = 0 if op.payload is None else len(op.payload)  # as Enqueue.sizes counts
        rows = [(n, r, size + extra) for n, r, size in zip(op.names, op.rids, sizes, strict=True)]
        try:
            for name, rid, size in rows:
                usage.check(op.sender, rid, name, size)
        except RequestError as exc:
            outcomes[i] = Failed(exc)
            continue
        for _, rid, size in rows:
            usage.add(op.sender, rid, size)
        wanted += len(rows)
    drawn = await conn.fetch("SELECT nextval('mailbox_ids') FROM generate_series(1, $1)", wanted)
    ids = iter(sorted(int(r[0]) for r in drawn))
    for i, op in enqueues:
        if outcomes[i] is None:
            op.mids = [next(ids) for _ in op.rids]


async def apply_batch(
    conn: asyncpg.Connection, batch: list[Op], top: int, quota: QuotaLimits
) -> list[object]:
    """Admit and number the envelopes, insert their rows, stamp logins, delete acked
    rows: a few statements."""
    outcomes: list[object] = [None] * len(batch)
    enqueues = [(i, op) for i, op in enumerate(batch) if isinstance(op, Enqueue)]
    if enqueues:
        await _admit(conn, enqueues, outcomes, quota)
    admitted = [op for i, op in enqueues if outcomes[i] is None]
    rows, payloads = enqueued_rows(admitted)
    if payloads:
        ids, refs, blobs = zip(*payloads, strict=True)
        await conn.execute(
            "INSERT INTO payloads (id, refs, body)"
            " SELECT * FROM unnest($1::bigint[], $2::integer[], $3::bytea[])",
            ids,
            refs,
            blobs,
        )
    if rows:
        mids, rids, senders, times, bodies, pids, plens = zip(*rows, strict=True)
        await conn.execute(
            "INSERT INTO mailbox (id, recipient_id, sender, created_at, body, payload_id,"
            " payload_bytes) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[],"
            " $4::bigint[], $5::bytea[], $6::bigint[], $7::integer[])",
            mids,
            rids,
            senders,
            times,
            bodies,
            pids,
            plens,
        )
    logins = {op.name: op.now for op in batch if isinstance(op, Login)}  # the last wins
    if logins:
        await conn.execute(
            "UPDATE users SET last_login_at = v.now FROM unnest($1::text[], $2::bigint[])"
            " AS v(name, now) WHERE users.name = v.name",
            list(logins),
            list(logins.values()),
        )
    acks = [(m, op.rid) for op in batch if isinstance(op, Ack) for m in op.mids]
    # id -> (sender, body size); each deleted row counts for the first op that acked it
    deleted: dict[int, tuple[str, int]] = {}
    if acks:
        gone = await conn.fetch(
            "DELETE FROM mailbox m USING unnest($1::bigint[], $2::bigint[]) AS a(id, rid)"
            " WHERE m.id = a.id AND m.recipient_id = a.rid"
            " RETURNING m.id, m.sender, length(m.body) + m.payload_bytes",
            [m for m, _ in acks],
            [r for _, r in acks],
        )
        deleted = {int(mid): (str(sender), int(size)) for mid, sender, size in gone}
    await raise_top(conn, top)
    for i, op in enumerate(batch):
        if isinstance(op, Ack):
            outcomes[i] = [deleted.pop(m) for m in op.mids if m in deleted]
    return outcomes
