-- 0001: accounts, the key directory and the mailbox.
--
-- Applied by relay/migrate.py inside one transaction; a migration file must not contain
-- BEGIN/COMMIT itself. Times are unix seconds, passed in by the relay (never now() here).

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    token_hash    BLOB    NOT NULL,
    token_salt    BLOB    NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    last_login_at INTEGER
);

-- One identity per user. bundle_version is the format of the user's published bundle:
-- a later PQXDH migration adds a kem_prekeys table and bundles of version 2 without
-- touching these rows, so clients that only know version 1 keep working.
CREATE TABLE identity_keys (
    user_id        INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    bundle_version INTEGER NOT NULL,
    grp            TEXT    NOT NULL,
    sign_key       BLOB    NOT NULL,
    dh_key         BLOB    NOT NULL,
    dh_sig         BLOB    NOT NULL,
    updated_at     INTEGER NOT NULL
);

CREATE TABLE signed_prekeys (
    user_id    INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    prekey_id  INTEGER NOT NULL,
    key        BLOB    NOT NULL,
    sig        BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE one_time_prekeys (
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    prekey_id INTEGER NOT NULL,
    key       BLOB    NOT NULL,
    PRIMARY KEY (user_id, prekey_id)
) WITHOUT ROWID;

-- Who fetched whose identity: when a target's identity changes the relay pushes
-- key_changed to these watchers.
CREATE TABLE identity_watchers (
    watcher_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    target_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (watcher_id, target_id)
) WITHOUT ROWID;

CREATE INDEX identity_watchers_by_target ON identity_watchers (target_id);

-- AUTOINCREMENT: envelope ids are never reused, even after the newest rows are acked
-- and the relay restarts, because clients drop duplicates by envelope id.
CREATE TABLE mailbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sender       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    body         BLOB    NOT NULL
);

CREATE INDEX mailbox_by_recipient ON mailbox (recipient_id, id);
