-- 0003 (PostgreSQL twin of sqlite/0003_watcher_stale.sql): remember which watchers have
-- not yet seen a changed identity, so a user who was offline when a contact's key
-- changed still gets `key_changed` at next login. A watcher's row is fresh again once
-- it fetches the target's current bundle.

ALTER TABLE identity_watchers ADD COLUMN stale BOOLEAN NOT NULL DEFAULT FALSE;
