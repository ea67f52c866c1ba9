-- 0003: ratchet sessions per device of an account (docs/security.md, "Fan-out").
-- A contact's device 1 keeps its sessions in contacts.sessions (as before devices, so
-- an upgraded profile keeps them as they are); every other device of a contact, and
-- every other device of our own account, has a row here. `sessions` is sealed like
-- contacts.sessions, its associated data naming the row as "contact/device".
CREATE TABLE device_sessions (
    contact    TEXT    NOT NULL,
    device     INTEGER NOT NULL CHECK (device >= 1),
    sessions   BLOB    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (contact, device)
) WITHOUT ROWID;
