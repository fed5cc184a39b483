-- mailstack schema, version 9: METADATA (RFC 5464) entries.
--
-- An entry belongs to the account (a server entry: mailbox_id NULL) or to
-- one of its mailboxes; it goes with the mailbox (ON DELETE CASCADE) and,
-- being keyed by the mailbox's id, moves with it on RENAME. Names are kept
-- in lower case ("/private/comment", "/shared/vendor/x/y"): they are
-- case-insensitive. /private and /shared entries are both per account
-- (there are no shared mailboxes). Limits (store.MaxMetadataValue, ...)
-- are checked by the statements that write, under the account row lock.
CREATE TABLE metadata (
    account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    mailbox_id bigint REFERENCES mailboxes ON DELETE CASCADE,
    name       text NOT NULL,
    value      bytea NOT NULL
);
CREATE UNIQUE INDEX metadata_entry ON metadata (account_id, coalesce(mailbox_id, 0), name);
CREATE INDEX metadata_mailbox_id ON metadata (mailbox_id) WHERE mailbox_id IS NOT NULL;
