-- 0004: group conversations (docs/security.md, "Groups"). Everything about a group is
-- sealed like the rest of the profile; a row's associated data names the table, the
-- column and the row key (the group id in hex, or the row's uid).
--
-- groups: one row per group this profile joined. `log` is GroupLog.to_bytes (the chain
-- of membership states since we joined), `transcript` Transcript.to_bytes (what this
-- device sent and received, for the transcript checks).
CREATE TABLE groups (
    gid        TEXT    PRIMARY KEY,
    log        BLOB    NOT NULL,
    transcript BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- The group history, in the order it was stored. kind: 'in' (from a member), 'out'
-- (sent by this account, from this device or another), 'event' (a membership change or
-- a warning shown in the conversation: "alice added carol", "you may have missed...").
-- status: in: received/read; out: pending/sent/failed; event: received/read. `body` is
-- sealed msgpack [sender, device, text]; sender and device stay out of the clear.
CREATE TABLE group_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    uid        TEXT    NOT NULL UNIQUE,
    gid        TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('in', 'out', 'event')),
    status     TEXT    NOT NULL CHECK (status IN
                   ('received', 'read', 'pending', 'sent', 'failed')),
    sent_at    INTEGER NOT NULL,
    stored_at  INTEGER NOT NULL,
    body       BLOB    NOT NULL
);

CREATE INDEX group_messages_by_gid ON group_messages (gid, id);

-- Group input that cannot be applied yet, kept (sealed) to try again: a change or a
-- message naming a later epoch than we hold (reason 'missing': released when the
-- changes in between arrive), or anything that came under a contact's changed, not yet
-- accepted identity key (reason 'quarantine': released by `trust`). `body` is sealed
-- msgpack [kind, sender, device, sent_at, data] (data: the change, the welcome, or the
-- group message already decrypted from its payload).
CREATE TABLE group_held (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    uid        TEXT    NOT NULL UNIQUE,
    reason     TEXT    NOT NULL CHECK (reason IN ('missing', 'quarantine')),
    sender     TEXT    NOT NULL,
    stored_at  INTEGER NOT NULL,
    body       BLOB    NOT NULL
);
