-- mailstack schema, version 4: subscriptions apart from mailboxes, and the
-- keywords defined in each mailbox.
--
-- Subscriptions are names, not mailboxes (RFC 3501 §6.3.6, RFC 9051 §6.3.7):
-- DELETE must not remove one, so a subscription may outlive its mailbox
-- (LIST (SUBSCRIBED) then shows it \NonExistent), and RENAME moves the
-- subscriptions of the renamed hierarchy, as Dovecot does.
CREATE TABLE subscriptions (
    account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    name       text NOT NULL,
    PRIMARY KEY (account_id, name)
);
INSERT INTO subscriptions (account_id, name) SELECT account_id, name FROM mailboxes WHERE subscribed;
-- mailboxes.subscribed stays for now: during a rolling upgrade, processes
-- still running an older binary read and write it (and would fail without
-- it). New code neither reads nor writes it (new rows take its default,
-- and what an older binary subscribes meanwhile is not carried over); a
-- later migration drops it once no older binary runs.

-- Every keyword ever set on a message of the mailbox (sorted), for the
-- FLAGS and PERMANENTFLAGS of SELECT: one row instead of a scan of the
-- mailbox. Like Dovecot's keyword list it only grows, until the mailbox is
-- deleted or re-created. No trigger keeps it: every statement that gives a
-- message keywords (store: Deliver, StoreFlags, copy/move, bulk append)
-- merges them into the list itself, under the mailbox row lock it holds
-- anyway, and only when they are not in it yet. (A statement trigger would
-- run for every write to mailbox_messages, keywords or not: a WHEN clause
-- is not allowed on one.) Keywords set by an older binary during a rolling
-- upgrade are missing from the list until set again; FLAGS is advisory and
-- PERMANENTFLAGS has \*, so clients can still use them.
ALTER TABLE mailboxes ADD COLUMN keywords text[] NOT NULL DEFAULT '{}';
UPDATE mailboxes m SET keywords = k.list
  FROM (SELECT mm.mailbox_id, array_agg(DISTINCT kw ORDER BY kw) AS list
          FROM mailbox_messages mm, unnest(mm.keywords) kw GROUP BY mm.mailbox_id) k
 WHERE m.id = k.mailbox_id;
