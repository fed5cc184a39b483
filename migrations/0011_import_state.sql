-- mailstack schema, version 11: where an IMAP import stands.
--
-- One row per account, source (the server and user, as imaps://user@host)
-- and source folder: the folder's UIDVALIDITY and the highest UID copied
-- from it. The row is written in the transaction that stores the messages
-- up to that UID, so a run cut off at any point and started again copies
-- each message exactly once, and a run a week later only what is new. A
-- new UIDVALIDITY at the source starts the folder again (what the target
-- already holds is skipped by content).
CREATE TABLE import_state (
	account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	source text NOT NULL,
	folder text NOT NULL,
	uidvalidity bigint NOT NULL,
	last_uid bigint NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (account_id, source, folder)
);
