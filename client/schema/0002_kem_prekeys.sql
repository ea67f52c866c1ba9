-- 0002: ML-KEM-768 prekeys for PQXDH (protocol version 2). `secret` is a sealed
-- KemPrekeyPair record (seed, signature, kind). One-time ones are deleted when a session
-- start used them; the last-resort one is replaced when it rotates and, like a retired
-- signed prekey, kept for a grace period so initial messages still in flight decrypt.
CREATE TABLE kem_prekeys (
    prekey_id   INTEGER PRIMARY KEY,
    secret      BLOB    NOT NULL,
    last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);
