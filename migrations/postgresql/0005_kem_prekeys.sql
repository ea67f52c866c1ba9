-- 0005 (PostgreSQL twin of sqlite/0005_kem_prekeys.sql): PQXDH (protocol version 2).
-- Each user's signed ML-KEM-768 prekeys: one last-resort key (replaced when it rotates,
-- handed out only when no one-time key is left) and one-time keys (each handed out
-- once). identity_keys.bundle_version says which protocol the user's keys are for.

CREATE TABLE kem_prekeys (
    user_id     BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    prekey_id   BIGINT  NOT NULL,
    last_resort BOOLEAN NOT NULL,
    key         BYTEA   NOT NULL,
    sig         BYTEA   NOT NULL,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (user_id, prekey_id)
);
