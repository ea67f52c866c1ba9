-- 0004 (PostgreSQL twin of sqlite/0004_devices.sql): accounts with several devices.
-- A row of `users` is a principal; an account has account_id NULL and is its own
-- device 1; a linked device is a principal '<account>/<id>' with its account's id.

ALTER TABLE users ADD COLUMN account_id BIGINT REFERENCES users (id) ON DELETE CASCADE;

CREATE INDEX users_by_account ON users (account_id) WHERE account_id IS NOT NULL;

CREATE TABLE devices (
    account_id   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id    BIGINT NOT NULL CHECK (device_id BETWEEN 1 AND 4294967295),
    principal_id BIGINT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    linked_at    BIGINT NOT NULL,
    PRIMARY KEY (account_id, device_id)
);

INSERT INTO devices (account_id, device_id, principal_id, linked_at)
SELECT id, 1, id, created_at FROM users;

CREATE TABLE device_lists (
    account_id BIGINT  PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    version    BIGINT  NOT NULL CHECK (version >= 1),
    body       BYTEA   NOT NULL,
    sig        BYTEA   NOT NULL,
    updated_at BIGINT  NOT NULL
);

-- Every new account is its own device 1, whoever creates it.
CREATE FUNCTION hushwire_first_device() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO devices (account_id, device_id, principal_id, linked_at)
    VALUES (NEW.id, 1, NEW.id, NEW.created_at);
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_first_device AFTER INSERT ON users
FOR EACH ROW WHEN (NEW.account_id IS NULL) EXECUTE FUNCTION hushwire_first_device();
