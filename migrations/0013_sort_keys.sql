-- mailstack schema, version 13: what SORT (RFC 5256, RFC 5957) and THREAD
-- order and group messages by, computed once per content at delivery
-- (mimeindex.Keys) like the rest of the structure.
--
-- String keys are canonicalised for i;unicode-casemap, so ORDER BY ...
-- COLLATE "C" (byte order) is the comparator's order. sent_date is NULL
-- when the Date: field is missing or unparsable (SORT then uses the
-- internal date). thread_msgid and thread_refs are message identifiers
-- without angle brackets, thread_refs separated by spaces.
--
-- Rows stored before this version have sort_version 0: the store computes
-- their keys in Go from the stored header and structure when it migrates
-- (store.backfillSortKeys, at start and by 'mailstack migrate'), in
-- batches; the partial index finds them and costs new rows nothing.
ALTER TABLE messages
    ADD COLUMN sort_version  smallint NOT NULL DEFAULT 0,
    ADD COLUMN sent_date     timestamptz,
    ADD COLUMN sort_subject  text NOT NULL DEFAULT '',
    ADD COLUMN subject_reply boolean NOT NULL DEFAULT false,
    ADD COLUMN sort_from     text NOT NULL DEFAULT '',
    ADD COLUMN sort_to       text NOT NULL DEFAULT '',
    ADD COLUMN sort_cc       text NOT NULL DEFAULT '',
    ADD COLUMN display_from  text NOT NULL DEFAULT '',
    ADD COLUMN display_to    text NOT NULL DEFAULT '',
    ADD COLUMN thread_msgid  text NOT NULL DEFAULT '',
    ADD COLUMN thread_refs   text NOT NULL DEFAULT '';
CREATE INDEX messages_sort_pending ON messages (id) WHERE sort_version = 0;
