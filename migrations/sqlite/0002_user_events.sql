-- 0002: a log of account changes, so a running relay notices what hushwire-admin did
-- (disable, remove, token reset) by polling one indexed query. Triggers write it, so
-- every writer of the users table is covered, not only the admin CLI.

CREATE TABLE user_events (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('added', 'disabled', 'enabled', 'token_reset', 'removed'))
);

CREATE TRIGGER user_events_added AFTER INSERT ON users
BEGIN
    INSERT INTO user_events (name, kind) VALUES (new.name, 'added');
END;

CREATE TRIGGER user_events_disabled AFTER UPDATE OF disabled ON users
WHEN new.disabled != old.disabled
BEGIN
    INSERT INTO user_events (name, kind)
    VALUES (new.name, CASE new.disabled WHEN 1 THEN 'disabled' ELSE 'enabled' END);
END;

CREATE TRIGGER user_events_token AFTER UPDATE OF token_hash, token_salt ON users
WHEN new.token_hash != old.token_hash OR new.token_salt != old.token_salt
BEGIN
    INSERT INTO user_events (name, kind) VALUES (new.name, 'token_reset');
END;

CREATE TRIGGER user_events_removed AFTER DELETE ON users
BEGIN
    INSERT INTO user_events (name, kind) VALUES (old.name, 'removed');
END;
