-- 0002 (PostgreSQL twin of sqlite/0002_user_events.sql): a log of account changes, so a
-- running relay notices what hushwire-admin did (disable, remove, token reset) by
-- polling one indexed query. A trigger writes it, so every writer of the users table
-- is covered, not only the admin CLI.

CREATE TABLE user_events (
    seq  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('added', 'disabled', 'enabled', 'token_reset', 'removed'))
);

CREATE FUNCTION hushwire_user_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO user_events (name, kind) VALUES (NEW.name, 'added');
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO user_events (name, kind) VALUES (OLD.name, 'removed');
    ELSE
        IF NEW.disabled IS DISTINCT FROM OLD.disabled THEN
            INSERT INTO user_events (name, kind)
            VALUES (NEW.name, CASE WHEN NEW.disabled THEN 'disabled' ELSE 'enabled' END);
        END IF;
        IF NEW.token_hash IS DISTINCT FROM OLD.token_hash
            OR NEW.token_salt IS DISTINCT FROM OLD.token_salt THEN
            INSERT INTO user_events (name, kind) VALUES (NEW.name, 'token_reset');
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER user_events_log AFTER INSERT OR UPDATE OR DELETE ON users
FOR EACH ROW EXECUTE FUNCTION hushwire_user_events();
