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
ALTER TABLE mailboxes DROP COLUMN subscribed;

-- Every keyword ever set on a message of the mailbox (sorted), for the
-- FLAGS and PERMANENTFLAGS of SELECT: one row instead of a scan of the
-- mailbox. Like Dovecot's keyword list it only grows, until the mailbox is
-- deleted or re-created. Kept by the triggers below, which only call the
-- function when a row brings keywords (the WHEN clause costs no call).
ALTER TABLE mailboxes ADD COLUMN keywords text[] NOT NULL DEFAULT '{}';
UPDATE mailboxes m SET keywords = k.list
  FROM (SELECT mm.mailbox_id, array_agg(DISTINCT kw ORDER BY kw) AS list
          FROM mailbox_messages mm, unnest(mm.keywords) kw GROUP BY mm.mailbox_id) k
 WHERE m.id = k.mailbox_id;

-- One call per statement, over the rows it wrote (a row trigger doubled
-- the time of STORE +FLAGS (kw) on 100,000 messages). The writer already
-- holds the mailbox row lock (every change to a mailbox's messages bumps
-- its modseq under it), so this takes no new lock.
CREATE FUNCTION mailbox_keywords_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mailboxes m
       SET keywords = ARRAY(SELECT DISTINCT kw FROM unnest(m.keywords || n.kws) kw ORDER BY kw)
      FROM (SELECT r.mailbox_id, r.account_id, array_agg(DISTINCT kw) AS kws
              FROM new_rows r, unnest(r.keywords) kw GROUP BY r.mailbox_id, r.account_id) n
     WHERE m.id = n.mailbox_id AND m.account_id = n.account_id AND NOT (n.kws <@ m.keywords);
    RETURN NULL;
END $$;

CREATE TRIGGER mailbox_messages_keywords_insert AFTER INSERT ON mailbox_messages
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_keywords_add();
CREATE TRIGGER mailbox_messages_keywords_update AFTER UPDATE ON mailbox_messages
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mailbox_keywords_add();
