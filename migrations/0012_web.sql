-- mailstack schema, version 12: the account web (webui/).
--
-- Two-factor authentication: an account's TOTP secret (RFC 6238, base32),
-- NULL while 2FA is off, and the last time step a code was accepted for,
-- so one code cannot be used twice (RFC 6238 §5.2). Recovery codes are
-- stored as SHA-256 hashes (random, ~50 bits, single use).
ALTER TABLE accounts ADD COLUMN totp_secret text;
ALTER TABLE accounts ADD COLUMN totp_last_step bigint NOT NULL DEFAULT 0;

CREATE TABLE recovery_codes (
    id         bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    hash       bytea NOT NULL,
    used_at    timestamptz
);
CREATE INDEX recovery_codes_account_id ON recovery_codes (account_id);

-- Web sessions live here, not in a process, so every process sees a
-- sign-in and a revocation at the next request. The cookie holds a random
-- token; only its SHA-256 is stored, so a database dump signs no one in.
-- pending_2fa: the password was right, the second factor is still due;
-- such a session opens no page. totp_setup holds a secret being enrolled
-- until the user confirms a code from it. csrf is the token every form of
-- the session carries.
CREATE TABLE web_sessions (
    id           bigserial PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    token_hash   bytea NOT NULL UNIQUE,
    csrf         text NOT NULL,
    pending_2fa  boolean NOT NULL,
    failed_2fa   integer NOT NULL DEFAULT 0,
    totp_setup   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    remote_ip    text NOT NULL,
    user_agent   text NOT NULL
);
CREATE INDEX web_sessions_account_id ON web_sessions (account_id);

-- Administrators manage domains, users, aliases and the queue on the web
-- (`mailstack user add -admin`, `mailstack user admin ADDRESS`).
ALTER TABLE accounts ADD COLUMN admin boolean NOT NULL DEFAULT false;

-- Vacation auto-reply (RFC 3834), set on the account web. starts and ends
-- are inclusive dates (the server's time zone); NULL: open. The replies
-- log holds when each sender was last answered, so each gets at most one
-- reply per interval_days; changing the settings empties it.
CREATE TABLE vacations (
    account_id    bigint PRIMARY KEY REFERENCES accounts ON DELETE CASCADE,
    enabled       boolean NOT NULL DEFAULT false,
    subject       text NOT NULL DEFAULT '',
    body          text NOT NULL DEFAULT '',
    starts        date,
    ends          date,
    interval_days integer NOT NULL DEFAULT 7 CHECK (interval_days BETWEEN 1 AND 365)
);
CREATE TABLE vacation_replies (
    account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    sender     text NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, sender)
);
