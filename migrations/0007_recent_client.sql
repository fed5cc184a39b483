-- mailstack schema, version 7: \Recent, and the client of each login.
--
-- \Recent (RFC 3501 §2.3.2) belongs to exactly one session. A mailbox's
-- messages with uid >= first_recent_uid have not been claimed by any
-- session yet: a session claims those up to the highest UID it knows by
-- moving the mark past them in one UPDATE under the row lock
-- (store.ClaimRecent), so no two sessions, in any processes, claim one
-- message. STATUS (RECENT) counts the live messages at or above the mark.
-- Existing mailboxes start with the mark at uidnext: after the upgrade
-- nothing is recent, rather than every message at once. A new mailbox
-- (an older binary's too, during a rolling upgrade) takes the default 1,
-- its uidnext.
ALTER TABLE mailboxes ADD COLUMN first_recent_uid bigint NOT NULL DEFAULT 1;
UPDATE mailboxes SET first_recent_uid = uidnext WHERE first_recent_uid <> uidnext;

-- The client's description of itself (IMAP ID, RFC 2971), e.g. "iPhone
-- Mail 18.2 (iOS 18.2)", for the activity log: given with the login, or
-- set on the login's event by an ID command after it. Empty when unknown,
-- as in every row an older binary writes.
ALTER TABLE auth_events ADD COLUMN client text NOT NULL DEFAULT '';
-- The client that last identified itself when using the app password;
-- NULL until one has. A login without a client keeps the previous one
-- (SMTP has no ID command; the same password often serves both).
ALTER TABLE app_passwords ADD COLUMN last_client text;
