-- 0006 (PostgreSQL twin of sqlite/0006_group_payloads.sql): one payload for many
-- recipients. payloads.id is the first envelope id of the send that carried it; refs
-- counts the mailbox rows that still name it (mailbox.payload_id; payload_bytes repeats
-- its length for the quotas). The trigger releases a payload with its last row, whoever
-- deletes the row (ack, purge, ON DELETE CASCADE of a device or user). No foreign key
-- from mailbox, so deleting a payload never scans the mailbox for referrers.

CREATE TABLE payloads (
    id   BIGINT  PRIMARY KEY,
    refs INTEGER NOT NULL CHECK (refs >= 0),
    body BYTEA   NOT NULL
);

ALTER TABLE mailbox ADD COLUMN payload_id BIGINT;
ALTER TABLE mailbox ADD COLUMN payload_bytes INTEGER NOT NULL DEFAULT 0;

CREATE FUNCTION hushwire_payload_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE payloads SET refs = refs - 1 WHERE id = OLD.payload_id;
    DELETE FROM payloads WHERE id = OLD.payload_id AND refs <= 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER mailbox_payload_release AFTER DELETE ON mailbox
FOR EACH ROW WHEN (OLD.payload_id IS NOT NULL) EXECUTE FUNCTION hushwire_payload_release();
