-- mailstack schema, version 13: what SORT (RFC 5256, RFC 5957) and THREAD
-- order and group messages by, computed once per content at delivery
-- (mimeindex.Keys) like the rest of the structure.
--
-- A narrow table of its own rather than columns of messages: SORT and
-- THREAD join it with a mailbox's rows, and messages' rows (header and
-- structure inline) are a hundred times wider. String keys are
-- canonicalised for i;unicode-casemap, so ORDER BY ... COLLATE "C" (byte
-- order) is the comparator's order. sent_date is NULL when the Date:
-- field is missing or unparsable (SORT then uses the internal date).
-- msgid and refs are message identifiers without angle brackets, refs
-- separated by spaces.
CREATE TABLE message_keys (
    message_id   bigint PRIMARY KEY REFERENCES messages ON DELETE CASCADE,
    sent_date    timestamptz,
    subject      text NOT NULL,
    reply        boolean NOT NULL,
    from_mailbox text NOT NULL,
    to_mailbox   text NOT NULL,
    cc_mailbox   text NOT NULL,
    display_from text NOT NULL,
    display_to   text NOT NULL,
    msgid        text NOT NULL,
    refs         text NOT NULL
);

-- Contents stored before this version get their keys from the store in Go
-- (from their stored header and structure) when it migrates, at start and
-- by 'mailstack migrate': ids next_id < id <= last_id, in batches; the row
-- goes when done (store.backfillSortKeys).
CREATE TABLE message_keys_backfill (
    next_id bigint NOT NULL,
    last_id bigint NOT NULL
);
INSERT INTO message_keys_backfill SELECT 0, max(id) FROM messages HAVING max(id) IS NOT NULL;
