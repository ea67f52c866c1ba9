-- 0001: the local profile. Applied by client/store.py inside one transaction, with the
-- version recorded in PRAGMA user_version; a file must not contain BEGIN/COMMIT itself.
--
-- Columns named `secret`, `identity`, `pending`, `sessions`, `value`, `body` and
-- `envelope` hold AES-256-GCM blobs (nonce || ciphertext || tag) sealed under the key
-- derived from the passphrase; their associated data names the table, the column and
-- the row, so a blob copied to another row or column fails to open. Times are unix
-- milliseconds passed in by the client (never now() here).

-- Not secret: the scrypt salt and parameters, the verifier blob, counters.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

-- Relay settings and credentials (host, port, pinned fingerprint, token, ...), sealed.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE identity (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    secret     BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

-- The newest published one is current; retired ones are kept for a grace period so
-- initial messages still in flight decrypt.
CREATE TABLE signed_prekeys (
    prekey_id  INTEGER PRIMARY KEY,
    secret     BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);

CREATE TABLE one_time_prekeys (
    prekey_id  INTEGER PRIMARY KEY,
    secret     BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

-- One row per peer: the pinned identity (trust on first use), a changed identity not
-- yet accepted (`pending`), and the ratchet sessions (current first, then archived).
CREATE TABLE contacts (
    name       TEXT    PRIMARY KEY,
    identity   BLOB    NOT NULL,
    pending    BLOB,
    verified   INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),
    sessions   BLOB,
    checked_at INTEGER NOT NULL DEFAULT 0,  -- last time a fetched bundle showed this identity
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- History and outbox. status: received/read (in); queued (waiting for a connection),
-- held (key changed), pending (encrypted, awaiting the relay's ok), sent, failed (out).
CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    uid        TEXT    NOT NULL UNIQUE,
    contact    TEXT    NOT NULL,
    direction  TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
    status     TEXT    NOT NULL CHECK (status IN
                   ('received', 'read', 'queued', 'held', 'pending', 'sent', 'failed')),
    sent_at    INTEGER NOT NULL,
    stored_at  INTEGER NOT NULL,
    body       BLOB    NOT NULL,
    envelope   BLOB
);

CREATE INDEX messages_by_contact ON messages (contact, id);
CREATE INDEX messages_by_status ON messages (status, id);

-- Envelope ids already stored (HMAC-blinded under a profile key): drop redeliveries.
CREATE TABLE seen_envelopes (
    blinded BLOB    PRIMARY KEY,
    seen_at INTEGER NOT NULL
) WITHOUT ROWID;
