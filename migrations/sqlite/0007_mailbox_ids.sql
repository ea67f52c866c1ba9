-- 0007 (SQLite twin of postgresql/0007_mailbox_ids.sql): nothing to change. One relay
-- owns a SQLite file and hands out envelope ids itself (relay/store/mailbox.py); the
-- number is taken so both backends stay at the same schema version.

SELECT 1;
