-- 0007 (PostgreSQL twin of sqlite/0007_mailbox_ids.sql): envelope ids from the database,
-- so several relays can share it (docs/operations.md, "Several relays").
--
-- A relay draws ids from mailbox_ids inside its group commit, after locking the rows of
-- the recipients it writes to (users, FOR NO KEY UPDATE, in id order): for one
-- recipient, ids are then drawn and committed in the same order, so a mailbox read
-- never skips an envelope that commits later. The sequence starts above every id ever
-- used (mailbox_top), as ids must never be reused.

CREATE SEQUENCE mailbox_ids AS BIGINT MINVALUE 1;

SELECT setval(
    'mailbox_ids',
    GREATEST((SELECT id FROM mailbox_top), (SELECT COALESCE(MAX(id), 0) FROM mailbox)) + 1,
    false
);
