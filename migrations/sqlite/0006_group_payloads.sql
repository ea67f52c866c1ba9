-- 0006: one payload for many recipients (docs/protocol.md, "send_devices"). A group send
-- carries its encrypted message once beside the per-device envelopes; the relay stores
-- it once, however many mailbox rows deliver it.
--
-- payloads.id is the first envelope id of the send that carried it (ids are never
-- reused, so neither are these); refs counts the mailbox rows that still name it. A row
-- names its payload in mailbox.payload_id and repeats its length in payload_bytes, so
-- quotas (envelope + payload bytes per recipient) need no join. The trigger releases a
-- payload with its last row, whoever deletes that row: an ack, a purge, or a device or
-- user removed (ON DELETE CASCADE fires it too). No foreign key from mailbox: deleting a
-- payload would then scan the mailbox for referrers; the trigger keeps the two in step.

CREATE TABLE payloads (
    id   INTEGER PRIMARY KEY,
    refs INTEGER NOT NULL CHECK (refs >= 0),
    body BLOB    NOT NULL
);

ALTER TABLE mailbox ADD COLUMN payload_id INTEGER;
ALTER TABLE mailbox ADD COLUMN payload_bytes INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER mailbox_payload_release AFTER DELETE ON mailbox
WHEN old.payload_id IS NOT NULL
BEGIN
    UPDATE payloads SET refs = refs - 1 WHERE id = old.payload_id;
    DELETE FROM payloads WHERE id = old.payload_id AND refs <= 0;
END;
