-- mailstack schema, version 1. See ARCHITECTURE.md "Data model" and "Invariants".
-- Every foreign key has an index under it (mailbox DELETE must not scan).

CREATE TABLE domains (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name = lower(name) AND name <> ''),
    dkim_selector text NOT NULL,
    -- PKCS#8 DER private key used to sign outbound mail for this domain.
    dkim_key      bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id                    bigserial PRIMARY KEY,
    domain_id             bigint NOT NULL REFERENCES domains ON DELETE RESTRICT,
    address               text NOT NULL UNIQUE CHECK (address = lower(address)),
    password_hash         text NOT NULL,
    quota_bytes           bigint NOT NULL DEFAULT 0 CHECK (quota_bytes >= 0),
    require_app_passwords boolean NOT NULL DEFAULT true,
    disabled              boolean NOT NULL DEFAULT false,
    -- Monotonic source of mailbox UIDVALIDITY values: a re-created mailbox
    -- must never reuse an old value (RFC 9051 §2.3.1.1).
    next_uidvalidity      bigint NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_domain_id ON accounts (domain_id);

-- address is 'local@domain' or '@domain' for a catch-all.
CREATE TABLE aliases (
    id         bigserial PRIMARY KEY,
    domain_id  bigint NOT NULL REFERENCES domains ON DELETE CASCADE,
    address    text NOT NULL UNIQUE CHECK (address = lower(address)),
    account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX aliases_domain_id ON aliases (domain_id);
CREATE INDEX aliases_account_id ON aliases (account_id);

CREATE TABLE app_passwords (
    id           bigserial PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    label        text NOT NULL,
    -- SHA-256 of the secret: it has ~75 bits of entropy, so no slow hash is needed.
    hash         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    last_used_ip text,
    revoked_at   timestamptz
);
CREATE INDEX app_passwords_account_hash ON app_passwords (account_id, hash);

CREATE TABLE auth_events (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    account_id      bigint REFERENCES accounts ON DELETE CASCADE,
    username        text NOT NULL,
    protocol        text NOT NULL,
    remote_ip       text NOT NULL,
    app_password_id bigint REFERENCES app_passwords ON DELETE SET NULL,
    success         boolean NOT NULL,
    reason          text NOT NULL DEFAULT ''
);
CREATE INDEX auth_events_account_at ON auth_events (account_id, at);
CREATE INDEX auth_events_ip_failed_at ON auth_events (remote_ip, at) WHERE NOT success;
CREATE INDEX auth_events_app_password_id ON auth_events (app_password_id);

CREATE TABLE mailboxes (
    id            bigserial PRIMARY KEY,
    account_id    bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    name          text NOT NULL,
    special_use   text NOT NULL DEFAULT '',
    uidvalidity   bigint NOT NULL,
    uidnext       bigint NOT NULL DEFAULT 1,
    highestmodseq bigint NOT NULL DEFAULT 1,
    subscribed    boolean NOT NULL DEFAULT false,
    -- A \Noselect placeholder left by deleting a mailbox that has children.
    noselect      boolean NOT NULL DEFAULT false,
    -- Cached counts maintained under the mailbox row lock, so SELECT and
    -- STATUS cost one row.
    messages      bigint NOT NULL DEFAULT 0,
    unseen        bigint NOT NULL DEFAULT 0,
    deleted       bigint NOT NULL DEFAULT 0,
    size          bigint NOT NULL DEFAULT 0,
    UNIQUE (account_id, name)
);

-- One row per distinct content (sha-256), with everything FETCH needs computed
-- once at delivery. The body lives in message_chunks.
CREATE TABLE messages (
    id         bigserial PRIMARY KEY,
    sha256     bytea NOT NULL UNIQUE,
    size       bigint NOT NULL,
    header     bytea NOT NULL,
    -- JSON of mimeindex.Message (versioned): envelope, body structure, part offsets.
    structure  jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE message_chunks (
    message_id bigint NOT NULL REFERENCES messages ON DELETE CASCADE,
    seq        integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (message_id, seq)
);

CREATE TABLE mailbox_messages (
    mailbox_id    bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
    uid           bigint NOT NULL,
    message_id    bigint NOT NULL REFERENCES messages,
    -- Copied from accounts so isolation holds in every query without a join.
    account_id    bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    internal_date timestamptz NOT NULL,
    size          bigint NOT NULL,
    flags         integer NOT NULL DEFAULT 0,
    keywords      text[] NOT NULL DEFAULT '{}',
    modseq        bigint NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX mailbox_messages_message_id ON mailbox_messages (message_id);
CREATE INDEX mailbox_messages_account_id ON mailbox_messages (account_id);
CREATE INDEX mailbox_messages_modseq ON mailbox_messages (mailbox_id, modseq);
-- \Seen is bit 1: fast UNSEEN search on large mailboxes.
CREATE INDEX mailbox_messages_unseen ON mailbox_messages (mailbox_id, uid) WHERE flags & 2 = 0;

CREATE TABLE expunged (
    mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
    uid        bigint NOT NULL,
    modseq     bigint NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX expunged_modseq ON expunged (mailbox_id, modseq);

CREATE TABLE outbound_queue (
    id            bigserial PRIMARY KEY,
    account_id    bigint REFERENCES accounts ON DELETE SET NULL,
    message_id    bigint NOT NULL REFERENCES messages,
    mail_from     text NOT NULL,
    rcpt_to       text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    next_attempt  timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text NOT NULL DEFAULT ''
);
CREATE INDEX outbound_queue_next_attempt ON outbound_queue (next_attempt);
CREATE INDEX outbound_queue_account_id ON outbound_queue (account_id);
CREATE INDEX outbound_queue_message_id ON outbound_queue (message_id);

-- UIDVALIDITY for a new mailbox: seconds since the epoch, but always above
-- every value the account handed out before, so a re-created mailbox (or a
-- re-created account) never repeats one.
CREATE FUNCTION next_uidvalidity(acc bigint) RETURNS bigint LANGUAGE sql AS $$
    UPDATE accounts
       SET next_uidvalidity = GREATEST(next_uidvalidity, extract(epoch FROM clock_timestamp())::bigint) + 1
     WHERE id = acc
    RETURNING next_uidvalidity - 1
$$;
