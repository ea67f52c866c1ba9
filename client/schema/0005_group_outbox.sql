-- 0005: group sends waiting for the relay's `ok` (docs/security.md, "Groups"). A change
-- or a message is stored here in the transaction that advances the group's log or
-- transcript, with the envelopes sealed so far; the row goes when the relay committed the
-- send. After a lost connection the rows are sent again in `id` order, before anything
-- newer. `body` is sealed msgpack [accounts, own_devices, content, payload, line,
-- sealed]: the plaintext sealed for every device, the group payload beside it (empty:
-- none), the uid of its conversation line ("" for a change), and [user, device, envelope]
-- for every device sealed for (a device listed later gets the same content sealed anew).
CREATE TABLE group_outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    uid        TEXT    NOT NULL UNIQUE,
    stored_at  INTEGER NOT NULL,
    body       BLOB    NOT NULL
);
