-- 0005: PQXDH (protocol version 2). Each user's signed ML-KEM-768 prekeys: one
-- last-resort key (replaced when it rotates, handed out only when no one-time key is
-- left) and one-time keys (each handed out once). identity_keys.bundle_version says
-- which protocol the user's keys are for: 1 (X3DH) or 2 (PQXDH, these keys present).
-- Keys are per user today; linked devices will key this table by device as well.

CREATE TABLE kem_prekeys (
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    prekey_id   INTEGER NOT NULL,
    last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
    key         BLOB    NOT NULL,
    sig         BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, prekey_id)
) WITHOUT ROWID;
