-- mailstack schema, version 10: learning from the user's Junk folder.
--
-- A message the user moves or copies into the \Junk mailbox is to be
-- learned as spam by rspamd for that user, one moved out of it (anywhere
-- but \Trash) as ham. The MOVE/COPY writes the wanted class in one row per
-- account and message, in its own transaction (and only when learning is
-- on), so no IMAP command waits for rspamd; a worker in each process claims
-- pending rows as the outbound queue's does (lease token, FOR UPDATE SKIP
-- LOCKED) and posts the message to rspamd's controller. The row keeps the
-- class rspamd learned, so a message is learned once per change of the
-- user's mind: moving it into Junk again after it was learned as spam
-- learns nothing. Rows go with their account and with their content (the
-- garbage collector keeps the content of pending rows).
CREATE TABLE junk_learn (
    account_id   bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    message_id   bigint NOT NULL REFERENCES messages ON DELETE CASCADE,
    -- The class the user said: true spam (moved into Junk), false ham.
    spam         boolean NOT NULL,
    -- The class rspamd last learned for the account; NULL: none yet.
    learned      boolean,
    queued_at    timestamptz NOT NULL DEFAULT now(),
    next_attempt timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    lease        text,
    last_error   text NOT NULL DEFAULT '',
    -- NULL while pending; set when learned or given up on (last_error
    -- says why).
    done_at      timestamptz,
    PRIMARY KEY (account_id, message_id)
);
CREATE INDEX junk_learn_due ON junk_learn (next_attempt) WHERE done_at IS NULL;
CREATE INDEX junk_learn_message_id ON junk_learn (message_id);
