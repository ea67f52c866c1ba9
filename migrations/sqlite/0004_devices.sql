-- 0004: accounts with several devices (docs/protocol.md, "Devices").
--
-- A row of `users` is now a principal: something with a credential, keys and a mailbox.
-- An account is a principal with account_id NULL, and is also its own device 1, so every
-- existing user becomes an account with one device and keeps its token, keys and queued
-- envelopes untouched. A linked device is a principal named '<account>/<id>' (a name no
-- user can have: '/' is not allowed in usernames) whose account_id is the account's.
-- Removing an account removes its device principals with it (and the triggers of 0002
-- log each removal, so the relay closes their sessions).

ALTER TABLE users ADD COLUMN account_id INTEGER REFERENCES users (id) ON DELETE CASCADE;

CREATE INDEX users_by_account ON users (account_id) WHERE account_id IS NOT NULL;

CREATE TABLE devices (
    account_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id    INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 4294967295),
    principal_id INTEGER NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    linked_at    INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id)
) WITHOUT ROWID;

INSERT INTO devices (account_id, device_id, principal_id, linked_at)
SELECT id, 1, id, created_at FROM users;

-- The account's signed device list as its devices published it (opaque to the relay
-- beyond the checks in relay/devices.py). No row: the account has not published one.
CREATE TABLE device_lists (
    account_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    version    INTEGER NOT NULL CHECK (version >= 1),
    body       BLOB    NOT NULL,
    sig        BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Every new account is its own device 1, whoever creates it (the admin CLI, a script).
CREATE TRIGGER users_first_device AFTER INSERT ON users
WHEN new.account_id IS NULL
BEGIN
    INSERT INTO devices (account_id, device_id, principal_id, linked_at)
    VALUES (new.id, 1, new.id, new.created_at);
END;
