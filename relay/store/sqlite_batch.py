"""One group commit on SQLite (sqlite.py's `write_batch`): every envelope, payload,
login stamp and ack of a batch in one transaction, with one executemany per kind of row;
and the rollback that every SQLite transaction of the relay ends with on an error.
"""

from __future__ import annotations

import sqlite3

from hushwire.common.errors import ErrorCode, RequestError
from hushwire.relay.errors import StoreError
from hushwire.relay.store.batching import Ack, Failed, Login, Op, enqueued_rows


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


_INSERT_ENVELOPE = (
    "INSERT INTO mailbox (id, recipient_id, sender, created_at, body, payload_id,"
    " payload_bytes) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_PAYLOAD = "INSERT INTO payloads (id, refs, body) VALUES (?, ?, ?)"
# The trigger of migration 0006 releases the row's payload with it.
_DELETE_ENVELOPE = (
    "DELETE FROM mailbox WHERE id = ? AND recipient_id = ?"
    " RETURNING sender, length(body) + payload_bytes"
)
_STAMP_LOGIN = "UPDATE users SET last_login_at = ? WHERE name = ?"
_SEQ_RAISE = "UPDATE sqlite_sequence SET seq = ? WHERE name = 'mailbox' AND seq < ?"
_SEQ_CREATE = (
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'mailbox', ?"
    " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'mailbox')"
)


def write_batch(conn: sqlite3.Connection, batch: list[Op], top: int) -> list[object]:
    """Write a whole batch in one transaction (runs on the db thread).

    Fast path: all inserts in one executemany. If a constraint fails (a recipient was
    removed by the admin CLI a moment ago), redo the batch with one savepoint per
    operation so only the offending send fails and the rest still commit. `top`, if
    not 0, is the highest id of a row acked before it was written: it stays used.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            outcomes = _apply_fast(conn, batch)
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            outcomes = _apply_each(conn, batch)
        if top:
            conn.execute(_SEQ_RAISE, (top, top))
            conn.execute(_SEQ_CREATE, (top,))
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    return outcomes


def _apply_fast(conn: sqlite3.Connection, batch: list[Op]) -> list[object]:
    rows, payloads = enqueued_rows(batch)
    if payloads:
        conn.executemany(_INSERT_PAYLOAD, payloads)
    if rows:
        conn.executemany(_INSERT_ENVELOPE, rows)
    logins = [(op.now, op.name) for op in batch if isinstance(op, Login)]
    if logins:
        conn.executemany(_STAMP_LOGIN, logins)
    outcomes: list[object] = []
    for op in batch:
        if isinstance(op, Ack):
            deleted = []
            for mid in op.mids:
                row = conn.execute(_DELETE_ENVELOPE, (mid, op.rid)).fetchone()
                if row is not None:
                    deleted.append((row[0], int(row[1])))
            outcomes.append(deleted)
        else:
            outcomes.append(None)
    return outcomes


def _apply_each(conn: sqlite3.Connection, batch: list[Op]) -> list[object]:
    outcomes: list[object] = []
    for op in batch:
        conn.execute("SAVEPOINT op")
        try:
            outcomes.append(_apply_fast(conn, [op])[0])
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK TO op")
            if "FOREIGN KEY" in str(exc):
                outcomes.append(
                    Failed(RequestError(ErrorCode.UNKNOWN_USER, "a recipient no longer exists"))
                )
            else:
                outcomes.append(Failed(StoreError(f"envelope not stored: {exc}")))
        conn.execute("RELEASE op")
    return outcomes
